//! Quality rules run at the source, and their history.
//!
//! Each rule becomes one aggregate query over the product (`count(*) … WHERE
//! …`), planned by the engine like any other query, so filters and aggregates
//! are pushed to the source where it can run them (PostgreSQL runs the whole
//! query). Results are appended to a JSON Lines file, which is
//! `system.quality_results`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampSecondType};
use serde::{Deserialize, Serialize};

use super::{Literal, QualityRule, RuleKind};
use crate::ProductRef;
use crate::jsonl::{JsonlFile, Rotation};

/// The outcome of one rule on one run, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QualityResult {
    /// Shared by the results of one `agora check --quality` run.
    pub run_id: String,
    /// When the rule was checked (RFC 3339, UTC).
    pub checked_at: String,
    /// `domain.product`.
    pub product: String,
    /// The rule's name.
    pub rule: String,
    /// not_null, unique, accepted_values, range, row_count, sql, freshness or documented.
    pub kind: String,
    /// The column, for column rules.
    pub column: Option<String>,
    /// The rule's dimension, if the contract names one.
    pub dimension: Option<String>,
    /// The rule's severity, if the contract names one.
    pub severity: Option<String>,
    /// The condition, e.g. `= 0`, `> 1000`, `<= 86400`.
    pub expected: String,
    /// The measured value (rows, percent, or seconds for freshness).
    pub observed: Option<f64>,
    /// Whether the rule held (written `pass`, `fail`, `error` or `skipped`).
    pub outcome: QualityOutcome,
    /// Why it failed, errored or was skipped.
    pub message: Option<String>,
    /// The query that measured it.
    pub sql: Option<String>,
    /// How long the check took.
    pub duration_ms: u64,
}

impl QualityResult {
    /// Did the rule pass?
    pub fn passed(&self) -> bool {
        self.outcome == QualityOutcome::Pass
    }
}

/// The outcome of one rule's check. Written in lower case in the quality
/// history and `system.quality_results`, so reports can match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QualityOutcome {
    /// The measure met the threshold.
    Pass,
    /// The measure missed the threshold (or a freshness measure was empty).
    Fail,
    /// The check could not run (the source failed, the measure was NULL).
    Error,
    /// The rule is not executable (see the message).
    Skipped,
}

