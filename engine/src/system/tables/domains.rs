//! `system.domains`: the domains with at least one product the viewer may see.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::Result;

use crate::ProductRef;

use super::{strings, text_field};
use crate::system::SystemContext;

/// The schema of `system.domains`.
pub(super) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text_field("domain", false),
        text_field("description", false),
        text_field("owner", false),
        text_field("owner_contact", false),
        Field::new("products", DataType::Int64, false),
    ]))
}

/// The rows of `system.domains` for the session's viewer.
pub(super) async fn build(context: &SystemContext) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(schema(), domains(context).await)?)
}

async fn domains(context: &SystemContext) -> Vec<ArrayRef> {
    let config = context.mesh.config();
    let rows: Vec<(&crate::config::DomainConfig, i64)> = config
        .domains
        .iter()
        .map(|d| {
            let n = d.products.iter().filter(|p| context.viewer.may_see(&ProductRef::new(&d.name, &p.name))).count();
            (d, n as i64)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    vec![
        strings(&rows, |(d, _)| Some(d.name.clone())),
        strings(&rows, |(d, _)| Some(d.description.clone())),
        strings(&rows, |(d, _)| Some(d.owner.name.clone())),
        strings(&rows, |(d, _)| Some(d.owner.contact.clone())),
        Arc::new(rows.iter().map(|(_, n)| *n).collect::<Int64Array>()),
    ]
}
