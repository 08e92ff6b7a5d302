//! What a planned query carries to its execution (its slot, deadline and
//! result limits), and how its work runs on the query runtime within them.

use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::SendableRecordBatchStream;

use super::Engine;
use crate::EngineError;
use crate::history::QueryEntry;
use crate::limits::{EffectiveLimits, QuerySlot};

/// What a planned query carries to its execution: its slot, its deadline and
/// its result limits.
pub(super) struct Run {
    pub(super) engine: Engine,
    /// The query's history entry, whose cancel stops it.
    pub(super) entry: Arc<QueryEntry>,
    /// The query's span: the parent of its planning and execution spans.
    pub(super) span: tracing::Span,
    pub(super) slot: QuerySlot,
    pub(super) deadline: Instant,
    pub(super) limits: EffectiveLimits,
}

impl Run {
    /// Runs `work` on the query runtime before the statement's deadline.
    pub(super) async fn within<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
    ) -> Result<T, EngineError> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let runtime = self.engine.inner.lane(&self.slot);
        let span = tracing::info_span!(parent: &self.span, "agora.plan", otel.name = "agora.plan", agora.step = what);
        let work = tracing::Instrument::instrument(runtime.run(what, work), span);
        tokio::select! {
            result = tokio::time::timeout_at(deadline, work) => match result {
                Ok(result) => result,
                Err(_) => Err(EngineError::Timeout(self.timeout_message())),
            },
            _ = self.entry.cancel.cancelled() => Err(self.entry.cancelled_error()),
        }
    }

    fn timeout_message(&self) -> String {
        format!(
            "the query was stopped after {} s (limits.statement_timeout_seconds)",
            self.limits.statement_timeout.as_secs_f64()
        )
    }

    /// Drives the query's stream on the query runtime until its deadline,
    /// within its result limits; the slot is given back when the query ends.
    pub(super) fn drive(self, stream: SendableRecordBatchStream) -> Result<SendableRecordBatchStream, EngineError> {
        let message = self.timeout_message();
        let limits = &self.engine.config().limits;
        let hint = format!(
            "(Agora's limits: memory_limit_bytes = {}, max_spill_bytes = {})",
            limits.memory_limit_bytes, limits.max_spill_bytes
        );
        let (max_rows, max_bytes) = (self.limits.max_result_rows, self.limits.max_result_bytes);
        let (mut rows, mut bytes) = (0u64, 0u64);
        let engine = self.engine.clone();
        let runtime = engine.inner.lane(&self.slot);
        let entry = Arc::clone(&self.entry);
        let cancelled = Box::pin(async move {
            entry.cancel.cancelled().await;
            entry.cancelled_error().to_string()
        });
        let slot = self.slot;
        let check = move |batch: &RecordBatch| {
            let _held = &slot;
            rows += batch.num_rows() as u64;
            bytes += batch.get_array_memory_size() as u64;
            if let Some(max) = max_rows.filter(|max| rows > *max) {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "the result has more than {max} rows (limits.max_result_rows); add a LIMIT or a filter"
                )));
            }
            if let Some(max) = max_bytes.filter(|max| bytes > *max) {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "the result is larger than {max} bytes (limits.max_result_bytes); select fewer columns or rows"
                )));
            }
            Ok(())
        };
        // The query's task runs in its execution span.
        let span = tracing::info_span!(parent: &self.span, "agora.execute", otel.name = "agora.execute");
        let _entered = span.enter();
        runtime.drive(stream, self.deadline, cancelled, message, hint, check)
    }
}
