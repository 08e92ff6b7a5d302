//! Validation of mesh YAML into [`MeshConfig`], collecting every problem.
//!
//! The file is first read as a generic YAML tree and its structure walked
//! (one file per group of sections), keeping key paths: serde's derive stops at
//! the first error, while users need all of them, each with its key path. A
//! product's `source:` is handed to its connector's spec
//! ([`agora_connectors::SourceSpec`]), which reads and validates itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agora_connectors::{Problem, check_mapping};
pub(crate) use agora_connectors::{describe, join};
use serde_norway::{Mapping, Value};

use super::{ConfigError, MeshConfig};

mod auth;
mod freshness;
mod limits;
mod mesh;
mod postgres;
mod sections;

pub(super) fn parse(text: &str, file: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<MeshConfig, ConfigError> {
    let root =
        agora_connectors::read_yaml(text).map_err(|p| ConfigError { file: file.to_path_buf(), problems: vec![p] })?;
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { std::env::current_dir().unwrap_or_default() } else { base };
    let base = std::path::absolute(&base).unwrap_or(base);

    let mut walker = Walker { problems: Vec::new(), env, base: &base };
    let domains = walker.mesh(&root);
    let auth = walker.auth(&root);
    let governance = walker.governance(&root);
    let lineage = walker.lineage(&root);
    let quality = walker.quality(&root);
    let limits = walker.limits(&root);
    let history = walker.history(&root);
    let freshness = walker.freshness(&root);
    if governance.is_none() && root.get("governance").is_none() {
        for d in domains.iter().filter(|d| d.policies.is_some()) {
            walker.problem(
                &format!("domains[{}].policies", d.name),
                "a domain policy file needs the mesh-wide governance section (governance.policies); without it the \
                 mesh would be open and this file ignored",
            );
        }
    }
    if walker.problems.is_empty() {
        Ok(MeshConfig {
            file: Some(file.to_path_buf()),
            domains,
            auth,
            governance,
            lineage,
            quality,
            limits,
            history,
            freshness,
        })
    } else {
        Err(ConfigError { file: file.to_path_buf(), problems: walker.problems })
    }
}

/// Walks a mesh file's YAML tree, collecting every problem with its path.
struct Walker<'a> {
    problems: Vec<Problem>,
    env: &'a dyn Fn(&str) -> Option<String>,
    base: &'a Path,
}

/// Is `name` usable as an unquoted SQL identifier? Lowercase only, because
/// unquoted identifiers are folded to lowercase by the SQL parser.
pub(crate) fn is_sql_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

