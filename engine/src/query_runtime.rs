//! The runtime queries run on, apart from the caller's.
//!
//! DataFusion's operators do not always yield (a nested-loop join computes a
//! whole output batch before it returns), so a query sharing the network
//! runtime's workers could leave a server unable to answer even a login. Every
//! query is therefore planned and executed on a runtime of its own, with
//! threads whose stacks are large enough for any tree the limits admit, and its
//! results reach the caller through a small channel. Dropping the caller's
//! stream (a client went away, a timeout fired) stops the query's task at its
//! next await point, and a panic inside a query becomes that query's error
//! instead of taking anything else down.
//!
//! Separate threads are not enough when the cores are saturated: the kernel
//! would share them evenly between a login and sixteen heavy queries. Query
//! threads therefore run at a lower scheduling priority ([`QUERY_NICENESS`]),
//! so the network threads, and the small runtime of statements that read
//! nothing, get a core as soon as they have work; heavy queries still use
//! every idle cycle.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{FutureExt, Stream, StreamExt};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::EngineError;

/// Stack of each query thread. Planning recurses on expression trees; with the
/// default limits a tree is at most a few hundred levels deep, which needs far
/// less, but the parser and the destructors of a refused statement walk the
/// whole tree the text describes. The memory is reserved, not committed.
const STACK_BYTES: usize = 64 * 1024 * 1024;

/// Batches buffered between a query and its reader: enough to overlap
/// producing and sending, small enough that an unread result holds no memory.
const CHANNEL_BATCHES: usize = 2;

/// How many steps below the server's own priority query threads run (Linux
/// nice values; 19 is the lowest priority). Ten steps lower, a thread gets
/// about a tenth of the CPU share of a thread it competes with for a core.
pub(crate) const QUERY_NICENESS: i32 = 10;

/// A multi-threaded tokio runtime for queries, shut down without waiting when
/// the engine is dropped (also from inside another runtime).
pub(crate) struct QueryRuntime {
    runtime: Option<Runtime>,
    /// Cancelled when the server shuts down: every result stream then ends
    /// with [`ShuttingDown`].
    stop: CancellationToken,
}

impl std::fmt::Debug for QueryRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRuntime").finish_non_exhaustive()
    }
}

impl QueryRuntime {
    /// Starts `threads` worker threads named `name`, running `niceness` steps
    /// below the priority of the thread that starts them (see
    /// [`QUERY_NICENESS`]; 0 keeps it).
    pub(crate) fn new(threads: usize, name: &'static str, niceness: i32) -> Result<Self, EngineError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .thread_stack_size(STACK_BYTES)
            .on_thread_start(move || lower_priority(niceness))
            .enable_all()
            .build()
            .map_err(|e| EngineError::Execution(format!("cannot start the query runtime: {e}")))?;
        Ok(QueryRuntime { runtime: Some(runtime), stop: CancellationToken::new() })
    }

    fn handle(&self) -> Result<&tokio::runtime::Handle, EngineError> {
        self.runtime
            .as_ref()
            .map(Runtime::handle)
            .ok_or_else(|| EngineError::Execution("the engine is shut down".into()))
    }

    /// Runs `work` on the query runtime and waits for it. A panic in `work`
    /// is returned as an error; dropping the returned future cancels `work`.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl Future<Output = Result<T, EngineError>> + Send + 'static,
    ) -> Result<T, EngineError> {
        // The task runs in the caller's span (a query's planning span).
        let work = tracing::Instrument::instrument(work, tracing::Span::current());
        let task = AbortOnDrop(self.handle()?.spawn(work));
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(panicked(what, e.into_panic())),
            Err(e) => Err(EngineError::Execution(format!("{what} was cancelled: {e}"))),
        }
    }

    /// Drives `stream` on the query runtime and hands its batches over through
    /// a channel. The query stops when the returned stream is dropped, when
    /// `deadline` passes (the returned stream then ends with `on_timeout`'s
    /// error), when `cancelled` resolves (it ends with a [`Cancelled`] error
    /// carrying the message `cancelled` resolved to) or when `limit` refuses
    /// a batch.
    pub(crate) fn drive(
        &self,
        mut stream: SendableRecordBatchStream,
        deadline: Instant,
        cancelled: Pin<Box<dyn Future<Output = String> + Send>>,
        on_timeout: String,
        exhausted_hint: String,
        mut limit: impl FnMut(&RecordBatch) -> Result<(), DataFusionError> + Send + 'static,
    ) -> Result<SendableRecordBatchStream, EngineError> {
        let schema = stream.schema();
        let (sender, receiver) = mpsc::channel(CHANNEL_BATCHES);
        // The deadline is kept by the reading end (see `Received`), which
        // aborts this task when it passes.
        let span = tracing::Span::current();
        let task = self.handle()?.spawn(tracing::Instrument::instrument(
            async move {
                loop {
                    let next = tokio::select! {
                        // The reader went away: stop now, dropping the plan.
                        _ = sender.closed() => return,
                        next = AssertUnwindSafe(stream.next()).catch_unwind() => next,
                    };
                    let item = match next {
                        Err(panic) => Some(Err(DataFusionError::External(Box::new(Panicked(panic_message(&*panic)))))),
                        Ok(None) => None,
                        Ok(Some(Ok(batch))) => Some(limit(&batch).map(|()| batch)),
                        Ok(Some(Err(e))) => Some(Err(explain_exhausted(e, &exhausted_hint))),
                    };
                    let Some(item) = item else { return };
                    let last = item.is_err();
                    if sender.send(item).await.is_err() || last {
                        return;
                    }
                }
            },
            span,
        ));
        let received = Received {
            stopped: Box::pin(self.stop.clone().cancelled_owned()),
            cancelled,
            receiver,
            deadline: Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(deadline))),
            on_timeout: Some(on_timeout),
            _task: AbortOnDrop(task),
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, received)))
    }
}

