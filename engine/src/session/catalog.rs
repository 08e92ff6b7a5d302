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
use crate::{EngineError, ProductRef};

use crate::governance::Viewer;
use crate::governance::compile::govern;
use crate::governance::policy::Access;

/// The `mesh` catalog for one session.
#[derive(Debug, Clone)]
pub(crate) struct SessionCatalog {
    pub(crate) mesh: Arc<MeshCatalog>,
    pub(crate) viewer: Viewer,
    /// The engine's `system` schema for this viewer, built by the engine:
    /// the catalog only places it under its name.
    pub(crate) system: Arc<dyn SchemaProvider>,
}

impl SessionCatalog {
    /// The table a query of `product` reads: the raw table for principals with
    /// full access, a governed one otherwise; an error when denied.
    pub(crate) async fn table(&self, product: &ProductRef) -> Result<Arc<dyn TableProvider>, EngineError> {
        let Some(entry) = self.mesh.product(product) else {
            return Err(EngineError::NotFound(format!("no product {product}")));
        };
        if !self.viewer.may_see(product) {
            return Err(self.viewer.denied(product));
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
            return Some(Arc::new(super::information_schema::InformationSchema::new(
                Arc::clone(&self.mesh),
                Arc::new(self.clone()),
            )));
        }
        if name == "system" {
            return Some(Arc::clone(&self.system));
        }
        let domain = self.mesh.domain(name)?;
        Some(Arc::new(SessionDomain { name: name.to_string(), domain: Arc::clone(domain), catalog: self.clone() }))
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
