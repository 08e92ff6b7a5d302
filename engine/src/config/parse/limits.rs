//! The `limits` section of a mesh file.

use std::time::Duration;

use serde_norway::{Mapping, Value};

use super::{Walker, describe, join};
use crate::limits::{LimitsConfig, PrincipalLimits};

/// Keys of `limits.groups.<name>`: the limits that may differ per principal.
const PRINCIPAL_KEYS: &[&str] =
    &["statement_timeout_seconds", "max_queries_per_principal", "max_result_rows", "max_result_bytes"];

impl Walker<'_> {
    pub(super) fn limits(&mut self, root: &Value) -> LimitsConfig {
        let mut limits = LimitsConfig::default();
        let Some(value) = root.get("limits") else { return limits };
        let path = "limits";
        let mut keys = vec![
            "max_sql_bytes",
            "max_expression_depth",
            "max_in_list",
            "queue_timeout_seconds",
            "max_concurrent_queries",
            "max_queued_queries",
            "memory_limit_bytes",
            "spill_dir",
            "max_spill_bytes",
            "query_threads",
            "max_connections",
            "max_connections_per_address",
            "handshake_timeout_seconds",
            "groups",
        ];
        keys.extend_from_slice(PRINCIPAL_KEYS);
        let Some(map) = self.mapping(value, path, &keys) else { return limits };
        let count = |walker: &mut Self, key: &str, slot: &mut usize| {
            if let Some(n) = walker.positive(map, key, path) {
                *slot = usize::try_from(n).unwrap_or(usize::MAX);
            }
        };
        count(self, "max_sql_bytes", &mut limits.max_sql_bytes);
        count(self, "max_expression_depth", &mut limits.max_expression_depth);
        count(self, "max_in_list", &mut limits.max_in_list);
        count(self, "max_concurrent_queries", &mut limits.max_concurrent_queries);
        count(self, "max_queued_queries", &mut limits.max_queued_queries);
        count(self, "memory_limit_bytes", &mut limits.memory_limit_bytes);
        count(self, "query_threads", &mut limits.query_threads);
        count(self, "max_connections", &mut limits.max_connections);
        count(self, "max_connections_per_address", &mut limits.max_connections_per_address);
        if let Some(n) = self.positive(map, "max_spill_bytes", path) {
            limits.max_spill_bytes = n;
        }
        if let Some(d) = self.seconds(map, "queue_timeout_seconds", path) {
            limits.queue_timeout = d;
        }
        if let Some(d) = self.seconds(map, "handshake_timeout_seconds", path) {
            limits.handshake_timeout = d;
        }
        if map.contains_key("spill_dir") {
            limits.spill_dir = self.file_path(map, "spill_dir", path);
        }
        let defaults = self.principal_limits(map, path);
        let merged = &mut limits.defaults;
        merged.statement_timeout = defaults.statement_timeout.or(merged.statement_timeout);
        merged.max_queries_per_principal = defaults.max_queries_per_principal.or(merged.max_queries_per_principal);
        merged.max_result_rows = defaults.max_result_rows;
        merged.max_result_bytes = defaults.max_result_bytes;
        if let Some(groups) = map.get("groups") {
            let gpath = join(path, "groups");
            match groups {
                Value::Mapping(groups) => {
                    for (name, value) in groups {
                        let Some(name) = name.as_str() else {
                            self.problem(&gpath, format!("group names must be strings, found {}", describe(name)));
                            continue;
                        };
                        let epath = join(&gpath, name);
                        if let Some(group) = self.mapping(value, &epath, PRINCIPAL_KEYS) {
                            let parsed = self.principal_limits(group, &epath);
                            limits.groups.insert(name.to_string(), parsed);
                        }
                    }
                }
                other => self
                    .problem(&gpath, format!("expected a mapping of group names to limits, found {}", describe(other))),
            }
        }
        limits
    }

    fn principal_limits(&mut self, map: &Mapping, path: &str) -> PrincipalLimits {
        PrincipalLimits {
            statement_timeout: self.seconds(map, "statement_timeout_seconds", path),
            max_queries_per_principal: self
                .positive(map, "max_queries_per_principal", path)
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_result_rows: self.positive(map, "max_result_rows", path),
            max_result_bytes: self.positive(map, "max_result_bytes", path),
        }
    }

    /// A positive integer under `key`, if present (`null` means unset).
    pub(super) fn positive(&mut self, map: &Mapping, key: &str, path: &str) -> Option<u64> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Some(n),
                _ => {
                    self.problem(&join(path, key), format!("expected a positive integer, found {}", describe(v)));
                    None
                }
            },
        }
    }

    /// A positive number of seconds (fractions allowed) under `key`.
    pub(super) fn seconds(&mut self, map: &Mapping, key: &str, path: &str) -> Option<Duration> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(s) if s > 0.0 && s.is_finite() && s < 1e9 => Some(Duration::from_secs_f64(s)),
                _ => {
                    self.problem(
                        &join(path, key),
                        format!("expected a positive number of seconds, found {}", describe(v)),
                    );
                    None
                }
            },
        }
    }
}
