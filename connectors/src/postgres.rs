//! PostgreSQL tables queried in place through `datafusion-table-providers`.
//!
//! Each table becomes a *federated* table: DataFusion's federation optimizer
//! (see [`federation_optimizer_rules`]) hands every sub-plan that touches only
//! tables of one connection to PostgreSQL as a single SQL statement, so filters,
//! projections, limits, joins and aggregates run inside the database.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use datafusion::catalog::{Session, TableProvider};
use datafusion::common::TableReference;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::optimizer::OptimizerRule;
use datafusion::optimizer::eliminate_cross_join::EliminateCrossJoin;
use datafusion::physical_planner::ExtensionPlanner;
use datafusion::sql::unparser::dialect::PostgreSqlDialect;
use datafusion_federation::FederatedTableProviderAdaptor;
use datafusion_federation::sql::{RemoteTableRef, SQLExecutor, SQLFederationProvider, SQLTableSource};
use datafusion_table_providers::UnsupportedTypeAction;
use datafusion_table_providers::postgres::DynPostgresConnectionPool;
use datafusion_table_providers::sql::db_connection_pool::postgrespool::PostgresConnectionPool;
use datafusion_table_providers::sql::sql_provider_datafusion::SqlTable;
use secrecy::SecretString;
use serde::Deserialize;
use tokio::sync::OnceCell;
use url::Url;

use crate::postgres_cancel::{CancelTls, CancellingPool};
use crate::postgres_ranges::RangeReadExecutor;
use crate::postgres_sql::TableNames;
use crate::spec::SourceContext;
use crate::{ConnectorError, Problem, Source};

/// Default for [`PostgresConnection::read_partitions`].
pub const DEFAULT_READ_PARTITIONS: u32 = 2;

/// A named PostgreSQL connection, shared by all products of a domain.
///
/// The pool is created on first use and kept; connections that break (a server
/// restart) are replaced by the pool on later checkouts, so Agora recovers
/// without a restart.
pub struct PostgresConnection {
    /// The name shown in errors (the domain that declares it).
    pub name: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// User name.
    pub user: String,
    /// Password, already read from its environment variable or file.
    pub password: Option<String>,
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full`.
    pub sslmode: String,
    /// Most connections the pool opens.
    pub pool_size: u32,
    /// How long to wait for a connection to be established.
    pub connect_timeout: Duration,
    /// Longest a statement may run in PostgreSQL (0: no limit).
    pub statement_timeout: Duration,
    /// Connections (block ranges) a scan of a large table is read over; 1
    /// reads every table with one statement. See [`Self::with_read_partitions`].
    pub read_partitions: u32,
    /// `postgres://user@host:port/database`, for messages (never a password).
    url: Url,
    pool: OnceCell<Arc<CancellingPool>>,
    /// The products opened on this connection, by name, for the SQL sent.
    names: Arc<TableNames>,
}

