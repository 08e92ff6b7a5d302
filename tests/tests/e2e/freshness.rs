//! Sources that change under a serving engine: Parquet files added, deleted and
//! atomically replaced, on a local directory and on a real S3-protocol server,
//! and a PostgreSQL table that gains a column. Every answer must follow the
//! files as they are now: no stale listing, no footer or statistics of a file
//! that is gone or was replaced, no decoding error.

use std::path::Path;
use std::sync::Arc;

use agora_engine::{Engine, MeshConfig};
use arrow::array::{Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;

/// A Parquet file of one `v` column (and a `w` column when given).
fn parquet_file(v: &[i64], w: Option<&[i64]>) -> Vec<u8> {
    let mut fields = vec![Field::new("v", DataType::Int64, false)];
    let mut columns: Vec<Arc<dyn Array>> = vec![Arc::new(Int64Array::from(v.to_vec()))];
    if let Some(w) = w {
        fields.push(Field::new("w", DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from(w.to_vec())));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    bytes
}

async fn put(store: &dyn ObjectStore, path: &str, bytes: Vec<u8>) {
    store.put(&StorePath::from(path), PutPayload::from(bytes)).await.unwrap();
}

/// The first row of an all-integer result.
async fn first_row(engine: &Engine, sql: &str) -> Vec<Option<i64>> {
    let batches = engine.session().collect(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    batches[0]
        .columns()
        .iter()
        .map(|column| {
            let array = arrow::array::cast::as_primitive_array::<arrow::datatypes::Int64Type>(column);
            (!array.is_null(0)).then(|| array.value(0))
        })
        .collect()
}

/// `count(*)`, `sum(v)` and `max(v)`: the last two are what DataFusion answers
/// from file statistics when it can, so stale statistics would show here.
async fn summary(engine: &Engine) -> (i64, Option<i64>, Option<i64>) {
    let row = first_row(engine, "SELECT count(*), sum(v), max(v) FROM f.t").await;
    (row[0].unwrap_or(-1), row[1], row[2])
}

fn mesh(location: &str, freshness: &str, storage: &str) -> String {
    format!(
        "domains:\n  - name: f\n    description: Files that change\n    owner: {{ name: T, contact: t@example.com }}\n{storage}    \
         products:\n      - {{ name: t, description: changing, source: {{ kind: parquet, location: \"{location}\" }} }}\n{freshness}"
    )
}

/// Adds, deletes and replaces the files under `prefix` of `store`, checking the
/// product's answers after each step.
async fn files_change_under_the_engine(engine: &Engine, store: &dyn ObjectStore, prefix: &str) {
    let at = |name: &str| format!("{prefix}/{name}");
    assert_eq!(summary(engine).await, (4, Some(16), Some(10)), "the first files");

    put(store, &at("c.parquet"), parquet_file(&[100, 200], None)).await;
    assert_eq!(summary(engine).await, (6, Some(316), Some(200)), "a file added");

    store.delete(&StorePath::from(at("b.parquet"))).await.unwrap();
    assert_eq!(summary(engine).await, (5, Some(306), Some(200)), "a file deleted");

    // Replaced by a larger file, then by a smaller one: the footer, the page
    // offsets and the statistics of the old file must all be forgotten.
    put(store, &at("a.parquet"), parquet_file(&[7; 1000], None)).await;
    assert_eq!(summary(engine).await, (1002, Some(7300), Some(200)), "a file replaced by a larger one");
    put(store, &at("c.parquet"), parquet_file(&[5], None)).await;
    assert_eq!(summary(engine).await, (1001, Some(7005), Some(7)), "a file replaced by a smaller one");

    for name in ["a.parquet", "c.parquet"] {
        store.delete(&StorePath::from(at(name))).await.unwrap();
    }
    assert_eq!(summary(engine).await, (0, None, None), "every file gone: an empty product");

    put(store, &at("d.parquet"), parquet_file(&[42], None)).await;
    assert_eq!(summary(engine).await, (1, Some(42), Some(42)), "a file back");
}

/// A local directory with `a.parquet` (1, 2, 3) and `b.parquet` (10), served by
/// an engine whose mesh has the given `freshness` section.
async fn local_engine(freshness: &str) -> (tempfile::TempDir, Engine, LocalFileSystem) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    put(&store, "t/a.parquet", parquet_file(&[1, 2, 3], None)).await;
    put(&store, "t/b.parquet", parquet_file(&[10], None)).await;
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, mesh("t", freshness, "")).unwrap();
    let engine = Engine::open(&path).await.unwrap();
    (dir, engine, store)
}

#[tokio::test]
async fn local_parquet_files_added_deleted_and_replaced_are_seen_by_the_next_query() {
    // The opened table kept (default metadata TTL): only the listing is fresh.
    let (_dir, engine, store) = local_engine("").await;
    files_change_under_the_engine(&engine, &store, "t").await;
    // The table opened again for every query, through the same steps.
    let (_dir, engine, store) = local_engine("freshness: { metadata_ttl_seconds: 0 }\n").await;
    files_change_under_the_engine(&engine, &store, "t").await;
}

#[tokio::test]
async fn a_new_column_in_new_files_appears_once_the_table_is_opened_again() {
    let (_dir, engine, store) = local_engine("freshness: { metadata_ttl_seconds: 0 }\n").await;
    assert!(engine.session().collect("SELECT max(w) FROM f.t").await.is_err(), "no w yet");
    put(&store, "t/c.parquet", parquet_file(&[4], Some(&[40]))).await;
    let row = first_row(&engine, "SELECT count(*), count(w), max(w) FROM f.t").await;
    assert_eq!(row, [Some(5), Some(1), Some(40)]);
}

#[tokio::test]
async fn a_listing_ttl_reuses_the_listing_until_it_expires() {
    let (_dir, engine, store) = local_engine("freshness: { listing_ttl_seconds: 1 }\n").await;
    assert_eq!(summary(&engine).await.0, 4);
    put(&store, "t/c.parquet", parquet_file(&[100], None)).await;
    assert_eq!(summary(&engine).await.0, 4, "within the TTL the cached listing is used");
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    assert_eq!(summary(&engine).await.0, 5, "after it, the new file is seen");
}

#[tokio::test]
async fn s3_parquet_objects_added_deleted_and_overwritten_are_seen_by_the_next_query() {
    let endpoint = crate::support::service_env("AGORA_TEST_S3_ENDPOINT", "an S3 server");
    let bucket = crate::support::service_env("AGORA_TEST_S3_BUCKET", "an S3 server");
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();
    let prefix = format!("freshness-{}", std::process::id());
    put(&store, &format!("{prefix}/a.parquet"), parquet_file(&[1, 2, 3], None)).await;
    put(&store, &format!("{prefix}/b.parquet"), parquet_file(&[10], None)).await;
    let storage = format!(
        "    storage: {{ endpoint: \"{endpoint}\", allow_http: true, access_key_id_env: K, secret_access_key_env: S }}\n"
    );
    let yaml = mesh(&format!("s3://{bucket}/{prefix}"), "", &storage);
    let env = |name: &str| matches!(name, "K" | "S").then(|| "testing".to_string());
    let engine =
        Engine::new(MeshConfig::from_yaml(&yaml, Path::new("/virtual/mesh.yaml"), &env).unwrap()).await.unwrap();
    files_change_under_the_engine(&engine, &store, &prefix).await;
}
