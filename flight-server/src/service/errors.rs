//! How the service's refusals read: engine errors mapped onto gRPC codes,
//! client-supplied names clipped for messages, and the read-only refusal.

use agora_engine::EngineError;
use tonic::Status;

use crate::auth::recorded;

/// Maps engine errors onto gRPC codes: a user's mistake is never `Internal`.
pub(crate) fn status(err: EngineError) -> Status {
    // Engine errors come from requests the engine has recorded.
    recorded(engine_status(err))
}

/// The gRPC status of an engine error, by its kind.
fn engine_status(err: EngineError) -> Status {
    let message = err.to_string();
    match err {
        EngineError::Sql(_) | EngineError::Config(_) => Status::invalid_argument(message),
        EngineError::NotFound(_) => Status::not_found(message),
        EngineError::ReadOnly(_) => Status::invalid_argument(message),
        EngineError::ProductUnavailable { .. } | EngineError::SourceUnavailable(_) => Status::unavailable(message),
        EngineError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        EngineError::Timeout(_) => Status::deadline_exceeded(message),
        EngineError::ShuttingDown(_) => Status::unavailable(message),
        EngineError::Cancelled(_) => Status::cancelled(message),
        EngineError::Denied(_) => Status::permission_denied(message),
        EngineError::Policy(_) => Status::failed_precondition(message),
        EngineError::Execution(_) | EngineError::Internal(_) => Status::internal(message),
    }
}

/// A client-supplied name, quoted and cut to 100 characters for an error
/// message: errors must not echo unbounded client input.
pub(super) fn clipped(name: &str) -> String {
    let cut: String = name.chars().take(100).collect();
    if cut.len() < name.len() { format!("{:?}…", cut) } else { format!("{cut:?}") }
}

/// Agora serves no updates, DDL or ingestion.
pub(super) fn read_only() -> Status {
    Status::unimplemented("Agora is read-only: updates, DDL and ingestion are not supported")
}
