//! The analyzer rule: every scan of a governed product becomes
//! filter-then-barrier-then-mask before optimisation, and a [`GovernedTable`]
//! refuses to be scanned any other way.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, TableReference, plan_err};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::Result;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, LogicalPlanBuilder, TableScan, TableScanBuilder, TableType,
};

use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};

use super::PolicyBarrier;

/// What was enforced on one product in one query, for `EXPLAIN` and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct AppliedPolicy {
    /// `domain.product`.
    pub product: String,
    /// The row filter, as evaluated (principal attributes substituted).
    pub row_filter: Option<String>,
    /// The policies the row filter came from.
    pub filter_policies: Vec<String>,
    /// (column, mask, policy id).
    pub masks: Vec<(String, String, String)>,
}

/// A product as one principal may see it: the readable columns (masked ones
/// marked nullable), and what the analyzer must put between the table and the
/// query.
pub(crate) struct GovernedTable {
    raw: Arc<dyn TableProvider>,
    schema: SchemaRef,
    /// Index in the raw schema of each visible column.
    columns: Vec<usize>,
    row_filter: Option<Expr>,
    /// Raw column index → mask expression over unqualified raw columns.
    masks: BTreeMap<usize, Expr>,
    applied: Arc<AppliedPolicy>,
}

impl fmt::Debug for GovernedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GovernedTable").field("policy", &self.applied).finish()
    }
}

impl GovernedTable {
    pub(crate) fn new(
        raw: Arc<dyn TableProvider>,
        schema: SchemaRef,
        columns: Vec<usize>,
        row_filter: Option<Expr>,
        masks: BTreeMap<usize, Expr>,
        applied: Arc<AppliedPolicy>,
    ) -> Self {
        GovernedTable { raw, schema, columns, row_filter, masks, applied }
    }

    fn needs_barrier(&self) -> bool {
        self.row_filter.is_some() || !self.masks.is_empty()
    }

    /// The plan that replaces `scan` of this table.
    fn govern(&self, scan: &TableScan) -> Result<LogicalPlan> {
        let name = &scan.table_name;
        let wanted: Vec<usize> = match &scan.projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let raw_schema = self.raw.schema();
        // Raw columns the scan must produce: the wanted ones and whatever the row
        // filter and the masks of wanted columns read.
        let mut needed: Vec<usize> = wanted.iter().map(|&i| self.columns[i]).collect();
        let mut add_refs = |e: &Expr| {
            for c in e.column_refs() {
                if let Ok(i) = raw_schema.index_of(&c.name) {
                    needed.push(i);
                }
            }
        };
        if let Some(f) = &self.row_filter {
            add_refs(f);
        }
        for &i in &wanted {
            if let Some(m) = self.masks.get(&self.columns[i]) {
                add_refs(m);
            }
        }
        needed.sort_unstable();
        needed.dedup();

        // Behind a barrier the table is read in the engine (a federated source is
        // read through its own provider, which still takes filters, projections
        // and limits), so that masks are never sent to a remote system.
        let provider =
            if self.needs_barrier() { agora_connectors::in_engine_provider(&self.raw) } else { Arc::clone(&self.raw) };
        let raw_scan =
            TableScanBuilder::new(name.clone(), provider_as_source(provider)).with_projection(Some(needed)).build()?;
        let mut plan = LogicalPlan::TableScan(raw_scan);
        if let Some(f) = &self.row_filter {
            plan = LogicalPlanBuilder::from(plan).filter(qualify(f.clone(), name)?)?.build()?;
        }
        if self.needs_barrier() {
            plan = LogicalPlan::Extension(Extension {
                node: Arc::new(PolicyBarrier { input: plan, policy: Arc::clone(&self.applied) }),
            });
        }
        let mut exprs = Vec::with_capacity(wanted.len());
        for &i in &wanted {
            let raw_index = self.columns[i];
            let field_name = raw_schema.field(raw_index).name();
            let e = match self.masks.get(&raw_index) {
                Some(mask) => qualify(mask.clone(), name)?.alias_qualified(Some(name.clone()), field_name),
                None => Expr::Column(Column::new(Some(name.clone()), field_name)),
            };
            exprs.push(e);
        }
        let mut builder = LogicalPlanBuilder::from(plan).project(exprs)?;
        // Filters and limits already attached to the scan apply to what the
        // principal sees, so they go above.
        if let Some(f) = conjunction(scan.filters.clone()) {
            builder = builder.filter(f)?;
        }
        if let Some(n) = scan.fetch {
            builder = builder.limit(0, Some(n))?;
        }
        builder.build()
    }
}

/// Gives unqualified column references the scan's qualifier.
fn qualify(e: Expr, name: &TableReference) -> Result<Expr> {
    e.transform(|e| match e {
        Expr::Column(c) if c.relation.is_none() => {
            Ok(Transformed::yes(Expr::Column(Column::new(Some(name.clone()), c.name))))
        }
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

#[async_trait]
impl TableProvider for GovernedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        self.raw.table_type()
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Fail closed: only the analyzer's rewrite may read a governed product.
        plan_err!("{} is governed and may only be read through Agora's policy rewrite", self.applied.product)
    }
}

/// The analyzer rule that puts each principal's policies into the plan. It runs
/// first, so that type coercion also covers the row filters and masks.
#[derive(Debug, Default)]
pub(crate) struct GovernanceRule;

impl AnalyzerRule for GovernanceRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let LogicalPlan::TableScan(scan) = &node else { return Ok(Transformed::no(node)) };
            let Ok(provider) = source_as_provider(&scan.source) else { return Ok(Transformed::no(node)) };
            let Some(governed) = provider.downcast_ref::<GovernedTable>() else {
                return Ok(Transformed::no(node));
            };
            Ok(Transformed::yes(governed.govern(scan)?))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "agora_governance"
    }
}
