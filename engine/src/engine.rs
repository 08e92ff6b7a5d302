//! The embeddable engine: a loaded mesh and the sessions that query it.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::catalog::CatalogProvider;
use datafusion::common::TableReference;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::Analyzer;
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement as SQLStatement;
use futures::{StreamExt, TryStreamExt};

use agora_connectors::Source;

use crate::audit::stream::{AuditedStream, PendingAudit};
use crate::audit::{AuditLog, AuditRecord, RequestEvent};
use crate::catalog::MeshCatalog;
use crate::config::{ConfigError, ConfigProblem, DomainConfig, MeshConfig, RESERVED_SCHEMAS};
use crate::contract::quality::{QualityResult, kind_name, measured, newest_time, rule_sql};
use crate::contract::{QualityRule, RuleKind};
use crate::freshness::FreshnessConfig;
use crate::governance::PolicySet;
use crate::governance::catalog::{SessionCatalog, Viewer};
use crate::governance::rewrite::{BarrierPlanner, BarrierPushdown, GovernanceRule, applied_policies};
use crate::history::{CancelQuery, HistoryEntry, QueryEntry, QueryInfo, QueryMemory, TrackedStream};
use crate::limits::{Admission, EffectiveLimits, LimitsConfig, QuerySlot};
use crate::lineage::{LineageEmitter, LineageRun, LineageStream};
use crate::query_context::Origin;
use crate::query_runtime::QueryRuntime;
use crate::system::{SearchFunction, SystemContext};
use crate::{EngineError, Principal, ProductRef};

mod default_schema;
mod keys;
pub use keys::ProductForeignKey;

/// The SQL catalog name under which every domain appears.
pub const CATALOG: &str = "mesh";

