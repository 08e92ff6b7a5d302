//! `system.columns`: the readable columns of visible products, with types, descriptions, tags, sensitivity and masks.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::Result;

use super::{list_field, lists, strings, text_field};
use crate::system::SystemContext;
use crate::system::views::{ColumnView, ProductView, visible_products};

/// The schema of `system.columns`.
pub(super) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text_field("domain", false),
        text_field("product", false),
        text_field("column_name", false),
        Field::new("ordinal", DataType::Int64, false),
        text_field("data_type", true),
        Field::new("is_nullable", DataType::Boolean, true),
        text_field("description", true),
        text_field("logical_type", true),
        text_field("physical_type", true),
        text_field("classification", true),
        list_field("tags"),
        Field::new("sensitive", DataType::Boolean, false),
        text_field("mask", true),
    ]))
}

/// The rows of `system.columns` for the session's viewer.
pub(super) async fn build(context: &SystemContext) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(schema(), columns(context).await)?)
}

/// The column a (product view, column index) pair names.
pub(super) fn col<'a>(r: &(&'a ProductView, usize)) -> &'a ColumnView {
    &r.0.columns[r.1]
}

/// (product view, column index) for every readable column.
pub(super) fn flat(views: &[ProductView], only_sensitive: bool) -> Vec<(&ProductView, usize)> {
    views
        .iter()
        .flat_map(|v| (0..v.columns.len()).map(move |i| (v, i)))
        .filter(|(v, i)| !only_sensitive || v.columns[*i].sensitive.is_some())
        .collect()
}

async fn columns(context: &SystemContext) -> Vec<ArrayRef> {
    let views = visible_products(context).await;
    let rows = flat(&views, false);
    vec![
        strings(&rows, |r| Some(r.0.product.reference.domain.clone())),
        strings(&rows, |r| Some(r.0.product.reference.product.clone())),
        strings(&rows, |r| Some(col(r).name.clone())),
        Arc::new(rows.iter().map(|r| r.1 as i64 + 1).collect::<Int64Array>()),
        strings(&rows, |r| col(r).data_type.clone()),
        Arc::new(rows.iter().map(|r| col(r).nullable).collect::<BooleanArray>()),
        strings(&rows, |r| col(r).contract.as_ref().and_then(|c| c.description.clone())),
        strings(&rows, |r| col(r).contract.as_ref().and_then(|c| c.logical_type.clone())),
        strings(&rows, |r| col(r).contract.as_ref().and_then(|c| c.physical_type.clone())),
        strings(&rows, |r| col(r).classification()),
        lists(&rows, |r| col(r).tags.clone()),
        Arc::new(rows.iter().map(|r| Some(col(r).sensitive.is_some())).collect::<BooleanArray>()),
        strings(&rows, |r| col(r).mask.clone()),
    ]
}
