//! The policy barrier in the logical plan, and the optimizer rule that lets
//! only leak-proof predicates cross it.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchemaRef, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{Expr, Extension, Filter, LogicalPlan, Projection, UserDefinedLogicalNodeCore};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::{AppliedPolicy, is_leakproof};

/// Marks where a product's policies end: predicates move below it only when
/// they are leak-proof. Executes as its input (no cost).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct PolicyBarrier {
    pub(super) input: LogicalPlan,
    pub(crate) policy: Arc<AppliedPolicy>,
}

impl UserDefinedLogicalNodeCore for PolicyBarrier {
    fn name(&self) -> &str {
        "PolicyBarrier"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PolicyBarrier: {}", self.policy.product)?;
        if let Some(r) = &self.policy.row_filter {
            write!(f, ", row filter [{}] from {}", r, self.policy.filter_policies.join(", "))?;
        }
        if !self.policy.masks.is_empty() {
            let masks: Vec<String> = self.policy.masks.iter().map(|(c, m, p)| format!("{c}: {m} from {p}")).collect();
            write!(f, ", masks [{}]", masks.join("; "))?;
        }
        Ok(())
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        let Some(input) = inputs.pop() else { return plan_err!("PolicyBarrier takes one input") };
        Ok(PolicyBarrier { input, policy: Arc::clone(&self.policy) })
    }

    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        Some(vec![output_columns.to_vec()])
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }
}

/// Moves the leak-proof part of a filter sitting on a [`PolicyBarrier`] below it,
/// where the usual filter push-down takes it on to the source.
#[derive(Debug, Default)]
pub(crate) struct BarrierPushdown;

impl OptimizerRule for BarrierPushdown {
    fn name(&self) -> &str {
        "agora_policy_barrier_pushdown"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        if let Some(lifted) = lift_volatile(&plan)? {
            return Ok(Transformed::yes(lifted));
        }
        let LogicalPlan::Filter(filter) = &plan else { return Ok(Transformed::no(plan)) };
        // Column pruning may put a pass-through projection (plain columns,
        // same names) between the filter and the barrier; the predicate means
        // the same on either side of it.
        let (projection, below_filter) = match filter.input.as_ref() {
            LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
                (Some(p), p.input.as_ref())
            }
            other => (None, other),
        };
        let LogicalPlan::Extension(ext) = below_filter else { return Ok(Transformed::no(plan)) };
        let Some(barrier) = ext.node.as_any().downcast_ref::<PolicyBarrier>() else {
            return Ok(Transformed::no(plan));
        };
        let (safe, held): (Vec<&Expr>, Vec<&Expr>) =
            split_conjunction(&filter.predicate).into_iter().partition(|e| is_leakproof(e));
        if safe.is_empty() {
            return Ok(Transformed::no(plan));
        }
        let Some(safe) = conjunction(safe.into_iter().cloned()) else { return Ok(Transformed::no(plan)) };
        let below = LogicalPlan::Filter(Filter::try_new(safe, Arc::new(barrier.input.clone()))?);
        let barrier = LogicalPlan::Extension(Extension {
            node: Arc::new(PolicyBarrier { input: below, policy: Arc::clone(&barrier.policy) }),
        });
        let barrier = match projection {
            Some(p) => LogicalPlan::Projection(Projection::try_new(p.expr.clone(), Arc::new(barrier))?),
            None => barrier,
        };
        match conjunction(held.into_iter().cloned()) {
            Some(rest) => Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(rest, Arc::new(barrier))?))),
            None => Ok(Transformed::yes(barrier)),
        }
    }
}

/// DataFusion's filter push-down moves predicates that name no column through
/// any plan node, the barrier included; a volatile one (`random() < 2`) would
/// then run on rows the principal may not see, its cost or side effects
/// growing with their number. Such predicates are lifted back above the
/// barrier (this rule runs after the push-down in every optimizer pass).
fn lift_volatile(plan: &LogicalPlan) -> Result<Option<LogicalPlan>> {
    let LogicalPlan::Extension(ext) = plan else { return Ok(None) };
    let Some(barrier) = ext.node.as_any().downcast_ref::<PolicyBarrier>() else { return Ok(None) };
    // Column pruning may leave a projection between the barrier and the filter.
    let (projection, filter) = match &barrier.input {
        LogicalPlan::Filter(f) => (None, f),
        LogicalPlan::Projection(p) => match p.input.as_ref() {
            LogicalPlan::Filter(f) => (Some(p), f),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let (volatile, kept): (Vec<&Expr>, Vec<&Expr>) =
        split_conjunction(&filter.predicate).into_iter().partition(|e| e.is_volatile() && e.column_refs().is_empty());
    let Some(lifted) = conjunction(volatile.into_iter().cloned()) else { return Ok(None) };
    let unfiltered = match conjunction(kept.into_iter().cloned()) {
        Some(rest) => LogicalPlan::Filter(Filter::try_new(rest, Arc::clone(&filter.input))?),
        None => filter.input.as_ref().clone(),
    };
    let input = match projection {
        Some(p) => LogicalPlan::Projection(Projection::try_new(p.expr.clone(), Arc::new(unfiltered))?),
        None => unfiltered,
    };
    let barrier = LogicalPlan::Extension(Extension {
        node: Arc::new(PolicyBarrier { input, policy: Arc::clone(&barrier.policy) }),
    });
    Ok(Some(LogicalPlan::Filter(Filter::try_new(lifted, Arc::new(barrier))?)))
}

/// The policies enforced by a plan, for the audit log.
pub(crate) fn applied_policies(plan: &LogicalPlan) -> Vec<Arc<AppliedPolicy>> {
    let mut out: Vec<Arc<AppliedPolicy>> = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Extension(ext) = node
            && let Some(b) = ext.node.as_any().downcast_ref::<PolicyBarrier>()
            && !out.contains(&b.policy)
        {
            out.push(Arc::clone(&b.policy));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}
