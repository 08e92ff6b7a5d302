//! The catalogue listings: GetCatalogs (the mesh), GetDbSchemas (its
//! domains), GetTables (its products and `system` tables) and GetTableTypes,
//! each only what the principal may read.

use agora_engine::{CATALOG, ProductRef, Session};
use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow_flight::Ticket;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables};
use tonic::{Request, Response, Status};

use super::AgoraFlightSqlService;
use crate::metadata::table_schema_with_metadata;
use crate::pattern::NamePattern;

impl AgoraFlightSqlService {
    /// GetCatalogs: the mesh is the one catalog.
    pub(super) async fn catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetCatalogs").await?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        let schema = builder.schema();
        self.built(schema, builder.build())
    }

    /// GetDbSchemas: the domains the principal may read.
    pub(super) async fn db_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetDbSchemas").await?;
        let session = self.session(&request);
        // The builder filters by the pattern itself (arrow's LIKE matches SQL
        // identifiers, which domain names are, as `NamePattern` does); the
        // pattern is parsed first so that an overlong one is still refused.
        pattern(query.db_schema_filter_pattern.as_deref(), "db_schema_filter_pattern")?;
        let mut builder = query.into_builder();
        for domain in session.schemas() {
            builder.append(CATALOG, &domain);
        }
        let schema = builder.schema();
        self.built(schema, builder.build())
    }

    /// GetTables: the products and `system` tables the principal may read.
    pub(super) async fn tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetTables").await?;
        let session = self.session(&request);
        let schema = query.clone().into_builder().schema();
        let batch = self.tables_batch(&session, query, TableTypeCase::of(&request)).await?;
        Ok(self.batch_stream(schema, batch))
    }

    /// GetTableTypes: products are tables, the engine's own are system tables.
    pub(super) async fn table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetTableTypes").await?;
        let case = TableTypeCase::of(&request);
        let mut builder = query.into_builder();
        builder.append(case.apply(SYSTEM_TABLE_TYPE));
        builder.append(case.apply(TABLE_TYPE));
        let schema = builder.schema();
        self.built(schema, builder.build())
    }

    /// Builds the GetTables answer: only products the patterns can match are
    /// opened, and only when their schemas are asked for.
    async fn tables_batch(
        &self,
        session: &Session,
        mut query: CommandGetTables,
        case: TableTypeCase,
    ) -> Result<RecordBatch, Status> {
        let catalog_ok = query.catalog.as_deref().is_none_or(|c| c == CATALOG);
        let schema_pattern = pattern(query.db_schema_filter_pattern.as_deref(), "db_schema_filter_pattern")?;
        let table_pattern = pattern(query.table_name_filter_pattern.as_deref(), "table_name_filter_pattern")?;
        // Table types are compared without case: clients send them as they
        // expect them back. `BASE TABLE` (SQL's information_schema name, which
        // Grafana's Flight SQL data source asks for) is a product too.
        let wanted = |kind: &str| {
            query.table_types.is_empty()
                || query.table_types.iter().any(|t| {
                    t.eq_ignore_ascii_case(kind) || (kind == TABLE_TYPE && t.eq_ignore_ascii_case(BASE_TABLE_TYPE))
                })
        };
        let (products_wanted, system_wanted) = (wanted(TABLE_TYPE), wanted(SYSTEM_TABLE_TYPE));
        let include_schema = query.include_schema;
        // The patterns are applied here, once, by the bounded matcher, not by
        // the builder: it would open every product's schema before filtering,
        // and match table types by case and without `BASE TABLE`.
        query.db_schema_filter_pattern = None;
        query.table_name_filter_pattern = None;
        query.table_types.clear();
        let mut builder = query.into_builder();
        if !catalog_ok {
            return builder.build().map_err(|e| Status::internal(e.to_string()));
        }
        // Only what the principal may read is listed, with its readable
        // columns: products, then the engine's own `system` tables.
        for domain in session.schemas() {
            let system = domain == "system";
            if !(if system { system_wanted } else { products_wanted })
                || !schema_pattern.as_ref().is_none_or(|p| p.matches(&domain))
            {
                continue;
            }
            let kind = case.apply(if system { SYSTEM_TABLE_TYPE } else { TABLE_TYPE });
            for product in session.products(&domain) {
                if !table_pattern.as_ref().is_none_or(|p| p.matches(&product)) {
                    continue;
                }
                let schema = if include_schema {
                    match session.product_schema(&ProductRef::new(&domain, &product)).await {
                        Ok(s) => {
                            let remarks = session.product_remarks(&ProductRef::new(&domain, &product));
                            table_schema_with_metadata(
                                &self.types.schema(&s),
                                CATALOG,
                                &domain,
                                &product,
                                remarks.as_ref(),
                            )
                        }
                        Err(e) => {
                            tracing::warn!(product = %format!("{domain}.{product}"), error = %e, "left out of GetTables");
                            continue;
                        }
                    }
                } else {
                    Schema::empty()
                };
                builder
                    .append(CATALOG, &domain, &product, &kind, &schema)
                    .map_err(|e| Status::internal(e.to_string()))?;
            }
        }
        builder.build().map_err(|e| Status::internal(e.to_string()))
    }
}

