//! Puts a filter's conditions on the join input they are about, before the
//! federation boundary is drawn.
//!
//! `datafusion-federation` federates right after sub-queries become joins,
//! before DataFusion pushes filters down. A comma-separated FROM list is then a
//! chain of cross joins with the WHERE clause above it, which DataFusion's
//! `EliminateCrossJoin` turns into equi-joins, but only when the filter sits
//! directly on the chain. A decorrelated sub-query puts a join in between:
//! TPC-H Q2 is `Filter → Left Join(part × supplier × partsupp × …, min(…))`,
//! and its three PostgreSQL tables were sent to PostgreSQL as a cartesian
//! product with every condition left in the engine. Q16–Q21 (`IN`, `EXISTS`,
//! `NOT EXISTS`: semi and anti joins) have the same shape.
//!
//! This rule moves each condition that names only columns of a join's
//! *preserved* side (the left of a left, semi or anti join; the right of the
//! mirrored ones) onto that side, where it filters the same rows: such a join
//! neither drops nor duplicates rows of that side because of the other. The
//! filter then sits on the cross-join chain and `EliminateCrossJoin` (which the
//! federation rules run next) finds the join keys. Inner joins are left to
//! `EliminateCrossJoin` itself, then [`ConditionsOntoTheirTable`] puts their
//! single-table conditions on their table and [`ResidualFiltersAboveJoin`]
//! lifts what is left back above the sub-query's join. Volatile conditions
//! and conditions with sub-queries stay where they are.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::utils::{conjunction, split_conjunction_owned};
use datafusion::logical_expr::{Expr, Filter, Join, JoinType, LogicalPlan};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct FiltersOntoPreservedSide;

impl OptimizerRule for FiltersOntoPreservedSide {
    fn name(&self) -> &str {
        "agora_filters_onto_preserved_side"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        // The filters it creates are visited in turn, so a condition travels
        // down a stack of semi and anti joins to the chain below them.
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Filter(filter) = &plan else { return Ok(Transformed::no(plan)) };
        let LogicalPlan::Join(join) = filter.input.as_ref() else { return Ok(Transformed::no(plan)) };
        let Some(preserved) = preserved_side(join.join_type) else { return Ok(Transformed::no(plan)) };
        let side = preserved.of(join);
        let (moved, kept): (Vec<Expr>, Vec<Expr>) =
            split_conjunction_owned(filter.predicate.clone()).into_iter().partition(|e| movable(e, side));
        if moved.is_empty() {
            return Ok(Transformed::no(plan));
        }
        let moved = filtered(moved, Arc::clone(side))?;
        let join = match preserved {
            Side::Left => with_inputs(join, moved, Arc::clone(&join.right))?,
            Side::Right => with_inputs(join, Arc::clone(&join.left), moved)?,
        };
        Ok(Transformed::yes(Arc::unwrap_or_clone(filtered(kept, Arc::new(join))?)))
    }
}

/// Moves each condition of a filter on an inner join that names the columns of
/// one input only onto that input, down to the table it is about, as
/// DataFusion's filter push-down would later, but as filter nodes and before
/// the federation boundary is drawn: a PostgreSQL table joined in the engine
/// with another source's (TPC-H Q17's `part` beside Parquet `lineitem`) then
/// sends its conditions in its statement instead of all its rows.
#[derive(Debug, Default)]
pub(crate) struct ConditionsOntoTheirTable;

impl OptimizerRule for ConditionsOntoTheirTable {
    fn name(&self) -> &str {
        "agora_conditions_onto_their_table"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Filter(filter) = &plan else { return Ok(Transformed::no(plan)) };
        let LogicalPlan::Join(join) = filter.input.as_ref() else { return Ok(Transformed::no(plan)) };
        if join.join_type != JoinType::Inner {
            return Ok(Transformed::no(plan));
        }
        let (mut left, mut right, mut kept) = (Vec::new(), Vec::new(), Vec::new());
        for condition in split_conjunction_owned(filter.predicate.clone()) {
            if movable(&condition, &join.left) {
                left.push(condition);
            } else if movable(&condition, &join.right) {
                right.push(condition);
            } else {
                kept.push(condition);
            }
        }
        if left.is_empty() && right.is_empty() {
            return Ok(Transformed::no(plan));
        }
        let join =
            with_inputs(join, filtered(left, Arc::clone(&join.left))?, filtered(right, Arc::clone(&join.right))?)?;
        Ok(Transformed::yes(Arc::unwrap_or_clone(filtered(kept, Arc::new(join))?)))
    }
}