/// The default schema of sessions. Unqualified table names are refused before
/// planning (with a hint naming the domains that have such a product), so this
/// only has to be a name.
const DEFAULT_SCHEMA: &str = "public";

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
    /// Loads and validates a mesh file, then registers its products. Reads no data.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, EngineError> {
        Self::new(MeshConfig::from_file(path)?)
    }

    /// Registers the products of an already validated configuration. Reads no
    /// data; lists the tables of attached PostgreSQL schemas (a domain whose
    /// schema cannot be listed starts with its explicit products only, and the
    /// failure is reported by [`Engine::attach_failures`]).
    pub fn new(mut config: MeshConfig) -> Result<Self, EngineError> {
        crate::span_propagation::install();
        let attach_failures = attach_schemas(&mut config);
        let runtime = runtime_env(&config.limits, &config.freshness)?;
        let queries =
            QueryRuntime::new(config.limits.query_threads, "agora-query", crate::query_runtime::QUERY_NICENESS)?;
        let constants = QueryRuntime::new(1, "agora-constant", 0)?;
        let admission = Admission::new(
            config.limits.max_concurrent_queries,
            config.limits.max_queued_queries,
            config.limits.queue_timeout,
        );
        let mut session_config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            // The session's catalog serves `information_schema` itself, with
            // descriptions (see `governance::information_schema`).
            .with_information_schema(false);
        // A sort reserves this much before it starts, to be able to merge its
        // spill files later; with a small pool the default (10 MiB) would make
        // sorts fail instead of spill.
        let execution = &mut session_config.options_mut().execution;
        execution.sort_spill_reservation_bytes =
            execution.sort_spill_reservation_bytes.min(config.limits.memory_limit_bytes / 16);
        let federated =
            config.domains.iter().flat_map(|d| &d.products).any(|p| matches!(p.source, Source::Postgres(_)));
        let opener = SessionStateBuilder::new()
            .with_config(session_config.clone())
            .with_runtime_env(Arc::clone(&runtime))
            .with_default_features()
            .build();
        let (policies, audit) = match &config.governance {
            Some(g) => {
                let policies = PolicySet::load(&config, &g.policies)?;
                let audit = AuditLog::open(&g.audit).map_err(|e| {
                    let file = config.file.clone().unwrap_or_else(|| "mesh.yaml".into());
                    ConfigError::single(
                        &file,
                        "governance.audit.path",
                        format!("cannot open the audit log {}: {e}", g.audit.path.display()),
                    )
                })?;
                (Some(Arc::new(policies)), Some(Arc::new(audit)))
            }
            None => (None, None),
        };
        let lineage = config.lineage.clone().map(LineageEmitter::new);
        let catalog = Arc::new(MeshCatalog::new(config, Arc::new(opener)));
        Ok(Engine {
            inner: Arc::new(Inner {
                catalog,
                runtime,
                session_config,
                federated,
                policies,
                audit,
                lineage,
                attach_failures,
                queries,
                constants,
                admission,
            }),
        })
    }

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
                        problems.push(ConfigProblem { path: check.product.to_string(), message });
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

    fn session_with(&self, principal: Principal, policies: Option<Arc<PolicySet>>) -> Session {
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
        let viewer = Viewer { principal: Arc::new(principal), policies, audit: self.inner.audit.clone() };
        let catalog = SessionCatalog { mesh: Arc::clone(&self.inner.catalog), viewer: viewer.clone() };
        ctx.register_catalog(CATALOG, Arc::new(catalog));
        let context = SystemContext { mesh: Arc::clone(&self.inner.catalog), viewer: viewer.clone() };
        ctx.register_udtf("search_products", Arc::new(SearchFunction { context }));
        Session { ctx, engine: self.clone(), viewer, origin: Origin::default(), default_schema: None }
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

    /// Runs every contract's quality rules at the sources and appends the results
    /// to the quality history (`system.quality_results`). Rules run with
    /// unrestricted reads, audited as the user `agora-quality`, and return one
    /// number each. A rule that cannot run is reported as an error and does not
    /// stop the others.
    pub async fn check_quality(&self) -> Result<Vec<QualityResult>, EngineError> {
        let session = self.internal_session("agora-quality");
        let mut id = [0u8; 8];
        let _ = getrandom::fill(&mut id);
        let run_id = hex::encode(id);
        let mut results = Vec::new();
        for product in self.inner.catalog.products() {
            let Some(contract) = &product.config.contract else { continue };
            for rule in &contract.rules {
                results.push(self.check_rule(&session, product, rule, &run_id).await);
            }
        }
        let log = Arc::clone(self.inner.catalog.quality());
        let written = results.clone();
        tokio::task::spawn_blocking(move || log.append(&written))
            .await
            .map_err(|e| EngineError::Execution(format!("the quality results were not written: {e}")))?
            .map_err(|e| {
                EngineError::Execution(format!(
                    "cannot write the quality results to {}: {e}",
                    self.inner.catalog.quality().path().display()
                ))
            })?;
        Ok(results)
    }

    async fn check_rule(
        &self,
        session: &Session,
        product: &crate::catalog::Product,
        rule: &QualityRule,
        run_id: &str,
    ) -> QualityResult {
        let started = std::time::Instant::now();
        let sql = rule_sql(&product.reference, rule);
        let mut result = QualityResult {
            run_id: run_id.to_string(),
            checked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            product: product.reference.to_string(),
            rule: rule.name.clone(),
            kind: kind_name(&rule.kind).to_string(),
            column: rule.column.clone(),
            dimension: rule.dimension.clone(),
            severity: rule.severity.clone(),
            expected: rule.threshold.to_string(),
            observed: None,
            outcome: "error".into(),
            message: None,
            sql: sql.clone(),
            duration_ms: 0,
        };
        let measured: Result<Option<f64>, String> = match (&rule.kind, &sql) {
            (RuleKind::NotExecutable(why), _) => {
                result.outcome = "skipped".into();
                result.message = Some(format!("not run: {why}"));
                return result;
            }
            (RuleKind::Freshness { .. }, Some(sql)) => match session.collect(sql).await {
                Ok(batches) => newest_time(&batches).map(|t| t.map(|t| (chrono::Utc::now().timestamp() - t) as f64)),
                Err(e) => Err(e.to_string()),
            },
            (RuleKind::Freshness { .. }, None) => {
                match product
                    .config
                    .source
                    .modified(self.inner.catalog.opener() as &dyn datafusion::catalog::Session)
                    .await
                {
                    Ok(Some(t)) => Ok(Some((chrono::Utc::now() - t).num_seconds() as f64)),
                    Ok(None) => Err(format!(
                        "a {} source has no modification time; name the column holding the data's time in the SLA's element",
                        product.config.source.kind()
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
            (RuleKind::Sql(_), Some(sql)) => match session.own_domain_only(sql, &product.reference) {
                Err(e) => Err(e),
                Ok(()) => match session.collect(sql).await {
                    Ok(batches) => measured(&batches),
                    Err(e) => Err(e.to_string()),
                },
            },
            (_, Some(sql)) => match session.collect(sql).await {
                Ok(batches) => measured(&batches),
                Err(e) => Err(e.to_string()),
            },
            (_, None) => Err("the rule needs a column".to_string()),
        };
        result.duration_ms = started.elapsed().as_millis() as u64;
        match measured {
            Ok(Some(value)) => {
                result.observed = Some(value);
                let pass = rule.threshold.holds(value);
                result.outcome = if pass { "pass" } else { "fail" }.into();
                if !pass {
                    result.message = Some(format!("measured {value}, expected {}", rule.threshold));
                }
            }
            Ok(None) => {
                result.outcome = if matches!(rule.kind, RuleKind::Freshness { .. }) { "fail" } else { "error" }.into();
                result.message = Some("the measure is NULL (no rows?)".into());
            }
            Err(e) => result.message = Some(e),
        }
        result
    }

    /// A message for a name that does not resolve, listing what does exist.
    fn describe_missing(&self, domain: &str, product: &str) -> String {
        let domains = &self.config().domains;
        match self.config().domain(domain) {
            Some(d) => {
                let names: Vec<&str> = d.products.iter().map(|p| p.name.as_str()).collect();
                let mut message =
                    format!("no product '{product}' in domain '{domain}'; its products are: {}", names.join(", "));
                if let Some((_, why)) = self.inner.attach_failures.iter().find(|(name, _)| name == domain) {
                    message.push_str(&format!(" (its PostgreSQL schema could not be listed at start: {why})"));
                }
                message
            }
            None => {
                let names: Vec<&str> = domains.iter().map(|d| d.name.as_str()).collect();
                format!("no domain '{domain}' (looking up '{domain}.{product}'); domains are: {}", names.join(", "))
            }
        }
    }
}

/// Adds the tables and views of each attached PostgreSQL schema as products
/// (explicit products of the same name win; excluded names and names that are
/// not plain SQL identifiers are left out). Returns the domains whose schema
/// could not be listed.
fn attach_schemas(config: &mut MeshConfig) -> Vec<(String, String)> {
    let mut failures = Vec::new();
    for domain in &mut config.domains {
        let (Some(attach), Some(connection)) = (domain.attach.clone(), domain.postgres.clone()) else { continue };
        // On a runtime of its own, so that this works inside or outside one.
        let listed = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                    match runtime {
                        Ok(rt) => rt.block_on(connection.list_tables(&attach.schema)).map_err(|e| e.to_string()),
                        Err(e) => Err(format!("cannot start a runtime: {e}")),
                    }
                })
                .join()
                .unwrap_or_else(|_| Err("the listing thread panicked".to_string()))
        });
        match listed {
            Ok(tables) => {
                for (table, comment) in tables {
                    if attach.exclude.contains(&table) || domain.product(&table).is_some() {
                        continue;
                    }
                    if !crate::config::is_sql_identifier(&table) {
                        tracing::warn!(domain = %domain.name, table = %table, "attached table skipped: not a lowercase SQL identifier; register it as a product with another name");
                        continue;
                    }
                    let source = agora_connectors::PostgresSource::new(
                        Arc::clone(&connection),
                        attach.schema.clone(),
                        table.clone(),
                    );
                    domain.products.push(crate::config::ProductConfig {
                        name: table.clone(),
                        description: comment.unwrap_or_else(|| format!("PostgreSQL table {}.{table}", attach.schema)),
                        owner: domain.owner.clone(),
                        tags: Vec::new(),
                        source: Source::Postgres(source),
                        contract: None,
                    });
                }
            }
            Err(e) => {
                tracing::warn!(domain = %domain.name, schema = %attach.schema, error = %e, "cannot list the attached PostgreSQL schema");
                failures.push((domain.name.clone(), e));
            }
        }
    }
    failures
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

/// One client's connection to the engine: runs SQL against the mesh.
#[derive(Clone)]
pub struct Session {
    ctx: SessionContext,
    engine: Engine,
    viewer: Viewer,
    /// Where the session's queries come from, for their contexts.
    origin: Origin,
    /// The schema unqualified product names resolve in, when one was chosen
    /// (see [`Session::with_default_schema`]).
    default_schema: Option<Arc<str>>,
}

/// A planned query: its result schema is known before it runs.
pub struct Query {
    /// Its entry in the query history, which holds its identity (see
    /// [`Query::id`]).
    history: HistoryEntry,
    frame: DataFrame,
    audit: Option<PendingAudit>,
    lineage: Option<PendingLineage>,
    run: Run,
}

/// What a planned query carries to its execution: its slot, its deadline and
/// its result limits.
struct Run {
    engine: Engine,
    /// The query's history entry, whose cancel stops it.
    entry: Arc<QueryEntry>,
    /// The query's span: the parent of its planning and execution spans.
    span: tracing::Span,
    slot: QuerySlot,
    deadline: Instant,
    limits: EffectiveLimits,
}

/// What a query's lineage events need once it starts.
struct PendingLineage {
    /// The run's id: the query's.
    run_id: String,
    emitter: Arc<LineageEmitter>,
    sql: Option<String>,
    engine: Engine,
}

impl Session {
    /// Plans a single read-only SQL statement. Names are checked against the mesh
    /// first, so a typo gets a message listing the products that exist.
    ///
    /// Parameters may be written `$1`, `$2`… or, as JDBC does, `?` (numbered in
    /// order of appearance); bind them with [`Query::bind`].
    pub async fn query(&self, sql: &str) -> Result<Query, EngineError> {
        let history = self.begin_history(Some(sql));
        let id = history.entry().context.id.clone();
        let audit = match self.begin_audit(&id, Some(sql)).await {
            Ok(audit) => audit,
            Err(e) => return Err(fail(None, history, e).await),
        };
        if let Err(e) = crate::limits::check_text(sql, &self.engine.config().limits) {
            return Err(fail(audit, history, e).await);
        }
        let session = self.clone();
        let text = sql.to_string();
        self.admitted(history, audit, Some(sql), async move { session.plan_sql(&text).await }).await
    }

    /// Registers a query that just arrived in the history, with its context.
    fn begin_history(&self, sql: Option<&str>) -> HistoryEntry {
        let context = self.origin.context(&self.viewer.principal.user);
        self.engine.inner.catalog.history().begin(context, sql)
    }

    /// Takes a query slot for the session's principal, starts its clock and
    /// plans on the query runtime: the one way every [`Query`] is made.
    async fn admitted(
        &self,
        history: HistoryEntry,
        audit: Option<PendingAudit>,
        sql: Option<&str>,
        planning: impl std::future::Future<Output = Result<DataFrame, EngineError>> + Send + 'static,
    ) -> Result<Query, EngineError> {
        let limits = self.engine.config().limits.for_principal(&self.viewer.principal);
        let admission = &self.engine.inner.admission;
        let entry = Arc::clone(history.entry());
        let admit = async {
            if sql.is_some_and(|s| crate::limits::reads_nothing(s) || crate::history::is_call(s)) {
                admission.admit_constant().await
            } else {
                admission.admit(&self.viewer.principal.user, limits.max_queries_per_principal).await
            }
        };
        // A queued query can be cancelled too.
        let admitted = tokio::select! {
            admitted = admit => admitted,
            _ = entry.cancel.cancelled() => Err(entry.cancelled_error()),
        };
        let slot = match admitted {
            Ok(slot) => slot,
            Err(e) => return Err(fail(audit, history, e).await),
        };
        history.planning(slot.queued);
        let deadline = Instant::now() + limits.statement_timeout;
        let text: Option<String> = sql.map(|s| s.chars().take(4096).collect());
        let span = tracing::info_span!(
            "agora.query",
            otel.name = "agora.query",
            agora.query_id = %entry.context.id,
            db.system.name = "agora",
            db.query.text = text.as_deref(),
            enduser.id = %entry.context.user,
        );
        let run = Run { engine: self.engine.clone(), entry, span, slot, deadline, limits };
        match run.within("planning", planning).await {
            Ok(frame) => {
                history.planned();
                let lineage = self.pending_lineage(&history.entry().context.id, sql);
                Ok(Query { history, frame, audit, lineage, run })
            }
            Err(e) => Err(fail(audit, history, e).await),
        }
    }

    async fn plan_sql(&self, sql: &str) -> Result<DataFrame, EngineError> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let sql = number_question_marks(sql);
        let mut statement = state.sql_to_statement(&sql, &dialect).map_err(|e| with_end_position(e, &sql))?;
        if let DFStatement::Statement(call) = &statement
            && let Some(cancel) = CancelQuery::plan(call, self.engine.inner.catalog.history(), &self.viewer)
        {
            let cancel: Arc<dyn datafusion::physical_plan::streaming::PartitionStream> = Arc::new(cancel?);
            let table =
                datafusion::catalog::streaming::StreamingTable::try_new(Arc::clone(cancel.schema()), vec![cancel])?;
            return Ok(self.ctx.read_table(Arc::new(table))?);
        }
        ensure_read_only(&statement)?;
        crate::limits::check_statement(&statement, &self.engine.config().limits)?;
        let is_function = |table: &str| state.table_functions().contains_key(table);
        let mut references = state.resolve_table_references(&statement)?;
        if let Some(schema) = &self.default_schema {
            let bare: HashSet<String> = references
                .iter()
                .filter_map(|r| match r {
                    TableReference::Bare { table } if !is_function(table) => Some(table.to_string()),
                    _ => None,
                })
                .collect();
            default_schema::qualify(&mut statement, schema, &bare)?;
            // The statement now names them as `schema.table`.
            for reference in &mut references {
                if let TableReference::Bare { table } = reference
                    && bare.contains(table.as_ref())
                {
                    *reference = TableReference::partial(schema.as_ref(), table.as_ref());
                }
            }
        }
        for reference in &references {
            if !matches!(reference, TableReference::Bare { table } if is_function(table)) {
                self.check_reference(reference)?;
            }
        }
        // A column the principal may not read is simply not in its schema:
        // naming it gets the same error as naming a column that does not
        // exist (listing the readable ones), which confirms nothing.
        let plan = state.statement_to_plan(statement).await?;
        self.check_plan(&plan)?;
        Ok(self.ctx.execute_logical_plan(plan).await?)
    }

    /// Agora serves reads only, and shows a non-admin no plan form that
    /// prints statistics or metrics (see `governance::plan_view`).
    fn check_plan(&self, plan: &LogicalPlan) -> Result<(), EngineError> {
        read_only()
            .verify_plan(plan)
            .map_err(|e| EngineError::ReadOnly(format!("Agora is read-only: {}", e.strip_backtrace())))?;
        let statistics = self.ctx.state_ref().read().config_options().explain.show_statistics;
        crate::governance::plan_view::check_plan_view(&self.viewer, plan, statistics)
    }

    /// Runs an already built logical plan (for embedders that build plans with
    /// DataFusion's plan builders). It passes the same gates as SQL (read-only,
    /// plan views, limits), is governed and audited; for a non-admin it may
    /// read only the session's own tables (a plan over a provider built by
    /// hand would carry no policies).
    pub async fn plan(&self, plan: LogicalPlan) -> Result<Query, EngineError> {
        let history = self.begin_history(None);
        let id = history.entry().context.id.clone();
        let audit = match self.begin_audit(&id, None).await {
            Ok(audit) => audit,
            Err(e) => return Err(fail(None, history, e).await),
        };
        if let Err(e) = self.check_plan(&plan) {
            return Err(fail(audit, history, e).await);
        }
        if let Err(e) = crate::governance::plan_view::check_plan_sources(&self.viewer, &self.ctx, &plan).await {
            return Err(fail(audit, history, e).await);
        }
        let ctx = self.ctx.clone();
        self.admitted(history, audit, None, async move { Ok(ctx.execute_logical_plan(plan).await?) }).await
    }

    /// A scan of `product` as the principal may read it, to build plans on
    /// (`LogicalPlanBuilder::from(scan)…`) and run with [`Session::plan`].
    pub async fn scan(&self, product: &ProductRef) -> Result<LogicalPlan, EngineError> {
        let reference = TableReference::full(CATALOG, product.domain.as_str(), product.product.as_str());
        self.check_reference(&reference)?;
        Ok(self.ctx.table(reference).await?.into_unoptimized_plan())
    }

    /// Records the address of the client the session serves, for the audit
    /// log and the query history.
    pub fn with_client(mut self, address: impl Into<String>) -> Self {
        self.origin.client = Some(address.into());
        self
    }

    /// Records the protocol the session's queries arrive by (`flight-sql`;
    /// `embedded` when not set), for the query history.
    pub fn with_protocol(mut self, protocol: &'static str) -> Self {
        self.origin.protocol = Some(protocol);
        self
    }

    /// Records what the client says its queries are for (trimmed, capped
    /// at [`crate::query_context::MAX_PURPOSE_CHARS`]).
    pub fn with_purpose(mut self, purpose: &str) -> Self {
        self.origin.purpose = crate::query_context::purpose(purpose);
        self
    }

    /// Records the W3C trace the session's queries belong to, from a
    /// `traceparent` header (ignored when malformed).
    pub fn with_traceparent(mut self, traceparent: &str) -> Self {
        self.origin.trace_id = crate::query_context::trace_id_of(traceparent);
        self
    }

    /// Records the trace the session's queries belong to (32 lower-case hex
    /// digits, as OpenTelemetry writes a trace id; anything else is ignored).
    pub fn with_trace_id(mut self, trace_id: &str) -> Self {
        let valid = trace_id.len() == 32 && trace_id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        self.origin.trace_id = valid.then(|| trace_id.to_string());
        self
    }

    /// Makes `schema` the one unqualified product names resolve in, as a
    /// Flight SQL session's `schema` option or JDBC's `schema` property ask:
    /// `SELECT * FROM nation` then reads `customers.nation`. Without it a
    /// bare name is refused with a hint, so that a query never silently
    /// reads another domain's product of the same name. Only a schema the
    /// principal may see can be chosen (see [`Session::schemas`]); the
    /// error for any other is the same whether or not it exists.
    pub fn with_default_schema(mut self, schema: &str) -> Result<Self, EngineError> {
        let schemas = self.schemas();
        if !schemas.iter().any(|s| s == schema) {
            return Err(EngineError::NotFound(format!(
                "no schema '{schema}' to resolve unqualified names in; the schemas are: {}",
                schemas.join(", ")
            )));
        }
        self.default_schema = Some(Arc::from(schema));
        Ok(self)
    }

    /// The schema unqualified names resolve in, if one was chosen.
    pub fn default_schema(&self) -> Option<&str> {
        self.default_schema.as_deref()
    }

    /// The schemas (domains, and `system` on a governed mesh) the principal may see.
    pub fn schemas(&self) -> Vec<String> {
        self.catalog().schema_names()
    }

    /// The products of `domain` the principal may see.
    pub fn products(&self, domain: &str) -> Vec<String> {
        self.catalog().schema(domain).map(|s| s.table_names()).unwrap_or_default()
    }

    /// A product's schema as the principal sees it: readable columns only
    /// (also of the engine's `system` tables).
    pub async fn product_schema(&self, product: &ProductRef) -> Result<SchemaRef, EngineError> {
        if product.domain == "system" {
            use datafusion::catalog::CatalogProvider;
            let missing = || EngineError::NotFound(format!("system.{} does not exist", product.product));
            let schema = self.catalog().schema("system").ok_or_else(missing)?;
            let table = schema.table(&product.product).await?.ok_or_else(missing)?;
            return Ok(table.schema());
        }
        Ok(self.catalog().table(product).await?.schema())
    }

    /// What a product says about itself, for catalog browsers (Flight SQL
    /// and JDBC `REMARKS`): its description and its columns' descriptions
    /// from its contract. `None` for a product the principal may not see (or
    /// that does not exist): the same answer, so it confirms nothing.
    pub fn product_remarks(&self, product: &ProductRef) -> Option<ProductRemarks> {
        if !self.viewer.may_see(product) {
            return None;
        }
        let entry = self.engine.inner.catalog.product(product)?;
        let columns = entry
            .config
            .contract
            .iter()
            .flat_map(|c| c.columns.iter())
            .filter_map(|c| Some((c.name.clone(), c.description.clone()?)))
            .collect();
        Some(ProductRemarks { description: entry.config.description.clone(), columns })
    }

    fn catalog(&self) -> SessionCatalog {
        SessionCatalog { mesh: Arc::clone(&self.engine.inner.catalog), viewer: self.viewer.clone() }
    }

    fn pending_lineage(&self, id: &str, sql: Option<&str>) -> Option<PendingLineage> {
        let emitter = self.engine.inner.lineage.as_ref()?;
        Some(PendingLineage {
            run_id: id.to_string(),
            emitter: Arc::clone(emitter),
            sql: sql.map(str::to_string),
            engine: self.engine.clone(),
        })
    }

    /// Writes the start record of a request (on a governed mesh): the
    /// request is refused when it cannot be recorded or when the principal
    /// is over its audit quota.
    /// The write happens off the async threads: it may have to rotate the log.
    async fn begin_audit(&self, id: &str, sql: Option<&str>) -> Result<Option<PendingAudit>, EngineError> {
        let Some(log) = self.viewer.audit.as_ref() else { return Ok(None) };
        let mut record = AuditRecord::start(&self.viewer.principal, self.origin.client.as_deref(), sql);
        record.query_id = id.to_string();
        record.policy_version = self.viewer.policies.as_ref().map(|p| p.version().to_string());
        let log = Arc::clone(log);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn_blocking(move || PendingAudit::begin(&log, record))
                .await
                .map_err(|e| EngineError::Internal(format!("the audit write stopped: {e}")))?
                .map(Some),
            Err(_) => PendingAudit::begin(&log, record).map(Some),
        }
    }

    /// Records a request that is not a query, served from the session's
    /// view (a catalogue listing: `action` names it, e.g. `GetTables`), so
    /// that every request is in the audit log. An error means the request
    /// must be refused: the log cannot be written, or the principal is over
    /// its audit quota.
    pub async fn record_request(&self, action: &str) -> Result<(), EngineError> {
        let Some(log) = self.viewer.audit.as_ref() else { return Ok(()) };
        let event = RequestEvent {
            kind: crate::audit::RequestKind::Metadata,
            action: action.to_string(),
            user: self.viewer.principal.user.clone(),
            groups: self.viewer.principal.groups.clone(),
            client: self.origin.client.clone(),
            outcome: crate::audit::Outcome::Ok,
        };
        crate::audit::event::record_event(log, event).await
    }

    /// Plans and starts a query, returning its stream of record batches.
    pub async fn sql(&self, sql: &str) -> Result<SendableRecordBatchStream, EngineError> {
        self.query(sql).await?.stream().await
    }

    /// Runs a query to completion and returns every batch. For small results only.
    pub async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>, EngineError> {
        let stream = self.sql(sql).await?;
        stream.map_err(EngineError::from).try_collect().await
    }

    /// Who the session runs as.
    pub fn principal(&self) -> &Principal {
        &self.viewer.principal
    }

    /// Refuses a contract's SQL rule that reads outside its product's domain:
    /// rules run with unrestricted reads, so a domain's rules may check its own
    /// products (referential integrity within the domain) but must not reach
    /// other domains' data or the `system` tables.
    fn own_domain_only(&self, sql: &str, product: &ProductRef) -> Result<(), String> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect).map_err(|e| e.to_string())?;
        for reference in state.resolve_table_references(&statement).map_err(|e| e.to_string())? {
            let catalog_ok = reference.catalog().is_none_or(|c| c == CATALOG);
            if !(catalog_ok && reference.schema() == Some(&product.domain)) {
                return Err(format!(
                    "a sql rule of {product} may read only products of domain {} (the product itself is {{object}}), \
                     but it reads {reference}",
                    product.domain
                ));
            }
        }
        Ok(())
    }

    /// The refusal of a bare product name in a session without a default
    /// schema, naming the products of that name the principal may read.
    fn unqualified(&self, table: &str) -> EngineError {
        let owners: Vec<String> = self
            .engine
            .domains()
            .iter()
            .filter(|d| d.product(table).is_some())
            .filter(|d| self.viewer.may_see(&ProductRef::new(&d.name, table)))
            .map(|d| format!("{}.{table}", d.name))
            .collect();
        let hint = if owners.is_empty() { String::new() } else { format!("; did you mean {}?", owners.join(" or ")) };
        EngineError::NotFound(format!("table '{table}' must be qualified by its domain, as domain.product{hint}"))
    }

    fn check_reference(&self, reference: &TableReference) -> Result<(), EngineError> {
        let (catalog, schema, table) = match reference {
            // Bare names were qualified with the session's default schema, if
            // it has one (see `default_schema`).
            TableReference::Bare { table } => return Err(self.unqualified(table)),
            TableReference::Partial { schema, table } => (CATALOG, schema.as_ref(), table.as_ref()),
            TableReference::Full { catalog, schema, table } => (catalog.as_ref(), schema.as_ref(), table.as_ref()),
        };
        if catalog != CATALOG {
            return Err(EngineError::NotFound(format!(
                "no catalog '{catalog}' (looking up '{reference}'); the only catalog is '{CATALOG}'"
            )));
        }
        if RESERVED_SCHEMAS.contains(&schema) {
            return Ok(());
        }
        let product = ProductRef::new(schema, table);
        let found = self.engine.config().domain(schema).and_then(|d| d.product(table)).is_some();
        // On a governed mesh a principal learns nothing of products it may
        // not read: a missing product and an ungranted one get the same
        // denial, and only admins get the list of what exists.
        let readable = found && self.viewer.may_see(&product);
        if !(readable || self.viewer.is_admin()) {
            return Err(crate::governance::catalog::denied(&self.viewer, &product));
        }
        if !found {
            return Err(EngineError::NotFound(self.engine.describe_missing(schema, table)));
        }
        Ok(())
    }
}

