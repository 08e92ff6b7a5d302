//! The keys PostgreSQL declares on a product's table: its primary key and
//! the foreign keys between it and other tables. Catalog browsers (JDBC and
//! ODBC tools, Power BI) relate tables by them; the engine maps the tables
//! back to products and shows a key only to a principal who may read every
//! column of it.
//!
//! Read from the catalogue at each call (`pg_index`, `pg_constraint`), so a
//! key added or dropped in PostgreSQL shows at once.

use crate::error::ConnectorError;
use crate::postgres::PostgresSource;

/// What a foreign key does to referencing rows when the referenced row is
/// updated or deleted, numbered as Flight SQL's `UpdateDeleteRules` (and
/// JDBC's `importedKey*` constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    /// `ON … CASCADE`.
    Cascade = 0,
    /// `ON … RESTRICT`.
    Restrict = 1,
    /// `ON … SET NULL`.
    SetNull = 2,
    /// `ON … NO ACTION` (PostgreSQL's default).
    NoAction = 3,
    /// `ON … SET DEFAULT`.
    SetDefault = 4,
}

impl KeyRule {
    /// The rule of a `pg_constraint.confupdtype` / `confdeltype` code.
    fn of_code(code: &str) -> KeyRule {
        match code {
            "c" => KeyRule::Cascade,
            "r" => KeyRule::Restrict,
            "n" => KeyRule::SetNull,
            "d" => KeyRule::SetDefault,
            _ => KeyRule::NoAction,
        }
    }
}

/// A foreign key between two PostgreSQL tables, by their PostgreSQL names.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKey {
    /// The constraint's name.
    pub name: String,
    /// The referencing table, `(schema, table)`.
    pub fk_table: (String, String),
    /// Its columns, in key order.
    pub fk_columns: Vec<String>,
    /// The referenced table, `(schema, table)`.
    pub pk_table: (String, String),
    /// The referenced columns, in the same order.
    pub pk_columns: Vec<String>,
    /// The name of the referenced table's key (its unique index).
    pub pk_name: Option<String>,
    /// What an update of the referenced row does.
    pub update_rule: KeyRule,
    /// What a deletion of the referenced row does.
    pub delete_rule: KeyRule,
}

/// `"schema"."table"`, for `to_regclass`.
fn regclass(schema: &str, table: &str) -> String {
    let ident = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    format!("{}.{}", ident(schema), ident(table))
}

impl PostgresSource {
    /// The columns of the table's primary key in key order; none for a view
    /// or a table without one.
    pub async fn primary_key(&self) -> Result<Vec<String>, ConnectorError> {
        let pool = self.connection.pool().await?;
        let checkout = pool.connect_direct().await.map_err(|e| self.connection.unavailable(e.to_string()))?;
        let sql = "SELECT a.attname::text FROM pg_index i \
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                   WHERE i.indrelid = to_regclass($1) AND i.indisprimary \
                   ORDER BY array_position(i.indkey::int2[], a.attnum)";
        let name = regclass(&self.schema, &self.table);
        let rows = checkout.conn.query(sql, &[&name]).await.map_err(|e| self.connection.unavailable(e.to_string()))?;
        let unexpected = |e: tokio_postgres::Error| self.connection.unavailable(format!("reading a key: {e}"));
        rows.iter().map(|r| r.try_get::<_, String>(0).map_err(unexpected)).collect()
    }

    /// The foreign keys the table takes part in, referencing or referenced,
    /// ordered by constraint name.
    pub async fn foreign_keys(&self) -> Result<Vec<ForeignKey>, ConnectorError> {
        let pool = self.connection.pool().await?;
        let checkout = pool.connect_direct().await.map_err(|e| self.connection.unavailable(e.to_string()))?;
        let columns = |keys: &str, table: &str| {
            format!(
                "ARRAY(SELECT a.attname::text FROM unnest(c.{keys}) WITH ORDINALITY AS k(attnum, position) \
                 JOIN pg_attribute a ON a.attrelid = c.{table} AND a.attnum = k.attnum ORDER BY k.position)"
            )
        };
        let sql = format!(
            "SELECT c.conname::text, fn.nspname::text, fc.relname::text, {}, pn.nspname::text, pc.relname::text, {}, \
             (SELECT ic.relname::text FROM pg_class ic WHERE ic.oid = c.conindid), \
             c.confupdtype::text, c.confdeltype::text \
             FROM pg_constraint c \
             JOIN pg_class fc ON fc.oid = c.conrelid JOIN pg_namespace fn ON fn.oid = fc.relnamespace \
             JOIN pg_class pc ON pc.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace \
             WHERE c.contype = 'f' AND (c.conrelid = to_regclass($1) OR c.confrelid = to_regclass($1)) \
             ORDER BY c.conname",
            columns("conkey", "conrelid"),
            columns("confkey", "confrelid"),
        );
        let name = regclass(&self.schema, &self.table);
        let rows = checkout.conn.query(&sql, &[&name]).await.map_err(|e| self.connection.unavailable(e.to_string()))?;
        let read = |r: &tokio_postgres::Row| -> Result<ForeignKey, tokio_postgres::Error> {
            Ok(ForeignKey {
                name: r.try_get(0)?,
                fk_table: (r.try_get(1)?, r.try_get(2)?),
                fk_columns: r.try_get(3)?,
                pk_table: (r.try_get(4)?, r.try_get(5)?),
                pk_columns: r.try_get(6)?,
                pk_name: r.try_get(7)?,
                update_rule: KeyRule::of_code(r.try_get(8)?),
                delete_rule: KeyRule::of_code(r.try_get(9)?),
            })
        };
        rows.iter()
            .map(|r| read(r).map_err(|e| self.connection.unavailable(format!("reading a foreign key: {e}"))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_names_follow_postgresql_and_flight_sql() {
        assert_eq!(KeyRule::of_code("a"), KeyRule::NoAction);
        assert_eq!(KeyRule::of_code("c") as u8, 0);
        assert_eq!(KeyRule::of_code("r") as u8, 1);
        assert_eq!(KeyRule::of_code("n") as u8, 2);
        assert_eq!(KeyRule::of_code("d") as u8, 4);
        assert_eq!(regclass("public", "we\"ird"), "\"public\".\"we\"\"ird\"");
    }
}
