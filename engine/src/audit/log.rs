//! The audit file: append-only JSON Lines, hash-chained, rotated by size,
//! with retention that archives or announces what leaves it.
//!
//! Every record is written (to the operating system) before the request it
//! describes goes on, so a process that is killed leaves it behind; finish
//! records are also made durable (`fsync`) before a result completes, and
//! concurrent writers share one `fsync` (group commit).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::config::AuditConfig;

use super::quota::AuditQuota;
use crate::config::ChainKey;

use super::record::{AuditRecord, Dropped, GENESIS, KEYED, chain_hash};

/// The append-only audit file of a governed mesh.
#[derive(Debug)]
pub struct AuditLog {
    config: AuditConfig,
    writer: Mutex<Writer>,
    synced: Mutex<SyncState>,
    synced_changed: Condvar,
    retention_drops: AtomicU64,
    pub(crate) quota: AuditQuota,
}

/// The open file and the head of the chain.
#[derive(Debug)]
struct Writer {
    file: File,
    /// A second handle on the same file, to `fsync` it without holding the
    /// writer lock.
    sync_handle: Arc<File>,
    size: u64,
    /// `seq` of the last record written (0 before the first).
    seq: u64,
    /// Hash of the last record's line.
    head: String,
    /// The chain key, if the log is keyed.
    key: Option<ChainKey>,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Every record up to this `seq` is on disk.
    synced: u64,
    /// Someone is running `fsync` now; others wait for it.
    syncing: bool,
}

/// The last record of a log, as found when it is opened.
struct Head {
    seq: u64,
    hash: String,
}

impl AuditLog {
    /// Opens the audit file (creating directories as needed), repairs a torn
    /// last line left by a crash (moving it aside to `<file>.torn` and
    /// recording the repair) and finds the head of the chain.
    pub fn open(config: &AuditConfig) -> std::io::Result<Self> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if let Some(dir) = &config.archive_dir {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&config.path)?;
        let torn = repair_torn_tail(&mut file, &config.path)?;
        let head = find_head(config)?;
        let size = file.metadata()?.len();
        let sync_handle = Arc::new(file.try_clone()?);
        let log = AuditLog {
            config: config.clone(),
            writer: Mutex::new(Writer {
                file,
                sync_handle,
                size,
                seq: head.seq,
                head: head.hash,
                key: config.chain_key.clone(),
            }),
            synced: Mutex::new(SyncState { synced: head.seq, syncing: false }),
            synced_changed: Condvar::new(),
            retention_drops: AtomicU64::new(0),
            quota: AuditQuota::new(config.quota_bytes_per_minute),
        };
        if let Some(bytes) = torn {
            let aside = torn_path(&config.path);
            tracing::warn!(
                path = %config.path.display(), bytes, aside = %aside.display(),
                "the audit log ended in a torn record (a crash mid-write); it was moved aside"
            );
            let note = format!(
                "the last {bytes} bytes of {} were a torn record (the process stopped mid-write); \
                 they were moved to {}",
                config.path.display(),
                aside.display()
            );
            log.append(&mut AuditRecord::note("repair", note), true)?;
        }
        Ok(log)
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// How often retention removed records that were not archived, since the
    /// engine started (each time is also logged as an error and recorded in
    /// the log itself).
    pub fn retention_drops(&self) -> u64 {
        self.retention_drops.load(Ordering::Relaxed)
    }

    /// Appends `record` (setting its `seq` and `prev`); with `durable`, waits
    /// until it is on disk. Returns the length of the line written.
    pub(crate) fn append(&self, record: &mut AuditRecord, durable: bool) -> std::io::Result<u64> {
        let started = std::time::Instant::now();
        let (seq, written) = {
            let mut writer = lock(&self.writer);
            self.make_room(&mut writer)?;
            let written = writer.write(record)?;
            (writer.seq, written)
        };
        if durable {
            self.sync_through(seq)?;
        }
        let kind = if durable { "durable" } else { "written" };
        metrics::histogram!("agora_audit_write_seconds", "kind" => kind).record(started.elapsed().as_secs_f64());
        Ok(written)
    }

    /// Whether records can still be written where the log lives: the current
    /// file opens for appending (it fails when its directory was removed,
    /// replaced or made read-only). Writes nothing; for readiness checks.
    pub fn check_writable(&self) -> std::io::Result<()> {
        std::fs::OpenOptions::new().append(true).open(&self.config.path).map(drop)
    }

