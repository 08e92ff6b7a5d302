//! The SQL gate: what a statement must be before it is planned (a read) and
//! what a plan must not be after (a write, or a view a principal may not see).

use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SQLOptions;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement as SQLStatement;

use super::Session;
use crate::EngineError;

impl Session {
    /// Agora serves reads only, and shows a non-admin no plan form that
    /// prints statistics or metrics (see `governance::plan_view`).
    pub(super) fn check_plan(&self, plan: &LogicalPlan) -> Result<(), EngineError> {
        read_only()
            .verify_plan(plan)
            .map_err(|e| EngineError::ReadOnly(format!("Agora is read-only: {}", e.strip_backtrace())))?;
        let statistics = self.ctx.state_ref().read().config_options().explain.show_statistics;
        crate::governance::plan_view::check_plan_view(&self.viewer, plan, statistics)
    }
}

/// A parse error at the end of the statement (`SELECT * FROM`), which the
/// parser reports without a position, gets the position of the end, so
/// that every syntax error says where it is.
pub(super) fn with_end_position(err: DataFusionError, sql: &str) -> EngineError {
    let message = err.strip_backtrace();
    if !message.contains("found: EOF") || message.contains(" at Line: ") {
        return EngineError::from(err);
    }
    let line = sql.lines().count().max(1);
    let column = sql.lines().last().map(|l| l.chars().count() + 1).unwrap_or(1);
    EngineError::Sql(format!("{message} at Line: {line}, Column: {column} (the end of the statement)"))
}

/// Rewrites JDBC-style `?` placeholders as `$1`, `$2`… in order of appearance.
/// Works on tokens, so a `?` inside a string literal or comment is left alone.
pub(super) fn number_question_marks(sql: &str) -> std::borrow::Cow<'_, str> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if !sql.contains('?') {
        return sql.into();
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return sql.into() };
    if !tokens.iter().any(|t| matches!(t, Token::Placeholder(p) if p == "?")) {
        return sql.into();
    }
    let mut n = 0;
    let mut out = String::with_capacity(sql.len() + 8);
    for token in tokens {
        match token {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                out.push_str(&format!("${n}"));
            }
            other => out.push_str(&other.to_string()),
        }
    }
    out.into()
}

/// Refuses statements other than queries before names are resolved, so that
/// `CREATE TABLE sales.new …` is reported as a write, not as a missing product.
pub(super) fn ensure_read_only(statement: &DFStatement) -> Result<(), EngineError> {
    let allowed = match statement {
        DFStatement::Statement(inner) => matches!(
            inner.as_ref(),
            SQLStatement::Query(_)
                | SQLStatement::Explain { .. }
                | SQLStatement::ShowTables { .. }
                | SQLStatement::ShowColumns { .. }
        ),
        DFStatement::Explain(explain) => return ensure_read_only(&explain.statement),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        let text = statement.to_string();
        let verb: String = text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        Err(EngineError::ReadOnly(format!(
            "Agora is read-only: '{verb} …' is not accepted; send a query (SELECT, WITH, VALUES, EXPLAIN, SHOW TABLES)"
        )))
    }
}

/// Agora serves reads only: no DDL, no DML, no `SET`. Checked again on the plan,
/// which also covers statements nested in `EXPLAIN`.
fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

#[cfg(test)]
mod tests {
    use super::number_question_marks;

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(number_question_marks("SELECT ? + ?"), "SELECT $1 + $2");
        assert_eq!(number_question_marks("SELECT '?', ? -- ?"), "SELECT '?', $1 -- ?");
        assert_eq!(number_question_marks("SELECT $1"), "SELECT $1");
    }
}
