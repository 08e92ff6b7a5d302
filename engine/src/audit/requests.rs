//! Requests from audit records: a request's start and finish records made
//! one, and what a domain owner may see of a request.

use std::collections::HashMap;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Principal;

    #[test]
    fn one_row_per_request_with_the_start_text() {
        let ann = Principal::user("ann");
        let a = AuditRecord::start(&ann, None, Some("SELECT 1"));
        let b = AuditRecord::start(&ann, None, Some("SELECT 2"));
        let a_done = a.finished(crate::audit::AuditStatus::Ok, None, 3);
        let rows = merge_requests(vec![a.clone(), b.clone(), a_done]);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].status.as_str(), rows[0].sql.as_deref()), ("ok", Some("SELECT 1")));
        assert_eq!((rows[1].status.as_str(), rows[1].sql.as_deref()), (STARTED, Some("SELECT 2")));
        let batch = crate::system::tables::audit_log::batch(&rows).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), crate::system::tables::audit_log::schema());
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
