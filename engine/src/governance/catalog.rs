//! The catalog as one principal sees it: only the domains and products they
//! may read, each product narrowed to its readable columns and wrapped with the
//! principal's policies, plus the `system` schema. Every SQL path, including
//! `information_schema` and `SHOW TABLES`, resolves names through it.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::{DomainSchema, MeshCatalog};
use crate::error::{PolicyFailure, ProductFailure};
use crate::{EngineError, Principal, ProductRef};

use super::audit::{AuditLog, audit_batch, audit_schema};
use super::compile::govern;
use super::policy::{Access, PolicySet};

/// What a session needs to decide: the principal and the policies in force
/// (none for an open mesh).
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub(crate) principal: Arc<Principal>,
    pub(crate) policies: Option<Arc<PolicySet>>,
    pub(crate) audit: Option<Arc<AuditLog>>,
}

impl Viewer {
    pub(crate) fn may_see(&self, product: &ProductRef) -> bool {
        self.policies.as_ref().is_none_or(|p| p.may_see(&self.principal, product))
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.policies.as_ref().is_none_or(|p| p.is_admin(&self.principal))
    }
}

/// The `mesh` catalog for one session.
#[derive(Debug)]
pub(crate) struct SessionCatalog {
    pub(crate) mesh: Arc<MeshCatalog>,
    pub(crate) viewer: Viewer,
}

impl SessionCatalog {
    /// The table a query of `product` reads: the raw table for principals with
    /// full access, a governed one otherwise; an error when denied.
    pub(crate) async fn table(&self, product: &ProductRef) -> Result<Arc<dyn TableProvider>, EngineError> {
        let Some(entry) = self.mesh.product(product) else {
            return Err(EngineError::NotFound(format!("no product {product}")));
        };
        if !self.viewer.may_see(product) {
            return Err(denied(&self.viewer, product));
        }
        let raw = entry.table().await?;
        let Some(policies) = &self.viewer.policies else { return Ok(raw) };
        let columns: Vec<String> = raw.schema().fields().iter().map(|f| f.name().clone()).collect();
        match policies.access(&self.viewer.principal, product, &columns) {
            Ok(Access::Full) => Ok(raw),
            Ok(Access::Limited(policy)) => {
                let governed = govern(raw, product, &policy, policies, self.mesh.opener())
                    .map_err(|e| EngineError::Policy(format!("{product}: {e}")))?;
                Ok(Arc::new(governed))
            }
            Err(denial) => Err(EngineError::Denied(denial.0)),
        }
    }
}

/// The denial for a product the principal has no grant on.
pub(crate) fn denied(viewer: &Viewer, product: &ProductRef) -> EngineError {
    let p = &viewer.principal;
    let groups = if p.groups.is_empty() { String::new() } else { format!(" (groups: {})", p.groups.join(", ")) };
    EngineError::Denied(format!("access denied: user '{}'{groups} has no grant on {product} (deny by default)", p.user))
}

impl CatalogProvider for SessionCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .mesh
            .domains()
            .filter(|(name, d)| d.product_names().any(|p| self.viewer.may_see(&ProductRef::new(*name, p))))
            .map(|(name, _)| name.to_string())
            .collect();
        if self.viewer.audit.is_some() {
            names.push("system".to_string());
        }
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == "system" {
            return self.viewer.audit.as_ref().map(|_| Arc::new(SystemSchema { viewer: self.viewer.clone() }) as _);
        }
        let domain = self.mesh.domain(name)?;
        Some(Arc::new(SessionDomain {
            name: name.to_string(),
            domain: Arc::clone(domain),
            catalog: SessionCatalog { mesh: Arc::clone(&self.mesh), viewer: self.viewer.clone() },
        }))
    }
}

/// One domain for one session.
#[derive(Debug)]
struct SessionDomain {
    name: String,
    domain: Arc<DomainSchema>,
    catalog: SessionCatalog,
}

#[async_trait]
impl SchemaProvider for SessionDomain {
    fn table_names(&self) -> Vec<String> {
        self.domain
            .product_names()
            .filter(|p| self.catalog.viewer.may_see(&ProductRef::new(&self.name, *p)))
            .map(str::to_string)
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if !self.domain.has_product(name) {
            return Ok(None);
        }
        match self.catalog.table(&ProductRef::new(&self.name, name)).await {
            Ok(t) => Ok(Some(t)),
            Err(EngineError::ProductUnavailable { product, cause }) => {
                Err(DataFusionError::External(Box::new(ProductFailure { product, source: cause })))
            }
            Err(other) => Err(DataFusionError::External(Box::new(PolicyFailure(other)))),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.domain.has_product(name) && self.catalog.viewer.may_see(&ProductRef::new(&self.name, name))
    }
}

/// The engine's own tables.
#[derive(Debug)]
struct SystemSchema {
    viewer: Viewer,
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        vec!["audit_log".to_string()]
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match (name, &self.viewer.audit) {
            ("audit_log", Some(log)) => {
                Ok(Some(Arc::new(AuditLogTable { log: Arc::clone(log), viewer: self.viewer.clone() })))
            }
            _ => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        name == "audit_log"
    }
}

/// `system.audit_log`: admins see every record, a domain's owners the records
/// that touch their domain, others none.
#[derive(Debug)]
struct AuditLogTable {
    log: Arc<AuditLog>,
    viewer: Viewer,
}

#[async_trait]
impl TableProvider for AuditLogTable {
    fn schema(&self) -> SchemaRef {
        audit_schema()
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
        let log = Arc::clone(&self.log);
        let records = tokio::task::spawn_blocking(move || log.read_all())
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let admin = self.viewer.is_admin();
        let principal = &self.viewer.principal;
        let owns = |domain: &str| self.viewer.policies.as_ref().is_some_and(|p| p.is_owner(principal, domain));
        let visible: Vec<_> = records
            .into_iter()
            .filter(|r| admin || r.products.iter().any(|p| p.split('.').next().is_some_and(owns)))
            .collect();
        let batch = audit_batch(&visible)?;
        let table = MemTable::try_new(audit_schema(), vec![vec![batch]])?;
        table.scan(state, projection, filters, limit).await
    }
}
