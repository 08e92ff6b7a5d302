//! `system.products`: the products the viewer may see, with owner, source, contract and status.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::error::Result;

use crate::catalog::Product;

use super::{list_field, lists, strings, text_field};
use crate::system::SystemContext;
use crate::system::views::{ProductView, visible_products};

/// The schema of `system.products`.
pub(super) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text_field("domain", false),
        text_field("product", false),
        text_field("description", false),
        text_field("owner", false),
        text_field("owner_contact", false),
        text_field("source_kind", false),
        text_field("location", false),
        list_field("tags"),
        text_field("contract_id", true),
        text_field("contract_version", true),
        text_field("contract_status", true),
        text_field("purpose", true),
        text_field("usage", true),
        text_field("limitations", true),
        text_field("status", false),
        text_field("status_detail", true),
        text_field("contract_unsupported_fields", true),
    ]))
}

/// The rows of `system.products` for the session's viewer.
pub(super) async fn build(context: &SystemContext) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(schema(), products(context).await)?)
}

/// A product's location without credentials.
fn location(product: &Product) -> String {
    let mut url = product.config.source.location().clone();
    let _ = url.set_password(None);
    url.to_string()
}

async fn products(context: &SystemContext) -> Vec<ArrayRef> {
    let views = visible_products(context).await;
    let contract = |v: &ProductView| v.product.config.contract.clone();
    vec![
        strings(&views, |v| Some(v.product.reference.domain.clone())),
        strings(&views, |v| Some(v.product.reference.product.clone())),
        strings(&views, |v| Some(v.product.config.description.clone())),
        strings(&views, |v| {
            Some(contract(v).and_then(|c| c.owner()).unwrap_or_else(|| v.product.config.owner.name.clone()))
        }),
        strings(&views, |v| Some(v.product.config.owner.contact.clone())),
        strings(&views, |v| Some(v.product.config.source.kind().to_string())),
        strings(&views, |v| Some(location(&v.product))),
        lists(&views, |v| {
            let mut tags = v.product.config.tags.clone();
            for t in contract(v).map(|c| c.tags.clone()).unwrap_or_default() {
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
            tags
        }),
        strings(&views, |v| contract(v).map(|c| c.id.clone())),
        strings(&views, |v| contract(v).map(|c| c.version.clone())),
        strings(&views, |v| contract(v).and_then(|c| c.status.clone())),
        strings(&views, |v| contract(v).and_then(|c| c.purpose.clone())),
        strings(&views, |v| contract(v).and_then(|c| c.usage.clone())),
        strings(&views, |v| contract(v).and_then(|c| c.limitations.clone())),
        strings(&views, |v| Some(v.status.0.to_string())),
        strings(&views, |v| v.status.1.clone()),
        strings(&views, |v| contract(v).and_then(|c| c.unsupported_json())),
    ]
}
