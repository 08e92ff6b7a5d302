//! Parquet and Delta products on local disk, queried across domains.

use agora_engine::{EngineError, ProductRef};
use arrow::datatypes::DataType;

use crate::support::{demo_engine, render, scalar_i64};

#[tokio::test]
async fn every_demo_product_opens_with_its_schema() {
    let engine = demo_engine().await;
    let checks = engine.check().await;
    let names: Vec<String> = checks.iter().map(|c| c.product.to_string()).collect();
    assert_eq!(names, crate::support::DEMO_PRODUCTS);
    for check in &checks {
        let schema = check.result.as_ref().unwrap_or_else(|e| panic!("{}: {e}", check.product));
        assert!(!schema.fields().is_empty());
    }
}

#[tokio::test]
async fn row_counts_match_tpch_cardinalities() {
    let engine = demo_engine().await;
    // TPC-H at scale 0.01: fixed sizes for these tables.
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM sales.orders").await, 15_000);
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM customers.customer").await, 1_500);
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM customers.nation").await, 25);
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM customers.region").await, 5);
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM supply.supplier").await, 100);
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM supply.part").await, 2_000);
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM supply.partsupp").await, 8_000);
}

#[tokio::test]
async fn hive_partitions_become_typed_columns() {
    let engine = demo_engine().await;
    let schema = engine.product_schema(&ProductRef::new("sales", "orders")).await.unwrap();
    let year = schema.field_with_name("year").unwrap();
    assert_eq!(year.data_type(), &DataType::Int64);
    // The partition value agrees with the date stored in the file, for every row.
    let mismatches = scalar_i64(
        &engine,
        "SELECT count(*) FROM sales.orders WHERE year <> CAST(date_part('year', o_orderdate) AS BIGINT)",
    )
    .await;
    assert_eq!(mismatches, 0);
    let per_year =
        render(&engine, "SELECT year, count(*) AS n FROM sales.orders WHERE year >= 1997 GROUP BY year ORDER BY year")
            .await;
    assert!(
        per_year.contains("| 1997 |") && per_year.contains("| 1998 |") && !per_year.contains("| 1996 |"),
        "{per_year}"
    );
}

#[tokio::test]
async fn partition_filters_prune_directories() {
    let engine = demo_engine().await;
    let plan = render(&engine, "EXPLAIN SELECT count(DISTINCT o_custkey) FROM sales.orders WHERE year = 1995").await;
    // Only the year=1995 directory's file is scanned.
    assert!(plan.contains("year=1995"), "{plan}");
    assert!(!plan.contains("year=1994"), "{plan}");
}

#[tokio::test]
async fn a_join_across_three_domains_and_two_formats() {
    let engine = demo_engine().await;
    let sql = "SELECT count(*) FROM sales.orders o \
               JOIN customers.customer c ON o.o_custkey = c.c_custkey \
               JOIN supply.supplier s ON s.s_nationkey = c.c_nationkey";
    let joined = scalar_i64(&engine, sql).await;
    // Same answer computed another way: per nation, orders × suppliers.
    let by_nation = scalar_i64(
        &engine,
        "WITH o AS (SELECT c.c_nationkey AS nk, count(*) AS n FROM sales.orders o JOIN customers.customer c ON o.o_custkey = c.c_custkey GROUP BY 1), \
              s AS (SELECT s_nationkey AS nk, count(*) AS n FROM supply.supplier GROUP BY 1) \
         SELECT CAST(sum(o.n * s.n) AS BIGINT) FROM o JOIN s ON o.nk = s.nk",
    )
    .await;
    assert!(joined > 0);
    assert_eq!(joined, by_nation);
}

