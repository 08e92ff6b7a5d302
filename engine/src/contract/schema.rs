//! Contracts checked against the ODCS JSON Schema (vendored under
//! `engine/schemas/`, see its README), so that what Agora accepts is what the
//! standard says, not only what it reads.
//!
//! Every v3 contract is checked against the newest schema Agora reads
//! (v3.2.0), whose `apiVersion` lists v3.0.x and v3.1.x too: Agora has always
//! read the later fields (metric rules, `enum`, numeric `logicalTypeOptions`)
//! in a contract of any v3 version, and keeps doing so.

use std::sync::OnceLock;

use serde_norway::Value;

use agora_connectors::Problem;

/// The schema every `apiVersion: v3.…` contract is checked against.
const SCHEMA: &str = include_str!("../../schemas/odcs-json-schema-v3.2.0.json");

/// The schema compiled once, on first use.
static VALIDATOR: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();

/// The schema's problems with a contract, at the contract's key paths
/// (`schema[0].properties[1].logicalType`). A version Agora does not read is
/// the walker's to report, so it yields none here.
pub(super) fn check(root: &Value) -> Vec<Problem> {
    let Some(version) = root.get("apiVersion").and_then(Value::as_str) else { return Vec::new() };
    if !version.starts_with("v3.") {
        return Vec::new();
    }
    let validator = VALIDATOR.get_or_init(|| {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).map_err(|e| e.to_string())?;
        jsonschema::options().should_validate_formats(false).build(&schema).map_err(|e| e.to_string())
    });
    let validator = match validator {
        Ok(v) => v,
        Err(e) => return vec![Problem::new("", format!("the vendored ODCS schema does not compile: {e}"))],
    };
    // YAML without a JSON form (non-string keys…) is the walker's to report.
    let Ok(instance) = serde_json::to_value(root) else { return Vec::new() };
    validator
        .iter_errors(&instance)
        .map(|error| {
            let mut path = key_path(error.instance_path().segments());
            if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind()
                && let Some(property) = property.as_str()
            {
                path = agora_connectors::join(&path, property);
            }
            Problem::new(path, format!("not valid ODCS: {error}"))
        })
        .collect()
}

/// A JSON pointer's segments as a key path: `a.b[0].c`.
fn key_path<'a>(segments: impl Iterator<Item = jsonschema::paths::LocationSegment<'a>>) -> String {
    let mut path = String::new();
    for segment in segments {
        match segment {
            jsonschema::paths::LocationSegment::Index(i) => path.push_str(&format!("[{i}]")),
            jsonschema::paths::LocationSegment::Property(key) => path = agora_connectors::join(&path, &key),
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<Problem> {
        check(&serde_norway::from_str(yaml).unwrap())
    }

    #[test]
    fn every_vendored_schema_compiles_and_accepts_a_minimal_contract() {
        for version in ["v3.0.2", "v3.1.0", "v3.2.0"] {
            let yaml = format!("apiVersion: {version}\nkind: DataContract\nid: x\nversion: 1.0.0\nstatus: active\n");
            assert_eq!(problems(&yaml), vec![], "{version}");
        }
    }

    #[test]
    fn schema_errors_name_the_key_path() {
        let yaml = "apiVersion: v3.0.2\nkind: DataContract\nid: x\nversion: 1.0.0\nstatus: active\n\
                    schema:\n  - name: t\n    properties:\n      - name: a\n        logicalType: long\n";
        let found = problems(yaml);
        assert!(found.iter().any(|p| p.path == "schema[0].properties[0].logicalType"), "{found:?}");
        let found = problems("apiVersion: v3.1.0\nkind: DataContract\nid: x\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "version");
    }
}
