//! The recipe of a session's DataFusion state: Agora's analyzer rule (the
//! governance rewrite) first, the policy barrier's optimizer and physical
//! planner, the federation's rules when a product is remote, and the
//! session's governed catalog.

use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::Analyzer;
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::SessionContext;

use super::{CATALOG, Engine, Session};
use crate::Principal;
use crate::governance::PolicySet;
use crate::governance::Viewer;
use crate::governance::rewrite::{BarrierPlanner, BarrierPushdown, GovernanceRule};
use crate::query_context::Origin;
use crate::session::SessionCatalog;
use crate::system::{SearchFunction, SystemContext, SystemSchema};

impl Engine {
    pub(super) fn session_with(&self, principal: Principal, policies: Option<Arc<PolicySet>>) -> Session {
        // The governance rule runs first, so that type coercion also covers the
        // row filters and masks it inserts.
        let mut analyzer_rules: Vec<Arc<dyn AnalyzerRule + Send + Sync>> = vec![Arc::new(GovernanceRule)];
        analyzer_rules.extend(Analyzer::new().rules);
        let mut planners: Vec<Arc<dyn ExtensionPlanner + Send + Sync>> = vec![Arc::new(BarrierPlanner)];
        let mut builder = SessionStateBuilder::new()
            .with_config(self.inner.session_config.clone())
            .with_runtime_env(Arc::clone(&self.inner.runtime))
            .with_default_features()
            .with_analyzer_rules(analyzer_rules);
        if self.inner.federated {
            builder = agora_connectors::with_federation(builder);
            planners.extend(agora_connectors::extension_planners());
        }
        let state = builder
            .with_optimizer_rule(Arc::new(BarrierPushdown))
            .with_physical_optimizer_rule(Arc::new(crate::cooperative::YieldingJoins))
            .with_query_planner(Arc::new(AgoraPlanner { planners }))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let viewer = Viewer { principal: Arc::new(principal), policies };
        let audit = self.inner.audit.clone();
        let context =
            SystemContext { mesh: Arc::clone(&self.inner.catalog), viewer: viewer.clone(), audit: audit.clone() };
        let system = Arc::new(SystemSchema { context: context.clone() });
        let catalog = SessionCatalog { mesh: Arc::clone(&self.inner.catalog), viewer: viewer.clone(), system };
        ctx.register_catalog(CATALOG, Arc::new(catalog.clone()));
        ctx.register_udtf("search_products", Arc::new(SearchFunction { context }));
        Session { ctx, engine: self.clone(), viewer, catalog, audit, origin: Origin::default(), default_schema: None }
    }
}

/// Plans physical execution, including Agora's and the federation's plan nodes.
struct AgoraPlanner {
    planners: Vec<Arc<dyn ExtensionPlanner + Send + Sync>>,
}

impl std::fmt::Debug for AgoraPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgoraPlanner").field("planners", &self.planners.len()).finish()
    }
}

#[async_trait::async_trait]
impl QueryPlanner for AgoraPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(self.planners.clone())
            .create_physical_plan(logical_plan, session)
            .await
    }
}
