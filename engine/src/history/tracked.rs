//! A running query's result stream, as its history entry follows it: rows
//! and bytes returned, its end however it ends, and the one log line and
//! metrics of each query.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::physical_plan::{ExecutionPlan, RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;

use super::{HistoryEntry, QueryInfo, QueryState};
use crate::EngineError;

/// A result stream whose history entry ends with it.
pub(crate) struct TrackedStream {
    inner: SendableRecordBatchStream,
    /// `None` once the stream has ended.
    entry: Option<HistoryEntry>,
    /// The executed plan, read for its spill metrics at the end.
    plan: Arc<dyn ExecutionPlan>,
}

impl TrackedStream {
    pub(crate) fn new(inner: SendableRecordBatchStream, entry: HistoryEntry, plan: Arc<dyn ExecutionPlan>) -> Self {
        TrackedStream { inner, entry: Some(entry), plan }
    }

    fn end(&mut self, state: QueryState, error: Option<String>) {
        if let Some(entry) = self.entry.take() {
            entry.spilled(spilled_bytes(self.plan.as_ref()));
            entry.end(state, error);
        }
    }
}

impl Stream for TrackedStream {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.as_mut().poll_next(cx);
        match &next {
            Poll::Ready(Some(Ok(batch))) => {
                if let Some(entry) = &self.entry {
                    entry.returned(batch.num_rows(), batch.get_array_memory_size());
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let error = EngineError::from(e);
                self.end(QueryState::of_error(&error), Some(error.to_string()));
            }
            Poll::Ready(None) => self.end(QueryState::Finished, None),
            Poll::Pending => {}
        }
        next
    }
}

impl RecordBatchStream for TrackedStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        // Dropped before its end: the caller went away or cancelled.
        self.end(QueryState::Cancelled, None);
    }
}

/// Bytes spilled by every operator of `plan`.
fn spilled_bytes(plan: &dyn ExecutionPlan) -> u64 {
    let own = plan.metrics().and_then(|m| m.spilled_bytes()).unwrap_or(0) as u64;
    own + plan.children().iter().map(|c| spilled_bytes(c.as_ref())).sum::<u64>()
}

/// The log line and the metrics of a query that ended in `state`.
pub(super) fn report(info: &QueryInfo, state: QueryState) {
    let outcome = state.outcome();
    metrics::counter!("agora_queries_total", "outcome" => outcome).increment(1);
    let elapsed = (info.queued_ms + info.planning_ms + info.execution_ms) as f64 / 1000.0;
    metrics::histogram!("agora_query_duration_seconds", "outcome" => outcome).record(elapsed);
    metrics::counter!("agora_result_rows_total").increment(info.rows);
    metrics::counter!("agora_result_bytes_total").increment(info.bytes);
    // Client input is logged escaped (`?`), so it cannot forge log lines.
    tracing::info!(
        query_id = %info.query_id,
        principal = ?info.user,
        protocol = info.protocol,
        trace_id = info.trace_id.as_deref().unwrap_or(""),
        rows = info.rows,
        queued_ms = info.queued_ms,
        planning_ms = info.planning_ms,
        execution_ms = info.execution_ms,
        peak_memory_bytes = info.peak_memory_bytes,
        spilled_bytes = info.spilled_bytes,
        outcome,
        sql = ?info.sql.as_deref().unwrap_or(""),
        error = ?info.error.as_deref().unwrap_or(""),
        "query ended"
    );
}