impl QualityOutcome {
    /// The name written to the history and shown in `system.quality_results`.
    pub fn as_str(self) -> &'static str {
        match self {
            QualityOutcome::Pass => "pass",
            QualityOutcome::Fail => "fail",
            QualityOutcome::Error => "error",
            QualityOutcome::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for QualityOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for QualityOutcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A short name of the rule's kind for reports.
pub fn kind_name(kind: &RuleKind) -> &'static str {
    match kind {
        RuleKind::NullValues => "not_null",
        RuleKind::DuplicateValues(_) => "unique",
        RuleKind::MissingValues(_) => "not_missing",
        RuleKind::InvalidValues(_) => "accepted_values",
        RuleKind::PatternMismatch(_) => "pattern",
        RuleKind::OutOfRange { .. } => "range",
        RuleKind::RowCount => "row_count",
        RuleKind::Sql(_) => "sql",
        RuleKind::Freshness { .. } => "freshness",
        RuleKind::NotExecutable(_) => "documented",
    }
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The query measuring `rule` on `product`, returning one number (for
/// freshness: the newest time). `None` for rules that cannot run or that need
/// no query (freshness from the source's modification time).
pub fn rule_sql(product: &ProductRef, rule: &QualityRule) -> Option<String> {
    let table = format!("{}.{}", quote(&product.domain), quote(&product.product));
    let column = rule.column.as_deref().map(quote);
    let bad = match (&rule.kind, &column) {
        (RuleKind::NullValues, Some(c)) => format!("{c} IS NULL"),
        (RuleKind::InvalidValues(values), Some(c)) => {
            let list: Vec<String> = values.iter().map(Literal::to_sql).collect();
            if list.is_empty() { format!("{c} IS NOT NULL") } else { format!("{c} NOT IN ({})", list.join(", ")) }
        }
        (RuleKind::MissingValues(values), Some(c)) => {
            let list: Vec<String> = values.iter().map(Literal::to_sql).collect();
            if list.is_empty() {
                format!("{c} IS NULL")
            } else {
                format!("{c} IS NULL OR {c} IN ({})", list.join(", "))
            }
        }
        (RuleKind::PatternMismatch(pattern), Some(c)) => {
            format!("{c} IS NOT NULL AND NOT ({c} ~ {})", Literal::Text(pattern.clone()).to_sql())
        }
        (RuleKind::OutOfRange { min, max, exclusive }, Some(c)) => {
            let mut parts = Vec::new();
            if let Some(min) = min {
                parts.push(format!("{c} {} {}", if exclusive.0 { "<=" } else { "<" }, min.to_sql()));
            }
            if let Some(max) = max {
                parts.push(format!("{c} {} {}", if exclusive.1 { ">=" } else { ">" }, max.to_sql()));
            }
            parts.join(" OR ")
        }
        (RuleKind::DuplicateValues(columns), _) if !columns.is_empty() => {
            let key: Vec<String> = columns.iter().map(|c| quote(c)).collect();
            let key = key.join(", ");
            let excess = "coalesce(sum(n - 1), 0)";
            let measure = if rule.percent { format!("100.0 * {excess} / nullif(sum(n), 0)") } else { excess.into() };
            return Some(format!("SELECT {measure} FROM (SELECT count(*) AS n FROM {table} GROUP BY {key}) AS groups"));
        }
        (RuleKind::DuplicateValues(_), Some(c)) => {
            let dup = format!("count({c}) - count(DISTINCT {c})");
            return Some(if rule.percent {
                format!("SELECT 100.0 * ({dup}) / nullif(count(*), 0) FROM {table}")
            } else {
                format!("SELECT {dup} FROM {table}")
            });
        }
        (RuleKind::RowCount, _) => return Some(format!("SELECT count(*) FROM {table}")),
        (RuleKind::Sql(query), _) => {
            let mut q = query.clone();
            for name in ["object", "table", "model"] {
                q = q.replace(&format!("${{{name}}}"), &table).replace(&format!("{{{name}}}"), &table);
            }
            if let Some(c) = &column {
                for name in ["property", "column", "field"] {
                    q = q.replace(&format!("${{{name}}}"), c).replace(&format!("{{{name}}}"), c);
                }
            }
            return Some(q);
        }
        (RuleKind::Freshness { column: Some(c) }, _) => return Some(format!("SELECT max({}) FROM {table}", quote(c))),
        _ => return None,
    };
    Some(if rule.percent {
        format!("SELECT 100.0 * sum(CASE WHEN {bad} THEN 1 ELSE 0 END) / nullif(count(*), 0) FROM {table}")
    } else {
        format!("SELECT count(*) FROM {table} WHERE {bad}")
    })
}

/// The single number a rule's query returned.
pub(crate) fn measured(batches: &[RecordBatch]) -> Result<Option<f64>, String> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok(None) };
    if rows != 1 || batch.num_columns() != 1 {
        return Err(format!(
            "the rule's query must return one row with one number; it returned {rows} rows of {} columns",
            batch.num_columns()
        ));
    }
    let column = batch.column(0);
    let number = arrow::compute::cast(column, &DataType::Float64)
        .map_err(|_| format!("the rule's query returned {}, not a number", column.data_type()))?;
    let number = number.as_primitive::<Float64Type>();
    Ok(if number.is_null(0) { None } else { Some(number.value(0)) })
}

/// The time the freshness query returned, as seconds since the epoch.
pub(crate) fn newest_time(batches: &[RecordBatch]) -> Result<Option<i64>, String> {
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok(None) };
    let column: &ArrayRef = batch.column(0);
    let seconds = arrow::compute::cast(column, &DataType::Timestamp(TimeUnit::Second, None))
        .map_err(|_| format!("the freshness column is {}, not a date or timestamp", column.data_type()))?;
    let seconds = seconds.as_primitive::<TimestampSecondType>();
    Ok(if seconds.is_null(0) { None } else { Some(seconds.value(0)) })
}

/// The append-only history of quality results (`system.quality_results`),
/// rotated by size like the other JSON Lines files (see [`crate::jsonl`]).
#[derive(Debug)]
pub struct QualityLog {
    file: JsonlFile,
}

