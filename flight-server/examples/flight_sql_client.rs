//! The arrow-rs Flight SQL client (`arrow_flight::sql::client`) against an
//! Agora server: the Rust row of the compatibility matrix in
//! `docs/clients.md`, and a worked example of the calls a Rust service makes.
//!
//! ```sh
//! cargo run --example flight_sql_client -- grpc://127.0.0.1:50051 analyst analyst-demo <token>
//! ```
//!
//! It runs the scenario of `tests/clients/scenario.py` and prints one JSON
//! line: for each step the value it returned or the error it raised
//! (`tests/python/test_clients.py` judges them).

use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables};
use futures::TryStreamExt;
use serde_json::{Value, json};
use tonic::transport::Channel;

type Client = FlightSqlServiceClient<Channel>;
type Outcome = Result<Value, Box<dyn std::error::Error>>;

const PING: &str = "SELECT 1 AS one";
const PARAMETERISED: &str = "SELECT n_name FROM customers.nation WHERE n_nationkey = ?";
const MILLION: &str = "SELECT value FROM generate_series(1, 1000000)";
const BAD: &str = "SELEC 1";

/// A channel to the server (`grpc://` becomes `http://`: no TLS).
async fn channel(uri: &str) -> Result<Channel, Box<dyn std::error::Error>> {
    let endpoint = uri.replacen("grpc://", "http://", 1).replacen("grpc+tls://", "https://", 1);
    Ok(Channel::from_shared(endpoint)?.connect().await?)
}

/// Every batch behind a FlightInfo, read from its endpoints in order.
async fn fetch(client: &mut Client, info: FlightInfo) -> Result<Vec<RecordBatch>, Box<dyn std::error::Error>> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.ok_or("an endpoint without a ticket")?;
        batches.extend(client.do_get(ticket).await?.try_collect::<Vec<_>>().await?);
    }
    Ok(batches)
}

/// The values of a batch's one string-like or integer column, as JSON.
fn column(batches: &[RecordBatch], name: &str) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let mut values = Vec::new();
    for batch in batches {
        let array = batch.column_by_name(name).ok_or_else(|| format!("no column {name}"))?;
        let array = arrow::compute::cast(array, &DataType::Utf8)?;
        let strings = array.as_any().downcast_ref::<arrow::array::StringArray>().ok_or("not a string column")?;
        values.extend(strings.iter().map(|v| v.map_or(Value::Null, |s| json!(s))));
    }
    Ok(values)
}

/// Rows of a one-column result as `[[value], …]`, integers as numbers.
fn rows(batches: &[RecordBatch], name: &str) -> Outcome {
    let values = column(batches, name)?;
    let row = |v: Value| match v.as_str().and_then(|s| s.parse::<i64>().ok()) {
        Some(n) => json!([n]),
        None => json!([v]),
    };
    Ok(Value::Array(values.into_iter().map(row).collect()))
}

/// Logs in and runs one statement: the part `docs/clients.md` shows
/// (`tests/python/test_docs_snippets.py` checks that it is this text).
async fn log_in_and_query(
    uri: &str,
    user: &str,
    password: &str,
    sql: &str,
) -> Result<(Client, Vec<RecordBatch>), Box<dyn std::error::Error>> {
    // docs:start
    let channel = Channel::from_shared(uri.replacen("grpc://", "http://", 1))?.connect().await?;
    let mut client = FlightSqlServiceClient::new(channel);
    client.handshake(user, password).await?; // keeps the bearer token for the next calls
    let info = client.execute(sql.to_string(), None).await?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.ok_or("an endpoint without a ticket")?;
        batches.extend(client.do_get(ticket).await?.try_collect::<Vec<_>>().await?);
    }
    // docs:end
    Ok((client, batches))
}

async fn ping(client: &mut Client) -> Outcome {
    let info = client.execute(PING.into(), None).await?;
    rows(&fetch(client, info).await?, "one")
}

