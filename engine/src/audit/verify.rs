//! Checking the hash chain of an audit log: `agora audit verify`.
//!
//! Each record names the SHA-256 of the line before it and carries the next
//! `seq`, so an edited line (its hash changes), a removed line (a `seq` gap,
//! and the next record names a hash that is not there) and an inserted line
//! all show. Records removed by retention are announced by a `retention`
//! record naming the last removed record's `seq` and hash, so the chain may
//! begin after them. What the chain cannot show by itself is a cut at the
//! very end (the newest records removed, nothing after them): compare the head
//! reported here with one recorded elsewhere earlier.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use crate::config::AuditConfig;

use super::log::log_files;
use super::record::{AuditRecord, GENESIS, line_hash};

/// What `agora audit verify` found.
#[derive(Debug, Default)]
pub struct ChainReport {
    /// The files read, oldest first.
    pub files: Vec<PathBuf>,
    /// Records read.
    pub records: u64,
    /// Records written before the log was chained (by an older Agora).
    pub unchained: u64,
    /// `seq` of the first and last chained record.
    pub first_seq: Option<u64>,
    /// `seq` of the last record: with [`ChainReport::head`], what to keep
    /// elsewhere to detect a cut at the end later.
    pub last_seq: Option<u64>,
    /// Hash of the last line.
    pub head: Option<String>,
    /// Every break found, in file order.
    pub problems: Vec<ChainProblem>,
}

/// One place where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainProblem {
    /// The file.
    pub file: PathBuf,
    /// Line number in the file, from 1.
    pub line: u64,
    /// What is wrong there.
    pub what: String,
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.what)
    }
}

