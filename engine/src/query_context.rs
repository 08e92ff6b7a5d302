//! Who runs a query, from where, how, and the one id every record of it carries.
//!
//! A [`QueryContext`] is made once per query, when the engine receives it:
//! its id is the audit records' `query_id`, the OpenLineage `runId`, the
//! query history's `query_id`, the server's log line and the trace's
//! attribute `agora.query_id`, so any one of them finds the others.

use std::time::SystemTime;

/// The identity of one query.
#[derive(Debug, Clone)]
pub struct QueryContext {
    /// A UUIDv7: time-ordered, so ids sort by arrival.
    pub id: String,
    /// The principal's user name.
    pub user: String,
    /// The client's address, where a network client sent the query.
    pub client: Option<String>,
    /// How the query arrived: `flight-sql`, or `embedded` for the Rust API.
    pub protocol: &'static str,
    /// What the client said the query is for (Flight SQL header
    /// `x-agora-purpose`), capped at [`MAX_PURPOSE_CHARS`].
    pub purpose: Option<String>,
    /// When the engine received the query.
    pub received: SystemTime,
    /// The W3C trace the query belongs to (32 hex digits), when the client
    /// sent a `traceparent`.
    pub trace_id: Option<String>,
}

/// The longest purpose kept: it is the client's text, stored with every query.
pub const MAX_PURPOSE_CHARS: usize = 200;

/// Where a session's queries come from; copied into each query's context.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    pub(crate) client: Option<String>,
    pub(crate) protocol: Option<&'static str>,
    pub(crate) purpose: Option<String>,
    pub(crate) trace_id: Option<String>,
}

impl Origin {
    /// A new query's context, with a new id.
    pub(crate) fn context(&self, user: &str) -> QueryContext {
        QueryContext {
            id: uuid_v7(),
            user: user.to_string(),
            client: self.client.clone(),
            protocol: self.protocol.unwrap_or("embedded"),
            purpose: self.purpose.clone(),
            received: SystemTime::now(),
            trace_id: self.trace_id.clone(),
        }
    }
}

/// The purpose a client gave, trimmed and capped; `None` when empty.
pub(crate) fn purpose(text: &str) -> Option<String> {
    let text: String = text.trim().chars().filter(|c| !c.is_control()).take(MAX_PURPOSE_CHARS).collect();
    (!text.is_empty()).then_some(text)
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<parent id>-<flags>`);
/// `None` when it is malformed or all zeros, as the recommendation says to
/// ignore such a header.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    valid.then(|| trace.to_string())
}

/// A random UUID, version 7: time-ordered, as OpenLineage recommends for
/// run ids, so query ids also sort by arrival.
pub(crate) fn uuid_v7() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_gives_its_trace_id() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(trace_id_of(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(), Some(id));
        assert_eq!(trace_id_of(&format!("00-{id}-0000000000000000-01")), None);
        assert_eq!(trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id_of(&format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase())), None);
        assert_eq!(trace_id_of(&format!("00-{id}-00f067aa0ba902b7-01-extra")), None);
        assert_eq!(trace_id_of("garbage"), None);
    }

    #[test]
    fn purposes_are_capped_and_cleaned() {
        assert_eq!(purpose("  churn report\n").as_deref(), Some("churn report"));
        assert_eq!(purpose(" \t "), None);
        assert_eq!(purpose(&"x".repeat(1000)).map(|p| p.len()), Some(MAX_PURPOSE_CHARS));
        assert_eq!(purpose("a\u{1b}[31mb").as_deref(), Some("a[31mb"));
    }

    #[test]
    fn ids_are_version_7_and_sort_by_time() {
        let a = uuid_v7();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = uuid_v7();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7");
        assert!(a < b, "{a} then {b}");
    }
}
