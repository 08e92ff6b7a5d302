//! Data as a product: contracts, the `system` catalogue, search, drift and
//! quality rules, on the demo mesh and on small meshes written here. The
//! PostgreSQL drift case is in `postgres.rs`; lineage, the ADBC path and the
//! independent ODCS linter are in `tests/python/test_products.py`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use agora_engine::{Engine, MeshConfig, Principal};
use arrow::array::{ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::governance::principal;
use crate::support::{demo_engine, render, scalar_i64};

/// Every row as `column → text` maps.
fn rows(batches: &[RecordBatch]) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        for i in 0..b.num_rows() {
            let mut row = BTreeMap::new();
            for (j, f) in schema.fields().iter().enumerate() {
                let text = arrow::util::display::array_value_to_string(b.column(j), i).unwrap();
                row.insert(f.name().clone(), if b.column(j).is_null(i) { "NULL".to_string() } else { text });
            }
            out.push(row);
        }
    }
    out
}

async fn query_as(engine: &Engine, who: Principal, sql: &str) -> Vec<BTreeMap<String, String>> {
    rows(&engine.session_as(who).collect(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")))
}

fn admin() -> Principal {
    principal("root", &["admins"], &[])
}

fn analyst() -> Principal {
    principal("ann", &["analysts"], &[("region", "EUROPE")])
}

/// A principal without any grant.
fn stranger() -> Principal {
    principal("sam", &["visitors"], &[])
}

#[tokio::test]
async fn system_products_list_every_demo_product_with_owner_contract_and_status() {
    let engine = demo_engine().await;
    let products = query_as(
        &engine,
        admin(),
        "SELECT domain, product, owner, owner_contact, source_kind, contract_id, contract_status, purpose, status, \
         status_detail, contract_unsupported_fields FROM system.products ORDER BY domain, product",
    )
    .await;
    let names: Vec<String> = products.iter().map(|r| format!("{}.{}", r["domain"], r["product"])).collect();
    assert_eq!(names, crate::support::DEMO_PRODUCTS);
    for p in &products {
        let name = format!("{}.{}", p["domain"], p["product"]);
        assert_eq!(p["contract_id"], name, "contract id of {name}");
        assert_eq!(p["contract_status"], "active");
        assert_ne!(p["owner"], "NULL");
        assert!(p["owner_contact"].contains('@'), "{p:?}");
        assert!(p["purpose"].len() > 20, "{name} has a purpose: {p:?}");
        let expected = if name == "supply.part" { "drift" } else { "ok" };
        assert_eq!(p["status"], expected, "{name}: {}", p["status_detail"]);
    }
    let part = &products[5];
    assert!(part["status_detail"].contains("column p_weight is in the contract but not in the source"), "{part:?}");
    assert!(part["status_detail"].contains("column p_size is Int32 in the source, the contract says bigint"));
    // ODCS fields Agora does not interpret are kept and shown.
    let orders = &products[4];
    assert!(orders["contract_unsupported_fields"].contains("\"price\""), "{orders:?}");
    assert!(orders["contract_unsupported_fields"].contains("priceAmount"), "{orders:?}");

    let domains =
        query_as(&engine, admin(), "SELECT domain, owner, products FROM system.domains ORDER BY domain").await;
    let domains: Vec<String> =
        domains.iter().map(|r| format!("{} {} {}", r["domain"], r["owner"], r["products"])).collect();
    assert_eq!(domains, ["customers CRM Team 3", "sales Sales Analytics 2", "supply Procurement 3"]);
}

#[tokio::test]
async fn system_columns_carry_contract_descriptions_classification_and_tags() {
    let engine = demo_engine().await;
    let sql = "SELECT column_name, data_type, description, classification, array_to_string(tags, ',') AS tags, \
               sensitive, mask FROM system.columns WHERE domain = 'customers' AND product = 'customer' ORDER BY ordinal";
    let admin_view = query_as(&engine, admin(), sql).await;
    let phone = admin_view.iter().find(|r| r["column_name"] == "c_phone").expect("c_phone listed");
    assert_eq!(phone["classification"], "restricted");
    assert!(
        phone["tags"].split(',').any(|t| t == "pii") && phone["tags"].split(',').any(|t| t == "contact"),
        "{phone:?}"
    );
    assert_eq!(phone["sensitive"], "true");
    assert_eq!(phone["mask"], "NULL", "admins read phones in clear");
    assert!(phone["description"].len() > 5);
    let key = admin_view.iter().find(|r| r["column_name"] == "c_custkey").unwrap();
    assert_eq!((key["data_type"].as_str(), key["sensitive"].as_str()), ("Int64", "false"));
    assert!(admin_view.iter().any(|r| r["column_name"] == "c_acctbal"));

    // The analyst sees the columns they may read, and how they are masked.
    let analyst_view = query_as(&engine, analyst(), sql).await;
    assert!(!analyst_view.iter().any(|r| r["column_name"] == "c_acctbal"), "c_acctbal is not granted");
    let phone = analyst_view.iter().find(|r| r["column_name"] == "c_phone").unwrap();
    assert!(phone["mask"].contains("last"), "{phone:?}");
    assert_eq!(analyst_view.len(), admin_view.len() - 1);

    let sensitive = query_as(
        &engine,
        admin(),
        "SELECT domain || '.' || product || '.' || column_name AS c, reason FROM system.sensitive_columns ORDER BY c",
    )
    .await;
    let names: Vec<&str> = sensitive.iter().map(|r| r["c"].as_str()).collect();
    for expected in ["customers.customer.c_acctbal", "customers.customer.c_name", "customers.customer.c_phone"] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    assert!(!names.contains(&"customers.customer.c_custkey"));
}

#[tokio::test]
async fn a_principal_without_grants_discovers_nothing() {
    let engine = demo_engine().await;
    for sql in [
        "SELECT * FROM system.products",
        "SELECT * FROM system.columns",
        "SELECT * FROM system.domains",
        "SELECT * FROM system.sensitive_columns",
        "SELECT * FROM system.quality_results",
        "SELECT * FROM search_products('customer')",
        "SELECT * FROM search_products('phone')",
    ] {
        assert!(query_as(&engine, stranger(), sql).await.is_empty(), "{sql} shows something to a stranger");
        assert!(
            !query_as(&engine, admin(), sql).await.is_empty() || sql.contains("quality"),
            "{sql} is empty for admins"
        );
    }
    // Nor the audit trail of others.
    assert!(query_as(&engine, stranger(), "SELECT * FROM system.sensitive_access").await.is_empty());
}

#[tokio::test]
async fn search_ranks_by_name_then_tags_then_descriptions() {
    let engine = demo_engine().await;
    let search = |text: &str| {
        let engine = engine.clone();
        let sql = format!("SELECT domain || '.' || product AS p, matched FROM search_products('{text}')");
        async move { query_as(&engine, admin(), &sql).await }
    };
    let hits = search("customer").await;
    assert_eq!(hits[0]["p"], "customers.customer", "{hits:?}");
    assert_eq!(hits[0]["matched"], "name");
    let hits = search("phone").await;
    let found: Vec<&str> = hits.iter().map(|r| r["p"].as_str()).collect();
    assert!(found.contains(&"customers.customer") && found.contains(&"supply.supplier"), "{found:?}");
    let hits = search("pii").await;
    assert_eq!(hits[0]["p"], "customers.customer", "tag match: {hits:?}");
    // Every word must match: "orders discount" finds lineitem (description and column), not customers.
    let hits = search("order discount").await;
    let found: Vec<&str> = hits.iter().map(|r| r["p"].as_str()).collect();
    assert!(found.contains(&"sales.lineitem") && !found.contains(&"customers.region"), "{found:?}");
    assert!(search("xylophone").await.is_empty());
    // A bad argument names the function's signature.
    let err = engine.session().collect("SELECT * FROM search_products(1)").await.unwrap_err().to_string();
    assert!(err.contains("search_products takes one text literal"), "{err}");
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

const CONTRACT: &str = r#"
apiVersion: v3.2.0
kind: DataContract
id: shop.t
version: 1.0.0
status: active
schema:
  - name: t
    quality:
      - { id: enough-rows, metric: rowCount, mustBeGreaterThan: 3 }
      - { id: no-negative-amounts, type: sql, query: "SELECT count(*) FROM {object} WHERE amount < 0", mustBe: 0 }
    properties:
      - { name: id, physicalType: bigint, required: true, unique: true }
      - name: status
        physicalType: varchar
        quality:
          - { id: known-status, metric: invalidValues, arguments: { validValues: [A, B] }, mustBe: 0 }
      - { name: amount, physicalType: double, logicalTypeOptions: { minimum: 0, maximum: 10 } }
      - { name: day, physicalType: date }
slaProperties:
  - { property: latency, value: 2, unit: d, element: t.day }
  - { property: freshness, value: 30, unit: d }
"#;

async fn shop_mesh(dir: &Path) -> Engine {
    let days_now = (chrono_days_since_epoch()) as i32;
    let good: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3, 4]))),
        ("status", Arc::new(StringArray::from(vec!["A", "B", "A", "B"]))),
        ("amount", Arc::new(Float64Array::from(vec![1.0, 5.0, 9.0, 2.0]))),
        ("day", Arc::new(Date32Array::from(vec![days_now; 4]))),
    ];
    let bad: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(vec![Some(1), Some(1), None]))),
        ("status", Arc::new(StringArray::from(vec!["A", "Z", "A"]))),
        ("amount", Arc::new(Float64Array::from(vec![-1.0, 5.0, 50.0]))),
        ("day", Arc::new(Date32Array::from(vec![10_957; 3]))), // 2000-01-01
    ];
    write_parquet(&dir.join("good/part-1.parquet"), good);
    write_parquet(&dir.join("bad/part-1.parquet"), bad);
    // The bad product's file was last written long ago.
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(978_307_200); // 2001-01-01
    std::fs::File::options().write(true).open(dir.join("bad/part-1.parquet")).unwrap().set_modified(old).unwrap();
    std::fs::write(dir.join("t.odcs.yaml"), CONTRACT).unwrap();
    let yaml = r#"