/// Lifts a filter that sits directly on the preserved side of a left, semi or
/// anti join back above the join, after `EliminateCrossJoin` has taken the
/// join keys out of it (the reverse of [`FiltersOntoPreservedSide`], and as
/// valid). DataFusion 55's SQL unparser writes a semi or anti join as
/// `WHERE EXISTS (…)` and loses a filter below it (TPC-H Q4 and Q22 with every
/// table in PostgreSQL answered wrongly), so the federated plan keeps the
/// shape it writes correctly: the filter above the join.
#[derive(Debug, Default)]
pub(crate) struct ResidualFiltersAboveJoin;

impl OptimizerRule for ResidualFiltersAboveJoin {
    fn name(&self) -> &str {
        "agora_residual_filters_above_join"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(join) = &plan else { return Ok(Transformed::no(plan)) };
        let Some(preserved) = preserved_side(join.join_type) else { return Ok(Transformed::no(plan)) };
        let LogicalPlan::Filter(filter) = preserved.of(join).as_ref() else { return Ok(Transformed::no(plan)) };
        if filter.predicate.is_volatile() {
            return Ok(Transformed::no(plan));
        }
        let lifted = match preserved {
            Side::Left => with_inputs(join, Arc::clone(&filter.input), Arc::clone(&join.right))?,
            Side::Right => with_inputs(join, Arc::clone(&join.left), Arc::clone(&filter.input))?,
        };
        Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(filter.predicate.clone(), Arc::new(lifted))?)))
    }
}

/// The side of a join whose rows the join neither drops nor repeats because
/// of the other side: the left of a left, semi or anti join, the right of the
/// mirrored ones; none for inner and full joins.
#[derive(Debug, Clone, Copy)]
enum Side {
    Left,
    Right,
}

impl Side {
    fn of(self, join: &Join) -> &Arc<LogicalPlan> {
        match self {
            Side::Left => &join.left,
            Side::Right => &join.right,
        }
    }
}

fn preserved_side(join_type: JoinType) -> Option<Side> {
    match join_type {
        JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti => Some(Side::Left),
        JoinType::Right | JoinType::RightSemi | JoinType::RightAnti => Some(Side::Right),
        _ => None,
    }
}

/// `join` over new inputs, with its keys, filter and type.
fn with_inputs(join: &Join, left: Arc<LogicalPlan>, right: Arc<LogicalPlan>) -> Result<LogicalPlan> {
    Ok(LogicalPlan::Join(Join::try_new(
        left,
        right,
        join.on.clone(),
        join.filter.clone(),
        join.join_type,
        join.join_constraint,
        join.null_equality,
        join.null_aware,
    )?))
}

/// `input` filtered by the conjunction of `conditions`; `input` itself when
/// there are none.
fn filtered(conditions: Vec<Expr>, input: Arc<LogicalPlan>) -> Result<Arc<LogicalPlan>> {
    Ok(match conjunction(conditions) {
        Some(condition) => Arc::new(LogicalPlan::Filter(Filter::try_new(condition, input)?)),
        None => input,
    })
}

