//! The embeddable engine: a loaded mesh and the sessions that query it.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::TableReference;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement as SQLStatement;
use futures::{StreamExt, TryStreamExt};

use agora_connectors::Source;

use crate::catalog::MeshCatalog;
use crate::config::{DomainConfig, MeshConfig, RESERVED_SCHEMAS};
use crate::{EngineError, Principal, ProductRef};

/// The SQL catalog name under which every domain appears.
pub const CATALOG: &str = "mesh";

/// The default schema of sessions. Unqualified table names are refused before
/// planning (with a hint naming the domains that have such a product), so this
/// only has to be a name.
const DEFAULT_SCHEMA: &str = "public";

/// How many products are opened at once by [`Engine::check`].
const OPEN_CONCURRENCY: usize = 16;

/// A loaded mesh, ready to be queried.
///
/// Cheap to clone; clones share the catalog, the opened tables and the object-store
/// clients. Create one per process and a [`Session`] per request or client.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: MeshConfig,
    catalog: Arc<MeshCatalog>,
    runtime: Arc<RuntimeEnv>,
    session_config: SessionConfig,
    /// Some products are remote databases: plans go through the federation
    /// optimizer, which sends whole single-source sub-plans to the source.
    federated: bool,
}

/// The outcome of opening one product, as reported by [`Engine::check`].
#[derive(Debug)]
pub struct ProductCheck {
    /// The product.
    pub product: ProductRef,
    /// Its schema, or why it could not be opened.
    pub result: Result<SchemaRef, EngineError>,
}

impl Engine {
    /// Loads and validates a mesh file, then registers its products. Reads no data.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, EngineError> {
        Self::new(MeshConfig::from_file(path)?)
    }

    /// Registers the products of an already validated configuration. Reads no data.
    pub fn new(config: MeshConfig) -> Result<Self, EngineError> {
        let runtime = RuntimeEnvBuilder::new().build_arc().map_err(EngineError::from)?;
        let session_config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true);
        let federated =
            config.domains.iter().flat_map(|d| &d.products).any(|p| matches!(p.source, Source::Postgres(_)));
        let opener = SessionStateBuilder::new()
            .with_config(session_config.clone())
            .with_runtime_env(Arc::clone(&runtime))
            .with_default_features()
            .build();
        let catalog = Arc::new(MeshCatalog::new(&config, Arc::new(opener)));
        Ok(Engine { inner: Arc::new(Inner { config, catalog, runtime, session_config, federated }) })
    }

    /// The configuration the engine was built from.
    pub fn config(&self) -> &MeshConfig {
        &self.inner.config
    }

    /// The domains, in configuration order.
    pub fn domains(&self) -> &[DomainConfig] {
        &self.inner.config.domains
    }

    /// Opens a session for the embedding application itself (the `local`
    /// principal). Sessions are independent: settings changed in one do not leak
    /// into another, while opened tables and object stores are shared.
    pub fn session(&self) -> Session {
        self.session_as(Principal::user("local"))
    }

    /// Opens a session that runs as `principal`: the identity every access
    /// decision and audit record of the session refers to.
    pub fn session_as(&self, principal: Principal) -> Session {
        let mut builder = SessionStateBuilder::new()
            .with_config(self.inner.session_config.clone())
            .with_runtime_env(Arc::clone(&self.inner.runtime))
            .with_default_features();
        if self.inner.federated {
            builder = agora_connectors::with_federation(builder);
        }
        let state = builder.build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_catalog(CATALOG, Arc::clone(&self.inner.catalog) as _);
        Session { ctx, engine: self.clone(), principal }
    }

    /// The schema of one product, opening it if needed.
    pub async fn product_schema(&self, product: &ProductRef) -> Result<SchemaRef, EngineError> {
        let entry = self
            .inner
            .catalog
            .product(product)
            .ok_or_else(|| EngineError::NotFound(self.describe_missing(&product.domain, &product.product)))?;
        Ok(entry.table().await?.schema())
    }

    /// Opens every product (at most 16 at a time) and reports each one's schema or
    /// failure, in catalogue order.
    pub async fn check(&self) -> Vec<ProductCheck> {
        let products: Vec<_> = self.inner.catalog.products().cloned().collect();
        futures::stream::iter(products)
            .map(|p| async move {
                let result = p.table().await.map(|t| t.schema());
                ProductCheck { product: p.reference.clone(), result }
            })
            .buffered(OPEN_CONCURRENCY)
            .collect()
            .await
    }

    /// A message for a name that does not resolve, listing what does exist.
    fn describe_missing(&self, domain: &str, product: &str) -> String {
        let domains = &self.inner.config.domains;
        match self.inner.config.domain(domain) {
            Some(d) => {
                let names: Vec<&str> = d.products.iter().map(|p| p.name.as_str()).collect();
                format!("no product '{product}' in domain '{domain}'; its products are: {}", names.join(", "))
            }
            None => {
                let names: Vec<&str> = domains.iter().map(|d| d.name.as_str()).collect();
                format!("no domain '{domain}' (looking up '{domain}.{product}'); domains are: {}", names.join(", "))
            }
        }
    }
}