domains:
  - name: shop
    description: A shop
    owner: { name: Shop, contact: shop@example.com }
    products:
      - { name: good, description: passes every rule, source: { kind: parquet, location: good }, contract: t.odcs.yaml }
      - { name: bad, description: fails every rule, source: { kind: parquet, location: bad }, contract: t.odcs.yaml }
"#;
    let file = dir.join("mesh.yaml");
    std::fs::write(&file, yaml).unwrap();
    Engine::new(MeshConfig::from_file(&file).unwrap()).await.unwrap()
}

fn chrono_days_since_epoch() -> i64 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    (secs / 86_400) as i64
}

#[tokio::test]
async fn quality_rules_of_each_kind_pass_on_good_data_and_fail_on_bad_data() {
    let dir = tempfile::tempdir().unwrap();
    let engine = shop_mesh(dir.path()).await;
    let results = engine.check_quality().await.unwrap();
    let mut outcomes: BTreeMap<(String, String), (String, Option<f64>)> = BTreeMap::new();
    for r in &results {
        outcomes.insert((r.product.clone(), r.kind.clone() + " " + &r.rule), (r.outcome.to_string(), r.observed));
    }
    let kinds: Vec<&str> = results.iter().filter(|r| r.product == "shop.good").map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["row_count", "sql", "not_null", "unique", "accepted_values", "range", "freshness", "freshness"]);
    for r in results.iter().filter(|r| r.product == "shop.good") {
        assert_eq!(r.outcome, "pass", "{r:?}");
    }
    for r in results.iter().filter(|r| r.product == "shop.bad") {
        assert_eq!(r.outcome, "fail", "{r:?}");
    }
    let observed = |product: &str, kind: &str| {
        results.iter().filter(|r| r.product == product && r.kind == kind).map(|r| r.observed).collect::<Vec<_>>()
    };
    assert_eq!(observed("shop.bad", "row_count"), [Some(3.0)]);
    assert_eq!(observed("shop.bad", "not_null"), [Some(1.0)]);
    assert_eq!(observed("shop.bad", "unique"), [Some(1.0)]);
    assert_eq!(observed("shop.bad", "accepted_values"), [Some(1.0)]);
    assert_eq!(observed("shop.bad", "range"), [Some(2.0)]);
    assert_eq!(observed("shop.bad", "sql"), [Some(1.0)]);
    let fresh = observed("shop.good", "freshness");
    assert!(fresh.iter().all(|f| f.is_some_and(|s| s < 2.0 * 86_400.0)), "{fresh:?}");

    // The history is kept: a second run adds to it, readable as SQL.
    engine.check_quality().await.unwrap();
    let recorded = query_as(
        &engine,
        Principal::user("local"),
        "SELECT product, count(*) AS n, count(DISTINCT run_id) AS runs, sum(CASE WHEN passed THEN 1 ELSE 0 END) AS ok \
         FROM system.quality_results GROUP BY product ORDER BY product",
    )
    .await;
    let recorded: Vec<String> =
        recorded.iter().map(|r| format!("{} {} {} {}", r["product"], r["n"], r["runs"], r["ok"])).collect();
    assert_eq!(recorded, ["bad 16 2 0", "good 16 2 16"]);
}

