//! The catalog as one principal sees it: only the domains and products they
//! may read, each product narrowed to its readable columns and wrapped with the
//! principal's policies, plus the `system` schema. Every SQL path, including
//! `information_schema` and `SHOW TABLES`, resolves names through it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};

use crate::catalog::{DomainSchema, MeshCatalog};
use crate::error::{PolicyFailure, ProductFailure};
use crate::{EngineError, Principal, ProductRef};

use crate::system::{SystemContext, SystemSchema};

use super::compile::govern;
use super::policy::{Access, PolicySet};
use crate::audit::AuditLog;

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

    /// May the viewer read `column` of `product` (masked or not)?
    pub(crate) fn may_read_column(&self, product: &ProductRef, column: &str) -> bool {
        let Some(policies) = &self.policies else { return true };
        match policies.access(&self.principal, product, &[column.to_string()]) {
            Ok(super::Access::Full) => true,
            Ok(super::Access::Limited(policy)) => policy.columns.iter().any(|c| c == column),
            Err(_) => false,
        }
    }

    /// May the viewer read audit records about `domain`? Admins may read all,
    /// a domain's owners those of their domain.
    pub(crate) fn may_audit_domain(&self, domain: &str) -> bool {
        self.is_admin() || self.policies.as_ref().is_some_and(|p| p.is_owner(&self.principal, domain))
    }

    /// May the viewer read an audit record of a request that read `products`
    /// (`domain.product`)?
    pub(crate) fn may_audit(&self, products: &[String]) -> bool {
        self.is_admin() || products.iter().any(|p| p.split('.').next().is_some_and(|d| self.may_audit_domain(d)))
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

/// The denial for a product the principal has no grant on, and, on a
/// governed mesh, for a product that does not exist: the two must not be told
/// apart by a principal that may read neither.
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
        names.push("system".to_string());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == "information_schema" {
            let catalog = SessionCatalog { mesh: Arc::clone(&self.mesh), viewer: self.viewer.clone() };
            return Some(Arc::new(super::information_schema::InformationSchema::new(catalog)));
        }
        if name == "system" {
            let context = SystemContext { mesh: Arc::clone(&self.mesh), viewer: self.viewer.clone() };
            return Some(Arc::new(SystemSchema { context }));
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