/// One client's connection to the engine: runs SQL against the mesh.
pub struct Session {
    ctx: SessionContext,
    engine: Engine,
    principal: Principal,
}

/// A planned query: its result schema is known before it runs.
pub struct Query {
    frame: DataFrame,
}

impl Session {
    /// Plans a single read-only SQL statement. Names are checked against the mesh
    /// first, so a typo gets a message listing the products that exist.
    ///
    /// Parameters may be written `$1`, `$2`… or, as JDBC does, `?` (numbered in
    /// order of appearance); bind them with [`Query::bind`].
    pub async fn query(&self, sql: &str) -> Result<Query, EngineError> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let sql = number_question_marks(sql);
        let statement = state.sql_to_statement(&sql, &dialect)?;
        ensure_read_only(&statement)?;
        for reference in state.resolve_table_references(&statement)? {
            let is_table_function = matches!(&reference, TableReference::Bare { table } if state.table_functions().contains_key(table.as_ref()));
            if !is_table_function {
                self.check_reference(&reference)?;
            }
        }
        let plan = state.statement_to_plan(statement).await?;
        read_only()
            .verify_plan(&plan)
            .map_err(|e| EngineError::ReadOnly(format!("Agora is read-only: {}", e.strip_backtrace())))?;
        self.plan(plan).await
    }

    /// Runs an already built logical plan (for embedders that build plans with
    /// DataFusion's DataFrame API).
    pub async fn plan(&self, plan: LogicalPlan) -> Result<Query, EngineError> {
        let frame = self.ctx.execute_logical_plan(plan).await?;
        Ok(Query { frame })
    }

    /// Plans and starts a query, returning its stream of record batches.
    pub async fn sql(&self, sql: &str) -> Result<SendableRecordBatchStream, EngineError> {
        self.query(sql).await?.stream().await
    }

    /// Runs a query to completion and returns every batch. For small results only.
    pub async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>, EngineError> {
        let stream = self.sql(sql).await?;
        stream.map_err(EngineError::from).try_collect().await
    }

    /// Who the session runs as.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The underlying DataFusion context, for embedders that need more than SQL.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    fn check_reference(&self, reference: &TableReference) -> Result<(), EngineError> {
        let (catalog, schema, table) = match reference {
            TableReference::Bare { table } => {
                let owners: Vec<String> = self
                    .engine
                    .domains()
                    .iter()
                    .filter(|d| d.product(table).is_some())
                    .map(|d| format!("{}.{table}", d.name))
                    .collect();
                let hint =
                    if owners.is_empty() { String::new() } else { format!("; did you mean {}?", owners.join(" or ")) };
                return Err(EngineError::NotFound(format!(
                    "table '{table}' must be qualified by its domain, as domain.product{hint}"
                )));
            }
            TableReference::Partial { schema, table } => (CATALOG, schema.as_ref(), table.as_ref()),
            TableReference::Full { catalog, schema, table } => (catalog.as_ref(), schema.as_ref(), table.as_ref()),
        };
        if catalog != CATALOG {
            return Err(EngineError::NotFound(format!(
                "no catalog '{catalog}' (looking up '{reference}'); the only catalog is '{CATALOG}'"
            )));
        }
        if RESERVED_SCHEMAS.contains(&schema) {
            return Ok(());
        }
        let found = self.engine.config().domain(schema).and_then(|d| d.product(table)).is_some();
        if found { Ok(()) } else { Err(EngineError::NotFound(self.engine.describe_missing(schema, table))) }
    }
}

