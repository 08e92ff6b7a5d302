//! The query history: every query the engine received, running and finished.
//!
//! A query is registered when it arrives ([`QueryHistory::begin`]) and its
//! entry follows it through the queue, planning and execution; when it ends
//! it becomes a [`QueryInfo`] in a bounded ring (the newest
//! `history.keep` finished queries) and a line of the history file, from
//! which the ring is filled again at start. `system.queries` shows both
//! (admins all, principals their own), with or without governance, and
//! `CALL cancel_query('id')` stops a running one.
//!
//! A query planned only to tell its schema (a Flight SQL `GetFlightInfo`,
//! whose client then runs it with a `DoGet`) leaves no entry: its execution
//! is the query people look for. It is in the audit log as `planned`.

mod cancel;
mod entry;
mod memory;
mod tracked;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::jsonl::{JsonlFile, Rotation};
use crate::query_context::QueryContext;

pub(crate) use self::cancel::{CancelQuery, is_call};
pub(crate) use self::entry::{HistoryEntry, QueryEntry};
pub(crate) use self::memory::QueryMemory;
pub(crate) use self::tracked::TrackedStream;

/// The `history` section: how much of the query history is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// The JSON Lines file finished queries are appended to (`history.path`,
    /// by default `history/queries.jsonl` beside the mesh file); `None` keeps
    /// the history in memory only.
    pub path: Option<std::path::PathBuf>,
    /// Finished queries kept in memory and shown by `system.queries`.
    pub keep: usize,
    /// Rotation of the file (`history.max_file_bytes`, `history.keep_files`).
    pub rotation: Rotation,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { path: None, keep: 1000, rotation: Rotation::default() }
    }
}

/// Where a query is in its life. The last six are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryState {
    /// Waiting for a slot (`limits.max_concurrent_queries`).
    Queued,
    /// Being planned.
    Planning,
    /// Producing its result.
    Running,
    /// Its result was read to the end.
    Finished,
    /// It failed with an error.
    Failed,
    /// A policy refused it.
    Denied,
    /// It ran into `limits.statement_timeout_seconds`.
    TimedOut,
    /// It ran into a resource limit (memory, spill, result size).
    ResourceExhausted,
    /// Its client went away, `cancel_query` stopped it, or the server shut down.
    Cancelled,
}

impl QueryState {
    /// The name shown in `system.queries`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryState::Queued => "queued",
            QueryState::Planning => "planning",
            QueryState::Running => "running",
            QueryState::Finished => "finished",
            QueryState::Failed => "failed",
            QueryState::Denied => "denied",
            QueryState::TimedOut => "timeout",
            QueryState::ResourceExhausted => "resource_exhausted",
            QueryState::Cancelled => "cancelled",
        }
    }

    /// The final state of a query that ended with `error`.
    pub(crate) fn of_error(error: &EngineError) -> QueryState {
        match error {
            EngineError::Denied(_) => QueryState::Denied,
            EngineError::Timeout(_) => QueryState::TimedOut,
            EngineError::ResourcesExhausted(_) => QueryState::ResourceExhausted,
            EngineError::Cancelled(_) | EngineError::ShuttingDown(_) => QueryState::Cancelled,
            _ => QueryState::Failed,
        }
    }

    /// The `outcome` label of the query metrics (a fixed set).
    pub(crate) fn outcome(self) -> &'static str {
        match self {
            QueryState::Finished => "ok",
            QueryState::Denied => "denied",
            QueryState::TimedOut => "timeout",
            QueryState::ResourceExhausted => "resource_exhausted",
            QueryState::Cancelled => "cancelled",
            _ => "failed",
        }
    }

    pub(super) fn is_final(self) -> bool {
        !matches!(self, QueryState::Queued | QueryState::Planning | QueryState::Running)
    }
}

/// One query as `system.queries` shows it, and as the history file keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryInfo {
    /// The query's id (see [`QueryContext`]).
    pub query_id: String,
    /// Who ran it.
    pub user: String,
    /// The client's address.
    pub client: Option<String>,
    /// `flight-sql` or `embedded`.
    pub protocol: String,
    /// What the client said it is for.
    pub purpose: Option<String>,
    /// The W3C trace it belongs to.
    pub trace_id: Option<String>,
    /// The statement, capped at 4096 characters; none for a plan built with
    /// DataFusion's builders.
    pub sql: Option<String>,
    /// [`QueryState::as_str`].
    pub state: String,
    /// When it arrived, in milliseconds since the Unix epoch.
    pub received_at_ms: i64,
    /// When it ended.
    pub ended_at_ms: Option<i64>,
    /// Time waiting for a slot.
    pub queued_ms: u64,
    /// Time planning.
    pub planning_ms: u64,
    /// Time from the start of execution to the end (or to now).
    pub execution_ms: u64,
    /// Rows returned.
    pub rows: u64,
    /// Arrow memory size of the batches returned.
    pub bytes: u64,
    /// The most memory its operators held at once in the query memory pool.
    pub peak_memory_bytes: u64,
    /// Bytes its operators spilled to disk.
    pub spilled_bytes: u64,
    /// The products it read (`domain.product`).
    pub products: Vec<String>,
    /// Why it did not finish.
    pub error: Option<String>,
}

