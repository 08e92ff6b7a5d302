//! `system.audit_log`: one row per request, as the viewer may see it
//! (admins everything, a domain's owners their domain's requests).

use std::sync::Arc;

use arrow::array::{ArrayRef, ListBuilder, RecordBatch, StringBuilder, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::{DataFusionError, Result};

use crate::audit::AuditRecord;
use crate::audit::requests::{merge_requests, owner_view};
use crate::system::SystemContext;

/// The rows of `system.audit_log` for the session's viewer.
pub(super) async fn build(c: &SystemContext) -> Result<RecordBatch> {
    let external = |e: Box<dyn std::error::Error + Send + Sync>| DataFusionError::External(e);
    let Some(log) = c.audit.clone() else { return batch(&[]) };
    // Only admins and domain owners see any of it: for anyone
    // else the log is not even read.
    let owner = c.mesh.config().domains.iter().any(|d| c.viewer.may_audit_domain(&d.name));
    if !owner {
        return batch(&[]);
    }
    let path = log.path().display().to_string();
    let records = tokio::task::spawn_blocking(move || log.read_all())
        .await
        .map_err(|e| external(Box::new(e)))?
        .map_err(|e| external(format!("cannot read the audit log {path}: {e}").into()))?;
    let admin = c.viewer.is_admin();
    let owns = |domain: &str| c.viewer.may_audit_domain(domain);
    let visible: Vec<_> = merge_requests(records)
        .into_iter()
        .filter(|r| c.viewer.may_audit(&r.products))
        .map(|r| if admin { r } else { owner_view(r, &owns) })
        .collect();
    batch(&visible)
}

/// The schema of `system.audit_log`.
pub(crate) fn schema() -> SchemaRef {
    let list = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    Arc::new(Schema::new(vec![
        Field::new("event_time", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("query_id", DataType::Utf8, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("groups", list(), false),
        Field::new("client", DataType::Utf8, true),
        Field::new("sql", DataType::Utf8, true),
        Field::new("sql_sha256", DataType::Utf8, true),
        Field::new("products", list(), false),
        Field::new("columns", list(), false),
        Field::new("policies", DataType::Utf8, false),
        Field::new("decision", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("duration_ms", DataType::UInt64, false),
        Field::new("policy_version", DataType::Utf8, true),
        Field::new("kind", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, true),
        Field::new("seq", DataType::UInt64, false),
    ]))
}

/// Records as a batch of [`schema`].
pub(crate) fn batch(records: &[AuditRecord]) -> datafusion::error::Result<RecordBatch> {
    let strings = |f: &dyn Fn(&AuditRecord) -> Option<String>| -> ArrayRef {
        let mut b = StringBuilder::new();
        for r in records {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let lists = |f: &dyn Fn(&AuditRecord) -> &Vec<String>| -> ArrayRef {
        let mut b = ListBuilder::new(StringBuilder::new());
        for r in records {
            for v in f(r) {
                b.values().append_value(v);
            }
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let numbers =
        |f: &dyn Fn(&AuditRecord) -> u64| -> ArrayRef { Arc::new(records.iter().map(f).collect::<UInt64Array>()) };
    let times: TimestampMillisecondArray = records
        .iter()
        .map(|r| chrono::DateTime::parse_from_rfc3339(&r.event_time).map(|t| t.timestamp_millis()).unwrap_or(0))
        .collect::<Vec<i64>>()
        .into();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(times.with_timezone("UTC")),
        strings(&|r| Some(r.query_id.clone())),
        strings(&|r| Some(r.user.clone())),
        lists(&|r| &r.groups),
        strings(&|r| r.client.clone()),
        strings(&|r| r.sql.clone()),
        strings(&|r| r.sql_sha256.clone()),
        lists(&|r| &r.products),
        lists(&|r| &r.columns),
        strings(&|r| Some(serde_json::to_string(&r.policies).unwrap_or_default())),
        strings(&|r| Some(r.decision.clone())),
        strings(&|r| r.reason.clone()),
        strings(&|r| Some(r.status.clone())),
        strings(&|r| r.error.clone()),
        numbers(&|r| r.rows),
        numbers(&|r| r.bytes),
        numbers(&|r| r.duration_ms),
        strings(&|r| r.policy_version.clone()),
        strings(&|r| Some(r.kind.clone())),
        strings(&|r| r.action.clone()),
        numbers(&|r| r.seq),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}