impl Walker<'_> {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    /// Checks that `value` is a mapping whose keys are all in `allowed`.
    fn mapping<'v>(&mut self, value: &'v Value, path: &str, allowed: &[&str]) -> Option<&'v Mapping> {
        check_mapping(value, path, allowed, &mut self.problems)
    }

    /// Replaces `${VAR}` with the variable's value; `$$` is a literal `$`.
    fn interpolate(&mut self, raw: &str, path: &str) -> Option<String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        let mut ok = true;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    self.problem(path, "unterminated '${' (write '$$' for a literal '$')");
                    return None;
                };
                let name = &body[..end];
                match (self.env)(name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        self.problem(path, format!("environment variable '{name}' is not set"));
                        ok = false;
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        ok.then_some(out)
    }

    fn string(&mut self, map: &Mapping, key: &str, path: &str, required: bool) -> Option<String> {
        let path = join(path, key);
        match map.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.problem(&path, "missing (expected a string)");
                }
                None
            }
            Some(Value::String(s)) => self.interpolate(s, &path),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                self.problem(&path, format!("expected a string, found {}", describe(other)));
                None
            }
        }
    }

    fn boolean(&mut self, map: &Mapping, key: &str, path: &str) -> Option<bool> {
        let path = join(path, key);
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) => match self.interpolate(s, &path)?.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                other => {
                    self.problem(&path, format!("expected true or false, found '{other}'"));
                    None
                }
            },
            Some(other) => {
                self.problem(&path, format!("expected true or false, found {}", describe(other)));
                None
            }
        }
    }

    /// A secret named by an environment variable (`*_env` keys): the file holds the
    /// variable's name, never the secret.
    fn secret(&mut self, map: &Mapping, key: &str, path: &str) -> Option<String> {
        let var = self.string(map, key, path, false)?;
        match (self.env)(&var) {
            Some(v) => Some(v),
            None => {
                self.problem(&join(path, key), format!("environment variable '{var}' is not set"));
                None
            }
        }
    }

    fn sequence<'v>(&mut self, map: &'v Mapping, key: &str, path: &str, required: bool) -> &'v [Value] {
        match map.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.problem(&join(path, key), "missing (expected a list)");
                }
                &[]
            }
            Some(Value::Sequence(items)) => items,
            Some(other) => {
                self.problem(&join(path, key), format!("expected a list, found {}", describe(other)));
                &[]
            }
        }
    }

    /// The path segment of a list element: its name when it has one, else its index.
    fn element_path(path: &str, key: &str, index: usize, item: &Value) -> String {
        match item.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => format!("{}[{name}]", join(path, key)),
            _ => format!("{}[{index}]", join(path, key)),
        }
    }

    fn name(&mut self, map: &Mapping, path: &str) -> Option<String> {
        let name = self.string(map, "name", path, true)?;
        if !is_sql_identifier(&name) {
            self.problem(
                &join(path, "name"),
                format!("'{name}' is not a valid SQL identifier (expected lowercase letters, digits and '_', not starting with a digit, at most 63 characters)"),
            );
            return None;
        }
        Some(name)
    }

    /// A file path relative to the mesh file's directory.
    fn file_path(&mut self, map: &Mapping, key: &str, path: &str) -> Option<PathBuf> {
        let raw = self.string(map, key, path, false)?;
        if raw.is_empty() {
            self.problem(&join(path, key), "empty path");
            return None;
        }
        Some(self.base.join(raw))
    }

    fn string_list(&mut self, map: &Mapping, key: &str, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, item) in self.sequence(map, key, path, false).iter().enumerate() {
            match item.as_str() {
                Some(v) if !v.trim().is_empty() => out.push(v.to_string()),
                _ => self.problem(
                    &format!("{}[{i}]", join(path, key)),
                    format!("expected a non-empty string, found {}", describe(item)),
                ),
            }
        }
        out
    }

    fn attributes(&mut self, map: &Mapping, path: &str) -> BTreeMap<String, String> {
        self.attributes_from(map, "attributes", path)
    }

    /// A mapping of names to string values (numbers and booleans as text).
    fn attributes_from(&mut self, map: &Mapping, key: &str, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(value) = map.get(key) else { return out };
        let path = join(path, key);
        let Value::Mapping(entries) = value else {
            self.problem(&path, format!("expected a mapping of attribute name to value, found {}", describe(value)));
            return out;
        };
        for (k, v) in entries {
            let Some(name) = k.as_str() else {
                self.problem(&path, "attribute names must be strings");
                continue;
            };
            let apath = join(&path, name);
            let value = match v {
                Value::String(s) => self.interpolate(s, &apath),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                other => {
                    self.problem(&apath, format!("expected a string, found {}", describe(other)));
                    None
                }
            };
            if let Some(v) = value {
                out.insert(name.to_string(), v);
            }
        }
        out
    }

    /// A secret given either by an environment variable (`<key>_env`) or a file
    /// (`<key>_file`, relative to the mesh file).
    fn secret_from_env_or_file(&mut self, map: &Mapping, key: &str, path: &str, required: bool) -> Option<String> {
        let env_key = format!("{key}_env");
        let file_key = format!("{key}_file");
        match (map.contains_key(env_key.as_str()), map.contains_key(file_key.as_str())) {
            (true, true) => {
                self.problem(path, format!("give either {env_key} or {file_key}, not both"));
                None
            }
            (true, false) => self.secret(map, &env_key, path),
            (false, true) => {
                let raw = self.string(map, &file_key, path, true)?;
                let file =
                    if Path::new(&raw).is_absolute() { Path::new(&raw).to_path_buf() } else { self.base.join(&raw) };
                match std::fs::read_to_string(&file) {
                    Ok(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
                    Ok(_) => {
                        self.problem(&join(path, &file_key), format!("file {} is empty", file.display()));
                        None
                    }
                    Err(e) => {
                        self.problem(&join(path, &file_key), format!("cannot read {}: {e}", file.display()));
                        None
                    }
                }
            }
            (false, false) => {
                if required {
                    self.problem(path, format!("missing {env_key} or {file_key}"));
                }
                None
            }
        }
    }
}
