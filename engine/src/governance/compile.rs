//! From a decision ([`TablePolicy`]) to expressions over a product's columns,
//! and the schema-level checks of every policy when a product is opened.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;

use datafusion::common::{Column, DFSchema};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, ExprSchemable};

use crate::ProductRef;

use super::expressions::check_scalar;
use super::policy::{PolicySet, TablePolicy, substitute_placeholders};
use super::rewrite::{AppliedPolicy, GovernedTable};

fn unqualified(schema: &Schema) -> Result<DFSchema, String> {
    DFSchema::try_from(schema.clone()).map_err(|e| e.strip_backtrace())
}

/// Plans a row filter over the product's columns and checks that it is a predicate.
fn row_filter(text: &str, schema: &DFSchema, state: &SessionState) -> Result<Expr, String> {
    let e = state.create_logical_expr(text, schema).map_err(|e| e.strip_backtrace())?;
    check_scalar(&e)?;
    match e.get_type(schema).map_err(|e| e.strip_backtrace())? {
        DataType::Boolean | DataType::Null => Ok(e),
        other => Err(format!("a row filter must be a predicate, but '{text}' is of type {other}")),
    }
}

/// Builds the governed view of `raw` for one principal's [`TablePolicy`].
pub(crate) fn govern(
    raw: Arc<dyn TableProvider>,
    product: &ProductRef,
    policy: &TablePolicy,
    policies: &PolicySet,
    state: &SessionState,
) -> Result<GovernedTable, String> {
    let raw_schema = raw.schema();
    let df_schema = unqualified(&raw_schema)?;
    let mut columns = Vec::with_capacity(policy.columns.len());
    let mut fields = Vec::with_capacity(policy.columns.len());
    for name in &policy.columns {
        let index = raw_schema.index_of(name).map_err(|_| format!("{product} has no column '{name}'"))?;
        let field = raw_schema.field(index);
        let field = if policy.masks.contains_key(name) { field.clone().with_nullable(true) } else { field.clone() };
        columns.push(index);
        fields.push(Arc::new(field) as Arc<Field>);
    }
    let filter = match &policy.row_filter {
        Some((text, ids)) => Some((
            row_filter(text, &df_schema, state).map_err(|e| format!("row filter of {}: {e}", ids.join(", ")))?,
            text.clone(),
            ids.clone(),
        )),
        None => None,
    };
    let mut masks = BTreeMap::new();
    let mut applied_masks = Vec::new();
    for (name, (mask, id)) in &policy.masks {
        let index = raw_schema.index_of(name).map_err(|_| format!("{product} has no column '{name}'"))?;
        let data_type = raw_schema.field(index).data_type();
        let column = Expr::Column(Column::from_name(name));
        let e = mask
            .expr(column, name, data_type, policies.token_key.as_ref(), state, &df_schema)
            .map_err(|e| format!("policy '{id}': {e}"))?;
        masks.insert(index, e);
        applied_masks.push((name.clone(), mask.to_string(), id.clone()));
    }
    let applied = AppliedPolicy {
        product: product.to_string(),
        row_filter: filter.as_ref().map(|(_, text, _)| text.clone()),
        filter_policies: filter.as_ref().map(|(_, _, ids)| ids.clone()).unwrap_or_default(),
        masks: applied_masks,
    };
    let schema: SchemaRef = Arc::new(Schema::new_with_metadata(fields, raw_schema.metadata().clone()));
    Ok(GovernedTable::new(raw, schema, columns, filter.map(|(e, _, _)| e), masks, Arc::new(applied)))
}

/// Checks every policy that names `product` against its schema: columns exist,
/// row filters are predicates over its columns, masks fit their columns. Row
/// filters are checked with `''` for principal attributes.
pub(crate) fn validate(
    policies: &PolicySet,
    product: &ProductRef,
    schema: &Schema,
    state: &SessionState,
) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(df_schema) = unqualified(schema) else { return vec![format!("{product}: schema cannot be used")] };
    let has = |c: &str| schema.index_of(c).is_ok();
    let names = || schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
    for g in policies.grants_on(product) {
        let scope_is_product = g.product.is_some();
        for c in g.columns.iter().flatten().chain(&g.except_columns) {
            if !has(c) && scope_is_product {
                problems.push(format!(
                    "policy '{}': {product} has no column '{c}'; its columns are: {}",
                    g.id,
                    names()
                ));
            }
        }
        if let Some(text) = &g.row_filter
            && let Err(e) = row_filter(&substitute_placeholders(text), &df_schema, state)
        {
            problems.push(format!("policy '{}': row filter on {product}: {e}", g.id));
        }
        for (c, mask) in &g.masks {
            match schema.index_of(c) {
                Ok(i) => {
                    let column = Expr::Column(Column::from_name(c));
                    let dt = schema.field(i).data_type();
                    if let Err(e) = mask.expr(column, c, dt, policies.token_key.as_ref(), state, &df_schema) {
                        problems.push(format!("policy '{}': {e}", g.id));
                    }
                }
                Err(_) if scope_is_product => problems.push(format!(
                    "policy '{}': masks column '{c}', which {product} does not have; its columns are: {}",
                    g.id,
                    names()
                )),
                Err(_) => {}
            }
        }
    }
    for r in policies.restrictions_on(product) {
        if let Err(e) = row_filter(&substitute_placeholders(&r.row_filter), &df_schema, state) {
            problems.push(format!("policy '{}': row filter on {product}: {e}", r.id));
        }
    }
    for c in policies.tagged_columns(product) {
        let Ok(i) = schema.index_of(c) else {
            problems.push(format!("tags: {product} has no column '{c}'; its columns are: {}", names()));
            continue;
        };
        for (id, mask) in policies.tag_masks(product, c) {
            let column = Expr::Column(Column::from_name(c));
            let dt = schema.field(i).data_type();
            if let Err(e) = mask.expr(column, c, dt, policies.token_key.as_ref(), state, &df_schema) {
                problems.push(format!("tag rule '{id}' on {product}: {e}"));
            }
        }
    }
    problems
}
