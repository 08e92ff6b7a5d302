//! The audit log: one JSON Lines record per query, allowed, denied or failed.
//!
//! A record is written and flushed to disk (`fsync`) before the client receives
//! the last batch of its result: the result stream holds one batch back until
//! the record is durable. If the record cannot be written the query fails,
//! since an unaudited read must not succeed. The file is rotated by size
//! (`audit.jsonl` → `audit.jsonl.1` …) and readable as `system.audit_log`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use arrow::array::{ArrayRef, ListBuilder, RecordBatch, StringBuilder, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::DataFusionError;
use datafusion::physical_plan::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::Principal;
use sha2::{Digest, Sha256};

use crate::config::AuditConfig;

use super::rewrite::AppliedPolicy;

/// One request, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// When the request started (RFC 3339, UTC).
    pub event_time: String,
    /// Unique per request.
    pub query_id: String,
    /// The principal's user name.
    pub user: String,
    /// The principal's groups.
    pub groups: Vec<String>,
    /// The client's address, when served over the network.
    pub client: Option<String>,
    /// The statement as sent, cut to [`MAX_AUDIT_TEXT_CHARS`] characters (a
    /// user must not be able to flood the log, and push older records out of
    /// it, with huge statements).
    pub sql: Option<String>,
    /// SHA-256 (hex) of the whole statement, so a cut statement can still be
    /// matched against the text a client claims it sent.
    #[serde(default)]
    pub sql_sha256: Option<String>,
    /// `domain.product` of every product the query read.
    pub products: Vec<String>,
    /// `domain.product.column` of every column the query read.
    pub columns: Vec<String>,
    /// Row filters and masks applied, with their policy ids.
    pub policies: Vec<AppliedPolicy>,
    /// `allow` or `deny`.
    pub decision: String,
    /// Why access was denied.
    pub reason: Option<String>,
    /// `ok`, `denied`, `failed` or `cancelled`.
    pub status: String,
    /// The error, for failed requests.
    pub error: Option<String>,
    /// Rows returned.
    pub rows: u64,
    /// Bytes returned (Arrow in-memory size).
    pub bytes: u64,
    /// Wall time from planning to the last batch.
    pub duration_ms: u64,
    /// Digest of the policy files in force.
    pub policy_version: Option<String>,
}

impl AuditRecord {
    /// A record for a request that is starting.
    pub(crate) fn start(principal: &Principal, client: Option<&str>, sql: Option<&str>) -> Self {
        let mut id = [0u8; 12];
        let _ = getrandom::fill(&mut id);
        AuditRecord {
            event_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            query_id: id.iter().map(|b| format!("{b:02x}")).collect(),
            user: principal.user.clone(),
            groups: principal.groups.clone(),
            client: client.map(str::to_string),
            sql: sql.map(capped),
            sql_sha256: sql.map(|s| Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()),
            products: Vec::new(),
            columns: Vec::new(),
            policies: Vec::new(),
            decision: "allow".into(),
            reason: None,
            status: "ok".into(),
            error: None,
            rows: 0,
            bytes: 0,
            duration_ms: 0,
            policy_version: None,
        }
    }
}

/// Longest statement or error text an audit record keeps, in characters.
pub const MAX_AUDIT_TEXT_CHARS: usize = 4096;

