//! One query's entry in the history: its live state, and the query's hold on
//! it that records the query when it ends.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{QueryHistory, QueryInfo, QueryState, lock, tracked};
use crate::EngineError;
use crate::query_context::QueryContext;

/// The longest statement text kept per query.
const MAX_SQL_CHARS: usize = 4096;

/// One query's live state.
#[derive(Debug)]
pub(crate) struct QueryEntry {
    pub(crate) context: QueryContext,
    sql: Option<String>,
    arrived: Instant,
    progress: Mutex<Progress>,
    rows: AtomicU64,
    bytes: AtomicU64,
    /// Bytes reserved now and at most in the memory pool (see [`QueryMemory`]).
    reserved: AtomicU64,
    peak: AtomicU64,
    spilled: AtomicU64,
    /// Cancelled by `cancel_query`: the query stops at its next step.
    pub(crate) cancel: CancellationToken,
}

#[derive(Debug)]
struct Progress {
    state: QueryState,
    queued: Duration,
    planning_since: Option<Instant>,
    planning: Duration,
    running_since: Option<Instant>,
    products: Vec<String>,
    /// Who cancelled it, for its error.
    cancelled_by: Option<String>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            state: QueryState::Queued,
            queued: Duration::ZERO,
            planning_since: None,
            planning: Duration::ZERO,
            running_since: None,
            products: Vec::new(),
            cancelled_by: None,
        }
    }
}

impl QueryEntry {
    pub(super) fn new(context: QueryContext, sql: Option<&str>) -> Arc<Self> {
        Arc::new(QueryEntry {
            sql: sql.map(|s| s.chars().take(MAX_SQL_CHARS).collect()),
            context,
            arrived: Instant::now(),
            progress: Mutex::new(Progress::default()),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            cancel: CancellationToken::new(),
        })
    }

    /// The query's state now.
    pub(crate) fn state(&self) -> QueryState {
        lock(&self.progress).state
    }

    /// Asks the query to stop; `by` is recorded in its error.
    pub(crate) fn cancel(&self, by: &str) {
        lock(&self.progress).cancelled_by.get_or_insert_with(|| by.to_string());
        self.cancel.cancel();
    }

    /// The error a cancelled query ends with.
    pub(crate) fn cancelled_error(&self) -> EngineError {
        let by = lock(&self.progress).cancelled_by.clone().unwrap_or_default();
        EngineError::Cancelled(format!("the query was cancelled by {by} (cancel_query)"))
    }

    pub(super) fn info(&self, end: Option<(QueryState, Option<String>)>) -> QueryInfo {
        let p = lock(&self.progress);
        let now = Instant::now();
        let planning = p.planning + p.planning_since.map(|s| now.duration_since(s)).unwrap_or_default();
        let execution = p.running_since.map(|s| now.duration_since(s)).unwrap_or_default();
        let (state, error) = end.unwrap_or((p.state, None));
        let millis =
            |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let c = &self.context;
        QueryInfo {
            query_id: c.id.clone(),
            user: c.user.clone(),
            client: c.client.clone(),
            protocol: c.protocol.to_string(),
            purpose: c.purpose.clone(),
            trace_id: c.trace_id.clone(),
            sql: self.sql.clone(),
            state: state.as_str().to_string(),
            received_at_ms: millis(c.received),
            ended_at_ms: state.is_final().then(|| millis(c.received + now.duration_since(self.arrived))),
            queued_ms: p.queued.as_millis() as u64,
            planning_ms: planning.as_millis() as u64,
            execution_ms: execution.as_millis() as u64,
            rows: self.rows.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            peak_memory_bytes: self.peak.load(Ordering::Relaxed),
            spilled_bytes: self.spilled.load(Ordering::Relaxed),
            products: p.products.clone(),
            error,
        }
    }

    pub(crate) fn memory_grew(&self, bytes: usize) {
        let now = self.reserved.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn memory_shrank(&self, bytes: usize) {
        let _ =
            self.reserved.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| Some(r.saturating_sub(bytes as u64)));
    }
}

/// A query's hold on its history entry. Ending it records the query;
/// dropping it before then means the query was given up before it ran
/// (planned only, or its caller went away during planning): a query that was
/// running is recorded as cancelled, one that never ran is forgotten.
#[derive(Debug)]
pub(crate) struct HistoryEntry {
    entry: Arc<QueryEntry>,
    history: Arc<QueryHistory>,
    open: bool,
}

impl HistoryEntry {
    pub(super) fn new(entry: Arc<QueryEntry>, history: Arc<QueryHistory>) -> Self {
        HistoryEntry { entry, history, open: true }
    }

    pub(crate) fn entry(&self) -> &Arc<QueryEntry> {
        &self.entry
    }

    /// The slot was granted after `queued`: planning starts.
    pub(crate) fn planning(&self, queued: Duration) {
        let mut p = lock(&self.entry.progress);
        p.queued = queued;
        p.state = QueryState::Planning;
        p.planning_since = Some(Instant::now());
    }

    /// Planning is over (for now: `stream` plans physically later).
    pub(crate) fn planned(&self) {
        let mut p = lock(&self.entry.progress);
        if let Some(since) = p.planning_since.take() {
            p.planning += since.elapsed();
        }
    }

    /// Physical planning starts again before execution.
    pub(crate) fn planning_again(&self) {
        lock(&self.entry.progress).planning_since = Some(Instant::now());
    }

    /// Execution started, reading `products`.
    pub(crate) fn running(&self, products: Vec<String>) {
        self.planned();
        let mut p = lock(&self.entry.progress);
        p.state = QueryState::Running;
        p.running_since = Some(Instant::now());
        p.products = products;
    }

    /// Counts a batch returned.
    pub(crate) fn returned(&self, rows: usize, bytes: usize) {
        self.entry.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.entry.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn spilled(&self, bytes: u64) {
        self.entry.spilled.store(bytes, Ordering::Relaxed);
    }

    /// The query ended in `state` (with `error` unless it finished): it
    /// leaves the running set for the ring and the file, and is logged and
    /// counted.
    pub(crate) fn end(mut self, state: QueryState, error: Option<String>) {
        self.close(state, error);
    }

    /// [`HistoryEntry::end`] for a query that ended with `error`.
    pub(crate) fn fail(self, error: &EngineError) {
        self.end(QueryState::of_error(error), Some(error.to_string()));
    }

    fn close(&mut self, state: QueryState, error: Option<String>) {
        if !std::mem::replace(&mut self.open, false) {
            return;
        }
        self.planned();
        let info = self.entry.info(Some((state, error)));
        tracked::report(&info, state);
        self.history.finish(&self.entry, info);
    }
}

impl Drop for HistoryEntry {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        if self.entry.state() == QueryState::Running {
            self.close(QueryState::Cancelled, None);
        } else {
            self.open = false;
            self.history.forget(&self.entry);
        }
    }
}
