//! Stopping a statement in PostgreSQL when its reader goes away.
//!
//! Dropping a result stream (the client disconnected, the query timed out
//! or was cancelled) stops reading, but the statement already sent keeps
//! running in PostgreSQL until it ends or hits `statement_timeout`, holding a
//! backend and a pooled connection. Each statement therefore starts with a
//! marker comment (`/* agora:<random id> */`); a stream dropped before its
//! end asks PostgreSQL, over a fresh connection, to cancel the backends
//! running statements with that marker (`pg_cancel_backend`, allowed for
//! one's own sessions without extra privileges).
//!
//! Hand-written because the pooled connections of datafusion-table-providers
//! do not expose their cancel tokens to the executor that runs on them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::Result;
use datafusion::physical_plan::{RecordBatchStream, SendableRecordBatchStream};
use datafusion_table_providers::sql::db_connection_pool::postgrespool::PostgresConnectionPool;
use futures::Stream;

/// The comment that identifies one query's statements in `pg_stat_activity`.
#[derive(Debug, Clone)]
pub(crate) struct StatementMarker(String);

impl StatementMarker {
    pub(crate) fn new() -> Self {
        let mut id = [0u8; 12];
        let _ = getrandom::fill(&mut id);
        StatementMarker(format!("/* agora:{} */ ", id.iter().map(|b| format!("{b:02x}")).collect::<String>()))
    }

    /// `sql` with the marker in front.
    pub(crate) fn mark(&self, sql: &str) -> String {
        format!("{}{sql}", self.0)
    }
}

/// `stream`, cancelling its statements in PostgreSQL if it is dropped before its end.
pub(crate) fn cancel_on_drop(
    stream: SendableRecordBatchStream,
    marker: StatementMarker,
    pool: Arc<PostgresConnectionPool>,
    name: String,
) -> SendableRecordBatchStream {
    Box::pin(CancelOnDrop { inner: stream, pending: Some(Pending { marker, pool, name }) })
}

struct Pending {
    marker: StatementMarker,
    pool: Arc<PostgresConnectionPool>,
    name: String,
}

struct CancelOnDrop {
    inner: SendableRecordBatchStream,
    /// Taken when the stream ends: nothing left to cancel.
    pending: Option<Pending>,
}

impl Stream for CancelOnDrop {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(None) = next {
            self.pending = None;
        }
        next
    }
}

impl RecordBatchStream for CancelOnDrop {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(Pending { marker, pool, name }) = self.pending.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let cancel = "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity \
                          WHERE pid <> pg_backend_pid() AND state = 'active' AND left(query, length($1)) = $1";
            let connected = tokio::time::timeout(std::time::Duration::from_secs(10), pool.connect_direct()).await;
            let outcome = match connected {
                Ok(Ok(connection)) => connection.conn.query_one(cancel, &[&marker.0]).await.map(|r| r.get::<_, i64>(0)),
                Ok(Err(e)) => {
                    tracing::warn!(connection = %name, error = %e, "cannot cancel an abandoned PostgreSQL statement");
                    return;
                }
                Err(_) => {
                    tracing::warn!(connection = %name, "cannot cancel an abandoned PostgreSQL statement: no connection");
                    return;
                }
            };
            match outcome {
                Ok(n) if n > 0 => tracing::info!(connection = %name, statements = n, "abandoned PostgreSQL statements cancelled"),
                Ok(_) => {}
                Err(e) => tracing::warn!(connection = %name, error = %e, "cannot cancel an abandoned PostgreSQL statement"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_unique_comments_in_front() {
        let (a, b) = (StatementMarker::new(), StatementMarker::new());
        assert_ne!(a.0, b.0);
        let sql = a.mark("SELECT 1");
        assert!(sql.starts_with("/* agora:") && sql.ends_with("*/ SELECT 1"), "{sql}");
    }
}