impl QueryRuntime {
    /// Ends every result stream, running or started later, with
    /// [`ShuttingDown`], stopping its query: what a server does when its
    /// drain time is over.
    pub(crate) fn stop_streams(&self) {
        self.stop.cancel();
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lowers the calling thread's scheduling priority by `niceness` steps
/// (relative, so a server started under `nice` keeps its query threads below
/// its own network threads). On Linux the nice value belongs to the thread,
/// not the process. A refusal (a sandbox without the call) leaves the priority
/// as it was: queries are then merely less isolated, logged at debug level.
///
/// A direct call rather than the `thread-priority` crate: one system call
/// does not warrant a dependency.
fn lower_priority(niceness: i32) {
    if niceness == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `__errno_location` returns the calling thread's errno slot,
        // which is cleared because -1 is also a valid result of `nice`; `nice`
        // only reads its integer argument and changes the calling thread's
        // nice value.
        let result = unsafe {
            *libc::__errno_location() = 0;
            libc::nice(niceness)
        };
        if result == -1 && std::io::Error::last_os_error().raw_os_error().is_some_and(|e| e != 0) {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower a query thread's priority");
        }
    }
}

/// Adds the configured limits to a memory or spill error: DataFusion's own
/// message names its internal settings, not the operator's configuration keys.
fn explain_exhausted(error: DataFusionError, hint: &str) -> DataFusionError {
    // The spill cap surfaces as an I/O error deep inside a writer.
    if error.to_string().contains("used disk space during the spilling process has exceeded") {
        return DataFusionError::ResourcesExhausted(format!(
            "the query's spill files would exceed the server's spill space (limits.max_spill_bytes) {hint}"
        ));
    }
    match error.find_root() {
        DataFusionError::ResourcesExhausted(message) => {
            DataFusionError::ResourcesExhausted(format!("{} {hint}", message.trim_end()))
        }
        _ => error,
    }
}

/// A query's statement timeout fired; recovered by [`EngineError::from`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Timeout(pub(crate) String);

/// The server stopped the query's stream while shutting down; recovered by
/// [`EngineError::from`].
#[derive(Debug, thiserror::Error)]
#[error("{SHUTTING_DOWN}")]
pub(crate) struct ShuttingDown;

/// The message of [`ShuttingDown`], which the audit log records as `cancelled`.
pub(crate) const SHUTTING_DOWN: &str = "the server is shutting down: the query was stopped";

/// The query was cancelled (`cancel_query`); recovered by [`EngineError::from`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Cancelled(pub(crate) String);

/// A query panicked; recovered by [`EngineError::from`] as an internal error.
#[derive(Debug, thiserror::Error)]
#[error("internal error: {0}")]
pub(crate) struct Panicked(pub(crate) String);

fn panicked(what: &str, panic: Box<dyn Any + Send>) -> EngineError {
    let message = panic_message(&*panic);
    tracing::error!(what, panic = %message.escape_debug(), "a query panicked; the request failed, the engine goes on");
    EngineError::Internal(format!("{what} failed unexpectedly ({message}); the error was logged"))
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Aborts a task when its handle is dropped (tokio detaches it otherwise).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The reading end of a driven query. It keeps the deadline, on the reader's
/// runtime, so the caller learns of a timeout on time even while the query's
/// thread is busy inside an operator (the query stops at its next await
/// point, when the task is aborted).
struct Received {
    /// Ready once the server stops its streams.
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Ready once the query is cancelled, with the error's message.
    cancelled: Pin<Box<dyn Future<Output = String> + Send>>,
    receiver: mpsc::Receiver<Result<RecordBatch, DataFusionError>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The timeout's message; `None` once the stream has ended.
    on_timeout: Option<String>,
    _task: AbortOnDrop<()>,
}

impl Stream for Received {
    type Item = Result<RecordBatch, DataFusionError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.on_timeout.is_none() {
            return Poll::Ready(None);
        }
        // Checked before the channel: a query whose batches are always
        // ready must still stop at its deadline, a cancel or a shutdown.
        let stop = if self.stopped.as_mut().poll(cx).is_ready() {
            Some(DataFusionError::External(Box::new(ShuttingDown)))
        } else if let Poll::Ready(message) = self.cancelled.as_mut().poll(cx) {
            Some(DataFusionError::External(Box::new(Cancelled(message))))
        } else if self.deadline.as_mut().poll(cx).is_ready() {
            let message = self.on_timeout.clone().unwrap_or_default();
            Some(DataFusionError::External(Box::new(Timeout(message))))
        } else {
            None
        };
        if let Some(error) = stop {
            self._task.0.abort();
            self.on_timeout = None;
            return Poll::Ready(Some(Err(error)));
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(Ok(batch))) => Poll::Ready(Some(Ok(batch))),
            // An error or the end: the stream is over.
            Poll::Ready(last) => {
                self.on_timeout = None;
                Poll::Ready(last)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap()
    }

    fn endless() -> SendableRecordBatchStream {
        let b = batch();
        let stream = futures::stream::unfold((), move |()| {
            let b = b.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Some((Ok(b), ()))
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(batch().schema(), stream))
    }

    #[tokio::test]
    async fn a_panic_is_an_error_and_the_runtime_goes_on() {
        let runtime = QueryRuntime::new(1, "test-query", 0).unwrap();
        let err = runtime.run("planning", async { panic!("boom") as Result<(), EngineError> }).await.unwrap_err();
        assert!(matches!(err, EngineError::Internal(_)), "{err}");
        assert!(err.to_string().contains("boom"), "{err}");
        assert_eq!(runtime.run("planning", async { Ok(7) }).await.unwrap(), 7);
    }

    /// The niceness of the calling thread, from `/proc` (field 19 of its stat line).
    #[cfg(target_os = "linux")]
    fn own_niceness() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split_whitespace().nth(16).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn query_threads_run_at_a_lower_priority_than_their_caller() {
        let caller = own_niceness();
        let runtime = QueryRuntime::new(1, "test-query", QUERY_NICENESS).unwrap();
        let inside = runtime.run("probe", async { Ok(own_niceness()) }).await.unwrap();
        assert_eq!(inside, (caller + QUERY_NICENESS).min(19), "the caller runs at {caller}");
        assert_eq!(own_niceness(), caller, "only the query threads were lowered");
        let constant = QueryRuntime::new(1, "test-constant", 0).unwrap();
        assert_eq!(constant.run("probe", async { Ok(own_niceness()) }).await.unwrap(), caller);
    }

    #[tokio::test]
    async fn the_deadline_ends_the_stream_with_its_error() {
        let runtime = QueryRuntime::new(1, "test-query", 0).unwrap();
        let deadline = Instant::now() + Duration::from_millis(100);
        let mut stream = runtime
            .drive(endless(), deadline, Box::pin(std::future::pending()), "too slow".into(), String::new(), |_| Ok(()))
            .unwrap();
        let mut rows = 0;
        let error = loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap() {
                Some(Ok(b)) => rows += b.num_rows(),
                Some(Err(e)) => break e,
                None => panic!("the stream ended without the timeout"),
            }
        };
        assert!(rows > 0);
        assert!(matches!(EngineError::from(error), EngineError::Timeout(m) if m == "too slow"));
    }

    #[tokio::test]
    async fn a_refused_batch_ends_the_stream() {
        let runtime = QueryRuntime::new(1, "test-query", 0).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        let limit = move |b: &RecordBatch| {
            seen += b.num_rows();
            if seen > 5 { Err(DataFusionError::ResourcesExhausted("too many rows".into())) } else { Ok(()) }
        };
        let stream = runtime
            .drive(endless(), deadline, Box::pin(std::future::pending()), String::new(), String::new(), limit)
            .unwrap();
        let items: Vec<_> = tokio::time::timeout(Duration::from_secs(5), stream.collect::<Vec<_>>()).await.unwrap();
        assert_eq!(items.len(), 2, "one batch passes, the second is refused and ends the stream");
        assert!(items[0].is_ok() && items[1].is_err());
    }

    #[tokio::test]
    async fn a_cancelled_query_ends_with_the_cancel_message() {
        let runtime = QueryRuntime::new(1, "test-query", 0).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let token = CancellationToken::new();
        let cancel = token.clone();
        let cancelled = Box::pin(async move {
            cancel.cancelled().await;
            "stopped by ann".to_string()
        });
        let mut stream =
            runtime.drive(endless(), deadline, cancelled, String::new(), String::new(), |_| Ok(())).unwrap();
        assert!(stream.next().await.unwrap().is_ok());
        token.cancel();
        let error = loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap() {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("the stream ended without the cancel"),
            }
        };
        assert!(matches!(EngineError::from(error), EngineError::Cancelled(m) if m == "stopped by ann"));
        assert!(stream.next().await.is_none(), "nothing after the cancel");
    }

    #[test]
    fn dropping_the_engine_inside_a_runtime_does_not_panic() {
        let outer = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        outer.block_on(async {
            let runtime = QueryRuntime::new(1, "test-query", 0).unwrap();
            drop(runtime);
        });
    }
}
