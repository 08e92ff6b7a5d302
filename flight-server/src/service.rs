//! The Flight SQL service: statement queries planned by GetFlightInfo and streamed
//! by DoGet.

use std::pin::Pin;

use agora_engine::{Engine, EngineError};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

/// Serves an [`Engine`] to Flight SQL clients.
///
/// Statement handles carry the SQL itself, so any server instance can answer a
/// DoGet for a FlightInfo another one planned.
pub struct AgoraFlightSqlService {
    engine: Engine,
}

impl AgoraFlightSqlService {
    /// Wraps an engine.
    pub fn new(engine: Engine) -> Self {
        AgoraFlightSqlService { engine }
    }
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>>;

/// Maps engine errors onto gRPC codes: a user's mistake is never `Internal`.
pub(crate) fn status(err: EngineError) -> Status {
    let message = err.to_string();
    match err {
        EngineError::Sql(_) | EngineError::Config(_) => Status::invalid_argument(message),
        EngineError::NotFound(_) => Status::not_found(message),
        EngineError::ReadOnly(_) => Status::invalid_argument(message),
        EngineError::ProductUnavailable { .. } => Status::unavailable(message),
        EngineError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        EngineError::Execution(_) => Status::internal(message),
    }
}

#[tonic::async_trait]
impl FlightSqlService for AgoraFlightSqlService {
    type FlightService = AgoraFlightSqlService;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.engine.session();
        let planned = session.query(&query.query).await.map_err(status)?;
        let schema = planned.schema();
        let ticket = TicketStatementQuery { statement_handle: query.query.into_bytes().into() };
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("cannot encode the result schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("statement handle is not UTF-8 SQL"))?;
        let stream = self.engine.session().sql(&sql).await.map_err(status)?;
        let schema = stream.schema();
        let batches = stream.map_err(|e| FlightError::Tonic(Box::new(status(EngineError::from(e)))));
        let flight = FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(Status::from);
        let stream: DoGetStream = Box::pin(flight);
        Ok(Response::new(stream))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
