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

/// How deeply YAML may nest: serde_norway's own limit while it builds the
/// tree (no stack overflow), named in the message.
pub const MAX_YAML_DEPTH: usize = 128;

/// Reads a YAML document as a tree; a syntax error, or nesting deeper than
/// [`MAX_YAML_DEPTH`], is one problem for the file as a whole.
///
/// serde_norway stops at its depth limit only after its scanner has read the
/// whole text, and the scanner is quadratic in the nesting of flow
/// collections (100,000 `{a: ` take about a minute), so nesting is measured
/// first, in one linear pass.
pub fn read_yaml(text: &str) -> Result<Value, Problem> {
    check_yaml_depth(text)?;
    serde_norway::from_str(text).map_err(|e| {
        let message = e.to_string();
        let hint = if message.contains("recursion limit exceeded") {
            format!(" (YAML may nest at most {MAX_YAML_DEPTH} levels deep)")
        } else {
            String::new()
        };
        Problem::new("", format!("not valid YAML: {message}{hint}"))
    })
}

/// Refuses, in one linear pass, YAML nested deeper than [`MAX_YAML_DEPTH`]:
/// for readers that deserialize a text directly (policy files).
pub fn check_yaml_depth(text: &str) -> Result<(), Problem> {
    match too_deep(text) {
        None => Ok(()),
        Some(line) => Err(Problem::new(
            "",
            format!(
                "not valid YAML: nested deeper than {MAX_YAML_DEPTH} levels at line {line} (YAML may nest at most \
                 {MAX_YAML_DEPTH} levels deep)"
            ),
        )),
    }
}

/// The line where flow collections (`[`, `{`) or compact sequences
/// (`- - -`) nest deeper than [`MAX_YAML_DEPTH`], if anywhere. Quoted
/// scalars and comments are skipped; brackets inside plain scalars count,
/// which only matters for a text with more than the limit of them unclosed.
fn too_deep(text: &str) -> Option<usize> {
    let (mut depth, mut line, mut quote, mut comment) = (0usize, 1usize, None, false);
    let mut chars = text.chars().peekable();
    let mut previous = '\n';
    let mut dashes = 0usize;
    while let Some(c) = chars.next() {
        if c == '\n' {
            (line, comment, dashes) = (line + 1, false, 0);
            if quote.is_none() {
                previous = c;
                continue;
            }
        }
        match quote {
            Some('"') if c == '\\' => {
                chars.next();
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if comment => {}
            None => match c {
                '#' if previous.is_whitespace() => comment = true,
                '"' | '\'' if !previous.is_alphanumeric() => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth = depth.saturating_sub(1),
                '-' if (previous == '\n' || previous == ' ') && chars.peek() == Some(&' ') => dashes += 1,
                _ => {}
            },
        }
        if depth + dashes > MAX_YAML_DEPTH {
            return Some(line);
        }
        previous = c;
    }
    None
}

/// Deserializes one section into its spec; a serde error becomes a problem at
/// the key path where it happened (relative to the section).
pub fn from_section<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(at_its_path)
}

/// A serde error as a problem at the key path where it happened (`.`, the
/// document itself, is the empty path).
pub fn at_its_path<E: std::fmt::Display>(error: serde_path_to_error::Error<E>) -> Problem {
    let path = error.path().to_string();
    let path = if path == "." { String::new() } else { path };
    Problem::new(path, error.into_inner().to_string())
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
    fn deep_nesting_is_one_problem_in_linear_time() {
        let started = std::time::Instant::now();
        let cases = [
            "[".repeat(100_000),
            "{a: ".repeat(100_000),
            format!("{}1", "- ".repeat(100_000)),
            format!("{}1{}", "[".repeat(200), "]".repeat(200)),
        ];
        for text in cases {
            let p = read_yaml(&text).unwrap_err();
            assert!(p.message.contains("at most 128 levels"), "{}", p.message);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        let ok = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(read_yaml(&ok).is_ok());
        let quoted = format!("a: '{}'\nb: \"{}\" # {}\n", "[".repeat(300), "{".repeat(300), "[".repeat(300));
        assert!(read_yaml(&quoted).is_ok());
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
