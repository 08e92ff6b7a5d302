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

mod barrier;
mod exec;
mod leakproof;
mod rule;

pub(crate) use self::barrier::{BarrierPushdown, PolicyBarrier, applied_policies};
pub(crate) use self::exec::BarrierPlanner;
pub(crate) use self::leakproof::is_leakproof;
pub use self::rule::AppliedPolicy;
pub(crate) use self::rule::{GovernanceRule, GovernedTable};

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::DataType;
    use datafusion::common::config::ConfigOptions;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_plan::filter_pushdown::FilterPushdownPhase;
    use datafusion::physical_plan::{ExecutionPlan, StatisticsArgs};

    use super::exec::PolicyBarrierExec;
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
