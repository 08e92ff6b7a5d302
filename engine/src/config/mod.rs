//! The mesh configuration: which domains exist, who owns them, and where each
//! data product lives.
//!
//! A mesh is described in one YAML file (`mesh.yaml`, see
//! `docs/configuration.md`). [`MeshConfig::from_file`] reads and validates it in
//! one pass, reporting **every** problem it finds with the file and the key path
//! of each, so a user fixes a file in one round rather than one error at a time.

mod error;
mod parse;

use std::path::{Path, PathBuf};

use agora_connectors::{ObjectStoreSettings, Source};

use crate::identity::AuthConfig;

pub use self::error::{ConfigError, Problem};
pub(crate) use self::parse::is_sql_identifier;

/// Schema names that domains may not use: `system` holds the engine's own tables
/// and `information_schema` is SQL's catalogue.
pub const RESERVED_SCHEMAS: &[&str] = &["system", "information_schema"];

/// A validated mesh: domains with their data products.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// The file the configuration was read from, if any; relative locations were
    /// resolved against its directory.
    pub file: Option<PathBuf>,
    /// The domains, in file order.
    pub domains: Vec<DomainConfig>,
    /// Who may connect: users, service tokens, anonymous access.
    pub auth: AuthConfig,
    /// Where the mesh-wide policies and the audit log live. Without it the mesh is
    /// open: every authenticated principal may read every product (like Trino's
    /// default `allow-all`), and nothing is audited.
    pub governance: Option<GovernanceConfig>,
    /// Where OpenLineage events of every query go; none when absent.
    pub lineage: Option<LineageConfig>,
    /// The JSON Lines file `agora check --quality` appends its results to
    /// (`quality.results`, by default `quality/results.jsonl` beside the mesh file).
    pub quality: PathBuf,
    /// What one request may consume (`limits`); defaults when absent.
    pub limits: crate::limits::LimitsConfig,
    /// How much query history is kept (`history`; see `system.queries`).
    pub history: crate::history::HistoryConfig,
    /// How long listings and opened tables are reused (`freshness`).
    pub freshness: crate::freshness::FreshnessConfig,
}

/// The `lineage` section: where each query's OpenLineage run events are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageConfig {
    /// The destination.
    pub sink: LineageSink,
    /// The OpenLineage job namespace (`agora` by default).
    pub namespace: String,
}

/// Where lineage events are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineageSink {
    /// Appended as JSON Lines.
    File(PathBuf),
    /// POSTed one by one, e.g. to Marquez's `/api/v1/lineage`.
    Http(url::Url),
}

/// The `governance` section of a mesh file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovernanceConfig {
    /// The mesh-wide policy file: admins, tag rules, mesh-wide grants.
    pub policies: PathBuf,
    /// Where each request's audit record is appended.
    pub audit: AuditConfig,
}

/// The default of `governance.audit.quota_bytes_per_minute`: 16 MiB, some
/// 10,000 ordinary queries a minute, or 1,000 of the largest statements.
pub const DEFAULT_AUDIT_QUOTA_BYTES_PER_MINUTE: u64 = 16 * 1024 * 1024;

/// Where and how the audit log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// The JSON Lines file; rotated files get `.1`, `.2`… appended.
    pub path: PathBuf,
    /// Size at which the file is rotated.
    pub max_bytes: u64,
    /// How many rotated files are kept beside the current one.
    pub keep: u64,
    /// Where rotated files go when they leave the log (beyond `keep`, or
    /// older than `max_age_days`). Without it they are deleted, loudly: an
    /// error in the log, a `retention` record in the chain.
    pub archive_dir: Option<PathBuf>,
    /// Rotated files older than this leave the log at the next rotation.
    pub max_age_days: Option<u64>,
    /// Bytes of audit records one principal may cause per minute; over it,
    /// its requests are refused (`RESOURCE_EXHAUSTED`) until the minute ends.
    pub quota_bytes_per_minute: u64,
    /// A secret that keys the hash chain (HMAC-SHA-256 instead of SHA-256):
    /// without it, whoever can write the log can also recompute a consistent
    /// chain after an edit.
    pub chain_key: Option<ChainKey>,
}

/// The audit chain's key (`chain_key_env` / `chain_key_file`), never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ChainKey(pub std::sync::Arc<[u8]>);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(<set>)")
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: PathBuf::from("audit.jsonl"),
            max_bytes: 64 * 1024 * 1024,
            keep: 8,
            archive_dir: None,
            max_age_days: None,
            quota_bytes_per_minute: DEFAULT_AUDIT_QUOTA_BYTES_PER_MINUTE,
            chain_key: None,
        }
    }
}

/// A business domain: one SQL schema, owned by one team.
#[derive(Debug, Clone)]
pub struct DomainConfig {
    /// SQL schema name.
    pub name: String,
    /// What the domain covers.
    pub description: String,
    /// The team accountable for the domain's products.
    pub owner: Owner,
    /// Object-store settings used for the domain's `s3://` locations.
    pub storage: ObjectStoreSettings,
    /// The domain's own policy file (owners, column tags, grants), kept next to
    /// its products.
    pub policies: Option<PathBuf>,
    /// The domain's PostgreSQL connection, if it has one.
    pub postgres: Option<std::sync::Arc<agora_connectors::PostgresConnection>>,
    /// A PostgreSQL schema whose tables and views all become products; resolved
    /// when the engine starts ([`crate::Engine::new`]).
    pub attach: Option<SchemaAttachment>,
    /// The domain's data products, in file order.
    pub products: Vec<ProductConfig>,
}

/// A whole PostgreSQL schema registered at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaAttachment {
    /// The PostgreSQL schema.
    pub schema: String,
    /// Tables and views left out.
    pub exclude: Vec<String>,
}

/// Who answers for a domain or product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// A person or team name.
    pub name: String,
    /// How to reach them (an e-mail address, a chat channel).
    pub contact: String,
}

/// A data product: one SQL table.
#[derive(Debug, Clone)]
pub struct ProductConfig {
    /// SQL table name.
    pub name: String,
    /// What the product contains and how to use it.
    pub description: String,
    /// The product's owner; the domain's owner unless the file says otherwise.
    pub owner: Owner,
    /// Free-form labels (`pii`, `gold`, …).
    pub tags: Vec<String>,
    /// Where the rows live.
    pub source: Source,
    /// The product's data contract (ODCS), if it has one.
    pub contract: Option<std::sync::Arc<crate::contract::Contract>>,
}

impl MeshConfig {
    /// Reads, interpolates (`${VAR}` from the process environment) and validates a
    /// mesh file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::single(path, "", format!("cannot read the file: {e}")))?;
        Self::from_yaml(&text, path, &|name| std::env::var(name).ok())
    }

    /// Validates mesh YAML. `file` names the source in messages and anchors
    /// relative locations; `env` looks up variables for `${VAR}` interpolation and
    /// credentials.
    pub fn from_yaml(text: &str, file: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        parse::parse(text, file, env)
    }

    /// Finds a domain by SQL name.
    pub fn domain(&self, name: &str) -> Option<&DomainConfig> {
        self.domains.iter().find(|d| d.name == name)
    }
}

impl DomainConfig {
    /// Finds a product of this domain by SQL name.
    pub fn product(&self, name: &str) -> Option<&ProductConfig> {
        self.products.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests;
