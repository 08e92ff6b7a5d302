//! Name resolution with hints: what a name that does not resolve gets told,
//! without revealing to a principal products it may not see.

use datafusion::common::TableReference;

use super::{CATALOG, Engine, Session};
use crate::config::RESERVED_SCHEMAS;
use crate::{EngineError, ProductRef};

impl Engine {
    /// A message for a name that does not resolve, listing what does exist.
    pub(super) fn describe_missing(&self, domain: &str, product: &str) -> String {
        let domains = &self.config().domains;
        match self.config().domain(domain) {
            Some(d) => {
                let names: Vec<&str> = d.products.iter().map(|p| p.name.as_str()).collect();
                let mut message =
                    format!("no product '{product}' in domain '{domain}'; its products are: {}", names.join(", "));
                if let Some((_, why)) = self.inner.attach_failures.iter().find(|(name, _)| name == domain) {
                    message.push_str(&format!(" (its PostgreSQL schema could not be listed at start: {why})"));
                }
                message
            }
            None => {
                let names: Vec<&str> = domains.iter().map(|d| d.name.as_str()).collect();
                format!("no domain '{domain}' (looking up '{domain}.{product}'); domains are: {}", names.join(", "))
            }
        }
    }
}

impl Session {
    /// Refuses a contract's SQL rule that reads outside its product's domain:
    /// rules run with unrestricted reads, so a domain's rules may check its own
    /// products (referential integrity within the domain) but must not reach
    /// other domains' data or the `system` tables.
    pub(super) fn own_domain_only(&self, sql: &str, product: &ProductRef) -> Result<(), String> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect).map_err(|e| e.to_string())?;
        for reference in state.resolve_table_references(&statement).map_err(|e| e.to_string())? {
            let catalog_ok = reference.catalog().is_none_or(|c| c == CATALOG);
            if !(catalog_ok && reference.schema() == Some(&product.domain)) {
                return Err(format!(
                    "a sql rule of {product} may read only products of domain {} (the product itself is {{object}}), \
                     but it reads {reference}",
                    product.domain
                ));
            }
        }
        Ok(())
    }

    /// The refusal of a bare product name in a session without a default
    /// schema, naming the products of that name the principal may read.
    fn unqualified(&self, table: &str) -> EngineError {
        let owners: Vec<String> = self
            .engine
            .domains()
            .iter()
            .filter(|d| d.product(table).is_some())
            .filter(|d| self.viewer.may_see(&ProductRef::new(&d.name, table)))
            .map(|d| format!("{}.{table}", d.name))
            .collect();
        let hint = if owners.is_empty() { String::new() } else { format!("; did you mean {}?", owners.join(" or ")) };
        EngineError::NotFound(format!("table '{table}' must be qualified by its domain, as domain.product{hint}"))
    }

    pub(super) fn check_reference(&self, reference: &TableReference) -> Result<(), EngineError> {
        let (catalog, schema, table) = match reference {
            // Bare names were qualified with the session's default schema, if
            // it has one (see `default_schema`).
            TableReference::Bare { table } => return Err(self.unqualified(table)),
            TableReference::Partial { schema, table } => (CATALOG, schema.as_ref(), table.as_ref()),
            TableReference::Full { catalog, schema, table } => (catalog.as_ref(), schema.as_ref(), table.as_ref()),
        };
        if catalog != CATALOG {
            return Err(EngineError::NotFound(format!(
                "no catalog '{catalog}' (looking up '{reference}'); the only catalog is '{CATALOG}'"
            )));
        }
        if RESERVED_SCHEMAS.contains(&schema) {
            return Ok(());
        }
        let product = ProductRef::new(schema, table);
        let found = self.engine.config().domain(schema).and_then(|d| d.product(table)).is_some();
        // On a governed mesh a principal learns nothing of products it may
        // not read: a missing product and an ungranted one get the same
        // denial, and only admins get the list of what exists.
        let readable = found && self.viewer.may_see(&product);
        if !(readable || self.viewer.is_admin()) {
            return Err(self.viewer.denied(&product));
        }
        if !found {
            return Err(EngineError::NotFound(self.engine.describe_missing(schema, table)));
        }
        Ok(())
    }
}
