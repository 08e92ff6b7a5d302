//! SQL statements: ad-hoc queries (GetFlightInfo plans them to learn their
//! schema and signs a ticket, DoGet plans them again and streams them) and
//! prepared statements (created, bound with parameters, run and closed).

use std::sync::Arc;

use agora_engine::audit::Outcome;
use agora_engine::{EngineError, Query, Session};
use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt,
    TicketStatementQuery,
};
use arrow_flight::{Action, FlightData, FlightDescriptor, FlightInfo, IpcMessage, SchemaAsIpc, Ticket};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

use super::errors::status;
use super::{AgoraFlightSqlService, DoGetStream};
use crate::auth::rpc_event;
use crate::prepared::{Statement, is_empty_bind, parameter_schema, parameter_values};

impl AgoraFlightSqlService {
    /// Plans `handle`'s SQL and binds its parameters, if any.
    async fn plan(&self, session: &Session, handle: &Statement) -> Result<Query, Status> {
        let query = session.query(&handle.sql).await.map_err(status)?;
        match &handle.parameters {
            Some(batch) if !is_empty_bind(batch) => {
                let expected = match query.parameters() {
                    Ok(expected) => expected,
                    Err(e) => return Err(status(query.reject(e).await)),
                };
                match parameter_values(batch, &expected) {
                    Ok(values) => query.bind(values).map_err(status),
                    Err(refusal) => {
                        query.reject(EngineError::Sql(refusal.message().to_string())).await;
                        Err(refusal)
                    }
                }
            }
            _ => Ok(query),
        }
    }

    /// The schema clients will receive for a query planned only to tell it,
    /// and that query's end (recorded as `planned`, or as failed when even
    /// that fails).
    async fn planned_schema(&self, query: Query) -> Result<SchemaRef, Status> {
        match query.output_schema().await {
            Ok(schema) => {
                query.close().await;
                Ok(self.types.schema(&schema))
            }
            Err(e) => Err(status(query.reject(e).await)),
        }
    }

    /// Plans and streams `handle` as Flight data for the DoGet of `ticket`,
    /// which stays registered as running (for CancelFlightInfo) until the
    /// stream ends. The engine follows the query to its end (history, log
    /// line, metrics), also when the client goes away.
    async fn stream(
        &self,
        session: Session,
        handle: &Statement,
        ticket: &[u8],
    ) -> Result<Response<DoGetStream>, Status> {
        let query = self.plan(&session, handle).await?;
        let running = self.running.register(ticket, query.id());
        let batches = query.stream().await.map_err(status)?;
        let target = self.types.schema(&batches.schema());
        let types = self.types;
        let converted_target = Arc::clone(&target);
        let batches = batches.map(move |batch| {
            let _running = &running;
            let batch = batch.map_err(|e| FlightError::Tonic(Box::new(status(EngineError::from(e)))))?;
            types.batch(batch, &converted_target).map_err(FlightError::Arrow)
        });
        let flight = FlightDataEncoderBuilder::new().with_schema(target).build(batches).map_err(Status::from);
        Ok(Response::new(Box::pin(flight)))
    }

