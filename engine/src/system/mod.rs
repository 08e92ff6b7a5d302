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

mod catalogue;
mod search;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::audit::AuditLog;
use crate::audit::table::{audit_batch, audit_schema, merge_requests, owner_view};
use crate::catalog::MeshCatalog;
use crate::governance::Viewer;
use crate::history::{queries_batch, queries_schema};

pub(crate) use self::search::SearchFunction;

/// What system tables are built from, for one session.
#[derive(Debug, Clone)]
pub(crate) struct SystemContext {
    pub(crate) mesh: Arc<MeshCatalog>,
    pub(crate) viewer: Viewer,
    /// The audit log, on a governed mesh.
    pub(crate) audit: Option<Arc<AuditLog>>,
}

/// The system tables' names, in listing order.
const TABLES: &[&str] = &[
    "domains",
    "products",
    "columns",
    "quality_results",
    "sensitive_columns",
    "sensitive_access",
    "audit_log",
    "queries",
];

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
        let schema = match name {
            "audit_log" => audit_schema(),
            "queries" => queries_schema(),
            "quality_results" => crate::contract::quality::results_schema(),
            other => catalogue::schema(other),
        };
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

impl SystemTable {
    async fn build(&self) -> Result<RecordBatch> {
        let external = |e: Box<dyn std::error::Error + Send + Sync>| DataFusionError::External(e);
        let c = &self.context;
        match self.name.as_str() {
            "queries" => {
                // Without governance there are no administrators: everyone
                // sees their own queries only.
                let all = c.viewer.policies.is_some() && c.viewer.is_admin();
                let user = &c.viewer.principal.user;
                let visible: Vec<_> = c.mesh.history().all().into_iter().filter(|q| all || q.user == *user).collect();
                Ok(queries_batch(&visible)?)
            }
            "audit_log" => {
                let Some(log) = c.audit.clone() else { return audit_batch(&[]) };
                // Only admins and domain owners see any of it: for anyone
                // else the log is not even read.
                let owner = c.mesh.config().domains.iter().any(|d| c.viewer.may_audit_domain(&d.name));
                if !owner {
                    return audit_batch(&[]);
                }
                let path = log.path().display().to_string();
                let records = tokio::task::spawn_blocking(move || log.read_all())
                    .await
                    .map_err(|e| external(Box::new(e)))?
                    .map_err(|e| external(format!("cannot read the audit log {path}: {e}").into()))?;
                let admin = c.viewer.is_admin();
                let owns = |domain: &str| c.viewer.may_audit_domain(domain);
                let visible: Vec<_> = merge_requests(records)
                    .into_iter()
                    .filter(|r| c.viewer.may_audit(&r.products))
                    .map(|r| if admin { r } else { owner_view(r, &owns) })
                    .collect();
                audit_batch(&visible)
            }
            "quality_results" => {
                let log = Arc::clone(c.mesh.quality());
                let path = log.path().display().to_string();
                let results = tokio::task::spawn_blocking(move || log.read_all())
                    .await
                    .map_err(|e| external(Box::new(e)))?
                    .map_err(|e| external(format!("cannot read the quality results {path}: {e}").into()))?;
                let visible: Vec<_> = results
                    .into_iter()
                    .filter_map(|mut r| {
                        let (d, p) = r.product.split_once('.').unwrap_or(("", ""));
                        let product = crate::ProductRef::new(d, p);
                        if !c.viewer.may_see(&product) {
                            return None;
                        }
                        // A rule about a column the viewer may not read is not
                        // shown to them at all: its name and outcome describe
                        // the hidden column.
                        if let Some(column) = &r.column
                            && !c.viewer.may_read_column(&product, column)
                        {
                            return None;
                        }
                        // Rules ran with unrestricted reads: what they measured
                        // (and their errors, which may quote values) is for the
                        // domain's owners and admins; others see the outcome.
                        if !c.viewer.may_audit_domain(d) {
                            r.observed = None;
                            r.message = None;
                            r.sql = None;
                        }
                        Some(r)
                    })
                    .collect();
                Ok(crate::contract::quality::results_batch(&visible)?)
            }
            other => catalogue::build(other, c).await,
        }
    }
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
        scan_batch(self.build().await?, state, projection, filters, limit).await
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
