//! The last step before SQL reaches PostgreSQL: product names become table names.
//!
//! Federated sub-plans are unparsed with the *mesh's* names (`sales.lineitem`)
//! and only the finished statement is renamed (`"tpch"."lineitem" AS
//! "lineitem"`). datafusion-federation can rename tables itself, but it does so
//! by rewriting the plan's column names as strings, which breaks names
//! derived from expressions (`sum(sales.lineitem.l_extendedprice * …)` no
//! longer matches the projection above it, and a sub-query's computed column
//! loses its alias). Renaming the syntax tree touches table names only.
//!
//! Also fixes what PostgreSQL refuses in otherwise valid unparsed SQL: a
//! literal constant in `GROUP BY` (DataFusion's decorrelated sub-queries group
//! by `true`), which PostgreSQL reads as a column position; and averages of
//! numerics, which PostgreSQL returns with more decimals than the column the
//! engine planned (see [`round_decimals`]).

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::error::Result;
use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, Ident, ObjectName, ObjectNamePart, Query, SelectItem, SetExpr, Statement, TableAlias,
    TableFactor, Value, ValueWithSpan, Visit, VisitMut, Visitor, VisitorMut, visit_expressions, visit_expressions_mut,
};

/// Product (domain, product) → PostgreSQL (schema, table) for the products
/// opened on one database: a statement that joins several products (of one or
/// several domains reaching the same database as the same user) is sent by the
/// first one's executor, which must know every name in it.
#[derive(Debug, Default)]
pub(crate) struct TableNames(RwLock<HashMap<(String, String), (String, String)>>);

/// The names of every database this process reaches, by connection identity
/// (`host:port/database user`: what federation groups joins by).
static DATABASES: LazyLock<Mutex<HashMap<String, Arc<TableNames>>>> = LazyLock::new(Mutex::default);

impl TableNames {
    /// The shared names of the database `identity`.
    pub(crate) fn of(identity: String) -> Arc<TableNames> {
        match DATABASES.lock() {
            Ok(mut databases) => Arc::clone(databases.entry(identity).or_default()),
            Err(_) => Arc::default(),
        }
    }

    pub(crate) fn insert(&self, product: (String, String), table: (String, String)) {
        if let Ok(mut names) = self.0.write() {
            names.insert(product, table);
        }
    }

    fn get(&self, domain: &str, product: &str) -> Option<(String, String)> {
        self.0.read().ok()?.get(&(domain.to_string(), product.to_string())).cloned()
    }
}

/// Rewrites `statement` for PostgreSQL: product names to table names, and no
/// constants in `GROUP BY`.
pub(crate) fn rewrite(names: &Arc<TableNames>, mut statement: Statement) -> Result<Statement> {
    let _ = VisitMut::visit(&mut statement, &mut Rewriter { names });
    Ok(statement)
}

struct Rewriter<'a> {
    names: &'a Arc<TableNames>,
}

impl VisitorMut for Rewriter<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, alias, .. } = factor
            && let Some((domain, product)) = last_two(name)
            && let Some((schema, table)) = self.names.get(&domain, &product)
        {
            *name = ObjectName(vec![
                ObjectNamePart::Identifier(Ident::with_quote('"', schema)),
                ObjectNamePart::Identifier(Ident::with_quote('"', table)),
            ]);
            // Columns are qualified with the product's name: keep it as the alias.
            if alias.is_none() {
                *alias = Some(TableAlias {
                    explicit: true,
                    name: Ident::with_quote('"', product),
                    columns: vec![],
                    at: None,
                });
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        requalify_through_derived_table(query);
        name_scalar_subquery_values(query);
        drop_constant_group_keys(query.body.as_mut());
        ControlFlow::Continue(())
    }
}

