//! Join keys sent to PostgreSQL.
//!
//! When a hash join's build side is read in the engine (a Parquet or Delta
//! product, another database) and its probe side is a federated PostgreSQL
//! statement, DataFusion derives a *dynamic filter* from the build side once
//! it is collected: the keys' bounds (`k >= min AND k <= max`) and, for a
//! small build side, the keys themselves (`k IN (…)`, up to
//! `datafusion.optimizer.hash_join_inlist_pushdown_max_distinct_values`
//! keys, 150 by default). datafusion-federation hands these filters to the
//! executor; [`narrowed`] turns what of them is plain SQL into a `WHERE`
//! around the federated statement, so PostgreSQL returns only the rows the
//! join can match instead of the whole table.
//!
//! The filter is read when the statement's stream is first polled: a hash
//! join polls its probe side only after its build side is complete, so the
//! filter then holds its final keys. A filter that is not complete yet (a
//! top-k bound still at `true`) narrows nothing. Only conjunctions of
//! comparisons and `IN` lists of a column against constants are translated;
//! any other part (hash lookups for large build sides, expressions) is left
//! out, which only makes the filter weaker: the join still checks every row,
//! so the answer never depends on what was sent. A predicate longer than
//! [`MAX_PREDICATE_BYTES`] is sent as its bounds only, and without any
//! translatable part the statement is sent unchanged.
//!
//! The keys are values the querying principal reads on the build side (after
//! that product's own policies). They appear in the statement text the
//! database receives, as any literal of the query does.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Expr, Operator, binary_expr, lit};
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, Column as ColumnExpr, DynamicFilterPhysicalExpr, InListExpr, Literal,
};
use datafusion::physical_plan::PhysicalExpr;
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::PostgreSqlDialect;

/// The longest key predicate sent (in bytes of SQL); beyond it only the keys'
/// bounds are sent, so that a large IN list cannot grow statements without
/// limit.
pub(crate) const MAX_PREDICATE_BYTES: usize = 64 * 1024;

/// `query` narrowed by what `filters` (pushed down at run time onto the
/// statement whose output is `schema`) say about the rows needed, or `None`
/// when they say nothing that can be written in SQL.
pub(crate) fn narrowed(query: &str, schema: &Schema, filters: &[Arc<dyn PhysicalExpr>]) -> Option<String> {
    let predicate = key_predicate(schema, filters, true)
        .filter(|p| p.len() <= MAX_PREDICATE_BYTES)
        .or_else(|| key_predicate(schema, filters, false).filter(|p| p.len() <= MAX_PREDICATE_BYTES))?;
    let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let columns: Vec<String> = (0..schema.fields().len()).map(|i| format!("k{i}")).collect();
    let select: Vec<String> =
        schema.fields().iter().enumerate().map(|(i, f)| format!("agora_keys.k{i} AS {}", quote(f.name()))).collect();
    Some(format!("SELECT {} FROM ({query}) AS agora_keys({}) WHERE {predicate}", select.join(", "), columns.join(", ")))
}

/// The SQL of the translatable part of `filters` over columns `k0…kn`, with
/// or without `IN` lists.
fn key_predicate(schema: &Schema, filters: &[Arc<dyn PhysicalExpr>], with_lists: bool) -> Option<String> {
    let parts: Vec<Expr> = filters.iter().filter_map(|f| translate(f, schema, with_lists)).collect();
    let predicate = parts.into_iter().reduce(|a, b| binary_expr(a, Operator::And, b))?;
    let unparser = Unparser::new(&PostgreSqlDialect {});
    unparser.expr_to_sql(&predicate).ok().map(|sql| sql.to_string())
}

