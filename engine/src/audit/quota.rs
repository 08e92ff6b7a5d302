//! How much of the audit log one principal may fill per minute.
//!
//! Without a quota, one user sending thousands of large (denied) statements
//! could rotate every other user's records out of the log. Over its quota a
//! principal's requests are refused before they run; the refusals are
//! recorded sparsely (the 1st, 2nd, 4th, 8th… of each minute, each with the
//! count so far), so the log grows by a few records however hard it is pushed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window quotas are counted in.
const WINDOW: Duration = Duration::from_secs(60);

/// Principals tracked at most; expired windows are dropped past this.
const MAX_TRACKED: usize = 10_000;

/// Bytes of audit records per principal per minute.
#[derive(Debug)]
pub(crate) struct AuditQuota {
    bytes_per_minute: u64,
    windows: Mutex<HashMap<String, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    bytes: u64,
    refused: u64,
}

/// A refused request: whether it is one of those recorded, and how many were
/// refused in the window so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) record: bool,
    pub(crate) refused: u64,
    pub(crate) retry_after: Duration,
}

impl AuditQuota {
    pub(crate) fn new(bytes_per_minute: u64) -> Self {
        AuditQuota { bytes_per_minute, windows: Mutex::new(HashMap::new()) }
    }

    /// The quota, in bytes per minute.
    pub(crate) fn limit(&self) -> u64 {
        self.bytes_per_minute
    }

    /// May `who` start a request now?
    pub(crate) fn check(&self, who: &str) -> Result<(), Refusal> {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let Some(w) = windows.get_mut(who) else { return Ok(()) };
        if now.duration_since(w.started) >= WINDOW {
            *w = Window { started: now, bytes: 0, refused: 0 };
            return Ok(());
        }
        if w.bytes < self.bytes_per_minute {
            return Ok(());
        }
        w.refused += 1;
        Err(Refusal {
            record: w.refused.is_power_of_two(),
            refused: w.refused,
            retry_after: WINDOW.saturating_sub(now.duration_since(w.started)),
        })
    }

    /// Counts `bytes` of records written for `who`.
    pub(crate) fn charge(&self, who: &str, bytes: u64) {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= MAX_TRACKED && !windows.contains_key(who) {
            windows.retain(|_, w| now.duration_since(w.started) < WINDOW);
        }
        let w = windows.entry(who.to_string()).or_insert(Window { started: now, bytes: 0, refused: 0 });
        if now.duration_since(w.started) >= WINDOW {
            *w = Window { started: now, bytes: 0, refused: 0 };
        }
        w.bytes = w.bytes.saturating_add(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_quota_refuses_and_records_sparsely_per_principal() {
        let quota = AuditQuota::new(1000);
        assert!(quota.check("mallory").is_ok());
        quota.charge("mallory", 600);
        assert!(quota.check("mallory").is_ok(), "under the quota");
        quota.charge("mallory", 600);
        let recorded: Vec<u64> = (0..20)
            .filter_map(|_| match quota.check("mallory") {
                Err(r) if r.record => Some(r.refused),
                Err(_) => None,
                Ok(()) => panic!("over the quota must refuse"),
            })
            .collect();
        assert_eq!(recorded, vec![1, 2, 4, 8, 16]);
        assert!(quota.check("ann").is_ok(), "another principal is not affected");
    }
}
