//! The embeddable engine: a loaded mesh and the sessions that query it.
//!
//! Where things live: [`Engine`] (this file) holds what every session
//! shares; `open` builds it from a configuration; `state` is the recipe of
//! a session's DataFusion state; `session` is one client's connection;
//! `planning` turns SQL or a plan into a [`Query`], through `gate` (the
//! read-only and plan-view checks), `names` (name resolution with hints)
//! and `default_schema`; `query` and `run` execute it within its limits;
//! `quality` runs the contracts' quality rules; `keys` serves products' keys.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionConfig;
use futures::StreamExt;

use agora_connectors::Source;

use crate::audit::{AuditLog, RequestEvent};
use crate::catalog::MeshCatalog;
use crate::config::{ConfigError, DomainConfig, MeshConfig, Problem};
use crate::governance::PolicySet;
use crate::history::QueryInfo;
use crate::limits::{Admission, QuerySlot};
use crate::lineage::LineageEmitter;
use crate::query_runtime::QueryRuntime;
use crate::{EngineError, Principal, ProductRef};

mod default_schema;
mod gate;
mod keys;
mod names;
mod open;
mod planning;
mod quality;
mod query;
mod run;
mod session;
mod state;

pub use keys::ProductForeignKey;
pub use query::Query;
pub use session::Session;

/// The SQL catalog name under which every domain appears.
pub const CATALOG: &str = "mesh";

/// How many products are opened at once by [`Engine::check`].
const OPEN_CONCURRENCY: usize = 16;

/// A loaded mesh, ready to be queried.
///
/// Cheap to clone; clones share the catalog, the opened tables and the object-store
/// clients. Create one per process and a [`Session`] per request or client.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Arc<MeshCatalog>,
    runtime: Arc<RuntimeEnv>,
    session_config: SessionConfig,
    /// Some products are remote databases: plans go through the federation
    /// optimizer, which sends whole single-source sub-plans to the source.
    federated: bool,
    /// The policies in force; `None` for an open mesh.
    policies: Option<Arc<PolicySet>>,
    /// Where every request is recorded; `None` for an open mesh.
    audit: Option<Arc<AuditLog>>,
    /// Where lineage events go, if configured.
    lineage: Option<Arc<LineageEmitter>>,
    /// Domains whose attached PostgreSQL schema could not be listed, and why.
    attach_failures: Vec<(String, String)>,
    /// Where queries are planned and run, apart from the caller's runtime,
    /// at a lower priority than the network threads.
    queries: QueryRuntime,
    /// Where statements that read nothing (`SELECT 1`) are planned and run:
    /// never behind heavy queries, for the CPU or for a thread.
    constants: QueryRuntime,
    /// Slots for running and queued queries.
    admission: Admission,
}

impl Inner {
    /// The runtime of a query's lane (see [`QuerySlot::constant`]).
    fn lane(&self, slot: &QuerySlot) -> &QueryRuntime {
        if slot.constant { &self.constants } else { &self.queries }
    }
}

/// A snapshot of the resources queries hold, against their limits (see
/// `docs/operations.md`): what an operator watches to size a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceUsage {
    /// Queries holding a regular slot (planning, running or streaming).
    pub running_queries: usize,
    /// Queries waiting for a slot.
    pub queued_queries: usize,
    /// `limits.max_concurrent_queries`.
    pub max_running_queries: usize,
    /// Bytes reserved in the memory pool by running operators.
    pub memory_reserved_bytes: usize,
    /// `limits.memory_limit_bytes`.
    pub memory_limit_bytes: usize,
    /// Bytes of spill files on disk now.
    pub spill_bytes: u64,
    /// `limits.max_spill_bytes`.
    pub spill_limit_bytes: u64,
}

/// A product's descriptions, as catalog browsers show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRemarks {
    /// The product's description (`description` in `mesh.yaml`).
    pub description: String,
    /// Column name → description, from the product's contract.
    pub columns: std::collections::HashMap<String, String>,
}

/// The outcome of opening one product, as reported by [`Engine::check`].
#[derive(Debug)]
pub struct ProductCheck {
    /// The product.
    pub product: ProductRef,
    /// Its schema, or why it could not be opened.
    pub result: Result<SchemaRef, EngineError>,
}

impl Engine {
    /// The policies in force, if the mesh is governed.
    pub fn policies(&self) -> Option<&PolicySet> {
        self.inner.policies.as_deref()
    }

    /// Domains whose attached PostgreSQL schema could not be listed at start,
    /// with the reason: their tables are missing until the engine is restarted.
    pub fn attach_failures(&self) -> &[(String, String)] {
        &self.inner.attach_failures
    }

    /// The lineage emitter, if lineage is configured: counts delivered and failed events.
    pub fn lineage(&self) -> Option<&LineageEmitter> {
        self.inner.lineage.as_deref()
    }

    /// Whether no query is queued, running or streaming: a draining server
    /// may stop.
    pub fn is_idle(&self) -> bool {
        self.inner.admission.busy() == 0
    }

    /// Stops every running query, and any started from now on: their result
    /// streams end with [`EngineError::ShuttingDown`] (audited as
    /// `cancelled`). For a server whose drain time is over.
    pub fn stop_queries(&self) {
        self.inner.queries.stop_streams();
        self.inner.constants.stop_streams();
    }

