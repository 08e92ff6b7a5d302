//! Requests that are not queries: logins, catalogue listings, and requests
//! refused or failed in the server before they reached the engine. One
//! durable record each, so that every request a principal makes is audited.

use std::sync::Arc;

use crate::EngineError;

use super::log::AuditLog;
use super::record::{AuditRecord, AuditStatus};

/// What kind of request an [`RequestEvent`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A login attempt (password or token), successful or not.
    Login,
    /// A catalogue listing (tables, schemas, SQL info…).
    Metadata,
    /// A request refused or failed before it reached the engine
    /// (unauthenticated, malformed, an internal error).
    Rpc,
}

impl RequestKind {
    fn name(self) -> &'static str {
        match self {
            RequestKind::Login => "login",
            RequestKind::Metadata => "metadata",
            RequestKind::Rpc => "rpc",
        }
    }
}

/// How a recorded request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Served.
    Ok,
    /// Refused: wrong credentials, locked out, not permitted. The reason is
    /// recorded (never the password).
    Denied(String),
    /// Failed while being served.
    Failed(String),
}

/// One request that is not a query, as the server that served it saw it.
#[derive(Debug, Clone)]
pub struct RequestEvent {
    /// What kind of request.
    pub kind: RequestKind,
    /// The protocol's name for it, e.g. `Handshake`, `GetTables`.
    pub action: String,
    /// Who sent it: the principal, or the user name a login claimed
    /// (`-` when unknown).
    pub user: String,
    /// The principal's groups, when authenticated.
    pub groups: Vec<String>,
    /// The client's address.
    pub client: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
}

/// The quota key of everything unauthenticated together: a flood from many
/// addresses shares one budget.
const UNAUTHENTICATED: &str = "unauthenticated requests";

/// Writes `event`'s record durably, off the async threads.
///
/// The audit quota is charged to the principal for authenticated requests
/// and successful logins (a successful login is never refused for it), and
/// to the client's network (its IPv4 address, its IPv6 /64) plus one shared
/// budget for everything unauthenticated: failed logins and refused
/// requests name whatever user they like.
pub(crate) async fn record_event(log: &Arc<AuditLog>, event: RequestEvent) -> Result<(), EngineError> {
    let authenticated = event.user != "-" && !(event.kind == RequestKind::Login && event.outcome != Outcome::Ok);
    let keys: Vec<String> = if authenticated {
        vec![event.user.clone()]
    } else {
        let network = event.client.as_deref().map(network_of).unwrap_or_else(|| "no address".into());
        vec![format!("client {network}"), UNAUTHENTICATED.to_string()]
    };
    let exempt = event.kind == RequestKind::Login && event.outcome == Outcome::Ok;
    let mut record = AuditRecord::note(event.kind.name(), String::new());
    record.reason = None;
    record.action = Some(super::record::capped(&event.action));
    record.user = super::record::capped(&event.user);
    record.groups = event.groups;
    record.client = event.client;
    match event.outcome {
        Outcome::Ok => {}
        Outcome::Denied(reason) => {
            record.decision = "deny".into();
            record.status = AuditStatus::Denied.as_str().into();
            record.reason = Some(super::record::capped(&reason));
        }
        Outcome::Failed(error) => {
            record.status = AuditStatus::Failed.as_str().into();
            record.error = Some(super::record::capped(&error));
        }
    }
    for who in keys.iter().filter(|_| !exempt) {
        if let Err(refusal) = log.quota.check(who) {
            if refusal.record {
                record.status = AuditStatus::OverQuota.as_str().into();
                record.reason = Some(format!(
                    "{who} is over the audit quota; {} requests refused so far this minute",
                    refusal.refused
                ));
                let log = Arc::clone(log);
                let _ = tokio::task::spawn_blocking(move || log.append(&mut record, true)).await;
            }
            return Err(EngineError::ResourcesExhausted(format!(
                "too many requests from {who} (governance.audit.quota_bytes_per_minute); retry in {} s",
                refusal.retry_after.as_secs().max(1)
            )));
        }
    }
    let writer = Arc::clone(log);
    let written = tokio::task::spawn_blocking(move || writer.append(&mut record, true))
        .await
        .map_err(|e| EngineError::Internal(format!("the audit write stopped: {e}")))?
        .map_err(|e| EngineError::Internal(format!("the audit log cannot be written: {e}")))?;
    for who in &keys {
        log.quota.charge(who, written);
    }
    Ok(())
}

/// The network a client address counts under: the IPv4 address itself, or
/// the /64 of an IPv6 address (one host can use a whole /64).
fn network_of(address: &str) -> String {
    match address.parse::<std::net::SocketAddr>().map(|a| a.ip()) {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(ip) => ip.to_string(),
        Err(_) => address.rsplit_once(':').map(|(ip, _)| ip.to_string()).unwrap_or_else(|| address.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_count_by_network() {
        assert_eq!(network_of("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(network_of("[2001:db8:1:2:aaaa::1]:443"), "2001:db8:1:2::/64");
        assert_eq!(network_of("[2001:db8:1:2:bbbb::9]:1"), network_of("[2001:db8:1:2:cccc::7]:2"));
    }
}