/// `text` cut to [`MAX_AUDIT_TEXT_CHARS`], marked with `…` when cut.
fn capped(text: &str) -> String {
    match text.char_indices().nth(MAX_AUDIT_TEXT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// The append-only audit file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    keep: u64,
    file: Mutex<Option<File>>,
}

impl AuditLog {
    /// Opens (creating directories as needed) the audit file.
    pub fn open(config: &AuditConfig) -> std::io::Result<Self> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&config.path)?;
        Ok(AuditLog {
            path: config.path.clone(),
            max_bytes: config.max_bytes,
            keep: config.keep,
            file: Mutex::new(Some(file)),
        })
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and waits until it is on disk.
    pub fn append(&self, record: &AuditRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut slot = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let size = match slot.as_ref() {
            Some(f) => f.metadata()?.len(),
            None => 0,
        };
        if slot.is_none() || (size > 0 && size + line.len() as u64 > self.max_bytes) {
            *slot = None;
            if size > 0 {
                self.rotate()?;
            }
            *slot = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        let Some(file) = slot.as_mut() else { return Err(std::io::Error::other("audit file not open")) };
        file.write_all(&line)?;
        file.sync_data()
    }

    fn rotated(&self, n: u64) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&self) -> std::io::Result<()> {
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))
    }

    /// Every record still on disk, oldest first.
    pub fn read_all(&self) -> std::io::Result<Vec<AuditRecord>> {
        let mut files: Vec<PathBuf> = (1..=self.keep).rev().map(|n| self.rotated(n)).collect();
        files.push(self.path.clone());
        let mut out = Vec::new();
        for path in files {
            let Ok(file) = File::open(&path) else { continue };
            for line in BufReader::new(file).lines() {
                let line = line?;
                // A torn last line (a crash mid-write) is skipped, not fatal.
                if let Ok(record) = serde_json::from_str::<AuditRecord>(&line) {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }
}

/// Where a query's record goes once the query ends.
pub(crate) struct PendingAudit {
    pub(crate) log: Arc<AuditLog>,
    pub(crate) record: AuditRecord,
    pub(crate) started: Instant,
}

impl PendingAudit {
    pub(crate) fn finish(mut self, status: &str, error: Option<String>) -> std::io::Result<()> {
        self.record.status = status.to_string();
        if status == "denied" {
            self.record.decision = "deny".into();
            self.record.reason = error.clone();
        }
        self.record.error = error.as_deref().map(capped);
        self.record.reason = self.record.reason.as_deref().map(capped);
        self.record.duration_ms = self.started.elapsed().as_millis() as u64;
        let result = self.log.append(&self.record);
        if let Err(e) = &result {
            tracing::error!(error = %e, path = %self.log.path.display(), "cannot write the audit record");
        }
        result
    }
}

/// A result stream that writes the query's audit record before it lets the last
/// batch go.
pub(crate) struct AuditedStream {
    inner: SendableRecordBatchStream,
    held: Option<RecordBatch>,
    audit: Option<PendingAudit>,
    done: bool,
}

impl AuditedStream {
    pub(crate) fn new(inner: SendableRecordBatchStream, audit: PendingAudit) -> Self {
        AuditedStream { inner, held: None, audit: Some(audit), done: false }
    }
}

impl Stream for AuditedStream {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(self.held.take().map(Ok));
        }
        loop {
            match self.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(batch))) => {
                    if let Some(a) = self.audit.as_mut() {
                        a.record.rows += batch.num_rows() as u64;
                        a.record.bytes += batch.get_array_memory_size() as u64;
                    }
                    if let Some(previous) = self.held.replace(batch) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    self.held = None;
                    if let Some(a) = self.audit.take() {
                        let _ = a.finish("failed", Some(e.to_string()));
                    }
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    if let Some(a) = self.audit.take()
                        && let Err(e) = a.finish("ok", None)
                    {
                        self.held = None;
                        return Poll::Ready(Some(Err(DataFusionError::External(
                            format!("the audit record could not be written, so the result is withheld: {e}").into(),
                        ))));
                    }
                    return Poll::Ready(self.held.take().map(Ok));
                }
            }
        }
    }
}

impl RecordBatchStream for AuditedStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

impl Drop for AuditedStream {
    fn drop(&mut self) {
        if let Some(a) = self.audit.take() {
            let _ = a.finish("cancelled", None);
        }
    }
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
    ];
    Ok(RecordBatch::try_new(audit_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_rotates_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig { path: dir.path().join("a/audit.jsonl"), max_bytes: 600, keep: 2 };
        let log = AuditLog::open(&config).unwrap();
        let principal = Principal::user("ann");
        for i in 0..12 {
            let mut r = AuditRecord::start(&principal, None, Some(&format!("SELECT {i}")));
            r.rows = i;
            log.append(&r).unwrap();
        }
        assert!(dir.path().join("a/audit.jsonl.1").exists());
        assert!(dir.path().join("a/audit.jsonl.2").exists());
        assert!(!dir.path().join("a/audit.jsonl.3").exists(), "only `keep` rotated files remain");
        let records = log.read_all().unwrap();
        let rows: Vec<u64> = records.iter().map(|r| r.rows).collect();
        assert!(rows.len() < 12 && rows.len() >= 3, "{rows:?}");
        assert!(rows.windows(2).all(|w| w[1] == w[0] + 1), "oldest first, none missing in between: {rows:?}");
        assert_eq!(*rows.last().unwrap(), 11);
        let batch = audit_batch(&records).unwrap();
        assert_eq!(batch.num_rows(), records.len());
    }

    #[test]
    fn huge_statements_are_cut_and_digested() {
        let huge = format!("SELECT 1 /* {} */", "é".repeat(100_000));
        let r = AuditRecord::start(&Principal::user("ann"), None, Some(&huge));
        let kept = r.sql.clone().unwrap();
        assert_eq!(kept.chars().count(), MAX_AUDIT_TEXT_CHARS + 1);
        assert!(kept.ends_with('…') && kept.starts_with("SELECT 1 /* "));
        let digest: String = Sha256::digest(huge.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(r.sql_sha256.as_deref(), Some(digest.as_str()));
        let short = AuditRecord::start(&Principal::user("ann"), None, Some("SELECT 1"));
        assert_eq!(short.sql.as_deref(), Some("SELECT 1"));
    }
}