impl Query {
    /// The schema of the rows the query returns, as planned (logical).
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(self.frame.schema().inner())
    }

    /// The exact schema of the batches [`Query::stream`] will produce, nullability
    /// included: it comes from the physical plan, which may know more than the
    /// logical one. Plans the query without running it.
    pub async fn output_schema(&self) -> Result<SchemaRef, EngineError> {
        Ok(self.frame.clone().create_physical_plan().await?.schema())
    }

    /// The query's parameters (`$1`, `$2`…) in numeric order, with the type
    /// inferred from their use where DataFusion can tell.
    pub fn parameters(&self) -> Result<Vec<(String, Option<DataType>)>, EngineError> {
        let mut params: Vec<_> = self.frame.logical_plan().get_parameter_types()?.into_iter().collect();
        params.sort_by_key(|(name, _)| {
            (name.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX), name.clone())
        });
        Ok(params)
    }

    /// Binds positional parameter values (`$1` is `values[0]`).
    pub fn bind(self, values: Vec<ScalarValue>) -> Result<Query, EngineError> {
        let frame = self.frame.with_param_values(ParamValues::from(values))?;
        Ok(Query { frame })
    }

    /// The logical plan, after name resolution and before optimisation.
    pub fn logical_plan(&self) -> &LogicalPlan {
        self.frame.logical_plan()
    }

    /// Starts the query. Batches are produced as the stream is polled; dropping the
    /// stream cancels the query.
    pub async fn stream(self) -> Result<SendableRecordBatchStream, EngineError> {
        Ok(self.frame.execute_stream().await?)
    }
}

/// Rewrites JDBC-style `?` placeholders as `$1`, `$2`… in order of appearance.
/// Works on tokens, so a `?` inside a string literal or comment is left alone.
fn number_question_marks(sql: &str) -> std::borrow::Cow<'_, str> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if !sql.contains('?') {
        return sql.into();
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return sql.into() };
    if !tokens.iter().any(|t| matches!(t, Token::Placeholder(p) if p == "?")) {
        return sql.into();
    }
    let mut n = 0;
    let mut out = String::with_capacity(sql.len() + 8);
    for token in tokens {
        match token {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                out.push_str(&format!("${n}"));
            }
            other => out.push_str(&other.to_string()),
        }
    }
    out.into()
}

/// Refuses statements other than queries before names are resolved, so that
/// `CREATE TABLE sales.new …` is reported as a write, not as a missing product.
fn ensure_read_only(statement: &DFStatement) -> Result<(), EngineError> {
    let allowed = match statement {
        DFStatement::Statement(inner) => matches!(
            inner.as_ref(),
            SQLStatement::Query(_)
                | SQLStatement::Explain { .. }
                | SQLStatement::ShowTables { .. }
                | SQLStatement::ShowColumns { .. }
        ),
        DFStatement::Explain(explain) => return ensure_read_only(&explain.statement),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        let text = statement.to_string();
        let verb: String = text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        Err(EngineError::ReadOnly(format!(
            "Agora is read-only: '{verb} …' is not accepted; send a query (SELECT, WITH, VALUES, EXPLAIN, SHOW TABLES)"
        )))
    }
}

/// Agora serves reads only: no DDL, no DML, no `SET`. Checked again on the plan,
/// which also covers statements nested in `EXPLAIN`.
fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

#[cfg(test)]
mod tests {
    use super::number_question_marks;

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(number_question_marks("SELECT ? + ?"), "SELECT $1 + $2");
        assert_eq!(number_question_marks("SELECT '?', ? -- ?"), "SELECT '?', $1 -- ?");
        assert_eq!(number_question_marks("SELECT $1"), "SELECT $1");
    }
}