/// The table type of every product, as JDBC names it.
const TABLE_TYPE: &str = "TABLE";
/// SQL's name for [`TABLE_TYPE`], accepted in a table-type filter.
const BASE_TABLE_TYPE: &str = "BASE TABLE";
/// The table type of the engine's `system` tables, as JDBC names it.
const SYSTEM_TABLE_TYPE: &str = "SYSTEM TABLE";

/// How table types are spelt for a client. Flight SQL leaves the names to
/// the server and JDBC tools expect `TABLE`; sqlalchemy-adbc compares with
/// `table` and lists nothing otherwise. A client asks for lower case with the
/// header `x-agora-table-types: lowercase` (for sqlalchemy-adbc:
/// `header.x-agora-table-types=lowercase` in the URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableTypeCase {
    Upper,
    Lower,
}

impl TableTypeCase {
    /// The spelling the request's `x-agora-table-types` header asks for.
    fn of<T>(request: &Request<T>) -> Self {
        match request.metadata().get("x-agora-table-types").and_then(|v| v.to_str().ok()) {
            Some(v) if v.eq_ignore_ascii_case("lowercase") => TableTypeCase::Lower,
            _ => TableTypeCase::Upper,
        }
    }

    /// `kind` spelt this way.
    fn apply(self, kind: &str) -> String {
        match self {
            TableTypeCase::Upper => kind.to_string(),
            TableTypeCase::Lower => kind.to_ascii_lowercase(),
        }
    }
}

/// Parses an optional metadata filter pattern.
fn pattern(pattern: Option<&str>, field: &str) -> Result<Option<NamePattern>, Status> {
    pattern.map(|p| NamePattern::parse(p, field)).transpose()
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow_flight::sql::metadata::GetDbSchemasBuilder;

    use crate::pattern::NamePattern;

    /// GetDbSchemas leaves its pattern to arrow-flight's builder: on domain
    /// names (SQL identifiers) the builder's LIKE picks what `NamePattern`,
    /// which GetTables uses, picks.
    #[test]
    fn the_builders_like_picks_what_name_pattern_picks() {
        let names = ["sales", "sales_eu", "salesxeu", "system", "customers", "supply", "s", "information_schema", "_x"];
        let patterns = [
            "%",
            "",
            "sal%",
            "sal\\%",
            "sales_eu",
            "sales\\_eu",
            "s%s",
            "%a%a%e%u",
            "_",
            "s____",
            "%_",
            "\\",
            "sales\\",
            "\\s%",
            "%%y",
            "SALES",
            "%\\_%",
            "_\\x",
            "%.%",
            "s[a]%",
            "(sales)",
        ];
        for pattern in patterns {
            let matcher = NamePattern::parse(pattern, "db_schema_filter_pattern").unwrap();
            let mut expected: Vec<&str> = names.iter().copied().filter(|n| matcher.matches(n)).collect();
            expected.sort_unstable();
            let mut builder = GetDbSchemasBuilder::new(None::<String>, Some(pattern));
            for name in names {
                builder.append("mesh", name);
            }
            let batch = builder.build().unwrap();
            let listed: Vec<&str> = batch.column(1).as_string::<i32>().iter().flatten().collect();
            assert_eq!(listed, expected, "pattern {pattern:?}");
        }
    }
}
