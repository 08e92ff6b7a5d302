//! `system.queries`: the query history, each principal's own queries (all
//! of them for admins).

use std::sync::Arc;

use arrow::array::{ArrayRef, ListBuilder, RecordBatch, StringBuilder, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use datafusion::error::Result;

use crate::history::QueryInfo;
use crate::system::SystemContext;

/// The rows of `system.queries` for the session's viewer.
pub(super) async fn build(c: &SystemContext) -> Result<RecordBatch> {
    // Without governance there are no administrators: everyone
    // sees their own queries only.
    let all = c.viewer.policies.is_some() && c.viewer.is_admin();
    let user = &c.viewer.principal.user;
    let visible: Vec<_> = c.mesh.history().all().into_iter().filter(|q| all || q.user == *user).collect();
    Ok(batch(&visible)?)
}

/// The schema of `system.queries`.
pub(super) fn schema() -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let number = |name: &str| Field::new(name, DataType::UInt64, false);
    let time = |name: &str, nullable| {
        Field::new(name, DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), nullable)
    };
    Arc::new(Schema::new(vec![
        text("query_id", false),
        text("user", false),
        text("client", true),
        text("protocol", false),
        text("purpose", true),
        text("trace_id", true),
        text("sql", true),
        text("state", false),
        time("received_at", false),
        time("ended_at", true),
        number("queued_ms"),
        number("planning_ms"),
        number("execution_ms"),
        number("rows"),
        number("bytes"),
        number("peak_memory_bytes"),
        number("spilled_bytes"),
        Field::new("products", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false),
        text("error", true),
    ]))
}

/// The rows of `system.queries`.
fn batch(queries: &[QueryInfo]) -> Result<RecordBatch, ArrowError> {
    let strings = |f: &dyn Fn(&QueryInfo) -> Option<&str>| -> ArrayRef {
        Arc::new(queries.iter().map(f).collect::<arrow::array::StringArray>())
    };
    let numbers =
        |f: &dyn Fn(&QueryInfo) -> u64| -> ArrayRef { Arc::new(queries.iter().map(f).collect::<UInt64Array>()) };
    let times = |f: &dyn Fn(&QueryInfo) -> Option<i64>| -> ArrayRef {
        Arc::new(queries.iter().map(f).collect::<TimestampMillisecondArray>().with_timezone("UTC"))
    };
    let mut products = ListBuilder::new(StringBuilder::new());
    for q in queries {
        for p in &q.products {
            products.values().append_value(p);
        }
        products.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        strings(&|q| Some(&q.query_id)),
        strings(&|q| Some(&q.user)),
        strings(&|q| q.client.as_deref()),
        strings(&|q| Some(&q.protocol)),
        strings(&|q| q.purpose.as_deref()),
        strings(&|q| q.trace_id.as_deref()),
        strings(&|q| q.sql.as_deref()),
        strings(&|q| Some(&q.state)),
        times(&|q| Some(q.received_at_ms)),
        times(&|q| q.ended_at_ms),
        numbers(&|q| q.queued_ms),
        numbers(&|q| q.planning_ms),
        numbers(&|q| q.execution_ms),
        numbers(&|q| q.rows),
        numbers(&|q| q.bytes),
        numbers(&|q| q.peak_memory_bytes),
        numbers(&|q| q.spilled_bytes),
        Arc::new(products.finish()),
        strings(&|q| q.error.as_deref()),
    ];
    RecordBatch::try_new(schema(), columns)
}