/// A decorrelated scalar sub-query becomes a derived table whose one computed
/// column the unparser leaves without a name, while the outer query refers to
/// it by DataFusion's name for the expression
/// (`"__scalar_sq_1"."min(supply.partsupp.ps_supplycost)"`). When a derived
/// table has exactly one unnamed computed column and the query refers to
/// exactly one of its columns that it does not name, that is the column: it
/// gets the name the outer query uses.
fn name_scalar_subquery_values(query: &mut Query) {
    let mut references: HashMap<String, HashSet<String>> = HashMap::new();
    let _ = visit_expressions(&*query, |e| {
        if let Expr::CompoundIdentifier(parts) = e
            && let [table, column] = parts.as_slice()
        {
            references.entry(table.value.clone()).or_default().insert(column.value.clone());
        }
        ControlFlow::<()>::Continue(())
    });
    let SetExpr::Select(select) = query.body.as_mut() else { return };
    for from in &mut select.from {
        let factors = std::iter::once(&mut from.relation).chain(from.joins.iter_mut().map(|j| &mut j.relation));
        for factor in factors {
            let TableFactor::Derived { subquery, alias: Some(alias), .. } = factor else { continue };
            let Some(used) = references.get(&alias.name.value) else { continue };
            let SetExpr::Select(inner) = subquery.body.as_mut() else { continue };
            let named: HashSet<&str> = inner.projection.iter().filter_map(output_name).collect();
            let unmatched: Vec<&String> = used.iter().filter(|c| !named.contains(c.as_str())).collect();
            let unnamed: Vec<usize> = inner
                .projection
                .iter()
                .enumerate()
                .filter(|(_, item)| matches!(item, SelectItem::UnnamedExpr(_)) && output_name(item).is_none())
                .map(|(i, _)| i)
                .collect();
            if let ([column], [i]) = (unmatched.as_slice(), unnamed.as_slice())
                && let SelectItem::UnnamedExpr(expr) = &inner.projection[*i]
            {
                inner.projection[*i] =
                    SelectItem::ExprWithAlias { expr: expr.clone(), alias: Ident::with_quote('"', column.as_str()) };
            }
        }
    }
}

/// The unparser sometimes wraps joined tables in a derived table
/// (`FROM (SELECT "part"."p_name", … FROM … JOIN …) AS "derived_projection"`)
/// but keeps qualifying columns above it with the inner tables' names
/// (`WHERE "part"."p_name" LIKE …`), which are not in scope there. When a
/// query reads from one derived table only, a qualifier that names a table
/// inside it (and nothing in scope) is replaced by the derived table's alias.
fn requalify_through_derived_table(query: &mut Query) {
    let SetExpr::Select(select) = query.body.as_mut() else { return };
    let [from] = select.from.as_mut_slice() else { return };
    if !from.joins.is_empty() {
        return;
    }
    let TableFactor::Derived { subquery, alias: Some(alias), .. } = &mut from.relation else { return };
    let mut inner_tables = HashSet::new();
    let _ = Visit::visit(subquery.as_ref(), &mut TableNamesIn(&mut inner_tables));
    inner_tables.remove(&alias.name.value);
    if inner_tables.is_empty() {
        return;
    }
    // The same column of two tables (`n1.n_name`, `n2.n_name`) would be
    // ambiguous above the derived table: such columns get distinct names.
    let mut renamed: HashMap<(String, String), String> = HashMap::new();
    if let SetExpr::Select(inner) = subquery.body.as_mut() {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for item in &inner.projection {
            if let Some(name) = output_name(item) {
                *counts.entry(name.to_string()).or_default() += 1;
            }
        }
        for item in &mut inner.projection {
            if let SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) = item
                && let [table, column] = parts.as_slice()
                && counts.get(&column.value).is_some_and(|n| *n > 1)
            {
                let name = format!("{}.{}", table.value, column.value);
                renamed.insert((table.value.clone(), column.value.clone()), name.clone());
                *item = SelectItem::ExprWithAlias {
                    expr: Expr::CompoundIdentifier(parts.clone()),
                    alias: Ident::with_quote('"', name),
                };
            }
        }
    }
    // A renamed column keeps its name in this query's output.
    for item in &mut select.projection {
        if let SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) = item
            && let [table, column] = parts.as_slice()
            && renamed.contains_key(&(table.value.clone(), column.value.clone()))
        {
            let alias = Ident::with_quote('"', column.value.as_str());
            *item = SelectItem::ExprWithAlias { expr: Expr::CompoundIdentifier(parts.clone()), alias };
        }
    }
    let derived = alias.name.clone();
    let mut requalify = |e: &mut Expr| {
        if let Expr::CompoundIdentifier(parts) = e
            && let [table, column] = parts.as_mut_slice()
            && inner_tables.contains(&table.value)
        {
            if let Some(name) = renamed.get(&(table.value.clone(), column.value.clone())) {
                *column = Ident::with_quote('"', name.as_str());
            }
            *table = derived.clone();
        }
        ControlFlow::<()>::Continue(())
    };
    let _ = visit_expressions_mut(&mut select.projection, &mut requalify);
    let _ = visit_expressions_mut(&mut select.selection, &mut requalify);
    let _ = visit_expressions_mut(&mut select.group_by, &mut requalify);
    let _ = visit_expressions_mut(&mut select.having, &mut requalify);
    let _ = visit_expressions_mut(&mut query.order_by, &mut requalify);
}

