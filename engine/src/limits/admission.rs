//! Admission control: how many queries run at once, server-wide and per
//! principal, and how many may wait.
//!
//! A query takes a slot before it is planned and keeps it until its stream
//! ends or is dropped. When no slot is free it waits in a bounded queue for at
//! most `queue_timeout_seconds`; a full queue or a long wait is refused with
//! `ResourcesExhausted` naming the limit, so a flood from one principal can
//! neither run the machine out of memory nor hold the queue for everybody.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::EngineError;

/// Entries of idle principals are dropped once the map holds this many.
const PRUNE_AT: usize = 1024;

/// Statements that read nothing running at once, beside the regular slots.
const CONSTANT_LANE: usize = 4;

/// The slots of one engine.
#[derive(Debug)]
pub(crate) struct Admission {
    running: Arc<Semaphore>,
    /// A lane of its own for statements that read nothing (`SELECT 1`, the
    /// probe of health checks and BI keep-alives), so that they never queue
    /// behind heavy queries.
    constant: Arc<Semaphore>,
    max_running: usize,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    queue_timeout: Duration,
    principals: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A query's right to run; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct QuerySlot {
    _permits: Vec<OwnedSemaphorePermit>,
    /// How long the query waited for its slot.
    pub(crate) queued: Duration,
    /// The slot is in the lane of statements that read nothing, which run on
    /// threads of their own.
    pub(crate) constant: bool,
}