#[tokio::test]
async fn drift_is_reported_when_a_parquet_file_loses_a_column() {
    let dir = tempfile::tempdir().unwrap();
    let engine = shop_mesh(dir.path()).await;
    let status = "SELECT product, status, status_detail FROM system.products ORDER BY product";
    let before = query_as(&engine, Principal::user("local"), status).await;
    assert!(before.iter().all(|r| r["status"] == "ok"), "{before:?}");
    // The good product is rewritten without its `status` column.
    std::fs::remove_file(dir.path().join("good/part-1.parquet")).unwrap();
    write_parquet(
        &dir.path().join("good/part-1.parquet"),
        vec![
            ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("amount", Arc::new(Float64Array::from(vec![1.0]))),
            ("day", Arc::new(Date32Array::from(vec![1]))),
        ],
    );
    let engine = Engine::open(dir.path().join("mesh.yaml")).await.unwrap();
    let after = query_as(&engine, Principal::user("local"), status).await;
    let good = after.iter().find(|r| r["product"] == "good").unwrap();
    assert_eq!(good["status"], "drift");
    assert_eq!(good["status_detail"], "column status is in the contract but not in the source");
}

#[tokio::test]
async fn invalid_contracts_are_reported_with_file_and_key_path() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("t/part-1.parquet"), vec![("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]);
    let contract = r#"
apiVersion: v2.1.0
kind: DataContract
version: 1.0.0
schema:
  - name: t
    properties:
      - { name: id, logicalType: long, required: "yes" }
      - name: id2
        quality:
          - { metric: nullCount }
          - { metric: rowCount, mustBe: 1, mustBeGreaterThan: 0 }
"#;
    std::fs::write(dir.path().join("t.odcs.yaml"), contract).unwrap();
    let yaml = "domains:\n  - name: shop\n    description: d\n    owner: { name: S, contact: s@example.com }\n    products:\n      - { name: t, description: d, source: { kind: parquet, location: t } }\n";
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, yaml).unwrap();
    let err = MeshConfig::from_file(&file).unwrap_err().to_string();
    for expected in [
        "domains[shop].products[t].contract: invalid contract",
        "t.odcs.yaml at apiVersion: unsupported ODCS version 'v2.1.0'",
        "at id: missing (required by ODCS)",
        "at schema[0].properties[0].logicalType: expected one of string, date, timestamp",
        "at schema[0].properties[0].required: expected true or false, found 'yes'",
        "at schema[0].properties[1].quality[0].metric: unknown metric 'nullCount'",
        "at schema[0].properties[1].quality[1]: more than one condition",
    ] {
        assert!(err.contains(expected), "missing «{expected}» in:\n{err}");
    }
    // Found beside the data without being named: contracts are discovered.
    assert!(err.contains("t.odcs.yaml"), "{err}");
    let _ = Schema::new(vec![Field::new("x", DataType::Int64, false)]);
}

