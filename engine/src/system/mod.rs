//! The `system` schema: the engine's own tables, governed like the products.
//!
//! | table                | what                                                   | who sees what                       |
//! |----------------------|--------------------------------------------------------|-------------------------------------|
//! | `domains`            | each domain, its owner, how many products you may read | domains with a readable product     |
//! | `products`           | each product: owner, source, contract, status (drift)  | products you may read               |
//! | `columns`            | each column: type, description, classification, tags  | columns you may read                |
//! | `quality_results`    | history of `agora check --quality`                     | results of products you may read    |
//! | `sensitive_columns`  | columns classified or tagged sensitive                 | columns you may read                |
//! | `sensitive_access`   | who read which sensitive column, masked or not         | admins all, owners their domain     |
//! | `audit_log`          | every request                                          | admins all, owners their domain     |
//! | `queries`            | running and recent queries (the query history)         | admins all, others their own        |
//!
//! plus the table function `search_products('text')`. The tables are built when
//! scanned, from the configuration, the contracts, the opened sources and the
//! audit and quality logs, so they are always current.

mod search;
pub(crate) mod tables;
mod views;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use self::tables::TABLES;
use crate::audit::AuditLog;
use crate::catalog::MeshCatalog;
use crate::governance::Viewer;

pub(crate) use self::search::SearchFunction;

/// What system tables are built from, for one session.
#[derive(Debug, Clone)]
pub(crate) struct SystemContext {
    pub(crate) mesh: Arc<MeshCatalog>,
    pub(crate) viewer: Viewer,
    /// The audit log, on a governed mesh.
    pub(crate) audit: Option<Arc<AuditLog>>,
}

/// The `system` schema for one session.
#[derive(Debug)]
pub(crate) struct SystemSchema {
    pub(crate) context: SystemContext,
}

impl SystemSchema {
    fn has(&self, name: &str) -> bool {
        TABLES.contains(&name) && (self.context.audit.is_some() || !matches!(name, "audit_log" | "sensitive_access"))
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().filter(|t| self.has(t)).map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if !self.has(name) {
            return Ok(None);
        }
        let Some(schema) = tables::schema(name) else { return Ok(None) };
        Ok(Some(Arc::new(SystemTable { name: name.to_string(), schema, context: self.context.clone() })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.has(name)
    }
}

/// One system table, built from current state when scanned.
#[derive(Debug)]
struct SystemTable {
    name: String,
    schema: SchemaRef,
    context: SystemContext,
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        scan_batch(tables::build(&self.name, &self.context).await?, state, projection, filters, limit).await
    }
}

/// Scans one batch built for a query, as a memory table (which applies the
/// projection, filters and limit).
pub(crate) async fn scan_batch(
    batch: RecordBatch,
    state: &dyn Session,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    table.scan(state, projection, filters, limit).await
}
