//! The engine's error type.

use agora_connectors::ConnectorError;
use datafusion::arrow::error::ArrowError;
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
    /// A source failed while the query read it (a file deleted or
    /// rewritten under a running server, an object store or a database
    /// that stopped answering) where the failure does not say which product
    /// it belongs to; retry later.
    #[error("a source could not be read: {0}")]
    SourceUnavailable(String),
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

/// Errors an expression raises on the data it meets: the query's own
/// mistake (a cast of text that is not a number, a division by zero), not
/// the engine's.
fn is_data_error(err: &ArrowError) -> bool {
    matches!(
        err,
        ArrowError::CastError(_)
            | ArrowError::DivideByZero
            | ArrowError::ArithmeticOverflow(_)
            | ArrowError::ParseError(_)
            | ArrowError::InvalidArgumentError(_)
    )
}

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
            DataFusionError::ArrowError(e, _) if is_data_error(e) => EngineError::Sql(err.strip_backtrace()),
            DataFusionError::ArrowError(e, _) if matches!(**e, ArrowError::IoError(..)) => {
                EngineError::SourceUnavailable(err.strip_backtrace())
            }
            DataFusionError::ObjectStore(_) | DataFusionError::ParquetError(_) | DataFusionError::IoError(_) => {
                EngineError::SourceUnavailable(err.strip_backtrace())
            }
            _ => EngineError::Execution(err.strip_backtrace()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_are_the_querys_and_source_errors_are_unavailable() {
        let arrow = |e| DataFusionError::ArrowError(Box::new(e), None);
        for user in [
            arrow(ArrowError::DivideByZero),
            arrow(ArrowError::CastError("Cannot cast string 'x' to value of Int32 type".into())),
            DataFusionError::Context(
                "while evaluating".into(),
                Box::new(arrow(ArrowError::ArithmeticOverflow("x".into()))),
            ),
        ] {
            assert!(matches!(EngineError::from(&user), EngineError::Sql(_)), "{user}");
        }
        let gone = datafusion::object_store::Error::NotFound {
            path: "sales/lineitem/part-1.parquet".into(),
            source: "gone".into(),
        };
        for source in [
            DataFusionError::ObjectStore(Box::new(gone)),
            DataFusionError::ParquetError(Box::new(datafusion::parquet::errors::ParquetError::EOF("truncated".into()))),
            arrow(ArrowError::IoError("reset".into(), std::io::Error::other("reset"))),
        ] {
            let classified = EngineError::from(&source);
            assert!(matches!(classified, EngineError::SourceUnavailable(_)), "{source} -> {classified:?}");
        }
        let other = DataFusionError::Internal("a bug".into());
        assert!(matches!(EngineError::from(&other), EngineError::Execution(_)));
    }
}
