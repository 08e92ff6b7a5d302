//! Back-off for password guessing.
//!
//! Each wrong password counts against the user name and against the client
//! address. Past `auth.max_failed_logins` failures for a user (four times as
//! many for an address, which many users may share) further logins are refused
//! for `auth.lockout_seconds`, doubling with each further lockout up to
//! fifteen minutes, *without* hashing the password: a locked-out guesser costs
//! the server nothing. A successful login clears the user's record. Lockouts
//! apply to unknown user names alike, so they do not reveal which names exist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Records of this many names or addresses are pruned of settled entries.
const PRUNE_AT: usize = 10_000;

/// How an address's allowance compares with a user's.
const ADDRESS_FACTOR: u32 = 4;

/// The `auth.max_failed_logins` and `auth.lockout_seconds` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures allowed before a lockout.
    pub max_failures: u32,
    /// The first lockout; each further one doubles it.
    pub lockout: Duration,
    /// The longest lockout.
    pub max_lockout: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig { max_failures: 5, lockout: Duration::from_secs(60), max_lockout: Duration::from_secs(15 * 60) }
    }
}

/// What happened to one login attempt's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockout {
    /// The subject may try again now.
    None,
    /// The user or address is locked out for this long.
    For(Duration),
}

#[derive(Debug, Clone)]
struct Record {
    failures: u32,
    lockouts: u32,
    locked_until: Option<Instant>,
    last_failure: Instant,
}

/// Failure counts per user name and per client address.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    config: ThrottleConfig,
    users: Mutex<HashMap<String, Record>>,
    addresses: Mutex<HashMap<IpAddr, Record>>,
}

impl LoginThrottle {
    /// A throttle with these settings.
    pub fn new(config: ThrottleConfig) -> Self {
        LoginThrottle { config, ..LoginThrottle::default() }
    }

    /// Whether `user` from `address` may try a password now; the remaining
    /// lockout when not.
    pub fn check(&self, user: &str, address: Option<IpAddr>) -> Lockout {
        let now = Instant::now();
        let left = |r: Option<&Record>| r.and_then(|r| r.locked_until).and_then(|t| t.checked_duration_since(now));
        let user_left = left(lock(&self.users).get(user));
        let address_left = address.and_then(|a| left(lock(&self.addresses).get(&a)));
        match user_left.max(address_left) {
            Some(d) if !d.is_zero() => Lockout::For(d),
            _ => Lockout::None,
        }
    }

    /// Records a wrong password; returns the lockout it starts, if any.
    pub fn failed(&self, user: &str, address: Option<IpAddr>) -> Lockout {
        let user_lockout = {
            let mut users = lock(&self.users);
            prune(&mut users, self.config.max_lockout);
            let record = users.entry(user.to_string()).or_insert_with(Record::new);
            self.count(record, self.config.max_failures)
        };
        let address_lockout = match address {
            Some(a) => {
                let mut addresses = lock(&self.addresses);
                prune(&mut addresses, self.config.max_lockout);
                let record = addresses.entry(a).or_insert_with(Record::new);
                self.count(record, self.config.max_failures.saturating_mul(ADDRESS_FACTOR))
            }
            None => None,
        };
        match user_lockout.max(address_lockout) {
            Some(d) => Lockout::For(d),
            None => Lockout::None,
        }
    }

    /// Records a successful login: the user's failures are forgiven (the
    /// address's are not, so one valid account does not shield guessing).
    pub fn succeeded(&self, user: &str) {
        lock(&self.users).remove(user);
    }

    fn count(&self, record: &mut Record, allowed: u32) -> Option<Duration> {
        let now = Instant::now();
        // Failures long after the last lockout ended start afresh.
        if now.duration_since(record.last_failure) > self.config.max_lockout {
            *record = Record::new();
        }
        record.failures += 1;
        record.last_failure = now;
        if record.failures < allowed.max(1) {
            return None;
        }
        let doubling = 2u32.saturating_pow(record.lockouts.min(16));
        let lockout = self.config.lockout.saturating_mul(doubling).min(self.config.max_lockout);
        record.lockouts += 1;
        record.failures = 0;
        record.locked_until = Some(now + lockout);
        Some(lockout)
    }
}

impl Record {
    fn new() -> Self {
        Record { failures: 0, lockouts: 0, locked_until: None, last_failure: Instant::now() }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops records that can no longer lock anybody out, once there are many.
fn prune<K>(map: &mut HashMap<K, Record>, max_lockout: Duration) {
    if map.len() < PRUNE_AT {
        return;
    }
    let now = Instant::now();
    map.retain(|_, r| r.locked_until.is_some_and(|t| t > now) || now.duration_since(r.last_failure) < max_lockout);
    if map.len() >= PRUNE_AT {
        // A flood of distinct names: keep only those locked out now.
        map.retain(|_, r| r.locked_until.is_some_and(|t| t > now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(ThrottleConfig {
            max_failures: 3,
            lockout: Duration::from_secs(10),
            max_lockout: Duration::from_secs(25),
        })
    }

    #[test]
    fn a_user_is_locked_out_after_the_allowed_failures_with_doubling_lockouts() {
        let t = throttle();
        let address: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(t.failed("ann", Some(address)), Lockout::None);
        assert_eq!(t.failed("ann", Some(address)), Lockout::None);
        assert_eq!(t.check("ann", Some(address)), Lockout::None);
        assert_eq!(t.failed("ann", Some(address)), Lockout::For(Duration::from_secs(10)));
        assert!(matches!(t.check("ann", None), Lockout::For(d) if d <= Duration::from_secs(10) && d > Duration::ZERO));
        // Another user from another address is unaffected.
        assert_eq!(t.check("bob", Some("127.0.0.2".parse().unwrap())), Lockout::None);
        for _ in 0..2 {
            t.failed("ann", None);
        }
        assert_eq!(t.failed("ann", None), Lockout::For(Duration::from_secs(20)));
        for _ in 0..2 {
            t.failed("ann", None);
        }
        assert_eq!(t.failed("ann", None), Lockout::For(Duration::from_secs(25)), "capped at max_lockout");
        t.succeeded("ann");
        assert_eq!(t.check("ann", None), Lockout::None);
    }

    #[test]
    fn an_address_guessing_many_names_is_locked_out() {
        let t = throttle();
        let address: IpAddr = "10.0.0.1".parse().unwrap();
        let mut locked = None;
        for i in 0..12 {
            if let Lockout::For(d) = t.failed(&format!("user{i}"), Some(address)) {
                locked = Some((i, d));
                break;
            }
        }
        assert_eq!(locked, Some((11, Duration::from_secs(10))), "4 x 3 failures from one address");
        assert!(matches!(t.check("anyone", Some(address)), Lockout::For(_)));
        assert_eq!(t.check("anyone", None), Lockout::None);
    }
}
