//! The catalogue as one principal may see it: each visible product with
//! its readable columns, their tags, sensitivity and masks, and the
//! contract's state. The catalogue tables and `search_products` read it.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;

use crate::ProductRef;
use crate::catalog::Product;
use crate::contract::{ContractColumn, Drift, drift};
use crate::governance::policy::Access;

use super::SystemContext;

/// Classifications that make a column sensitive.
const SENSITIVE_CLASSES: &[&str] = &["confidential", "restricted", "sensitive", "secret", "pii"];

/// Tags that make a column sensitive (besides those a tag rule masks or hides).
const SENSITIVE_TAGS: &[&str] = &["pii", "sensitive", "confidential", "restricted", "secret", "phi", "pci", "personal"];

/// How many products are opened at once to build a table.
const OPEN_CONCURRENCY: usize = 16;

/// A product as the viewer may see it.
pub(crate) struct ProductView {
    pub(crate) product: Arc<Product>,
    /// `ok`, `drift`, `unavailable` or `no contract`, and why.
    pub(crate) status: (&'static str, Option<String>),
    pub(crate) columns: Vec<ColumnView>,
}

/// A column the viewer may read.
pub(crate) struct ColumnView {
    pub(crate) name: String,
    pub(crate) data_type: Option<String>,
    pub(crate) nullable: Option<bool>,
    pub(crate) contract: Option<ContractColumn>,
    pub(crate) tags: Vec<String>,
    /// The mask applied to the viewer, if any.
    pub(crate) mask: Option<String>,
    /// Why the column is sensitive, if it is.
    pub(crate) sensitive: Option<String>,
}

impl ColumnView {
    pub(crate) fn classification(&self) -> Option<String> {
        self.contract.as_ref().and_then(|c| c.classification.clone())
    }
}

/// Why a column with these tags and classification is sensitive, if it is.
pub(crate) fn sensitivity(context: &SystemContext, classification: Option<&str>, tags: &[String]) -> Option<String> {
    if let Some(class) = classification
        && SENSITIVE_CLASSES.contains(&class.to_ascii_lowercase().as_str())
    {
        return Some(format!("classification {class}"));
    }
    let governed: BTreeSet<&str> =
        context.viewer.policies.as_ref().map(|p| p.governed_tags().collect()).unwrap_or_default();
    tags.iter()
        .find(|t| SENSITIVE_TAGS.contains(&t.to_ascii_lowercase().as_str()) || governed.contains(t.as_str()))
        .map(|t| format!("tag {t}"))
}

/// The tags of a column: the contract's and the policy files'.
pub(crate) fn column_tags(
    context: &SystemContext,
    product: &ProductRef,
    contract: Option<&ContractColumn>,
    column: &str,
) -> Vec<String> {
    let mut tags: Vec<String> = contract.map(|c| c.tags.clone()).unwrap_or_default();
    if let Some(policies) = &context.viewer.policies
        && let Some(columns) = policies.product_tags(product)
        && let Some(more) = columns.get(column)
    {
        for t in more {
            let is_classification = contract.and_then(|c| c.classification.as_ref()) == Some(t);
            if !tags.contains(t) && !is_classification {
                tags.push(t.clone());
            }
        }
    }
    tags
}

/// Every product the viewer may see, opened, with its readable columns.
pub(crate) async fn visible_products(context: &SystemContext) -> Vec<ProductView> {
    let products: Vec<Arc<Product>> =
        context.mesh.products().filter(|p| context.viewer.may_see(&p.reference)).cloned().collect();
    futures::stream::iter(products).map(|p| view(context, p)).buffered(OPEN_CONCURRENCY).collect().await
}

/// What opening a product showed.
enum Status {
    NoContract,
    Unavailable(String),
    Checked(Vec<Drift>),
}

/// A column of the source: name, Arrow type and nullability (unknown when the
/// source cannot be opened and the contract's columns are shown instead).
type SourceColumn = (String, Option<String>, Option<bool>);

pub(crate) async fn view(context: &SystemContext, product: Arc<Product>) -> ProductView {
    let contract = product.config.contract.clone();
    let opened = product.table().await.map(|t| t.schema());
    let (status, source_columns): (_, Vec<SourceColumn>) = match &opened {
        Ok(schema) => {
            let status = match &contract {
                None => Status::NoContract,
                Some(c) => Status::Checked(drift(c, schema)),
            };
            let columns = schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), Some(f.data_type().to_string()), Some(f.is_nullable())))
                .collect();
            (status, columns)
        }
        Err(e) => {
            let columns =
                contract.iter().flat_map(|c| c.columns.iter()).map(|c| (c.name.clone(), None, None)).collect();
            (Status::Unavailable(e.to_string()), columns)
        }
    };
    let names: Vec<String> = source_columns.iter().map(|(n, _, _)| n.clone()).collect();
    // The readable columns and (column, mask) of those masked for the viewer.
    type Readable = (Vec<String>, Vec<(String, String)>);
    let readable: Option<Readable> = match &context.viewer.policies {
        None => Some((names.clone(), Vec::new())),
        Some(policies) => match policies.access(&context.viewer.principal, &product.reference, &names) {
            Ok(Access::Full) => Some((names.clone(), Vec::new())),
            Ok(Access::Limited(policy)) => {
                let masks = policy.masks.iter().map(|(c, (m, _))| (c.clone(), m.to_string())).collect();
                Some((policy.columns, masks))
            }
            Err(_) => None,
        },
    };
    let (readable, masks) = readable.unwrap_or_default();
    // Differences about columns the viewer may not read are not shown to them.
    let status = match status {
        Status::NoContract => ("no contract", None),
        Status::Unavailable(why) => ("unavailable", Some(why)),
        Status::Checked(found) => {
            let shown: Vec<String> = found
                .iter()
                .filter(|d| match d {
                    Drift::Missing(_) => true,
                    Drift::Extra(c) | Drift::Type { column: c, .. } => readable.contains(c),
                })
                .map(ToString::to_string)
                .collect();
            match (found.is_empty(), shown.is_empty()) {
                (true, _) => ("ok", None),
                (false, true) => {
                    ("drift", Some("the source differs from the contract in columns you may not read".into()))
                }
                (false, false) => ("drift", Some(shown.join("; "))),
            }
        }
    };
    let columns = source_columns
        .into_iter()
        .filter(|(name, _, _)| readable.contains(name))
        .map(|(name, data_type, nullable)| {
            let contract_column = contract.as_ref().and_then(|c| c.column(&name)).cloned();
            let tags = column_tags(context, &product.reference, contract_column.as_ref(), &name);
            let classification = contract_column.as_ref().and_then(|c| c.classification.clone());
            let sensitive = sensitivity(context, classification.as_deref(), &tags);
            let mask = masks.iter().find(|(c, _)| *c == name).map(|(_, m)| m.clone());
            ColumnView { name, data_type, nullable, contract: contract_column, tags, mask, sensitive }
        })
        .collect();
    ProductView { product, status, columns }
}
