//! Governance end to end: a principal with a row filter and masks on a Parquet
//! product (`sales.orders`) and a Delta product (`customers.customer`) tries
//! every path that reads data; nothing protected may come back. The PostgreSQL
//! product is covered in `postgres.rs`, the Flight-only paths in
//! `tests/python/test_governance.py`.

use std::collections::BTreeSet;
use std::path::Path;

use agora_engine::{Engine, EngineError, Principal, ProductRef};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;

use crate::support::demo_dir;

const GLOBAL: &str = r#"
admins: { groups: [admins] }
token_key_file: token.key
tag_rules:
  - id: contact-last-4
    tag: contact
    mask: { type: last_n, n: 4 }
    except: { groups: [support] }
grants:
  - id: analysts-orders
    to: { groups: [analysts] }
    domain: sales
    product: orders
    row_filter: "o_orderpriority = '1-URGENT'"
    masks:
      o_clerk: { type: redact }
      o_custkey: { type: token }
"#;

const CUSTOMERS: &str = r#"
owners: { users: [olga] }
tags:
  customer: { c_phone: [contact, pii] }
grants:
  - id: analysts-customers
    to: { groups: [analysts] }
    product: customer
    except_columns: [c_acctbal]
    row_filter: "c_region = ${principal.region}"
    masks:
      c_custkey: { type: token }
"#;

/// A governed mesh over the shared demo data, with its own policies and audit log.
pub struct Governed {
    pub dir: tempfile::TempDir,
    pub engine: Engine,
}

/// Writes the mesh and policy files into a new directory and opens it.
pub async fn governed_with(global: &str, customers: &str) -> Result<Governed, EngineError> {
    let demo = demo_dir();
    let dir = tempfile::tempdir().unwrap();
    let abs = |p: &str| demo.join(p).display().to_string();
    let mesh = format!(
        "domains:
  - name: sales
    description: s
    owner: {{ name: S, contact: s@example.com }}
    products:
      - {{ name: orders, description: o, source: {{ kind: parquet, location: {orders} }} }}
  - name: customers
    description: c
    owner: {{ name: C, contact: c@example.com }}
    policies: customers.yaml
    products:
      - {{ name: customer, description: c, source: {{ kind: delta, location: {customer} }} }}
      - {{ name: region, description: r, source: {{ kind: delta, location: {region} }} }}
governance:
  policies: policies.yaml
  audit: {{ path: audit/audit.jsonl }}
",
        orders = abs("sales/orders"),
        customer = abs("customers/customer"),
        region = abs("customers/region"),
    );
    std::fs::write(dir.path().join("mesh.yaml"), mesh).unwrap();
    std::fs::write(dir.path().join("policies.yaml"), global).unwrap();
    std::fs::write(dir.path().join("customers.yaml"), customers).unwrap();
    std::fs::write(dir.path().join("token.key"), "test-key-0123456789abcdef").unwrap();
    let engine = Engine::open(dir.path().join("mesh.yaml")).await?;
    Ok(Governed { dir, engine })
}

async fn governed() -> Governed {
    governed_with(GLOBAL, CUSTOMERS).await.unwrap()
}

