//! `CALL cancel_query('id')`: stop a running query.
//!
//! A principal may cancel its own queries; on a governed mesh an admin may
//! cancel anyone's. Anything else (an id that does not exist, has finished,
//! or is someone else's) gets the same answer, so the statement confirms no
//! other principal's query ids. The cancel happens when the statement is
//! executed, not when it is planned: a Flight SQL client plans it first
//! (`GetFlightInfo`) and runs it with a `DoGet`.

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value, ValueWithSpan,
};

use super::{QueryEntry, QueryHistory};
use crate::EngineError;

/// Whether `sql` is a `CALL` statement: it takes the small lane of
/// statements that read nothing, so that a cancel is never queued behind
/// the queries it is meant to stop.
pub(crate) fn is_call(sql: &str) -> bool {
    let first = sql.trim_start().split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or_default();
    first.eq_ignore_ascii_case("call")
}

/// A planned `cancel_query`, which cancels when executed.
#[derive(Debug)]
pub(crate) struct CancelQuery {
    target: Arc<QueryEntry>,
    by: String,
    schema: SchemaRef,
}

impl CancelQuery {
    /// The cancel `statement` asks for, if it is a `CALL`; an error names what
    /// is wrong with it or says there is no such query `principal` may
    /// cancel (its own queries, or every query for an `admin`).
    pub(crate) fn plan(
        statement: &Statement,
        history: &QueryHistory,
        principal: &str,
        admin: bool,
    ) -> Option<Result<Self, EngineError>> {
        let Statement::Call(function) = statement else { return None };
        let name = function.name.to_string();
        if !name.eq_ignore_ascii_case("cancel_query") {
            return Some(Err(EngineError::Sql(format!(
                "there is no procedure '{name}'; the one procedure is cancel_query('query id')"
            ))));
        }
        let Some(id) = single_string(&function.args) else {
            return Some(Err(EngineError::Sql(
                "cancel_query takes one argument, the query id as a string: CALL cancel_query('0190…')".into(),
            )));
        };
        let target = history.running(id).filter(|q| admin || q.context.user == principal);
        Some(match target {
            Some(target) => Ok(CancelQuery { target, by: principal.to_string(), schema: result_schema() }),
            None => {
                let shown: String = id.chars().take(64).collect();
                Err(EngineError::NotFound(format!(
                    "no running query '{shown}' that you may cancel; system.queries lists the queries you can see"
                )))
            }
        })
    }
}

fn single_string(args: &FunctionArguments) -> Option<&str> {
    let FunctionArguments::List(list) = args else { return None };
    match list.args.as_slice() {
        [
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(ValueWithSpan {
                value: Value::SingleQuotedString(s),
                ..
            }))),
        ] => Some(s.as_str()),
        _ => None,
    }
}

fn result_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("query_id", DataType::Utf8, false),
        Field::new("cancelled", DataType::Boolean, false),
        Field::new("state", DataType::Utf8, false),
    ]))
}

impl PartitionStream for CancelQuery {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Cancels the query; the one row says whether it was still running
    /// (it may have ended since the statement was planned) and its state.
    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let state = self.target.state();
        let running = !state.is_final();
        if running {
            self.target.cancel(&self.by);
        }
        let batch = RecordBatch::try_new(
            Arc::clone(&self.schema),
            vec![
                Arc::new(StringArray::from(vec![self.target.context.id.clone()])),
                Arc::new(BooleanArray::from(vec![running])),
                Arc::new(StringArray::from(vec![if running { "cancelled" } else { state.as_str() }])),
            ],
        );
        let stream = futures::stream::iter([batch.map_err(Into::into)]);
        Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_statements_are_recognised_by_their_first_word() {
        assert!(is_call("CALL cancel_query('x')"));
        assert!(is_call("  call\tcancel_query('x')"));
        assert!(!is_call("SELECT 'CALL'"));
        assert!(!is_call("callx()"));
        assert!(!is_call(""));
    }
}
