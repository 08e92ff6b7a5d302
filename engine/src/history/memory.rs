//! One query's view of the engine's memory pool, to know its peak use.
//!
//! The pool is shared by every running query (`limits.memory_limit_bytes`)
//! and does not say which query holds what; each query's operators
//! therefore reserve through a [`QueryMemory`], which passes every call on
//! to the shared pool unchanged and counts the query's own bytes.

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation};

use super::QueryEntry;

/// The shared pool, seen by one query.
#[derive(Debug)]
pub(crate) struct QueryMemory {
    pool: Arc<dyn MemoryPool>,
    entry: Arc<QueryEntry>,
}

impl QueryMemory {
    pub(crate) fn new(pool: Arc<dyn MemoryPool>, entry: Arc<QueryEntry>) -> Self {
        QueryMemory { pool, entry }
    }
}

impl std::fmt::Display for QueryMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (seen by query {})", self.pool, self.entry.context.id)
    }
}

impl MemoryPool for QueryMemory {
    fn name(&self) -> &str {
        self.pool.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.pool.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.pool.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.pool.grow(reservation, additional);
        self.entry.memory_grew(additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.pool.shrink(reservation, shrink);
        self.entry.memory_shrank(shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.pool.try_grow(reservation, additional)?;
        self.entry.memory_grew(additional);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.pool.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.pool.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{HistoryConfig, QueryHistory};
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn a_query_counts_its_own_reservations_and_the_pool_still_limits() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let other = MemoryConsumer::new("other").register(&shared);
        other.grow(300);
        let history = QueryHistory::open(&HistoryConfig::default());
        let entry = history.begin(crate::query_context::Origin::default().context("ann"), None);
        let pool: Arc<dyn MemoryPool> = Arc::new(QueryMemory::new(Arc::clone(&shared), Arc::clone(entry.entry())));
        let mine = MemoryConsumer::new("sort").register(&pool);
        mine.try_grow(500).unwrap();
        assert!(mine.try_grow(500).is_err(), "the shared limit applies");
        mine.shrink(400);
        drop(mine);
        assert_eq!(shared.reserved(), 300);
        let info = entry.entry().info(None);
        assert_eq!(info.peak_memory_bytes, 500);
    }
}
