//! The Flight SQL service over an [`Engine`].
//!
//! GetFlightInfo plans the query to learn its schema and DoGet plans it again
//! and streams it, batch by batch, so nothing is buffered. Statement tickets
//! are signed and prepared statements are kept server-side (see
//! [`crate::prepared`]): nothing a client sends back is decoded as a structure.

use std::pin::Pin;
use std::sync::Arc;

use agora_engine::{CATALOG, Engine, EngineError, Principal, ProductRef, Query, Session};
use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData, FlightDescriptor,
    FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Credentials, credentials, recorded, rpc_event, unauthenticated};
use crate::cancel::RunningTickets;
use crate::keys;
use crate::metadata::{SQL_INFO, XDBC_TYPES, foreign_keys_schema, primary_keys_schema, table_schema_with_metadata};
use crate::pattern::NamePattern;
use crate::prepared::{
    PreparedStore, Statement, StoreLimits, TicketSigner, is_empty_bind, parameter_schema, parameter_values,
};
use crate::session_options::{SessionLimits, SessionStore, SetSessionOptionsRequest, session_id};
use crate::types::TypePolicy;
use agora_engine::audit::{Outcome, RequestEvent, RequestKind};
use agora_engine::{AuthError, Authenticator};

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

    /// Checks a password off the network threads, at most a few at a time.
    async fn login(
        &self,
        user: String,
        password: String,
        client: Option<std::net::SocketAddr>,
    ) -> Result<Principal, Status> {
        let address = client.map(|a| a.ip());
        let _permit =
            tokio::time::timeout(std::time::Duration::from_secs(10), Arc::clone(&self.logins).acquire_owned())
                .await
                .map_err(|_| Status::unavailable("the server is busy checking logins; retry shortly"))?
                .map_err(|_| Status::unavailable("the server is shutting down"))?;
        let auth = Arc::clone(&self.auth);
        let name = user.clone();
        let outcome = tokio::task::spawn_blocking(move || auth.login(&name, &password, address))
            .await
            .map_err(|_| Status::internal("the login check failed unexpectedly"))?;
        let login = |user: &str, groups: Vec<String>, outcome: Outcome| RequestEvent {
            kind: RequestKind::Login,
            action: "Handshake".into(),
            user: user.to_string(),
            groups,
            client: client.map(|a| a.to_string()),
            outcome,
        };
        match outcome {
            Ok(principal) => {
                tracing::info!(principal = ?principal.user, "login");
                crate::ops::metrics::record_login("ok");
                // A login that cannot be recorded does not succeed.
                let event = login(&principal.user, principal.groups.clone(), Outcome::Ok);
                self.engine.record_event(event).await.map_err(status)?;
                Ok(principal)
            }
            Err(e @ AuthError::LockedOut { .. }) => {
                tracing::warn!(user = ?user, address = ?address, "login refused: locked out");
                crate::ops::metrics::record_login("locked_out");
                let _ = self.engine.record_event(login(&user, Vec::new(), Outcome::Denied(e.to_string()))).await;
                Err(recorded(Status::resource_exhausted(e.to_string())))
            }
            Err(_) => {
                tracing::warn!(user = ?user, address = ?address, "login refused");
                crate::ops::metrics::record_login("wrong_credentials");
                let reason = Outcome::Denied("wrong user name or password".into());
                let _ = self.engine.record_event(login(&user, Vec::new(), reason)).await;
                Err(recorded(unauthenticated()))
            }
        }
    }

    fn session<T>(&self, request: &Request<T>) -> Session {
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

    /// `SetSessionOptions`, `GetSessionOptions` and `CloseSession` (see
    /// [`crate::session_options`]), audited under their names.
    async fn session_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let action = request.get_ref().r#type.clone();
        self.audited(&request, &action).await?;
        let session = self.session(&request);
        let owner = session.principal().user.clone();
        let id = session_id(request.metadata());
        let mut cookie = None;
        let body = match action.as_str() {
            "SetSessionOptions" => {
                crate::session_options::refuse_anonymous(&owner)?;
                let options = SetSessionOptionsRequest::decode(request.get_ref().body.clone()).map_err(|_| {
                    Status::invalid_argument("SetSessionOptions: the body is not a SetSessionOptionsRequest")
                })?;
                let outcome = self.sessions.set(id.as_deref(), &owner, options, &session.schemas())?;
                cookie = outcome.opened.map(|id| format!("{}={id}", crate::session_options::COOKIE));
                outcome.result.encode_to_vec()
            }
            "GetSessionOptions" => self.sessions.get(id.as_deref(), &owner, &session.schemas()).encode_to_vec(),
            _ => {
                let closed = self.sessions.close(id.as_deref(), &owner)?;
                cookie = Some(format!("{}=; Max-Age=0", crate::session_options::COOKIE));
                closed.encode_to_vec()
            }
        };
        let result = arrow_flight::Result { body: body.into() };
        let mut response: Response<<Self as FlightService>::DoActionStream> =
            Response::new(Box::pin(futures::stream::once(async move { Ok(result) })));
        if let Some(cookie) = cookie {
            let value = MetadataValue::try_from(cookie)
                .map_err(|_| Status::internal("a session cookie is not a valid header value"))?;
            response.metadata_mut().insert("set-cookie", value);
        }
        Ok(response)
    }

    /// Cancels the queries streaming under `info`'s tickets through `CALL
    /// cancel_query` as the requesting principal (see [`crate::cancel`]).
    async fn cancel_flight_info(
        &self,
        request: &Request<Action>,
        action: &str,
        info: FlightInfo,
    ) -> Result<(), Status> {
        self.audited(request, action).await?;
        let ids: Vec<String> = info
            .endpoint
            .iter()
            .filter_map(|e| e.ticket.as_ref())
            .flat_map(|t| self.running.running(&t.ticket))
            .collect();
        let session = self.session(request);
        let mut cancelled = false;
        for id in ids {
            // The id is one the engine made (a UUID), never client text.
            match session.collect(&format!("CALL cancel_query('{id}')")).await {
                Ok(_) => cancelled = true,
                Err(EngineError::NotFound(_)) => {}
                Err(e) => return Err(status(e)),
            }
        }
        if cancelled { Ok(()) } else { Err(crate::cancel::nothing_running()) }
    }

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

    fn flight_info(
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

    /// The FlightInfo of a metadata command: its schema and a ticket that is the
    /// command itself, so DoGet dispatches back to the matching `do_get_*`.
    fn command_info(
        &self,
        schema: &Schema,
        command: &impl ProstMessageExt,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(Response::new(self.flight_info(schema, command.as_any().encode_to_vec(), request.into_inner())?))
    }

    /// Streams a metadata result built by one of arrow-flight's builders.
    fn built<E: std::fmt::Display>(
        &self,
        schema: SchemaRef,
        batch: Result<RecordBatch, E>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = batch.map_err(|e| Status::internal(format!("cannot build the metadata result: {e}")))?;
        Ok(self.batch_stream(schema, batch))
    }

    fn batch_stream(&self, schema: SchemaRef, batch: RecordBatch) -> Response<DoGetStream> {
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { Ok(batch) }))
            .map_err(Status::from);
        Response::new(Box::pin(flight))
    }

    /// Builds the GetTables answer: only products the patterns can match are
    /// opened, and only when their schemas are asked for.
    async fn tables(
        &self,
        session: &Session,
        mut query: CommandGetTables,
        case: TableTypeCase,
    ) -> Result<RecordBatch, Status> {
        let catalog_ok = query.catalog.as_deref().is_none_or(|c| c == CATALOG);
        let schema_pattern = pattern(query.db_schema_filter_pattern.as_deref(), "db_schema_filter_pattern")?;
        let table_pattern = pattern(query.table_name_filter_pattern.as_deref(), "table_name_filter_pattern")?;
        // Table types are compared without case: clients send them as they
        // expect them back. `BASE TABLE` (SQL's information_schema name, which
        // Grafana's Flight SQL data source asks for) is a product too.
        let wanted = |kind: &str| {
            query.table_types.is_empty()
                || query.table_types.iter().any(|t| {
                    t.eq_ignore_ascii_case(kind) || (kind == TABLE_TYPE && t.eq_ignore_ascii_case(BASE_TABLE_TYPE))
                })
        };
        let (products_wanted, system_wanted) = (wanted(TABLE_TYPE), wanted(SYSTEM_TABLE_TYPE));
        let include_schema = query.include_schema;
        // The patterns are applied here, once, by the bounded matcher.
        query.db_schema_filter_pattern = None;
        query.table_name_filter_pattern = None;
        query.table_types.clear();
        let mut builder = query.into_builder();
        if !catalog_ok {
            return builder.build().map_err(|e| Status::internal(e.to_string()));
        }
        // Only what the principal may read is listed, with its readable
        // columns: products, then the engine's own `system` tables.
        for domain in session.schemas() {
            let system = domain == "system";
            if !(if system { system_wanted } else { products_wanted })
                || !schema_pattern.as_ref().is_none_or(|p| p.matches(&domain))
            {
                continue;
            }
            let kind = case.apply(if system { SYSTEM_TABLE_TYPE } else { TABLE_TYPE });
            for product in session.products(&domain) {
                if !table_pattern.as_ref().is_none_or(|p| p.matches(&product)) {
                    continue;
                }
                let schema = if include_schema {
                    match session.product_schema(&ProductRef::new(&domain, &product)).await {
                        Ok(s) => {
                            let remarks = session.product_remarks(&ProductRef::new(&domain, &product));
                            table_schema_with_metadata(
                                &self.types.schema(&s),
                                CATALOG,
                                &domain,
                                &product,
                                remarks.as_ref(),
                            )
                        }
                        Err(e) => {
                            tracing::warn!(product = %format!("{domain}.{product}"), error = %e, "left out of GetTables");
                            continue;
                        }
                    }
                } else {
                    Schema::empty()
                };
                builder
                    .append(CATALOG, &domain, &product, &kind, &schema)
                    .map_err(|e| Status::internal(e.to_string()))?;
            }
        }
        builder.build().map_err(|e| Status::internal(e.to_string()))
    }
}