impl Query {
    /// The schema of the rows the query returns, as planned (logical).
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(self.frame.schema().inner())
    }

    /// The exact schema of the batches [`Query::stream`] will produce, nullability
    /// included: it comes from the physical plan, which may know more than the
    /// logical one. Plans the query without running it.
    pub async fn output_schema(&self) -> Result<SchemaRef, EngineError> {
        let frame = self.frame.clone();
        self.run.within("planning", async move { Ok(frame.create_physical_plan().await?.schema()) }).await
    }

    /// The query's parameters (`$1`, `$2`…) in numeric order, with the type
    /// inferred from their use where DataFusion can tell.
    pub fn parameters(&self) -> Result<Vec<(String, Option<DataType>)>, EngineError> {
        let mut params: Vec<_> = self.frame.logical_plan().get_parameter_types()?.into_iter().collect();
        params.sort_by_key(|(name, _)| {
            (name.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX), name.clone())
        });
        Ok(params)
    }

    /// Binds positional parameter values (`$1` is `values[0]`).
    pub fn bind(self, values: Vec<ScalarValue>) -> Result<Query, EngineError> {
        match self.frame.with_param_values(ParamValues::from(values)) {
            Ok(frame) => Ok(Query { frame, ..self }),
            Err(e) => Err(fail_blocking(self.audit, self.history, e.into())),
        }
    }

    /// Ends a query that was planned but is not run here (a Flight SQL
    /// `GetFlightInfo`, whose client runs it with a `DoGet` of its own):
    /// recorded as `planned`.
    pub async fn close(self) {
        if let Some(a) = self.audit {
            let _ = a.finish_async("planned", None).await;
        }
    }

    /// Gives the query up before it runs (its parameters could not be
    /// converted, say), recording `error` as its outcome; returns `error`.
    pub async fn reject(self, error: EngineError) -> EngineError {
        fail(self.audit, self.history, error).await
    }

    /// The query's id (a UUIDv7): the `query_id` of its audit records, the
    /// `runId` of its OpenLineage events, its `system.queries` row and its
    /// log line, for joining them.
    pub fn id(&self) -> &str {
        &self.history.entry().context.id
    }

    /// How long the query waited for a slot (see `limits.max_concurrent_queries`).
    pub fn queued(&self) -> std::time::Duration {
        self.run.slot.queued
    }

    /// The logical plan, after name resolution and before optimisation.
    pub fn logical_plan(&self) -> &LogicalPlan {
        self.frame.logical_plan()
    }

    /// Starts the query. Batches are produced as the stream is polled; dropping the
    /// stream cancels the query. On a governed mesh the audit record is on disk
    /// before the last batch is returned.
    pub async fn stream(self) -> Result<SendableRecordBatchStream, EngineError> {
        let (state, plan) = self.frame.into_parts();
        let mut audit = self.audit;
        let history = self.history;
        let run = self.run;
        history.planning_again();
        // The query's operators reserve through a view of the shared pool
        // that counts its own peak (see `QueryMemory`).
        let shared = &run.engine.inner.runtime;
        let memory = QueryMemory::new(Arc::clone(&shared.memory_pool), Arc::clone(history.entry()));
        let runtime = RuntimeEnvBuilder::from_runtime_env(shared).with_memory_pool(Arc::new(memory)).build_arc();
        let started = async move {
            let optimized = state.optimize(&plan)?;
            let reads = Reads::of(&optimized);
            let physical = state.query_planner().create_physical_plan(&optimized, &state).await?;
            let task = Arc::new(datafusion::execution::TaskContext::from(&state).with_runtime(runtime?));
            Ok::<_, EngineError>((execute_stream(Arc::clone(&physical), task)?, physical, reads, optimized))
        };
        let lineage = self.lineage;
        let started = run.within("planning", started).await.and_then(move |(stream, physical, reads, optimized)| {
            let stream = run.drive(stream)?;
            Ok((stream, physical, reads, optimized))
        });
        let started = started.map(|(stream, physical, reads, optimized)| {
            let shown: Vec<String> =
                reads.products.iter().filter(|p| !p.starts_with("information_schema.")).cloned().collect();
            // Errors carry the products' names before lineage records them.
            let stream = name_products_in_errors(stream, shown.clone());
            let stream = match lineage {
                Some(l) => {
                    let masked: Vec<(String, String)> = reads
                        .policies
                        .iter()
                        .flat_map(|p| p.masks.iter().map(move |(c, _, _)| (p.product.clone(), c.clone())))
                        .collect();
                    let run = LineageRun::start(
                        l.emitter,
                        l.run_id,
                        &optimized,
                        l.sql.as_deref(),
                        l.engine.config(),
                        &masked,
                    );
                    Box::pin(LineageStream::new(stream, run)) as SendableRecordBatchStream
                }
                None => stream,
            };
            if let Some(r) = audit.as_mut().and_then(PendingAudit::record_mut) {
                r.products = reads.products;
                r.columns = reads.columns;
                r.policies = reads.policies;
            }
            (stream, physical, shown)
        });
        match started {
            Ok((stream, physical, products)) => {
                let stream = match audit {
                    Some(a) => Box::pin(AuditedStream::new(stream, a)),
                    None => stream,
                };
                history.running(products);
                Ok(Box::pin(TrackedStream::new(stream, history, physical)))
            }
            Err(e) => Err(fail(audit, history, e).await),
        }
    }
}

