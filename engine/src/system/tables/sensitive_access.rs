//! `system.sensitive_access`: who read sensitive columns, from the audit log, for admins and domain owners.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::{DataFusionError, Result};

use crate::ProductRef;
use crate::audit::AuditStatus;

use super::{strings, text_field};
use crate::system::SystemContext;
use crate::system::views::{column_tags, sensitivity};

/// The schema of `system.sensitive_access`.
pub(super) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_time", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        text_field("query_id", false),
        text_field("user", false),
        text_field("domain", false),
        text_field("product", false),
        text_field("column_name", false),
        Field::new("masked", DataType::Boolean, false),
        text_field("mask", true),
        text_field("status", false),
    ]))
}

/// The rows of `system.sensitive_access` for the session's viewer.
pub(super) async fn build(context: &SystemContext) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(schema(), sensitive_access(context).await?)?)
}

/// One read of a sensitive column, from the audit log.
struct SensitiveRead {
    event_time: i64,
    query_id: String,
    user: String,
    product: ProductRef,
    column: String,
    mask: Option<String>,
    status: String,
}

async fn sensitive_access(context: &SystemContext) -> Result<Vec<ArrayRef>> {
    let Some(log) = context.audit.clone() else { return Ok(empty_access()) };
    let records = tokio::task::spawn_blocking(move || log.read_all())
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    // Sensitivity is decided on the configuration, for every product, so that a
    // column stays reported after a product becomes unreadable to the viewer.
    let is_sensitive = |product: &ProductRef, column: &str| -> bool {
        let Some(entry) = context.mesh.product(product) else { return false };
        let contract_column = entry.config.contract.as_ref().and_then(|c| c.column(column));
        let tags = column_tags(context, product, contract_column, column);
        let classification = contract_column.and_then(|c| c.classification.as_deref());
        sensitivity(context, classification, &tags).is_some()
    };
    let mut rows = Vec::new();
    for record in
        records.iter().filter(|r| r.status == AuditStatus::Ok.as_str() || r.status == AuditStatus::Cancelled.as_str())
    {
        for qualified in &record.columns {
            let mut parts = qualified.splitn(3, '.');
            let (Some(d), Some(p), Some(c)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let product = ProductRef::new(d, p);
            if !context.viewer.may_audit_domain(d) || !is_sensitive(&product, c) {
                continue;
            }
            let name = product.to_string();
            let mask = record
                .policies
                .iter()
                .filter(|a| a.product == name)
                .flat_map(|a| a.masks.iter())
                .find(|(column, _, _)| column == c)
                .map(|(_, mask, policy)| format!("{mask} ({policy})"));
            let event_time =
                chrono::DateTime::parse_from_rfc3339(&record.event_time).map(|t| t.timestamp_millis()).unwrap_or(0);
            rows.push(SensitiveRead {
                event_time,
                query_id: record.query_id.clone(),
                user: record.user.clone(),
                product,
                column: c.to_string(),
                mask,
                status: record.status.clone(),
            });
        }
    }
    Ok(vec![
        Arc::new(
            arrow::array::TimestampMillisecondArray::from(rows.iter().map(|r| r.event_time).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        strings(&rows, |r| Some(r.query_id.clone())),
        strings(&rows, |r| Some(r.user.clone())),
        strings(&rows, |r| Some(r.product.domain.clone())),
        strings(&rows, |r| Some(r.product.product.clone())),
        strings(&rows, |r| Some(r.column.clone())),
        Arc::new(rows.iter().map(|r| Some(r.mask.is_some())).collect::<BooleanArray>()),
        strings(&rows, |r| r.mask.clone()),
        strings(&rows, |r| Some(r.status.clone())),
    ])
}

fn empty_access() -> Vec<ArrayRef> {
    schema().fields().iter().map(|f| arrow::array::new_empty_array(f.data_type())).collect()
}
