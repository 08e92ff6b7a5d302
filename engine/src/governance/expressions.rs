//! What an expression in a policy (a row filter, a SQL mask) may contain:
//! checked wherever one is planned, so that no policy reads other products
//! with its own rights or changes from one row to the next.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, Volatility};

/// Refuses expressions a policy may not contain: sub-queries (they would read
/// other products with the policy's rights), aggregates, window functions,
/// parameters and volatile functions.
pub(crate) fn check_scalar(e: &Expr) -> Result<(), String> {
    let mut problem: Option<String> = None;
    let _ = e.apply(|e| {
        let found = match e {
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_) => Some("sub-queries"),
            Expr::AggregateFunction(_) => Some("aggregate functions"),
            Expr::WindowFunction(_) => Some("window functions"),
            Expr::Placeholder(_) => Some("parameters"),
            Expr::ScalarFunction(f) if f.func.signature().volatility == Volatility::Volatile => {
                Some("volatile functions")
            }
            _ => None,
        };
        if let Some(what) = found {
            problem = Some(format!("{what} are not allowed in policy expressions (found {e})"));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    problem.map_or(Ok(()), Err)
}
