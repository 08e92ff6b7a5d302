//! Every `system.*` table, one file each: its schema and how its rows are
//! built, at scan time, for one session's viewer.

use std::sync::Arc;

use arrow::array::{ArrayRef, ListBuilder, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::error::{DataFusionError, Result};

use super::SystemContext;

pub(crate) mod audit_log;
mod columns;
mod domains;
mod products;
pub(crate) mod quality_results;
mod queries;
mod sensitive_access;
mod sensitive_columns;

/// The system tables' names, in listing order.
pub(crate) const TABLES: &[&str] = &[
    "domains",
    "products",
    "columns",
    "quality_results",
    "sensitive_columns",
    "sensitive_access",
    "audit_log",
    "queries",
];

/// The schema of the system table `name`, if there is one.
pub(crate) fn schema(name: &str) -> Option<SchemaRef> {
    Some(match name {
        "domains" => domains::schema(),
        "products" => products::schema(),
        "columns" => columns::schema(),
        "quality_results" => quality_results::results_schema(),
        "sensitive_columns" => sensitive_columns::schema(),
        "sensitive_access" => sensitive_access::schema(),
        "audit_log" => audit_log::schema(),
        "queries" => queries::schema(),
        _ => return None,
    })
}

/// The rows of the system table `name` as `context`'s viewer may see them.
pub(crate) async fn build(name: &str, context: &SystemContext) -> Result<RecordBatch> {
    match name {
        "domains" => domains::build(context).await,
        "products" => products::build(context).await,
        "columns" => columns::build(context).await,
        "quality_results" => quality_results::build(context).await,
        "sensitive_columns" => sensitive_columns::build(context).await,
        "sensitive_access" => sensitive_access::build(context).await,
        "audit_log" => audit_log::build(context).await,
        "queries" => queries::build(context).await,
        other => Err(DataFusionError::Plan(format!("no system table '{other}'"))),
    }
}

pub(super) fn text_field(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

pub(super) fn list_field(name: &str) -> Field {
    Field::new(name, DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false)
}

pub(super) fn strings<T>(rows: &[T], f: impl Fn(&T) -> Option<String>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<StringArray>())
}

pub(super) fn lists<T>(rows: &[T], f: impl Fn(&T) -> Vec<String>) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for v in f(row) {
            b.values().append_value(v);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}