/// Collects the names (aliases, else table names) relations are known by.
struct TableNamesIn<'a>(&'a mut HashSet<String>);

impl Visitor for TableNamesIn<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table { alias: Some(a), .. } | TableFactor::Derived { alias: Some(a), .. } => {
                self.0.insert(a.name.value.clone());
            }
            TableFactor::Table { name, alias: None, .. } => {
                if let Some(last) = name.0.last().and_then(|p| p.as_ident()) {
                    self.0.insert(last.value.clone());
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// The column name a select item produces, when it is evident.
fn output_name(item: &SelectItem) -> Option<&str> {
    match item {
        SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.as_str()),
        SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(i.value.as_str()),
        SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => parts.last().map(|i| i.value.as_str()),
        _ => None,
    }
}

/// `(domain, product)` of `[catalog.]domain.product`.
fn last_two(name: &ObjectName) -> Option<(String, String)> {
    let parts: Vec<&str> = name.0.iter().filter_map(|p| p.as_ident()).map(|i| i.value.as_str()).collect();
    match parts.as_slice() {
        [.., domain, product] => Some((domain.to_string(), product.to_string())),
        _ => None,
    }
}

/// Removes literal constants from `GROUP BY` lists that have other keys
/// (grouping by a constant as well changes nothing). A list of constants only
/// is left alone: removing it would turn zero groups into one.
fn drop_constant_group_keys(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            if let GroupByExpr::Expressions(keys, _) = &mut select.group_by
                && keys.iter().any(|k| !is_constant(k))
            {
                keys.retain(|k| !is_constant(k));
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            drop_constant_group_keys(left);
            drop_constant_group_keys(right);
        }
        _ => {}
    }
}

fn is_constant(expr: &Expr) -> bool {
    match expr {
        Expr::Value(ValueWithSpan { value: Value::Number(..), .. }) => false, // a position: keep
        Expr::Value(_) => true,
        Expr::Nested(inner) => is_constant(inner),
        _ => false,
    }
}

