use std::collections::HashMap;
use std::path::Path;

use agora_connectors::Source;

use super::*;

const FILE: &str = "/srv/mesh/mesh.yaml";

fn env() -> HashMap<&'static str, &'static str> {
    HashMap::from([("DATA_ROOT", "/data"), ("S3_KEY", "key-id"), ("S3_SECRET", "s3cr3t")])
}

fn parse(yaml: &str) -> Result<MeshConfig, ConfigError> {
    let env = env();
    MeshConfig::from_yaml(yaml, Path::new(FILE), &|k| env.get(k).map(|v| v.to_string()))
}

/// Parses `yaml`, expecting exactly one problem, and returns it.
fn one_problem(yaml: &str) -> Problem {
    let err = parse(yaml).expect_err("the configuration should be rejected");
    assert_eq!(err.problems.len(), 1, "expected one problem, got {err}");
    assert_eq!(err.file, Path::new(FILE));
    err.problems[0].clone()
}

const VALID: &str = r#"
domains:
  - name: sales
    description: Orders and their line items
    owner: { name: Sales Analytics, contact: sales-data@example.com }
    products:
      - name: orders
        description: One row per order
        tags: [gold]
        source: { kind: parquet, location: sales/orders, partition_columns: { year: int64 } }
      - name: lineitem
        description: Order lines
        owner: { name: Fulfilment, contact: fulfilment@example.com }
        source: { kind: parquet, location: "${DATA_ROOT}/lineitem.parquet" }
  - name: customers
    description: Who buys
    owner: { name: CRM team, contact: crm@example.com }
    storage:
      endpoint: http://127.0.0.1:9000
      region: eu-west-1
      allow_http: true
      access_key_id_env: S3_KEY
      secret_access_key_env: S3_SECRET
    products:
      - name: customer
        description: Customers
        source: { kind: delta, location: "s3://crm/customer" }
"#;

#[test]
fn a_valid_mesh_loads_with_defaults_and_resolved_locations() {
    let mesh = parse(VALID).unwrap();
    assert_eq!(mesh.domains.len(), 2);
    let sales = mesh.domain("sales").unwrap();
    let orders = sales.product("orders").unwrap();
    assert_eq!(orders.owner, sales.owner, "a product without owner inherits the domain's");
    assert_eq!(orders.tags, vec!["gold"]);
    assert_eq!(orders.source.location().as_str(), "file:///srv/mesh/sales/orders");
    let lineitem = sales.product("lineitem").unwrap();
    assert_eq!(lineitem.owner.name, "Fulfilment");
    assert_eq!(lineitem.source.location().as_str(), "file:///data/lineitem.parquet");
    let customer = mesh.domain("customers").unwrap().product("customer").unwrap();
    let Source::Delta(delta) = &customer.source else { panic!("expected delta, got {:?}", customer.source) };
    assert_eq!(delta.store.access_key_id.as_deref(), Some("key-id"));
    assert_eq!(delta.store.secret_access_key.as_deref(), Some("s3cr3t"));
    assert!(delta.store.allow_http);
    assert!(!format!("{:?}", delta.store).contains("s3cr3t"), "Debug must not print secrets");
}

#[test]
fn unknown_keys_are_reported_with_their_path() {
    let p = one_problem(&VALID.replace("tags: [gold]", "tags: [gold]\n        colour: blue"));
    assert_eq!(p.path, "domains[sales].products[orders].colour");
    assert!(p.message.contains("unknown key 'colour'"), "{}", p.message);
    assert!(p.message.contains("description"), "lists the expected keys: {}", p.message);
}

#[test]
fn duplicate_domain_names_are_reported() {
    let dup = VALID.replace("name: customers", "name: sales");
    let p = one_problem(&dup);
    assert_eq!(p.path, "domains[sales].name");
    assert!(p.message.contains("duplicate domain name 'sales'"), "{}", p.message);
}

#[test]
fn duplicate_product_names_are_reported() {
    let p = one_problem(&VALID.replace("name: lineitem", "name: orders"));
    assert_eq!(p.path, "domains[sales].products[orders].name");
    assert!(p.message.contains("duplicate product name 'orders'"), "{}", p.message);
}

#[test]
fn names_must_be_sql_identifiers() {
    let p = one_problem(&VALID.replace("name: lineitem", "name: Line-Item"));
    assert_eq!(p.path, "domains[sales].products[Line-Item].name");
    assert!(p.message.contains("'Line-Item' is not a valid SQL identifier"), "{}", p.message);
}

#[test]
fn the_system_schema_is_reserved() {
    let p = one_problem(&VALID.replace("name: customers", "name: system"));
    assert_eq!(p.path, "domains[system].name");
    assert!(p.message.contains("reserved"), "{}", p.message);
}

