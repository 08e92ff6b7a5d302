//! Trace spans carried into the tasks DataFusion spawns.
//!
//! Repartitioning, parallel file reads and joins run on tasks DataFusion
//! spawns itself (`SpawnedTask`, `JoinSet`); a task starts without a current
//! span, so what it does (object-store requests, PostgreSQL statements)
//! would otherwise be traced as spans without a parent, or not attached to
//! the query at all. DataFusion's hook for this is a process-wide
//! [`JoinSetTracer`]; the one installed here runs each task in the span that
//! was current where it was spawned.

use std::any::Any;

use datafusion::common::runtime::{JoinSetTracer, set_join_set_tracer};
use futures::FutureExt;
use futures::future::BoxFuture;
use tracing::Instrument;

struct CurrentSpan;

impl JoinSetTracer for CurrentSpan {
    fn trace_future(&self, fut: BoxFuture<'static, Box<dyn Any + Send>>) -> BoxFuture<'static, Box<dyn Any + Send>> {
        fut.instrument(tracing::Span::current()).boxed()
    }

    fn trace_block(
        &self,
        f: Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>,
    ) -> Box<dyn FnOnce() -> Box<dyn Any + Send> + Send> {
        let span = tracing::Span::current();
        Box::new(move || span.in_scope(f))
    }
}

static TRACER: CurrentSpan = CurrentSpan;

/// Installs the tracer; later calls (another engine in the process) find it
/// installed and leave it.
pub(crate) fn install() {
    let _already_installed = set_join_set_tracer(&TRACER);
}