/// The table type of every product, as JDBC names it.
const TABLE_TYPE: &str = "TABLE";
/// SQL's name for [`TABLE_TYPE`], accepted in a table-type filter.
const BASE_TABLE_TYPE: &str = "BASE TABLE";
/// The table type of the engine's `system` tables, as JDBC names it.
const SYSTEM_TABLE_TYPE: &str = "SYSTEM TABLE";

/// How table types are spelt for a client. Flight SQL leaves the names to
/// the server and JDBC tools expect `TABLE`; sqlalchemy-adbc compares with
/// `table` and lists nothing otherwise. A client asks for lower case with the
/// header `x-agora-table-types: lowercase` (for sqlalchemy-adbc:
/// `header.x-agora-table-types=lowercase` in the URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableTypeCase {
    Upper,
    Lower,
}

impl TableTypeCase {
    fn of<T>(request: &Request<T>) -> Self {
        match request.metadata().get("x-agora-table-types").and_then(|v| v.to_str().ok()) {
            Some(v) if v.eq_ignore_ascii_case("lowercase") => TableTypeCase::Lower,
            _ => TableTypeCase::Upper,
        }
    }

    fn apply(self, kind: &str) -> String {
        match self {
            TableTypeCase::Upper => kind.to_string(),
            TableTypeCase::Lower => kind.to_ascii_lowercase(),
        }
    }
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;
type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

/// Logs a finished (or abandoned) result stream.
/// Parses an optional metadata filter pattern.
fn pattern(pattern: Option<&str>, field: &str) -> Result<Option<NamePattern>, Status> {
    pattern.map(|p| NamePattern::parse(p, field)).transpose()
}

fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(format!("cannot encode schema: {e}")))?;
    Ok(message.0)
}