/// The history of one engine.
#[derive(Debug)]
pub(crate) struct QueryHistory {
    running: Mutex<HashMap<String, Arc<QueryEntry>>>,
    finished: Mutex<VecDeque<QueryInfo>>,
    keep: usize,
    file: Option<JsonlFile>,
}

impl QueryHistory {
    /// A history as `config` says, filled with the newest finished queries of
    /// its file. An unreadable file is logged and the history starts empty:
    /// the history must not keep a server from starting.
    pub(crate) fn open(config: &HistoryConfig) -> Arc<Self> {
        let file = config.path.as_ref().map(|p| JsonlFile::new(p, config.rotation));
        let mut finished = VecDeque::new();
        if let Some(file) = &file {
            match file.read_last(config.keep) {
                Ok(lines) => finished.extend(lines.iter().filter_map(|l| serde_json::from_str::<QueryInfo>(l).ok())),
                Err(e) => tracing::warn!(path = %file.path().display(), error = %e, "cannot read the query history"),
            }
        }
        Arc::new(QueryHistory {
            running: Mutex::new(HashMap::new()),
            finished: Mutex::new(finished),
            keep: config.keep,
            file,
        })
    }

    /// Registers a query that just arrived.
    pub(crate) fn begin(self: &Arc<Self>, context: QueryContext, sql: Option<&str>) -> HistoryEntry {
        let entry = QueryEntry::new(context, sql);
        lock(&self.running).insert(entry.context.id.clone(), Arc::clone(&entry));
        HistoryEntry::new(entry, Arc::clone(self))
    }

    /// Every query, running ones first, then finished ones newest first.
    pub(crate) fn all(&self) -> Vec<QueryInfo> {
        let mut running: Vec<QueryInfo> = lock(&self.running).values().map(|e| e.info(None)).collect();
        running.sort_by(|a, b| b.query_id.cmp(&a.query_id));
        running.extend(lock(&self.finished).iter().rev().cloned());
        running
    }

    /// The running query `id`, if there is one.
    pub(crate) fn running(&self, id: &str) -> Option<Arc<QueryEntry>> {
        lock(&self.running).get(id).cloned()
    }

    pub(super) fn finish(&self, entry: &QueryEntry, info: QueryInfo) {
        lock(&self.running).remove(&entry.context.id);
        if let Some(file) = &self.file {
            let written = serde_json::to_vec(&info).map_err(std::io::Error::other);
            if let Err(e) = written.and_then(|line| file.append(&[line], false)) {
                tracing::warn!(path = %file.path().display(), error = %e, "cannot append to the query history");
            }
        }
        let mut finished = lock(&self.finished);
        finished.push_back(info);
        while finished.len() > self.keep {
            finished.pop_front();
        }
    }

    pub(super) fn forget(&self, entry: &QueryEntry) {
        lock(&self.running).remove(&entry.context.id);
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::query_context::Origin;

    fn history(dir: &std::path::Path, keep: usize) -> Arc<QueryHistory> {
        QueryHistory::open(&HistoryConfig {
            path: Some(dir.join("queries.jsonl")),
            keep,
            rotation: Rotation::default(),
        })
    }

    #[test]
    fn queries_move_from_running_to_a_bounded_ring_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let h = history(dir.path(), 2);
        let origin = Origin::default();
        let mut ids = Vec::new();
        for n in 0..3 {
            let entry = h.begin(origin.context("ann"), Some(&format!("SELECT {n}")));
            ids.push(entry.entry().context.id.clone());
            entry.planning(Duration::from_millis(3));
            entry.running(vec!["sales.orders".into()]);
            assert_eq!(h.all()[0].state, "running");
            entry.returned(5, 40);
            entry.end(QueryState::Finished, None);
        }
        let all = h.all();
        assert_eq!(all.iter().map(|q| q.query_id.clone()).collect::<Vec<_>>(), vec![ids[2].clone(), ids[1].clone()]);
        assert_eq!((all[0].rows, all[0].bytes, all[0].queued_ms), (5, 40, 3));
        assert_eq!(all[0].products, vec!["sales.orders".to_string()]);
        assert!(all[0].ended_at_ms.is_some());
        // A new history reads the newest back from the file.
        let again = history(dir.path(), 2);
        assert_eq!(again.all(), all);
    }

    #[test]
    fn a_query_given_up_before_it_ran_is_forgotten_and_a_dropped_running_one_is_cancelled() {
        let h = QueryHistory::open(&HistoryConfig::default());
        let origin = Origin::default();
        let planned = h.begin(origin.context("ann"), Some("SELECT 1"));
        planned.planning(Duration::ZERO);
        drop(planned);
        assert!(h.all().is_empty());
        let running = h.begin(origin.context("ann"), Some("SELECT 2"));
        running.running(Vec::new());
        drop(running);
        assert_eq!(h.all().iter().map(|q| q.state.as_str()).collect::<Vec<_>>(), vec!["cancelled"]);
    }

    #[test]
    fn peak_memory_is_the_highest_reservation() {
        let h = QueryHistory::open(&HistoryConfig::default());
        let entry = h.begin(Origin::default().context("ann"), None);
        let e = entry.entry();
        e.memory_grew(100);
        e.memory_grew(50);
        e.memory_shrank(120);
        e.memory_grew(10);
        assert_eq!(e.info(None).peak_memory_bytes, 150);
    }
}
