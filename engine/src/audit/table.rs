//! `system.audit_log`: one row per request, as the viewer may see it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, ListBuilder, RecordBatch, StringBuilder, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::record::{AuditRecord, STARTED};

/// One row per request: a finish record takes the place of its start record
/// (keeping the start's statement text and time); a start record without a
/// finish (a request still running, or cut off by a crash) stays `started`.
/// Rows are in the order requests started.
pub(crate) fn merge_requests(records: Vec<AuditRecord>) -> Vec<AuditRecord> {
    let mut rows: Vec<AuditRecord> = Vec::with_capacity(records.len());
    let mut open: HashMap<String, usize> = HashMap::new();
    for record in records {
        if record.status == STARTED {
            open.insert(record.query_id.clone(), rows.len());
            rows.push(record);
            continue;
        }
        match open.remove(&record.query_id) {
            Some(i) => {
                let start = std::mem::replace(&mut rows[i], record);
                let row = &mut rows[i];
                row.event_time = start.event_time;
                row.sql = start.sql.or(row.sql.take());
            }
            None => rows.push(record),
        }
    }
    rows
}

/// A record as a domain owner who is not an admin may see it: only the
/// products, columns and policies of the domains they own; a request that
/// also read other domains keeps neither its statement, nor its digest, nor
/// its errors, which could quote (or confirm guesses of) those domains' names
/// and values.
pub(crate) fn owner_view(mut record: AuditRecord, owns: &dyn Fn(&str) -> bool) -> AuditRecord {
    let in_owned = |name: &String| name.split('.').next().is_some_and(owns);
    let foreign = record.products.iter().any(|p| !in_owned(p));
    record.products.retain(in_owned);
    record.columns.retain(in_owned);
    record.policies.retain(|p| in_owned(&p.product));
    if foreign {
        // The digest too: it would confirm a guessed statement.
        record.sql = None;
        record.sql_sha256 = None;
        record.error = None;
        record.reason = None;
    }
    record
}

/// The schema of `system.audit_log`.
pub(crate) fn audit_schema() -> SchemaRef {
    let list = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    Arc::new(Schema::new(vec![
        Field::new("event_time", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("query_id", DataType::Utf8, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("groups", list(), false),
        Field::new("client", DataType::Utf8, true),
        Field::new("sql", DataType::Utf8, true),
        Field::new("sql_sha256", DataType::Utf8, true),
        Field::new("products", list(), false),
        Field::new("columns", list(), false),
        Field::new("policies", DataType::Utf8, false),
        Field::new("decision", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("duration_ms", DataType::UInt64, false),
        Field::new("policy_version", DataType::Utf8, true),
        Field::new("kind", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, true),
        Field::new("seq", DataType::UInt64, false),
    ]))
}

/// Records as a batch of [`audit_schema`].
pub(crate) fn audit_batch(records: &[AuditRecord]) -> datafusion::error::Result<RecordBatch> {
    let strings = |f: &dyn Fn(&AuditRecord) -> Option<String>| -> ArrayRef {
        let mut b = StringBuilder::new();
        for r in records {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let lists = |f: &dyn Fn(&AuditRecord) -> &Vec<String>| -> ArrayRef {
        let mut b = ListBuilder::new(StringBuilder::new());
        for r in records {
            for v in f(r) {
                b.values().append_value(v);
            }
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let numbers =
        |f: &dyn Fn(&AuditRecord) -> u64| -> ArrayRef { Arc::new(records.iter().map(f).collect::<UInt64Array>()) };
    let times: TimestampMillisecondArray = records
        .iter()
        .map(|r| chrono::DateTime::parse_from_rfc3339(&r.event_time).map(|t| t.timestamp_millis()).unwrap_or(0))
        .collect::<Vec<i64>>()
        .into();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(times.with_timezone("UTC")),
        strings(&|r| Some(r.query_id.clone())),
        strings(&|r| Some(r.user.clone())),
        lists(&|r| &r.groups),
        strings(&|r| r.client.clone()),
        strings(&|r| r.sql.clone()),
        strings(&|r| r.sql_sha256.clone()),
        lists(&|r| &r.products),
        lists(&|r| &r.columns),
        strings(&|r| Some(serde_json::to_string(&r.policies).unwrap_or_default())),
        strings(&|r| Some(r.decision.clone())),
        strings(&|r| r.reason.clone()),
        strings(&|r| Some(r.status.clone())),
        strings(&|r| r.error.clone()),
        numbers(&|r| r.rows),
        numbers(&|r| r.bytes),
        numbers(&|r| r.duration_ms),
        strings(&|r| r.policy_version.clone()),
        strings(&|r| Some(r.kind.clone())),
        strings(&|r| r.action.clone()),
        numbers(&|r| r.seq),
    ];
    Ok(RecordBatch::try_new(audit_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Principal;

    #[test]
    fn one_row_per_request_with_the_start_text() {
        let ann = Principal::user("ann");
        let a = AuditRecord::start(&ann, None, Some("SELECT 1"));
        let b = AuditRecord::start(&ann, None, Some("SELECT 2"));
        let a_done = a.finished("ok", None, 3);
        let rows = merge_requests(vec![a.clone(), b.clone(), a_done]);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].status.as_str(), rows[0].sql.as_deref()), ("ok", Some("SELECT 1")));
        assert_eq!((rows[1].status.as_str(), rows[1].sql.as_deref()), (STARTED, Some("SELECT 2")));
        let batch = audit_batch(&rows).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), audit_schema());
    }

    #[test]
    fn owners_see_their_domain_only() {
        let mut r = AuditRecord::start(&Principal::user("ann"), None, Some("SELECT * FROM sales.o JOIN hr.pay"));
        r.products = vec!["sales.o".into(), "hr.pay".into()];
        r.columns = vec!["sales.o.id".into(), "hr.pay.salary".into()];
        let seen = owner_view(r.clone(), &|d| d == "sales");
        assert_eq!((seen.products, seen.columns), (vec!["sales.o".to_string()], vec!["sales.o.id".to_string()]));
        assert_eq!((seen.sql, seen.sql_sha256), (None, None));
        r.products.truncate(1);
        r.columns.truncate(1);
        assert_eq!(owner_view(r, &|d| d == "sales").sql.as_deref(), Some("SELECT * FROM sales.o JOIN hr.pay"));
    }
}
