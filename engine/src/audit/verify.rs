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
//!
//! Without a chain key, whoever can write the files can also write lines
//! whose hashes fit (a forged retention record, say); with
//! `governance.audit.chain_key_*` the hashes are HMACs only the key's holder
//! can compute, and a keyed log stays keyed: an unkeyed record after keyed
//! ones is reported.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use crate::config::AuditConfig;

use super::log::log_files;
use super::record::{AuditRecord, GENESIS, KEYED, chain_hash, line_hash};

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
    /// SHA-256 of the line.
    hash: String,
    /// HMAC of the line under the chain key, when one is configured.
    keyed: Option<String>,
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
                keyed: config.chain_key.as_ref().map(|k| chain_hash(Some(k), &line)),
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
    // (seq, SHA-256, keyed hash) of the line before.
    let mut previous: Option<(u64, String, Option<String>)> = None;
    let mut keyed_seen = false;
    for line in &lines {
        let problem = |what: String| ChainProblem { file: report.files[line.file].clone(), line: line.number, what };
        report.records += 1;
        let Some(record) = &line.record else {
            report.problems.push(problem("not an audit record (edited, or damaged)".into()));
            let seq = previous.as_ref().map(|p| p.0.saturating_add(1)).unwrap_or(0);
            previous = Some((seq, line.hash.clone(), line.keyed.clone()));
            continue;
        };
        let Some(prev) = &record.prev else {
            report.unchained += 1;
            if previous.as_ref().is_some_and(|(seq, _, _)| *seq > 0) {
                report.problems.push(problem("an unchained record after chained ones (inserted)".into()));
            }
            previous = Some((0, line.hash.clone(), line.keyed.clone()));
            continue;
        };
        let keyed = record.chain.as_deref() == Some(KEYED);
        if keyed && config.chain_key.is_none() {
            report.problems.push(problem(
                "a keyed record: give governance.audit.chain_key_env or chain_key_file to verify it".into(),
            ));
        }
        if !keyed && keyed_seen {
            report.problems.push(problem("an unkeyed record after keyed ones (forged or inserted)".into()));
        }
        keyed_seen |= keyed;
        report.first_seq.get_or_insert(record.seq);
        match &previous {
            None => {
                let from_genesis = record.seq == 1 && prev == GENESIS;
                let after_retention =
                    announced.iter().any(|(seq, hash)| seq.checked_add(1) == Some(record.seq) && hash == prev);
                if !(from_genesis || after_retention) {
                    report.problems.push(problem(format!(
                        "the log begins at seq {} without a retention record announcing records 1..{}: \
                         earlier records were removed",
                        record.seq,
                        record.seq.saturating_sub(1)
                    )));
                }
            }
            Some((seq, plain, keyed_hash)) => {
                let hash = if keyed { keyed_hash.as_ref().unwrap_or(plain) } else { plain };
                let next = seq.saturating_add(1);
                if record.seq != next && *seq > 0 {
                    let what = if record.seq > next {
                        format!("records {next}..{} are missing", record.seq - 1)
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
        previous = Some((record.seq, line.hash.clone(), line.keyed.clone()));
    }
    report.last_seq = lines.iter().rev().find_map(|l| l.record.as_ref().map(|r| r.seq));
    report.head = lines.last().map(|l| l.keyed.clone().unwrap_or_else(|| l.hash.clone()));
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
    fn a_forged_retention_note_fools_a_plain_chain_but_not_a_keyed_one() {
        for keyed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut c = config(dir.path(), u64::MAX, 3, false);
            if keyed {
                c.chain_key = Some(crate::config::ChainKey(b"0123456789abcdef-key".as_slice().into()));
            }
            write(&AuditLog::open(&c).unwrap(), 10);
            // Someone who can write the file removes the first five records
            // and appends a note announcing their removal.
            let lines = lines_of(&c.path);
            let mut forged = AuditRecord::note("retention", "forged".into());
            forged.seq = 11;
            forged.prev = Some(line_hash(lines[9].as_bytes()));
            forged.dropped = Some(crate::audit::Dropped {
                through_seq: 5,
                last_hash: line_hash(lines[4].as_bytes()),
                files: vec![],
            });
            let text = lines[5..].join("\n") + "\n" + &serde_json::to_string(&forged).unwrap() + "\n";
            std::fs::write(&c.path, text).unwrap();
            let report = verify(&c).unwrap();
            assert_eq!(report.is_intact(), !keyed, "keyed {keyed}: {:?}", report.problems);
        }
    }

    #[test]
    fn a_keyed_log_verifies_only_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), 1000, 3, true);
        c.chain_key = Some(crate::config::ChainKey(b"0123456789abcdef-key".as_slice().into()));
        write(&AuditLog::open(&c).unwrap(), 30);
        assert!(verify(&c).unwrap().is_intact());
        let wrong = AuditConfig {
            chain_key: Some(crate::config::ChainKey(b"another-key-0123456".as_slice().into())),
            ..c.clone()
        };
        assert!(!verify(&wrong).unwrap().is_intact());
        let none = AuditConfig { chain_key: None, ..c };
        assert!(verify(&none).unwrap().problems[0].what.contains("chain_key"));
    }

    #[test]
    fn archived_files_never_replace_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), 300, 1, true);
        // Two files of unchained records (an older Agora): their names would collide.
        std::fs::create_dir_all(c.path.parent().unwrap()).unwrap();
        let old = r#"{"event_time":"2026-01-01T00:00:00.000Z","query_id":"a","user":"u","groups":[],"client":null,"sql":"OLDEST","products":[],"columns":[],"policies":[],"decision":"allow","reason":null,"status":"ok","error":null,"rows":1,"bytes":8,"duration_ms":1,"policy_version":null}"#;
        std::fs::write(crate::jsonl::rotated(&c.path, 1), format!("{old}\n")).unwrap();
        std::fs::write(&c.path, format!("{}\n", old.replace("OLDEST", "OLDER"))).unwrap();
        write(&AuditLog::open(&c).unwrap(), 20);
        let archived: Vec<String> = std::fs::read_dir(dir.path().join("archive"))
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        let all = archived.join("");
        assert!(all.contains("OLDEST") && all.contains("OLDER"), "{archived:#?}");
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