pub fn principal(user: &str, groups: &[&str], attrs: &[(&str, &str)]) -> Principal {
    Principal {
        user: user.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

fn ann() -> Principal {
    principal("ann", &["analysts"], &[("region", "EUROPE")])
}

fn admin() -> Principal {
    principal("root", &["admins"], &[])
}

async fn run(engine: &Engine, who: Principal, sql: &str) -> Vec<RecordBatch> {
    engine.session_as(who).collect(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Every value of the named column, as text.
fn values(batches: &[RecordBatch], column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let Some(array) = b.column_by_name(column) else { continue };
        let array = arrow::compute::cast(array, &DataType::Utf8).unwrap();
        out.extend(array.as_string::<i32>().iter().map(|v| v.unwrap_or("NULL").to_string()));
    }
    out
}

fn set(v: Vec<String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

/// What the principal may and may not see, from the admin's unfiltered view.
struct Truth {
    visible_names: BTreeSet<String>,
    hidden_names: BTreeSet<String>,
    raw_phones: BTreeSet<String>,
    urgent_orders: BTreeSet<String>,
    raw_clerks: BTreeSet<String>,
}

async fn truth(engine: &Engine) -> Truth {
    let c = run(engine, admin(), "SELECT c_name, c_phone, c_region FROM customers.customer").await;
    let (names, phones, regions) = (values(&c, "c_name"), values(&c, "c_phone"), values(&c, "c_region"));
    let mut visible = BTreeSet::new();
    let mut hidden = BTreeSet::new();
    for (n, r) in names.iter().zip(&regions) {
        if r == "EUROPE" {
            visible.insert(n.clone())
        } else {
            hidden.insert(n.clone())
        };
    }
    let o = run(engine, admin(), "SELECT o_orderkey, o_orderpriority, o_clerk FROM sales.orders").await;
    let urgent = values(&o, "o_orderkey")
        .into_iter()
        .zip(values(&o, "o_orderpriority"))
        .filter(|(_, p)| p == "1-URGENT")
        .map(|(k, _)| k)
        .collect();
    assert!(!visible.is_empty() && !hidden.is_empty());
    Truth {
        visible_names: visible,
        hidden_names: hidden,
        raw_phones: set(phones),
        urgent_orders: urgent,
        raw_clerks: set(values(&o, "o_clerk")),
    }
}

/// Asserts that a result holds no protected row or value.
fn assert_protected(sql: &str, batches: &[RecordBatch], t: &Truth) {
    for name in values(batches, "c_name") {
        assert!(!t.hidden_names.contains(&name), "{sql}: returned hidden customer {name}");
        assert!(t.visible_names.contains(&name), "{sql}: unexpected customer {name}");
    }
    for phone in values(batches, "c_phone") {
        assert!(!t.raw_phones.contains(&phone), "{sql}: returned a raw phone number {phone}");
        assert!(phone.starts_with("***********") && phone.len() == 15, "{sql}: phone not masked: {phone}");
    }
    for key in values(batches, "o_orderkey") {
        assert!(t.urgent_orders.contains(&key), "{sql}: returned filtered-out order {key}");
    }
    for clerk in values(batches, "o_clerk") {
        assert!(!t.raw_clerks.contains(&clerk) && clerk == "****", "{sql}: clerk not redacted: {clerk}");
    }
    for b in batches {
        assert!(b.column_by_name("c_acctbal").is_none(), "{sql}: returned the ungranted c_acctbal");
    }
}

#[tokio::test]
async fn every_query_path_applies_row_filters_and_masks() {
    let g = governed().await;
    let t = truth(&g.engine).await;
    let paths = [
        "SELECT * FROM customers.customer",
        "SELECT * FROM sales.orders",
        "SELECT c_name, c_phone FROM customers.customer WHERE c_region <> 'EUROPE' OR c_region = 'EUROPE'",
        // joins, self-joins, joins on masked keys
        "SELECT c.c_name, c.c_phone, o.o_orderkey, o.o_clerk FROM customers.customer c JOIN sales.orders o ON c.c_custkey = o.o_custkey",
        "SELECT a.c_name, b.c_phone FROM customers.customer a JOIN customers.customer b ON a.c_name = b.c_name",
        // sub-queries
        "SELECT c_name, c_phone FROM customers.customer WHERE c_name IN (SELECT c_name FROM customers.customer)",
        "SELECT c_name FROM customers.customer c WHERE EXISTS (SELECT 1 FROM sales.orders o WHERE o.o_custkey = c.c_custkey)",
        "SELECT o_orderkey FROM sales.orders WHERE o_totalprice > (SELECT avg(o_totalprice) FROM sales.orders)",
        "SELECT * FROM (SELECT c_name, c_phone FROM customers.customer) AS inner_q",
        // CTEs, UNION, window functions, aggregates
        "WITH x AS (SELECT * FROM customers.customer) SELECT c_name, c_phone FROM x",
        "SELECT c_name, c_phone FROM customers.customer UNION ALL SELECT c_name, c_phone FROM customers.customer",
        "SELECT c_name, c_phone, row_number() OVER (PARTITION BY c_nationkey ORDER BY c_name) AS n FROM customers.customer",
        "SELECT c_phone AS c_phone, count(*) FROM customers.customer GROUP BY c_phone",
        "SELECT o_clerk, count(*) AS n FROM sales.orders GROUP BY o_clerk",
        "SELECT c_name, c_phone FROM customers.customer ORDER BY c_phone DESC LIMIT 5",
    ];
    for sql in paths {
        let batches = run(&g.engine, ann(), sql).await;
        assert_protected(sql, &batches, &t);
    }
    // Aggregates see only visible rows: no answer from file statistics.
    let count = |b: Vec<RecordBatch>| values(&b, "n")[0].parse::<usize>().unwrap();
    assert_eq!(
        count(run(&g.engine, ann(), "SELECT count(*) AS n FROM customers.customer").await),
        t.visible_names.len()
    );
    assert_eq!(count(run(&g.engine, ann(), "SELECT count(*) AS n FROM sales.orders").await), t.urgent_orders.len());
    let phones = run(&g.engine, ann(), "SELECT max(c_phone) AS m, min(c_phone) AS n2 FROM customers.customer").await;
    assert!(values(&phones, "m")[0].starts_with("****"), "{:?}", values(&phones, "m"));

    // Prepared statements: parameters bind into the governed plan.
    let session = g.engine.session_as(ann());
    let hidden = t.hidden_names.iter().next().unwrap().clone();
    let visible = t.visible_names.iter().next().unwrap().clone();
    for (name, expected) in [(hidden, 0), (visible, 1)] {
        let q = session.query("SELECT c_name, c_phone FROM customers.customer WHERE c_name = ?").await.unwrap();
        let q = q.bind(vec![ScalarValue::Utf8(Some(name.clone()))]).unwrap();
        let batches: Vec<RecordBatch> = futures::TryStreamExt::try_collect(q.stream().await.unwrap()).await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), expected, "{name}");
        assert_protected("prepared", &batches, &t);
    }

    // Plans built by hand: over the session's scan they are governed; over a
    // table provider built by hand (the product's files) they are refused, as
    // are plans that write.
    let scan = session.scan(&ProductRef::new("customers", "customer")).await.unwrap();
    let built = datafusion::logical_expr::LogicalPlanBuilder::from(scan)
        .project(vec![datafusion::prelude::col("c_name"), datafusion::prelude::col("c_phone")])
        .unwrap()
        .build()
        .unwrap();
    let q = session.plan(built).await.unwrap();
    let direct: Vec<RecordBatch> = futures::TryStreamExt::try_collect(q.stream().await.unwrap()).await.unwrap();
    assert_protected("plan", &direct, &t);
    let files = demo_dir().join("customers/customer");
    let raw = datafusion::prelude::SessionContext::new();
    let frame = raw
        .read_parquet(files.to_string_lossy().as_ref(), datafusion::prelude::ParquetReadOptions::default())
        .await
        .unwrap();
    let err = session.plan(frame.logical_plan().clone()).await.err().unwrap();
    assert!(matches!(err, EngineError::Denied(_)), "{err}");
    assert!(err.to_string().contains("not the mesh's"), "{err}");
    let ddl = raw.state().create_logical_plan("CREATE VIEW v AS SELECT 1").await.unwrap();
    let err = session.plan(ddl).await.err().unwrap();
    assert!(matches!(err, EngineError::ReadOnly(_)), "{err}");

    // EXPLAIN ANALYZE would show how many rows the scans read before the row filter.
    let err = session.query("EXPLAIN ANALYZE SELECT c_name FROM customers.customer").await.err().unwrap();
    assert!(matches!(err, EngineError::Denied(_)), "{err}");
    assert!(g.engine.session_as(admin()).collect("EXPLAIN ANALYZE SELECT 1").await.is_ok());
    // Every other plan form that prints statistics (row counts, min/max of
    // the raw scans below the barrier) is refused to non-admins as well.
    for sql in [
        "EXPLAIN VERBOSE SELECT c_name FROM customers.customer",
        "EXPLAIN (COSTS ON) SELECT c_name FROM customers.customer",
        "EXPLAIN (FORMAT tree, COSTS TRUE) SELECT c_name FROM customers.customer",
        "EXPLAIN (ANALYZE, VERBOSE) SELECT c_name FROM customers.customer",
    ] {
        let err = session.query(sql).await.err().unwrap();
        assert!(matches!(err, EngineError::Denied(_)), "{sql}: {err}");
    }
    // The refusal is not moot: an admin's COSTS output does carry statistics.
    let costs = run(&g.engine, admin(), "EXPLAIN (COSTS ON) SELECT c_name FROM customers.customer").await;
    assert!(values(&costs, "plan").join("\n").contains("statistics=[Rows="), "{:?}", values(&costs, "plan"));

    // A leak-proof user predicate goes below the barrier (and on to the
    // scan, for pruning and pushdown), also when column pruning leaves a
    // projection between the filter and the barrier.
    let explain = run(&g.engine, ann(), "EXPLAIN SELECT c_phone FROM customers.customer WHERE c_nationkey = 7").await;
    let logical = values(&explain, "plan")[0].clone();
    let barrier_at = logical.find("PolicyBarrier").unwrap();
    let predicate_at = logical.find("c_nationkey = Int64(7)").expect("the predicate is in the plan");
    assert!(predicate_at > barrier_at, "the leak-proof predicate stayed above the policy barrier:\n{logical}");

    // A volatile predicate that names no column stays above the barrier: it
    // runs on the principal's rows only.
    let explain = run(&g.engine, ann(), "EXPLAIN SELECT count(*) FROM customers.customer WHERE random() < 2").await;
    let logical = values(&explain, "plan")[0].clone();
    let barrier_at = logical.find("PolicyBarrier").unwrap();
    let random_at = logical.find("random()").expect("the predicate is in the plan");
    assert!(random_at < barrier_at, "random() was pushed below the policy barrier:\n{logical}");

    // EXPLAIN shows where policies apply, and no values.
    let explain = run(&g.engine, ann(), "EXPLAIN SELECT c_name FROM customers.customer").await;
    let text = values(&explain, "plan").join("\n");
    assert!(text.contains("PolicyBarrier: customers.customer, row filter [(c_region = 'EUROPE')]"), "{text}");
    assert!(!t.raw_phones.iter().any(|p| text.contains(p.as_str())));
}

#[tokio::test]
async fn leaky_predicates_never_run_on_filtered_rows() {
    let g = governed().await;
    // Nation 0 (Algeria) is in Africa: only rows the filter removes make this divide by zero.
    let sql = "SELECT count(*) AS n FROM customers.customer WHERE 1 / (c_nationkey - 0) > -100";
    let ok = run(&g.engine, ann(), sql).await;
    let t = truth(&g.engine).await;
    assert_eq!(values(&ok, "n")[0].parse::<usize>().unwrap(), t.visible_names.len());
    // The same predicate fails for the admin, who sees those rows: the test can fail.
    let err = g.engine.session_as(admin()).collect(sql).await.unwrap_err().to_string();
    assert!(err.to_lowercase().replace(' ', "").contains("dividebyzero"), "{err}");

    // Parquet: an order that is not urgent.
    let hidden: i64 = {
        let b = run(
            &g.engine,
            admin(),
            "SELECT min(o_orderkey) AS k FROM sales.orders WHERE o_orderpriority <> '1-URGENT'",
        )
        .await;
        values(&b, "k")[0].parse().unwrap()
    };
    let sql = format!("SELECT count(*) AS n FROM sales.orders WHERE 10 / (o_orderkey - {hidden}) >= -10");
    let n = run(&g.engine, ann(), &sql).await;
    assert_eq!(values(&n, "n")[0].parse::<usize>().unwrap(), t.urgent_orders.len());

    // Leak-proof predicates still reach the scan: Parquet gets them as a pruning predicate.
    let explain =
        run(&g.engine, ann(), "EXPLAIN SELECT o_orderkey FROM sales.orders WHERE o_orderdate < DATE '1993-01-01'")
            .await;
    let text = values(&explain, "plan").join("\n");
    let scan = text.lines().find(|l| l.contains("DataSourceExec")).unwrap_or_default().to_string();
    assert!(scan.contains("o_orderpriority") && scan.contains("o_orderdate"), "{text}");
    // Delta too: the row filter and the leak-proof predicate reach the scan.
    let explain = run(&g.engine, ann(), "EXPLAIN SELECT c_name FROM customers.customer WHERE c_nationkey = 6").await;
    let text = values(&explain, "plan").join("\n");
    let scan = text.lines().find(|l| l.contains("DataSourceExec")).unwrap_or_default().to_string();
    assert!(scan.contains("c_region") && scan.contains("c_nationkey"), "{text}");
}

#[tokio::test]
async fn masked_tokens_are_equal_across_domains_and_join() {
    let g = governed().await;
    // Through tokens: the analyst's join of their customers to their orders…
    let joined = run(
        &g.engine,
        ann(),
        "SELECT count(*) AS n FROM customers.customer c JOIN sales.orders o ON c.c_custkey = o.o_custkey",
    )
    .await;
    // …equals the admin's join on raw keys under the same filters.
    let raw = run(
        &g.engine,
        admin(),
        "SELECT count(*) AS n FROM customers.customer c JOIN sales.orders o ON c.c_custkey = o.o_custkey \
         WHERE c.c_region = 'EUROPE' AND o.o_orderpriority = '1-URGENT'",
    )
    .await;
    let n = values(&joined, "n")[0].parse::<usize>().unwrap();
    assert!(n > 0);
    assert_eq!(values(&raw, "n")[0].parse::<usize>().unwrap(), n);
    // Tokens differ from the keys and are the same value in both domains.
    let keys = run(
        &g.engine,
        ann(),
        "SELECT c.c_custkey AS t, o.o_custkey AS u FROM customers.customer c JOIN sales.orders o ON c.c_custkey = o.o_custkey LIMIT 20",
    )
    .await;
    let raw_keys = set(values(&run(&g.engine, admin(), "SELECT c_custkey FROM customers.customer").await, "c_custkey"));
    for (t, u) in values(&keys, "t").iter().zip(values(&keys, "u")) {
        assert_eq!(*t, u);
        assert!(!raw_keys.contains(t), "token {t} is a raw key");
    }
}

#[tokio::test]
async fn catalogue_shows_only_what_a_principal_may_read() {
    let g = governed().await;
    let tables = run(
        &g.engine,
        ann(),
        "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables WHERE table_catalog = 'mesh' AND table_schema <> 'information_schema' ORDER BY t",
    )
    .await;
    let system = [
        "system.audit_log",
        "system.columns",
        "system.domains",
        "system.products",
        "system.quality_results",
        "system.queries",
        "system.sensitive_access",
        "system.sensitive_columns",
    ];
    let expected: Vec<&str> = ["customers.customer", "sales.orders"].into_iter().chain(system).collect();
    assert_eq!(values(&tables, "t"), expected);
    let columns = run(
        &g.engine,
        ann(),
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'customers' AND table_name = 'customer'",
    )
    .await;
    let columns = values(&columns, "column_name");
    assert!(columns.contains(&"c_phone".to_string()) && !columns.contains(&"c_acctbal".to_string()), "{columns:?}");

    let session = g.engine.session_as(ann());
    assert_eq!(session.products("customers"), ["customer"]);
    let err = session.query("SELECT * FROM customers.region").await.err().unwrap();
    assert!(matches!(err, EngineError::Denied(_)), "{err}");
    assert!(err.to_string().contains("no grant on customers.region"), "{err}");
    // No existence oracle: a product that does not exist gets the same denial
    // as one without a grant, and a hidden column the same error as a column
    // that does not exist (which lists only the readable columns).
    let missing = session.query("SELECT * FROM customers.nosuch").await.err().unwrap();
    assert!(matches!(missing, EngineError::Denied(_)), "{missing}");
    assert_eq!(missing.to_string(), err.to_string().replace("customers.region", "customers.nosuch"));
    let missing = session.query("SELECT * FROM marketing.campaigns").await.err().unwrap();
    assert_eq!(missing.to_string(), err.to_string().replace("customers.region", "marketing.campaigns"));
    let hidden = session.query("SELECT c_acctbal FROM customers.customer").await.err().unwrap();
    let nosuch = session.query("SELECT c_nosuch FROM customers.customer").await.err().unwrap();
    assert!(matches!(hidden, EngineError::Sql(_)) && matches!(nosuch, EngineError::Sql(_)), "{hidden} / {nosuch}");
    assert_eq!(hidden.to_string().replace("c_acctbal", "X"), nosuch.to_string().replace("c_nosuch", "X"));
    assert!(!hidden.to_string().replace("No field named c_acctbal", "").contains("c_acctbal"), "{hidden}");
    // An admin still gets the helpful listing.
    let listing = g.engine.session_as(admin()).query("SELECT * FROM customers.nosuch").await.err().unwrap();
    assert!(
        matches!(listing, EngineError::NotFound(_)) && listing.to_string().contains("its products are"),
        "{listing}"
    );

    // Deny by default: a principal without grants sees and reads nothing.
    let eve = g.engine.session_as(principal("eve", &["guests"], &[("region", "EUROPE")]));
    assert!(eve.products("sales").is_empty() && eve.products("customers").is_empty());
    let err = eve.query("SELECT count(*) FROM sales.orders").await.err().unwrap();
    assert!(matches!(err, EngineError::Denied(_)), "{err}");
    // A grant whose filter needs an attribute the principal lacks denies.
    let err = g
        .engine
        .session_as(principal("bob", &["analysts"], &[]))
        .collect("SELECT count(*) FROM customers.customer")
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Denied(_)) && err.to_string().contains("principal.region"), "{err}");
    // The domain's owner reads it unmasked; the tag rule's exception unmasks phones.
    let olga = run(&g.engine, principal("olga", &[], &[]), "SELECT c_acctbal, c_phone FROM customers.customer").await;
    assert!(values(&olga, "c_phone").iter().all(|p| !p.starts_with('*')));
    let support = run(
        &g.engine,
        principal("sam", &["analysts", "support"], &[("region", "EUROPE")]),
        "SELECT c_phone FROM customers.customer",
    )
    .await;
    assert!(values(&support, "c_phone").iter().all(|p| !p.starts_with('*')));
}