impl ChainReport {
    /// True when the chain is whole.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One line, as read.
struct Line {
    file: usize,
    number: u64,
    hash: String,
    record: Option<AuditRecord>,
}

/// Verifies every file of the log: archive, rotated and current.
pub fn verify(config: &AuditConfig) -> std::io::Result<ChainReport> {
    let mut report = ChainReport { files: log_files(config)?, ..ChainReport::default() };
    let mut lines = Vec::new();
    for (i, path) in report.files.iter().enumerate() {
        let reader = BufReader::new(File::open(path)?);
        for (n, line) in reader.split(b'\n').enumerate() {
            let line = line?;
            lines.push(Line {
                file: i,
                number: n as u64 + 1,
                hash: line_hash(&line),
                record: serde_json::from_slice::<AuditRecord>(&line).ok(),
            });
        }
    }
    // Where retention announced that records were removed: the chain may
    // start right after.
    let announced: Vec<(u64, String)> = lines
        .iter()
        .filter_map(|l| l.record.as_ref()?.dropped.as_ref())
        .map(|d| (d.through_seq, d.last_hash.clone()))
        .collect();
    let mut previous: Option<(u64, String)> = None;
    for line in &lines {
        let problem = |what: String| ChainProblem { file: report.files[line.file].clone(), line: line.number, what };
        report.records += 1;
        let Some(record) = &line.record else {
            report.problems.push(problem("not an audit record (edited, or damaged)".into()));
            previous = Some((previous.map(|p| p.0 + 1).unwrap_or(0), line.hash.clone()));
            continue;
        };
        let Some(prev) = &record.prev else {
            report.unchained += 1;
            if previous.as_ref().is_some_and(|(seq, _)| *seq > 0) {
                report.problems.push(problem("an unchained record after chained ones (inserted)".into()));
            }
            previous = Some((0, line.hash.clone()));
            continue;
        };
        report.first_seq.get_or_insert(record.seq);
        match &previous {
            None => {
                let from_genesis = record.seq == 1 && prev == GENESIS;
                let after_retention = announced.iter().any(|(seq, hash)| seq + 1 == record.seq && hash == prev);
                if !(from_genesis || after_retention) {
                    report.problems.push(problem(format!(
                        "the log begins at seq {} without a retention record announcing records 1..{}: \
                         earlier records were removed",
                        record.seq,
                        record.seq.saturating_sub(1)
                    )));
                }
            }
            Some((seq, hash)) => {
                if record.seq != seq + 1 && *seq > 0 {
                    let what = if record.seq > seq + 1 {
                        format!("records {}..{} are missing", seq + 1, record.seq - 1)
                    } else {
                        format!("seq {} follows seq {seq}: out of order or inserted", record.seq)
                    };
                    report.problems.push(problem(what));
                } else if prev != hash {
                    report.problems.push(problem(format!(
                        "record seq {} does not follow the line before it (that line was edited, or removed)",
                        record.seq
                    )));
                }
            }
        }
        previous = Some((record.seq, line.hash.clone()));
    }
    report.last_seq = lines.iter().rev().find_map(|l| l.record.as_ref().map(|r| r.seq));
    report.head = lines.last().map(|l| l.hash.clone());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Principal;
    use crate::audit::AuditLog;

    fn config(dir: &std::path::Path, max_bytes: u64, keep: u64, archive: bool) -> AuditConfig {
        AuditConfig {
            path: dir.join("audit/audit.jsonl"),
            max_bytes,
            keep,
            archive_dir: archive.then(|| dir.join("archive")),
            ..AuditConfig::default()
        }
    }

    fn write(log: &AuditLog, n: u64) {
        for i in 0..n {
            let mut r = AuditRecord::start(&Principal::user("ann"), None, Some(&format!("SELECT {i}")));
            log.append(&mut r, i % 3 == 0).unwrap();
        }
    }

    fn lines_of(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn an_untouched_log_verifies_across_rotation_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), 1000, 3, true);
        write(&AuditLog::open(&c).unwrap(), 10);
        write(&AuditLog::open(&c).unwrap(), 30);
        let report = verify(&c).unwrap();
        assert!(report.is_intact(), "{:?}", report.problems);
        assert_eq!((report.records, report.first_seq, report.last_seq), (40, Some(1), Some(40)));
        assert!(report.files.len() > 4, "rotated and archived: {:?}", report.files);
        assert!(std::fs::read_dir(dir.path().join("archive")).unwrap().count() > 0);
    }

    #[test]
    fn edits_deletions_and_insertions_are_found_where_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), u64::MAX, 3, false);
        write(&AuditLog::open(&c).unwrap(), 6);
        let original = lines_of(&c.path);

        let mut edited = original.clone();
        edited[2] = edited[2].replace("SELECT 2", "SELECT 9");
        std::fs::write(&c.path, edited.join("\n") + "\n").unwrap();
        let problems = verify(&c).unwrap().problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, 4, "the record after the edited one no longer follows it");

        let mut deleted = original.clone();
        deleted.remove(3);
        std::fs::write(&c.path, deleted.join("\n") + "\n").unwrap();
        let problems = verify(&c).unwrap().problems;
        assert!(problems[0].what.contains("records 4..4 are missing"), "{problems:?}");

        let mut first_gone = original.clone();
        first_gone.remove(0);
        std::fs::write(&c.path, first_gone.join("\n") + "\n").unwrap();
        assert!(verify(&c).unwrap().problems[0].what.contains("begins at seq 2"));

        let mut garbage = original;
        garbage.insert(1, "{\"not\": \"a record\"}".into());
        std::fs::write(&c.path, garbage.join("\n") + "\n").unwrap();
        assert!(!verify(&c).unwrap().is_intact());
    }

    #[test]
    fn retention_without_an_archive_is_announced_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), 600, 1, false);
        let log = AuditLog::open(&c).unwrap();
        write(&log, 20);
        assert!(log.retention_drops() > 0);
        let report = verify(&c).unwrap();
        assert!(report.is_intact(), "{:?}", report.problems);
        assert!(report.first_seq.unwrap() > 1);
        let notes = log.read_all().unwrap();
        assert!(notes.iter().any(|r| r.kind == "retention" && r.dropped.is_some()));
    }

    #[test]
    fn a_torn_tail_is_moved_aside_and_recorded_never_merged() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), u64::MAX, 3, false);
        write(&AuditLog::open(&c).unwrap(), 3);
        let mut bytes = std::fs::read(&c.path).unwrap();
        bytes.extend_from_slice(br#"{"seq":4,"prev":"ab","kind":"query","event_t"#);
        std::fs::write(&c.path, &bytes).unwrap();
        let log = AuditLog::open(&c).unwrap();
        write(&log, 2);
        let lines = lines_of(&c.path);
        assert_eq!(lines.len(), 6, "3 records, the repair note, 2 more: {lines:#?}");
        assert!(lines[3].contains("\"kind\":\"repair\""));
        let torn = std::fs::read_to_string(dir.path().join("audit/audit.jsonl.torn")).unwrap();
        assert!(torn.starts_with(r#"{"seq":4,"prev":"ab""#));
        let report = verify(&c).unwrap();
        assert!(report.is_intact(), "{:?}", report.problems);
        assert_eq!(report.last_seq, Some(6));
    }

    #[test]
    fn concurrent_writers_share_fsyncs_and_keep_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), 4000, 50, false);
        let log = std::sync::Arc::new(AuditLog::open(&c).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = std::sync::Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let sql = format!("SELECT {t}, {i}");
                        let mut r = AuditRecord::start(&Principal::user("ann"), None, Some(&sql));
                        log.append(&mut r, true).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let report = verify(&c).unwrap();
        assert!(report.is_intact(), "{:?}", report.problems);
        assert_eq!((report.records, report.last_seq), (400, Some(400)));
    }
}
