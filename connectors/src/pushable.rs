//! Keeps functions PostgreSQL does not have out of the SQL sent to it.
//!
//! The federation optimizer sends every sub-plan over one connection to the
//! database, and the SQL unparser writes any function by its DataFusion name:
//! `arrow_typeof(x)` or `approx_distinct(x)` would reach PostgreSQL and fail
//! there. This rule runs right after federation: a federated sub-plan that uses
//! a function outside [`POSTGRES_FUNCTIONS`] is split so that the nodes using
//! it run in the engine and only the largest sub-plans below them go to the
//! database (still with their joins, filters and aggregates).

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction, WindowFunction};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{Expr, Extension, Filter, LogicalPlan, Projection};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// Functions that exist in PostgreSQL under the name DataFusion unparses them
/// with, with the same meaning. Anything else is evaluated by the engine.
const POSTGRES_FUNCTIONS: &[&str] = &[
    // numeric
    "abs",
    "acos",
    "asin",
    "atan",
    "atan2",
    "cbrt",
    "ceil",
    "cos",
    "cot",
    "degrees",
    "exp",
    "floor",
    "gcd",
    "lcm",
    "ln",
    "log10",
    "pi",
    "power",
    "radians",
    "round",
    "sin",
    "sqrt",
    "tan",
    // text
    "ascii",
    "bit_length",
    "btrim",
    "char_length",
    "character_length",
    "chr",
    "concat",
    "concat_ws",
    "initcap",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "md5",
    "octet_length",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "to_hex",
    "translate",
    "trim",
    "upper",
    "regexp_replace",
    "regexp_match",
    // conditional, time
    "coalesce",
    "nullif",
    "date_part",
    "date_trunc",
    "now",
    "current_date",
    // aggregate
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "mean",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "var_pop",
    "var_samp",
    "variance",
    "bool_and",
    "bool_or",
    "bit_and",
    "bit_or",
    "string_agg",
    "corr",
    "covar_pop",
    "covar_samp",
    // window (first_value, last_value and nth_value are left out: DataFusion
    // also has them as aggregates, which PostgreSQL lacks; log and trunc exist
    // for numeric only, regexp_like from PostgreSQL 15 on)
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
];

static PUSHABLE: LazyLock<HashSet<&'static str>> = LazyLock::new(|| POSTGRES_FUNCTIONS.iter().copied().collect());

/// The first function in `expr` PostgreSQL would not understand.
fn foreign_function(expr: &Expr) -> Option<String> {
    let mut found = None;
    let _ = expr.apply(|e| {
        let name = match e {
            Expr::ScalarFunction(ScalarFunction { func, .. }) => Some(func.name()),
            Expr::AggregateFunction(AggregateFunction { func, .. }) => Some(func.name()),
            Expr::WindowFunction(w) => {
                let WindowFunction { fun, .. } = w.as_ref();
                Some(fun.name())
            }
            _ => None,
        };
        match name {
            Some(n) if !PUSHABLE.contains(n.to_ascii_lowercase().as_str()) => {
                found = Some(n.to_string());
                Ok(TreeNodeRecursion::Stop)
            }
            _ => Ok(TreeNodeRecursion::Continue),
        }
    });
    found
}

/// Does any node of `plan` (sub-queries included) use a foreign function?
fn uses_foreign_function(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if node.expressions().iter().any(|e| foreign_function(e).is_some()) {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Splits federated sub-plans around functions PostgreSQL lacks.
#[derive(Debug, Default)]
pub(crate) struct KeepForeignFunctionsLocal;

impl OptimizerRule for KeepForeignFunctionsLocal {
    fn name(&self) -> &str {
        "agora_keep_foreign_functions_local"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        plan.transform_down_with_subqueries(|node| {
            let LogicalPlan::Extension(Extension { node: ext }) = &node else { return Ok(Transformed::no(node)) };
            let Some(inner) = crate::federated_plan(ext.as_ref()) else { return Ok(Transformed::no(node)) };
            if !uses_foreign_function(inner) {
                return Ok(Transformed::no(node));
            }
            let split = split(inner, config)?;
            Ok(Transformed::new(split, true, TreeNodeRecursion::Jump))
        })
    }
}

/// `plan` with the nodes that use foreign functions kept in the engine and
/// everything below them federated again.
fn split(plan: &LogicalPlan, config: &dyn OptimizerConfig) -> Result<LogicalPlan> {
    if !uses_foreign_function(plan) {
        return federate(plan, config);
    }
    // A filter's pushable conjuncts still go to the database, below the rest.
    if let LogicalPlan::Filter(filter) = plan {
        let (foreign, pushable): (Vec<Expr>, Vec<Expr>) =
            split_conjunction(&filter.predicate).into_iter().cloned().partition(|e| foreign_function(e).is_some());
        if let (Some(foreign), Some(pushable)) = (conjunction(foreign), conjunction(pushable)) {
            let below = split(&LogicalPlan::Filter(Filter::try_new(pushable, Arc::clone(&filter.input))?), config)?;
            return Ok(LogicalPlan::Filter(Filter::try_new(foreign, Arc::new(below))?));
        }
    }
    let inputs = plan.inputs().into_iter().map(|i| split(i, config)).collect::<Result<Vec<_>>>()?;
    plan.with_new_exprs(plan.expressions(), inputs)
}

/// Hands `plan` to the federation provider of its tables, as the federation
/// optimizer does for the largest single-source sub-plans.
fn federate(plan: &LogicalPlan, config: &dyn OptimizerConfig) -> Result<LogicalPlan> {
    let mut provider = None;
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Some(source) = datafusion_federation::get_table_source(&scan.source)?
        {
            provider = Some(source.federation_provider());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let Some(optimizer) = provider.and_then(|p| p.optimizer()) else { return Ok(plan.clone()) };
    let wrapped = match plan {
        LogicalPlan::Projection(_) => plan.clone(),
        other => {
            let columns = other.schema().columns().into_iter().map(Expr::Column).collect();
            LogicalPlan::Projection(Projection::try_new(columns, Arc::new(other.clone()))?)
        }
    };
    optimizer.optimize(wrapped, config, |_, _| {})
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn only_known_functions_are_pushable() {
        let upper = datafusion::functions::string::upper().call(vec![col("a")]);
        assert_eq!(foreign_function(&upper), None);
        let typeof_ = datafusion::functions::core::arrow_typeof().call(vec![col("a")]);
        assert_eq!(foreign_function(&typeof_.clone().eq(lit("Int64"))), Some("arrow_typeof".to_string()));
        assert_eq!(foreign_function(&col("a").gt(lit(1))), None);
    }
}