#[tokio::test]
async fn unknown_names_list_what_exists() {
    let engine = demo_engine().await;
    let session = engine.session();
    let err = session.query("SELECT * FROM sales.ordrs").await.err().unwrap();
    assert!(matches!(err, EngineError::NotFound(_)), "{err:?}");
    assert_eq!(err.to_string(), "no product 'ordrs' in domain 'sales'; its products are: orders, lineitem");

    let err = session.query("SELECT * FROM marketing.campaigns").await.err().unwrap();
    assert_eq!(
        err.to_string(),
        "no domain 'marketing' (looking up 'marketing.campaigns'); domains are: sales, customers, supply"
    );

    let err = session.query("SELECT * FROM orders").await.err().unwrap();
    assert!(err.to_string().contains("did you mean sales.orders?"), "{err}");

    let err = session.query("SELECT nope FROM sales.orders").await.err().unwrap();
    assert!(matches!(err, EngineError::Sql(_)), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test]
async fn syntax_errors_carry_the_position() {
    let err =
        demo_engine().await.session().query("SELECT * FROM sales.orders WHERE AND o_custkey = 1").await.err().unwrap();
    assert!(matches!(err, EngineError::Sql(_)), "{err:?}");
    assert!(err.to_string().contains("Line: 1, Column"), "{err}");
}

#[tokio::test]
async fn writes_are_refused() {
    let session = demo_engine().await.session();
    for sql in [
        "CREATE TABLE sales.x AS SELECT 1",
        "INSERT INTO sales.orders SELECT * FROM sales.orders",
        "DROP TABLE sales.orders",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let err = session.query(sql).await.err().unwrap_or_else(|| panic!("{sql} was accepted"));
        assert!(matches!(err, EngineError::ReadOnly(_)), "{sql}: {err:?}");
        assert!(err.to_string().starts_with("Agora is read-only"), "{err}");
    }
    // The data is untouched.
    assert_eq!(crate::support::scalar_i64(&demo_engine().await, "SELECT count(*) FROM sales.orders").await, 15_000);
}

#[tokio::test]
async fn information_schema_lists_domains_and_products() {
    let text = render(
        &demo_engine().await,
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_catalog = 'mesh' AND table_schema <> 'information_schema' ORDER BY 1, 2",
    )
    .await;
    for name in ["| customers    | customer", "| sales        | lineitem", "| supply       | partsupp"] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

#[tokio::test]
async fn registering_a_thousand_products_reads_nothing() {
    // 999 products whose locations do not exist and one real one: loading the
    // mesh must not touch any source, so it succeeds, and querying the real
    // product opens only that one.
    let dir = tempfile::tempdir().unwrap();
    crate::support::copy_dir(&crate::support::demo_dir().join("customers/region"), &dir.path().join("region"));
    let mut yaml = String::from(
        "domains:\n  - name: big\n    description: Many products\n    owner: { name: T, contact: t@example.com }\n    products:\n",
    );
    yaml.push_str("      - { name: region, description: real, source: { kind: delta, location: region } }\n");
    for i in 0..999 {
        yaml.push_str(&format!(
            "      - {{ name: p{i}, description: missing, source: {{ kind: parquet, location: missing/p{i} }} }}\n"
        ));
    }
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, yaml).unwrap();
    let engine = agora_engine::Engine::open(&path).await.unwrap();
    assert_eq!(engine.domains()[0].products.len(), 1000);
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM big.region").await, 5);
}

#[tokio::test]
async fn new_delta_commits_become_visible_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    crate::support::copy_dir(&crate::support::demo_dir().join("customers/region"), &dir.path().join("region"));
    let yaml = "domains:\n  - name: d\n    description: x\n    owner: { name: T, contact: t@example.com }\n    products:\n      - { name: region, description: r, source: { kind: delta, location: region } }\n";
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, yaml).unwrap();
    let engine = agora_engine::Engine::open(&path).await.unwrap();
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM d.region").await, 5);

    // Another writer appends the same five rows as a new commit.
    let rows = engine.session().collect("SELECT * FROM d.region").await.unwrap();
    let rows: Vec<arrow::array::RecordBatch> = rows
        .iter()
        .map(|b| {
            let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| {
                        let t = if f.data_type() == &arrow::datatypes::DataType::Utf8View {
                            arrow::datatypes::DataType::Utf8
                        } else {
                            f.data_type().clone()
                        };
                        arrow::datatypes::Field::new(f.name(), t, f.is_nullable())
                    })
                    .collect::<Vec<_>>(),
            ));
            let columns = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| arrow::compute::cast(c, f.data_type()).unwrap())
                .collect();
            arrow::array::RecordBatch::try_new(schema, columns).unwrap()
        })
        .collect();
    let url = url::Url::from_directory_path(dir.path().join("region")).unwrap();
    let table = deltalake::DeltaTable::try_from_url(url).await.unwrap();
    table.write(rows).await.unwrap();

    tokio::time::sleep(std::time::Duration::from_millis(5_200)).await;
    assert_eq!(scalar_i64(&engine, "SELECT count(*) FROM d.region").await, 10);
}

#[tokio::test]
async fn without_governance_everyone_sees_and_cancels_only_their_own_queries() {
    use agora_engine::Principal;
    use futures::StreamExt;

    let dir = tempfile::tempdir().unwrap();
    crate::support::copy_dir(&crate::support::demo_dir().join("customers/region"), &dir.path().join("region"));
    let yaml = "domains:\n  - name: open\n    description: An open mesh\n    owner: { name: T, contact: t@example.com }\n    products:\n      - { name: region, description: r, source: { kind: delta, location: region } }\n";
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, yaml).unwrap();
    let engine = agora_engine::Engine::open(&path).await.unwrap();
    let (ann, bob) = (Principal::user("ann"), Principal::user("bob"));
    let slow = "SELECT count(*) AS n FROM open.region, generate_series(1, 10000000000)";
    let query = engine.session_as(ann.clone()).query(slow).await.unwrap();
    let id = query.id().to_string();
    let mut stream = query.stream().await.unwrap();
    let reader = tokio::spawn(async move { stream.next().await.map(|r| r.map(|b| b.num_rows())) });
    let list = format!("SELECT count(*) AS n FROM system.queries WHERE query_id = '{id}'");
    let count = |batches: Vec<arrow::array::RecordBatch>| {
        batches[0].column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().value(0)
    };
    assert_eq!(count(engine.session_as(ann.clone()).collect(&list).await.unwrap()), 1);
    assert_eq!(count(engine.session_as(bob.clone()).collect(&list).await.unwrap()), 0);
    let refused = engine.session_as(bob).collect(&format!("CALL cancel_query('{id}')")).await.unwrap_err();
    assert!(matches!(refused, EngineError::NotFound(_)), "{refused}");
    assert!(!reader.is_finished(), "bob's attempt stopped ann's query");
    engine.session_as(ann).collect(&format!("CALL cancel_query('{id}')")).await.unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), reader).await.unwrap().unwrap();
    assert!(matches!(ended, Some(Err(ref e)) if e.to_string().contains("cancelled by ann")), "{ended:?}");
}
