//! Cancelling a query by the FlightInfo it was started from: the Flight
//! action `CancelFlightInfo` and Flight SQL's older `CancelQuery`, which JDBC
//! (`Statement.cancel()`) and other drivers send.
//!
//! A FlightInfo names no query: its endpoint carries a ticket, and the query
//! runs when a DoGet reads that ticket. So every DoGet that streams a query
//! registers its ticket here until its stream ends ([`RunningTickets`]), and a
//! cancel looks the FlightInfo's tickets up and cancels what runs under them
//! through `CALL cancel_query`, as the requesting principal: the same rules
//! (the owner, or an admin of a governed mesh), the same audit record, the
//! same `CANCELLED` error for the stopped stream. A FlightInfo with nothing
//! running under it — never read, finished, someone else's — gets the one
//! `NOT_FOUND` the specification asks for, whichever it is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// The queries DoGet is streaming, by the SHA-256 of their ticket.
#[derive(Debug, Default)]
pub(crate) struct RunningTickets {
    running: Mutex<HashMap<[u8; 32], Vec<String>>>,
}

impl RunningTickets {
    /// Records that query `query_id` streams for `ticket`, until the returned
    /// guard is dropped (with the stream).
    pub(crate) fn register(self: &Arc<Self>, ticket: &[u8], query_id: &str) -> RunningTicket {
        let key = digest(ticket);
        if let Ok(mut running) = self.running.lock() {
            running.entry(key).or_default().push(query_id.to_string());
        }
        RunningTicket { tickets: Arc::clone(self), key, query_id: query_id.to_string() }
    }

    /// The queries streaming for `ticket` now.
    pub(crate) fn running(&self, ticket: &[u8]) -> Vec<String> {
        match self.running.lock() {
            Ok(running) => running.get(&digest(ticket)).cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    fn remove(&self, key: &[u8; 32], query_id: &str) {
        if let Ok(mut running) = self.running.lock()
            && let Some(ids) = running.get_mut(key)
        {
            ids.retain(|id| id != query_id);
            if ids.is_empty() {
                running.remove(key);
            }
        }
    }
}

/// A ticket's query registered as streaming; removed when dropped.
#[derive(Debug)]
pub(crate) struct RunningTicket {
    tickets: Arc<RunningTickets>,
    key: [u8; 32],
    query_id: String,
}

impl Drop for RunningTicket {
    fn drop(&mut self) {
        self.tickets.remove(&self.key, &self.query_id);
    }
}

fn digest(ticket: &[u8]) -> [u8; 32] {
    Sha256::digest(ticket).into()
}

/// The refusal for a FlightInfo with nothing (cancellable by this principal)
/// running under it.
pub(crate) fn nothing_running() -> tonic::Status {
    tonic::Status::not_found("no running query of this FlightInfo can be cancelled")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_is_running_while_its_guard_lives() {
        let tickets = Arc::new(RunningTickets::default());
        assert!(tickets.running(b"t").is_empty());
        let first = tickets.register(b"t", "q1");
        let second = tickets.register(b"t", "q2");
        let other = tickets.register(b"u", "q3");
        assert_eq!(tickets.running(b"t"), ["q1", "q2"]);
        drop(first);
        assert_eq!(tickets.running(b"t"), ["q2"]);
        drop(second);
        assert!(tickets.running(b"t").is_empty());
        assert_eq!(tickets.running(b"u"), ["q3"]);
        drop(other);
        assert!(tickets.running.lock().unwrap().is_empty(), "nothing is left behind");
    }
}