/// A logical expression implied by `expr` (every row it keeps, the result
/// keeps), or `None` when no part of it can be sent.
fn translate(expr: &Arc<dyn PhysicalExpr>, schema: &Schema, with_lists: bool) -> Option<Expr> {
    if let Some(dynamic) = expr.downcast_ref::<DynamicFilterPhysicalExpr>() {
        let current = dynamic.current().ok()?;
        return translate(&current, schema, with_lists);
    }
    if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
        return match binary.op() {
            // A conjunction keeps every part that can be sent.
            Operator::And => {
                match (translate(binary.left(), schema, with_lists), translate(binary.right(), schema, with_lists)) {
                    (Some(l), Some(r)) => Some(l.and(r)),
                    (Some(one), None) | (None, Some(one)) => Some(one),
                    (None, None) => None,
                }
            }
            // A disjunction only when both sides can be.
            Operator::Or => {
                Some(translate(binary.left(), schema, with_lists)?.or(translate(binary.right(), schema, with_lists)?))
            }
            op @ (Operator::Eq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq) => {
                match (column(binary.left(), schema), constant(binary.right())) {
                    (Some(c), Some(v)) => Some(binary_expr(c, *op, v)),
                    _ => None,
                }
            }
            _ => None,
        };
    }
    if let Some(list) = expr.downcast_ref::<InListExpr>() {
        if !with_lists || list.negated() {
            return None;
        }
        let values: Option<Vec<Expr>> = list.list().iter().map(constant).collect();
        return Some(column(list.expr(), schema)?.in_list(values?, false));
    }
    // A partitioned join's filter: a branch per partition of the build side.
    // A row matches at most its own partition's branch, so the branches
    // together (OR) keep every row the join can match.
    if let Some(case) = expr.downcast_ref::<CaseExpr>() {
        let mut branches = Vec::new();
        for (_, then) in case.when_then_expr() {
            match constant_bool(then) {
                Some(false) => continue,
                Some(true) => return None,
                None => branches.push(translate(then, schema, with_lists)?),
            }
        }
        if let Some(otherwise) = case.else_expr()
            && constant_bool(otherwise) != Some(false)
        {
            branches.push(translate(otherwise, schema, with_lists)?);
        }
        return Some(branches.into_iter().reduce(Expr::or).unwrap_or(lit(false)));
    }
    // No rows at all (an empty build side).
    if constant_bool(expr) == Some(false) {
        return Some(lit(false));
    }
    None
}

