//! Object-store access settings shared by the Parquet and Delta connectors.

use std::fmt;
use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use url::Url;

use crate::ConnectorError;
use crate::observed_store::ObservedStore;

/// How to reach an S3-compatible object store.
///
/// Secrets are held here already resolved (the engine reads them from environment
/// variables); `Debug` never prints them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ObjectStoreSettings {
    /// Endpoint of an S3-compatible server (MinIO, Ceph, moto…); `None` for AWS.
    pub endpoint: Option<String>,
    /// Region name; S3-compatible servers usually accept any value.
    pub region: Option<String>,
    /// Permit plain-HTTP endpoints (for servers on a private network or loopback).
    pub allow_http: bool,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for ObjectStoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreSettings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "<set>"))
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<set>"))
            .field("session_token", &self.session_token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Registers the object store that serves `location` in `runtime`, so that
/// DataFusion scans of that location find it.
///
/// Local paths are served by the local file system, S3 stores per bucket: all
/// products in one bucket share one client. Either is wrapped in an
/// [`ObservedStore`], so that its requests show in metrics and traces.
pub fn register_object_store(
    runtime: &RuntimeEnv,
    location: &Url,
    settings: &ObjectStoreSettings,
) -> Result<(), ConnectorError> {
    object_store_for(runtime, location, settings).map(|_| ())
}

/// The store that serves `location`, registered in `runtime` first (see
/// [`register_object_store`]).
pub(crate) fn object_store_for(
    runtime: &RuntimeEnv,
    location: &Url,
    settings: &ObjectStoreSettings,
) -> Result<Arc<dyn ObjectStore>, ConnectorError> {
    match location.scheme() {
        "file" => {
            let root = Url::parse("file://")
                .map_err(|e| ConnectorError::InvalidSource { location: location.to_string(), cause: e.to_string() })?;
            let store: Arc<dyn ObjectStore> = Arc::new(ObservedStore::new(Arc::new(LocalFileSystem::new()), "file"));
            runtime.register_object_store(&root, Arc::clone(&store));
            Ok(store)
        }
        "s3" | "s3a" => {
            let bucket = location.host_str().unwrap_or_default();
            if bucket.is_empty() {
                return Err(ConnectorError::InvalidSource {
                    location: location.to_string(),
                    cause: "an s3:// location needs a bucket name: s3://BUCKET/path".to_string(),
                });
            }
            let mut builder = AmazonS3Builder::new().with_bucket_name(bucket).with_allow_http(settings.allow_http);
            if let Some(endpoint) = &settings.endpoint {
                builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
            }
            builder = builder.with_region(settings.region.as_deref().unwrap_or("us-east-1"));
            if let Some(v) = &settings.access_key_id {
                builder = builder.with_access_key_id(v);
            }
            if let Some(v) = &settings.secret_access_key {
                builder = builder.with_secret_access_key(v);
            }
            if let Some(v) = &settings.session_token {
                builder = builder.with_token(v);
            }
            let store = builder
                .build()
                .map_err(|e| ConnectorError::InvalidSource { location: location.to_string(), cause: e.to_string() })?;
            let root = Url::parse(&format!("{}://{bucket}", location.scheme()))
                .map_err(|e| ConnectorError::InvalidSource { location: location.to_string(), cause: e.to_string() })?;
            let store: Arc<dyn ObjectStore> = Arc::new(ObservedStore::new(Arc::new(store), root.as_str()));
            runtime.register_object_store(&root, Arc::clone(&store));
            Ok(store)
        }
        other => Err(ConnectorError::InvalidSource {
            location: location.to_string(),
            cause: format!("unsupported URL scheme '{other}' (supported: file, s3)"),
        }),
    }
}
