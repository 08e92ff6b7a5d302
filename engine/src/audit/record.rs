//! One audit record: what a request was, who sent it and how it ended.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ChainKey;
use crate::governance::AppliedPolicy;
use crate::{EngineError, Principal};

/// One line of the audit log.
///
/// A query is recorded twice: a *start* record (`status = "started"`, with
/// the statement) is written before the query is planned, so that even a
/// process killed mid-query leaves a trace, and a *finish* record with the
/// same `query_id` (what was read, under which policies, how it ended)
/// completes it. `system.audit_log` shows one row per request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct AuditRecord {
    /// Position in the log: 1 for the first record ever written, one more for
    /// each record after it, across rotated and archived files.
    #[serde(default)]
    pub seq: u64,
    /// SHA-256 (hex) of the previous record's line, so that an edited, removed
    /// or inserted line breaks the chain (see `agora audit verify`).
    #[serde(default)]
    pub prev: Option<String>,
    /// `hmac-sha256` when `prev` is keyed by `governance.audit.chain_key`
    /// (absent: plain SHA-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// What was recorded: `query`, `metadata` (a catalogue listing), `login`,
    /// `rpc` (a request refused or failed before it reached the engine),
    /// or the log's own notes: `retention`, `repair`, `quota`.
    #[serde(default = "query_kind")]
    pub kind: String,
    /// The request, for records that are not queries (e.g. `GetTables`, `Handshake`).
    #[serde(default)]
    pub action: Option<String>,
    /// When the request started (RFC 3339, UTC).
    pub event_time: String,
    /// Unique per request; the start and finish records of a query share it.
    pub query_id: String,
    /// The principal's user name.
    pub user: String,
    /// The principal's groups.
    pub groups: Vec<String>,
    /// The client's address, when served over the network.
    pub client: Option<String>,
    /// The statement as sent, cut to [`MAX_AUDIT_TEXT_CHARS`] characters (a
    /// user must not be able to flood the log, and push older records out of
    /// it, with huge statements). Only in the start record.
    pub sql: Option<String>,
    /// SHA-256 (hex) of the whole statement, so a cut statement can still be
    /// matched against the text a client claims it sent.
    #[serde(default)]
    pub sql_sha256: Option<String>,
    /// `domain.product` of every product the query read.
    pub products: Vec<String>,
    /// `domain.product.column` of every column the query read.
    pub columns: Vec<String>,
    /// Row filters and masks applied, with their policy ids.
    pub policies: Vec<AppliedPolicy>,
    /// `allow` or `deny`.
    pub decision: String,
    /// Why access was denied.
    pub reason: Option<String>,
    /// `started`, then one of `ok`, `denied`, `failed`, `cancelled`,
    /// `timeout`, `planned` (planned for a client that did not run it) or
    /// `over_quota`.
    pub status: String,
    /// The error, for failed requests.
    pub error: Option<String>,
    /// Rows returned.
    pub rows: u64,
    /// Bytes returned (Arrow in-memory size).
    pub bytes: u64,
    /// Wall time from planning to the last batch.
    pub duration_ms: u64,
    /// Digest of the policy files in force.
    pub policy_version: Option<String>,
    /// For `retention` records: the records that left the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<Dropped>,
}

/// Records removed from the log by retention, named so that a verifier can
/// tell an announced removal from a deletion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dropped {
    /// The last removed record's `seq`: every record up to it is gone.
    pub through_seq: u64,
    /// SHA-256 of the last removed record's line: the record after it names
    /// this hash as its `prev`.
    pub last_hash: String,
    /// The files removed.
    pub files: Vec<String>,
}

fn query_kind() -> String {
    "query".into()
}

/// The `status` of a start record.
pub const STARTED: &str = AuditStatus::Started.as_str();

/// How a request ended, as its audit record's `status` says. The record keeps
/// the name as text, so that a log written by another version still reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditStatus {
    /// The start record of a request still running (or cut off by a crash).
    Started,
    /// Served.
    Ok,
    /// Refused by policy (or by authentication).
    Denied,
    /// Failed while planning or running.
    Failed,
    /// Stopped by `cancel_query`, by the client, or by a shutdown.
    Cancelled,
    /// Stopped at its statement timeout.
    Timeout,
    /// Planned for a client that runs it with a request of its own.
    Planned,
    /// Refused because the principal is over its audit quota.
    OverQuota,
}

impl AuditStatus {
    /// The name written in the record.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditStatus::Started => "started",
            AuditStatus::Ok => "ok",
            AuditStatus::Denied => "denied",
            AuditStatus::Failed => "failed",
            AuditStatus::Cancelled => "cancelled",
            AuditStatus::Timeout => "timeout",
            AuditStatus::Planned => "planned",
            AuditStatus::OverQuota => "over_quota",
        }
    }

    /// The status of a request that ended with `error`.
    pub(crate) fn of(error: &EngineError) -> AuditStatus {
        match error {
            EngineError::Denied(_) => AuditStatus::Denied,
            EngineError::Timeout(_) => AuditStatus::Timeout,
            EngineError::ShuttingDown(_) | EngineError::Cancelled(_) => AuditStatus::Cancelled,
            _ => AuditStatus::Failed,
        }
    }

    /// Whether the request was refused (its decision is then `deny`).
    fn is_refusal(self) -> bool {
        matches!(self, AuditStatus::Denied | AuditStatus::OverQuota)
    }
}