/// The reader converts PostgreSQL numerics to the decimal type the engine
/// planned and refuses to drop digits, but `avg` of a numeric (or a division)
/// comes back with about 16 decimals where the engine planned fewer. A
/// statement that averages or divides and returns decimals is wrapped so that PostgreSQL rounds each
/// decimal column to its planned type, as the engine would have. The wrapper
/// only renames and casts: the inner statement's ORDER BY and LIMIT still decide
/// the rows and their order.
pub(crate) fn round_decimals(sql: &str, schema: &Schema) -> Option<String> {
    let decimal = |t: &DataType| match t {
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => Some((*p, *s)),
        _ => None,
    };
    let lower = sql.to_ascii_lowercase();
    let computes_scale = lower.contains("avg(") || lower.contains(" / ");
    if !computes_scale || !schema.fields().iter().any(|f| decimal(f.data_type()).is_some()) {
        return None;
    }
    let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let columns: Vec<String> = (0..schema.fields().len()).map(|i| format!("c{i}")).collect();
    let select: Vec<String> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| match decimal(f.data_type()) {
            Some((p, s)) => format!("CAST(q.c{i} AS NUMERIC({p}, {s})) AS {}", quote(f.name())),
            None => format!("q.c{i} AS {}", quote(f.name())),
        })
        .collect();
    Some(format!("SELECT {} FROM ({sql}) AS q({})", select.join(", "), columns.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewritten(sql: &str) -> String {
        let names = Arc::new(TableNames::default());
        names.insert(("sales".into(), "lineitem".into()), ("tpch".into(), "lineitem".into()));
        names.insert(("ops".into(), "invoices".into()), ("billing".into(), "invoices_2024".into()));
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0);
        rewrite(&names, statement).unwrap().to_string()
    }

    #[test]
    fn product_names_become_table_names_and_stay_as_aliases() {
        assert_eq!(
            rewritten(
                r#"SELECT "invoices"."id" FROM "ops"."invoices" JOIN "mesh"."sales"."lineitem" AS "l" ON "l"."x" = "invoices"."id""#
            ),
            r#"SELECT "invoices"."id" FROM "billing"."invoices_2024" AS "invoices" JOIN "tpch"."lineitem" AS "l" ON "l"."x" = "invoices"."id""#
        );
        // Names in sub-queries too; unknown tables are left as they are.
        assert_eq!(
            rewritten(r#"SELECT * FROM "other"."t" WHERE EXISTS (SELECT 1 FROM "sales"."lineitem")"#),
            r#"SELECT * FROM "other"."t" WHERE EXISTS (SELECT 1 FROM "tpch"."lineitem" AS "lineitem")"#
        );
    }

    #[test]
    fn a_scalar_sub_query_value_gets_the_name_the_outer_query_uses() {
        assert_eq!(
            rewritten(
                r#"SELECT "t"."a" FROM "t" LEFT JOIN (SELECT min("u"."v"), "u"."k", true AS "__always_true" FROM "u" GROUP BY "u"."k") AS "__scalar_sq_1" ON "t"."k" = "__scalar_sq_1"."k" WHERE "t"."a" = "__scalar_sq_1"."min(d.u.v)""#
            ),
            r#"SELECT "t"."a" FROM "t" LEFT JOIN (SELECT min("u"."v") AS "min(d.u.v)", "u"."k", true AS "__always_true" FROM "u" GROUP BY "u"."k") AS "__scalar_sq_1" ON "t"."k" = "__scalar_sq_1"."k" WHERE "t"."a" = "__scalar_sq_1"."min(d.u.v)""#
        );
    }

    #[test]
    fn columns_above_a_derived_table_are_qualified_with_its_alias() {
        assert_eq!(
            rewritten(
                r#"SELECT "part"."p_name", "d"."x" FROM (SELECT "part"."p_name", "lineitem"."x" FROM "sales"."lineitem" JOIN "part" ON "part"."k" = "lineitem"."k") AS "d" WHERE "part"."p_name" LIKE '%green%' ORDER BY "part"."p_name""#
            ),
            r#"SELECT "d"."p_name", "d"."x" FROM (SELECT "part"."p_name", "lineitem"."x" FROM "tpch"."lineitem" AS "lineitem" JOIN "part" ON "part"."k" = "lineitem"."k") AS "d" WHERE "d"."p_name" LIKE '%green%' ORDER BY "d"."p_name""#
        );
    }

    #[test]
    fn the_same_column_of_two_joined_tables_keeps_apart_above_a_derived_table() {
        assert_eq!(
            rewritten(
                r#"SELECT "n1"."n_name", "n2"."n_name" FROM (SELECT "n1"."n_name", "n2"."n_name", "c"."k" FROM "n" AS "n1" JOIN "n" AS "n2" ON "n1"."k" = "n2"."k" JOIN "c" ON "c"."k" = "n1"."k") AS "d" WHERE "n2"."n_name" = 'X'"#
            ),
            r#"SELECT "d"."n1.n_name" AS "n_name", "d"."n2.n_name" AS "n_name" FROM (SELECT "n1"."n_name" AS "n1.n_name", "n2"."n_name" AS "n2.n_name", "c"."k" FROM "n" AS "n1" JOIN "n" AS "n2" ON "n1"."k" = "n2"."k" JOIN "c" ON "c"."k" = "n1"."k") AS "d" WHERE "d"."n2.n_name" = 'X'"#
        );
    }

    #[test]
    fn averaged_decimals_are_rounded_to_their_planned_scale() {
        use datafusion::arrow::datatypes::Field;
        let schema = Schema::new(vec![
            Field::new("flag", DataType::Utf8, true),
            Field::new("avg_qty", DataType::Decimal128(19, 6), true),
        ]);
        assert_eq!(
            round_decimals("SELECT flag, avg(q) FROM t GROUP BY flag ORDER BY flag", &schema).unwrap(),
            r#"SELECT q.c0 AS "flag", CAST(q.c1 AS NUMERIC(19, 6)) AS "avg_qty" FROM (SELECT flag, avg(q) FROM t GROUP BY flag ORDER BY flag) AS q(c0, c1)"#
        );
        assert!(round_decimals("SELECT sum(q) FROM t", &schema).is_none());
    }

    #[test]
    fn constant_group_keys_are_dropped_when_other_keys_remain() {
        assert_eq!(
            rewritten(
                r#"SELECT "a", true AS "t" FROM (SELECT "a" FROM "x" GROUP BY "a", true) AS s GROUP BY "a", 'k'"#
            ),
            r#"SELECT "a", true AS "t" FROM (SELECT "a" FROM "x" GROUP BY "a") AS s GROUP BY "a""#
        );
        assert_eq!(rewritten("SELECT count(*) FROM x GROUP BY true"), "SELECT count(*) FROM x GROUP BY true");
        assert_eq!(rewritten("SELECT a, count(*) FROM x GROUP BY 1"), "SELECT a, count(*) FROM x GROUP BY 1");
    }
}
