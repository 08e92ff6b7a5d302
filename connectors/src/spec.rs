//! Source specs: a product's `source:` section of mesh.yaml, as each
//! connector declares it, and how a spec becomes a [`Source`].
//!
//! Every connector defines its spec next to its code (`ParquetSpec` in
//! `parquet.rs`, …): a plain `#[derive(Deserialize)]` struct that lists its keys
//! and validates itself into a [`Source`]. [`SourceSpec`] dispatches on `kind`.
//!
//! Adding a connector:
//! 1. one file `src/<name>.rs`: the connector, its `<Name>Source`, and its
//!    `<Name>Spec` (`#[derive(Deserialize)]`, `KEYS`, `into_source`);
//! 2. one variant in [`SourceSpec`] and its line in [`CONNECTORS`] (the `kind`
//!    written in mesh.yaml, the keys, the spec);
//! 3. one variant in [`Source`] (`lib.rs`): the compiler then lists the match
//!    arms to fill in (`kind`, `location`, `probe`, `modified`, `open`,
//!    [`SourceSpec::into_source`]);
//! 4. the new `kind` in docs/configuration.md and docs/connectors.md.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};
use serde_norway::Value;

use crate::problem::{check_mapping, describe, from_section};
use crate::{DeltaSpec, ObjectStoreSettings, ParquetSpec, PostgresConnection, PostgresSpec, Problem, Source};

/// A product's `source:` section, one variant per connector. The YAML is
/// tagged by `kind` (`kind: parquet`); [`SourceSpec::from_value`] reads it
/// reporting every problem with its key path.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceSpec {
    /// `kind: parquet`: files on a file system or object store.
    Parquet(ParquetSpec),
    /// `kind: delta`: a Delta Lake table.
    Delta(DeltaSpec),
    /// `kind: postgres`: a table or view of the domain's database.
    Postgres(PostgresSpec),
}

/// How a connector's spec is read: the `kind` it answers to, the keys its
/// section may hold (`kind` included) and its deserializer.
type Registration = (&'static str, &'static [&'static str], fn(Value) -> Result<SourceSpec, Problem>);

/// The connectors, in the order messages list them. Adding a connector: see
/// the checklist at the top of this file.
const CONNECTORS: &[Registration] = &[
    ("parquet", ParquetSpec::KEYS, |v| from_section(v).map(SourceSpec::Parquet)),
    ("delta", DeltaSpec::KEYS, |v| from_section(v).map(SourceSpec::Delta)),
    ("postgres", PostgresSpec::KEYS, |v| from_section(v).map(SourceSpec::Postgres)),
];

/// What a spec needs from the mesh around it to become a [`Source`]: the
/// mesh file's directory, the domain's storage and database, and the names
/// the product is queried by.
#[derive(Debug, Clone, Copy)]
pub struct SourceContext<'a> {
    /// Directory relative locations resolve against (the mesh file's).
    pub base: &'a Path,
    /// The domain's object-store settings (`storage:`).
    pub storage: &'a ObjectStoreSettings,
    /// The domain's PostgreSQL connection (`postgres:`), if it has one.
    pub postgres: Option<&'a Arc<PostgresConnection>>,
    /// The domain's SQL name: a PostgreSQL source is planned under it.
    pub domain: &'a str,
    /// The product's SQL name, likewise.
    pub product: &'a str,
}

impl SourceSpec {
    /// Reads a `source:` section: its `kind`, then its keys (every stray key
    /// reported), then the connector's spec. Problem paths are relative to
    /// the section.
    pub fn from_value(value: &Value) -> Result<SourceSpec, Vec<Problem>> {
        let expected = expected_kinds();
        let kind = value.get("kind").and_then(Value::as_str);
        let Some(kind) = kind else {
            return Err(vec![Problem::new("kind", format!("missing (expected {expected})"))]);
        };
        let Some((_, keys, read)) = CONNECTORS.iter().find(|(name, ..)| *name == kind) else {
            return Err(vec![Problem::new("kind", format!("unknown source kind '{kind}' (expected {expected})"))]);
        };
        let mut problems = Vec::new();
        let map = check_mapping(value, "", keys, &mut problems);
        // Stray keys are reported above; the spec reads the known ones, so
        // that their problems are reported too.
        let mut known = map.cloned().unwrap_or_default();
        known.retain(|k, _| k.as_str().is_some_and(|k| k != "kind" && keys.contains(&k)));
        match read(Value::Mapping(known)) {
            Ok(spec) if problems.is_empty() => Ok(spec),
            Ok(_) => Err(problems),
            Err(p) => {
                problems.push(p);
                Err(problems)
            }
        }
    }

    /// Validates the spec and builds its [`Source`], with every problem found
    /// (paths relative to the section).
    pub fn into_source(self, ctx: &SourceContext<'_>) -> Result<Source, Vec<Problem>> {
        match self {
            SourceSpec::Parquet(spec) => spec.into_source(ctx),
            SourceSpec::Delta(spec) => spec.into_source(ctx),
            SourceSpec::Postgres(spec) => spec.into_source(ctx),
        }
    }
}

/// "parquet, delta or postgres": the kinds, for messages.
fn expected_kinds() -> String {
    let names: Vec<&str> = CONNECTORS.iter().map(|(name, ..)| *name).collect();
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// A string field that also takes numbers as text (`location: 2024`), with
/// the message the mesh walker gives for other types.
pub(crate) fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!("expected a string, found {}", describe(&other)))),
    }
}

