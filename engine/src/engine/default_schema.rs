//! Unqualified product names in a session with a default schema.
//!
//! `SELECT * FROM nation` in a session whose schema is `customers` is
//! rewritten to `SELECT * FROM "customers".nation` before it is planned, so
//! that everything downstream sees the qualified name: the governance gate,
//! the audit record, lineage and the query history name `customers.nation`
//! exactly as if the user had written it. DataFusion's own default schema is
//! left alone (it would also make DataFusion look up table functions such as
//! `range` as products of that schema, and an error there would tell which
//! hidden products exist). Names of table functions and of the statement's
//! own CTEs are never rewritten; a CTE that shares its name with a product
//! referenced elsewhere in the statement is refused as ambiguous.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Ident, ObjectName, ObjectNamePart, Query, Visit, Visitor, visit_relations_mut};

use crate::EngineError;

/// An identifier as DataFusion normalises it: unquoted ones in lower case.
fn normalised(ident: &Ident) -> String {
    if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() }
}

/// Collects the names of a statement's CTEs.
#[derive(Default)]
struct CteNames(HashSet<String>);

impl Visitor for CteNames {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            self.0.extend(with.cte_tables.iter().map(|cte| normalised(&cte.alias.name)));
        }
        ControlFlow::Continue(())
    }
}

/// Qualifies with `schema` every one-part table name of `statement` that is
/// in `bare` (the statement's bare references to tables, as DataFusion
/// resolves them: CTE names and table functions already left out).
pub(super) fn qualify(statement: &mut DFStatement, schema: &str, bare: &HashSet<String>) -> Result<(), EngineError> {
    match statement {
        DFStatement::Statement(inner) => {
            let mut ctes = CteNames::default();
            let _ = inner.visit(&mut ctes);
            if let Some(name) = ctes.0.intersection(bare).next() {
                return Err(EngineError::Sql(format!(
                    "'{name}' names both a CTE of this statement and a table of the session's schema '{schema}': \
                     write {schema}.{name} for the product, or rename the CTE"
                )));
            }
            let _ = visit_relations_mut(inner.as_mut(), |name: &mut ObjectName| {
                if let [ObjectNamePart::Identifier(ident)] = name.0.as_slice()
                    && bare.contains(&normalised(ident))
                {
                    name.0.insert(0, ObjectNamePart::Identifier(Ident::with_quote('"', schema)));
                }
                ControlFlow::<()>::Continue(())
            });
            Ok(())
        }
        DFStatement::Explain(explain) => qualify(explain.statement.as_mut(), schema, bare),
        // Other statements (DDL, COPY) are refused as writes before this.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn rewritten(sql: &str, bare: &[&str]) -> Result<String, EngineError> {
        let mut statement = DFParser::parse_sql(sql).unwrap().pop_front().unwrap();
        let bare = bare.iter().map(|s| s.to_string()).collect();
        qualify(&mut statement, "customers", &bare)?;
        Ok(statement.to_string())
    }

    #[test]
    fn bare_names_are_qualified_and_nothing_else() {
        assert_eq!(
            rewritten(
                "SELECT * FROM nation JOIN sales.orders o ON true WHERE n IN (SELECT 1 FROM Region)",
                &["nation", "region"]
            )
            .unwrap(),
            "SELECT * FROM \"customers\".nation JOIN sales.orders o ON true WHERE n IN (SELECT 1 FROM \"customers\".Region)"
        );
        // A table function and a name not among the bare references stay.
        assert_eq!(rewritten("SELECT * FROM range(3), other", &["nation"]).unwrap(), "SELECT * FROM range(3), other");
        // EXPLAIN is rewritten inside.
        assert!(rewritten("EXPLAIN SELECT * FROM nation", &["nation"]).unwrap().contains("\"customers\".nation"));
    }

    #[test]
    fn a_cte_named_like_a_referenced_product_is_refused() {
        assert!(rewritten("WITH x AS (SELECT 1) SELECT * FROM x", &[]).is_ok());
        let refused =
            rewritten("WITH nation AS (SELECT 1) SELECT * FROM nation, (SELECT * FROM nation) t", &["nation"]);
        assert!(refused.unwrap_err().to_string().contains("names both a CTE"));
    }
}
