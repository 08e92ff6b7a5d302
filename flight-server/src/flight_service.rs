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
use arrow_flight::sql::Any;
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo, SchemaResult, Ticket,
};
use futures::StreamExt;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::service::AgoraFlightSqlService;

type Sql = AgoraFlightSqlService;

/// The Flight SQL action that prepares a statement (arrow-flight keeps its
/// own constant private).
const CREATE_PREPARED_STATEMENT: &str = "CreatePreparedStatement";

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

    /// Every action goes to the Flight SQL service; a prepared statement's
    /// result also says it is not an update (see [`mark_not_update`]).
    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        let prepares = request.get_ref().r#type == CREATE_PREPARED_STATEMENT;
        let response = FlightService::do_action(&self.sql, request).await?;
        if !prepares {
            return Ok(response);
        }
        let (metadata, stream, extensions) = response.into_parts();
        let marked: Self::DoActionStream = Box::pin(stream.map(|result| result.map(mark_not_update)));
        Ok(Response::from_parts(metadata, marked, extensions))
    }

    async fn list_actions(&self, request: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(&self.sql, request).await
    }
}

/// `is_update = false` (field 4 of `ActionCreatePreparedStatementResult`,
/// apache/arrow#49498), which arrow-flight 59's generated code does not have:
/// Agora serves only queries, and drivers that read the flag (the JDBC driver
/// since arrow-java#1064) then take the query path without guessing from the
/// dataset schema. Older clients skip the unknown field.
fn mark_not_update(mut result: arrow_flight::Result) -> arrow_flight::Result {
    let Ok(mut any) = Any::decode(result.body.clone()) else { return result };
    if !any.type_url.ends_with("ActionCreatePreparedStatementResult") {
        return result;
    }
    // Field 4, varint: tag (4 << 3 | 0), value 0.
    let mut value = any.value.to_vec();
    value.extend_from_slice(&[0x20, 0x00]);
    any.value = value.into();
    result.body = any.encode_to_vec().into();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::sql::{ActionCreatePreparedStatementResult, ProstMessageExt};

    #[test]
    fn a_prepared_statement_result_says_it_is_not_an_update_and_still_decodes() {
        let prepared = ActionCreatePreparedStatementResult {
            prepared_statement_handle: b"handle".to_vec().into(),
            dataset_schema: b"schema".to_vec().into(),
            parameter_schema: Default::default(),
        };
        let body = prepared.as_any().encode_to_vec();
        let marked = mark_not_update(arrow_flight::Result { body: body.into() });
        let any = Any::decode(marked.body).unwrap();
        assert!(any.value.ends_with(&[0x20, 0x00]));
        // A decoder without field 4 reads the same message.
        let decoded: ActionCreatePreparedStatementResult = any.unpack().unwrap().unwrap();
        assert_eq!(decoded, prepared);
        // Other results pass unchanged.
        let other = arrow_flight::Result { body: b"not an Any".to_vec().into() };
        assert_eq!(mark_not_update(other.clone()), other);
    }
}