#[tokio::test]
async fn freshness_of_a_delta_product_comes_from_its_newest_commit() {
    let dir = tempfile::tempdir().unwrap();
    crate::support::copy_dir(&crate::support::demo_dir().join("customers/region"), &dir.path().join("region"));
    let contract = "apiVersion: v3.2.0\nkind: DataContract\nid: geo.region\nversion: 1.0.0\n\
                    slaProperties:\n  - { property: freshness, value: 3650, unit: d }\n";
    std::fs::write(dir.path().join("region.odcs.yaml"), contract).unwrap();
    let yaml = "domains:\n  - name: geo\n    description: d\n    owner: { name: G, contact: g@example.com }\n    products:\n      \
                - { name: region, description: d, source: { kind: delta, location: region } }\n";
    std::fs::write(dir.path().join("mesh.yaml"), yaml).unwrap();
    let engine = Engine::open(dir.path().join("mesh.yaml")).await.unwrap();
    let results = engine.check_quality().await.unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    let r = &results[0];
    assert_eq!((r.kind.as_str(), r.outcome.as_str()), ("freshness", "pass"), "{r:?}");
    let age = r.observed.expect("an age");
    assert!((0.0..3650.0 * 86_400.0).contains(&age), "{age}");
}

#[tokio::test]
async fn a_sql_rule_may_read_only_its_own_domain_and_measures_are_for_owners() {
    let dir = tempfile::tempdir().unwrap();
    drop(shop_mesh(dir.path()).await);
    let contract = "apiVersion: v3.2.0\nkind: DataContract\nid: shop.t\nversion: 1.0.0\nschema:\n  - name: t\n    quality:\n      \
                    - { type: sql, query: \"SELECT count(*) FROM shop.bad\", mustBe: 0 }\n      \
                    - { type: sql, query: \"SELECT count(*) FROM hr.salaries\", mustBe: 0 }\n      \
                    - { type: sql, query: \"SELECT count(*) FROM system.audit_log\", mustBe: 0 }\n";
    std::fs::write(dir.path().join("t.odcs.yaml"), contract).unwrap();
    let mut yaml = std::fs::read_to_string(dir.path().join("mesh.yaml")).unwrap();
    yaml.push_str(
        "  - name: hr\n    description: People\n    owner: { name: HR, contact: hr@example.com }\n    products:\n      \
         - { name: salaries, description: s, source: { kind: parquet, location: bad } }\n",
    );
    std::fs::write(dir.path().join("mesh.yaml"), yaml).unwrap();
    let engine = Engine::open(dir.path().join("mesh.yaml")).await.unwrap();
    let results = engine.check_quality().await.unwrap();
    let good: Vec<_> = results.iter().filter(|r| r.product == "shop.good").collect();
    assert_eq!(good.len(), 3);
    // Within the domain: run (and fails, the bad product has 3 rows).
    assert_eq!((good[0].outcome.as_str(), good[0].observed), ("fail", Some(3.0)), "{:?}", good[0]);
    for r in &good[1..] {
        assert_eq!(r.outcome, "error", "{r:?}");
        assert!(r.message.as_deref().unwrap_or("").contains("may read only products of domain shop"), "{r:?}");
        assert_eq!(r.observed, None);
    }

    // On the demo: an analyst sees outcomes, not what unrestricted reads measured.
    let demo = demo_engine().await;
    demo.check_quality().await.unwrap();
    let sql =
        "SELECT count(*) AS n, count(observed) AS measured, count(message) AS messages FROM system.quality_results";
    let admin_view = query_as(&demo, admin(), sql).await;
    assert_ne!(admin_view[0]["measured"], "0");
    let analyst_view = query_as(&demo, analyst(), sql).await;
    assert_ne!(analyst_view[0]["n"], "0");
    assert_eq!((analyst_view[0]["measured"].as_str(), analyst_view[0]["messages"].as_str()), ("0", "0"));
    // Rules about a column the analyst may not read are not shown at all.
    let hidden = "SELECT count(*) AS n FROM system.quality_results WHERE column_name = 'c_acctbal'";
    assert_ne!(query_as(&demo, admin(), hidden).await[0]["n"], "0", "the contract has rules on c_acctbal");
    assert_eq!(query_as(&demo, analyst(), hidden).await[0]["n"], "0");
}