/// A required location (`location:`), resolved against the mesh file's
/// directory: a problem at `location` when missing or malformed.
pub(crate) fn location(raw: Option<String>, base: &Path) -> Result<url::Url, Vec<Problem>> {
    let raw = raw.ok_or_else(|| vec![Problem::new("location", "missing (expected a string)")])?;
    crate::location::resolve(&raw, base).map_err(|message| vec![Problem::new("location", message)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(yaml: &str) -> Result<SourceSpec, Vec<Problem>> {
        SourceSpec::from_value(&serde_norway::from_str(yaml).unwrap())
    }

    #[test]
    fn kinds_are_checked_with_the_list_of_connectors() {
        let p = read("{kind: iceberg, location: x}").unwrap_err();
        assert_eq!(p[0].path, "kind");
        assert_eq!(p[0].message, "unknown source kind 'iceberg' (expected parquet, delta or postgres)");
        let p = read("{location: x}").unwrap_err();
        assert_eq!(p[0].message, "missing (expected parquet, delta or postgres)");
        let p = read("[1]").unwrap_err();
        assert_eq!(p[0].path, "kind");
    }

    #[test]
    fn every_stray_key_is_reported() {
        let p = read("{kind: delta, location: x, colour: blue, size: 3}").unwrap_err();
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["colour", "size"]);
        assert_eq!(p[0].message, "unknown key 'colour' (expected one of: kind, location)");
    }

    #[test]
    fn stray_keys_do_not_hide_the_problems_of_known_ones() {
        let p = read("{kind: parquet, colour: blue, partition_columns: {year: float}}").unwrap_err();
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["colour", "partition_columns.year"]);
    }

    #[test]
    fn the_dispatch_table_reads_what_serde_reads() {
        for yaml in [
            "{kind: parquet, location: x, partition_columns: {year: int64, day: date}}",
            "{kind: delta, location: s3://b/t}",
            "{kind: postgres, table: erp.orders}",
        ] {
            let tagged: SourceSpec = serde_norway::from_str(yaml).unwrap();
            assert_eq!(read(yaml).unwrap(), tagged, "{yaml}");
        }
    }

    #[test]
    fn field_errors_have_their_key_path() {
        let p = read("{kind: parquet, location: x, partition_columns: {year: float}}").unwrap_err();
        assert_eq!(p[0].path, "partition_columns.year");
        assert!(p[0].message.contains("unknown partition type 'float'"), "{}", p[0].message);
        let p = read("{kind: delta, location: [x]}").unwrap_err();
        assert_eq!((p[0].path.as_str(), p[0].message.as_str()), ("location", "expected a string, found a list"));
    }
}