    /// Waits until every record up to `seq` is on disk. One caller runs
    /// `fsync` for everyone who wrote before it started; the others wait.
    fn sync_through(&self, seq: u64) -> std::io::Result<()> {
        let mut state = lock(&self.synced);
        loop {
            if state.synced >= seq {
                return Ok(());
            }
            if !state.syncing {
                state.syncing = true;
                drop(state);
                let (target, handle) = {
                    let writer = lock(&self.writer);
                    (writer.seq, Arc::clone(&writer.sync_handle))
                };
                let result = handle.sync_data();
                state = lock(&self.synced);
                state.syncing = false;
                if result.is_ok() {
                    state.synced = state.synced.max(target);
                }
                self.synced_changed.notify_all();
                result?;
                continue;
            }
            state = self.synced_changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Rotates the current file when it is full.
    fn make_room(&self, writer: &mut Writer) -> std::io::Result<()> {
        if writer.size == 0 || writer.size < self.config.max_bytes {
            return Ok(());
        }
        // Records written before the rotation must be durable in the file
        // they were written to.
        writer.file.sync_data()?;
        let dropped = self.retire_old_files()?;
        for n in (1..self.config.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.config.path, self.rotated(1))?;
        let file = OpenOptions::new().create(true).read(true).append(true).open(&self.config.path)?;
        sync_dir(&self.config.path);
        writer.sync_handle = Arc::new(file.try_clone()?);
        writer.file = file;
        writer.size = 0;
        if let Some(dropped) = dropped {
            let files = dropped.files.join(", ");
            let mut note = AuditRecord::note(
                "retention",
                format!(
                    "retention removed {files} (every record up to seq {}); set governance.audit.archive_dir \
                     to keep them",
                    dropped.through_seq
                ),
            );
            note.dropped = Some(dropped);
            writer.write(&mut note)?;
        }
        Ok(())
    }

    /// Moves the rotated files that leave the log (beyond `keep`, or older
    /// than `max_age_days`) to the archive directory, or, without one,
    /// deletes them loudly. Returns what was deleted.
    fn retire_old_files(&self) -> std::io::Result<Option<Dropped>> {
        let keep = self.config.keep;
        let too_old = |path: &Path| {
            let Some(days) = self.config.max_age_days else { return false };
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let age = modified.and_then(|m| SystemTime::now().duration_since(m).ok()).unwrap_or_default();
            age > Duration::from_secs(days.saturating_mul(86_400))
        };
        // Oldest first: `.keep` leaves to make room, and every file older than
        // the first too-old one leaves with it.
        let first_old = (1..keep).find(|n| self.rotated(*n).exists() && too_old(&self.rotated(*n))).unwrap_or(keep);
        let leaving: Vec<PathBuf> = (first_old..=keep).rev().map(|n| self.rotated(n)).filter(|p| p.exists()).collect();
        let mut dropped: Option<Dropped> = None;
        for path in leaving {
            let Some(last) = last_line(&path)? else {
                std::fs::remove_file(&path)?;
                continue;
            };
            let seq = serde_json::from_slice::<AuditRecord>(&last).map(|r| r.seq).unwrap_or(0);
            match &self.config.archive_dir {
                Some(dir) => {
                    let first = first_seq(&path)?;
                    let target = archive_target(dir, &self.config.path, first, seq);
                    move_file(&path, &target)?;
                    tracing::info!(from = %path.display(), to = %target.display(), "audit file archived");
                }
                None => {
                    std::fs::remove_file(&path)?;
                    self.retention_drops.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        path = %path.display(), through_seq = seq,
                        "audit retention reached: records were deleted (set governance.audit.archive_dir to keep them)"
                    );
                    let d = dropped.get_or_insert(Dropped { through_seq: 0, last_hash: String::new(), files: vec![] });
                    d.through_seq = seq;
                    d.last_hash = chain_hash(self.config.chain_key.as_ref(), &last);
                    d.files.push(path.display().to_string());
                }
            }
        }
        Ok(dropped)
    }

    fn rotated(&self, n: u64) -> PathBuf {
        crate::jsonl::rotated(&self.config.path, n)
    }

    /// One entry per request, as `system.audit_log` shows them: a finish
    /// record in place of its start record (keeping the statement), a start
    /// record alone for a request still running or cut off by a crash.
    pub fn requests(&self) -> std::io::Result<Vec<AuditRecord>> {
        Ok(super::requests::merge_requests(self.read_all()?))
    }

    /// Every record in the current and rotated files (not the archive),
    /// oldest first. Lines that are not records are skipped here; `agora
    /// audit verify` reports them.
    pub fn read_all(&self) -> std::io::Result<Vec<AuditRecord>> {
        let mut files: Vec<PathBuf> = (1..=self.config.keep).rev().map(|n| self.rotated(n)).collect();
        files.push(self.config.path.clone());
        let mut out = Vec::new();
        for path in files {
            let Ok(file) = File::open(&path) else { continue };
            for line in BufReader::new(file).lines() {
                if let Ok(record) = serde_json::from_str::<AuditRecord>(&line?) {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }
}

impl Writer {
    /// Chains `record` to the head and writes its line.
    fn write(&mut self, record: &mut AuditRecord) -> std::io::Result<u64> {
        record.seq = self.seq + 1;
        record.prev = Some(self.head.clone());
        record.chain = self.key.as_ref().map(|_| KEYED.to_string());
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        let hash = chain_hash(self.key.as_ref(), &line);
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            // A partial line may be in the file: end it, so the next record
            // does not merge into it (verification reports the broken line).
            let _ = self.file.write_all(b"\n");
            return Err(e);
        }
        self.seq = record.seq;
        self.head = hash;
        self.size += line.len() as u64;
        Ok(line.len() as u64)
    }
}

/// Where a torn tail is moved: `audit.jsonl.torn`.
fn torn_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".torn");
    PathBuf::from(name)
}

/// Where a file holding records `first..=last` is archived: named so that
/// names sort in log order, and never the name of a file already there
/// (files of records written before chaining all have seq 0).
fn archive_target(dir: &Path, path: &Path, first: u64, last: u64) -> PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("audit");
    let base = format!("{stem}-{first:020}-{last:020}");
    let mut target = dir.join(format!("{base}.jsonl"));
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{base}-{n:04}.jsonl"));
        n += 1;
    }
    target
}