    /// What running queries hold now, for monitoring.
    pub fn usage(&self) -> ResourceUsage {
        let limits = &self.config().limits;
        ResourceUsage {
            running_queries: self.inner.admission.running(),
            queued_queries: self.inner.admission.queued(),
            max_running_queries: limits.max_concurrent_queries,
            memory_reserved_bytes: self.inner.runtime.memory_pool.reserved(),
            memory_limit_bytes: limits.memory_limit_bytes,
            spill_bytes: self.inner.runtime.disk_manager.used_disk_space(),
            spill_limit_bytes: limits.max_spill_bytes,
        }
    }

    /// Whether each domain's database accepts connections now, within its
    /// connect timeout: `(domain, result)` for every domain that reads from
    /// PostgreSQL. Object stores are not probed (a request per check would
    /// cost money on a cloud store); their failures surface in queries.
    pub async fn probe_sources(&self) -> Vec<(String, Result<(), agora_connectors::ConnectorError>)> {
        let probes = self.domains().iter().filter_map(|domain| {
            let connection = domain.products.iter().find_map(|p| match &p.source {
                Source::Postgres(source) => Some(Arc::clone(&source.connection)),
                _ => None,
            })?;
            let name = domain.name.clone();
            Some(async move { (name, connection.probe().await) })
        });
        futures::future::join_all(probes).await
    }

    /// The audit log, if the mesh is governed.
    pub fn audit_log(&self) -> Option<&AuditLog> {
        self.inner.audit.as_deref()
    }

    /// Records a request the engine did not run itself (a login, a request
    /// the server refused before it reached a session) on a governed mesh.
    /// An error means the request must be refused: the log cannot be
    /// written, or the client is over its audit quota.
    pub async fn record_event(&self, event: RequestEvent) -> Result<(), EngineError> {
        match &self.inner.audit {
            Some(log) => crate::audit::event::record_event(log, event).await,
            None => Ok(()),
        }
    }

    /// Checks every policy against the schema of the products it names (columns
    /// exist, row filters are predicates, masks fit their columns). Opens each
    /// product; products that cannot be opened now are skipped with a warning and
    /// their policies are checked when they are first queried, failing closed.
    pub async fn validate_policies(&self) -> Result<(), EngineError> {
        let (Some(policies), Some(governance)) = (&self.inner.policies, &self.config().governance) else {
            return Ok(());
        };
        let mut problems = Vec::new();
        for check in self.check().await {
            match check.result {
                Ok(schema) => {
                    for message in crate::governance::compile::validate(
                        policies,
                        &check.product,
                        &schema,
                        self.inner.catalog.opener(),
                    ) {
                        problems.push(Problem { path: check.product.to_string(), message });
                    }
                }
                Err(e) => {
                    tracing::warn!(product = %check.product, error = %e, "policies not checked: product unavailable")
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(EngineError::Config(ConfigError { file: governance.policies.clone(), problems }))
        }
    }

    /// The configuration the engine was built from.
    pub fn config(&self) -> &MeshConfig {
        self.inner.catalog.config()
    }

    /// The domains, in configuration order.
    pub fn domains(&self) -> &[DomainConfig] {
        &self.config().domains
    }

    /// Every query of the engine (running ones first, then the newest
    /// finished), for the embedding application; `system.queries` shows
    /// each principal its own.
    pub fn queries(&self) -> Vec<QueryInfo> {
        self.inner.catalog.history().all()
    }

    /// Opens a session for the embedding application itself (the `local`
    /// principal). Sessions are independent: settings changed in one do not leak
    /// into another, while opened tables and object stores are shared.
    pub fn session(&self) -> Session {
        self.session_as(Principal::user("local"))
    }

    /// Opens a session that runs as `principal`: the identity every access
    /// decision and audit record of the session refers to.
    pub fn session_as(&self, principal: Principal) -> Session {
        self.session_with(principal, self.inner.policies.clone())
    }

    /// A session whose reads are not restricted by policies but are audited
    /// under `user`: the engine's own checks (quality rules), which return
    /// aggregates only.
    fn internal_session(&self, user: &str) -> Session {
        self.session_with(Principal::user(user), None)
    }

    /// The schema of one product, opening it if needed.
    pub async fn product_schema(&self, product: &ProductRef) -> Result<SchemaRef, EngineError> {
        let entry = self
            .inner
            .catalog
            .product(product)
            .ok_or_else(|| EngineError::NotFound(self.describe_missing(&product.domain, &product.product)))?;
        Ok(entry.table().await?.schema())
    }

    /// Opens every product (at most 16 at a time) and reports each one's schema or
    /// failure, in catalogue order.
    pub async fn check(&self) -> Vec<ProductCheck> {
        let products: Vec<_> = self.inner.catalog.products().cloned().collect();
        futures::stream::iter(products)
            .map(|p| async move {
                let result = p.table().await.map(|t| t.schema());
                ProductCheck { product: p.reference.clone(), result }
            })
            .buffered(OPEN_CONCURRENCY)
            .collect()
            .await
    }
}
