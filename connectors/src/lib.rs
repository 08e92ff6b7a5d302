//! Source connectors for Agora.
//!
//! A connector turns a *source description* (where a data product lives and how to
//! reach it) into a DataFusion [`TableProvider`] that reads the data **in place**:
//! nothing is copied or loaded when a table is opened, only metadata (a schema, a
//! Delta log) is read.
//!
//! This crate knows nothing about principals or policies: each connector reads
//! its own `source:` section of a mesh file ([`SourceSpec`], where the list of
//! connectors and the checklist for adding one are) into a [`Source`], and the
//! engine decides who may read what.
//!
//! [`TableProvider`]: datafusion::catalog::TableProvider

mod delta;
mod error;
mod join_inputs;
mod location;
mod observed_store;
mod parquet;
mod postgres;
mod postgres_cancel;
mod postgres_constraints;
mod postgres_keys;
mod postgres_metrics;
mod postgres_ranges;
mod postgres_sql;
mod problem;
mod pushable;
mod spec;
mod storage;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use datafusion::catalog::{Session, TableProvider};

pub use crate::delta::{DeltaSource, DeltaSpec};
pub use crate::error::ConnectorError;
pub use crate::parquet::{ParquetSource, ParquetSpec, PartitionColumn, PartitionColumns, PartitionType};
pub use crate::postgres::{
    DEFAULT_READ_PARTITIONS, PostgresConnection, PostgresSource, PostgresSpec, extension_planners, federated_plan,
    in_engine_provider, with_federation,
};
pub use crate::postgres_constraints::{ForeignKey, KeyRule};
pub use crate::problem::{
    MAX_YAML_DEPTH, Problem, at_its_path, check_mapping, check_yaml_depth, describe, from_section, join, read_yaml,
};
pub use crate::spec::{SourceContext, SourceSpec};
pub use crate::storage::{ObjectStoreSettings, register_object_store};

/// Where a data product's rows live, with everything needed to read them.
///
/// Adding a connector: one file and one variant here and in [`SourceSpec`];
/// the checklist is at the top of `spec.rs`.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Parquet files: one file, a directory or an object-store prefix.
    Parquet(ParquetSource),
    /// A Delta Lake table.
    Delta(DeltaSource),
    /// A PostgreSQL table or view.
    Postgres(PostgresSource),
}

impl Source {
    /// A short name of the source kind, as written in configuration files.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Parquet(_) => "parquet",
            Source::Delta(_) => "delta",
            Source::Postgres(_) => "postgres",
        }
    }

    /// The location of the data, with any credentials left out.
    pub fn location(&self) -> &url::Url {
        match self {
            Source::Parquet(s) => &s.location,
            Source::Delta(s) => &s.location,
            Source::Postgres(s) => &s.location,
        }
    }

    /// Checks, cheaply, that the source can be reached now (a TCP connect to a
    /// database server); file and object-store sources always pass, since their
    /// reads report failures themselves.
    pub async fn probe(&self) -> Result<(), ConnectorError> {
        match self {
            Source::Postgres(s) => s.connection.probe().await,
            Source::Parquet(_) | Source::Delta(_) => Ok(()),
        }
    }

    /// When the source's data last changed: the newest commit of a Delta table,
    /// the newest file of a Parquet location. `None` for a database table, whose
    /// freshness is read from one of its columns instead.
    pub async fn modified(&self, session: &dyn Session) -> Result<Option<DateTime<Utc>>, ConnectorError> {
        match self {
            Source::Parquet(s) => s.modified(session).await.map(Some),
            Source::Delta(s) => s.modified(session).await.map(Some),
            Source::Postgres(_) => Ok(None),
        }
    }

    /// Opens the source as a DataFusion table.
    ///
    /// Reads metadata only (file listing and footers for Parquet, the transaction log
    /// for Delta). Object stores the source needs are registered in `session`'s
    /// runtime environment so that later scans find them.
    pub async fn open(&self, session: &dyn Session) -> Result<Arc<dyn TableProvider>, ConnectorError> {
        match self {
            Source::Parquet(s) => s.open(session).await,
            Source::Delta(s) => s.open(session).await,
            Source::Postgres(s) => s.open(session).await,
        }
    }
}
