//! `system.domains`, `products`, `columns`, `sensitive_columns` and
//! `sensitive_access`: the mesh's catalogue as one principal may see it.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::{DataFusionError, Result};
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
    fn classification(&self) -> Option<String> {
        self.contract.as_ref().and_then(|c| c.classification.clone())
    }
}

/// Why a column with these tags and classification is sensitive, if it is.
fn sensitivity(context: &SystemContext, classification: Option<&str>, tags: &[String]) -> Option<String> {
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
fn column_tags(
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

async fn view(context: &SystemContext, product: Arc<Product>) -> ProductView {
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

fn text_field(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn list_field(name: &str) -> Field {
    Field::new(name, DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false)
}

/// The schema of a catalogue table.
pub(crate) fn schema(name: &str) -> SchemaRef {
    let fields = match name {
        "domains" => vec![
            text_field("domain", false),
            text_field("description", false),
            text_field("owner", false),
            text_field("owner_contact", false),
            Field::new("products", DataType::Int64, false),
        ],
        "products" => vec![
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
        ],
        "columns" => vec![
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
        ],
        "sensitive_columns" => vec![
            text_field("domain", false),
            text_field("product", false),
            text_field("column_name", false),
            text_field("classification", true),
            list_field("tags"),
            text_field("reason", false),
            text_field("owner", false),
            text_field("owner_contact", false),
        ],
        "sensitive_access" => vec![
            Field::new("event_time", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
            text_field("query_id", false),
            text_field("user", false),
            text_field("domain", false),
            text_field("product", false),
            text_field("column_name", false),
            Field::new("masked", DataType::Boolean, false),
            text_field("mask", true),
            text_field("status", false),
        ],
        _ => Vec::new(),
    };
    Arc::new(Schema::new(fields))
}

/// Builds the rows of a catalogue table.
pub(crate) async fn build(name: &str, context: &SystemContext) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = match name {
        "domains" => domains(context).await,
        "products" => products(context).await,
        "columns" => columns(context).await,
        "sensitive_columns" => sensitive_columns(context).await,
        "sensitive_access" => sensitive_access(context).await?,
        other => return Err(DataFusionError::Plan(format!("no system table '{other}'"))),
    };
    Ok(RecordBatch::try_new(schema(name), columns)?)
}

fn strings<T>(rows: &[T], f: impl Fn(&T) -> Option<String>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<StringArray>())
}

fn lists<T>(rows: &[T], f: impl Fn(&T) -> Vec<String>) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for v in f(row) {
            b.values().append_value(v);
        }
        b.append(true);
    }
    Arc::new(b.finish())
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

/// The column a (product view, column index) pair names.
fn col<'a>(r: &(&'a ProductView, usize)) -> &'a ColumnView {
    &r.0.columns[r.1]
}

/// (product view, column index) for every readable column.
fn flat(views: &[ProductView], only_sensitive: bool) -> Vec<(&ProductView, usize)> {
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
    for record in records.iter().filter(|r| r.status == "ok" || r.status == "cancelled") {
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
    schema("sensitive_access").fields().iter().map(|f| arrow::array::new_empty_array(f.data_type())).collect()
}