#[test]
fn missing_environment_variables_are_reported() {
    let p = one_problem(&VALID.replace("${DATA_ROOT}", "${NO_SUCH_VAR}"));
    assert_eq!(p.path, "domains[sales].products[lineitem].source.location");
    assert!(p.message.contains("environment variable 'NO_SUCH_VAR' is not set"), "{}", p.message);
    let p = one_problem(&VALID.replace("secret_access_key_env: S3_SECRET", "secret_access_key_env: NOT_SET"));
    assert_eq!(p.path, "domains[customers].storage.secret_access_key_env");
}

#[test]
fn malformed_urls_are_reported() {
    let p = one_problem(&VALID.replace("s3://crm/customer", "s3:///customer"));
    assert_eq!(p.path, "domains[customers].products[customer].source.location");
    assert!(p.message.contains("malformed URL"), "{}", p.message);
    let p = one_problem(&VALID.replace("s3://crm/customer", "ftp://crm/customer"));
    assert!(p.message.contains("unsupported URL scheme 'ftp'"), "{}", p.message);
}

#[test]
fn unknown_source_kinds_and_missing_fields_are_reported() {
    let p = one_problem(&VALID.replace("kind: delta", "kind: iceberg"));
    assert_eq!(p.path, "domains[customers].products[customer].source.kind");
    assert!(p.message.contains("unknown source kind 'iceberg'"), "{}", p.message);
    let p = one_problem(&VALID.replace("    description: Who buys\n", ""));
    assert_eq!(p.path, "domains[customers].description");
    assert!(p.message.contains("missing"), "{}", p.message);
}

#[test]
fn yaml_syntax_errors_give_a_line() {
    let err = parse("domains:\n  - name: [unclosed\n").unwrap_err();
    assert!(err.problems[0].message.contains("line"), "{err}");
}

#[test]
fn five_mistakes_are_all_reported_at_once() {
    let broken = VALID
        .replace("tags: [gold]", "tags: [gold]\n        colour: blue") // unknown key
        .replace("name: lineitem", "name: orders") // duplicate product
        .replace("name: customers", "name: system") // reserved schema
        .replace("${DATA_ROOT}", "${NO_SUCH_VAR}") // missing env var
        .replace("s3://crm/customer", "s3:///customer"); // malformed URL
    let err = parse(&broken).unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "domains[sales].products[orders].colour",
            "domains[sales].products[orders].name",
            "domains[sales].products[orders].source.location",
            "domains[system].name",
            "domains[system].products[customer].source.location",
        ],
        "{err}"
    );
    let rendered = err.to_string();
    assert!(rendered.starts_with("/srv/mesh/mesh.yaml: 5 problems"), "{rendered}");
}

const AUTH: &str = r#"
auth:
  token_ttl_seconds: 600
  users:
    - name: alice
      password_hash: "HASH"
      groups: [analysts, europe]
      attributes: { region: EUROPE }
  service_tokens:
    - name: etl
      token_env: ETL_TOKEN
      groups: [etl]
"#;

fn parse_auth(auth: &str, env: &[(&str, &str)]) -> Result<MeshConfig, ConfigError> {
    let hash = crate::identity::hash_password("pw").unwrap();
    let yaml = format!("{VALID}{}", auth.replace("HASH", &hash));
    let mut vars: HashMap<String, String> =
        self::env().into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env = vars;
    MeshConfig::from_yaml(&yaml, Path::new(FILE), &|k| env.get(k).cloned())
}

#[test]
fn the_auth_section_defines_users_and_service_tokens() {
    let mesh = parse_auth(AUTH, &[("ETL_TOKEN", "a-long-machine-token")]).unwrap();
    assert_eq!(mesh.auth.token_ttl.as_secs(), 600);
    assert!(!mesh.auth.allow_anonymous);
    assert_eq!(mesh.auth.users[0].groups, vec!["analysts", "europe"]);
    assert_eq!(mesh.auth.users[0].attributes["region"], "EUROPE");
    let auth = crate::Authenticator::new(mesh.auth.clone());
    assert_eq!(auth.login("alice", "pw", None).unwrap().user, "alice");
    assert_eq!(auth.verify_token("a-long-machine-token").unwrap().groups, vec!["etl"]);
    assert!(!format!("{:?}", mesh.auth).contains("a-long-machine-token"));
}