/// Whether `condition` may move onto `side`: it names columns, all of them
/// `side`'s, and evaluating it earlier changes nothing else (not volatile, no
/// sub-query).
fn movable(condition: &Expr, side: &LogicalPlan) -> bool {
    let columns = condition.column_refs();
    !columns.is_empty()
        && !condition.is_volatile()
        && !condition
            .exists(|e| Ok(matches!(e, Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_))))
            .unwrap_or(true)
        && columns.iter().all(|c| side.schema().has_column(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::{LogicalPlanBuilder, table_scan};
    use datafusion::optimizer::OptimizerContext;
    use datafusion::optimizer::eliminate_cross_join::EliminateCrossJoin;
    use datafusion::prelude::{col, lit};

    fn scan(name: &str, columns: &[&str]) -> LogicalPlan {
        let fields: Vec<Field> = columns.iter().map(|c| Field::new(*c, DataType::Int64, false)).collect();
        table_scan(Some(name), &Schema::new(fields), None).unwrap().build().unwrap()
    }

    /// `Filter(condition) → LeftSemi(a × b, s)`, as a decorrelated `EXISTS`
    /// over a two-table FROM list leaves it.
    fn semi_join_over_a_cross_join(condition: Expr) -> LogicalPlan {
        LogicalPlanBuilder::from(scan("a", &["x", "k"]))
            .cross_join(scan("b", &["y"]))
            .unwrap()
            .join(scan("s", &["k2"]), JoinType::LeftSemi, (vec!["a.k"], vec!["s.k2"]), None)
            .unwrap()
            .filter(condition)
            .unwrap()
            .build()
            .unwrap()
    }

    /// Runs a rule over the whole plan, in its order, as the optimizer does.
    fn apply(rule: &dyn OptimizerRule, plan: LogicalPlan) -> LogicalPlan {
        let config = OptimizerContext::new();
        let run = |plan: LogicalPlan| rule.rewrite(plan, &config).unwrap().data;
        match rule.apply_order() {
            None => run(plan),
            Some(ApplyOrder::TopDown) => plan.transform_down(|p| Ok(Transformed::yes(run(p)))).unwrap().data,
            Some(ApplyOrder::BottomUp) => plan.transform_up(|p| Ok(Transformed::yes(run(p)))).unwrap().data,
        }
    }

    #[test]
    fn the_join_keys_under_a_semi_join_are_found_and_the_rest_stays_above_it() {
        let plan = semi_join_over_a_cross_join(col("a.x").eq(col("b.y")).and(col("a.x").gt(lit(1))));
        let down = apply(&FiltersOntoPreservedSide, plan);
        assert!(matches!(down, LogicalPlan::Join(_)), "every condition moved below the semi join:\n{down}");
        let keyed = apply(&EliminateCrossJoin::new(), down);
        let lifted = apply(&ResidualFiltersAboveJoin, keyed);
        let text = lifted.display_indent().to_string();
        assert!(!text.contains("Cross Join"), "{text}");
        assert!(text.contains("Inner Join: a.x = b.y"), "{text}");
        assert!(text.starts_with("Filter: a.x > Int32(1)\n  LeftSemi Join: a.k = s.k2"), "{text}");
    }

    #[test]
    fn single_table_conditions_on_an_inner_join_go_onto_their_table() {
        let plan = LogicalPlanBuilder::from(scan("a", &["x", "k"]))
            .join(scan("b", &["y", "k"]), JoinType::Inner, (vec!["a.k"], vec!["b.k"]), None)
            .unwrap()
            .filter(col("a.x").gt(lit(1)).and(col("b.y").eq(lit(2))).and(col("a.x").lt(col("b.y"))))
            .unwrap()
            .build()
            .unwrap();
        let text = apply(&ConditionsOntoTheirTable, plan).display_indent().to_string();
        assert_eq!(
            text,
            "Filter: a.x < b.y\n  Inner Join: a.k = b.k\n    Filter: a.x > Int32(1)\n      TableScan: a\n    \
             Filter: b.y = Int32(2)\n      TableScan: b",
        );
    }

    #[test]
    fn volatile_and_constant_conditions_stay_where_they_are() {
        let random = datafusion::functions::math::random().call(vec![]);
        let plan = semi_join_over_a_cross_join(random.gt(lit(0.5)).and(lit(true)));
        let down = apply(&FiltersOntoPreservedSide, plan.clone());
        assert_eq!(down, plan);
    }
}
