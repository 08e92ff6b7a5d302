//! Parallel reads of large PostgreSQL tables.
//!
//! Reading a table into Arrow is bound by the PostgreSQL backend that
//! serialises its rows (about a million `lineitem` rows a second) and by the
//! client decoding them. When the SQL sent for a federated sub-plan is a plain
//! scan of one table — columns, a filter, nothing else — and the table is
//! large, [`RangeReadExecutor`] reads it as several block ranges
//! (`ctid >= '(a,0)' AND ctid < '(b,0)'`, a TID range scan since PostgreSQL 14)
//! over as many connections, each decoded by its own task.
//!
//! The connections share one snapshot (`pg_export_snapshot` /
//! `SET TRANSACTION SNAPSHOT`), so together they return exactly the rows a
//! single statement would, even while the table is being written to. Any
//! other statement (joins, aggregates, limits, sorts, views, small tables) is
//! executed unchanged by the wrapped executor.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Statistics;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::stream::{RecordBatchReceiverStreamBuilder, RecordBatchStreamAdapter};
use datafusion::physical_plan::{PhysicalExpr, SendableRecordBatchStream};
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, GroupByExpr, SelectItem, SetExpr, Statement, TableFactor};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::unparser::dialect::Dialect;
use datafusion_federation::sql::{AstAnalyzer, LogicalOptimizer, SQLExecutor};
use datafusion_table_providers::sql::db_connection_pool::dbconnection::AsyncDbConnection;
use datafusion_table_providers::sql::db_connection_pool::dbconnection::postgresconn::PostgresConnection as PgConnection;
use futures::{StreamExt, TryStreamExt};

use crate::postgres_cancel::{Canceller, CancellingPool};
use crate::postgres_metrics::{Checkout, counted};
use crate::postgres_sql::TableNames;
use tokio_postgres::types::ToSql;

/// Tables smaller than this many 8 KiB blocks (64 MiB) are read by one statement:
/// below it, opening more connections costs more than it saves.
const MIN_BLOCKS: i64 = 8192;

/// A federated SQL executor that reads large single-table scans in parallel
/// block ranges, narrows statements by the keys of the join they feed, and
/// hands everything else to `inner`.
#[derive(Clone)]
pub(crate) struct RangeReadExecutor {
    inner: Arc<dyn SQLExecutor>,
    pool: Arc<CancellingPool>,
    /// How many ranges (and connections) a large scan uses; 1 disables.
    partitions: usize,
    /// The connection's name for error messages.
    name: String,
    /// Product names → table names, applied to every statement.
    names: Arc<TableNames>,
}

impl RangeReadExecutor {
    pub(crate) fn new(
        inner: Arc<dyn SQLExecutor>,
        pool: Arc<CancellingPool>,
        partitions: usize,
        name: String,
        names: Arc<TableNames>,
    ) -> Self {
        RangeReadExecutor { inner, pool, partitions, name, names }
    }
}

#[async_trait]
impl SQLExecutor for RangeReadExecutor {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn compute_context(&self) -> Option<String> {
        self.inner.compute_context()
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        self.inner.dialect()
    }

    fn logical_optimizer(&self) -> Option<LogicalOptimizer> {
        self.inner.logical_optimizer()
    }

    fn ast_analyzer(&self) -> Option<AstAnalyzer> {
        let names = Arc::clone(&self.names);
        let mut inner = self.inner.ast_analyzer();
        Some(Box::new(move |statement| {
            let statement = match inner.as_mut() {
                Some(analyze) => analyze(statement)?,
                None => statement,
            };
            crate::postgres_sql::rewrite(&names, statement)
        }))
    }

