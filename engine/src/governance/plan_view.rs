//! What a viewer may see of a plan, and which plans an embedder may run.
//!
//! Plans are printed by `EXPLAIN`, and some forms print what the plan read or
//! would read: `EXPLAIN ANALYZE` the rows each scan produced before the row
//! filters, `EXPLAIN VERBOSE` and `EXPLAIN (COSTS ON)` the statistics of the
//! scans below the policy barrier (total row counts, and the minimum and
//! maximum of columns over hidden rows and behind masks). This module is the
//! one place that decides: admins may run every form; every other principal on
//! a governed mesh gets plans without metrics or statistics, which show where
//! policies apply but no value derived from the data. The same check covers
//! SQL and plans built by hand ([`crate::Session::plan`]).

use std::any::Any;

use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use super::Viewer;
use crate::EngineError;

/// Refuses plan forms that print statistics or metrics to a non-admin.
/// `statistics_by_default` is the session's `datafusion.explain.show_statistics`.
pub(crate) fn check_plan_view(
    viewer: &Viewer,
    plan: &LogicalPlan,
    statistics_by_default: bool,
) -> Result<(), EngineError> {
    if viewer.is_admin() {
        return Ok(());
    }
    let refused = match plan {
        LogicalPlan::Analyze(_) => Some("EXPLAIN ANALYZE shows how many rows each scan read before the row filters"),
        LogicalPlan::Explain(explain) if explain.verbose => {
            Some("EXPLAIN VERBOSE shows the statistics of the scans below the policies")
        }
        LogicalPlan::Explain(explain) if explain.show_statistics.unwrap_or(statistics_by_default) => {
            Some("EXPLAIN with COSTS (statistics) shows row counts and value ranges of the scans below the policies")
        }
        _ => None,
    };
    match refused {
        Some(why) => Err(EngineError::Denied(format!(
            "access denied: {why}; only admins may run it (user '{}'). Plain EXPLAIN shows the plan",
            viewer.principal.user
        ))),
        None => Ok(()),
    }
}

/// Refuses, for a non-admin, a plan built by hand that reads a table the
/// session's catalogue would not give it under that name: only the
/// catalogue's tables carry the policies.
pub(crate) async fn check_plan_sources(
    viewer: &Viewer,
    ctx: &SessionContext,
    plan: &LogicalPlan,
) -> Result<(), EngineError> {
    if viewer.is_admin() {
        return Ok(());
    }
    let mut scans = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            scans.push((scan.table_name.clone(), source_as_provider(&scan.source).ok()));
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(EngineError::from)?;
    for (name, provider) in scans {
        let foreign = || {
            EngineError::Denied(format!(
                "access denied: the plan reads a table {name} that is not the mesh's (user '{}'); build plans \
                 over the session's tables only",
                viewer.principal.user
            ))
        };
        let Some(provider) = provider else { return Err(foreign()) };
        let Ok(registered) = ctx.table_provider(name.clone()).await else { return Err(foreign()) };
        if type_of(provider.as_ref()) != type_of(registered.as_ref()) {
            return Err(foreign());
        }
    }
    Ok(())
}

fn type_of(provider: &dyn TableProvider) -> std::any::TypeId {
    (provider as &dyn Any).type_id()
}
