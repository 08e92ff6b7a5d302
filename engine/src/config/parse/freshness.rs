//! The `freshness` section of a mesh file.

use std::time::Duration;

use serde_norway::{Mapping, Value};

use super::{Walker, describe, join};
use crate::freshness::FreshnessConfig;

/// The longest either TTL may be: a day. Longer would mean a restart is the
/// only way to see a source change, which no setting should promise.
const MAX_TTL_SECONDS: f64 = 86_400.0;

impl Walker<'_> {
    pub(super) fn freshness(&mut self, root: &Value) -> FreshnessConfig {
        let mut config = FreshnessConfig::default();
        let Some(value) = root.get("freshness") else { return config };
        let path = "freshness";
        let Some(map) = self.mapping(value, path, &["listing_ttl_seconds", "metadata_ttl_seconds"]) else {
            return config;
        };
        if let Some(ttl) = self.ttl(map, "listing_ttl_seconds", path) {
            config.listing_ttl = ttl;
        }
        if let Some(ttl) = self.ttl(map, "metadata_ttl_seconds", path) {
            config.metadata_ttl = ttl;
        }
        config
    }

    /// A number of seconds from zero (no caching) up to a day.
    fn ttl(&mut self, map: &Mapping, key: &str, path: &str) -> Option<Duration> {
        let value = map.get(key)?;
        match value.as_f64() {
            Some(s) if (0.0..=MAX_TTL_SECONDS).contains(&s) => Some(Duration::from_secs_f64(s)),
            _ => {
                self.problem(
                    &join(path, key),
                    format!("expected a number of seconds from 0 to {MAX_TTL_SECONDS}, found {}", describe(value)),
                );
                None
            }
        }
    }
}