#[tokio::test]
async fn broken_policies_stop_start_up_with_their_location() {
    let cases = [
        (GLOBAL.replace("redact", "scramble"), CUSTOMERS.to_string(), "scramble"),
        (
            GLOBAL.to_string(),
            CUSTOMERS.replace("c_region = ${principal.region}", "c_region = = 1"),
            "not a valid SQL expression",
        ),
        (
            GLOBAL.replace("product: orders", "product: ordrs"),
            CUSTOMERS.to_string(),
            "no product 'ordrs' in domain 'sales'",
        ),
        (
            GLOBAL.replace("token_key_file: token.key", ""),
            CUSTOMERS.to_string(),
            "token mask, which needs a secret key",
        ),
        // Subjects are typed: `services` must name a configured service token.
        (
            GLOBAL.replace("admins: { groups: [admins] }", "admins: { groups: [admins], services: [root] }"),
            CUSTOMERS.to_string(),
            "admins.services: no service token 'root'",
        ),
    ];
    for (global, customers, expected) in cases {
        let err = governed_with(&global, &customers).await.err().expect("must not load");
        assert!(err.to_string().contains(expected), "expected '{expected}' in: {err}");
    }
    // Column-level mistakes are found against the product's schema before serving.
    let bad_column = CUSTOMERS.replace("except_columns: [c_acctbal]", "except_columns: [c_acctbalance]");
    let g = governed_with(GLOBAL, &bad_column).await.unwrap();
    let err = g.engine.validate_policies().await.unwrap_err().to_string();
    assert!(err.contains("customers.yaml") || err.contains("policies.yaml"), "{err}");
    assert!(err.contains("no column 'c_acctbalance'") && err.contains("analysts-customers"), "{err}");
    let bad_type = GLOBAL.replace("o_clerk: { type: redact }", "o_totalprice: { type: email }");
    let g = governed_with(&bad_type, CUSTOMERS).await.unwrap();
    let err = g.engine.validate_policies().await.unwrap_err().to_string();
    assert!(err.contains("mask email applies to text columns, not to o_totalprice"), "{err}");
    assert!(governed().await.engine.validate_policies().await.is_ok());
}

