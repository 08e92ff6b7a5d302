//! The answers to Flight SQL's key commands (GetPrimaryKeys,
//! GetImportedKeys, GetExportedKeys, GetCrossReference), built from what the
//! engine shows the principal ([`Session::primary_key`],
//! [`Session::foreign_keys`]).

use std::sync::Arc;

use agora_engine::{CATALOG, ProductForeignKey, ProductRef, Session};
use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray, UInt8Array};
use tonic::Status;

use crate::metadata::{foreign_keys_schema, primary_keys_schema};

/// The products a key command names: `table` in `schema` when given, else
/// in every domain the principal may see; none for another catalog.
pub fn products_named(session: &Session, catalog: Option<&str>, schema: Option<&str>, table: &str) -> Vec<ProductRef> {
    if catalog.is_some_and(|c| c != CATALOG) {
        return Vec::new();
    }
    session
        .schemas()
        .into_iter()
        .filter(|domain| schema.is_none_or(|s| s == domain))
        .map(|domain| ProductRef::new(&domain, table))
        .collect()
}

fn text(values: impl IntoIterator<Item = String>) -> ArrayRef {
    Arc::new(StringArray::from(values.into_iter().collect::<Vec<_>>()))
}

/// GetPrimaryKeys' rows for the products `table` names.
pub async fn primary_keys(session: &Session, products: &[ProductRef]) -> Result<RecordBatch, Status> {
    // (product, column, position in the key)
    let mut rows: Vec<(&ProductRef, String, i32)> = Vec::new();
    for product in products {
        let key = session.primary_key(product).await;
        rows.extend((1..).zip(key).map(|(position, column)| (product, column, position)));
    }
    RecordBatch::try_new(
        primary_keys_schema(),
        vec![
            text(rows.iter().map(|_| CATALOG.to_string())),
            text(rows.iter().map(|r| r.0.domain.clone())),
            text(rows.iter().map(|r| r.0.product.clone())),
            text(rows.iter().map(|r| r.1.clone())),
            text(rows.iter().map(|r| format!("{}_pkey", r.0.product))),
            Arc::new(Int32Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ],
    )
    .map_err(|e| Status::internal(format!("cannot build the primary keys: {e}")))
}

/// Which side of a foreign key the named products are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// GetImportedKeys: the keys the products hold (they reference others).
    Referencing,
    /// GetExportedKeys: the keys that reference the products.
    Referenced,
}

/// The foreign keys of `products` on `side`, one row per column pair, in
/// the order JDBC's `getImportedKeys` / `getExportedKeys` promise (by the
/// other table, then the position in the key).
pub async fn foreign_keys(session: &Session, products: &[ProductRef], side: Side) -> Vec<ProductForeignKey> {
    let mut keys = Vec::new();
    for product in products {
        for key in session.foreign_keys(product).await {
            let holds = match side {
                Side::Referencing => &key.fk_product == product,
                Side::Referenced => &key.pk_product == product,
            };
            if holds {
                keys.push(key);
            }
        }
    }
    let other = |k: &ProductForeignKey| match side {
        Side::Referencing => (k.pk_product.to_string(), k.name.clone()),
        Side::Referenced => (k.fk_product.to_string(), k.name.clone()),
    };
    keys.sort_by_key(other);
    keys
}

/// The rows of a foreign-key answer.
pub fn foreign_keys_batch(keys: &[ProductForeignKey]) -> Result<RecordBatch, Status> {
    let pairs: Vec<(&ProductForeignKey, &String, &String, i32)> = keys
        .iter()
        .flat_map(|k| {
            k.pk_columns.iter().zip(&k.fk_columns).zip(1..).map(move |((pk, fk), position)| (k, pk, fk, position))
        })
        .collect();
    RecordBatch::try_new(
        foreign_keys_schema(),
        vec![
            text(pairs.iter().map(|_| CATALOG.to_string())),
            text(pairs.iter().map(|p| p.0.pk_product.domain.clone())),
            text(pairs.iter().map(|p| p.0.pk_product.product.clone())),
            text(pairs.iter().map(|p| p.1.clone())),
            text(pairs.iter().map(|_| CATALOG.to_string())),
            text(pairs.iter().map(|p| p.0.fk_product.domain.clone())),
            text(pairs.iter().map(|p| p.0.fk_product.product.clone())),
            text(pairs.iter().map(|p| p.2.clone())),
            Arc::new(Int32Array::from(pairs.iter().map(|p| p.3).collect::<Vec<_>>())),
            Arc::new(StringArray::from(pairs.iter().map(|p| Some(p.0.name.clone())).collect::<Vec<_>>())),
            Arc::new(StringArray::from(pairs.iter().map(|p| p.0.pk_key_name.clone()).collect::<Vec<_>>())),
            Arc::new(UInt8Array::from(pairs.iter().map(|p| p.0.update_rule).collect::<Vec<_>>())),
            Arc::new(UInt8Array::from(pairs.iter().map(|p| p.0.delete_rule).collect::<Vec<_>>())),
        ],
    )
    .map_err(|e| Status::internal(format!("cannot build the foreign keys: {e}")))
}