    /// With run-time filters (a join's keys, see `postgres_keys`), the
    /// statement is chosen when its stream is first polled: only then do the
    /// filters hold the keys.
    fn execute(
        &self,
        query: &str,
        schema: SchemaRef,
        filters: &[Arc<dyn PhysicalExpr>],
    ) -> Result<SendableRecordBatchStream> {
        let query = crate::postgres_sql::round_decimals(query, &schema).unwrap_or_else(|| query.to_string());
        if filters.is_empty() {
            return self.execute_statement(query, schema);
        }
        let (this, filters, output) = (self.clone(), filters.to_vec(), Arc::clone(&schema));
        let stream = futures::stream::once(async move {
            match crate::postgres_keys::narrowed(&query, &output, &filters) {
                Some(narrowed) => {
                    tracing::debug!(connection = %this.name, "join keys sent to PostgreSQL");
                    metrics::counter!("agora_postgres_join_key_statements_total", "domain" => this.name.clone())
                        .increment(1);
                    this.inner.execute(&narrowed, output, &[])
                }
                None => this.execute_statement(query, output),
            }
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    async fn statistics(&self, plan: &LogicalPlan) -> Result<Statistics> {
        self.inner.statistics(plan).await
    }

    async fn table_names(&self) -> Result<Vec<String>> {
        self.inner.table_names().await
    }

    async fn get_table_schema(&self, table_name: &str) -> Result<SchemaRef> {
        self.inner.get_table_schema(table_name).await
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.inner.metrics()
    }
}

impl RangeReadExecutor {
    /// `query` as one statement, or as parallel block ranges when it is a
    /// large table's plain scan.
    fn execute_statement(&self, query: String, schema: SchemaRef) -> Result<SendableRecordBatchStream> {
        let Some(scan) = (self.partitions > 1).then(|| PlainScan::parse(&query)).flatten() else {
            return self.inner.execute(&query, schema, &[]);
        };
        let pool = Arc::clone(&self.pool);
        let (partitions, name, output) = (self.partitions, self.name.clone(), Arc::clone(&schema));
        let stream =
            futures::stream::once(async move { read_ranges(pool, scan, partitions, output, name).await }).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// A statement that reads one table with a projection and an optional filter,
/// and nothing else: the only shape whose rows may be split by block range.
#[derive(Debug, Clone)]
struct PlainScan {
    /// The statement as received.
    sql: String,
    statement: Statement,
    /// The table as written in the statement (`"schema"."table"`).
    table: String,
}

impl PlainScan {
    fn parse(sql: &str) -> Option<PlainScan> {
        let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
        if statements.len() != 1 {
            return None;
        }
        let statement = statements.pop()?;
        let Statement::Query(query) = &statement else { return None };
        if query.with.is_some()
            || query.order_by.is_some()
            || query.limit_clause.is_some()
            || query.fetch.is_some()
            || !query.locks.is_empty()
            || !query.pipe_operators.is_empty()
        {
            return None;
        }
        let SetExpr::Select(select) = query.body.as_ref() else { return None };
        let plain_group_by = matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
        if select.distinct.is_some()
            || select.top.is_some()
            || select.into.is_some()
            || select.from.len() != 1
            || !select.from[0].joins.is_empty()
            || !plain_group_by
            || select.having.is_some()
            || select.qualify.is_some()
            || !select.named_window.is_empty()
            || !select.lateral_views.is_empty()
            || select.prewhere.is_some()
            || !select.projection.iter().all(is_column)
        {
            return None;
        }
        // A sub-query in the filter could read other tables (or this one again).
        if let Some(filter) = &select.selection
            && filter.to_string().to_ascii_uppercase().contains("SELECT")
        {
            return None;
        }
        let TableFactor::Table { name, args: None, .. } = &select.from[0].relation else { return None };
        Some(PlainScan { sql: sql.to_string(), table: name.to_string(), statement })
    }

    /// The statement restricted to blocks `[from, to)` (`to: None`: to the end).
    fn range(&self, from: i64, to: Option<i64>) -> Result<String> {
        let bounds = match to {
            Some(to) => format!("ctid >= '({from},0)'::tid AND ctid < '({to},0)'::tid"),
            None => format!("ctid >= '({from},0)'::tid"),
        };
        let range = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&bounds)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| DataFusionError::Internal(format!("block range predicate: {e}")))?;
        let mut statement = self.statement.clone();
        if let Statement::Query(query) = &mut statement
            && let SetExpr::Select(select) = query.body.as_mut()
        {
            select.selection = Some(match select.selection.take() {
                Some(filter) => Expr::BinaryOp {
                    left: Box::new(Expr::Nested(Box::new(filter))),
                    op: BinaryOperator::And,
                    right: Box::new(range),
                },
                None => range,
            });
        }
        Ok(statement.to_string())
    }
}

/// A projected item that is a column or `*`: nothing that could aggregate.
fn is_column(item: &SelectItem) -> bool {
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
            matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
        }
        SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => true,
        _ => false,
    }
}

/// Parameters of a statement without any.
const NO_PARAMS: &[&'static (dyn ToSql + Sync)] = &[];

fn pg_error(name: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("PostgreSQL connection of domain {name}: {e}"))
}

/// Reads `scan` as `partitions` block ranges under one snapshot, or as one
/// statement when the table is small, not a plain table, or the server older
/// than PostgreSQL 14.
async fn read_ranges(
    pool: Arc<CancellingPool>,
    scan: PlainScan,
    partitions: usize,
    schema: SchemaRef,
    name: String,
) -> Result<SendableRecordBatchStream> {
    let first = pool.connect_direct().await.map_err(|e| pg_error(&name, e))?;
    let sizing = "SELECT c.relkind::text, pg_relation_size(c.oid) / current_setting('block_size')::bigint, \
                  current_setting('server_version_num')::int FROM pg_class c WHERE c.oid = to_regclass($1)";
    let row = first.conn.query_opt(sizing, &[&scan.table]).await.map_err(|e| pg_error(&name, e))?;
    let blocks = match row {
        Some(r) if r.get::<_, String>(0) == "r" && r.get::<_, i32>(2) >= 140_000 => r.get::<_, i64>(1),
        _ => 0,
    };
    if blocks < MIN_BLOCKS {
        // Small or not a table: the statement as it was planned.
        return pool.query(first, &scan.sql, Some(schema)).await.map_err(|e| pg_error(&name, e));
    }

    // One snapshot for every range: exported by the first connection, imported
    // by the others before any of them reads.
    let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    let canceller = pool.canceller(&first);
    let mut connections = vec![Transaction::begin(first, canceller, begin).await.map_err(|e| pg_error(&name, e))?];
    let snapshot: String = connections[0]
        .connection()
        .conn
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|e| pg_error(&name, e))?
        .get(0);
    for _ in 1..partitions {
        // A pool that is exhausted or a refused connection: read with fewer ranges.
        let Ok(Ok(next)) = tokio::time::timeout(std::time::Duration::from_secs(2), pool.connect_direct()).await else {
            break;
        };
        let import = format!("{begin}; SET TRANSACTION SNAPSHOT '{}'", snapshot.replace('\'', "''"));
        let canceller = pool.canceller(&next);
        match Transaction::begin(next, canceller, &import).await {
            Ok(t) => connections.push(t),
            Err(_) => break,
        }
    }

