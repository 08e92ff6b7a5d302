//! Turning SQL or a logical plan into a [`Query`]: admission, the SQL gate,
//! name checks and planning, on the query runtime before the deadline.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use datafusion::common::TableReference;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::DataFrame;
use datafusion::sql::parser::Statement as DFStatement;

use super::gate::{ensure_read_only, number_question_marks, with_end_position};
use super::query::{Query, fail};
use super::run::Run;
use super::{CATALOG, Session, default_schema};
use crate::audit::stream::PendingAudit;
use crate::history::{CancelQuery, HistoryEntry};
use crate::{EngineError, ProductRef};

impl Session {
    /// Plans a single read-only SQL statement. Names are checked against the mesh
    /// first, so a typo gets a message listing the products that exist.
    ///
    /// Parameters may be written `$1`, `$2`… or, as JDBC does, `?` (numbered in
    /// order of appearance); bind them with [`Query::bind`].
    pub async fn query(&self, sql: &str) -> Result<Query, EngineError> {
        let history = self.begin_history(Some(sql));
        let id = history.entry().context.id.clone();
        let audit = match self.begin_audit(&id, Some(sql)).await {
            Ok(audit) => audit,
            Err(e) => return Err(fail(None, history, e).await),
        };
        if let Err(e) = crate::limits::check_text(sql, &self.engine.config().limits) {
            return Err(fail(audit, history, e).await);
        }
        let session = self.clone();
        let text = sql.to_string();
        self.admitted(history, audit, Some(sql), async move { session.plan_sql(&text).await }).await
    }

    /// Registers a query that just arrived in the history, with its context.
    fn begin_history(&self, sql: Option<&str>) -> HistoryEntry {
        let context = self.origin.context(&self.viewer.principal.user);
        self.engine.inner.catalog.history().begin(context, sql)
    }

    /// Takes a query slot for the session's principal, starts its clock and
    /// plans on the query runtime: the one way every [`Query`] is made.
    async fn admitted(
        &self,
        history: HistoryEntry,
        audit: Option<PendingAudit>,
        sql: Option<&str>,
        planning: impl std::future::Future<Output = Result<DataFrame, EngineError>> + Send + 'static,
    ) -> Result<Query, EngineError> {
        let limits = self.engine.config().limits.for_principal(&self.viewer.principal);
        let admission = &self.engine.inner.admission;
        let entry = Arc::clone(history.entry());
        let admit = async {
            if sql.is_some_and(|s| crate::limits::reads_nothing(s) || crate::history::is_call(s)) {
                admission.admit_constant().await
            } else {
                admission.admit(&self.viewer.principal.user, limits.max_queries_per_principal).await
            }
        };
        // A queued query can be cancelled too.
        let admitted = tokio::select! {
            admitted = admit => admitted,
            _ = entry.cancel.cancelled() => Err(entry.cancelled_error()),
        };
        let slot = match admitted {
            Ok(slot) => slot,
            Err(e) => return Err(fail(audit, history, e).await),
        };
        history.planning(slot.queued);
        let deadline = Instant::now() + limits.statement_timeout;
        let text: Option<String> = sql.map(|s| s.chars().take(4096).collect());
        let span = tracing::info_span!(
            "agora.query",
            otel.name = "agora.query",
            agora.query_id = %entry.context.id,
            db.system.name = "agora",
            db.query.text = text.as_deref(),
            enduser.id = %entry.context.user,
        );
        let run = Run { engine: self.engine.clone(), entry, span, slot, deadline, limits };
        match run.within("planning", planning).await {
            Ok(frame) => {
                history.planned();
                let lineage = self.pending_lineage(&history.entry().context.id, sql);
                Ok(Query { history, frame, audit, lineage, run })
            }
            Err(e) => Err(fail(audit, history, e).await),
        }
    }

    async fn plan_sql(&self, sql: &str) -> Result<DataFrame, EngineError> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let sql = number_question_marks(sql);
        let mut statement = state.sql_to_statement(&sql, &dialect).map_err(|e| with_end_position(e, &sql))?;
        if let DFStatement::Statement(call) = &statement
            && let Some(cancel) = CancelQuery::plan(
                call,
                self.engine.inner.catalog.history(),
                &self.viewer.principal.user,
                // Without governance there are no administrators: everyone
                // manages their own queries only.
                self.viewer.policies.is_some() && self.viewer.is_admin(),
            )
        {
            let cancel: Arc<dyn datafusion::physical_plan::streaming::PartitionStream> = Arc::new(cancel?);
            let table =
                datafusion::catalog::streaming::StreamingTable::try_new(Arc::clone(cancel.schema()), vec![cancel])?;
            return Ok(self.ctx.read_table(Arc::new(table))?);
        }
        ensure_read_only(&statement)?;
        crate::limits::check_statement(&statement, &self.engine.config().limits)?;
        let is_function = |table: &str| state.table_functions().contains_key(table);
        let mut references = state.resolve_table_references(&statement)?;
        if let Some(schema) = &self.default_schema {
            let bare: HashSet<String> = references
                .iter()
                .filter_map(|r| match r {
                    TableReference::Bare { table } if !is_function(table) => Some(table.to_string()),
                    _ => None,
                })
                .collect();
            default_schema::qualify(&mut statement, schema, &bare)?;
            // The statement now names them as `schema.table`.
            for reference in &mut references {
                if let TableReference::Bare { table } = reference
                    && bare.contains(table.as_ref())
                {
                    *reference = TableReference::partial(schema.as_ref(), table.as_ref());
                }
            }
        }
        for reference in &references {
            if !matches!(reference, TableReference::Bare { table } if is_function(table)) {
                self.check_reference(reference)?;
            }
        }
        // A column the principal may not read is simply not in its schema:
        // naming it gets the same error as naming a column that does not
        // exist (listing the readable ones), which confirms nothing.
        let plan = state.statement_to_plan(statement).await?;
        self.check_plan(&plan)?;
        Ok(self.ctx.execute_logical_plan(plan).await?)
    }

    /// Runs an already built logical plan (for embedders that build plans with
    /// DataFusion's plan builders). It passes the same gates as SQL (read-only,
    /// plan views, limits), is governed and audited; for a non-admin it may
    /// read only the session's own tables (a plan over a provider built by
    /// hand would carry no policies).
    pub async fn plan(&self, plan: LogicalPlan) -> Result<Query, EngineError> {
        let history = self.begin_history(None);
        let id = history.entry().context.id.clone();
        let audit = match self.begin_audit(&id, None).await {
            Ok(audit) => audit,
            Err(e) => return Err(fail(None, history, e).await),
        };
        if let Err(e) = self.check_plan(&plan) {
            return Err(fail(audit, history, e).await);
        }
        if let Err(e) = crate::governance::plan_view::check_plan_sources(&self.viewer, &self.ctx, &plan).await {
            return Err(fail(audit, history, e).await);
        }
        let ctx = self.ctx.clone();
        self.admitted(history, audit, None, async move { Ok(ctx.execute_logical_plan(plan).await?) }).await
    }

    /// A scan of `product` as the principal may read it, to build plans on
    /// (`LogicalPlanBuilder::from(scan)…`) and run with [`Session::plan`].
    pub async fn scan(&self, product: &ProductRef) -> Result<LogicalPlan, EngineError> {
        let reference = TableReference::full(CATALOG, product.domain.as_str(), product.product.as_str());
        self.check_reference(&reference)?;
        Ok(self.ctx.table(reference).await?.into_unoptimized_plan())
    }
}
