//! Joins that yield.
//!
//! DataFusion makes its scans give the tokio scheduler a turn now and then
//! (`EnsureCooperative`), which suffices while operators produce about as many
//! rows as they read. A nested-loop or cross join produces rows by the billion
//! from a few batches of input, and the operators above it (a `count(*)`)
//! consume them in a loop that never returns to the scheduler: the query's
//! thread would then run neither the statement timeout's timer, nor its
//! cancellation, nor any other query. This rule wraps the output of such joins
//! in DataFusion's [`CooperativeExec`], so that every batch they produce
//! spends the task's scheduling budget.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{CrossJoinExec, NestedLoopJoinExec};

/// Wraps nested-loop and cross joins in [`CooperativeExec`].
#[derive(Debug, Default)]
pub(crate) struct YieldingJoins;

impl PhysicalOptimizerRule for YieldingJoins {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.is::<NestedLoopJoinExec>() || node.is::<CrossJoinExec>() {
                Ok(Transformed::yes(Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "agora_yielding_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