#[tokio::test]
async fn every_request_is_audited_exactly_once() {
    let g = governed().await;
    let requests: [(&str, Principal, bool); 7] = [
        ("SELECT count(*) FROM customers.customer", ann(), true),
        ("SELECT c_name, c_phone FROM customers.customer LIMIT 3", ann(), true),
        ("SELECT * FROM sales.orders WHERE o_orderkey < 100", admin(), true),
        ("SELECT * FROM customers.region", ann(), false),
        ("SELECT count(*) FROM sales.orders", principal("eve", &[], &[]), false),
        ("SELEC nonsense", ann(), false),
        ("SELECT c_nosuch FROM customers.customer", ann(), false),
    ];
    for (sql, who, ok) in &requests {
        let result = g.engine.session_as(who.clone()).collect(sql).await;
        assert_eq!(result.is_ok(), *ok, "{sql}: {result:?}");
    }
    let log = g.engine.audit_log().unwrap();
    // Two records per request: the start record, then the finish record.
    let raw = log.read_all().unwrap();
    assert_eq!(raw.len(), 2 * requests.len(), "{raw:#?}");
    for pair in raw.chunks(2) {
        assert_eq!((pair[0].status.as_str(), pair[0].query_id.as_str()), ("started", pair[1].query_id.as_str()));
        assert_eq!((pair[0].seq + 1, pair[1].prev.is_some()), (pair[1].seq, true));
    }
    let records = log.requests().unwrap();
    assert_eq!(records.len(), requests.len(), "{records:#?}");
    for ((sql, who, ok), r) in requests.iter().zip(&records) {
        assert_eq!(r.sql.as_deref(), Some(*sql));
        assert_eq!(r.user, who.user);
        assert_eq!(r.status == "ok", *ok, "{r:?}");
        // A UUIDv7, shared with the query's lineage run.
        assert_eq!((r.query_id.len(), r.query_id.as_bytes()[14]), (36, b'7'), "{}", r.query_id);
        assert!(r.policy_version.as_deref().is_some_and(|v| v.starts_with("sha256:")));
    }
    let first = &records[0];
    assert_eq!(first.products, ["customers.customer"]);
    assert_eq!(first.rows, 1);
    assert_eq!(first.policies[0].row_filter.as_deref(), Some("(c_region = 'EUROPE')"));
    assert_eq!(first.policies[0].filter_policies, ["analysts-customers"]);
    let second = &records[1];
    assert_eq!(second.rows, 3);
    assert!(second.columns.contains(&"customers.customer.c_phone".to_string()), "{second:?}");
    assert!(
        second.policies[0].masks.iter().any(|(c, m, p)| c == "c_phone" && m == "last_n(4)" && p == "contact-last-4")
    );
    assert!(records[2].policies.is_empty() && records[2].rows > 0);
    for denied in &records[3..5] {
        assert_eq!((denied.decision.as_str(), denied.status.as_str()), ("deny", "denied"));
        assert!(denied.reason.as_deref().unwrap_or_default().contains("no grant"), "{denied:?}");
    }
    for failed in &records[5..] {
        assert_eq!((failed.decision.as_str(), failed.status.as_str()), ("allow", "failed"));
        assert!(failed.error.is_some());
    }

    // system.audit_log: admins see all, the domain's owner what touches it, others nothing.
    let all = run(&g.engine, admin(), "SELECT user, status FROM system.audit_log").await;
    let statuses = values(&all, "status");
    assert_eq!(statuses.len(), requests.len() + 1, "and the admin's own query, running: {statuses:?}");
    assert_eq!(statuses.last().map(String::as_str), Some("started"));
    let owner = run(&g.engine, principal("olga", &[], &[]), "SELECT products FROM system.audit_log").await;
    let owner_rows = owner.iter().map(|b| b.num_rows()).sum::<usize>();
    assert_eq!(owner_rows, 2, "olga owns customers: the two customer reads that reached a product");
    let none = run(&g.engine, ann(), "SELECT * FROM system.audit_log").await;
    assert_eq!(none.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    assert_audit_file_has(g.dir.path(), "SELECT * FROM system.audit_log");
}

fn assert_audit_file_has(dir: &Path, sql: &str) {
    let text = std::fs::read_to_string(dir.join("audit/audit.jsonl")).unwrap();
    assert!(text.lines().any(|l| l.contains(&format!("\"sql\":\"{sql}\""))), "{text}");
}

#[tokio::test]
async fn the_query_history_shows_each_principal_its_own_and_cancel_stops_a_query() {
    use futures::StreamExt;

    let g = governed().await;
    let slow = "SELECT count(*) AS n FROM sales.orders a JOIN sales.orders b ON a.o_orderkey < b.o_orderkey";
    let query = g.engine.session_as(ann()).query(slow).await.unwrap();
    let id = query.id().to_string();
    let mut stream = query.stream().await.unwrap();
    let reader = tokio::spawn(async move { stream.next().await.map(|r| r.map(|b| b.num_rows())) });
    let find = format!("SELECT query_id, user, state FROM system.queries WHERE query_id = '{id}'");
    assert_eq!(values(&run(&g.engine, ann(), &find).await, "state"), ["running"]);
    assert_eq!(values(&run(&g.engine, admin(), &find).await, "user"), ["ann"]);
    let bob = principal("bob", &["analysts"], &[("region", "EUROPE")]);
    assert!(values(&run(&g.engine, bob.clone(), &find).await, "state").is_empty());
    // Bob may not cancel it, and is told what an unknown id would get.
    let refused = g.engine.session_as(bob).collect(&format!("CALL cancel_query('{id}')")).await.unwrap_err();
    assert!(matches!(refused, EngineError::NotFound(_)), "{refused}");
    let answer = run(&g.engine, ann(), &format!("CALL cancel_query('{id}')")).await;
    assert_eq!(values(&answer, "cancelled"), ["true"]);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), reader).await.unwrap().unwrap();
    match ended {
        Some(Err(e)) => {
            let e = EngineError::from(e);
            assert!(matches!(e, EngineError::Cancelled(ref m) if m.contains("cancelled by ann")), "{e}")
        }
        other => panic!("the query was not cancelled: {other:?}"),
    }
    assert_eq!(values(&run(&g.engine, admin(), &find).await, "state"), ["cancelled"]);
    let info = g.engine.queries().into_iter().find(|q| q.query_id == id).unwrap();
    assert_eq!((info.protocol.as_str(), info.products.clone()), ("embedded", vec!["sales.orders".to_string()]));
}

