use std::fmt;
use std::path::{Path, PathBuf};

pub use agora_connectors::Problem;

/// Every problem found in a mesh file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// The problems, in file order; never empty.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub(crate) fn single(file: &Path, path: &str, message: String) -> Self {
        ConfigError { file: file.to_path_buf(), problems: vec![Problem::new(path, message)] }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{}: {n} problem{} in the mesh configuration", self.file.display(), if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            if p.path.is_empty() {
                write!(f, "\n  {}: {}", self.file.display(), p.message)?;
            } else {
                write!(f, "\n  {}: {}: {}", self.file.display(), p.path, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
