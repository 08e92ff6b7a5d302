//! The engine's error type.

use agora_connectors::ConnectorError;
use datafusion::error::DataFusionError;

use crate::query_runtime::{Cancelled, Panicked, Timeout};
use crate::{ConfigError, ProductRef};

/// Why a request to the engine failed.
///
/// Variants separate the user's mistakes (`Sql`, `NotFound`, `ReadOnly`) from the
/// sources' failures (`ProductUnavailable`) and the engine's limits, so that a
/// server can map them onto its protocol's status codes.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The mesh configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The SQL could not be parsed or planned (syntax, unknown column, type error).
    #[error("{0}")]
    Sql(String),
    /// The query names a domain or product that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The statement would change data or the catalogue; Agora is read-only.
    #[error("{0}")]
    ReadOnly(String),
    /// The principal may not read what the query names (deny by default), or
    /// the policies cannot be resolved for them.
    #[error("{0}")]
    Denied(String),
    /// A policy could not be applied to a product (for instance a row filter
    /// names a column the product no longer has). The query is refused rather
    /// than answered unprotected.
    #[error("policy error: {0}")]
    Policy(String),
    /// A product's source could not be opened or read.
    #[error("product {product} is unavailable: {cause}")]
    ProductUnavailable {
        /// The product that failed.
        product: ProductRef,
        /// What its connector reported (already part of the message).
        cause: ConnectorError,
    },
    /// The query exceeded a memory or other resource limit.
    #[error("resources exhausted: {0}")]
    ResourcesExhausted(String),
    /// The query ran past its statement timeout and was stopped.
    #[error("{0}")]
    Timeout(String),
    /// The server is shutting down and stopped the query; retry elsewhere.
    #[error("{0}")]
    ShuttingDown(String),
    /// The query was stopped with `cancel_query` (by its owner or an admin).
    #[error("{0}")]
    Cancelled(String),
    /// The query failed while running.
    #[error("query failed: {0}")]
    Execution(String),
    /// A bug in the engine or a library surfaced (a panic) while serving this
    /// request; the request failed, the engine goes on.
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    /// The `status` of the audit record of a request that ended with this error.
    pub(crate) fn audit_status(&self) -> &'static str {
        match self {
            EngineError::Denied(_) => "denied",
            EngineError::Timeout(_) => "timeout",
            EngineError::ShuttingDown(_) | EngineError::Cancelled(_) => "cancelled",
            _ => "failed",
        }
    }
}

/// A product's failure, carried through DataFusion (which only knows its own error
/// type) as an external error and recovered by [`EngineError::from`].
#[derive(Debug, thiserror::Error)]
#[error("product {product} is unavailable: {source}")]
pub(crate) struct ProductFailure {
    pub(crate) product: ProductRef,
    pub(crate) source: ConnectorError,
}

/// An access decision carried through DataFusion, like [`ProductFailure`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct PolicyFailure(pub(crate) EngineError);

impl From<DataFusionError> for EngineError {
    fn from(err: DataFusionError) -> Self {
        EngineError::from(&err)
    }
}

impl From<&DataFusionError> for EngineError {
    /// Classifies an error without taking it (a stream's error is passed on
    /// to its reader as it is, and classified for the history too).
    fn from(err: &DataFusionError) -> Self {
        // Find a product failure anywhere in the chain first: it names the product.
        let mut current: &DataFusionError = err;
        loop {
            match current {
                DataFusionError::External(e) => {
                    if let Some(f) = e.downcast_ref::<ProductFailure>() {
                        return EngineError::ProductUnavailable { product: f.product.clone(), cause: f.source.clone() };
                    }
                    if e.downcast_ref::<crate::query_runtime::ShuttingDown>().is_some() {
                        return EngineError::ShuttingDown(crate::query_runtime::SHUTTING_DOWN.to_string());
                    }
                    if let Some(Timeout(message)) = e.downcast_ref::<Timeout>() {
                        return EngineError::Timeout(message.clone());
                    }
                    if let Some(Cancelled(message)) = e.downcast_ref::<Cancelled>() {
                        return EngineError::Cancelled(message.clone());
                    }
                    if let Some(Panicked(message)) = e.downcast_ref::<Panicked>() {
                        return EngineError::Internal(format!("internal error while running the query: {message}"));
                    }
                    if let Some(PolicyFailure(inner)) = e.downcast_ref::<PolicyFailure>() {
                        return match inner {
                            EngineError::Denied(m) => EngineError::Denied(m.clone()),
                            EngineError::Policy(m) => EngineError::Policy(m.clone()),
                            EngineError::NotFound(m) => EngineError::NotFound(m.clone()),
                            other => EngineError::Execution(other.to_string()),
                        };
                    }
                    break;
                }
                DataFusionError::Context(_, inner) => current = inner,
                DataFusionError::Shared(inner) => current = inner,
                DataFusionError::Diagnostic(_, inner) => current = inner,
                _ => break,
            }
        }
        match err.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => EngineError::Sql(err.strip_backtrace()),
            DataFusionError::ResourcesExhausted(m) => EngineError::ResourcesExhausted(m.clone()),
            _ => EngineError::Execution(err.strip_backtrace()),
        }
    }
}
