//! Column-level lineage of a plan's output (OpenLineage's `columnLineage`
//! facet): where each output column's values come from, and which columns
//! filter, join or group the rows (indirect), with masked columns marked.

use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};

use serde_json::{Value, json};

use super::{DATASET_NAMESPACE, PRODUCER, facet};

/// Where one value comes from: a product's column and how it was derived.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Origin {
    dataset: String,
    field: String,
    /// IDENTITY, TRANSFORMATION or AGGREGATION (DIRECT), or JOIN, FILTER,
    /// GROUP_BY, SORT, WINDOW (INDIRECT).
    subtype: &'static str,
}

impl Origin {
    fn derived(&self, subtype: &'static str) -> Origin {
        // Aggregation dominates a later transformation; identity becomes anything.
        let subtype = match (self.subtype, subtype) {
            ("AGGREGATION", _) => "AGGREGATION",
            (_, s) => s,
        };
        Origin { subtype, ..self.clone() }
    }
}

/// Column-level lineage of a plan's output.
pub(super) struct ColumnLineage {
    /// Per output column, its origins.
    fields: Vec<Vec<Origin>>,
    /// Columns that affect the whole result (joins, filters, grouping, sorting).
    indirect: Vec<Origin>,
    masked: Vec<(String, String)>,
}

impl ColumnLineage {
    pub(super) fn of(plan: &LogicalPlan, masked: &[(String, String)]) -> ColumnLineage {
        let mut indirect = Vec::new();
        let fields = origins(plan, &mut indirect);
        indirect.sort();
        indirect.dedup();
        ColumnLineage { fields, indirect, masked: masked.to_vec() }
    }

    fn input_field(&self, origin: &Origin) -> Value {
        let masking = self.masked.iter().any(|(d, c)| *d == origin.dataset && *c == origin.field);
        let kind =
            if matches!(origin.subtype, "IDENTITY" | "TRANSFORMATION" | "AGGREGATION") { "DIRECT" } else { "INDIRECT" };
        // A masked column reaches the result only through its mask.
        let subtype = if masking && origin.subtype == "IDENTITY" { "TRANSFORMATION" } else { origin.subtype };
        let mut transformation = json!({"type": kind, "subtype": subtype, "masking": masking});
        if masking {
            transformation["description"] = json!("masked by governance policy");
        }
        json!({
            "namespace": DATASET_NAMESPACE,
            "name": origin.dataset,
            "field": origin.field,
            "transformations": [transformation]
        })
    }

    pub(super) fn facet(&self, schema: &arrow::datatypes::Schema) -> Value {
        let mut fields = serde_json::Map::new();
        for (i, field) in schema.fields().iter().enumerate() {
            let origins = self.fields.get(i).cloned().unwrap_or_default();
            if origins.is_empty() {
                continue;
            }
            let inputs: Vec<Value> = origins.iter().map(|o| self.input_field(o)).collect();
            fields.insert(field.name().clone(), json!({"inputFields": inputs}));
        }
        let dataset: Vec<Value> = self.indirect.iter().map(|o| self.input_field(o)).collect();
        json!({
            "_producer": PRODUCER,
            "_schemaURL": facet("1-2-0", "ColumnLineageDatasetFacet"),
            "fields": fields,
            "dataset": dataset,
        })
    }
}

fn merge(into: &mut Vec<Origin>, more: impl IntoIterator<Item = Origin>) {
    for o in more {
        if !into.contains(&o) {
            into.push(o);
        }
    }
}

/// The origins of the columns `expr` refers to, in `input`'s output.
fn expr_origins(expr: &Expr, input: &LogicalPlan, input_origins: &[Vec<Origin>], subtype: &'static str) -> Vec<Origin> {
    let mut out = Vec::new();
    for column in expr.column_refs() {
        if let Ok(i) = input.schema().index_of_column(column)
            && let Some(origins) = input_origins.get(i)
        {
            merge(&mut out, origins.iter().map(|o| o.derived(subtype)));
        }
    }
    out
}

