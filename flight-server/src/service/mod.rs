//! The Flight SQL service over an [`Engine`].
//!
//! GetFlightInfo plans the query to learn its schema and DoGet plans it again
//! and streams it, batch by batch, so nothing is buffered. Statement tickets
//! are signed and prepared statements are kept server-side (see
//! [`crate::prepared`]): nothing a client sends back is decoded as a structure.
//!
//! The service's state lives here; each Flight SQL command family is served
//! by a file of its own, which the one `FlightSqlService` impl
//! (`flight_sql.rs`) delegates to: logins (`login`), statements and prepared
//! statements (`statements`), the catalogue listings (`catalog`), the
//! server's description (`sql_info`), keys (`keys`), actions such as cancels
//! and sessions (`actions`), and how errors become gRPC statuses (`errors`).

use std::pin::Pin;
use std::sync::Arc;

use agora_engine::{Authenticator, Engine, Principal, Session};
use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::ProstMessageExt;
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::cancel::RunningTickets;
use crate::prepared::{PreparedStore, StoreLimits, TicketSigner};
use crate::session_options::{SessionLimits, SessionStore, session_id};
use crate::types::TypePolicy;

mod actions;
mod catalog;
mod errors;
mod flight_sql;
mod keys;
mod login;
mod sql_info;
mod statements;

use errors::status;

/// Serves an [`Engine`] to Flight SQL clients, each request as its principal.
pub struct AgoraFlightSqlService {
    engine: Engine,
    auth: Arc<Authenticator>,
    types: TypePolicy,
    prepared: PreparedStore,
    tickets: TicketSigner,
    /// The tickets DoGet is streaming, for cancels by FlightInfo.
    running: Arc<RunningTickets>,
    /// Flight SQL sessions (their options), by cookie.
    sessions: SessionStore,
    /// Password checks running at once: argon2 costs tens of milliseconds of
    /// CPU each, so a flood of logins queues here instead of taking every core.
    logins: Arc<tokio::sync::Semaphore>,
}

impl AgoraFlightSqlService {
    /// Wraps an engine. `auth` answers Handshakes; requests reaching the service
    /// are expected to carry a [`Principal`] from [`crate::auth::AuthLayer`].
    pub fn new(engine: Engine, auth: Arc<Authenticator>, types: TypePolicy) -> Result<Self, String> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Ok(AgoraFlightSqlService {
            engine,
            auth,
            types,
            prepared: PreparedStore::new(StoreLimits::default()),
            tickets: TicketSigner::new()?,
            running: Arc::default(),
            sessions: SessionStore::new(SessionLimits::default()),
            logins: Arc::new(tokio::sync::Semaphore::new(cores.div_ceil(2).max(1))),
        })
    }

    /// The engine session a request runs in: its principal (from the auth
    /// layer), its Flight SQL session's options, its client, purpose and trace.
    pub(super) fn session<T>(&self, request: &Request<T>) -> Session {
        let principal = request.extensions().get::<Principal>().cloned().unwrap_or_else(Principal::anonymous);
        let settings = session_id(request.metadata()).and_then(|id| self.sessions.settings(&id, &principal.user));
        let mut session = self.engine.session_as(principal).with_protocol("flight-sql");
        // A schema the principal may no longer see (policies changed) is
        // dropped: unqualified names are then refused, never read elsewhere.
        if let Some(schema) = settings.and_then(|s| s.schema) {
            session = match session.clone().with_default_schema(&schema) {
                Ok(with_schema) => with_schema,
                Err(_) => session,
            };
        }
        if let Some(addr) = request.remote_addr() {
            session = session.with_client(addr.to_string());
        }
        let header = |name: &str| request.metadata().get(name).and_then(|v| v.to_str().ok());
        if let Some(purpose) = header("x-agora-purpose") {
            session = session.with_purpose(purpose);
        }
        // The trace of the request's span when traces are exported (it
        // continues the client's `traceparent`), else the client's.
        if let Some(trace) = crate::telemetry::trace_id(&tracing::Span::current()) {
            session = session.with_trace_id(&trace);
        } else if let Some(traceparent) = header("traceparent") {
            session = session.with_traceparent(traceparent);
        }
        session
    }

    /// Records a request that is not a query before serving it; it is
    /// refused when it cannot be recorded (log unwritable, audit quota).
    pub(crate) async fn audited<T>(&self, request: &Request<T>, action: &str) -> Result<(), Status> {
        self.session(request).record_request(action).await.map_err(status)
    }

    /// The FlightInfo of a result with `schema`, fetched with `ticket`.
    pub(super) fn flight_info(
        &self,
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("cannot encode the result schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor))
    }

    /// The FlightInfo of a metadata command, once the request is recorded as
    /// `action`: its schema and a ticket that is the command itself, so DoGet
    /// dispatches back to the matching `do_get_*`.
    pub(super) async fn metadata_info(
        &self,
        request: Request<FlightDescriptor>,
        action: &str,
        schema: &Schema,
        command: &impl ProstMessageExt,
    ) -> Result<Response<FlightInfo>, Status> {
        self.audited(&request, action).await?;
        Ok(Response::new(self.flight_info(schema, command.as_any().encode_to_vec(), request.into_inner())?))
    }

    /// Streams a metadata result built by one of arrow-flight's builders.
    pub(super) fn built<E: std::fmt::Display>(
        &self,
        schema: SchemaRef,
        batch: Result<RecordBatch, E>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = batch.map_err(|e| Status::internal(format!("cannot build the metadata result: {e}")))?;
        Ok(self.batch_stream(schema, batch))
    }

    /// Streams one batch as a DoGet answer.
    pub(super) fn batch_stream(&self, schema: SchemaRef, batch: RecordBatch) -> Response<DoGetStream> {
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { Ok(batch) }))
            .map_err(Status::from);
        Response::new(Box::pin(flight))
    }
}

/// What DoGet answers: Flight data, batch by batch.
pub(super) type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;
