//! What a plan reads: the one walk over a logical plan's scans (through
//! federated sub-plans) that the audit record, the query history and the
//! lineage events all take their products and columns from, so the three
//! never disagree.

use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;

use crate::governance::AppliedPolicy;
use crate::governance::rewrite::applied_policies;

/// Calls `f` with `domain.product` and the projected schema of every scan of
/// a product in `plan`, sub-queries and federated sub-plans included.
pub(crate) fn visit_scans(plan: &LogicalPlan, f: &mut dyn FnMut(&str, &DFSchema)) {
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) => {
                if let Some(schema) = scan.table_name.schema() {
                    f(&format!("{schema}.{}", scan.table_name.table()), &scan.projected_schema);
                }
            }
            LogicalPlan::Extension(ext) => {
                if let Some(inner) = agora_connectors::federated_plan(ext.node.as_ref()) {
                    visit_scans(inner, f);
                }
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

/// What a plan reads: products, their columns, and the policies it enforces.
#[derive(Default)]
pub(crate) struct Reads {
    /// `domain.product`, in plan order, each once.
    pub(crate) products: Vec<String>,
    /// `domain.product.column`, each once.
    pub(crate) columns: Vec<String>,
    /// The policies the plan's barriers apply, each once.
    pub(crate) policies: Vec<AppliedPolicy>,
}

impl Reads {
    /// Walks `plan` once for its scans and once for its policy barriers.
    pub(crate) fn of(plan: &LogicalPlan) -> Reads {
        let mut reads = Reads::default();
        visit_scans(plan, &mut |product, schema| {
            for f in schema.fields() {
                let column = format!("{product}.{}", f.name());
                if !reads.columns.contains(&column) {
                    reads.columns.push(column);
                }
            }
            if !reads.products.iter().any(|p| p == product) {
                reads.products.push(product.to_string());
            }
        });
        for p in applied_policies(plan) {
            if !reads.policies.contains(&p) {
                reads.policies.push((*p).clone());
            }
        }
        reads
    }
}