impl PostgresConnection {
    /// Describes a connection; nothing is opened until a product is. Fails when
    /// host, user or database cannot form a URL.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        host: String,
        port: u16,
        database: String,
        user: String,
        password: Option<String>,
        sslmode: String,
        pool_size: u32,
        connect_timeout: Duration,
        statement_timeout: Duration,
    ) -> Result<Self, String> {
        let url = Url::parse(&format!("postgres://{user}@{host}:{port}/{database}"))
            .map_err(|e| format!("host '{host}', user '{user}' and database '{database}' do not form a URL: {e}"))?;
        let names = TableNames::of(format!("{host}:{port}/{database} {user}"));
        Ok(PostgresConnection {
            url,
            name,
            host,
            port,
            database,
            user,
            password,
            sslmode,
            pool_size,
            connect_timeout,
            statement_timeout,
            read_partitions: DEFAULT_READ_PARTITIONS,
            pool: OnceCell::new(),
            names,
        })
    }

    /// Sets how many connections a plain scan of a large table (64 MiB or more,
    /// PostgreSQL 14 or later) is split over, by block range under one shared
    /// snapshot. The backend's row serialisation bounds a single statement, so
    /// a second connection nearly doubles a bulk read when a core is free;
    /// more ranges than cores only compete with PostgreSQL for them.
    pub fn with_read_partitions(mut self, partitions: u32) -> Self {
        self.read_partitions = partitions.max(1);
        self
    }

    /// A `postgres://` URL naming the connection, without the password.
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub(crate) async fn pool(&self) -> Result<Arc<CancellingPool>, ConnectorError> {
        self.pool
            .get_or_try_init(|| async {
                let tls = CancelTls::for_sslmode(&self.sslmode).map_err(|e| self.unavailable(e))?;
                Ok(Arc::new(CancellingPool::new(self.new_pool().await?, tls, &self.name, self.pool_size)))
            })
            .await
            .cloned()
    }

    /// The tables and views of `schema` the user may read, with their comments,
    /// by name. Uses a connection of its own, so it may run on a runtime that
    /// ends before the engine's.
    pub async fn list_tables(&self, schema: &str) -> Result<Vec<(String, Option<String>)>, ConnectorError> {
        self.probe().await?;
        let pool = self.new_pool().await?;
        let connection = pool.connect_direct().await.map_err(|e| self.unavailable(e.to_string()))?;
        let sql = "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c \
                   JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE n.nspname = $1 AND c.relkind IN ('r', 'v', 'm', 'p', 'f') AND NOT c.relispartition \
                   AND has_table_privilege(c.oid, 'SELECT') ORDER BY c.relname";
        let rows = connection.conn.query(sql, &[&schema]).await.map_err(|e| self.unavailable(e.to_string()))?;
        Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1))).collect())
    }

    async fn new_pool(&self) -> Result<Arc<PostgresConnectionPool>, ConnectorError> {
        let mut connection = format!(
            "host={} port={} dbname={} user={} connect_timeout={}",
            quote(&self.host),
            self.port,
            quote(&self.database),
            quote(&self.user),
            self.connect_timeout.as_secs().max(1)
        );
        if let Some(password) = &self.password {
            connection.push_str(&format!(" password={}", quote(password)));
        }
        let mut params: HashMap<String, SecretString> = HashMap::new();
        params.insert("connection_string".into(), SecretString::from(connection));
        params.insert("sslmode".into(), SecretString::from(self.sslmode.clone()));
        params.insert("connection_pool_size".into(), SecretString::from(self.pool_size.to_string()));
        params.insert("application_name".into(), SecretString::from("agora".to_string()));
        if !self.statement_timeout.is_zero() {
            let options = format!("-c statement_timeout={}", self.statement_timeout.as_millis());
            params.insert("options".into(), SecretString::from(options));
        }
        let pool =
            tokio::time::timeout(self.connect_timeout + Duration::from_secs(1), PostgresConnectionPool::new(params))
                .await
                .map_err(|_| self.unavailable(format!("no connection within {:?}", self.connect_timeout)))?
                .map_err(|e| self.unavailable(e.to_string()))?
                // Types without an Arrow mapping of their own (json, jsonb…)
                // are read as their text form rather than refused.
                .with_unsupported_type_action(UnsupportedTypeAction::String);
        Ok(Arc::new(pool))
    }

    /// Checks that the server accepts TCP connections, within the connect
    /// timeout. The pool itself waits up to 30 s for a connection, so this is
    /// what makes queries against a server that is down fail fast.
    pub async fn probe(&self) -> Result<(), ConnectorError> {
        let address = (self.host.as_str(), self.port);
        match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.unavailable(format!("cannot connect: {e}"))),
            Err(_) => Err(self.unavailable(format!("no answer within {:?}", self.connect_timeout))),
        }
    }

    pub(crate) fn unavailable(&self, cause: String) -> ConnectorError {
        ConnectorError::Unavailable { location: format!("{} (connection of domain {})", self.url(), self.name), cause }
    }
}

/// Quotes a libpq connection-string value.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl fmt::Debug for PostgresConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConnection")
            .field("name", &self.name)
            .field("url", &self.url().as_str())
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("sslmode", &self.sslmode)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl PartialEq for PostgresConnection {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, &self.host, self.port, &self.database, &self.user)
            == (&other.name, &other.host, other.port, &other.database, &other.user)
    }
}

