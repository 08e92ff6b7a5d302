//! [`Problem`]: one thing wrong in a file Agora reads, at a key path.
//!
//! Mesh files, data contracts and policy files all report their mistakes as
//! problems, so that a user sees every one of them, each where it is, in one
//! round. It lives here, beside the connectors, because each connector's
//! source spec validates itself (see [`crate::SourceSpec`]).

use serde_norway::{Mapping, Value};

/// One thing wrong in a YAML file Agora reads (a mesh file, a contract, a
/// policy file), at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: a key path such as `domains[sales].products[orders].source.location`
    /// (empty for the file as a whole).
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Problem {
    /// A problem at `path`, so call sites read as one line.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { path: path.into(), message: message.into() }
    }

    /// The same problem seen from an enclosing section: `prefix` goes in front
    /// of the path, since a section validates itself with paths of its own.
    pub fn under(self, prefix: &str) -> Self {
        Problem { path: join(prefix, &self.path), message: self.message }
    }
}

/// `path.key`, or `key` at the top (and `path` for an empty key): the key
/// paths problems are reported at.
pub fn join(path: &str, key: &str) -> String {
    match (path.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => path.to_string(),
        (false, false) => format!("{path}.{key}"),
    }
}

/// What a YAML value is, in words, for "expected …, found …" messages.
pub fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Checks that `value` is a mapping whose keys are all in `allowed`, pushing
/// one problem per stray key: serde's `deny_unknown_fields` stops at the first.
pub fn check_mapping<'v>(
    value: &'v Value,
    path: &str,
    allowed: &[&str],
    problems: &mut Vec<Problem>,
) -> Option<&'v Mapping> {
    let Value::Mapping(map) = value else {
        problems.push(Problem::new(
            path,
            format!("expected a mapping with keys {}, found {}", allowed.join(", "), describe(value)),
        ));
        return None;
    };
    for key in map.keys() {
        match key.as_str() {
            Some(k) if allowed.contains(&k) => {}
            Some(k) => problems.push(Problem::new(
                join(path, k),
                format!("unknown key '{k}' (expected one of: {})", allowed.join(", ")),
            )),
            None => problems.push(Problem::new(path, format!("keys must be strings, found {}", describe(key)))),
        }
    }
    Some(map)
}

/// Deserializes one section into its spec; a serde error becomes a problem at
/// the key path where it happened (relative to the section).
pub fn from_section<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Problem::new(path, e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_and_nest() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a", "b"), "a.b");
        assert_eq!(Problem::new("location", "x").under("source").path, "source.location");
        assert_eq!(Problem::new("", "x").under("source").path, "source");
    }

    #[test]
    fn every_stray_key_is_reported() {
        let value: Value = serde_norway::from_str("{a: 1, b: 2, c: 3}").unwrap();
        let mut problems = Vec::new();
        assert!(check_mapping(&value, "s", &["a"], &mut problems).is_some());
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["s.b", "s.c"]);
    }
}