/// `seq` of the first record of a file (0 when it has none, or none chained).
fn first_seq(path: &Path) -> std::io::Result<u64> {
    let mut first = String::new();
    BufReader::new(File::open(path)?).read_line(&mut first)?;
    Ok(serde_json::from_str::<AuditRecord>(&first).map(|r| r.seq).unwrap_or(0))
}

/// The files of the log, oldest first: archive, rotated, current.
pub(crate) fn log_files(config: &AuditConfig) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if let Some(dir) = &config.archive_dir
        && dir.exists()
    {
        let mut archived: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        archived.sort();
        files.extend(archived);
    }
    files.extend((1..=config.keep).rev().map(|n| crate::jsonl::rotated(&config.path, n)).filter(|p| p.exists()));
    if config.path.exists() {
        files.push(config.path.clone());
    }
    Ok(files)
}

/// Cuts an unfinished last line off the file, appending it to the `.torn`
/// file beside it. Returns its length, if there was one.
fn repair_torn_tail(file: &mut File, path: &Path) -> std::io::Result<Option<u64>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(None);
    }
    let start = last_newline_before(file, len)?.map(|p| p + 1).unwrap_or(0);
    let mut fragment = Vec::new();
    file.seek(SeekFrom::Start(start))?;
    file.take(len - start).read_to_end(&mut fragment)?;
    fragment.push(b'\n');
    let mut aside = OpenOptions::new().create(true).append(true).open(torn_path(path))?;
    aside.write_all(&fragment)?;
    aside.sync_data()?;
    file.set_len(start)?;
    file.sync_data()?;
    Ok(Some(len - start))
}

/// The position of the last `\n` before `end`, reading backwards in chunks.
fn last_newline_before(file: &mut File, end: u64) -> std::io::Result<Option<u64>> {
    const CHUNK: u64 = 64 * 1024;
    let mut upto = end;
    let mut buffer = vec![0u8; CHUNK as usize];
    while upto > 0 {
        let from = upto.saturating_sub(CHUNK);
        let part = &mut buffer[..(upto - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(part)?;
        if let Some(i) = part.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(from + i as u64));
        }
        upto = from;
    }
    Ok(None)
}

/// The last complete line of a file (without its newline), if any.
pub(crate) fn last_line(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    // The file ends with a newline (torn tails are repaired on open); the
    // line before it starts after the newline before that.
    let end = match last_newline_before(&mut file, len)? {
        Some(end) => end,
        None => return Ok(None),
    };
    let start = last_newline_before(&mut file, end)?.map(|p| p + 1).unwrap_or(0);
    let mut line = Vec::new();
    file.seek(SeekFrom::Start(start))?;
    file.take(end - start).read_to_end(&mut line)?;
    Ok(Some(line))
}

/// The newest record of the log (current file, else the newest rotated or
/// archived one): where the chain continues.
fn find_head(config: &AuditConfig) -> std::io::Result<Head> {
    let files = log_files(config)?;
    for path in files.iter().rev() {
        if let Some(line) = last_line(path)? {
            // A last line that is not a record (damaged) is chained to as it
            // is; verification reports it. Its `seq` is taken from the newest
            // record that parses.
            let seq = match serde_json::from_slice::<AuditRecord>(&line) {
                Ok(r) => r.seq,
                Err(_) => newest_seq(path)?,
            };
            return Ok(Head { seq, hash: chain_hash(config.chain_key.as_ref(), &line) });
        }
    }
    Ok(Head { seq: 0, hash: GENESIS.to_string() })
}

fn newest_seq(path: &Path) -> std::io::Result<u64> {
    let mut seq = 0;
    for line in BufReader::new(File::open(path)?).lines() {
        if let Ok(r) = serde_json::from_str::<AuditRecord>(&line?) {
            seq = seq.max(r.seq);
        }
    }
    Ok(seq)
}

/// Moves `from` to `to` without ever replacing a file at `to`: a hard link
/// then an unlink, or a copy into a new file when they are on different file
/// systems.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        let mut target = OpenOptions::new().write(true).create_new(true).open(to)?;
        std::io::copy(&mut File::open(from)?, &mut target)?;
        target.sync_all()?;
    }
    sync_dir(to);
    std::fs::remove_file(from)?;
    sync_dir(from);
    Ok(())
}

/// Makes a rename in `path`'s directory durable (best effort: not every
/// platform can `fsync` a directory).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
    {
        let _ = d.sync_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