impl Run {
    /// Runs `work` on the query runtime before the statement's deadline.
    async fn within<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
    ) -> Result<T, EngineError> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let runtime = self.engine.inner.lane(&self.slot);
        let span = tracing::info_span!(parent: &self.span, "agora.plan", otel.name = "agora.plan", agora.step = what);
        let work = tracing::Instrument::instrument(runtime.run(what, work), span);
        tokio::select! {
            result = tokio::time::timeout_at(deadline, work) => match result {
                Ok(result) => result,
                Err(_) => Err(EngineError::Timeout(self.timeout_message())),
            },
            _ = self.entry.cancel.cancelled() => Err(self.entry.cancelled_error()),
        }
    }

    fn timeout_message(&self) -> String {
        format!(
            "the query was stopped after {} s (limits.statement_timeout_seconds)",
            self.limits.statement_timeout.as_secs_f64()
        )
    }

    /// Drives the query's stream on the query runtime until its deadline,
    /// within its result limits; the slot is given back when the query ends.
    fn drive(self, stream: SendableRecordBatchStream) -> Result<SendableRecordBatchStream, EngineError> {
        let message = self.timeout_message();
        let limits = &self.engine.config().limits;
        let hint = format!(
            "(Agora's limits: memory_limit_bytes = {}, max_spill_bytes = {})",
            limits.memory_limit_bytes, limits.max_spill_bytes
        );
        let (max_rows, max_bytes) = (self.limits.max_result_rows, self.limits.max_result_bytes);
        let (mut rows, mut bytes) = (0u64, 0u64);
        let engine = self.engine.clone();
        let runtime = engine.inner.lane(&self.slot);
        let entry = Arc::clone(&self.entry);
        let cancelled = Box::pin(async move {
            entry.cancel.cancelled().await;
            entry.cancelled_error().to_string()
        });
        let slot = self.slot;
        let check = move |batch: &RecordBatch| {
            let _held = &slot;
            rows += batch.num_rows() as u64;
            bytes += batch.get_array_memory_size() as u64;
            if let Some(max) = max_rows.filter(|max| rows > *max) {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "the result has more than {max} rows (limits.max_result_rows); add a LIMIT or a filter"
                )));
            }
            if let Some(max) = max_bytes.filter(|max| bytes > *max) {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "the result is larger than {max} bytes (limits.max_result_bytes); select fewer columns or rows"
                )));
            }
            Ok(())
        };
        // The query's task runs in its execution span.
        let span = tracing::info_span!(parent: &self.span, "agora.execute", otel.name = "agora.execute");
        let _entered = span.enter();
        runtime.drive(stream, self.deadline, cancelled, message, hint, check)
    }
}

