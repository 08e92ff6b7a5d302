//! Enforcement at one point: the analyzer rewrites every scan of a governed
//! product, on every path that produces a plan (SQL, prepared statements,
//! sub-queries, views, `EXPLAIN`, the DataFrame API), before optimisation:
//!
//! ```text
//! Projection(masks, same names and types)
//!   PolicyBarrier
//!     Filter(row filter, on raw values)
//!       TableScan(the product's own table)
//! ```
//!
//! The optimiser may move a user's predicate below the barrier only when it
//! cannot fail and calls no engine-only function ([`is_leakproof`]): such
//! predicates still reach Parquet/Delta pruning and PostgreSQL, while a
//! predicate that could raise an error (a division, a cast) is evaluated only
//! on rows the row filter let through, so an error cannot reveal a hidden row.
//!
//! A [`GovernedTable`] refuses to be scanned directly: a path that skipped the
//! rewrite fails instead of returning raw data.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchemaRef, TableReference, plan_err};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Extension, Filter, LogicalPlan, LogicalPlanBuilder, Operator, Projection, TableScan,
    TableScanBuilder, TableType, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
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
use serde::{Deserialize, Serialize};

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

/// Marks where a product's policies end: predicates move below it only when
/// they are leak-proof. Executes as its input (no cost).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct PolicyBarrier {
    input: LogicalPlan,
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

/// Functions that cannot fail on any input and that every source understands.
const LEAKPROOF_FUNCTIONS: &[&str] = &[
    "lower",
    "upper",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "starts_with",
    "coalesce",
];

/// Whether a predicate can be evaluated on rows a principal may not see without
/// revealing anything: it cannot raise an error and has no side effect.
/// Comparisons, boolean logic, `IN` lists, `BETWEEN`, `LIKE`, `IS NULL` over
/// columns and literals qualify; arithmetic (overflow, division by zero), casts
/// that can fail, sub-queries and other functions do not.
pub(crate) fn is_leakproof(e: &Expr) -> bool {
    match e {
        Expr::Column(_) | Expr::Literal(..) => true,
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let op_ok = matches!(
                op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
                    | Operator::And
                    | Operator::Or
                    | Operator::IsDistinctFrom
                    | Operator::IsNotDistinctFrom
                    | Operator::LikeMatch
                    | Operator::ILikeMatch
                    | Operator::NotLikeMatch
                    | Operator::NotILikeMatch
            );
            op_ok && is_leakproof(left) && is_leakproof(right)
        }
        Expr::Not(e)
        | Expr::IsNull(e)
        | Expr::IsNotNull(e)
        | Expr::IsTrue(e)
        | Expr::IsFalse(e)
        | Expr::IsNotTrue(e)
        | Expr::IsNotFalse(e)
        | Expr::IsUnknown(e)
        | Expr::IsNotUnknown(e) => is_leakproof(e),
        Expr::Between(b) => is_leakproof(&b.expr) && is_leakproof(&b.low) && is_leakproof(&b.high),
        Expr::InList(l) => is_leakproof(&l.expr) && l.list.iter().all(is_leakproof),
        Expr::Like(l) => l.escape_char.is_none() && is_leakproof(&l.expr) && is_leakproof(&l.pattern),
        Expr::Cast(c) => infallible_cast(&c.expr, c.field.data_type()) && is_leakproof(&c.expr),
        Expr::TryCast(c) => is_leakproof(&c.expr),
        Expr::ScalarFunction(f) => LEAKPROOF_FUNCTIONS.contains(&f.name()) && f.args.iter().all(is_leakproof),
        _ => false,
    }
}