#[tokio::test]
async fn join_keys_prune_parquet_files_and_reach_delta_scans() {
    // A hash join's keys become a dynamic filter on the probe side's scan
    // (DataFusion's dynamic filters, on by default): lineitem's files are
    // ordered by l_orderkey, so keys 1..3 leave all but the first file range
    // unread; the Delta scan of customer receives the filter too.
    let engine = demo_engine().await;
    let keys = "(VALUES (1), (2), (3)) v(k)";
    let lineitem = format!("SELECT count(*) FROM sales.lineitem l JOIN {keys} ON l.l_orderkey = v.k");
    let expected = scalar_i64(&engine, "SELECT count(*) FROM sales.lineitem WHERE l_orderkey IN (1, 2, 3)").await;
    assert_eq!(scalar_i64(&engine, &lineitem).await, expected);
    let plan = render(&engine, &format!("EXPLAIN ANALYZE {lineitem}")).await;
    let scan = plan.lines().find(|l| l.contains("DataSourceExec") && l.contains("lineitem")).expect("a lineitem scan");
    assert!(scan.contains("DynamicFilter [ l_orderkey@0 >= 1 AND l_orderkey@0 <= 3"), "{scan}");
    let pruned = pruning_counts(scan, "files_ranges_pruned_statistics=");
    let (total, matched) = pruned.expect("file-range pruning metrics");
    assert!(total > 1 && matched < total, "no file range was pruned: {total} → {matched}");

    let customer = format!("SELECT count(*) FROM customers.customer c JOIN {keys} ON c.c_custkey = v.k");
    assert_eq!(scalar_i64(&engine, &customer).await, 3);
    let plan = render(&engine, &format!("EXPLAIN ANALYZE {customer}")).await;
    assert!(plan.contains("DynamicFilter [ c_custkey@0 >= 1 AND c_custkey@0 <= 3"), "{plan}");
}

/// `(total, matched)` of a DataFusion pruning metric `name=T total → M matched`.
fn pruning_counts(line: &str, name: &str) -> Option<(u64, u64)> {
    let rest = &line[line.find(name)? + name.len()..];
    let (total, rest) = rest.split_once(" total → ")?;
    let matched: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((total.trim().parse().ok()?, matched.parse().ok()?))
}
