//! The Flight SQL server, driven by the arrow-rs Flight SQL client: auth, TLS,
//! metadata commands, statements and prepared statements.

use std::sync::Arc;

use agora_flight_server::{ServeOptions, TlsFiles, serve_on};
use arrow::array::{AsArray, BinaryArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, SqlInfo};
use futures::TryStreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::support::{demo_engine, pretty};

// How tonic renders status codes in error messages.
const UNAUTHENTICATED: &str = "The request does not have valid authentication credentials";
const NOT_FOUND: &str = "Some requested entity was not found";
const INVALID_ARGUMENT: &str = "Client specified an invalid argument";
const UNIMPLEMENTED: &str = "Operation is not implemented or not supported";

async fn start_with(options: ServeOptions) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_on(demo_engine().await, listener, options, std::future::pending()));
    addr
}

async fn connect(addr: std::net::SocketAddr) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    FlightSqlServiceClient::new(channel)
}

/// A plaintext server over the demo mesh and a client logged in as `admin`.
async fn admin_client() -> FlightSqlServiceClient<Channel> {
    let mut client = connect(start_with(ServeOptions::default()).await).await;
    client.handshake("admin", "admin-demo").await.unwrap();
    client
}

async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> (SchemaRef, Vec<RecordBatch>) {
    let schema = Arc::new(info.clone().try_decode_schema().unwrap());
    let mut batches = Vec::new();
    assert_eq!(info.endpoint.len(), 1);
    for endpoint in info.endpoint {
        assert!(endpoint.location.is_empty(), "endpoints carry no location");
        let stream = client.do_get(endpoint.ticket.unwrap()).await.unwrap();
        batches.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    for batch in &batches {
        assert_eq!(batch.schema().fields(), schema.fields(), "FlightInfo schema equals the streamed schema");
    }
    (schema, batches)
}

async fn sql(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let info = client.execute(sql.to_string(), None).await.map_err(|e| e.to_string())?;
    Ok(fetch(client, info).await.1)
}

#[tokio::test]
async fn a_cross_domain_query_over_flight_equals_the_in_process_answer() {
    let mut client = admin_client().await;
    let query = "SELECT n.n_name, count(*) AS orders, sum(o.o_totalprice) AS total \
               FROM sales.orders o JOIN customers.customer c ON o.o_custkey = c.c_custkey \
               JOIN customers.nation n ON c.c_nationkey = n.n_nationkey \
               GROUP BY n.n_name ORDER BY n.n_name";
    let batches = sql(&mut client, query).await.unwrap();
    let local = demo_engine().await.session().collect(query).await.unwrap();
    assert_eq!(pretty(&batches), pretty(&local));
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 25);
    // View types are served as plain strings by default.
    assert_eq!(batches[0].schema().field(0).data_type(), &DataType::Utf8);
}

#[tokio::test]
async fn authentication_is_required_and_checked() {
    let addr = start_with(ServeOptions::default()).await;
    let mut anonymous = connect(addr).await;
    let err = anonymous.execute("SELECT 1".to_string(), None).await.unwrap_err().to_string();
    assert!(err.contains(UNAUTHENTICATED), "{err}");

    let mut wrong = connect(addr).await;
    let err = wrong.handshake("admin", "not-the-password").await.unwrap_err().to_string();
    assert!(err.contains(UNAUTHENTICATED) && err.contains("invalid or missing credentials"), "{err}");
    let err = wrong.handshake("nobody", "admin-demo").await.unwrap_err().to_string();
    assert!(err.contains("invalid or missing credentials"), "same answer for an unknown user: {err}");

    let mut forged = connect(addr).await;
    forged.set_token("agora1.YWRtaW4:99999999999.AAAA".to_string());
    let err = forged.execute("SELECT 1".to_string(), None).await.unwrap_err().to_string();
    assert!(err.contains(UNAUTHENTICATED), "{err}");

    let mut ok = connect(addr).await;
    let token = ok.handshake("analyst", "analyst-demo").await.unwrap();
    assert!(String::from_utf8(token.to_vec()).unwrap().starts_with("agora1."));
    assert_eq!(sql(&mut ok, "SELECT 1 AS one").await.unwrap()[0].num_rows(), 1);
}

