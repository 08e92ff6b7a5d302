//! Bounds on the size and shape of a statement, checked right after parsing
//! and before anything else walks the tree.
//!
//! The parser builds left-deep chains (`1 + 1 + … + 1`, long `OR` lists)
//! iteratively, so a few kilobytes of text make a tree thousands of levels
//! deep; everything after it (planning, optimising, even printing) recurses on
//! that tree and its cost grows faster than its size. Refusing such trees here,
//! with a message naming the limit, keeps planning fast and safe.

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};

use super::LimitsConfig;
use crate::EngineError;

/// Refuses a statement whose text is longer than `limits.max_sql_bytes`.
pub(crate) fn check_text(sql: &str, limits: &LimitsConfig) -> Result<(), EngineError> {
    if sql.len() > limits.max_sql_bytes {
        return Err(EngineError::Sql(format!(
            "the statement is {} bytes long, over the limit of {} bytes (limits.max_sql_bytes)",
            sql.len(),
            limits.max_sql_bytes
        )));
    }
    Ok(())
}

/// Refuses a parsed statement whose expressions nest deeper than
/// `limits.max_expression_depth` or that has an `IN` list longer than
/// `limits.max_in_list`. The walk stops at the first excess, so its own depth
/// is bounded by the limit.
pub(crate) fn check_statement(statement: &DFStatement, limits: &LimitsConfig) -> Result<(), EngineError> {
    let mut shape = Shape { depth: 0, limits };
    let flow = match statement {
        DFStatement::Statement(inner) => inner.visit(&mut shape),
        DFStatement::Explain(explain) => return check_statement(&explain.statement, limits),
        // Extension statements are refused as writes before they are planned.
        _ => ControlFlow::Continue(()),
    };
    match flow {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct Shape<'a> {
    depth: usize,
    limits: &'a LimitsConfig,
}

impl Visitor for Shape<'_> {
    type Break = EngineError;

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Self::Break> {
        self.depth += 1;
        if self.depth > self.limits.max_expression_depth {
            return ControlFlow::Break(EngineError::Sql(format!(
                "the statement nests expressions more than {} levels deep (limits.max_expression_depth); a chain \
                 such as a OR b OR … counts one level per term: use IN (…) lists or split the query",
                self.limits.max_expression_depth
            )));
        }
        if let Expr::InList { list, .. } = expr
            && list.len() > self.limits.max_in_list
        {
            return ControlFlow::Break(EngineError::Sql(format!(
                "an IN list has {} items, over the limit of {} (limits.max_in_list); join with a product or a \
                 VALUES list instead",
                list.len(),
                self.limits.max_in_list
            )));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<Self::Break> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// Whether `sql` is a single `SELECT` of expressions that reads nothing (no
/// `FROM`, sub-query, set operation, CTE or `VALUES`): such statements
/// (`SELECT 1`, `SELECT version()`) run in a lane of their own rather than
/// queue behind heavy queries. Decided on tokens, without parsing, and
/// conservatively: anything else is not.
pub(crate) fn reads_nothing(sql: &str) -> bool {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if sql.len() > 4096 {
        return false;
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return false };
    let mut words = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_)));
    if !matches!(words.next(), Some(Token::Word(w)) if w.keyword == Keyword::SELECT && w.quote_style.is_none()) {
        return false;
    }
    words.all(|t| match t {
        Token::Word(w) if w.quote_style.is_none() => !matches!(
            w.keyword,
            Keyword::SELECT
                | Keyword::FROM
                | Keyword::WITH
                | Keyword::VALUES
                | Keyword::UNION
                | Keyword::EXCEPT
                | Keyword::INTERSECT
                | Keyword::TABLE
                | Keyword::UNNEST
        ),
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParser;

    use super::*;

    fn check(sql: &str, limits: &LimitsConfig) -> Result<(), EngineError> {
        check_text(sql, limits)?;
        let statement = DFParser::parse_sql(sql).unwrap().pop_front().unwrap();
        check_statement(&statement, limits)
    }

    fn chain(op: &str, terms: usize) -> String {
        format!("SELECT {}", vec!["1"; terms].join(op))
    }

    #[test]
    fn chains_and_lists_are_measured_against_the_limits() {
        let limits = LimitsConfig { max_expression_depth: 100, max_in_list: 10, ..LimitsConfig::default() };
        assert!(check(&chain(" + ", 90), &limits).is_ok());
        let err = check(&chain(" + ", 150), &limits).unwrap_err();
        assert!(err.to_string().contains("limits.max_expression_depth"), "{err}");
        let err = check(&chain(" OR ", 150), &limits).unwrap_err();
        assert!(err.to_string().contains("limits.max_expression_depth"), "{err}");
        // Inside EXPLAIN and sub-queries too.
        let err =
            check(&format!("EXPLAIN SELECT * FROM (SELECT {} AS x)", vec!["1"; 150].join("||")), &limits).unwrap_err();
        assert!(err.to_string().contains("limits.max_expression_depth"), "{err}");
        let list = |n: usize| format!("SELECT 1 WHERE 1 IN ({})", vec!["1"; n].join(","));
        assert!(check(&list(10), &limits).is_ok());
        let err = check(&list(11), &limits).unwrap_err();
        assert!(err.to_string().contains("limits.max_in_list"), "{err}");
    }

    #[test]
    fn long_text_is_refused_before_parsing() {
        let limits = LimitsConfig { max_sql_bytes: 64, ..LimitsConfig::default() };
        let err = check_text(&format!("SELECT 1 -- {}", "x".repeat(100)), &limits).unwrap_err();
        assert!(err.to_string().contains("limits.max_sql_bytes"), "{err}");
    }

    #[test]
    fn only_statements_that_read_nothing_take_the_constant_lane() {
        for sql in ["SELECT 1", "select 1 AS one", "SELECT version(), now()", "SELECT $1 + 1", " SELECT 'from'"] {
            assert!(reads_nothing(sql), "{sql}");
        }
        for sql in [
            "SELECT * FROM sales.orders",
            "SELECT (SELECT count(*) FROM sales.orders)",
            "WITH t AS (SELECT 1) SELECT * FROM t",
            "SELECT 1 UNION ALL SELECT 2",
            "VALUES (1)",
            "EXPLAIN SELECT 1",
            "SELECT extract(year FROM now())",
            "SELECT unnest([1, 2])",
            "SHOW TABLES",
            "SELEC 1",
        ] {
            assert!(!reads_nothing(sql), "{sql}");
        }
    }
}