/// The DataFusion runtime of an engine: a memory pool bounded by
/// `limits.memory_limit_bytes`, shared fairly by the running queries (whose
/// sorts, aggregates and joins spill), and spill files under `limits.spill_dir`
/// up to `limits.max_spill_bytes`; listings cached only as `freshness` allows.
fn runtime_env(limits: &LimitsConfig, freshness: &FreshnessConfig) -> Result<Arc<RuntimeEnv>, EngineError> {
    let pool =
        TrackConsumersPool::new(FairSpillPool::new(limits.memory_limit_bytes), NonZeroUsize::MIN.saturating_add(4));
    let mut disk = DiskManagerBuilder::default().with_max_temp_directory_size(limits.max_spill_bytes);
    if let Some(dir) = &limits.spill_dir {
        disk = disk.with_mode(DiskManagerMode::Directories(vec![dir.clone()]));
    }
    Ok(RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .with_disk_manager_builder(disk)
        .with_cache_manager(freshness.cache_manager())
        .build_arc()?)
}

/// Errors raised while the query runs (a source failing, a table changed under
/// an opened product) name the products the query reads.
fn name_products_in_errors(stream: SendableRecordBatchStream, products: Vec<String>) -> SendableRecordBatchStream {
    if products.is_empty() {
        return stream;
    }
    let schema = stream.schema();
    let label = format!("while reading {}", products.join(", "));
    let mapped = stream.map_err(move |e| e.context(label.clone()));
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, mapped))
}

