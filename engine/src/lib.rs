//! Agora's embeddable data-mesh query engine.
//!
//! Load a mesh configuration, open a [`Session`] and run SQL over every domain's
//! data products, which stay where they are (Parquet on object stores, Delta
//! tables). Names follow the mesh: catalog `mesh`, one schema per domain, one
//! table per product, so `SELECT … FROM sales.orders JOIN customers.customer …`.
//!
//! ```no_run
//! # async fn run() -> Result<(), agora_engine::EngineError> {
//! let engine = agora_engine::Engine::open("mesh.yaml").await?;
//! let batches = engine.session().collect("SELECT count(*) FROM sales.orders").await?;
//! # Ok(()) }
//! ```

pub mod audit;
mod catalog;
pub mod config;
pub mod contract;
mod cooperative;
mod engine;
mod error;
pub mod freshness;
pub mod governance;
pub mod history;
pub mod identity;
mod jsonl;
pub mod jwt;
pub mod limits;
pub mod lineage;
mod login_throttle;
mod plan_reads;
mod principal;
mod product;
mod query_context;
mod query_runtime;
mod session;
mod span_propagation;
mod system;

pub use crate::config::{ConfigError, MeshConfig, Problem};
pub use crate::engine::{
    CATALOG, Engine, ProductCheck, ProductForeignKey, ProductRemarks, Query, ResourceUsage, Session,
};
pub use crate::error::EngineError;
pub use crate::history::{QueryInfo, QueryState};
pub use crate::identity::{AuthError, Authenticator, Principal};
pub use crate::jsonl::Rotation;
pub use crate::product::ProductRef;
pub use crate::query_context::{QueryContext, trace_id_of};
pub use agora_connectors::ConnectorError;
