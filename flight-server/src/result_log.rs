//! What the server notes about each result stream: a log line, and the
//! query metrics, when the stream ends or its client goes away.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow_flight::error::FlightError;
use futures::Stream;

/// One result stream's counts, logged and counted when dropped.
pub(crate) struct StreamLog {
    /// The query's id, as in its audit records and lineage run.
    pub(crate) query_id: String,
    pub(crate) principal: String,
    pub(crate) sql: String,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    pub(crate) started: Instant,
    pub(crate) queued_ms: u64,
    /// The code of the error that ended the stream, if one did.
    pub(crate) failure: Option<tonic::Code>,
    /// The stream was read to its end.
    pub(crate) ended: bool,
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        let outcome = match self.failure {
            Some(code) => crate::ops::metrics::failure_outcome(code),
            None if self.ended => "ok",
            None => "cancelled",
        };
        crate::ops::metrics::record_query(outcome, self.started.elapsed(), self.rows, self.bytes);
        // Client input is logged escaped (`?`), so it cannot forge log lines.
        let sql: String = self.sql.chars().take(4096).collect();
        tracing::info!(
            query_id = %self.query_id,
            principal = ?self.principal,
            rows = self.rows,
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            queued_ms = self.queued_ms,
            outcome,
            sql = ?sql,
            "query stream ended"
        );
    }
}

/// A result stream whose batches, errors and end are noted in its log.
pub(crate) struct Observed<S> {
    pub(crate) inner: S,
    pub(crate) log: StreamLog,
}

impl<S> Stream for Observed<S>
where
    S: Stream<Item = Result<RecordBatch, FlightError>> + Unpin,
{
    type Item = Result<RecordBatch, FlightError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        let log = &mut self.log;
        match &next {
            Poll::Ready(Some(Ok(batch))) => {
                log.rows += batch.num_rows() as u64;
                log.bytes += batch.get_array_memory_size() as u64;
            }
            Poll::Ready(Some(Err(e))) => {
                log.failure = Some(match e {
                    FlightError::Tonic(status) => status.code(),
                    _ => tonic::Code::Internal,
                });
            }
            Poll::Ready(None) => log.ended = true,
            Poll::Pending => {}
        }
        next
    }
}
