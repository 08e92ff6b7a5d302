//! Parquet and Delta products on a real S3-protocol server over HTTP.
//!
//! `./scripts/test` starts the server on loopback and creates the bucket named by
//! `AGORA_TEST_S3_BUCKET`; these tests fail (rather than skip) without it.

use std::path::Path;
use std::sync::Arc;

use agora_engine::{Engine, EngineError, MeshConfig};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::support::{demo_dir, scalar_i64};

struct S3Server {
    endpoint: String,
    bucket: String,
}

fn server() -> S3Server {
    let var = |name: &str| crate::support::service_env(name, "an S3 server");
    S3Server { endpoint: var("AGORA_TEST_S3_ENDPOINT"), bucket: var("AGORA_TEST_S3_BUCKET") }
}

/// Uploads a local directory tree under `prefix`.
async fn upload(store: &Arc<dyn ObjectStore>, dir: &Path, prefix: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{prefix}/{}", entry.file_name().to_string_lossy());
        if entry.file_type().unwrap().is_dir() {
            Box::pin(upload(store, &entry.path(), &name)).await;
        } else {
            let bytes = std::fs::read(entry.path()).unwrap();
            store.put(&StorePath::from(name.as_str()), PutPayload::from(bytes)).await.unwrap();
        }
    }
}

/// Uploads demo products to a fresh prefix and returns a mesh over them.
async fn s3_mesh(test: &str) -> (Engine, String) {
    let s3 = server();
    // SAFETY of the test: credentials are moto's defaults, passed through named variables.
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(&s3.bucket)
            .with_endpoint(&s3.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap(),
    );
    let prefix = format!("{test}-{}", std::process::id());
    upload(&store, &demo_dir().join("sales/orders"), &format!("{prefix}/orders")).await;
    upload(&store, &demo_dir().join("customers/customer"), &format!("{prefix}/customer")).await;
    let yaml = format!(
        r#"
domains:
  - name: lake
    description: Products on S3
    owner: {{ name: Lake team, contact: lake@example.com }}
    storage:
      endpoint: {endpoint}
      region: us-east-1
      allow_http: true
      access_key_id_env: AGORA_TEST_S3_KEY
      secret_access_key_env: AGORA_TEST_S3_SECRET
    products:
      - name: orders
        description: Orders, Hive-partitioned Parquet
        source: {{ kind: parquet, location: "s3://{bucket}/{prefix}/orders" }}
      - name: customer
        description: Customers, Delta
        source: {{ kind: delta, location: "s3://{bucket}/{prefix}/customer" }}
      - name: lost
        description: In a bucket that does not exist
        source: {{ kind: parquet, location: "s3://no-such-bucket-{prefix}/x" }}
"#,
        endpoint = s3.endpoint,
        bucket = s3.bucket,
    );
    let env = |name: &str| match name {
        "AGORA_TEST_S3_KEY" | "AGORA_TEST_S3_SECRET" => Some("testing".to_string()),
        _ => None,
    };
    let config = MeshConfig::from_yaml(&yaml, Path::new("/virtual/mesh.yaml"), &env).unwrap();
    (Engine::new(config).await.unwrap(), prefix)
}

#[tokio::test]
async fn parquet_and_delta_products_on_s3_join() {
    let (engine, _) = s3_mesh("join").await;
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM lake.orders").await, 15_000);
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM lake.customer").await, 1_500);
    assert_eq!(
        scalar_i64(&engine, "SELECT count(*) FROM lake.orders WHERE year = 1998").await,
        scalar_i64(&crate::support::demo_engine().await, "SELECT count(*) FROM sales.orders WHERE year = 1998").await
    );
    let joined =
        scalar_i64(&engine, "SELECT count(*) FROM lake.orders o JOIN lake.customer c ON o.o_custkey = c.c_custkey")
            .await;
    assert_eq!(joined, 15_000, "every order has its customer");
}

#[tokio::test]
async fn a_missing_bucket_fails_alone() {
    let (engine, _) = s3_mesh("missing").await;
    let err = engine.session().query("SELECT * FROM lake.lost").await.err().unwrap();
    match &err {
        EngineError::ProductUnavailable { product, cause: source } => {
            assert_eq!(product.to_string(), "lake.lost");
            assert!(matches!(source, agora_engine::ConnectorError::NotFound { .. }), "{source:?}");
        }
        other => panic!("expected ProductUnavailable, got {other:?}"),
    }
    assert!(err.to_string().contains("no-such-bucket"), "{err}");
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM lake.customer").await, 1_500);
}
