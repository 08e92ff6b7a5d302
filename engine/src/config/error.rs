use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong in a YAML file Agora reads (a mesh file, a contract), at a
/// key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: a key path such as `domains[sales].products[orders].source.location`
    /// (empty for the file as a whole).
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Every problem found in a mesh file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// The problems, in file order; never empty.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    pub(crate) fn single(file: &Path, path: &str, message: String) -> Self {
        ConfigError { file: file.to_path_buf(), problems: vec![ConfigProblem { path: path.to_string(), message }] }
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