/// The statement's output column `expr` refers to, as `k<index>`.
fn column(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<Expr> {
    let column = expr.downcast_ref::<ColumnExpr>()?;
    // The filter was remapped onto this statement's output; a name that does
    // not match is a filter meant for something else.
    (schema.fields().get(column.index())?.name() == column.name())
        .then(|| Expr::Column(Column::from_name(format!("k{}", column.index()))))
}

/// A non-null constant (a NULL key never matches, and `= NULL` would keep nothing).
fn constant(expr: &Arc<dyn PhysicalExpr>) -> Option<Expr> {
    let literal = expr.downcast_ref::<Literal>()?;
    (!literal.value().is_null()).then(|| Expr::Literal(literal.value().clone(), None))
}

fn constant_bool(expr: &Arc<dyn PhysicalExpr>) -> Option<bool> {
    match expr.downcast_ref::<Literal>()?.value() {
        ScalarValue::Boolean(Some(b)) => Some(*b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::physical_expr::expressions::{col, lit};

    fn schema() -> Schema {
        Schema::new(vec![Field::new("o_orderkey", DataType::Int64, false), Field::new("name", DataType::Utf8, true)])
    }

    fn key() -> Arc<dyn PhysicalExpr> {
        col("o_orderkey", &schema()).unwrap()
    }

    fn bounds(min: i64, max: i64) -> Arc<dyn PhysicalExpr> {
        let ge = Arc::new(BinaryExpr::new(key(), Operator::GtEq, lit(min))) as Arc<dyn PhysicalExpr>;
        let le = Arc::new(BinaryExpr::new(key(), Operator::LtEq, lit(max))) as Arc<dyn PhysicalExpr>;
        Arc::new(BinaryExpr::new(ge, Operator::And, le))
    }

    fn in_list(values: &[i64]) -> Arc<dyn PhysicalExpr> {
        let list = values.iter().map(|v| lit(*v)).collect();
        Arc::new(InListExpr::try_new(key(), list, false, &schema()).unwrap())
    }

    fn dynamic(inner: Arc<dyn PhysicalExpr>) -> Arc<dyn PhysicalExpr> {
        let filter = DynamicFilterPhysicalExpr::new(vec![key()], lit(true));
        filter.update(inner).unwrap();
        Arc::new(filter)
    }

    #[test]
    fn a_join_filters_keys_and_bounds_become_a_where_around_the_statement() {
        let filter = Arc::new(BinaryExpr::new(bounds(3, 7), Operator::And, in_list(&[3, 5, 7]))) as _;
        let sql = narrowed("SELECT a, b FROM t", &schema(), &[dynamic(filter)]).unwrap();
        assert_eq!(
            sql,
            "SELECT agora_keys.k0 AS \"o_orderkey\", agora_keys.k1 AS \"name\" FROM (SELECT a, b FROM t) AS agora_keys(k0, k1) \
             WHERE (((\"k0\" >= 3) AND (\"k0\" <= 7)) AND \"k0\" IN (3, 5, 7))"
        );
    }

    #[test]
    fn a_filter_still_at_true_or_made_of_hash_lookups_narrows_nothing() {
        let pending = Arc::new(DynamicFilterPhysicalExpr::new(vec![key()], lit(true))) as Arc<dyn PhysicalExpr>;
        assert_eq!(narrowed("SELECT 1", &schema(), &[pending]), None);
        // An expression over the key (a mask, a hash) is not a column.
        let hashed = Arc::new(BinaryExpr::new(
            Arc::new(BinaryExpr::new(key(), Operator::Plus, lit(1i64))),
            Operator::Eq,
            lit(2i64),
        )) as Arc<dyn PhysicalExpr>;
        assert_eq!(narrowed("SELECT 1", &schema(), &[dynamic(hashed)]), None);
    }

    #[test]
    fn untranslatable_conjuncts_are_left_out_and_disjunctions_need_both_sides() {
        let odd = Arc::new(BinaryExpr::new(key(), Operator::Modulo, lit(2i64))) as Arc<dyn PhysicalExpr>;
        let odd = Arc::new(BinaryExpr::new(odd, Operator::Eq, lit(1i64))) as Arc<dyn PhysicalExpr>;
        let and = Arc::new(BinaryExpr::new(Arc::clone(&odd), Operator::And, in_list(&[1]))) as _;
        assert!(narrowed("SELECT 1", &schema(), &[dynamic(and)]).unwrap().ends_with("WHERE \"k0\" IN (1)"));
        let or = Arc::new(BinaryExpr::new(odd, Operator::Or, in_list(&[1]))) as _;
        assert_eq!(narrowed("SELECT 1", &schema(), &[dynamic(or)]), None);
    }

    #[test]
    fn a_partitioned_join_sends_every_partitions_keys() {
        let hash = Arc::new(BinaryExpr::new(key(), Operator::Modulo, lit(2i64))) as Arc<dyn PhysicalExpr>;
        let case = CaseExpr::try_new(
            Some(hash),
            vec![(lit(0i64), in_list(&[2, 4])), (lit(1i64), lit(false))],
            Some(lit(false)),
        )
        .unwrap();
        let sql = narrowed("SELECT 1", &schema(), &[dynamic(Arc::new(case))]).unwrap();
        assert!(sql.ends_with("WHERE \"k0\" IN (2, 4)"), "{sql}");
        // An empty build side: nothing can match.
        let sql = narrowed("SELECT 1", &schema(), &[dynamic(lit(false))]).unwrap();
        assert!(sql.ends_with("WHERE false"), "{sql}");
    }

    #[test]
    fn strings_are_quoted_and_too_long_lists_fall_back_to_bounds() {
        let name = col("name", &schema()).unwrap();
        let list = InListExpr::try_new(name, vec![lit("O'Brien"), lit("x")], false, &schema()).unwrap();
        let sql = narrowed("SELECT 1", &schema(), &[dynamic(Arc::new(list))]).unwrap();
        assert!(sql.ends_with("WHERE \"k1\" IN ('O''Brien', 'x')"), "{sql}");
        let many: Vec<i64> = (0..20_000).collect();
        let filter = Arc::new(BinaryExpr::new(bounds(0, 19_999), Operator::And, in_list(&many))) as _;
        let sql = narrowed("SELECT 1", &schema(), &[dynamic(filter)]).unwrap();
        assert!(sql.ends_with("WHERE ((\"k0\" >= 0) AND (\"k0\" <= 19999))"), "{sql}");
        // A column the filter names but the statement does not have.
        let stranger = Arc::new(ColumnExpr::new("other", 0)) as Arc<dyn PhysicalExpr>;
        let eq = Arc::new(BinaryExpr::new(stranger, Operator::Eq, lit(1i64))) as _;
        assert_eq!(narrowed("SELECT 1", &schema(), &[dynamic(eq)]), None);
    }
}