#[tokio::test]
async fn metadata_commands_describe_the_mesh() {
    let mut client = admin_client().await;

    let info = client.get_catalogs().await.unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert_eq!(batches[0].column(0).as_string::<i32>().value(0), "mesh");

    // No catalog given: no filter (as ADBC and DBeaver ask).
    let info =
        client.get_db_schemas(CommandGetDbSchemas { catalog: None, db_schema_filter_pattern: None }).await.unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    let schemas: Vec<&str> = batches[0].column(1).as_string::<i32>().iter().flatten().collect();
    // The domains, and the engine's own schema.
    assert_eq!(schemas, ["customers", "sales", "supply", "system"]);

    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("sal%".into()),
            table_name_filter_pattern: Some("ord_rs".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    let batch = &batches[0];
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(batch.column(2).as_string::<i32>().value(0), "orders");
    assert_eq!(batch.column(3).as_string::<i32>().value(0), "TABLE");
    let ipc = batch.column(4).as_any().downcast_ref::<BinaryArray>().unwrap().value(0);
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(ipc).unwrap();
    let key = schema.field_with_name("o_orderkey").unwrap();
    assert_eq!(key.metadata()["ARROW:FLIGHT:SQL:TYPE_NAME"], "BIGINT");
    assert_eq!(key.metadata()["ARROW:FLIGHT:SQL:TABLE_NAME"], "orders");
    assert_eq!(schema.field_with_name("o_comment").unwrap().data_type(), &DataType::Utf8);
    assert_eq!(schema.field_with_name("year").unwrap().data_type(), &DataType::Int64);

    let info = client.get_table_types().await.unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    let types: Vec<&str> = batches[0].column(0).as_string::<i32>().iter().flatten().collect();
    assert_eq!(types, ["SYSTEM TABLE", "TABLE"]);

    let info =
        client.get_sql_info(vec![SqlInfo::FlightSqlServerName, SqlInfo::FlightSqlServerTransaction]).await.unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert_eq!(batches[0].num_rows(), 2);

    let info = client.get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None }).await.unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    let names: Vec<&str> = batches[0].column(0).as_string::<i32>().iter().flatten().collect();
    assert!(names.contains(&"BIGINT") && names.contains(&"VARCHAR") && names.contains(&"DATE"), "{names:?}");

    let info = client
        .get_primary_keys(CommandGetPrimaryKeys { catalog: None, db_schema: None, table: "orders".into() })
        .await
        .unwrap();
    let (schema, batches) = fetch(&mut client, info).await;
    assert_eq!(schema.fields().len(), 6);
    assert_eq!(schema.field(5).data_type(), &DataType::Int32);
    // The key sales.orders' contract declares.
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
    let column: Vec<&str> = batches[0].column(3).as_string::<i32>().iter().flatten().collect();
    assert_eq!(column, ["o_orderkey"]);
}

#[tokio::test]
async fn prepared_statements_bind_positional_parameters() {
    let mut client = admin_client().await;
    for text in [
        "SELECT count(*) AS n FROM sales.orders WHERE o_custkey = $1 AND o_orderstatus = $2",
        "SELECT count(*) AS n FROM sales.orders WHERE o_custkey = ? AND o_orderstatus = ?",
    ] {
        let mut prepared = client.prepare(text.to_string(), None).await.unwrap();
        let params = prepared.parameter_schema().unwrap().clone();
        let names: Vec<&str> = params.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["$1", "$2"], "{text}");
        assert_eq!(prepared.dataset_schema().unwrap().field(0).name(), "n");

        let bind = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("$1", DataType::Int64, true),
                Field::new("$2", DataType::Utf8, true),
            ])),
            vec![Arc::new(Int64Array::from(vec![370])), Arc::new(StringArray::from(vec!["F"]))],
        )
        .unwrap();
        prepared.set_parameters(bind).unwrap();
        let info = prepared.execute().await.unwrap();
        let (_, batches) = fetch(&mut client, info).await;
        let expected = crate::support::scalar_i64(
            &demo_engine().await,
            "SELECT count(*) FROM sales.orders WHERE o_custkey = 370 AND o_orderstatus = 'F'",
        )
        .await;
        assert!(expected > 0);
        assert_eq!(batches[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0), expected);
        prepared.close().await.unwrap();
    }
}