#[tokio::test]
async fn primary_keys_show_only_for_products_and_columns_the_principal_may_read() {
    use agora_engine::ProductRef;
    let g = governed().await;
    let key = |who: Principal, domain: &'static str, product: &'static str| {
        let session = g.engine.session_as(who);
        async move { session.primary_key(&ProductRef::new(domain, product)).await }
    };
    // Keys from the contracts beside the demo data.
    assert_eq!(key(admin(), "customers", "customer").await, ["c_custkey"]);
    assert_eq!(key(admin(), "customers", "region").await, ["r_regionkey"]);
    // Ann reads customer keys (as tokens) and orders, but not region at all.
    assert_eq!(key(ann(), "customers", "customer").await, ["c_custkey"]);
    assert_eq!(key(ann(), "sales", "orders").await, ["o_orderkey"]);
    assert!(key(ann(), "customers", "region").await.is_empty(), "a hidden product's key was shown");
    assert!(key(ann(), "customers", "no_such").await.is_empty());
    // A key column the principal may not read hides the whole key.
    let hidden = governed_with(GLOBAL, &CUSTOMERS.replace("[c_acctbal]", "[c_acctbal, c_custkey]")).await.unwrap();
    let session = hidden.engine.session_as(ann());
    assert!(session.primary_key(&ProductRef::new("customers", "customer")).await.is_empty());
    let session = hidden.engine.session_as(admin());
    assert_eq!(session.primary_key(&ProductRef::new("customers", "customer")).await, ["c_custkey"]);
}

