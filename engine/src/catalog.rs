//! The `mesh` catalog: one schema per domain, one table per data product.
//!
//! Products are opened **lazily**: registering a mesh reads nothing from any
//! source. The first query that names a product opens it (lists its files, reads
//! a Parquet footer, a Delta log or a PostgreSQL table's columns) and the table
//! is kept for later queries for `freshness.metadata_ttl_seconds`, so that new
//! Delta commits and schema changes show without a restart (Parquet listings
//! follow `freshness.listing_ttl_seconds`, see [`crate::freshness`]). A product
//! that fails to open is not cached, so it is retried on the next query, and
//! its failure never affects other products.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::catalog::{Session, TableProvider};
use datafusion::execution::SessionState;
use tokio::sync::Mutex;

use agora_connectors::{ConnectorError, Source};

use crate::config::{DomainConfig, MeshConfig, ProductConfig};
use crate::contract::quality::QualityLog;
use crate::history::QueryHistory;
use crate::{EngineError, ProductRef};

/// The catalog of all domains, shared by every session of an engine.
#[derive(Debug)]
pub(crate) struct MeshCatalog {
    config: MeshConfig,
    domains: BTreeMap<String, Arc<DomainSchema>>,
    /// The history of quality checks.
    quality: Arc<QualityLog>,
    /// Every query received: running, and the newest finished.
    history: Arc<QueryHistory>,
    /// The state products are opened with; also plans policy expressions.
    opener: Arc<SessionState>,
}

/// One domain as a SQL schema.
#[derive(Debug)]
pub(crate) struct DomainSchema {
    products: BTreeMap<String, Arc<Product>>,
}

/// A product and its table once opened.
#[derive(Debug)]
pub(crate) struct Product {
    pub(crate) reference: ProductRef,
    pub(crate) config: ProductConfig,
    /// The opened table, or the last failure to open it.
    table: Mutex<Opened>,
    /// The state used to open the source: its runtime holds the object stores.
    opener: Arc<SessionState>,
    /// How long the opened table is used before the source is opened again.
    metadata_ttl: Duration,
}

impl MeshCatalog {
    pub(crate) fn new(config: MeshConfig, opener: Arc<SessionState>) -> Self {
        let ttl = config.freshness.metadata_ttl;
        let domains =
            config.domains.iter().map(|d| (d.name.clone(), Arc::new(DomainSchema::new(d, &opener, ttl)))).collect();
        let quality = QualityLog::new(&config.quality);
        let history = QueryHistory::open(&config.history);
        MeshCatalog { config, domains, quality, history, opener }
    }

    pub(crate) fn config(&self) -> &MeshConfig {
        &self.config
    }

    pub(crate) fn quality(&self) -> &Arc<QualityLog> {
        &self.quality
    }

    pub(crate) fn history(&self) -> &Arc<QueryHistory> {
        &self.history
    }

    pub(crate) fn opener(&self) -> &SessionState {
        &self.opener
    }

    pub(crate) fn domains(&self) -> impl Iterator<Item = (&str, &Arc<DomainSchema>)> {
        self.domains.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub(crate) fn domain(&self, name: &str) -> Option<&Arc<DomainSchema>> {
        self.domains.get(name)
    }

    pub(crate) fn product(&self, product: &ProductRef) -> Option<&Arc<Product>> {
        self.domains.get(&product.domain)?.products.get(&product.product)
    }

    pub(crate) fn products(&self) -> impl Iterator<Item = &Arc<Product>> {
        self.domains.values().flat_map(|d| d.products.values())
    }
}

impl DomainSchema {
    fn new(domain: &DomainConfig, opener: &Arc<SessionState>, metadata_ttl: Duration) -> Self {
        let products = domain
            .products
            .iter()
            .map(|p| {
                let product = Product {
                    reference: ProductRef::new(&domain.name, &p.name),
                    config: p.clone(),
                    table: Mutex::new(Opened::Not),
                    opener: Arc::clone(opener),
                    metadata_ttl,
                };
                (p.name.clone(), Arc::new(product))
            })
            .collect();
        DomainSchema { products }
    }

    pub(crate) fn product_names(&self) -> impl Iterator<Item = &str> {
        self.products.keys().map(String::as_str)
    }

    pub(crate) fn has_product(&self, name: &str) -> bool {
        self.products.contains_key(name)
    }
}

impl Product {
    /// The product's table, opening its source on first use. A source that can
    /// tell cheaply whether it is reachable is checked each time, so a query on
    /// a database that went down fails at once, naming the product. The source
    /// is opened again once the table is older than the metadata TTL, so new
    /// Delta commits, Parquet schema changes and PostgreSQL columns become
    /// visible without a restart.
    pub(crate) async fn table(&self) -> Result<Arc<dyn TableProvider>, EngineError> {
        let unavailable = |cause| EngineError::ProductUnavailable { product: self.reference.clone(), cause };
        let cached = match &*self.table.lock().await {
            Opened::Table(table, opened) => (opened.elapsed() < self.metadata_ttl).then(|| Arc::clone(table)),
            _ => None,
        };
        // The reachability probe runs without the lock: queries on a source
        // that hangs wait side by side, not one after another.
        if let Some(table) = cached {
            self.config.source.probe().await.map_err(unavailable)?;
            return Ok(table);
        }
        // One opener at a time per product: concurrent first queries share one
        // open, and the queries that waited for a failed attempt share its
        // failure rather than each trying again in turn; later queries retry.
        let asked = Instant::now();
        let mut slot = self.table.lock().await;
        match &*slot {
            Opened::Table(table, opened) if opened.elapsed() < self.metadata_ttl => return Ok(Arc::clone(table)),
            Opened::Failed(cause, at) if *at >= asked => return Err(unavailable(cause.clone())),
            _ => {}
        }
        let started = Instant::now();
        let opened = self.config.source.open(self.opener.as_ref() as &dyn Session).await;
        let table = match (opened, &*slot) {
            (Ok(table), _) => table,
            // Every file of a Parquet product that was serving is gone (a
            // refresh job between its delete and its write, say): the product
            // is empty, as its per-query listing already says, not unavailable.
            (Err(ConnectorError::NotFound { .. }), Opened::Table(previous, _))
                if matches!(self.config.source, Source::Parquet(_)) =>
            {
                Arc::clone(previous)
            }
            (Err(cause), _) => {
                tracing::warn!(product = %self.reference, error = %cause, "cannot open product");
                *slot = Opened::Failed(cause.clone(), Instant::now());
                return Err(unavailable(cause));
            }
        };
        tracing::debug!(product = %self.reference, elapsed = ?started.elapsed(), "opened product");
        *slot = Opened::Table(Arc::clone(&table), Instant::now());
        Ok(table)
    }
}

/// What is known of a product's table.
#[derive(Debug)]
enum Opened {
    /// Not opened yet.
    Not,
    /// Opened at this time.
    Table(Arc<dyn TableProvider>, Instant),
    /// The last attempt failed at this time.
    Failed(agora_connectors::ConnectorError, Instant),
}
