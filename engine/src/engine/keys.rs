//! The keys of products, for catalog browsers (Flight SQL GetPrimaryKeys,
//! GetImportedKeys, GetExportedKeys and GetCrossReference; JDBC and ODBC
//! tools and Power BI relate tables by them). A key is shown only for
//! products the principal may see and only when every column of it is one
//! the principal may read: a partial key would mislead, and the name of a
//! hidden column is not shown.

use std::collections::HashMap;

use agora_connectors::{PostgresSource, Source};

use super::Session;
use crate::ProductRef;

/// A foreign key between two products, as their PostgreSQL tables declare it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductForeignKey {
    /// The constraint's name.
    pub name: String,
    /// The referenced product.
    pub pk_product: ProductRef,
    /// Its referenced columns, in key order.
    pub pk_columns: Vec<String>,
    /// The name of the referenced key.
    pub pk_key_name: Option<String>,
    /// The referencing product.
    pub fk_product: ProductRef,
    /// Its referencing columns, in the same order.
    pub fk_columns: Vec<String>,
    /// Flight SQL's update rule (0 cascade, 1 restrict, 2 set null, 3 no action, 4 set default).
    pub update_rule: u8,
    /// Flight SQL's delete rule, numbered as `update_rule`.
    pub delete_rule: u8,
}

impl Session {
    /// The primary key of a product as its contract declares it
    /// (`primaryKey`, in `primaryKeyPosition` order) or, when the contract
    /// declares none, as its PostgreSQL table does, for catalog browsers
    /// (Flight SQL GetPrimaryKeys; Power BI relates tables by it). Empty for
    /// a product the principal may not see or that declares no key, and when
    /// any key column is one the principal may not read (a partial key would
    /// mislead, and the name of a hidden column is not shown).
    pub async fn primary_key(&self, product: &ProductRef) -> Vec<String> {
        if product.domain == "system" || !self.viewer.may_see(product) {
            return Vec::new();
        }
        let Some(entry) = self.engine.inner.catalog.product(product) else { return Vec::new() };
        let mut key: Vec<(i64, usize, String)> = entry
            .config
            .contract
            .iter()
            .flat_map(|c| c.columns.iter())
            .enumerate()
            .filter(|(_, c)| c.primary_key)
            .map(|(i, c)| (c.primary_key_position.unwrap_or(i64::MAX), i, c.name.clone()))
            .collect();
        key.sort();
        let mut key: Vec<String> = key.into_iter().map(|(_, _, name)| name).collect();
        // Without a key in the contract, the one PostgreSQL declares.
        if key.is_empty()
            && let Source::Postgres(source) = &entry.config.source
        {
            key = source.primary_key().await.unwrap_or_else(|e| {
                tracing::warn!(product = %product, error = %e, "cannot read the primary key PostgreSQL declares");
                Vec::new()
            });
        }
        if key.is_empty() {
            return Vec::new();
        }
        let Ok(schema) = self.product_schema(product).await else { return Vec::new() };
        if key.iter().any(|name| schema.field_with_name(name).is_err()) {
            return Vec::new();
        }
        key
    }

    /// The foreign keys PostgreSQL declares between `product` and other
    /// products of the mesh, in either direction: keys to tables that are no
    /// product, or that the principal may not see, or with a column the
    /// principal may not read, are left out.
    pub async fn foreign_keys(&self, product: &ProductRef) -> Vec<ProductForeignKey> {
        if product.domain == "system" || !self.viewer.may_see(product) {
            return Vec::new();
        }
        let Some(entry) = self.engine.inner.catalog.product(product) else { return Vec::new() };
        let Source::Postgres(source) = &entry.config.source else { return Vec::new() };
        let keys = source.foreign_keys().await.unwrap_or_else(|e| {
            tracing::warn!(product = %product, error = %e, "cannot read the foreign keys PostgreSQL declares");
            Vec::new()
        });
        // The primary keys of the referenced products, each read once.
        let mut primary_keys: HashMap<ProductRef, Vec<String>> = HashMap::new();
        let mut shown = Vec::new();
        for key in keys {
            let (Some(pk_product), Some(fk_product)) =
                (self.product_of(source, &key.pk_table), self.product_of(source, &key.fk_table))
            else {
                continue;
            };
            if !(self.may_read_all(&pk_product, &key.pk_columns).await
                && self.may_read_all(&fk_product, &key.fk_columns).await)
            {
                continue;
            }
            // The referenced key under the name GetPrimaryKeys gives it, when
            // it is the product's primary key.
            if !primary_keys.contains_key(&pk_product) {
                primary_keys.insert(pk_product.clone(), self.primary_key(&pk_product).await);
            }
            let pk_key_name = if primary_keys.get(&pk_product) == Some(&key.pk_columns) {
                Some(format!("{}_pkey", pk_product.product))
            } else {
                key.pk_name
            };
            shown.push(ProductForeignKey {
                name: key.name,
                pk_product,
                pk_columns: key.pk_columns,
                pk_key_name,
                fk_product,
                fk_columns: key.fk_columns,
                update_rule: key.update_rule as u8,
                delete_rule: key.delete_rule as u8,
            });
        }
        shown
    }

    /// The product the principal may see that reads PostgreSQL table
    /// `(schema, table)` through `source`'s connection.
    fn product_of(&self, source: &PostgresSource, table: &(String, String)) -> Option<ProductRef> {
        self.engine.domains().iter().find_map(|domain| {
            domain.products.iter().find_map(|p| match &p.source {
                Source::Postgres(s)
                    if s.connection == source.connection && (&s.schema, &s.table) == (&table.0, &table.1) =>
                {
                    let product = ProductRef::new(&domain.name, &p.name);
                    self.viewer.may_see(&product).then_some(product)
                }
                _ => None,
            })
        })
    }

    /// Whether every one of `columns` is in the principal's view of `product`.
    async fn may_read_all(&self, product: &ProductRef, columns: &[String]) -> bool {
        match self.product_schema(product).await {
            Ok(schema) => !columns.is_empty() && columns.iter().all(|c| schema.field_with_name(c).is_ok()),
            Err(_) => false,
        }
    }
}
