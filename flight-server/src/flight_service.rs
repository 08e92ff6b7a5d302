//! The Flight service Agora serves: the Flight SQL service, plus the plain
//! Flight methods arrow-flight's Flight SQL layer leaves unimplemented.
//!
//! arrow-flight implements [`FlightService`] for every [`FlightSqlService`]
//! and answers `GetSchema`, `ListFlights` and `PollFlightInfo` with
//! "Not yet implemented", without a hook to override them. Generic Flight
//! clients call them (`pyarrow.flight`'s `get_schema` and `list_flights`,
//! ADBC's incremental execution uses `PollFlightInfo`), so this wrapper
//! answers them and hands every other method to the Flight SQL service
//! unchanged.

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo, SchemaResult, Ticket,
};
use tonic::{Request, Response, Status, Streaming};

use crate::service::AgoraFlightSqlService;

type Sql = AgoraFlightSqlService;

/// [`AgoraFlightSqlService`] with `GetSchema`, `ListFlights` and
/// `PollFlightInfo` answered.
pub struct AgoraFlightService {
    sql: AgoraFlightSqlService,
}

impl AgoraFlightService {
    /// Wraps the Flight SQL service.
    pub fn new(sql: AgoraFlightSqlService) -> Self {
        AgoraFlightService { sql }
    }
}

#[tonic::async_trait]
impl FlightService for AgoraFlightService {
    type HandshakeStream = <Sql as FlightService>::HandshakeStream;
    type ListFlightsStream = <Sql as FlightService>::ListFlightsStream;
    type DoGetStream = <Sql as FlightService>::DoGetStream;
    type DoPutStream = <Sql as FlightService>::DoPutStream;
    type DoActionStream = <Sql as FlightService>::DoActionStream;
    type ListActionsStream = <Sql as FlightService>::ListActionsStream;
    type DoExchangeStream = <Sql as FlightService>::DoExchangeStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        FlightService::handshake(&self.sql, request).await
    }

    /// A Flight SQL server has no standing flights: results are made per
    /// command. The answer is an empty list (recorded like any request).
    async fn list_flights(&self, request: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.sql.audited(&request, "ListFlights").await?;
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn get_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        FlightService::get_flight_info(&self.sql, request).await
    }

    /// Queries are planned when asked and run when their ticket is read, so
    /// a poll is complete at once: its `FlightInfo` is GetFlightInfo's and
    /// there is nothing further to poll.
    async fn poll_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        let info = FlightService::get_flight_info(&self.sql, request).await?.into_inner();
        Ok(Response::new(PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        }))
    }

    /// The schema GetFlightInfo would give for the same descriptor (a
    /// statement, a prepared statement or a metadata command), planned the
    /// same way, under the same policies, and recorded the same way.
    async fn get_schema(&self, request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        let info = FlightService::get_flight_info(&self.sql, request).await?.into_inner();
        Ok(Response::new(SchemaResult { schema: info.schema }))
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        FlightService::do_get(&self.sql, request).await
    }

    async fn do_put(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(&self.sql, request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        FlightService::do_exchange(&self.sql, request).await
    }

    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        FlightService::do_action(&self.sql, request).await
    }

    async fn list_actions(&self, request: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(&self.sql, request).await
    }
}