    let n = connections.len() as i64;
    let step = (blocks + n - 1) / n;
    let mut builder = RecordBatchReceiverStreamBuilder::new(Arc::clone(&schema), 2 * connections.len());
    for (i, transaction) in connections.into_iter().enumerate() {
        let i = i as i64;
        // The last range is open-ended: the table may have grown since it was sized.
        let sql = scan.range(i * step, (i + 1 < n).then_some((i + 1) * step))?;
        let (tx, schema, name) = (builder.tx(), Arc::clone(&schema), name.clone());
        builder.spawn(async move {
            let mut transaction = transaction;
            transaction.running = true;
            let mut stream = transaction
                .connection()
                .query_arrow(&sql, NO_PARAMS, Some(schema))
                .await
                .map_err(|e| pg_error(&name, e))?;
            while let Some(batch) = stream.next().await {
                if tx.send(batch).await.is_err() {
                    // The reader went away; the guard cancels and rolls back.
                    return Ok(());
                }
            }
            drop(stream);
            transaction.running = false;
            transaction.commit().await.map_err(|e| pg_error(&name, e))
        });
    }
    Ok(counted(builder.build(), &name))
}

/// A pooled connection inside a read-only transaction. It must not go back to
/// the pool with the transaction open, so dropping it early (a cancelled
/// query) cancels the range's statement if it is still running, then rolls
/// back.
struct Transaction {
    connection: Option<Checkout>,
    canceller: Option<Canceller>,
    /// Its range's statement has been sent and not read to the end.
    running: bool,
}

