//! Stopping a statement in PostgreSQL when its reader goes away.
//!
//! Dropping a result stream (the client disconnected, the query timed out or
//! was cancelled) stops reading, but a statement already sent keeps running
//! in PostgreSQL until it ends or hits `statement_timeout`, holding a backend
//! and a pooled connection. Every statement Agora sends is therefore read
//! under a [`StatementGuard`]: dropped before its result has been read to the
//! end, it sends PostgreSQL a cancel request for the connection's backend
//! (the protocol's `CancelRequest`, over a connection of its own, as `psql`
//! does on Ctrl-C) and keeps the connection out of the pool until the
//! backend has stopped, so that a cancel can never land on a statement of the
//! connection's next user.
//!
//! [`CancellingPool`] puts every connection that `datafusion-table-providers`
//! checks out (federated statements, products read in the engine) under such
//! a guard; the parallel range reads of `postgres_ranges` use
//! [`Canceller`] directly. Hand-written because the pooled connections of
//! datafusion-table-providers do not cancel their statements when dropped.

use std::any::Any;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::TableReference;
use datafusion::physical_plan::{RecordBatchStream, SendableRecordBatchStream};
use datafusion_table_providers::UnsupportedTypeAction;
use datafusion_table_providers::sql::db_connection_pool::dbconnection::postgresconn::PostgresConnection as PgConnection;
use datafusion_table_providers::sql::db_connection_pool::dbconnection::{self, AsyncDbConnection, DbConnection};
use datafusion_table_providers::sql::db_connection_pool::postgrespool::PostgresConnectionPool;
use datafusion_table_providers::sql::db_connection_pool::{DbConnectionPool, JoinPushDown};
use futures::Stream;
use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::CancelToken;
use tokio_postgres::types::ToSql;

use crate::postgres_metrics::{Checkout, counted};

/// The pooled connection type of datafusion-table-providers.
type Pooled = datafusion_table_providers::sql::db_connection_pool::dbconnection::postgresconn::PostgresPooledConnection;

/// The parameter type of every statement Agora sends (it sends none).
type Param = &'static (dyn ToSql + Sync);

/// Longest a cancel request may take to be delivered.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a cancelled statement is waited for before its connection goes
/// back to the pool regardless (PostgreSQL normally stops within milliseconds).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The TLS set-up cancel requests are sent with: the one the pool connects with.
#[derive(Clone)]
pub(crate) struct CancelTls {
    connector: MakeTlsConnector,
}

impl CancelTls {
    /// The connector for `sslmode`, as datafusion-table-providers builds it
    /// (`require` encrypts without verifying, `verify-ca` checks the
    /// certificate, `verify-full` the host name as well).
    pub(crate) fn for_sslmode(sslmode: &str) -> Result<Self, String> {
        let mut builder = native_tls::TlsConnector::builder();
        if sslmode != "disable" {
            builder
                .danger_accept_invalid_hostnames(sslmode != "verify-full")
                .danger_accept_invalid_certs(sslmode != "verify-full" && sslmode != "verify-ca");
        }
        let connector = builder.build().map_err(|e| format!("TLS set-up for cancel requests: {e}"))?;
        Ok(CancelTls { connector: MakeTlsConnector::new(connector) })
    }
}

/// What it takes to cancel the statement a connection is running.
pub(crate) struct Canceller {
    token: CancelToken,
    tls: CancelTls,
    /// The connection's name for log lines (the domain that declares it).
    name: Arc<str>,
}

impl Canceller {
    /// The canceller of `connection`'s backend.
    pub(crate) fn of(connection: &PgConnection, tls: &CancelTls, name: &Arc<str>) -> Self {
        Canceller { token: connection.conn.cancel_token(), tls: tls.clone(), name: Arc::clone(name) }
    }

    /// Asks PostgreSQL to cancel what the backend is running. Failures are
    /// logged: the statement then runs until it ends or times out.
    pub(crate) async fn cancel(self) {
        match tokio::time::timeout(CANCEL_TIMEOUT, self.token.cancel_query(self.tls.connector)).await {
            Ok(Ok(())) => tracing::info!(connection = %self.name, "abandoned PostgreSQL statement cancelled"),
            Ok(Err(e)) => {
                tracing::warn!(connection = %self.name, error = %e, "cannot cancel an abandoned PostgreSQL statement")
            }
            Err(_) => tracing::warn!(
                connection = %self.name,
                "cannot cancel an abandoned PostgreSQL statement: no answer within {CANCEL_TIMEOUT:?}"
            ),
        }
    }
}

