//! A query's audit records over its life: the start record when it arrives,
//! the finish record when it ends however it ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::{RecordBatchStream, SendableRecordBatchStream};
use futures::{FutureExt, Stream};

use crate::EngineError;

use super::log::AuditLog;
use super::record::{AuditRecord, AuditStatus};

/// A request whose start record is written and whose finish record is due.
/// Dropped unfinished (the client went away while it was planned), it is
/// finished as `cancelled`.
pub(crate) struct PendingAudit {
    log: Arc<AuditLog>,
    record: Option<AuditRecord>,
    started: Instant,
}

impl PendingAudit {
    /// Writes the start record of `record`'s request, unless its principal is
    /// over the audit quota (then the request is refused, and the refusal
    /// recorded sparsely).
    pub(crate) fn begin(log: &Arc<AuditLog>, mut record: AuditRecord) -> Result<Self, EngineError> {
        if let Err(refusal) = log.quota.check(&record.user) {
            let message = format!(
                "{} has sent more than {} bytes of audited requests in the last minute \
                 (governance.audit.quota_bytes_per_minute); retry in {} s",
                record.user,
                log.quota.limit(),
                refusal.retry_after.as_secs().max(1)
            );
            if refusal.record {
                let mut refused = record.finished(AuditStatus::OverQuota, Some(&message), 0);
                refused.sql = record.sql.take();
                refused.reason = Some(format!("{message} ({} requests refused so far this minute)", refusal.refused));
                log.append(&mut refused, true).map_err(unwritable)?;
            }
            return Err(EngineError::ResourcesExhausted(message));
        }
        let written = log.append(&mut record, false).map_err(unwritable)?;
        log.quota.charge(&record.user, written);
        Ok(PendingAudit { log: Arc::clone(log), record: Some(record), started: Instant::now() })
    }

    /// The record being completed (what the query read, its policies, rows).
    pub(crate) fn record_mut(&mut self) -> Option<&mut AuditRecord> {
        self.record.as_mut()
    }

    /// Writes the finish record and waits until it is on disk.
    pub(crate) fn finish(mut self, status: AuditStatus, error: Option<&str>) -> std::io::Result<()> {
        match self.record.take() {
            Some(start) => write_finish(&self.log, &start, status, error, self.started),
            None => Ok(()),
        }
    }

    /// [`PendingAudit::finish`], off the async threads (it waits for `fsync`).
    pub(crate) fn finish_async(
        mut self,
        status: AuditStatus,
        error: Option<String>,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
        let log = Arc::clone(&self.log);
        let start = self.record.take();
        let started = self.started;
        async move {
            let Some(start) = start else { return Ok(()) };
            let write = move || write_finish(&log, &start, status, error.as_deref(), started);
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => handle.spawn_blocking(write).await.unwrap_or_else(|e| Err(std::io::Error::other(e))),
                Err(_) => write(),
            }
        }
    }
}

impl Drop for PendingAudit {
    fn drop(&mut self) {
        let Some(start) = self.record.take() else { return };
        let log = Arc::clone(&self.log);
        let started = self.started;
        let write = move || {
            let _ = write_finish(&log, &start, AuditStatus::Cancelled, None, started);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(write)),
            Err(_) => write(),
        }
    }
}

fn write_finish(
    log: &AuditLog,
    start: &AuditRecord,
    status: AuditStatus,
    error: Option<&str>,
    started: Instant,
) -> std::io::Result<()> {
    let mut done = start.finished(status, error, started.elapsed().as_millis() as u64);
    let result = log.append(&mut done, true);
    match &result {
        Ok(written) => log.quota.charge(&done.user, *written),
        Err(e) => tracing::error!(error = %e, path = %log.path().display(), "cannot write the audit record"),
    }
    result.map(|_| ())
}

fn unwritable(e: std::io::Error) -> EngineError {
    tracing::error!(error = %e, "cannot write the audit log; the request is refused");
    EngineError::Internal(format!("the audit log cannot be written, so nothing runs: {e}"))
}

type Writing = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// A result stream that writes the query's finish record before it lets the
/// last batch go: a result is complete only once its record is durable.
pub(crate) struct AuditedStream {
    inner: SendableRecordBatchStream,
    held: Option<RecordBatch>,
    audit: Option<PendingAudit>,
    /// The finish record being written, and the error to return after it
    /// (for a failed query).
    writing: Option<(Writing, Option<DataFusionError>)>,
    done: bool,
}

impl AuditedStream {
    pub(crate) fn new(inner: SendableRecordBatchStream, audit: PendingAudit) -> Self {
        AuditedStream { inner, held: None, audit: Some(audit), writing: None, done: false }
    }
}

impl Stream for AuditedStream {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some((writing, _)) = self.writing.as_mut() {
                let written = futures::ready!(writing.poll_unpin(cx));
                let failure = self.writing.take().and_then(|(_, failure)| failure);
                self.done = true;
                return Poll::Ready(match (failure, written) {
                    (Some(e), _) => Some(Err(e)),
                    (None, Err(e)) => {
                        self.held = None;
                        Some(Err(DataFusionError::External(
                            format!("the audit record could not be written, so the result is withheld: {e}").into(),
                        )))
                    }
                    (None, Ok(())) => self.held.take().map(Ok),
                });
            }
            if self.done {
                return Poll::Ready(self.held.take().map(Ok));
            }
            match futures::ready!(self.inner.as_mut().poll_next(cx)) {
                Some(Ok(batch)) => {
                    if let Some(r) = self.audit.as_mut().and_then(PendingAudit::record_mut) {
                        r.rows += batch.num_rows() as u64;
                        r.bytes += batch.get_array_memory_size() as u64;
                    }
                    if let Some(previous) = self.held.replace(batch) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Some(Err(e)) => {
                    self.held = None;
                    let status = AuditStatus::of(&EngineError::from(&e));
                    match self.audit.take() {
                        Some(a) => {
                            self.writing = Some((Box::pin(a.finish_async(status, Some(e.to_string()))), Some(e)))
                        }
                        None => {
                            self.done = true;
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                }
                None => match self.audit.take() {
                    Some(a) => self.writing = Some((Box::pin(a.finish_async(AuditStatus::Ok, None)), None)),
                    None => self.done = true,
                },
            }
        }
    }
}

impl RecordBatchStream for AuditedStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

impl Drop for AuditedStream {
    fn drop(&mut self) {
        // A stream dropped before its end: the client went away or cancelled.
        if let Some(a) = self.audit.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn(a.finish_async(AuditStatus::Cancelled, None))),
                Err(_) => drop(a.finish(AuditStatus::Cancelled, None)),
            }
        }
    }
}