#[test]
fn auth_mistakes_are_reported_with_their_path() {
    let err = parse_auth(
        &AUTH.replace("password_hash: \"HASH\"", "password_hash: hunter2"),
        &[("ETL_TOKEN", "a-long-machine-token")],
    )
    .unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].path, "auth.users[alice].password_hash");
    assert!(err.problems[0].message.contains("agora hash-password"), "{err}");

    let err = parse_auth(AUTH, &[]).unwrap_err();
    assert_eq!(err.problems[0].path, "auth.service_tokens[etl].token_env");
    assert!(err.problems[0].message.contains("'ETL_TOKEN' is not set"), "{err}");

    let err = parse_auth(AUTH, &[("ETL_TOKEN", "short")]).unwrap_err();
    assert!(err.problems[0].message.contains("at least 16 characters"), "{err}");
}

#[test]
fn attaching_a_schema_needs_a_postgres_connection_and_makes_products_optional() {
    let without = "domains:\n  - name: fin\n    description: d\n    owner: { name: F, contact: f@x }\n    attach: { schema: erp }\n";
    let p = one_problem(without);
    assert_eq!(p.path, "domains[fin].attach");
    assert!(p.message.contains("needs a `postgres:` connection"), "{}", p.message);
    let with = "domains:\n  - name: fin\n    description: d\n    owner: { name: F, contact: f@x }\n    \
                postgres: { host: db, database: erp, user: u }\n    attach: { schema: erp, exclude: [tmp] }\n";
    let config = parse(with).expect("valid");
    let domain = config.domain("fin").unwrap();
    assert_eq!(domain.attach, Some(SchemaAttachment { schema: "erp".into(), exclude: vec!["tmp".into()] }));
    assert!(domain.products.is_empty() && domain.postgres.is_some());
}

#[test]
fn lineage_takes_a_file_or_a_url() {
    let base = "domains:\n  - name: s\n    description: d\n    owner: { name: S, contact: s@x }\n    products:\n      \
                - { name: t, description: d, source: { kind: parquet, location: t } }\n";
    let config = parse(&format!("{base}lineage: {{ path: ol/events.jsonl }}\n")).expect("valid");
    let lineage = config.lineage.expect("lineage");
    assert_eq!(lineage.sink, LineageSink::File("/srv/mesh/ol/events.jsonl".into()));
    assert_eq!(lineage.namespace, "agora");
    assert_eq!(config.quality, Path::new("/srv/mesh/quality/results.jsonl"));
    let p = one_problem(&format!("{base}lineage: {{ url: ftp://x/y }}\n"));
    assert_eq!(p.path, "lineage.url");
    let p = one_problem(&format!("{base}lineage: {{ url: 'http://x', path: a.jsonl }}\n"));
    assert!(p.message.contains("not both"), "{}", p.message);
}

#[test]
fn reserved_principal_names_cannot_be_configured() {
    let err = parse_auth(
        &AUTH.replace("name: alice", "name: local").replace("name: etl", "name: agora-quality"),
        &[("ETL_TOKEN", "a-long-machine-token")],
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("auth.users[local].name") && text.contains("reserved"), "{text}");
    assert!(text.contains("auth.service_tokens[agora-quality].name"), "{text}");
}

#[test]
fn the_limits_section_sets_limits_and_group_overrides() {
    let yaml = format!(
        "{VALID}limits:\n  max_sql_bytes: 2048\n  statement_timeout_seconds: 1.5\n  max_result_rows: 10\n  \
         groups:\n    etl: {{ statement_timeout_seconds: 3600, max_queries_per_principal: 8 }}\n"
    );
    let env: HashMap<String, String> = env().into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mesh = MeshConfig::from_yaml(&yaml, Path::new(FILE), &|k| env.get(k).cloned()).unwrap();
    assert_eq!(mesh.limits.max_sql_bytes, 2048);
    assert_eq!(mesh.limits.defaults.statement_timeout, Some(std::time::Duration::from_millis(1500)));
    assert_eq!(mesh.limits.defaults.max_result_rows, Some(10));
    assert_eq!(mesh.limits.groups["etl"].max_queries_per_principal, Some(8));
    let bad = format!("{VALID}limits:\n  max_sql_bytes: -1\n  memory: 5\n  groups: {{ etl: {{ max_in_list: 3 }} }}\n");
    let err = MeshConfig::from_yaml(&bad, Path::new(FILE), &|k| env.get(k).cloned()).unwrap_err().to_string();
    assert!(err.contains("limits.max_sql_bytes") && err.contains("positive integer"), "{err}");
    assert!(err.contains("limits.memory") && err.contains("unknown key"), "{err}");
    assert!(err.contains("limits.groups.etl.max_in_list"), "{err}");
}