/// `source: { kind: postgres, table: schema.table }` in mesh.yaml: what a
/// PostgreSQL product's section may say (the connection is the domain's).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PostgresSpec {
    /// `schema.table`, or a table of `public`; required.
    #[serde(default, deserialize_with = "crate::spec::text")]
    pub table: Option<String>,
}

impl PostgresSpec {
    /// The keys of the section, `kind` included.
    pub const KEYS: &[&str] = &["kind", "table"];

    /// Checks the spec and builds the source on the domain's connection,
    /// named by the mesh (domain, product) for the SQL it plans.
    pub fn into_source(self, ctx: &SourceContext<'_>) -> Result<Source, Vec<Problem>> {
        let Some(table) = self.table else {
            return Err(vec![Problem::new("table", "missing (expected a string)")]);
        };
        let Some(connection) = ctx.postgres else {
            return Err(vec![Problem::new("", "a postgres source needs a `postgres:` connection on its domain")]);
        };
        let (schema, name) = match table.split_once('.') {
            Some((s, t)) if !s.is_empty() && !t.is_empty() && !t.contains('.') => (s.to_string(), t.to_string()),
            None if !table.is_empty() => ("public".to_string(), table.clone()),
            _ => return Err(vec![Problem::new("table", format!("expected schema.table, found '{table}'"))]),
        };
        let source = PostgresSource::new(Arc::clone(connection), schema, name).named(ctx.domain, ctx.product);
        Ok(Source::Postgres(source))
    }
}

/// A PostgreSQL table or view.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresSource {
    /// The connection it is reached through.
    pub connection: Arc<PostgresConnection>,
    /// PostgreSQL schema.
    pub schema: String,
    /// Table or view name.
    pub table: String,
    /// `postgres://user@host:port/db/schema.table`, for messages and catalogues.
    pub location: Url,
    /// The SQL name it is queried by, `(schema, table)` in the engine's
    /// catalog (a mesh's domain and product): SQL sent to PostgreSQL is
    /// planned with these names and renamed at the end.
    pub product: (String, String),
}

impl PostgresSource {
    /// A source for `schema.table` on `connection`, queried as
    /// `<connection name>.<table>`: the domain that declares the connection
    /// and the table's own name, as an attached schema registers it. A
    /// product of another name sets it with [`Self::named`].
    pub fn new(connection: Arc<PostgresConnection>, schema: String, table: String) -> Self {
        let mut location = connection.url().clone();
        location.set_path(&format!("{}/{schema}.{table}", connection.database));
        let product = (connection.name.clone(), table.clone());
        PostgresSource { connection, schema, table, location, product }
    }

    /// The same source queried as `domain.product` (the mesh's names).
    pub fn named(mut self, domain: &str, product: &str) -> Self {
        self.product = (domain.to_string(), product.to_string());
        self
    }

    pub(crate) async fn open(&self, _session: &dyn Session) -> Result<Arc<dyn TableProvider>, ConnectorError> {
        let pool = self.connection.pool().await?;
        let reference = TableReference::partial(self.schema.as_str(), self.table.as_str());
        self.connection.names.insert(self.product.clone(), (self.schema.clone(), self.table.clone()));
        self.federated_table(pool, reference).await.map_err(|e| {
            let cause = e.to_string();
            let lower = cause.to_ascii_lowercase();
            let location = self.location.to_string();
            if lower.contains("does not exist") || lower.contains("not found") {
                ConnectorError::NotFound { location, cause }
            } else if lower.contains("connect") || lower.contains("timed out") || lower.contains("closed") {
                ConnectorError::Unavailable { location, cause }
            } else {
                ConnectorError::InvalidData { location, cause }
            }
        })
    }
}