impl Transaction {
    async fn begin(
        connection: Checkout,
        canceller: Canceller,
        begin: &str,
    ) -> std::result::Result<Self, tokio_postgres::Error> {
        let transaction = Transaction { connection: Some(connection), canceller: Some(canceller), running: false };
        transaction.connection().conn.batch_execute(begin).await?;
        Ok(transaction)
    }

    fn connection(&self) -> &PgConnection {
        // Only `commit` and `drop` take the connection out, and both consume the guard.
        self.connection.as_deref().unwrap_or_else(|| unreachable!("transaction used after commit"))
    }

    async fn commit(mut self) -> std::result::Result<(), tokio_postgres::Error> {
        if let Some(connection) = self.connection.take() {
            connection.conn.batch_execute("COMMIT").await?;
        }
        Ok(())
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else { return };
        let canceller = self.canceller.take().filter(|_| self.running);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Some(canceller) = canceller {
                        canceller.cancel().await;
                    }
                    // Queued behind the cancelled statement on the same
                    // connection; tried twice, as a cancel that arrives late
                    // may hit the first. A failed rollback otherwise means a
                    // broken connection, which the pool discards.
                    for _ in 0..2 {
                        if connection.conn.batch_execute("ROLLBACK").await.is_ok() {
                            break;
                        }
                    }
                });
            }
            // Without a runtime the rollback cannot be sent: keep the
            // connection out of the pool rather than return it mid-transaction.
            Err(_) => std::mem::forget(connection),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scans_are_recognised() {
        let scan = PlainScan::parse(r#"SELECT "lineitem"."l_orderkey", "l_tax" AS t FROM "tpch"."lineitem" WHERE ("lineitem"."l_quantity" < 24)"#)
            .expect("a plain scan");
        assert_eq!(scan.table, r#""tpch"."lineitem""#);
        let sql = scan.range(10, Some(20)).unwrap();
        assert!(
            sql.contains(
                r#"WHERE (("lineitem"."l_quantity" < 24)) AND ctid >= '(10,0)'::tid AND ctid < '(20,0)'::tid"#
            ),
            "{sql}"
        );
        let open = PlainScan::parse(r#"SELECT * FROM "tpch"."lineitem""#).unwrap().range(30, None).unwrap();
        assert!(open.ends_with("WHERE ctid >= '(30,0)'::tid"), "{open}");
    }

    #[test]
    fn anything_else_is_left_alone() {
        for sql in [
            r#"SELECT count(*) FROM "tpch"."lineitem""#,
            r#"SELECT "a" FROM "t" LIMIT 10"#,
            r#"SELECT "a" FROM "t" ORDER BY "a""#,
            r#"SELECT DISTINCT "a" FROM "t""#,
            r#"SELECT "a" FROM "t" GROUP BY "a""#,
            r#"SELECT "t"."a" FROM "t" JOIN "u" ON "t"."a" = "u"."a""#,
            r#"SELECT "a" FROM "t", "u""#,
            r#"SELECT "a" + 1 FROM "t""#,
            r#"SELECT "a" FROM "t" WHERE "a" IN (SELECT "b" FROM "u")"#,
            r#"SELECT "a" FROM (SELECT "a" FROM "t") AS s"#,
            r#"WITH s AS (SELECT "a" FROM "t") SELECT "a" FROM s"#,
            r#"SELECT "a" FROM "t" UNION ALL SELECT "a" FROM "u""#,
        ] {
            assert!(PlainScan::parse(sql).is_none(), "{sql} must not be split");
        }
    }
}
