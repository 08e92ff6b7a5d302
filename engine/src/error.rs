//! The engine's error type.

use agora_connectors::ConnectorError;
use datafusion::error::DataFusionError;

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
    /// The query failed while running.
    #[error("query failed: {0}")]
    Execution(String),
}

/// A product's failure, carried through DataFusion (which only knows its own error
/// type) as an external error and recovered by [`EngineError::from`].
#[derive(Debug, thiserror::Error)]
#[error("product {product} is unavailable: {source}")]
pub(crate) struct ProductFailure {
    pub(crate) product: ProductRef,
    pub(crate) source: ConnectorError,
}

impl From<DataFusionError> for EngineError {
    fn from(err: DataFusionError) -> Self {
        // Find a product failure anywhere in the chain first: it names the product.
        let mut current: &DataFusionError = &err;
        loop {
            match current {
                DataFusionError::External(e) => {
                    if let Some(f) = e.downcast_ref::<ProductFailure>() {
                        return EngineError::ProductUnavailable { product: f.product.clone(), cause: f.source.clone() };
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