/// Records a failed or denied request, in the audit log and the history,
/// and passes its error on.
async fn fail(audit: Option<PendingAudit>, history: HistoryEntry, error: EngineError) -> EngineError {
    if let Some(a) = audit {
        let _ = a.finish_async(error.audit_status(), Some(error.to_string())).await;
    }
    history.fail(&error);
    error
}

/// [`fail`], for the few synchronous paths (binding parameters).
fn fail_blocking(audit: Option<PendingAudit>, history: HistoryEntry, error: EngineError) -> EngineError {
    if let Some(a) = audit {
        let _ = a.finish(error.audit_status(), Some(&error.to_string()));
    }
    history.fail(&error);
    error
}

/// What a plan reads: products, their columns, and the policies it enforces.
#[derive(Default)]
struct Reads {
    products: Vec<String>,
    columns: Vec<String>,
    policies: Vec<crate::governance::AppliedPolicy>,
}

impl Reads {
    fn of(plan: &LogicalPlan) -> Reads {
        let mut reads = Reads::default();
        reads.collect(plan);
        for p in applied_policies(plan) {
            if !reads.policies.contains(&p) {
                reads.policies.push((*p).clone());
            }
        }
        reads
    }

    fn collect(&mut self, plan: &LogicalPlan) {
        use datafusion::common::tree_node::TreeNodeRecursion;
        let _ = plan.apply_with_subqueries(|node| {
            match node {
                LogicalPlan::TableScan(scan) => {
                    if let (Some(schema), table) = (scan.table_name.schema(), scan.table_name.table()) {
                        let product = format!("{schema}.{table}");
                        for f in scan.projected_schema.fields() {
                            let column = format!("{product}.{}", f.name());
                            if !self.columns.contains(&column) {
                                self.columns.push(column);
                            }
                        }
                        if !self.products.contains(&product) {
                            self.products.push(product);
                        }
                    }
                }
                LogicalPlan::Extension(ext) => {
                    if let Some(inner) = agora_connectors::federated_plan(ext.node.as_ref()) {
                        self.collect(inner);
                    }
                }
                _ => {}
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }
}

/// A parse error at the end of the statement (`SELECT * FROM`), which the
/// parser reports without a position, gets the position of the end, so
/// that every syntax error says where it is.
fn with_end_position(err: DataFusionError, sql: &str) -> EngineError {
    let message = err.strip_backtrace();
    if !message.contains("found: EOF") || message.contains(" at Line: ") {
        return EngineError::from(err);
    }
    let line = sql.lines().count().max(1);
    let column = sql.lines().last().map(|l| l.chars().count() + 1).unwrap_or(1);
    EngineError::Sql(format!("{message} at Line: {line}, Column: {column} (the end of the statement)"))
}

/// Rewrites JDBC-style `?` placeholders as `$1`, `$2`… in order of appearance.
/// Works on tokens, so a `?` inside a string literal or comment is left alone.
fn number_question_marks(sql: &str) -> std::borrow::Cow<'_, str> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if !sql.contains('?') {
        return sql.into();
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return sql.into() };
    if !tokens.iter().any(|t| matches!(t, Token::Placeholder(p) if p == "?")) {
        return sql.into();
    }
    let mut n = 0;
    let mut out = String::with_capacity(sql.len() + 8);
    for token in tokens {
        match token {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                out.push_str(&format!("${n}"));
            }
            other => out.push_str(&other.to_string()),
        }
    }
    out.into()
}