/// Waits until `connection` has finished whatever it was running: an empty
/// statement queues behind it on the same connection.
async fn settle(connection: &PgConnection) {
    // A cancel that arrives after the statement ended may cancel this probe
    // instead; the second one then runs on an idle backend.
    for _ in 0..2 {
        match tokio::time::timeout(SETTLE_TIMEOUT, connection.conn.simple_query("")).await {
            Ok(Ok(_)) | Err(_) => return,
            Ok(Err(_)) => continue,
        }
    }
}

/// A statement whose result is being read on `connection`. Dropped armed,
/// it cancels the statement and returns the connection to the pool only
/// once the backend is idle.
pub(crate) struct StatementGuard {
    connection: Option<Arc<Checkout>>,
    canceller: Option<Canceller>,
}

impl StatementGuard {
    /// Guards the statement about to be sent on `connection`.
    pub(crate) fn new(connection: Arc<Checkout>, tls: &CancelTls, name: &Arc<str>) -> Self {
        let canceller = Canceller::of(&connection, tls, name);
        StatementGuard { connection: Some(connection), canceller: Some(canceller) }
    }

    /// The statement's result was read to its end: nothing to cancel.
    fn disarm(&mut self) {
        self.canceller = None;
        self.connection = None;
    }
}

impl Drop for StatementGuard {
    fn drop(&mut self) {
        let (Some(canceller), Some(connection)) = (self.canceller.take(), self.connection.take()) else { return };
        // Without a runtime nothing can be sent; the statement then runs to
        // its end or its timeout, as it would have without the guard.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            canceller.cancel().await;
            settle(&connection).await;
        });
    }
}

/// `stream`, with its statement cancelled if it is dropped before its end.
pub(crate) fn guarded(
    stream: SendableRecordBatchStream,
    guard: StatementGuard,
    span: tracing::Span,
) -> SendableRecordBatchStream {
    Box::pin(GuardedStream { inner: stream, guard: Some(guard), span })
}

struct GuardedStream {
    inner: SendableRecordBatchStream,
    guard: Option<StatementGuard>,
    /// The statement's span, open until its result is read or dropped.
    span: tracing::Span,
}

impl Stream for GuardedStream {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let span = self.span.clone();
        let _entered = span.enter();
        let next = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(None) = next
            && let Some(mut guard) = self.guard.take()
        {
            guard.disarm();
        }
        next
    }
}

impl RecordBatchStream for GuardedStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

/// The pool of datafusion-table-providers, handing out connections whose
/// statements are cancelled in PostgreSQL when their result is dropped early.
pub(crate) struct CancellingPool {
    inner: Arc<PostgresConnectionPool>,
    tls: CancelTls,
    name: Arc<str>,
    /// The most connections `inner` opens.
    size: u32,
}

impl CancellingPool {
    pub(crate) fn new(inner: Arc<PostgresConnectionPool>, tls: CancelTls, name: &str, size: u32) -> Self {
        CancellingPool { inner, tls, name: Arc::from(name), size }
    }

    /// A connection of the pool, read with the same type mapping as the
    /// connections it hands to datafusion-table-providers.
    pub(crate) async fn connect_direct(&self) -> Result<Checkout, dbconnection::GenericError> {
        let started = Instant::now();
        let connection = self.inner.connect_direct().await?;
        let connection = connection.with_unsupported_type_action(UnsupportedTypeAction::String);
        Ok(Checkout::new(connection, &self.name, self.size, started.elapsed()))
    }

    /// What cancels the statement `connection` is about to run.
    pub(crate) fn canceller(&self, connection: &PgConnection) -> Canceller {
        Canceller::of(connection, &self.tls, &self.name)
    }

    /// Runs `sql` on `connection`, cancelled in PostgreSQL when the result
    /// is dropped (or the call abandoned) before its end.
    pub(crate) async fn query(
        &self,
        connection: Checkout,
        sql: &str,
        schema: Option<SchemaRef>,
    ) -> Result<SendableRecordBatchStream, dbconnection::GenericError> {
        query_guarded(Arc::new(connection), &self.tls, &self.name, sql, schema).await
    }
}

