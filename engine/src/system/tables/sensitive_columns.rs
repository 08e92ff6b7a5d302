//! `system.sensitive_columns`: the readable columns that are sensitive, and why.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::error::Result;

use super::columns::{col, flat};
use super::{list_field, lists, strings, text_field};
use crate::system::SystemContext;
use crate::system::views::visible_products;

/// The schema of `system.sensitive_columns`.
pub(super) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text_field("domain", false),
        text_field("product", false),
        text_field("column_name", false),
        text_field("classification", true),
        list_field("tags"),
        text_field("reason", false),
        text_field("owner", false),
        text_field("owner_contact", false),
    ]))
}

/// The rows of `system.sensitive_columns` for the session's viewer.
pub(super) async fn build(context: &SystemContext) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(schema(), sensitive_columns(context).await)?)
}

async fn sensitive_columns(context: &SystemContext) -> Vec<ArrayRef> {
    let views = visible_products(context).await;
    let rows = flat(&views, true);
    vec![
        strings(&rows, |r| Some(r.0.product.reference.domain.clone())),
        strings(&rows, |r| Some(r.0.product.reference.product.clone())),
        strings(&rows, |r| Some(col(r).name.clone())),
        strings(&rows, |r| col(r).classification()),
        lists(&rows, |r| col(r).tags.clone()),
        strings(&rows, |r| col(r).sensitive.clone()),
        strings(&rows, |r| Some(r.0.product.config.owner.name.clone())),
        strings(&rows, |r| Some(r.0.product.config.owner.contact.clone())),
    ]
}
