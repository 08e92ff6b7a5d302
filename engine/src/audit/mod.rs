//! The audit trail: a record of every request, that users cannot erase.
//!
//! - [`record`]: what one record holds (start and finish records of a query,
//!   records of logins, listings and the log's own notes).
//! - [`log`]: the append-only, hash-chained JSON Lines file: group commit,
//!   rotation, retention into an archive, repair of a torn tail.
//! - [`event`]: logins, listings and refused requests, one record each.
//! - `quota`: how much of the log one principal may fill per minute.
//! - `stream`: a query's records over its life, and the result stream that
//!   holds its last batch until the finish record is durable.
//! - `requests`: one request from its records, and an owner's view of it
//!   (`system.audit_log` is built from them, in `system::tables`).
//! - [`verify`]: checking the chain (`agora audit verify`).

pub mod event;
pub mod log;
pub(crate) mod quota;
pub mod record;
pub(crate) mod requests;
pub(crate) mod stream;
pub mod verify;

pub use self::event::{Outcome, RequestEvent, RequestKind};
pub use self::log::AuditLog;
pub use self::record::{AuditRecord, AuditStatus, Dropped, MAX_AUDIT_TEXT_CHARS};
pub use self::verify::{ChainProblem, ChainReport, verify};