impl QualityLog {
    /// The log at `path`; nothing is created until results are appended.
    pub fn new(path: impl Into<PathBuf>) -> Arc<Self> {
        Arc::new(QualityLog { file: JsonlFile::new(path, Rotation::default()) })
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Appends results, creating the file and its directory as needed.
    pub fn append(&self, results: &[QualityResult]) -> std::io::Result<()> {
        let lines = results.iter().map(serde_json::to_vec).collect::<Result<Vec<_>, _>>()?;
        self.file.append(&lines, true)
    }

    /// Every recorded result, oldest first; a missing file is an empty history.
    pub fn read_all(&self) -> std::io::Result<Vec<QualityResult>> {
        Ok(self.file.read_lines()?.iter().filter_map(|line| serde_json::from_str(line).ok()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Contract, Threshold};

    fn rules() -> Vec<QualityRule> {
        let yaml = r#"
apiVersion: v3.0.2
kind: DataContract
id: urn:test
version: 1.0.0
status: active
schema:
  - name: t
    quality:
      - { type: library, metric: rowCount, mustBeGreaterThan: 10 }
      - { type: sql, query: "SELECT count(*) FROM {object} WHERE a > b", mustBe: 0 }
    properties:
      - { name: a, required: true, unique: true }
      - name: b
        quality:
          - { metric: invalidValues, arguments: { validValues: [x, "y'z"] } }
          - { metric: invalidValues, arguments: { minimum: 0, maximum: 5 }, unit: percent, mustBeLessThan: 1 }
      - name: c
        primaryKey: true
        enum: [{ value: 1 }, { value: 2 }]
        logicalTypeOptions: { exclusiveMinimum: 0, maximum: 9 }
        quality:
          - { metric: invalidValues, arguments: { pattern: "^[0-9]+$" } }
      - { name: d, primaryKey: true, quality: [{ type: sql, query: "SELECT max({property}) FROM ${table}", mustBeLessThan: 3 }] }
slaProperties:
  - { property: latency, value: 2, unit: d, element: t.a }
"#;
        Contract::parse(yaml, Path::new("t.yaml"), "t").expect("valid").rules
    }

    #[test]
    fn each_rule_becomes_one_aggregate_query() {
        let product = ProductRef::new("d", "t");
        let sql: Vec<Option<String>> = rules().iter().map(|r| rule_sql(&product, r)).collect();
        assert_eq!(
            sql,
            vec![
                Some(r#"SELECT count(*) FROM "d"."t""#.to_string()),
                Some(r#"SELECT count(*) FROM "d"."t" WHERE a > b"#.to_string()),
                Some(r#"SELECT count(*) FROM "d"."t" WHERE "a" IS NULL"#.to_string()),
                Some(r#"SELECT count("a") - count(DISTINCT "a") FROM "d"."t""#.to_string()),
                Some(r#"SELECT count(*) FROM "d"."t" WHERE "b" NOT IN ('x', 'y''z')"#.to_string()),
                Some(
                    r#"SELECT 100.0 * sum(CASE WHEN "b" < 0 OR "b" > 5 THEN 1 ELSE 0 END) / nullif(count(*), 0) FROM "d"."t""#
                        .to_string()
                ),
                Some(r#"SELECT count(*) FROM "d"."t" WHERE "c" NOT IN (1, 2)"#.to_string()),
                Some(r#"SELECT count(*) FROM "d"."t" WHERE "c" <= 0 OR "c" > 9"#.to_string()),
                Some(r#"SELECT count(*) FROM "d"."t" WHERE "c" IS NOT NULL AND NOT ("c" ~ '^[0-9]+$')"#.to_string()),
                Some(r#"SELECT max("d") FROM "d"."t""#.to_string()),
                Some(r#"SELECT count(*) FROM "d"."t" WHERE "c" IS NULL"#.to_string()),
                Some(r#"SELECT count(*) FROM "d"."t" WHERE "d" IS NULL"#.to_string()),
                Some(
                    r#"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM "d"."t" GROUP BY "c", "d") AS groups"#
                        .to_string()
                ),
                Some(r#"SELECT max("a") FROM "d"."t""#.to_string()),
            ]
        );
    }

    #[test]
    fn thresholds_default_to_zero_bad_rows() {
        let rules = rules();
        assert_eq!(rules[0].threshold, Threshold::Greater(10.0));
        assert_eq!(rules[2].threshold, Threshold::Equal(0.0));
        assert_eq!(rules[5].threshold, Threshold::Less(1.0));
        let freshness = rules.last().expect("freshness rule");
        assert_eq!(freshness.threshold, Threshold::LessOrEqual(2.0 * 86_400.0));
        assert!(freshness.threshold.holds(3600.0) && !freshness.threshold.holds(3.0 * 86_400.0));
    }

    #[test]
    fn results_survive_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = QualityLog::new(dir.path().join("q/results.jsonl"));
        assert!(log.read_all().expect("empty history").is_empty());
        let result = QualityResult {
            run_id: "r1".into(),
            checked_at: "2026-11-25T10:00:00.000Z".into(),
            product: "d.t".into(),
            rule: "a is not null".into(),
            kind: "not_null".into(),
            column: Some("a".into()),
            dimension: None,
            severity: Some("error".into()),
            expected: "= 0".into(),
            observed: Some(3.0),
            outcome: QualityOutcome::Fail,
            message: None,
            sql: None,
            duration_ms: 4,
        };
        log.append(std::slice::from_ref(&result)).expect("append");
        log.append(std::slice::from_ref(&result)).expect("append again");
        let back = log.read_all().expect("read");
        assert_eq!(back, vec![result.clone(), result]);
        let batch = crate::system::tables::quality_results::results_batch(&back).expect("batch");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(2).as_string::<i32>().value(0), "d");
        assert!(!batch.column(11).as_boolean().value(0));
    }
}
