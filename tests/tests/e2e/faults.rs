//! Broken sources fail alone, with errors that name the product and the cause.

use agora_engine::{Engine, EngineError, MeshConfig};

use crate::support::{copy_dir, demo_dir, scalar_i64};

const MESH: &str = r#"
domains:
  - name: good
    description: Products that work
    owner: { name: Team A, contact: a@example.com }
    products:
      - name: supplier
        description: A healthy Parquet product
        source: { kind: parquet, location: supplier }
      - name: nation
        description: A healthy Delta product
        source: { kind: delta, location: nation }
  - name: broken
    description: Products that do not
    owner: { name: Team B, contact: b@example.com }
    products:
      - name: corrupt
        description: A file that is not Parquet
        source: { kind: parquet, location: corrupt }
      - name: no_log
        description: A Delta directory without _delta_log
        source: { kind: delta, location: no_log }
      - name: missing
        description: A directory that does not exist
        source: { kind: parquet, location: does/not/exist }
"#;

async fn broken_mesh() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let demo = demo_dir();
    copy_dir(&demo.join("supply/supplier"), &dir.path().join("supplier"));
    copy_dir(&demo.join("customers/nation"), &dir.path().join("nation"));
    copy_dir(&demo.join("customers/region"), &dir.path().join("no_log"));
    std::fs::remove_dir_all(dir.path().join("no_log/_delta_log")).unwrap();
    std::fs::create_dir_all(dir.path().join("corrupt")).unwrap();
    std::fs::write(dir.path().join("corrupt/part-0.parquet"), b"this is not a parquet file at all").unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, MESH).unwrap();
    let engine = Engine::new(MeshConfig::from_file(&path).unwrap()).await.unwrap();
    (dir, engine)
}

#[tokio::test]
async fn check_reports_each_broken_product_and_passes_the_rest() {
    let (_dir, engine) = broken_mesh().await;
    let checks = engine.check().await;
    let outcome = |name: &str| {
        let c = checks.iter().find(|c| c.product.to_string() == name).unwrap();
        c.result.as_ref().map(|s| s.fields().len()).map_err(|e| e.to_string())
    };
    assert_eq!(outcome("good.supplier"), Ok(7));
    assert_eq!(outcome("good.nation"), Ok(4));

    let corrupt = outcome("broken.corrupt").unwrap_err();
    assert!(corrupt.starts_with("product broken.corrupt is unavailable: invalid data at file://"), "{corrupt}");
    assert!(corrupt.to_lowercase().contains("parquet"), "{corrupt}");

    let no_log = outcome("broken.no_log").unwrap_err();
    assert!(no_log.starts_with("product broken.no_log is unavailable: not found at file://"), "{no_log}");
    assert!(no_log.contains("_delta_log"), "{no_log}");

    let missing = outcome("broken.missing").unwrap_err();
    assert!(missing.starts_with("product broken.missing is unavailable: not found at file://"), "{missing}");
    assert!(missing.contains("does/not/exist"), "{missing}");
}

#[tokio::test]
async fn queries_on_a_broken_product_fail_and_others_keep_working() {
    let (_dir, engine) = broken_mesh().await;
    let err = engine.session().query("SELECT * FROM broken.corrupt").await.err().unwrap();
    match &err {
        EngineError::ProductUnavailable { product, .. } => assert_eq!(product.to_string(), "broken.corrupt"),
        other => panic!("expected ProductUnavailable, got {other:?}"),
    }
    // A join that touches a broken product fails naming it…
    let err = engine
        .session()
        .query("SELECT * FROM good.nation n JOIN broken.no_log r ON n.n_regionkey = r.r_regionkey")
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("broken.no_log"), "{err}");
    // …and the healthy products answer as before.
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM good.supplier").await, 100);
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM good.nation").await, 25);
}

#[tokio::test]
async fn a_repaired_product_is_picked_up_without_a_restart() {
    let (dir, engine) = broken_mesh().await;
    assert!(engine.session().query("SELECT * FROM broken.missing").await.is_err());
    copy_dir(&demo_dir().join("supply/supplier"), &dir.path().join("does/not/exist"));
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM broken.missing").await, 100);
}