/// Refuses statements other than queries before names are resolved, so that
/// `CREATE TABLE sales.new …` is reported as a write, not as a missing product.
fn ensure_read_only(statement: &DFStatement) -> Result<(), EngineError> {
    let allowed = match statement {
        DFStatement::Statement(inner) => matches!(
            inner.as_ref(),
            SQLStatement::Query(_)
                | SQLStatement::Explain { .. }
                | SQLStatement::ShowTables { .. }
                | SQLStatement::ShowColumns { .. }
        ),
        DFStatement::Explain(explain) => return ensure_read_only(&explain.statement),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        let text = statement.to_string();
        let verb: String = text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        Err(EngineError::ReadOnly(format!(
            "Agora is read-only: '{verb} …' is not accepted; send a query (SELECT, WITH, VALUES, EXPLAIN, SHOW TABLES)"
        )))
    }
}

/// Agora serves reads only: no DDL, no DML, no `SET`. Checked again on the plan,
/// which also covers statements nested in `EXPLAIN`.
fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

#[cfg(test)]
mod tests {
    use super::number_question_marks;

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(number_question_marks("SELECT ? + ?"), "SELECT $1 + $2");
        assert_eq!(number_question_marks("SELECT '?', ? -- ?"), "SELECT '?', $1 -- ?");
        assert_eq!(number_question_marks("SELECT $1"), "SELECT $1");
    }
}
