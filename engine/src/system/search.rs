//! `search_products('text')`: find products by name, tags, descriptions and
//! column descriptions, best match first, among those the caller may read.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use super::SystemContext;
use super::views::{ProductView, visible_products};

/// The table function, registered in every session.
#[derive(Debug)]
pub(crate) struct SearchFunction {
    pub(crate) context: SystemContext,
}

impl TableFunctionImpl for SearchFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let text = match args.exprs() {
            [
                Expr::Literal(
                    ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)),
                    _,
                ),
            ] => s.clone(),
            _ => {
                return Err(DataFusionError::Plan(
                    "search_products takes one text literal, e.g. search_products('customer phone')".into(),
                ));
            }
        };
        Ok(Arc::new(SearchResults { context: self.context.clone(), text }))
    }
}

/// A search, run when scanned.
#[derive(Debug)]
struct SearchResults {
    context: SystemContext,
    text: String,
}

pub(crate) fn search_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("domain", DataType::Utf8, false),
        Field::new("product", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
        Field::new("matched", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
        Field::new("owner", DataType::Utf8, false),
    ]))
}

/// One product's score for the search terms, and what matched.
pub(crate) fn score(view: &ProductView, terms: &[String]) -> Option<(f64, Vec<String>)> {
    let config = &view.product.config;
    let reference = &view.product.reference;
    let contract = config.contract.as_deref();
    let lower = |s: &str| s.to_lowercase();
    let mut total = 0.0;
    let mut matched = Vec::new();
    for term in terms {
        let mut best = 0.0;
        let mut why = String::new();
        let mut consider = |points: f64, reason: String| {
            if points > best {
                best = points;
                why = reason;
            }
        };
        let name = lower(&reference.product);
        if name == *term {
            consider(10.0, "name".into());
        } else if name.contains(term.as_str()) {
            consider(6.0, "name".into());
        }
        if lower(&reference.domain).contains(term.as_str()) {
            consider(3.0, "domain".into());
        }
        let tags = config.tags.iter().chain(contract.into_iter().flat_map(|c| c.tags.iter()));
        for tag in tags {
            if lower(tag) == *term {
                consider(5.0, format!("tag {tag}"));
            }
        }
        let descriptions = [
            Some(&config.description),
            contract.and_then(|c| c.purpose.as_ref()),
            contract.and_then(|c| c.usage.as_ref()),
        ];
        if descriptions.into_iter().flatten().any(|d| lower(d).contains(term.as_str())) {
            consider(3.0, "description".into());
        }
        for column in &view.columns {
            if lower(&column.name).contains(term.as_str()) {
                consider(2.0, format!("column {}", column.name));
            }
            if column.tags.iter().any(|t| lower(t) == *term) {
                consider(2.0, format!("column {} tag", column.name));
            }
            let description = column.contract.as_ref().and_then(|c| c.description.as_deref());
            if description.is_some_and(|d| lower(d).contains(term.as_str())) {
                consider(1.0, format!("column {} description", column.name));
            }
        }
        if best == 0.0 {
            // Every term must match something.
            return None;
        }
        total += best;
        if !matched.contains(&why) {
            matched.push(why);
        }
    }
    Some((total, matched))
}

/// The terms of a search: lowercase words.
pub(crate) fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '_').filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
}

#[async_trait]
impl TableProvider for SearchResults {
    fn schema(&self) -> SchemaRef {
        search_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let terms = terms(&self.text);
        let views = if terms.is_empty() { Vec::new() } else { visible_products(&self.context).await };
        let mut hits: Vec<(&ProductView, f64, Vec<String>)> =
            views.iter().filter_map(|v| score(v, &terms).map(|(s, m)| (v, s, m))).collect();
        hits.sort_by(|a, b| {
            b.1.total_cmp(&a.1).then_with(|| a.0.product.reference.to_string().cmp(&b.0.product.reference.to_string()))
        });
        let text = |f: &dyn Fn(&(&ProductView, f64, Vec<String>)) -> String| -> ArrayRef {
            Arc::new(hits.iter().map(|h| Some(f(h))).collect::<StringArray>())
        };
        let columns = vec![
            text(&|h| h.0.product.reference.domain.clone()),
            text(&|h| h.0.product.reference.product.clone()),
            Arc::new(hits.iter().map(|h| h.1).collect::<Float64Array>()) as ArrayRef,
            text(&|h| h.2.join(", ")),
            text(&|h| h.0.product.config.description.clone()),
            text(&|h| h.0.product.config.owner.name.clone()),
        ];
        let batch = RecordBatch::try_new(search_schema(), columns)?;
        super::scan_batch(batch, state, projection, filters, limit).await
    }
}