#[tokio::test]
async fn errors_map_to_grpc_codes() {
    let mut client = admin_client().await;
    let err = sql(&mut client, "SELECT * FROM sales.nope").await.unwrap_err();
    assert!(err.contains(NOT_FOUND), "{err}");
    assert!(err.contains("no product 'nope' in domain 'sales'"), "{err}");
    let err = sql(&mut client, "SELEC 1").await.unwrap_err();
    assert!(err.contains(INVALID_ARGUMENT), "{err}");
    let err = sql(&mut client, "DROP TABLE sales.orders").await.unwrap_err();
    assert!(err.contains("read-only"), "{err}");
    let err = client.execute_update("DELETE FROM sales.orders".to_string(), None).await.unwrap_err().to_string();
    assert!(err.contains(UNIMPLEMENTED) && err.contains("read-only"), "{err}");
}

/// Writes a CA, a server certificate for 127.0.0.1 and a client certificate.
fn certificates(dir: &std::path::Path) -> (TlsFiles, Certificate, Identity) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["client".to_string()]).unwrap().signed_by(&client_key, &issuer).unwrap();

    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let files =
        TlsFiles { cert: dir.join("server.pem"), key: dir.join("server.key"), client_ca: Some(dir.join("ca.pem")) };
    (files, Certificate::from_pem(ca.pem()), Identity::from_pem(client.pem(), client_key.serialize_pem()))
}

#[tokio::test]
async fn mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (files, ca, identity) = certificates(dir.path());
    let addr = start_with(ServeOptions { tls: Some(files), ..ServeOptions::default() }).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = format!("https://localhost:{}", addr.port());

    let tls = ClientTlsConfig::new().ca_certificate(ca.clone()).domain_name("localhost").identity(identity);
    let channel = Channel::from_shared(url.clone()).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    client.handshake("admin", "admin-demo").await.unwrap();
    let batches = sql(&mut client, "SELECT count(*) AS n FROM customers.region").await.unwrap();
    assert_eq!(batches[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0), 5);

    // Without a client certificate the TLS handshake is refused.
    let tls = ClientTlsConfig::new().ca_certificate(ca).domain_name("localhost");
    let refused = async {
        let channel =
            Channel::from_shared(url).unwrap().tls_config(tls).unwrap().connect().await.map_err(|e| e.to_string())?;
        let mut client = FlightSqlServiceClient::new(channel);
        client.handshake("admin", "admin-demo").await.map(|_| ()).map_err(|e| e.to_string())
    }
    .await;
    assert!(refused.is_err(), "a client without a certificate was accepted");
}

#[tokio::test]
async fn serve_refuses_to_start_without_identities_unless_anonymous_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let demo = crate::support::demo_dir();
    crate::support::copy_dir(&demo.join("customers/region"), &dir.path().join("region"));
    let domains = "domains:\n  - name: d\n    description: x\n    owner: { name: T, contact: t@example.com }\n    products:\n      - { name: region, description: r, source: { kind: delta, location: region } }\n";
    let path = dir.path().join("mesh.yaml");

    std::fs::write(&path, domains).unwrap();
    let engine = agora_engine::Engine::open(&path).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = serve_on(engine, listener, ServeOptions::default(), std::future::pending()).await.unwrap_err();
    assert!(matches!(err, agora_flight_server::ServeError::NoIdentities), "{err}");

    std::fs::write(&path, format!("{domains}auth:\n  allow_anonymous: true\n")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_on(
        agora_engine::Engine::open(&path).await.unwrap(),
        listener,
        ServeOptions::default(),
        std::future::pending(),
    ));
    let mut client = connect(addr).await;
    let batches = sql(&mut client, "SELECT count(*) FROM d.region").await.unwrap();
    assert_eq!(batches[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0), 5);
}

/// An identity provider for tests: an ES256 key and its JWKS.
struct TestIdp {
    key: jsonwebtoken::EncodingKey,
    jwks: serde_json::Value,
}

