//! Limits on what one request may consume: statement size and complexity,
//! time, memory and disk, concurrent queries, result size.
//!
//! A shared server must survive any single user: every resource a request can
//! consume has a bound here, configured in the `limits` section of the mesh
//! file (see `docs/operations.md`), with defaults an operator of a shared
//! production server would choose. A request over a bound fails on its own with
//! an error naming the limit's configuration key; nothing else is affected.

mod admission;
mod complexity;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::Principal;

pub(crate) use self::admission::{Admission, QuerySlot};
pub(crate) use self::complexity::{check_statement, check_text, reads_nothing};

/// The `limits` section of a mesh file.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Longest statement text accepted, in bytes (`max_sql_bytes`).
    pub max_sql_bytes: usize,
    /// Deepest nesting of expressions (`max_expression_depth`): a left-deep
    /// chain `1 + 1 + … + 1` of N terms is N deep. Deeper trees cost planning
    /// time super-linearly and, far beyond, the planner's stack.
    pub max_expression_depth: usize,
    /// Most items in one `IN (…)` list (`max_in_list`).
    pub max_in_list: usize,
    /// Longest a query waits for a slot before it is refused (`queue_timeout_seconds`).
    pub queue_timeout: Duration,
    /// Most queries running at once, server-wide (`max_concurrent_queries`).
    pub max_concurrent_queries: usize,
    /// Most queries waiting for a slot at once (`max_queued_queries`).
    pub max_queued_queries: usize,
    /// Size of the memory pool shared by all running queries (`memory_limit_bytes`);
    /// sorts, aggregates and joins spill to disk beyond their share.
    pub memory_limit_bytes: usize,
    /// Where spill files go (`spill_dir`); the operating system's temporary
    /// directory when unset.
    pub spill_dir: Option<PathBuf>,
    /// Most bytes of spill files at once, server-wide (`max_spill_bytes`).
    pub max_spill_bytes: u64,
    /// Worker threads of the query runtime (`query_threads`), which is separate
    /// from the network's, so that logins and small requests stay responsive
    /// while heavy queries run.
    pub query_threads: usize,
    /// Most network connections open at once (`max_connections`).
    pub max_connections: usize,
    /// Most network connections open at once from one client address
    /// (`max_connections_per_address`).
    pub max_connections_per_address: usize,
    /// How long a new connection may stay silent (`handshake_timeout_seconds`).
    pub handshake_timeout: Duration,
    /// What every principal gets unless one of its groups says otherwise.
    pub defaults: PrincipalLimits,
    /// Overrides by group (`groups.<name>`).
    pub groups: BTreeMap<String, PrincipalLimits>,
}

/// Limits that may differ between principals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrincipalLimits {
    /// Longest a query may take from admission to its last batch
    /// (`statement_timeout_seconds`).
    pub statement_timeout: Option<Duration>,
    /// Most queries one principal runs at once (`max_queries_per_principal`).
    pub max_queries_per_principal: Option<usize>,
    /// Most rows one query returns (`max_result_rows`); unlimited when unset.
    pub max_result_rows: Option<u64>,
    /// Most bytes (Arrow memory size) one query returns (`max_result_bytes`);
    /// unlimited when unset.
    pub max_result_bytes: Option<u64>,
}

/// The limits in force for one principal's query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveLimits {
    /// See [`PrincipalLimits::statement_timeout`].
    pub statement_timeout: Duration,
    /// See [`PrincipalLimits::max_queries_per_principal`].
    pub max_queries_per_principal: usize,
    /// See [`PrincipalLimits::max_result_rows`].
    pub max_result_rows: Option<u64>,
    /// See [`PrincipalLimits::max_result_bytes`].
    pub max_result_bytes: Option<u64>,
}

/// Default statement timeout: five minutes.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Default number of queries one principal runs at once.
pub const DEFAULT_QUERIES_PER_PRINCIPAL: usize = 4;