async fn query_guarded(
    connection: Arc<Checkout>,
    tls: &CancelTls,
    name: &Arc<str>,
    sql: &str,
    schema: Option<SchemaRef>,
) -> Result<SendableRecordBatchStream, dbconnection::GenericError> {
    // Armed before the statement is sent: datafusion-table-providers waits
    // for the first rows inside the call, and a query abandoned while it
    // waits must be cancelled too.
    let mut guard = StatementGuard::new(Arc::clone(&connection), tls, name);
    // A client span per statement, as OpenTelemetry's database conventions
    // describe it (the text is the governed statement Agora sends).
    let span = tracing::info_span!(
        "postgresql.query",
        otel.name = %format!("postgresql {name}"),
        otel.kind = "client",
        db.system.name = "postgresql",
        agora.domain = %name,
        db.query.text = sql,
    );
    let pg: &PgConnection = &connection;
    let query = AsyncDbConnection::<Pooled, Param>::query_arrow(pg, sql, &[], schema);
    match tracing::Instrument::instrument(query, span.clone()).await {
        Ok(stream) => Ok(counted(guarded(stream, guard, span), name)),
        Err(e) => {
            // The statement failed: it is no longer running.
            guard.disarm();
            Err(e)
        }
    }
}

#[async_trait]
impl DbConnectionPool<Pooled, Param> for CancellingPool {
    async fn connect(&self) -> Result<Box<dyn DbConnection<Pooled, Param>>, dbconnection::GenericError> {
        let connection = self.connect_direct().await?;
        Ok(Box::new(CancellingConnection {
            inner: Arc::new(connection),
            tls: Some(self.tls.clone()),
            name: Arc::clone(&self.name),
        }))
    }

    fn join_push_down(&self) -> JoinPushDown {
        DbConnectionPool::<Pooled, Param>::join_push_down(self.inner.as_ref())
    }
}

/// A pooled connection whose `query_arrow` streams are guarded.
struct CancellingConnection {
    inner: Arc<Checkout>,
    /// `None` for a connection made without its pool: its statements are
    /// not guarded.
    tls: Option<CancelTls>,
    name: Arc<str>,
}

impl CancellingConnection {
    fn pg(&self) -> &PgConnection {
        &self.inner
    }
}

impl DbConnection<Pooled, Param> for CancellingConnection {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn as_async(&self) -> Option<&dyn AsyncDbConnection<Pooled, Param>> {
        Some(self)
    }
}

#[async_trait]
impl AsyncDbConnection<Pooled, Param> for CancellingConnection {
    /// Connections are only made by [`CancellingPool::connect`]; one made
    /// here does not know how to reach its server and is not guarded.
    fn new(conn: Pooled) -> Self {
        Self::new_with_schemas(conn, Arc::default())
    }

    fn new_with_schemas(conn: Pooled, schemas: Arc<dbconnection::TableSchemas>) -> Self {
        let inner = <PgConnection as AsyncDbConnection<Pooled, Param>>::new_with_schemas(conn, schemas);
        CancellingConnection { inner: Arc::new(Checkout::untracked(inner)), tls: None, name: Arc::from("postgres") }
    }

    async fn tables(&self, schema: &str) -> Result<Vec<String>, dbconnection::Error> {
        AsyncDbConnection::<Pooled, Param>::tables(self.pg(), schema).await
    }

    async fn schemas(&self) -> Result<Vec<String>, dbconnection::Error> {
        AsyncDbConnection::<Pooled, Param>::schemas(self.pg()).await
    }

    async fn get_schema(&self, table_reference: &TableReference) -> Result<SchemaRef, dbconnection::Error> {
        AsyncDbConnection::<Pooled, Param>::get_schema(self.pg(), table_reference).await
    }

    async fn query_arrow(
        &self,
        sql: &str,
        params: &[Param],
        projected_schema: Option<SchemaRef>,
    ) -> Result<SendableRecordBatchStream, dbconnection::GenericError> {
        match &self.tls {
            Some(tls) if params.is_empty() => {
                query_guarded(Arc::clone(&self.inner), tls, &self.name, sql, projected_schema).await
            }
            _ => AsyncDbConnection::<Pooled, Param>::query_arrow(self.pg(), sql, params, projected_schema).await,
        }
    }

    async fn execute(&self, sql: &str, params: &[Param]) -> Result<u64, dbconnection::GenericError> {
        AsyncDbConnection::<Pooled, Param>::execute(self.pg(), sql, params).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sslmode_has_a_cancel_connector() {
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert!(CancelTls::for_sslmode(mode).is_ok(), "{mode}");
        }
    }
}
