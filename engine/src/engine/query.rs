//! A planned [`Query`] and its execution: the stream it returns is audited,
//! tracked in the query history and followed by lineage events.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{SendableRecordBatchStream, execute_stream};
use datafusion::prelude::DataFrame;
use futures::TryStreamExt;

use super::Engine;
use super::run::Run;
use crate::EngineError;
use crate::audit::AuditStatus;
use crate::audit::stream::{AuditedStream, PendingAudit};
use crate::history::{HistoryEntry, QueryMemory, TrackedStream};
use crate::lineage::{LineageEmitter, LineageRun, LineageStream};
use crate::plan_reads::Reads;

/// A planned query: its result schema is known before it runs.
pub struct Query {
    /// Its entry in the query history, which holds its identity (see
    /// [`Query::id`]).
    pub(super) history: HistoryEntry,
    pub(super) frame: DataFrame,
    pub(super) audit: Option<PendingAudit>,
    pub(super) lineage: Option<PendingLineage>,
    pub(super) run: Run,
}

/// What a query's lineage events need once it starts.
pub(super) struct PendingLineage {
    /// The run's id: the query's.
    pub(super) run_id: String,
    pub(super) emitter: Arc<LineageEmitter>,
    pub(super) sql: Option<String>,
    pub(super) engine: Engine,
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
        let frame = self.frame.clone();
        self.run.within("planning", async move { Ok(frame.create_physical_plan().await?.schema()) }).await
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
        match self.frame.with_param_values(ParamValues::from(values)) {
            Ok(frame) => Ok(Query { frame, ..self }),
            Err(e) => Err(fail_blocking(self.audit, self.history, e.into())),
        }
    }

    /// Ends a query that was planned but is not run here (a Flight SQL
    /// `GetFlightInfo`, whose client runs it with a `DoGet` of its own):
    /// recorded as `planned`.
    pub async fn close(self) {
        if let Some(a) = self.audit {
            let _ = a.finish_async(AuditStatus::Planned, None).await;
        }
    }

    /// Gives the query up before it runs (its parameters could not be
    /// converted, say), recording `error` as its outcome; returns `error`.
    pub async fn reject(self, error: EngineError) -> EngineError {
        fail(self.audit, self.history, error).await
    }

    /// The query's id (a UUIDv7): the `query_id` of its audit records, the
    /// `runId` of its OpenLineage events, its `system.queries` row and its
    /// log line, for joining them.
    pub fn id(&self) -> &str {
        &self.history.entry().context.id
    }

    /// How long the query waited for a slot (see `limits.max_concurrent_queries`).
    pub fn queued(&self) -> std::time::Duration {
        self.run.slot.queued
    }

    /// The logical plan, after name resolution and before optimisation.
    pub fn logical_plan(&self) -> &LogicalPlan {
        self.frame.logical_plan()
    }

    /// Starts the query. Batches are produced as the stream is polled; dropping the
    /// stream cancels the query. On a governed mesh the audit record is on disk
    /// before the last batch is returned.
    pub async fn stream(self) -> Result<SendableRecordBatchStream, EngineError> {
        let (state, plan) = self.frame.into_parts();
        let mut audit = self.audit;
        let history = self.history;
        let run = self.run;
        history.planning_again();
        // The query's operators reserve through a view of the shared pool
        // that counts its own peak (see `QueryMemory`).
        let shared = &run.engine.inner.runtime;
        let memory = QueryMemory::new(Arc::clone(&shared.memory_pool), Arc::clone(history.entry()));
        let runtime = RuntimeEnvBuilder::from_runtime_env(shared).with_memory_pool(Arc::new(memory)).build_arc();
        let started = async move {
            let optimized = state.optimize(&plan)?;
            let reads = Reads::of(&optimized);
            let physical = state.query_planner().create_physical_plan(&optimized, &state).await?;
            let task = Arc::new(datafusion::execution::TaskContext::from(&state).with_runtime(runtime?));
            Ok::<_, EngineError>((execute_stream(Arc::clone(&physical), task)?, physical, reads, optimized))
        };
        let lineage = self.lineage;
        let started = run.within("planning", started).await.and_then(move |(stream, physical, reads, optimized)| {
            let stream = run.drive(stream)?;
            Ok((stream, physical, reads, optimized))
        });
        let started = started.map(|(stream, physical, reads, optimized)| {
            let shown: Vec<String> =
                reads.products.iter().filter(|p| !p.starts_with("information_schema.")).cloned().collect();
            // Errors carry the products' names before lineage records them.
            let stream = name_products_in_errors(stream, shown.clone());
            let stream = match lineage {
                Some(l) => {
                    let masked: Vec<(String, String)> = reads
                        .policies
                        .iter()
                        .flat_map(|p| p.masks.iter().map(move |(c, _, _)| (p.product.clone(), c.clone())))
                        .collect();
                    let run = LineageRun::start(
                        l.emitter,
                        l.run_id,
                        &optimized,
                        l.sql.as_deref(),
                        l.engine.config(),
                        &masked,
                    );
                    Box::pin(LineageStream::new(stream, run)) as SendableRecordBatchStream
                }
                None => stream,
            };
            if let Some(r) = audit.as_mut().and_then(PendingAudit::record_mut) {
                r.products = reads.products;
                r.columns = reads.columns;
                r.policies = reads.policies;
            }
            (stream, physical, shown)
        });
        match started {
            Ok((stream, physical, products)) => {
                let stream = match audit {
                    Some(a) => Box::pin(AuditedStream::new(stream, a)),
                    None => stream,
                };
                history.running(products);
                Ok(Box::pin(TrackedStream::new(stream, history, physical)))
            }
            Err(e) => Err(fail(audit, history, e).await),
        }
    }
}

/// Errors raised while the query runs (a source failing, a table changed under
/// an opened product) name the products the query reads.
fn name_products_in_errors(stream: SendableRecordBatchStream, products: Vec<String>) -> SendableRecordBatchStream {
    if products.is_empty() {
        return stream;
    }
    let schema = stream.schema();
    let label = format!("while reading {}", products.join(", "));
    let mapped = stream.map_err(move |e| e.context(label.clone()));
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, mapped))
}

/// Records a failed or denied request, in the audit log and the history,
/// and passes its error on.
pub(super) async fn fail(audit: Option<PendingAudit>, history: HistoryEntry, error: EngineError) -> EngineError {
    if let Some(a) = audit {
        let _ = a.finish_async(AuditStatus::of(&error), Some(error.to_string())).await;
    }
    history.fail(&error);
    error
}

/// [`fail`], for the few synchronous paths (binding parameters).
fn fail_blocking(audit: Option<PendingAudit>, history: HistoryEntry, error: EngineError) -> EngineError {
    if let Some(a) = audit {
        let _ = a.finish(AuditStatus::of(&error), Some(&error.to_string()));
    }
    history.fail(&error);
    error
}