fn projected(expr: &Expr, input: &LogicalPlan, input_origins: &[Vec<Origin>], computed: &'static str) -> Vec<Origin> {
    match expr.clone().unalias() {
        Expr::Column(c) => match input.schema().index_of_column(&c) {
            Ok(i) => input_origins.get(i).cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        },
        other => expr_origins(&other, input, input_origins, computed),
    }
}

/// Per output column of `plan`, where its values come from; columns that
/// influence rows (filters, join keys…) are added to `indirect`.
fn origins(plan: &LogicalPlan, indirect: &mut Vec<Origin>) -> Vec<Vec<Origin>> {
    let width = plan.schema().fields().len();
    let result = match plan {
        LogicalPlan::TableScan(scan) => {
            let Some(schema) = scan.table_name.schema() else { return vec![Vec::new(); width] };
            let dataset = format!("{schema}.{}", scan.table_name.table());
            for filter in &scan.filters {
                for c in filter.column_refs() {
                    merge(indirect, [Origin { dataset: dataset.clone(), field: c.name.clone(), subtype: "FILTER" }]);
                }
            }
            scan.projected_schema
                .fields()
                .iter()
                .map(|f| vec![Origin { dataset: dataset.clone(), field: f.name().clone(), subtype: "IDENTITY" }])
                .collect()
        }
        LogicalPlan::Projection(p) => {
            let input = origins(&p.input, indirect);
            p.expr.iter().map(|e| projected(e, &p.input, &input, "TRANSFORMATION")).collect()
        }
        LogicalPlan::Filter(f) => {
            let input = origins(&f.input, indirect);
            merge(indirect, expr_origins(&f.predicate, &f.input, &input, "FILTER"));
            input
        }
        LogicalPlan::Aggregate(a) => {
            let input = origins(&a.input, indirect);
            let mut out = Vec::new();
            for e in &a.group_expr {
                merge(indirect, expr_origins(e, &a.input, &input, "GROUP_BY"));
                out.push(projected(e, &a.input, &input, "TRANSFORMATION"));
            }
            for e in &a.aggr_expr {
                out.push(expr_origins(e, &a.input, &input, "AGGREGATION"));
            }
            out
        }
        LogicalPlan::Window(w) => {
            let mut input = origins(&w.input, indirect);
            for e in &w.window_expr {
                input.push(expr_origins(e, &w.input, &input.clone(), "AGGREGATION"));
            }
            input
        }
        LogicalPlan::Sort(s) => {
            let input = origins(&s.input, indirect);
            for e in &s.expr {
                merge(indirect, expr_origins(&e.expr, &s.input, &input, "SORT"));
            }
            input
        }
        LogicalPlan::Join(j) => {
            let left = origins(&j.left, indirect);
            let right = origins(&j.right, indirect);
            for (l, r) in &j.on {
                merge(indirect, expr_origins(l, &j.left, &left, "JOIN"));
                merge(indirect, expr_origins(r, &j.right, &right, "JOIN"));
            }
            match j.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti => left,
                JoinType::RightSemi | JoinType::RightAnti => right,
                JoinType::LeftMark => {
                    let mut out = left;
                    out.push(Vec::new());
                    out
                }
                JoinType::RightMark => {
                    let mut out = right;
                    out.push(Vec::new());
                    out
                }
                _ => left.into_iter().chain(right).collect(),
            }
        }
        LogicalPlan::Union(u) => {
            let mut out = vec![Vec::new(); width];
            for input in &u.inputs {
                for (i, o) in origins(input, indirect).into_iter().enumerate() {
                    if let Some(slot) = out.get_mut(i) {
                        merge(slot, o);
                    }
                }
            }
            out
        }
        LogicalPlan::Extension(ext) => {
            if let Some(inner) = agora_connectors::federated_plan(ext.node.as_ref()) {
                origins(inner, indirect)
            } else {
                let inputs = ext.node.inputs();
                match inputs.as_slice() {
                    [only] => origins(only, indirect),
                    _ => vec![Vec::new(); width],
                }
            }
        }
        other => {
            let inputs = other.inputs();
            match inputs.as_slice() {
                [only] if only.schema().fields().len() == width => origins(only, indirect),
                _ => vec![Vec::new(); width],
            }
        }
    };
    if result.len() == width { result } else { vec![Vec::new(); width] }
}