impl TestIdp {
    fn new(kid: &str) -> Self {
        use base64::Engine as _;
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let raw = pair.public_key_raw(); // 0x04 || x || y
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }]});
        TestIdp { key, jwks }
    }

    fn token(&self, kid: &str, claims: serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

#[tokio::test]
async fn jwt_bearer_tokens_from_an_identity_provider_are_verified_and_governed() {
    let idp = TestIdp::new("k1");
    let demo = crate::support::demo_dir();
    let jwks = demo.join(format!("jwks-{}.json", std::process::id()));
    std::fs::write(&jwks, idp.jwks.to_string()).unwrap();
    let yaml = std::fs::read_to_string(demo.join("mesh.yaml")).unwrap().replace(
        "\nauth:\n",
        &format!(
            "\nauth:\n  jwt:\n    issuer: https://idp.example.com\n    audience: agora\n    jwks_file: {}\n    attribute_claims: {{ region: region }}\n",
            jwks.display()
        ),
    );
    let config = demo.join(format!("jwt-mesh-{}.yaml", std::process::id()));
    std::fs::write(&config, yaml).unwrap();
    let engine = agora_engine::Engine::open(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_on(engine.clone(), listener, ServeOptions::default(), std::future::pending()));

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = |iss: &str, aud: &str, exp: u64| serde_json::json!({"iss": iss, "aud": aud, "exp": exp, "sub": "jane", "groups": ["analysts"], "region": "EUROPE"});
    let count = "SELECT count(*) AS n FROM customers.customer";
    let mut client = connect(addr).await;
    client.set_token(idp.token("k1", claims("https://idp.example.com", "agora", now + 600)));
    let batches = sql(&mut client, count).await.unwrap();
    let over_flight = batches[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0);
    // The token's groups and attributes drive the policies: the analyst's row filter applies.
    let principal = agora_engine::Principal {
        user: "jane".into(),
        groups: vec!["analysts".into()],
        attributes: [("region".to_string(), "EUROPE".to_string())].into(),
        ..Default::default()
    };
    let local = engine.session_as(principal).collect(count).await.unwrap();
    assert_eq!(over_flight, local[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0));
    let all = engine.session().collect(count).await.unwrap();
    assert!(over_flight < all[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0));

    let other = TestIdp::new("k1");
    let refused = [
        ("wrong issuer", idp.token("k1", claims("https://evil.example.com", "agora", now + 600))),
        ("wrong audience", idp.token("k1", claims("https://idp.example.com", "other", now + 600))),
        ("expired", idp.token("k1", claims("https://idp.example.com", "agora", now - 3600))),
        ("other key, same kid", other.token("k1", claims("https://idp.example.com", "agora", now + 600))),
        ("unknown kid", idp.token("k9", claims("https://idp.example.com", "agora", now + 600))),
    ];
    // A subject that names a configured user (the demo's admin) or a
    // reserved principal would inherit its grants: refused.
    let subject = |sub: &str| {
        let mut c = claims("https://idp.example.com", "agora", now + 600);
        c["sub"] = serde_json::json!(sub);
        idp.token("k1", c)
    };
    let refused = refused.into_iter().chain([
        ("a configured user's name", subject("admin")),
        ("the local operator's name", subject("local")),
        ("an engine-internal name", subject("agora-quality")),
    ]);
    for (case, token) in refused {
        let mut client = connect(addr).await;
        client.set_token(token);
        let err = sql(&mut client, "SELECT 1").await.unwrap_err();
        assert!(err.contains(UNAUTHENTICATED), "{case}: {err}");
    }
    // A valid token without grants: authenticated, then denied by default.
    let mut client = connect(addr).await;
    let mut bare = claims("https://idp.example.com", "agora", now + 600);
    bare["groups"] = serde_json::json!([]);
    client.set_token(idp.token("k1", bare));
    let err = sql(&mut client, count).await.unwrap_err();
    assert!(err.contains("no grant on customers.customer"), "{err}");
    let _ = std::fs::remove_file(config);
    let _ = std::fs::remove_file(jwks);

    // Keys published at a URL (the provider's jwks_uri) are fetched the same way.
    let body = idp.jwks.to_string();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/.well-known/jwks.json", http.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = http.accept().await {
            let mut request = [0u8; 2048];
            let _ = socket.read(&mut request).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    let config = agora_engine::jwt::JwtConfig {
        issuer: "https://idp.example.com".into(),
        audience: "agora".into(),
        jwks: agora_engine::jwt::JwksSource::Url(url.parse().unwrap()),
        user_claim: "sub".into(),
        groups_claim: "groups".into(),
        attribute_claims: [("region".to_string(), "region".to_string())].into(),
        leeway_seconds: 0,
    };
    let verifier = agora_engine::jwt::JwtVerifier::load(config).await.unwrap();
    let principal = verifier.verify(&idp.token("k1", claims("https://idp.example.com", "agora", now + 600))).unwrap();
    assert_eq!((principal.user.as_str(), principal.attributes["region"].as_str()), ("jane", "EUROPE"));
    assert_eq!(principal.groups, ["analysts"]);
    assert!(verifier.verify(&other.token("k1", claims("https://idp.example.com", "agora", now + 600))).is_err());
}
