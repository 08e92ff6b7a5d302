//! SQL's `information_schema` for one session, with descriptions.
//!
//! DataFusion's own `information_schema` lists what the session's catalog
//! lists (for Agora: only what the principal may see), but has no column
//! for a table's or a column's description (apache/datafusion#17734
//! proposed one and was closed). Catalog browsers and SQL users read
//! descriptions from there, so Agora serves DataFusion's provider over the
//! governed catalog itself, with a `description` column added to `tables`
//! (the product's description) and `columns` (the column's, from its
//! contract). `SHOW TABLES` and `SHOW COLUMNS` keep working: DataFusion plans
//! them over whatever `information_schema.tables` / `.columns` resolve to.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProviderList, SchemaProvider, Session, TableProvider,
};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::ProductRef;
use crate::catalog::MeshCatalog;

/// The session's `information_schema`.
#[derive(Debug)]
pub(crate) struct InformationSchema {
    inner: InformationSchemaProvider,
    mesh: Arc<MeshCatalog>,
}

impl InformationSchema {
    /// `information_schema` over `catalog` (the session's governed `mesh`);
    /// descriptions come from `mesh`'s products.
    pub(crate) fn new(mesh: Arc<MeshCatalog>, catalog: Arc<dyn CatalogProvider>) -> Self {
        let list = MemoryCatalogProviderList::new();
        list.register_catalog(crate::CATALOG.to_string(), catalog);
        InformationSchema { inner: InformationSchemaProvider::new(Arc::new(list)), mesh }
    }
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.inner.table(name).await? else { return Ok(None) };
        let kind = match name.to_ascii_lowercase().as_str() {
            "tables" => Listing::Tables,
            "columns" => Listing::Columns,
            _ => return Ok(Some(table)),
        };
        let mut fields = table.schema().fields().to_vec();
        fields.push(Arc::new(Field::new("description", DataType::Utf8, true)));
        let schema = Arc::new(Schema::new(fields));
        Ok(Some(Arc::new(Described { inner: table, schema, kind, mesh: Arc::clone(&self.mesh) })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// Which listing a [`Described`] table extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// One row per table: the product's description.
    Tables,
    /// One row per column: the column's description.
    Columns,
}

/// An `information_schema` listing with a `description` column.
#[derive(Debug)]
struct Described {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
    kind: Listing,
    mesh: Arc<MeshCatalog>,
}

impl Described {
    /// The description of one row's table (or column), if it has one.
    fn description(&self, schema: &str, table: &str, column: Option<&str>) -> Option<String> {
        let product = self.mesh.product(&ProductRef::new(schema, table))?;
        match column {
            None => Some(product.config.description.clone()),
            Some(column) => product
                .config
                .contract
                .iter()
                .flat_map(|c| c.columns.iter())
                .find(|c| c.name == column)
                .and_then(|c| c.description.clone()),
        }
    }

    fn describe(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| DataFusionError::Internal(format!("information_schema has no text column {name}")))
        };
        let (schemas, tables) = (text("table_schema")?, text("table_name")?);
        let columns = if self.kind == Listing::Columns { Some(text("column_name")?) } else { None };
        let mut descriptions = StringBuilder::new();
        for row in 0..batch.num_rows() {
            let column = columns.map(|c| c.value(row));
            descriptions.append_option(self.description(schemas.value(row), tables.value(row), column));
        }
        let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
        arrays.push(Arc::new(descriptions.finish()));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), arrays)?)
    }
}

#[async_trait]
impl TableProvider for Described {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    /// The listing is small (one row per table or column the principal may
    /// see): it is built in full, then described.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, None, &[], None).await?;
        let batches = datafusion::physical_plan::collect(plan, state.task_ctx()).await?;
        let described = batches.iter().map(|b| self.describe(b)).collect::<Result<Vec<_>>>()?;
        Ok(MemorySourceConfig::try_new_exec(&[described], Arc::clone(&self.schema), projection.cloned())?)
    }
}