#[test]
fn audit_retention_and_quota_keys_are_read_and_checked() {
    let governed = |audit: &str| format!("{VALID}governance:\n  policies: policies.yaml\n  audit: {audit}\n");
    let config = parse(&governed(
        "{ path: log/a.jsonl, archive_dir: log/archive, max_age_days: 30, quota_bytes_per_minute: 1000 }",
    ))
    .unwrap();
    let audit = config.governance.unwrap().audit;
    assert_eq!(audit.archive_dir, Some(Path::new(FILE).parent().unwrap().join("log/archive")));
    assert_eq!((audit.max_age_days, audit.quota_bytes_per_minute), (Some(30), 1000));
    let defaults = parse(&governed("{ path: log/a.jsonl }")).unwrap().governance.unwrap().audit;
    assert_eq!((defaults.archive_dir, defaults.max_age_days), (None, None));
    assert_eq!(defaults.quota_bytes_per_minute, crate::config::DEFAULT_AUDIT_QUOTA_BYTES_PER_MINUTE);

    let p = one_problem(&governed("{ path: log/a.jsonl, archive_dir: log }"));
    assert_eq!(p.path, "governance.audit.archive_dir");
    let p = one_problem(&governed("{ quota_bytes_per_minute: -5 }"));
    assert_eq!(p.path, "governance.audit.quota_bytes_per_minute");
    assert!(p.message.contains("positive integer"), "{}", p.message);
}

#[test]
fn the_freshness_section_sets_both_ttls_and_checks_their_range() {
    let defaults = parse(VALID).unwrap().freshness;
    assert_eq!(defaults, crate::freshness::FreshnessConfig::default());
    assert!(defaults.listing_ttl.is_zero());

    let config = parse(&format!("{VALID}freshness: {{ listing_ttl_seconds: 30, metadata_ttl_seconds: 0 }}\n")).unwrap();
    assert_eq!(config.freshness.listing_ttl, std::time::Duration::from_secs(30));
    assert!(config.freshness.metadata_ttl.is_zero());

    let p = one_problem(&format!("{VALID}freshness: {{ listing_ttl_seconds: -1 }}\n"));
    assert_eq!(p.path, "freshness.listing_ttl_seconds");
    assert!(p.message.contains("from 0 to 86400"), "{}", p.message);
    let p = one_problem(&format!("{VALID}freshness: {{ metadata_ttl_seconds: soon }}\n"));
    assert_eq!(p.path, "freshness.metadata_ttl_seconds");
    let p = one_problem(&format!("{VALID}freshness: {{ ttl: 5 }}\n"));
    assert_eq!(p.path, "freshness.ttl");
}

#[test]
fn a_postgres_source_is_named_by_the_mesh() {
    let yaml = "domains:\n  - name: ops\n    description: d\n    owner: { name: o, contact: c }\n    \
                postgres: { host: db, database: erp, user: u }\n    products:\n      \
                - { name: open_orders, description: d, source: { kind: postgres, table: erp.orders } }\n      \
                - { name: t, description: d, source: { kind: postgres, table: \"a.b.c\" } }\n";
    let p = one_problem(yaml);
    assert_eq!(p.path, "domains[ops].products[t].source.table");
    assert!(p.message.contains("expected schema.table"), "{}", p.message);
    let config = parse(&yaml.replace("\"a.b.c\"", "plain")).unwrap();
    let Source::Postgres(source) = &config.domains[0].products[0].source else { panic!("not postgres") };
    assert_eq!((source.schema.as_str(), source.table.as_str()), ("erp", "orders"));
    assert_eq!(source.product, ("ops".to_string(), "open_orders".to_string()));
    let Source::Postgres(plain) = &config.domains[0].products[1].source else { panic!("not postgres") };
    assert_eq!((plain.schema.as_str(), plain.product.1.as_str()), ("public", "t"));
}

#[test]
fn every_problem_of_a_source_section_is_reported() {
    let broken = VALID.replace(
        "source: { kind: delta, location: \"s3://crm/customer\" }",
        "source: { kind: delta, location: \"s3://crm/customer\", colour: blue, size: 3 }",
    );
    let err = parse(&broken).unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["domains[customers].products[customer].source.colour", "domains[customers].products[customer].source.size"]
    );
    let p = one_problem(&VALID.replace("partition_columns: { year: int64 }", "partition_columns: { year: float }"));
    assert_eq!(p.path, "domains[sales].products[orders].source.partition_columns.year");
    assert!(p.message.contains("unknown partition type 'float'"), "{}", p.message);
}

#[test]
fn deeply_nested_yaml_is_one_problem_quickly() {
    let started = std::time::Instant::now();
    let p = one_problem(&format!("domains: {}", "[".repeat(100_000)));
    assert!(p.message.contains("nested deeper than 128 levels"), "{}", p.message);
    let deep = format!("{}1{}", "{a: ".repeat(100_000), "}".repeat(100_000));
    let problems = crate::contract::Contract::parse(&deep, Path::new("c.odcs.yaml"), "t").unwrap_err();
    assert!(problems[0].message.contains("nested deeper than 128 levels"), "{problems:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
}
