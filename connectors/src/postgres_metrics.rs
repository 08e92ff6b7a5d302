//! What a PostgreSQL domain's pool and statements are doing, as metrics.
//!
//! Per domain (the `domain` label is the name of the connection's domain):
//!
//! - `agora_postgres_pool_size`: the most connections its pool opens;
//! - `agora_postgres_connections_in_use`: connections checked out of the pool
//!   now (a statement being read, a cancelled one settling, a range read's
//!   transaction);
//! - `agora_postgres_pool_wait_seconds`: how long a checkout waited for a
//!   connection (a pool at its size makes queries wait here);
//! - `agora_postgres_read_rows_total` / `agora_postgres_read_bytes_total`:
//!   rows and Arrow bytes read from the domain's server.
//!
//! The pool of `datafusion-table-providers` keeps its `bb8` pool private, so
//! the checkouts are counted where Agora takes them.

use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::{RecordBatchStream, SendableRecordBatchStream};
use datafusion_table_providers::sql::db_connection_pool::dbconnection::postgresconn::PostgresConnection as PgConnection;
use futures::Stream;

/// A connection checked out of a domain's pool: counted as in use until it
/// is dropped (and so returned to the pool).
pub(crate) struct Checkout {
    connection: PgConnection,
    /// `None` for a connection not taken from one of Agora's pools.
    in_use: Option<metrics::Gauge>,
}

impl Checkout {
    /// `connection`, just checked out of `domain`'s pool (of `size`
    /// connections at most) after `waited`. The size is set at every checkout:
    /// a pool opened before the metrics recorder was installed (at start-up)
    /// still shows.
    pub(crate) fn new(connection: PgConnection, domain: &str, size: u32, waited: Duration) -> Self {
        metrics::gauge!("agora_postgres_pool_size", "domain" => domain.to_string()).set(f64::from(size));
        metrics::histogram!("agora_postgres_pool_wait_seconds", "domain" => domain.to_string())
            .record(waited.as_secs_f64());
        let in_use = metrics::gauge!("agora_postgres_connections_in_use", "domain" => domain.to_string());
        in_use.increment(1.0);
        Checkout { connection, in_use: Some(in_use) }
    }

    /// A connection datafusion-table-providers made itself (not counted).
    pub(crate) fn untracked(connection: PgConnection) -> Self {
        Checkout { connection, in_use: None }
    }
}

impl Deref for Checkout {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.connection
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(in_use) = &self.in_use {
            in_use.decrement(1.0);
        }
    }
}

/// `stream`, with the rows and bytes it yields counted for `domain`.
pub(crate) fn counted(stream: SendableRecordBatchStream, domain: &str) -> SendableRecordBatchStream {
    let domain = domain.to_string();
    Box::pin(CountedStream {
        rows: metrics::counter!("agora_postgres_read_rows_total", "domain" => domain.clone()),
        bytes: metrics::counter!("agora_postgres_read_bytes_total", "domain" => domain),
        inner: stream,
    })
}

struct CountedStream {
    inner: SendableRecordBatchStream,
    rows: metrics::Counter,
    bytes: metrics::Counter,
}

impl Stream for CountedStream {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Ok(batch))) = &next {
            self.rows.increment(batch.num_rows() as u64);
            self.bytes.increment(batch.get_array_memory_size() as u64);
        }
        next
    }
}

impl RecordBatchStream for CountedStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}
