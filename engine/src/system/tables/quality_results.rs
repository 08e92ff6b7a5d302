//! `system.quality_results`: the history of quality-rule runs, for products
//! the viewer may see (measurements and messages for owners and admins only).

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::{DataFusionError, Result};

use crate::contract::quality::QualityResult;
use crate::system::SystemContext;

/// The rows of `system.quality_results` for the session's viewer.
pub(super) async fn build(c: &SystemContext) -> Result<RecordBatch> {
    let external = |e: Box<dyn std::error::Error + Send + Sync>| DataFusionError::External(e);
    let log = Arc::clone(c.mesh.quality());
    let path = log.path().display().to_string();
    let results = tokio::task::spawn_blocking(move || log.read_all())
        .await
        .map_err(|e| external(Box::new(e)))?
        .map_err(|e| external(format!("cannot read the quality results {path}: {e}").into()))?;
    let visible: Vec<_> = results
        .into_iter()
        .filter_map(|mut r| {
            let (d, p) = r.product.split_once('.').unwrap_or(("", ""));
            let product = crate::ProductRef::new(d, p);
            if !c.viewer.may_see(&product) {
                return None;
            }
            // A rule about a column the viewer may not read is not
            // shown to them at all: its name and outcome describe
            // the hidden column.
            if let Some(column) = &r.column
                && !c.viewer.may_read_column(&product, column)
            {
                return None;
            }
            // Rules ran with unrestricted reads: what they measured
            // (and their errors, which may quote values) is for the
            // domain's owners and admins; others see the outcome.
            if !c.viewer.may_audit_domain(d) {
                r.observed = None;
                r.message = None;
                r.sql = None;
            }
            Some(r)
        })
        .collect();
    Ok(results_batch(&visible)?)
}

/// The schema of `system.quality_results`.
pub(crate) fn results_schema() -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("run_id", false),
        Field::new("checked_at", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        text("domain", false),
        text("product", false),
        text("rule", false),
        text("kind", false),
        text("column_name", true),
        text("dimension", true),
        text("severity", true),
        text("expected", false),
        Field::new("observed", DataType::Float64, true),
        Field::new("passed", DataType::Boolean, true),
        text("outcome", false),
        text("message", true),
        text("sql", true),
        Field::new("duration_ms", DataType::UInt64, false),
    ]))
}

/// Results as a batch of [`results_schema`].
pub(crate) fn results_batch(results: &[QualityResult]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let text = |f: &dyn Fn(&QualityResult) -> Option<String>| -> ArrayRef {
        Arc::new(results.iter().map(f).collect::<StringArray>())
    };
    let split = |r: &QualityResult, first: bool| {
        let (d, p) = r.product.split_once('.').unwrap_or(("", r.product.as_str()));
        Some(if first { d.to_string() } else { p.to_string() })
    };
    let times: Vec<i64> = results
        .iter()
        .map(|r| chrono::DateTime::parse_from_rfc3339(&r.checked_at).map(|t| t.timestamp_millis()).unwrap_or(0))
        .collect();
    let columns: Vec<ArrayRef> = vec![
        text(&|r| Some(r.run_id.clone())),
        Arc::new(arrow::array::TimestampMillisecondArray::from(times).with_timezone("UTC")),
        text(&|r| split(r, true)),
        text(&|r| split(r, false)),
        text(&|r| Some(r.rule.clone())),
        text(&|r| Some(r.kind.clone())),
        text(&|r| r.column.clone()),
        text(&|r| r.dimension.clone()),
        text(&|r| r.severity.clone()),
        text(&|r| Some(r.expected.clone())),
        Arc::new(results.iter().map(|r| r.observed).collect::<Float64Array>()),
        Arc::new(
            results
                .iter()
                .map(|r| match r.outcome.as_str() {
                    "pass" => Some(true),
                    "fail" => Some(false),
                    _ => None,
                })
                .collect::<BooleanArray>(),
        ),
        text(&|r| Some(r.outcome.to_string())),
        text(&|r| r.message.clone()),
        text(&|r| r.sql.clone()),
        Arc::new(results.iter().map(|r| r.duration_ms).collect::<UInt64Array>()),
    ];
    RecordBatch::try_new(results_schema(), columns)
}