#[tokio::test]
async fn a_default_schema_resolves_bare_names_only_where_the_principal_may_read() {
    let g = governed().await;
    let count = |batches: Vec<RecordBatch>| values(&batches, "n");
    let ann_in_customers = g.engine.session_as(ann()).with_default_schema("customers").unwrap();
    assert_eq!(ann_in_customers.default_schema(), Some("customers"));
    // A bare name reads the product of the default schema, under the same
    // row filter as its qualified name.
    let bare = ann_in_customers.collect("SELECT count(*) AS n FROM customer").await.unwrap();
    let qualified = run(&g.engine, ann(), "SELECT count(*) AS n FROM customers.customer").await;
    let everyone = run(&g.engine, admin(), "SELECT count(*) AS n FROM customers.customer").await;
    assert_eq!(count(bare.clone()), count(qualified));
    assert_ne!(count(bare), count(everyone), "the row filter did not apply to the bare name");
    // A product she may not read is refused exactly as when qualified.
    let bare = ann_in_customers.collect("SELECT * FROM region").await.unwrap_err().to_string();
    let qualified = g.engine.session_as(ann()).collect("SELECT * FROM customers.region").await.unwrap_err().to_string();
    assert_eq!(bare, qualified);
    // Qualified names still reach other domains.
    assert!(!ann_in_customers.collect("SELECT o_orderkey FROM sales.orders LIMIT 1").await.unwrap().is_empty());
    // Without a default schema a bare name is refused, with a hint.
    let refused = g.engine.session_as(ann()).collect("SELECT * FROM customer").await.unwrap_err().to_string();
    assert!(refused.contains("must be qualified") && refused.contains("customers.customer"), "{refused}");
    // A schema the principal may not see and one that does not exist get
    // the same refusal, which lists only what she may see.
    let eve = || principal("eve", &["nobody"], &[]);
    let hidden = g.engine.session_as(eve()).with_default_schema("sales").err().unwrap().to_string();
    let missing = g.engine.session_as(eve()).with_default_schema("nosuch").err().unwrap().to_string();
    assert_eq!(hidden.replace("'sales'", "'X'"), missing.replace("'nosuch'", "'X'"));
    assert!(!hidden.contains("customers"), "{hidden}");
}

