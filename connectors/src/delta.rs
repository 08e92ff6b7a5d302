//! Delta Lake tables through `deltalake`'s DataFusion provider.

use std::sync::{Arc, Once};

use chrono::{DateTime, Utc};
use datafusion::catalog::{Session, TableProvider};
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use deltalake::{DeltaResult, DeltaTableBuilder};
use serde::Deserialize;
use url::Url;

use crate::spec::SourceContext;
use crate::storage::object_store_for;
use crate::{ConnectorError, ObjectStoreSettings, Problem, Source};

/// `source: { kind: delta, location: … }` in mesh.yaml: what a Delta
/// product's section may say.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DeltaSpec {
    /// The table root: a path (relative to the mesh file), `file://` or
    /// `s3://` URL; required.
    #[serde(default, deserialize_with = "crate::spec::text")]
    pub location: Option<String>,
}

impl DeltaSpec {
    /// The keys of the section, `kind` included.
    pub const KEYS: &[&str] = &["kind", "location"];

    /// Checks the spec and builds the source (storage from the domain).
    pub fn into_source(self, ctx: &SourceContext<'_>) -> Result<Source, Vec<Problem>> {
        let location = crate::spec::location(self.location, ctx.base)?;
        Ok(Source::Delta(DeltaSource { location, store: ctx.storage.clone() }))
    }
}

/// A Delta Lake table at a location.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaSource {
    /// The table root (the directory that holds `_delta_log/`).
    pub location: Url,
    /// How to reach the object store.
    pub store: ObjectStoreSettings,
}

static REGISTER_S3: Once = Once::new();

/// Delta's log store for `s3://` tables, over the store Agora registered.
///
/// `deltalake`'s own S3 support (the `s3` feature) brings the AWS SDK
/// (credential chain, STS, DynamoDB commit locking) to build its own client;
/// Agora only reads Delta tables, through the same `object_store` client its
/// Parquet products use, so the default log store over that client is all it
/// needs (and the SDK's crates are not part of the build).
struct ReadLogStoreFactory;

impl LogStoreFactory for ReadLogStoreFactory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(prefixed_store, root_store, location, options))
    }
}

fn register_s3_log_store() {
    for scheme in ["s3://", "s3a://"] {
        if let Ok(url) = Url::parse(scheme) {
            logstore_factories().insert(url, Arc::new(ReadLogStoreFactory));
        }
    }
}

impl DeltaSource {
    pub(crate) async fn open(&self, session: &dyn Session) -> Result<Arc<dyn TableProvider>, ConnectorError> {
        let table = self.load(session).await?;
        table.table_provider().await.map_err(|e| ConnectorError::from_datafusion(&self.location, e))
    }

    /// The time of the table's newest commit.
    pub(crate) async fn modified(&self, session: &dyn Session) -> Result<DateTime<Utc>, ConnectorError> {
        let table = self.load(session).await?;
        let invalid = |cause: String| ConnectorError::InvalidData { location: self.location.to_string(), cause };
        let version = table.version().ok_or_else(|| invalid("the table has no commit".into()))?;
        let millis = table
            .snapshot()
            .map_err(|e| self.classify(e))?
            .version_timestamp(version)
            .ok_or_else(|| invalid(format!("no timestamp for commit {version}")))?;
        DateTime::from_timestamp_millis(millis).ok_or_else(|| invalid(format!("commit time {millis} out of range")))
    }

    async fn load(&self, session: &dyn Session) -> Result<deltalake::DeltaTable, ConnectorError> {
        REGISTER_S3.call_once(register_s3_log_store);
        let store = object_store_for(session.runtime_env(), &self.location, &self.store)?;

        let mut url = self.location.clone();
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let invalid = |cause: String| ConnectorError::InvalidSource { location: self.location.to_string(), cause };
        let table = DeltaTableBuilder::from_url(url)
            .map_err(|e| invalid(e.to_string()))?
            .with_storage_backend(store, self.location.clone())
            .load()
            .await
            .map_err(|e| self.classify(e))?;
        table.update_datafusion_session(session).map_err(|e| self.classify(e))?;
        Ok(table)
    }

    fn classify(&self, err: deltalake::DeltaTableError) -> ConnectorError {
        use deltalake::DeltaTableError as E;
        let location = self.location.to_string();
        match err {
            E::NotATable(cause) => {
                ConnectorError::NotFound { location, cause: format!("not a Delta table (no _delta_log): {cause}") }
            }
            E::InvalidTableLocation(cause) => ConnectorError::NotFound { location, cause },
            E::ObjectStore { source } => ConnectorError::from_object_store(&self.location, source),
            other => {
                let cause = other.to_string();
                if cause.to_ascii_lowercase().contains("not a delta table") {
                    ConnectorError::NotFound { location, cause }
                } else {
                    ConnectorError::InvalidData { location, cause }
                }
            }
        }
    }
}
