//! How fresh a product's view of its source is: the `freshness` section.
//!
//! Sources change under a running server: a job adds, deletes or atomically
//! replaces Parquet files, a writer commits a new Delta version, a DBA adds a
//! column to a PostgreSQL table. Two things are cached between queries and each
//! has its own bound:
//!
//! - **Listings** of Parquet directories (DataFusion's list-files cache). They
//!   are what the scan reads, file by file, with the sizes it expects, so a
//!   stale listing misses new files and fails on deleted or replaced ones. By
//!   default nothing is cached: each query lists its products' directories,
//!   and DataFusion's footer and statistics caches, validated against each
//!   file's size and modification time, serve only files that did not change.
//! - **Opened tables**: the inferred Parquet schema and partition columns, the
//!   Delta snapshot, the PostgreSQL table's columns. They are read again when
//!   older than `metadata_ttl_seconds`, on the next query that names them.

use std::time::Duration;

use datafusion::execution::cache::cache_manager::{CacheManagerConfig, DEFAULT_LIST_FILES_CACHE_MEMORY_LIMIT};

/// The `freshness` section of a mesh file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshnessConfig {
    /// How long a Parquet directory listing is reused
    /// (`freshness.listing_ttl_seconds`); zero, the default, lists at every
    /// query. Within a non-zero TTL, added files are not seen and a deleted or
    /// replaced file fails the queries that read it, so a TTL suits only
    /// directories too large to list per query whose files change rarely.
    pub listing_ttl: Duration,
    /// How long an opened table (schema, Delta snapshot, PostgreSQL columns) is
    /// used before its source is opened again (`freshness.metadata_ttl_seconds`,
    /// 5 s by default; zero opens it for every query).
    pub metadata_ttl: Duration,
}

impl Default for FreshnessConfig {
    fn default() -> Self {
        FreshnessConfig { listing_ttl: Duration::ZERO, metadata_ttl: Duration::from_secs(5) }
    }
}

impl FreshnessConfig {
    /// DataFusion's caches for this configuration: no list-files cache unless a
    /// listing TTL is set; the footer and statistics caches keep their defaults,
    /// since they are checked against each file's size and modification time.
    pub(crate) fn cache_manager(&self) -> CacheManagerConfig {
        let config = CacheManagerConfig::default();
        if self.listing_ttl.is_zero() {
            config.with_list_files_cache_limit(0)
        } else {
            config
                .with_list_files_cache_limit(DEFAULT_LIST_FILES_CACHE_MEMORY_LIMIT)
                .with_list_files_cache_ttl(Some(self.listing_ttl))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::cache::cache_manager::CacheManager;

    #[test]
    fn listings_are_not_cached_by_default_and_expire_when_a_ttl_is_set() {
        let default = CacheManager::try_new(&FreshnessConfig::default().cache_manager()).unwrap();
        assert!(default.get_list_files_cache().is_none());
        // The footer cache stays: it is validated per file.
        assert!(default.get_metadata_cache_limit() > 0);

        let ttl = FreshnessConfig { listing_ttl: Duration::from_secs(30), ..Default::default() };
        let cached = CacheManager::try_new(&ttl.cache_manager()).unwrap();
        assert!(cached.get_list_files_cache().is_some());
        assert_eq!(cached.get_list_files_cache_ttl(), Some(Duration::from_secs(30)));
    }
}