impl PostgresSource {
    /// The table as `datafusion-table-providers` builds it, federated through
    /// an executor that splits large scans into parallel block ranges.
    async fn federated_table(
        &self,
        pool: Arc<CancellingPool>,
        reference: TableReference,
    ) -> Result<Arc<dyn TableProvider>, Box<dyn std::error::Error + Send + Sync>> {
        let dyn_pool: Arc<DynPostgresConnectionPool> = Arc::clone(&pool) as _;
        let table =
            SqlTable::new("postgres", &dyn_pool, reference.clone()).await?.with_dialect(Arc::new(PostgreSqlDialect {}));
        let table = Arc::new(table);
        let executor = RangeReadExecutor::new(
            Arc::clone(&table) as Arc<dyn SQLExecutor>,
            pool,
            self.connection.read_partitions as usize,
            self.connection.name.clone(),
            Arc::clone(&self.connection.names),
        );
        // Federated plans keep the product's name; the executor renames the
        // finished statement (see `postgres_sql`).
        let local = TableReference::partial(self.product.0.as_str(), self.product.1.as_str());
        let source = SQLTableSource::new_with_schema(
            Arc::new(SQLFederationProvider::new(Arc::new(executor))),
            RemoteTableRef::from(local),
            table.schema(),
        );
        Ok(Arc::new(FederatedTableProviderAdaptor::new_with_provider(Arc::new(source), table)))
    }
}

/// Adds the federation optimizer rule to a session: it turns single-source
/// sub-plans into remote SQL. The session's query planner must include
/// [`extension_planners`].
pub fn with_federation(builder: SessionStateBuilder) -> SessionStateBuilder {
    let mut rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = datafusion_federation::default_optimizer_rules();
    let federation = rules.iter().position(|r| r.name() == "federation_optimizer_rule").unwrap_or(rules.len());
    // datafusion-federation federates early, before filters are pushed into
    // scans (its SQL unparser would drop them from joined scans). A
    // comma-separated FROM list is still a chain of cross joins there, so a run
    // of tables of one database would be sent as a cartesian product (TPC-H
    // Q8/Q9 with the dimensions in PostgreSQL: 20 s instead of 40 ms at scale
    // 0.1). Before federating: the conditions above a decorrelated
    // sub-query's join go down onto the chain below it, the WHERE clause's
    // equalities become join keys, single-table conditions go onto their
    // table, and what is left goes back above the sub-query's join (see
    // `join_inputs`), so that every
    // pushed join is an equi-join, in a shape the SQL unparser writes right.
    // (Pruning columns here too, with DataFusion's OptimizeProjections, was
    // tried: the projections it puts between joins are unparsed into
    // statements PostgreSQL rejects, e.g. TPC-H Q2 on W3 "invalid reference
    // to FROM-clause entry for table region".)
    let before: [Arc<dyn OptimizerRule + Send + Sync>; 4] = [
        Arc::new(crate::join_inputs::FiltersOntoPreservedSide),
        Arc::new(EliminateCrossJoin::new()),
        Arc::new(crate::join_inputs::ConditionsOntoTheirTable),
        Arc::new(crate::join_inputs::ResidualFiltersAboveJoin),
    ];
    let after = federation + before.len() + 1;
    rules.splice(federation..federation, before);
    // Right after federation: functions PostgreSQL lacks stay in the engine.
    rules.insert(after, Arc::new(crate::pushable::KeepForeignFunctionsLocal));
    builder.with_optimizer_rules(rules)
}

/// The physical planners for the plan nodes that [`with_federation`] creates.
pub fn extension_planners() -> Vec<Arc<dyn ExtensionPlanner + Send + Sync>> {
    vec![Arc::new(datafusion_federation::FederatedPlanner::new())]
}

/// The provider that reads `table` inside the engine. A federated table is
/// otherwise absorbed, with the plan nodes above it, into SQL sent to its
/// database; its own provider still receives filters, projections and limits.
pub fn in_engine_provider(table: &Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
    match table.downcast_ref::<datafusion_federation::FederatedTableProviderAdaptor>() {
        Some(adaptor) => adaptor.table_provider.clone().unwrap_or_else(|| Arc::clone(table)),
        None => Arc::clone(table),
    }
}

/// The plan a federation node sends to its source, for reporting what a query read.
pub fn federated_plan(node: &dyn UserDefinedLogicalNode) -> Option<&LogicalPlan> {
    node.as_any().downcast_ref::<datafusion_federation::FederatedPlanNode>().map(|n| n.plan())
}