/// The nation named by `key`, through one prepared statement re-bound.
async fn nation(
    statement: &mut arrow_flight::sql::client::PreparedStatement<Channel>,
    client: &mut Client,
    key: i64,
) -> Outcome {
    let schema = Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, false)]));
    statement.set_parameters(RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![key]))])?)?;
    let info = statement.execute().await?;
    rows(&fetch(client, info).await?, "n_name")
}

async fn scenario(uri: &str, user: &str, password: &str, token: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let mut out = serde_json::Map::new();
    let mut record = |step: &str, outcome: Outcome| {
        let entry = match outcome {
            Ok(value) => json!({ "value": value }),
            Err(error) => json!({ "error": error.to_string() }),
        };
        out.insert(step.to_string(), entry);
    };

    let (mut client, batches) = match log_in_and_query(uri, user, password, PING).await {
        Ok(logged_in) => logged_in,
        Err(e) => {
            // Nothing else can run without a login.
            record("login_password", Err(e));
            return Ok(Value::Object(out));
        }
    };
    record("login_password", rows(&batches, "one"));
    let mut with_token = FlightSqlServiceClient::new(channel(uri).await?);
    with_token.set_token(token.to_string());
    record("login_token", ping(&mut with_token).await);

    let schemas = async {
        let request = CommandGetDbSchemas { catalog: None, db_schema_filter_pattern: None };
        let info = client.get_db_schemas(request).await?;
        Outcome::Ok(Value::Array(column(&fetch(&mut client, info).await?, "db_schema_name")?))
    };
    record("schemas", schemas.await);
    let tables = async {
        let request = CommandGetTables { db_schema_filter_pattern: Some("customers".into()), ..Default::default() };
        let info = client.get_tables(request).await?;
        Outcome::Ok(Value::Array(column(&fetch(&mut client, info).await?, "table_name")?))
    };
    record("tables", tables.await);
    let columns = async {
        let request = CommandGetTables {
            db_schema_filter_pattern: Some("customers".into()),
            table_name_filter_pattern: Some("nation".into()),
            include_schema: true,
            ..Default::default()
        };
        let info = client.get_tables(request).await?;
        let batches = fetch(&mut client, info).await?;
        let batch = batches.first().ok_or("no table")?;
        let schemas = batch.column_by_name("table_schema").ok_or("no table_schema")?;
        let schemas =
            schemas.as_any().downcast_ref::<arrow::array::BinaryArray>().ok_or("table_schema is not binary")?;
        let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(schemas.value(0))?;
        Outcome::Ok(json!(schema.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>()))
    };
    record("columns", columns.await);

    let mut statement = client.prepare(PARAMETERISED.into(), None).await;
    match &mut statement {
        Ok(statement) => {
            record("parameterised", nation(statement, &mut client, 7).await);
            record("prepared_again", nation(statement, &mut client, 8).await);
        }
        Err(e) => {
            record("parameterised", Err(e.to_string().into()));
            record("prepared_again", Err(e.to_string().into()));
        }
    }
    if let Ok(statement) = statement {
        // Closing is the client's courtesy; a failure does not change the report.
        let _ = statement.close().await;
    }

    let million = async {
        let info = client.execute(MILLION.into(), None).await?;
        let batches = fetch(&mut client, info).await?;
        Outcome::Ok(json!(batches.iter().map(|b| b.num_rows()).sum::<usize>()))
    };
    record("million", million.await);
    let bad = async {
        let info = client.execute(BAD.into(), None).await?;
        fetch(&mut client, info).await?;
        Outcome::Ok(json!("no error"))
    };
    record("bad_query", bad.await);
    Ok(Value::Object(out))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let [uri, user, password, token] = arguments.as_slice() else {
        return Err("usage: flight_sql_client <grpc://host:port> <user> <password> <token>".into());
    };
    println!("{}", scenario(uri, user, password, token).await?);
    Ok(())
}
