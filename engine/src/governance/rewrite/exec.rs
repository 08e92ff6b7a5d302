//! The policy barrier in the physical plan: what it lets through of
//! statistics and pushed filters.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::plan_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};

use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use datafusion::physical_plan::filter_pushdown::{
    ChildFilterDescription, ChildPushdownResult, FilterDescription, FilterPushdownPhase, FilterPushdownPropagation,
};
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream, Statistics,
    StatisticsArgs,
};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};

use super::{AppliedPolicy, PolicyBarrier};

/// Plans a [`PolicyBarrier`] as its input.
#[derive(Debug, Default)]
pub(crate) struct BarrierPlanner;

#[async_trait]
impl ExtensionPlanner for BarrierPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session_state: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(barrier) = node.as_any().downcast_ref::<PolicyBarrier>() else { return Ok(None) };
        match physical_inputs {
            [input] => Ok(Some(Arc::new(PolicyBarrierExec::new(Arc::clone(input), Arc::clone(&barrier.policy))))),
            _ => plan_err!("PolicyBarrier takes one input"),
        }
    }
}

/// The physical form of a [`PolicyBarrier`]: passes its input's batches through
/// unchanged, but lets no filter be pushed through it (DataFusion's physical
/// filter push-down would otherwise merge a user's predicate into the row
/// filter below, where it could run on hidden rows).
#[derive(Debug, Clone)]
pub(crate) struct PolicyBarrierExec {
    input: Arc<dyn ExecutionPlan>,
    policy: Arc<AppliedPolicy>,
}

impl PolicyBarrierExec {
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>, policy: Arc<AppliedPolicy>) -> Self {
        PolicyBarrierExec { input, policy }
    }
}

impl DisplayAs for PolicyBarrierExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PolicyBarrierExec: {}", self.policy.product)
    }
}

impl ExecutionPlan for PolicyBarrierExec {
    fn name(&self) -> &str {
        "PolicyBarrierExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(PolicyBarrierExec::new(input, Arc::clone(&self.policy)))),
            _ => plan_err!("PolicyBarrierExec takes one input"),
        }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    // The input's statistics (estimates below a row filter) guide join
    // planning; they are never shown to users (see `plan_view`). Masked
    // columns' statistics are the raw values' and are reported as unknown, so
    // that no plan above the barrier carries them.
    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let Some(stats) = input_stats.first() else { return plan_err!("PolicyBarrierExec takes one input") };
        if self.policy.masks.is_empty() {
            return Ok(Arc::clone(stats));
        }
        let mut stats = (**stats).clone();
        let schema = self.input.schema();
        for (column, _, _) in &self.policy.masks {
            if let Ok(i) = schema.index_of(column)
                && let Some(c) = stats.column_statistics.get_mut(i)
            {
                *c = datafusion::common::ColumnStatistics::new_unknown();
            }
        }
        Ok(Arc::new(stats))
    }

    /// Before optimisation-time filters (a query's own predicates) nothing
    /// passes; afterwards only the dynamic filters operators derive at run time
    /// (join keys and top-k bounds) arrive, and those cannot fail, so they may
    /// prune the scan below (and reach PostgreSQL as join keys) — but only on
    /// unmasked columns: above the barrier a masked column is its mask, so a
    /// filter on it arrives as an expression of the mask over the raw value,
    /// which below the barrier would run on the rows the row filter hides,
    /// where a mask that can fail would reveal them by its error.
    fn gather_filters_for_pushdown(
        &self,
        phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        match phase {
            FilterPushdownPhase::Pre => Ok(FilterDescription::all_unsupported(&parent_filters, &self.children())),
            FilterPushdownPhase::Post => {
                let schema = self.input.schema();
                let unmasked: HashSet<usize> = (0..schema.fields().len())
                    .filter(|i| !self.policy.masks.iter().any(|(column, _, _)| schema.field(*i).name() == column))
                    .collect();
                let child =
                    ChildFilterDescription::from_child_with_allowed_indices(&parent_filters, unmasked, &self.input)?;
                Ok(FilterDescription::new().with_child(child))
            }
        }
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        Ok(FilterPushdownPropagation::if_all(child_pushdown_result))
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }
}