/// Casts that succeed for every value: to text, integer widening, date to
/// timestamp. A cast whose input type is unknown here is treated as fallible.
fn infallible_cast(input: &Expr, to: &DataType) -> bool {
    let from = match input {
        Expr::Literal(v, _) => v.data_type(),
        _ => return matches!(to, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View),
    };
    use DataType::*;
    matches!(to, Utf8 | LargeUtf8 | Utf8View)
        || from == *to
        || matches!(
            (&from, to),
            (Int8 | Int16 | Int32 | UInt8 | UInt16, Int32 | Int64)
                | (Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32, Int64 | Float64)
                | (Date32, Timestamp(_, _) | Date64)
                | (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View)
        )
}

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
    fn new(input: Arc<dyn ExecutionPlan>, policy: Arc<AppliedPolicy>) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn leakproof_predicates() {
        assert!(is_leakproof(&col("a").eq(lit(1))));
        assert!(is_leakproof(&col("a").in_list(vec![lit(1), lit(2)], false).and(col("b").is_null())));
        assert!(is_leakproof(&col("s").like(lit("x%"))));
        assert!(!is_leakproof(&(col("a") / col("b")).gt(lit(1))));
        assert!(!is_leakproof(&(col("a") + lit(1)).gt(lit(1))));
        assert!(!is_leakproof(&datafusion::logical_expr::cast(col("s"), DataType::Int64).eq(lit(1))));
        assert!(is_leakproof(&datafusion::logical_expr::cast(col("a"), DataType::Utf8).eq(lit("1"))));
    }

    /// The barrier of a product (`id`, `phone`) whose `phone` is masked and
    /// whose rows are filtered.
    fn masked_phone_barrier() -> PolicyBarrierExec {
        use arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("phone", DataType::Utf8, false),
        ]));
        let policy = AppliedPolicy {
            product: "crm.customer".into(),
            row_filter: Some("region = 'EUROPE'".into()),
            filter_policies: vec![],
            masks: vec![("phone".into(), "last_n(4)".into(), "contact-last-4".into())],
        };
        let input = Arc::new(datafusion::physical_plan::empty::EmptyExec::new(schema));
        PolicyBarrierExec::new(input, Arc::new(policy))
    }

    #[test]
    fn the_barrier_reports_masked_columns_statistics_as_unknown() {
        use datafusion::common::stats::Precision;
        use datafusion::common::{ColumnStatistics, ScalarValue, Statistics};
        let barrier = masked_phone_barrier();
        let known = |min: ScalarValue, max: ScalarValue| ColumnStatistics {
            min_value: Precision::Exact(min),
            max_value: Precision::Exact(max),
            ..ColumnStatistics::new_unknown()
        };
        let raw = Statistics {
            num_rows: Precision::Exact(100),
            total_byte_size: Precision::Absent,
            column_statistics: vec![
                known(ScalarValue::Int64(Some(1)), ScalarValue::Int64(Some(100))),
                known(ScalarValue::from("+1 555 0100"), ScalarValue::from("+1 555 0199")),
            ],
        };
        let seen = barrier.statistics_from_inputs(&[Arc::new(raw.clone())], &StatisticsArgs::new()).unwrap();
        assert_eq!(seen.num_rows, Precision::Exact(100), "row estimates still guide the optimiser");
        assert_eq!(seen.column_statistics[0], raw.column_statistics[0]);
        assert_eq!(seen.column_statistics[1], ColumnStatistics::new_unknown(), "the raw phone numbers stay below");
    }

    #[test]
    fn run_time_filters_cross_the_barrier_only_on_unmasked_columns() {
        use datafusion::physical_expr::expressions::{BinaryExpr, Column as ColumnExpr, DynamicFilterPhysicalExpr};
        use datafusion::physical_plan::filter_pushdown::PushedDown;
        let barrier = masked_phone_barrier();
        let column = |name: &str, index| Arc::new(ColumnExpr::new(name, index)) as Arc<dyn PhysicalExpr>;
        let dynamic = |on: Arc<dyn PhysicalExpr>| {
            Arc::new(DynamicFilterPhysicalExpr::new(vec![on], datafusion::physical_expr::expressions::lit(true)))
                as Arc<dyn PhysicalExpr>
        };
        // A join on `id`, one on `phone` (arriving as the mask's expression
        // over the raw column, here `phone || phone`), and a top-k bound on
        // `phone`.
        let on_mask = Arc::new(BinaryExpr::new(column("phone", 1), Operator::StringConcat, column("phone", 1)));
        let filters = vec![dynamic(column("id", 0)), dynamic(on_mask), dynamic(column("phone", 1))];
        let config = ConfigOptions::default();
        let pushed = |phase| {
            let description = barrier.gather_filters_for_pushdown(phase, filters.clone(), &config).unwrap();
            description.parent_filters()[0]
                .iter()
                .map(|f| matches!(f.discriminant, PushedDown::Yes))
                .collect::<Vec<_>>()
        };
        assert_eq!(pushed(FilterPushdownPhase::Post), vec![true, false, false]);
        assert_eq!(pushed(FilterPushdownPhase::Pre), vec![false, false, false]);
    }
}