impl AuditRecord {
    /// A record for a request of `principal` that is starting.
    pub(crate) fn start(principal: &Principal, client: Option<&str>, sql: Option<&str>) -> Self {
        AuditRecord {
            kind: query_kind(),
            event_time: now(),
            query_id: new_id(),
            user: principal.user.clone(),
            groups: principal.groups.clone(),
            client: client.map(str::to_string),
            sql: sql.map(capped),
            sql_sha256: sql.map(|s| hex::encode(Sha256::digest(s.as_bytes()))),
            decision: "allow".into(),
            status: STARTED.into(),
            ..AuditRecord::default()
        }
    }

    /// A record of the log's own (`retention`, `repair`, `quota`), written
    /// as the engine.
    pub(crate) fn note(kind: &str, reason: String) -> Self {
        AuditRecord {
            kind: kind.into(),
            event_time: now(),
            query_id: new_id(),
            user: "agora".into(),
            decision: "allow".into(),
            status: AuditStatus::Ok.as_str().into(),
            reason: Some(capped(&reason)),
            ..AuditRecord::default()
        }
    }

    /// The finish record of this start record: everything but the statement
    /// text, which the start record carries.
    pub(crate) fn finished(&self, status: AuditStatus, error: Option<&str>, duration_ms: u64) -> Self {
        let mut done = self.clone();
        done.sql = None;
        done.status = status.as_str().to_string();
        if status.is_refusal() {
            done.decision = "deny".into();
            done.reason = error.map(capped);
        }
        done.error = error.map(capped);
        done.duration_ms = duration_ms;
        done
    }
}

/// Longest statement or error text an audit record keeps, in characters.
pub const MAX_AUDIT_TEXT_CHARS: usize = 4096;

/// `text` cut to [`MAX_AUDIT_TEXT_CHARS`], marked with `…` when cut.
pub(crate) fn capped(text: &str) -> String {
    match text.char_indices().nth(MAX_AUDIT_TEXT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// SHA-256 (hex) of one line of the log, without its newline.
pub(crate) fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// The `chain` of records whose `prev` is keyed.
pub const KEYED: &str = "hmac-sha256";

/// What the next record names as `prev`: HMAC-SHA-256 of the line under the
/// chain key, or its SHA-256 without one.
pub(crate) fn chain_hash(key: Option<&ChainKey>, line: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    match key.and_then(|k| hmac::Hmac::<Sha256>::new_from_slice(&k.0).ok()) {
        Some(mut mac) => {
            mac.update(line);
            hex::encode(mac.finalize().into_bytes())
        }
        None => line_hash(line),
    }
}

/// The `prev` of the first record of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn new_id() -> String {
    let mut id = [0u8; 12];
    let _ = getrandom::fill(&mut id);
    hex::encode(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_statements_are_cut_and_digested() {
        let huge = format!("SELECT 1 /* {} */", "é".repeat(100_000));
        let r = AuditRecord::start(&Principal::user("ann"), None, Some(&huge));
        let kept = r.sql.clone().unwrap();
        assert_eq!(kept.chars().count(), MAX_AUDIT_TEXT_CHARS + 1);
        assert!(kept.ends_with('…') && kept.starts_with("SELECT 1 /* "));
        assert_eq!(r.sql_sha256.as_deref(), Some(hex::encode(Sha256::digest(huge.as_bytes())).as_str()));
        let short = AuditRecord::start(&Principal::user("ann"), None, Some("SELECT 1"));
        assert_eq!(short.sql.as_deref(), Some("SELECT 1"));
        assert_eq!(short.status, STARTED);
    }

    #[test]
    fn finish_records_drop_the_text_and_keep_the_id() {
        let start = AuditRecord::start(&Principal::user("ann"), Some("127.0.0.1:1"), Some("SELECT secret"));
        let done = start.finished(AuditStatus::Denied, Some("no grant"), 5);
        assert_eq!((done.query_id.as_str(), done.sql.as_deref()), (start.query_id.as_str(), None));
        assert_eq!((done.decision.as_str(), done.reason.as_deref()), ("deny", Some("no grant")));
        assert_eq!(done.sql_sha256, start.sql_sha256);
    }

    #[test]
    fn records_of_earlier_versions_still_parse() {
        let old = r#"{"event_time":"2026-01-01T00:00:00.000Z","query_id":"a","user":"u","groups":[],"client":null,
            "sql":"SELECT 1","products":[],"columns":[],"policies":[],"decision":"allow","reason":null,
            "status":"ok","error":null,"rows":1,"bytes":8,"duration_ms":1,"policy_version":null}"#;
        let r: AuditRecord = serde_json::from_str(old).unwrap();
        assert_eq!((r.seq, r.kind.as_str(), r.prev), (0, "query", None));
    }
}
