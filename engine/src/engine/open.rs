//! Building an [`Engine`] from a configuration: the runtime, the policies
//! and the audit log, and the tables of attached PostgreSQL schemas.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::SessionConfig;

use agora_connectors::Source;

use super::{CATALOG, Engine, Inner};
use crate::EngineError;
use crate::audit::AuditLog;
use crate::catalog::MeshCatalog;
use crate::config::{ConfigError, MeshConfig};
use crate::freshness::FreshnessConfig;
use crate::governance::PolicySet;
use crate::limits::{Admission, LimitsConfig};
use crate::lineage::LineageEmitter;
use crate::query_runtime::QueryRuntime;

/// The default schema of sessions. Unqualified table names are refused before
/// planning (with a hint naming the domains that have such a product), so this
/// only has to be a name.
const DEFAULT_SCHEMA: &str = "public";

impl Engine {
    /// Loads and validates a mesh file, then registers its products. Reads no data.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, EngineError> {
        Self::new(MeshConfig::from_file(path)?).await
    }

    /// Registers the products of an already validated configuration. Reads no
    /// data; lists the tables of attached PostgreSQL schemas (a domain whose
    /// schema cannot be listed starts with its explicit products only, and the
    /// failure is reported by [`Engine::attach_failures`]).
    pub async fn new(mut config: MeshConfig) -> Result<Self, EngineError> {
        crate::span_propagation::install();
        let attach_failures = attach_schemas(&mut config).await;
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
}

/// Adds the tables and views of each attached PostgreSQL schema as products
/// (explicit products of the same name win; excluded names and names that are
/// not plain SQL identifiers are left out). Returns the domains whose schema
/// could not be listed.
async fn attach_schemas(config: &mut MeshConfig) -> Vec<(String, String)> {
    let mut failures = Vec::new();
    for domain in &mut config.domains {
        let (Some(attach), Some(connection)) = (domain.attach.clone(), domain.postgres.clone()) else { continue };
        let listed = connection.list_tables(&attach.schema).await.map_err(|e| e.to_string());
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
                    // SQL sent to PostgreSQL is planned with the mesh's names.
                    let source = agora_connectors::PostgresSource::new(
                        Arc::clone(&connection),
                        attach.schema.clone(),
                        table.clone(),
                    )
                    .named(&domain.name, &table);
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