/// A place in the queue, given back when the wait ends either way.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    /// Slots for `max_running` queries at once, with `max_queued` waiting at
    /// most `queue_timeout` each.
    pub(crate) fn new(max_running: usize, max_queued: usize, queue_timeout: Duration) -> Self {
        Admission {
            running: Arc::new(Semaphore::new(max_running.max(1))),
            constant: Arc::new(Semaphore::new(CONSTANT_LANE)),
            max_running: max_running.max(1),
            queued: Arc::new(AtomicUsize::new(0)),
            max_queued,
            queue_timeout,
            principals: Mutex::new(HashMap::new()),
        }
    }

    /// Queries waiting, running or streaming now, in either lane.
    pub(crate) fn busy(&self) -> usize {
        self.queued() + self.running() + CONSTANT_LANE.saturating_sub(self.constant.available_permits())
    }

    /// Queries waiting for a slot now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Queries holding a regular slot now (planning, running or streaming).
    pub(crate) fn running(&self) -> usize {
        self.max_running.saturating_sub(self.running.available_permits())
    }

    /// Takes a slot for a query of `user`, who may run `per_principal` at once.
    pub(crate) async fn admit(&self, user: &str, per_principal: usize) -> Result<QuerySlot, EngineError> {
        let started = Instant::now();
        let own = self.principal(user, per_principal);
        // The fast path: both slots free, no queueing.
        if let Ok(own_permit) = Arc::clone(&own).try_acquire_owned() {
            if let Ok(running) = Arc::clone(&self.running).try_acquire_owned() {
                return Ok(QuerySlot { _permits: vec![own_permit, running], queued: Duration::ZERO, constant: false });
            }
            drop(own_permit);
        }
        let now_waiting = self.queued.fetch_add(1, Ordering::SeqCst) + 1;
        let waiting = Waiting(Arc::clone(&self.queued));
        if now_waiting > self.max_queued {
            drop(waiting);
            return Err(EngineError::ResourcesExhausted(format!(
                "the server's query queue is full ({} queries waiting, limits.max_queued_queries); retry later",
                self.max_queued
            )));
        }
        let wait = async {
            let own = own.acquire_owned().await;
            let running = Arc::clone(&self.running).acquire_owned().await;
            (own, running)
        };
        let outcome = tokio::time::timeout(self.queue_timeout, wait).await;
        drop(waiting);
        match outcome {
            Ok((Ok(own), Ok(running))) => {
                Ok(QuerySlot { _permits: vec![own, running], queued: started.elapsed(), constant: false })
            }
            Ok(_) => Err(EngineError::Execution("the engine is shutting down".into())),
            Err(_) => Err(EngineError::ResourcesExhausted(format!(
                "no query slot became free within {} s (limits.queue_timeout_seconds): user '{user}' may run {per_principal} \
                 queries at once (limits.max_queries_per_principal) and the server {} (limits.max_concurrent_queries)",
                self.queue_timeout.as_secs_f64(),
                self.max_running
            ))),
        }
    }

    /// Takes a slot in the lane of statements that read nothing.
    pub(crate) async fn admit_constant(&self) -> Result<QuerySlot, EngineError> {
        let started = Instant::now();
        match tokio::time::timeout(self.queue_timeout, Arc::clone(&self.constant).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(QuerySlot { _permits: vec![permit], queued: started.elapsed(), constant: true }),
            Ok(Err(_)) => Err(EngineError::Execution("the engine is shutting down".into())),
            Err(_) => Err(EngineError::ResourcesExhausted(format!(
                "no slot for a constant statement became free within {} s (limits.queue_timeout_seconds)",
                self.queue_timeout.as_secs_f64()
            ))),
        }
    }

    fn principal(&self, user: &str, per_principal: usize) -> Arc<Semaphore> {
        let mut map = self.principals.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PRUNE_AT {
            // Only the map holds an idle principal's semaphore.
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        Arc::clone(map.entry(user.to_string()).or_insert_with(|| Arc::new(Semaphore::new(per_principal.max(1)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn busy_counts_both_lanes_until_their_slots_are_dropped() {
        let admission = Admission::new(4, 8, Duration::from_secs(5));
        assert_eq!(admission.busy(), 0);
        let running = admission.admit("a", 4).await.unwrap();
        let constant = admission.admit_constant().await.unwrap();
        assert_eq!(admission.busy(), 2);
        drop(running);
        assert_eq!(admission.busy(), 1);
        drop(constant);
        assert_eq!(admission.busy(), 0);
    }

    #[tokio::test]
    async fn a_principal_over_its_quota_waits_then_is_refused_while_others_run() {
        let admission = Admission::new(4, 8, Duration::from_millis(200));
        let first = admission.admit("a", 1).await.unwrap();
        assert_eq!(first.queued, Duration::ZERO);
        let refused = admission.admit("a", 1).await.unwrap_err();
        assert!(refused.to_string().contains("limits.max_queries_per_principal"), "{refused}");
        assert!(matches!(refused, EngineError::ResourcesExhausted(_)));
        // Another principal is not held up by a's quota.
        let other = admission.admit("b", 1).await.unwrap();
        drop(other);
        // Once a's first query ends, a runs again.
        drop(first);
        admission.admit("a", 1).await.unwrap();
        assert_eq!(admission.queued(), 0);
    }

    #[tokio::test]
    async fn a_waiting_query_starts_when_a_slot_frees() {
        let admission = Arc::new(Admission::new(1, 8, Duration::from_secs(5)));
        let first = admission.admit("a", 4).await.unwrap();
        let waiter = {
            let admission = Arc::clone(&admission);
            tokio::spawn(async move { admission.admit("b", 4).await.map(|s| s.queued) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(admission.queued(), 1);
        drop(first);
        let queued = waiter.await.unwrap().unwrap();
        assert!(queued >= Duration::from_millis(40), "{queued:?}");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let admission = Arc::new(Admission::new(1, 1, Duration::from_secs(5)));
        let _running = admission.admit("a", 4).await.unwrap();
        let queued = {
            let admission = Arc::clone(&admission);
            tokio::spawn(async move { admission.admit("b", 4).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let err = admission.admit("c", 4).await.unwrap_err();
        assert!(err.to_string().contains("limits.max_queued_queries"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
        queued.abort();
    }
}
