//! JSON Lines files that rotate by size: the quality results, the lineage
//! file sink and the persisted query history.
//!
//! When a write would take the file past `max_bytes`, the file becomes
//! `<name>.1` (the older ones move up: `.1` → `.2` …) and the oldest beyond
//! `keep` is deleted, so each such file costs at most `(keep + 1) × max_bytes`
//! of disk. The naming is the audit log's; unlike the audit log these files
//! are not hash-chained nor archived: they are records for people, and the
//! audit log is the one that must lose nothing. Written here (about forty
//! lines) because the crates that rotate files (`file-rotate`,
//! `tracing-appender`) write but do not read a rotated set back, which the
//! query history and `system.quality_results` need.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Rotation of a JSON Lines file: its size cap and how many rotated files stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before the file grows past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`<name>.1` … `<name>.<keep>`).
    pub keep: u64,
}

impl Default for Rotation {
    /// 64 MiB per file, four rotated files.
    fn default() -> Self {
        Rotation { max_bytes: 64 * 1024 * 1024, keep: 4 }
    }
}

/// One rotating JSON Lines file; appends are serialised.
#[derive(Debug)]
pub(crate) struct JsonlFile {
    path: PathBuf,
    rotation: Rotation,
    /// The open file and its size, opened on first write.
    open: Mutex<Option<(File, u64)>>,
}

impl JsonlFile {
    /// The file at `path`; nothing is created until the first append.
    pub(crate) fn new(path: impl Into<PathBuf>, rotation: Rotation) -> Self {
        JsonlFile { path: path.into(), rotation, open: Mutex::new(None) }
    }

    /// The current file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `lines` (each a JSON document, without its newline) in one
    /// write, rotating first when they would not fit.
    pub(crate) fn append(&self, lines: &[Vec<u8>], sync: bool) -> std::io::Result<()> {
        let mut text = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.write(&mut open, &text, sync);
        if result.is_err() {
            // Opened again at the next append: the directory may come back.
            *open = None;
        }
        result
    }

    fn write(&self, open: &mut Option<(File, u64)>, text: &[u8], sync: bool) -> std::io::Result<()> {
        if open.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
            let size = file.metadata()?.len();
            *open = Some((file, size));
        }
        if let Some((_, size)) = open.as_ref()
            && *size > 0
            && size + text.len() as u64 > self.rotation.max_bytes
        {
            *open = None;
            self.rotate()?;
            let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
            *open = Some((file, 0));
        }
        let Some((file, size)) = open.as_mut() else { return Ok(()) };
        file.write_all(text)?;
        *size += text.len() as u64;
        if sync { file.sync_data() } else { Ok(()) }
    }

    fn rotate(&self) -> std::io::Result<()> {
        let keep = self.rotation.keep;
        if keep == 0 {
            return std::fs::remove_file(&self.path);
        }
        let oldest = rotated(&self.path, keep);
        if oldest.exists() {
            std::fs::remove_file(&oldest)?;
        }
        for n in (1..keep).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))
    }

    /// Every line of the rotated files and the current one, oldest first.
    /// Missing files are empty; a torn last line (a crash mid-write) is
    /// skipped by the caller's parser like any line that does not parse.
    pub(crate) fn read_lines(&self) -> std::io::Result<Vec<String>> {
        self.read_last(usize::MAX)
    }

    /// The last `n` lines, oldest first, reading only the newest files that
    /// hold them (a history of `keep` entries does not read every rotated
    /// file at start).
    pub(crate) fn read_last(&self, n: usize) -> std::io::Result<Vec<String>> {
        let newest_first =
            std::iter::once(self.path.clone()).chain((1..=self.rotation.keep).map(|k| rotated(&self.path, k)));
        let mut files: Vec<Vec<String>> = Vec::new();
        let mut count = 0;
        for path in newest_first {
            if count >= n {
                break;
            }
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut lines = Vec::new();
            for line in BufReader::new(file).lines() {
                let line = line?;
                if !line.trim().is_empty() {
                    lines.push(line);
                }
            }
            count += lines.len();
            files.push(lines);
        }
        let mut lines: Vec<String> = files.into_iter().rev().flatten().collect();
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
        Ok(lines)
    }
}

/// The `n`th rotated file of `path`: `audit.jsonl.n`.
pub(crate) fn rotated(path: &Path, n: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rotate_by_size_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/events.jsonl");
        let file = JsonlFile::new(&path, Rotation { max_bytes: 20, keep: 2 });
        for n in 0..10 {
            file.append(&[format!("{{\"n\":{n}}}").into_bytes()], false).unwrap();
        }
        // Each line is 8 bytes: two fit in 20, so five files were written
        // and the oldest two were deleted.
        let lines = file.read_lines().unwrap();
        assert_eq!(lines, vec!["{\"n\":4}", "{\"n\":5}", "{\"n\":6}", "{\"n\":7}", "{\"n\":8}", "{\"n\":9}"]);
        assert_eq!(file.read_last(3).unwrap(), vec!["{\"n\":7}", "{\"n\":8}", "{\"n\":9}"]);
        assert_eq!(file.read_last(100).unwrap(), lines);
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 20, "{}", p.display());
        }
    }

    #[test]
    fn a_reopened_file_keeps_counting_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        JsonlFile::new(&path, Rotation { max_bytes: 20, keep: 1 }).append(&[b"0123456789".to_vec()], true).unwrap();
        JsonlFile::new(&path, Rotation { max_bytes: 20, keep: 1 }).append(&[b"0123456789".to_vec()], true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0123456789\n");
        assert_eq!(std::fs::read_to_string(rotated(&path, 1)).unwrap(), "0123456789\n");
    }
}
