//! Which predicates may be evaluated below a policy barrier: those that
//! cannot fail and call no engine-only function.

use arrow::datatypes::DataType;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

/// Functions that cannot fail on any input and that every source understands.
const LEAKPROOF_FUNCTIONS: &[&str] = &[
    "lower",
    "upper",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "starts_with",
    "coalesce",
];

/// Whether a predicate can be evaluated on rows a principal may not see without
/// revealing anything: it cannot raise an error and has no side effect.
/// Comparisons, boolean logic, `IN` lists, `BETWEEN`, `LIKE`, `IS NULL` over
/// columns and literals qualify; arithmetic (overflow, division by zero), casts
/// that can fail, sub-queries and other functions do not.
pub(crate) fn is_leakproof(e: &Expr) -> bool {
    match e {
        Expr::Column(_) | Expr::Literal(..) => true,
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let op_ok = matches!(
                op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
                    | Operator::And
                    | Operator::Or
                    | Operator::IsDistinctFrom
                    | Operator::IsNotDistinctFrom
                    | Operator::LikeMatch
                    | Operator::ILikeMatch
                    | Operator::NotLikeMatch
                    | Operator::NotILikeMatch
            );
            op_ok && is_leakproof(left) && is_leakproof(right)
        }
        Expr::Not(e)
        | Expr::IsNull(e)
        | Expr::IsNotNull(e)
        | Expr::IsTrue(e)
        | Expr::IsFalse(e)
        | Expr::IsNotTrue(e)
        | Expr::IsNotFalse(e)
        | Expr::IsUnknown(e)
        | Expr::IsNotUnknown(e) => is_leakproof(e),
        Expr::Between(b) => is_leakproof(&b.expr) && is_leakproof(&b.low) && is_leakproof(&b.high),
        Expr::InList(l) => is_leakproof(&l.expr) && l.list.iter().all(is_leakproof),
        Expr::Like(l) => l.escape_char.is_none() && is_leakproof(&l.expr) && is_leakproof(&l.pattern),
        Expr::Cast(c) => infallible_cast(&c.expr, c.field.data_type()) && is_leakproof(&c.expr),
        Expr::TryCast(c) => is_leakproof(&c.expr),
        Expr::ScalarFunction(f) => LEAKPROOF_FUNCTIONS.contains(&f.name()) && f.args.iter().all(is_leakproof),
        _ => false,
    }
}

/// Casts that succeed for every value: to text, integer widening, date to
/// timestamp. A cast whose input type is unknown here is treated as fallible.
fn infallible_cast(input: &Expr, to: &DataType) -> bool {
    let from = match input {
        Expr::Literal(v, _) => v.data_type(),
        _ => return matches!(to, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View),
    };
    use DataType::*;
    matches!(to, Utf8 | LargeUtf8 | Utf8View)
        || from == *to
        || matches!(
            (&from, to),
            (Int8 | Int16 | Int32 | UInt8 | UInt16, Int32 | Int64)
                | (Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32, Int64 | Float64)
                | (Date32, Timestamp(_, _) | Date64)
                | (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View)
        )
}