impl Default for LimitsConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        LimitsConfig {
            max_sql_bytes: 1024 * 1024,
            max_expression_depth: 256,
            max_in_list: 10_000,
            queue_timeout: Duration::from_secs(60),
            // More queries than this on a core only split its time and the
            // memory pool further (a 2-core server running 16 TPC-H queries at
            // once failed joins that 8 at once completed); the rest queue.
            max_concurrent_queries: (4 * cores).max(4),
            max_queued_queries: 64,
            memory_limit_bytes: machine_memory() / 2,
            spill_dir: None,
            max_spill_bytes: 16 * 1024 * 1024 * 1024,
            query_threads: cores,
            max_connections: 1024,
            max_connections_per_address: 64,
            handshake_timeout: Duration::from_secs(10),
            defaults: PrincipalLimits {
                statement_timeout: Some(DEFAULT_STATEMENT_TIMEOUT),
                max_queries_per_principal: Some(DEFAULT_QUERIES_PER_PRINCIPAL),
                max_result_rows: None,
                max_result_bytes: None,
            },
            groups: BTreeMap::new(),
        }
    }
}

impl LimitsConfig {
    /// The limits for `principal`: for each key, the most generous value among
    /// the principal's groups that set it, else the default. (A principal in
    /// `admins` and `analysts` gets the admins' larger quota.)
    pub fn for_principal(&self, principal: &Principal) -> EffectiveLimits {
        let groups: Vec<&PrincipalLimits> = principal.groups.iter().filter_map(|g| self.groups.get(g)).collect();
        let pick = |get: &dyn Fn(&PrincipalLimits) -> Option<u64>| -> Option<u64> {
            groups.iter().filter_map(|g| get(g)).max().or_else(|| get(&self.defaults))
        };
        let timeout = groups.iter().filter_map(|g| g.statement_timeout).max();
        EffectiveLimits {
            statement_timeout: timeout.or(self.defaults.statement_timeout).unwrap_or(DEFAULT_STATEMENT_TIMEOUT),
            max_queries_per_principal: pick(&|l| l.max_queries_per_principal.map(|n| n as u64))
                .map(|n| n as usize)
                .unwrap_or(DEFAULT_QUERIES_PER_PRINCIPAL)
                .max(1),
            max_result_rows: pick(&|l| l.max_result_rows),
            max_result_bytes: pick(&|l| l.max_result_bytes),
        }
    }
}

/// The memory this process may use: the cgroup's limit when there is one
/// (containers), else the machine's total, else 8 GiB when neither can be read.
pub fn machine_memory() -> usize {
    const FALLBACK: usize = 8 * 1024 * 1024 * 1024;
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|t| t.trim().parse::<usize>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => t.min(c),
        (Some(t), None) => t,
        (None, Some(c)) => c,
        (None, None) => FALLBACK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_generous_group_wins_and_defaults_fill_the_rest() {
        let mut limits = LimitsConfig::default();
        limits.groups.insert(
            "analysts".into(),
            PrincipalLimits {
                statement_timeout: Some(Duration::from_secs(60)),
                max_result_rows: Some(1000),
                ..PrincipalLimits::default()
            },
        );
        limits.groups.insert(
            "admins".into(),
            PrincipalLimits {
                statement_timeout: Some(Duration::from_secs(3600)),
                max_queries_per_principal: Some(10),
                ..PrincipalLimits::default()
            },
        );
        let analyst = Principal { groups: vec!["analysts".into()], ..Principal::user("a") };
        let both = Principal { groups: vec!["analysts".into(), "admins".into()], ..Principal::user("b") };
        let nobody = Principal::user("c");
        let a = limits.for_principal(&analyst);
        assert_eq!(a.statement_timeout, Duration::from_secs(60));
        assert_eq!(a.max_result_rows, Some(1000));
        assert_eq!(a.max_queries_per_principal, 4);
        let b = limits.for_principal(&both);
        assert_eq!(b.statement_timeout, Duration::from_secs(3600));
        assert_eq!(b.max_queries_per_principal, 10);
        assert_eq!(b.max_result_rows, Some(1000));
        let c = limits.for_principal(&nobody);
        assert_eq!(c.statement_timeout, DEFAULT_STATEMENT_TIMEOUT);
        assert_eq!(c.max_result_rows, None);
    }

    #[test]
    fn machine_memory_is_positive() {
        assert!(machine_memory() > 0);
    }
}