/// Maps engine errors onto gRPC codes: a user's mistake is never `Internal`.
pub(crate) fn status(err: EngineError) -> Status {
    // Engine errors come from requests the engine has recorded.
    recorded(engine_status(err))
}

fn engine_status(err: EngineError) -> Status {
    let message = err.to_string();
    match err {
        EngineError::Sql(_) | EngineError::Config(_) => Status::invalid_argument(message),
        EngineError::NotFound(_) => Status::not_found(message),
        EngineError::ReadOnly(_) => Status::invalid_argument(message),
        EngineError::ProductUnavailable { .. } | EngineError::SourceUnavailable(_) => Status::unavailable(message),
        EngineError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        EngineError::Timeout(_) => Status::deadline_exceeded(message),
        EngineError::ShuttingDown(_) => Status::unavailable(message),
        EngineError::Cancelled(_) => Status::cancelled(message),
        EngineError::Denied(_) => Status::permission_denied(message),
        EngineError::Policy(_) => Status::failed_precondition(message),
        EngineError::Execution(_) | EngineError::Internal(_) => Status::internal(message),
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

/// A client-supplied name, quoted and cut to 100 characters for an error
/// message: errors must not echo unbounded client input.
fn clipped(name: &str) -> String {
    let cut: String = name.chars().take(100).collect();
    if cut.len() < name.len() { format!("{:?}…", cut) } else { format!("{cut:?}") }
}

fn read_only() -> Status {
    Status::unimplemented("Agora is read-only: updates, DDL and ingestion are not supported")
}

#[tonic::async_trait]
impl FlightSqlService for AgoraFlightSqlService {
    type FlightService = AgoraFlightSqlService;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        let client = request.remote_addr();
        let token = match credentials(request.metadata().as_ref())? {
            Some(Credentials::Basic { user, password }) => {
                let principal = self.login(user, password, client).await?;
                self.auth.issue_token(&principal)
            }
            Some(Credentials::Bearer(token)) => {
                let outcome = match self.auth.verify_token(&token) {
                    Ok(p) => Ok(p),
                    Err(_) => Err(Outcome::Denied("invalid or expired bearer token".into())),
                };
                let (user, groups) = match &outcome {
                    Ok(p) => (p.user.clone(), p.groups.clone()),
                    Err(_) => ("-".to_string(), Vec::new()),
                };
                let event = RequestEvent {
                    kind: RequestKind::Login,
                    action: "Handshake".into(),
                    user,
                    groups,
                    client: client.map(|a| a.to_string()),
                    outcome: outcome.clone().err().unwrap_or(Outcome::Ok),
                };
                let written = self.engine.record_event(event).await;
                outcome.map_err(|_| recorded(unauthenticated()))?;
                written.map_err(status)?;
                token
            }
            None if self.auth.allows_anonymous() => String::new(),
            None => return Err(unauthenticated()),
        };
        let payload = HandshakeResponse { protocol_version: 0, payload: token.clone().into() };
        let stream: HandshakeStream = Box::pin(futures::stream::once(async move { Ok(payload) }));
        let mut response = Response::new(stream);
        if !token.is_empty() {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::internal("token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
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

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let session = self.session(&request);
        let sql = self.tickets.open(&session.principal().user, &ticket.statement_handle)?;
        self.stream(session, &Statement::adhoc(sql, None), &request.get_ref().ticket).await
    }

    async fn get_flight_info_prepared_statement(
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

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let session = self.session(&request);
        let handle = self.prepared.get(&session.principal().user, &query.prepared_statement_handle)?;
        self.stream(session, &handle, &request.get_ref().ticket).await
    }

    async fn do_action_create_prepared_statement(
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

    async fn do_put_prepared_statement_query(
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

    async fn do_action_close_prepared_statement(
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

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    /// `CancelFlightInfo` (a Flight action arrow-flight does not dispatch);
    /// any other unknown action is refused by name.
    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        match request.get_ref().r#type.as_str() {
            "CancelFlightInfo" => {}
            "SetSessionOptions" | "GetSessionOptions" | "CloseSession" => return self.session_action(request).await,
            other => return Err(Status::unimplemented(format!("action {} is not supported", clipped(other)))),
        }
        let info = CancelFlightInfoRequest::decode(request.get_ref().body.clone())
            .ok()
            .and_then(|r| r.info)
            .ok_or_else(|| {
                Status::invalid_argument(
                    "CancelFlightInfo: the body is not a CancelFlightInfoRequest with a FlightInfo",
                )
            })?;
        self.cancel_flight_info(&request, "CancelFlightInfo", info).await?;
        let body = CancelFlightInfoResult::new(CancelStatus::Cancelled).encode_to_vec();
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::once(async move { Ok(result) }))))
    }

    /// The Flight actions served besides Flight SQL's own.
    async fn list_custom_actions(&self) -> Option<Vec<Result<arrow_flight::ActionType, Status>>> {
        let action = |name: &str, description: &str| {
            Ok(arrow_flight::ActionType { r#type: name.into(), description: description.into() })
        };
        Some(vec![
            action("CancelFlightInfo", "Cancel the query a FlightInfo's ticket is streaming"),
            action("SetSessionOptions", "Set session options: schema (a domain), catalog (mesh)"),
            action("GetSessionOptions", "The session's options"),
            action("CloseSession", "Close the session"),
        ])
    }

    /// Flight SQL's older form of CancelFlightInfo (the FlightInfo serialized
    /// in `info`).
    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let info = FlightInfo::decode(query.info)
            .map_err(|_| Status::invalid_argument("CancelQuery: `info` is not a serialized FlightInfo"))?;
        self.cancel_flight_info(&request, "CancelQuery", info).await?;
        // Its CancelResult numbers the outcomes as CancelStatus does
        // (CANCELLED = 1); arrow-flight does not export that enum.
        Ok(ActionCancelQueryResult { result: CancelStatus::Cancelled as i32 })
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: arrow_flight::sql::Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::unimplemented(format!("DoGet: unsupported ticket type {}", clipped(&message.type_url))))
    }

    async fn get_flight_info_fallback(
        &self,
        cmd: arrow_flight::sql::Command,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented(format!("GetFlightInfo: unsupported command {}", clipped(cmd.type_url()))))
    }

    async fn do_put_fallback(
        &self,
        _request: Request<PeekableFlightDataStream>,
        message: arrow_flight::sql::Any,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        Err(Status::unimplemented(format!("DoPut: unsupported command {}", clipped(&message.type_url))))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.audited(&request, "GetFlightInfo GetCatalogs").await?;
        let schema = query.into_builder().schema();
        self.command_info(&schema, &query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetCatalogs").await?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        let schema = builder.schema();
        self.built(schema, builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.audited(&request, "GetFlightInfo GetDbSchemas").await?;
        let schema = query.clone().into_builder().schema();
        self.command_info(&schema, &query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetDbSchemas").await?;
        let session = self.session(&request);
        let mut query = query;
        let schema_pattern = pattern(query.db_schema_filter_pattern.take().as_deref(), "db_schema_filter_pattern")?;
        let mut builder = query.into_builder();
        for domain in session.schemas() {
            if schema_pattern.as_ref().is_none_or(|p| p.matches(&domain)) {
                builder.append(CATALOG, &domain);
            }
        }
        let schema = builder.schema();
        self.built(schema, builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.audited(&request, "GetFlightInfo GetTables").await?;
        let schema = query.clone().into_builder().schema();
        self.command_info(&schema, &query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetTables").await?;
        let session = self.session(&request);
        let schema = query.clone().into_builder().schema();
        let batch = self.tables(&session, query, TableTypeCase::of(&request)).await?;
        Ok(self.batch_stream(schema, batch))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.audited(&request, "GetFlightInfo GetTableTypes").await?;
        let schema = query.into_builder().schema();
        self.command_info(&schema, &query, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetTableTypes").await?;
        let case = TableTypeCase::of(&request);
        let mut builder = query.into_builder();
        builder.append(case.apply(SYSTEM_TABLE_TYPE));
        builder.append(case.apply(TABLE_TYPE));
        let schema = builder.schema();
        self.built(schema, builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.audited(&request, "GetFlightInfo GetSqlInfo").await?;
        let schema = query.clone().into_builder(&SQL_INFO).schema();
        self.command_info(&schema, &query, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetSqlInfo").await?;
        let builder = query.into_builder(&SQL_INFO);
        let schema = builder.schema();
        self.built(schema, builder.build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.audited(&request, "GetFlightInfo GetXdbcTypeInfo").await?;
        let schema = query.into_builder(&XDBC_TYPES).schema();
        self.command_info(&schema, &query, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetXdbcTypeInfo").await?;
        let builder = query.into_builder(&XDBC_TYPES);
        let schema = builder.schema();
        self.built(schema, builder.build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.audited(&request, "GetFlightInfo GetPrimaryKeys").await?;
        Ok(Response::new(self.flight_info(
            &primary_keys_schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )?))
    }

    /// The keys products declare (contract or PostgreSQL), for the products
    /// the principal may see (see [`Session::primary_key`]): `table` names a
    /// product, in `db_schema` (a domain) when given, else in every domain.
    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetPrimaryKeys").await?;
        let session = self.session(&request);
        let products =
            keys::products_named(&session, query.catalog.as_deref(), query.db_schema.as_deref(), &query.table);
        let batch = keys::primary_keys(&session, &products).await?;
        Ok(self.batch_stream(primary_keys_schema(), batch))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.audited(&request, "GetFlightInfo GetExportedKeys").await?;
        Ok(Response::new(self.flight_info(
            &foreign_keys_schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )?))
    }

    /// The foreign keys that reference the named product (PostgreSQL's).
    async fn do_get_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetExportedKeys").await?;
        let session = self.session(&request);
        let products =
            keys::products_named(&session, query.catalog.as_deref(), query.db_schema.as_deref(), &query.table);
        let found = keys::foreign_keys(&session, &products, keys::Side::Referenced).await;
        Ok(self.batch_stream(foreign_keys_schema(), keys::foreign_keys_batch(&found)?))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.audited(&request, "GetFlightInfo GetImportedKeys").await?;
        Ok(Response::new(self.flight_info(
            &foreign_keys_schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )?))
    }

    /// The foreign keys the named product holds (PostgreSQL's).
    async fn do_get_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetImportedKeys").await?;
        let session = self.session(&request);
        let products =
            keys::products_named(&session, query.catalog.as_deref(), query.db_schema.as_deref(), &query.table);
        let found = keys::foreign_keys(&session, &products, keys::Side::Referencing).await;
        Ok(self.batch_stream(foreign_keys_schema(), keys::foreign_keys_batch(&found)?))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.audited(&request, "GetFlightInfo GetCrossReference").await?;
        Ok(Response::new(self.flight_info(
            &foreign_keys_schema(),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )?))
    }

    /// The foreign keys from the `fk_*` product to the `pk_*` product.
    async fn do_get_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetCrossReference").await?;
        let session = self.session(&request);
        let referenced =
            keys::products_named(&session, query.pk_catalog.as_deref(), query.pk_db_schema.as_deref(), &query.pk_table);
        let referencing =
            keys::products_named(&session, query.fk_catalog.as_deref(), query.fk_db_schema.as_deref(), &query.fk_table);
        let mut found = keys::foreign_keys(&session, &referenced, keys::Side::Referenced).await;
        found.retain(|k| referencing.contains(&k.fk_product));
        Ok(self.batch_stream(foreign_keys_schema(), keys::foreign_keys_batch(&found)?))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
