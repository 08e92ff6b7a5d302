//! The Flight SQL server answers like the in-process engine.

use agora_flight_server::serve_on;
use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::Channel;

use crate::support::{demo_engine, pretty};

/// Starts a server over the demo mesh on a free loopback port.
async fn start() -> FlightSqlServiceClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_on(demo_engine(), listener, std::future::pending()));
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    FlightSqlServiceClient::new(channel)
}

async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<(arrow::datatypes::SchemaRef, Vec<RecordBatch>), tonic::Status> {
    let info = client.execute(sql.to_string(), None).await.map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let schema = std::sync::Arc::new(info.clone().try_decode_schema().unwrap());
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        assert!(endpoint.location.is_empty(), "endpoints carry no location");
        let ticket = endpoint.ticket.unwrap();
        let stream = client.do_get(ticket).await.map_err(|e| tonic::Status::unknown(e.to_string()))?;
        batches.extend(stream.try_collect::<Vec<_>>().await.map_err(|e| tonic::Status::unknown(e.to_string()))?);
    }
    Ok((schema, batches))
}

#[tokio::test]
async fn a_cross_domain_query_over_flight_equals_the_in_process_answer() {
    let mut client = start().await;
    let sql = "SELECT n.n_name, count(*) AS orders, sum(o.o_totalprice) AS total \
               FROM sales.orders o JOIN customers.customer c ON o.o_custkey = c.c_custkey \
               JOIN customers.nation n ON c.c_nationkey = n.n_nationkey \
               GROUP BY n.n_name ORDER BY n.n_name";
    let (schema, batches) = fetch(&mut client, sql).await.unwrap();
    let local = demo_engine().session().collect(sql).await.unwrap();
    assert_eq!(pretty(&batches), pretty(&local));
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 25);
    for batch in &batches {
        assert_eq!(batch.schema().fields(), schema.fields(), "FlightInfo schema equals the streamed schema");
    }
}

#[tokio::test]
async fn errors_map_to_grpc_codes() {
    let mut client = start().await;
    let err = fetch(&mut client, "SELECT * FROM sales.nope").await.unwrap_err();
    assert!(err.message().contains("no product 'nope' in domain 'sales'"), "{err}");
    let err = fetch(&mut client, "SELEC 1").await.unwrap_err();
    assert!(err.message().contains("InvalidArgument") || err.message().contains("invalid argument"), "{err}");
}