    /// GetFlightInfo of a statement: planned for its schema, answered with a signed ticket.
    pub(super) async fn statement_info(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request);
        let handle = Statement::adhoc(query.query, None);
        let planned = self.plan(&session, &handle).await?;
        let schema = self.planned_schema(planned).await?;
        let statement_handle = self.tickets.ticket(&session.principal().user, &handle.sql)?;
        let ticket = TicketStatementQuery { statement_handle: statement_handle.into() };
        // The ticket carries the SQL already: the descriptor does not repeat it
        // (an empty command, as clients refuse a descriptor without a type).
        let descriptor = FlightDescriptor::new_cmd(bytes::Bytes::new());
        let info = self.flight_info(&schema, ticket.as_any().encode_to_vec(), descriptor)?;
        Ok(Response::new(info))
    }

    /// DoGet of a statement ticket: the SQL it signs, planned and streamed.
    pub(super) async fn statement_stream(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let session = self.session(&request);
        let sql = self.tickets.open(&session.principal().user, &ticket.statement_handle)?;
        self.stream(session, &Statement::adhoc(sql, None), &request.get_ref().ticket).await
    }

    /// GetFlightInfo of a prepared statement: its schema, planned again once parameters are bound.
    pub(super) async fn prepared_info(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request);
        let handle = self.prepared.get(&session.principal().user, &query.prepared_statement_handle)?;
        let schema = match &handle.result_schema {
            // Planned when it was prepared, moments ago for most clients.
            Some(schema) if handle.parameters.is_none() => {
                self.audited(&request, "GetFlightInfo PreparedStatementQuery").await?;
                Arc::clone(schema)
            }
            _ => {
                let planned = self.plan(&session, &handle).await?;
                self.planned_schema(planned).await?
            }
        };
        let info = self.flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())?;
        Ok(Response::new(info))
    }

    /// DoGet of a prepared statement: planned with its parameters and streamed.
    pub(super) async fn prepared_stream(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let session = self.session(&request);
        let handle = self.prepared.get(&session.principal().user, &query.prepared_statement_handle)?;
        self.stream(session, &handle, &request.get_ref().ticket).await
    }

    /// CreatePreparedStatement: plans the SQL for its result and parameter schemas and keeps it.
    pub(super) async fn create_prepared(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let session = self.session(&request);
        let handle = Statement::adhoc(query.query, None);
        let planned = self.plan(&session, &handle).await?;
        let parameters = match planned.parameters() {
            Ok(parameters) => parameters,
            Err(e) => return Err(status(planned.reject(e).await)),
        };
        // With unbound parameters the physical plan cannot be built yet; the
        // logical schema is the best answer until values are bound.
        let (dataset, result_schema) = match planned.output_schema().await {
            Ok(s) => {
                let schema = self.types.schema(&s);
                (Arc::clone(&schema), parameters.is_empty().then_some(schema))
            }
            Err(_) => (self.types.schema(&planned.schema()), None),
        };
        planned.close().await;
        let prepared_statement_handle = self.prepared.create(&session.principal().user, handle.sql, result_schema)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: prepared_statement_handle.into(),
            dataset_schema: ipc_schema(&dataset)?,
            parameter_schema: ipc_schema(&parameter_schema(&parameters))?,
        })
    }

    /// DoPut of a prepared statement: binds one row of parameters, checked against the statement.
    pub(super) async fn bind_prepared(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let session = self.session(&request);
        let owner = session.principal().user.clone();
        let prepared = self.prepared.get(&owner, &query.prepared_statement_handle)?;
        let data = request.into_inner().map_err(|s| FlightError::Tonic(Box::new(s)));
        let parameters = read_parameters(data).await?;
        let handle = Statement::adhoc(prepared.sql.clone(), parameters);
        // Check the values against the statement now, so a mistake is reported
        // at bind time rather than at execution.
        self.plan(&session, &handle).await?.close().await;
        self.prepared.bind(&owner, &query.prepared_statement_handle, handle.parameters)?;
        // The handle stays the same: clients that keep the first one still work.
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(query.prepared_statement_handle) })
    }

    /// ClosePreparedStatement: forgets the caller's handle.
    pub(super) async fn close_prepared(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let session = self.session(&request);
        if self.prepared.close(&session.principal().user, &query.prepared_statement_handle) {
            self.audited(&request, "ClosePreparedStatement").await
        } else {
            // Nothing of the caller's was closed: answered as success (clients
            // close handles twice), recorded as refused. (Refusals that reach
            // the client are recorded by the auth layer.)
            let principal = session.principal();
            let outcome = Outcome::Denied("no such prepared statement".into());
            let client = request.remote_addr().map(|a| a.to_string());
            let event = rpc_event("ClosePreparedStatement", (&principal.user, &principal.groups), client, outcome);
            let _ = self.engine.record_event(event).await;
            Ok(())
        }
    }
}

/// Reads a bound parameter row from a DoPut stream. The client's IPC is
/// decoded in a task of its own, so that a decoder panic on malformed input
/// fails this request only, and a stream of more than a few batches is refused.
async fn read_parameters(
    data: impl Stream<Item = Result<FlightData, FlightError>> + Send + 'static,
) -> Result<Option<RecordBatch>, Status> {
    const MAX_BATCHES: usize = 16;
    let decode = tokio::spawn(async move {
        let mut stream = FlightRecordBatchStream::new_from_flight_data(data);
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| Status::invalid_argument(format!("cannot read the parameters: {e}")))?;
            if !is_empty_bind(&batch) {
                batches.push(batch);
            }
            if batches.len() > MAX_BATCHES {
                break;
            }
        }
        Ok::<_, Status>(batches)
    });
    let batches = match decode.await {
        Ok(result) => result?,
        Err(e) if e.is_panic() => {
            tracing::warn!("malformed parameter data made the Arrow decoder panic; the request was refused");
            return Err(Status::invalid_argument("cannot read the parameters: malformed Arrow IPC data"));
        }
        Err(_) => return Err(Status::cancelled("the parameter upload was cancelled")),
    };
    match batches.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => Err(Status::invalid_argument("bind exactly one row of parameters to a query")),
    }
}

/// `schema` as Arrow IPC bytes, as prepared statements describe their schemas.
fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(format!("cannot encode schema: {e}")))?;
    Ok(message.0)
}