#[tokio::test]
async fn information_schema_describes_only_what_a_principal_may_read() {
    let g = governed().await;
    let tables = run(
        &g.engine,
        ann(),
        "SELECT table_name, description FROM information_schema.tables \
         WHERE table_schema IN ('customers', 'sales') ORDER BY table_schema, table_name",
    )
    .await;
    assert_eq!(values(&tables, "table_name"), ["customer", "orders"]);
    assert_eq!(values(&tables, "description"), ["c", "o"], "the products' descriptions from mesh.yaml");
    // A column's description is its contract's, as system.columns has it.
    let described = |who: Principal, sql: &'static str| {
        let engine = &g.engine;
        async move { run(engine, who, sql).await }
    };
    let columns = described(
        ann(),
        "SELECT column_name, description FROM information_schema.columns \
         WHERE table_schema = 'customers' AND table_name = 'customer' ORDER BY ordinal_position",
    )
    .await;
    let names = values(&columns, "column_name");
    assert!(names.contains(&"c_phone".to_string()) && !names.contains(&"c_acctbal".to_string()), "{names:?}");
    let expected = described(
        admin(),
        "SELECT column_name, description FROM system.columns WHERE domain = 'customers' AND product = 'customer' \
         AND column_name <> 'c_acctbal'",
    )
    .await;
    let by_name = |batches: &[RecordBatch]| -> BTreeSet<String> {
        values(batches, "column_name")
            .into_iter()
            .zip(values(batches, "description"))
            .map(|(c, d)| format!("{c}={d}"))
            .collect()
    };
    assert!(values(&columns, "description").iter().any(|d| d != "NULL"), "no column description at all");
    assert_eq!(by_name(&columns), by_name(&expected));
    // SHOW TABLES and SHOW COLUMNS are planned over the same listings.
    let shown = values(&run(&g.engine, ann(), "SHOW TABLES").await, "table_name");
    assert!(shown.contains(&"customer".to_string()) && !shown.contains(&"region".to_string()), "{shown:?}");
    let shown = values(&run(&g.engine, ann(), "SHOW COLUMNS FROM customers.customer").await, "column_name");
    assert!(shown.contains(&"c_phone".to_string()) && !shown.contains(&"c_acctbal".to_string()), "{shown:?}");
}
