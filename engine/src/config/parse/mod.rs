//! Validation of mesh YAML into [`MeshConfig`], collecting every problem.
//!
//! The file is first read as a generic YAML tree and then walked by hand: serde's
//! derive stops at the first error, while users need all of them, each with its
//! key path.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use agora_connectors::{
    DEFAULT_READ_PARTITIONS, DeltaSource, ObjectStoreSettings, ParquetSource, PartitionColumn, PartitionType,
    PostgresConnection, PostgresSource, Source,
};
use serde_norway::{Mapping, Value};

use crate::identity::{
    AuthConfig, ServiceTokenConfig, UserConfig, check_password_hash, is_reserved_principal, token_digest,
};
use crate::jwt::{JwksSource, JwtConfig};

use super::{
    AuditConfig, ChainKey, ConfigError, ConfigProblem, DomainConfig, GovernanceConfig, LineageConfig, LineageSink,
    MeshConfig, Owner, ProductConfig, RESERVED_SCHEMAS, SchemaAttachment, location,
};
use crate::contract::Contract;
use crate::history::HistoryConfig;

mod freshness;
mod limits;

pub(super) fn parse(text: &str, file: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<MeshConfig, ConfigError> {
    let root: Value =
        serde_norway::from_str(text).map_err(|e| ConfigError::single(file, "", format!("not valid YAML: {e}")))?;
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

struct Walker<'a> {
    problems: Vec<ConfigProblem>,
    env: &'a dyn Fn(&str) -> Option<String>,
    base: &'a Path,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn describe(value: &Value) -> &'static str {
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
        self.problems.push(ConfigProblem { path: path.to_string(), message: message.into() });
    }

    /// Checks a user's or service token's name: unique among identities and
    /// not one of the engine's reserved principals.
    fn identity_name(&mut self, name: Option<&str>, path: &str, names: &mut HashSet<String>) {
        let Some(name) = name else { return };
        if !names.insert(name.to_string()) {
            self.problem(&join(path, "name"), format!("duplicate user or service name '{name}'"));
        }
        if is_reserved_principal(name) {
            self.problem(
                &join(path, "name"),
                format!(
                    "'{name}' is reserved for the engine's own principals (local, anonymous, agora-…): policies \
                     that name it must not reach a configured identity; choose another name"
                ),
            );
        }
    }

    /// Checks that `value` is a mapping whose keys are all in `allowed`.
    fn mapping<'v>(&mut self, value: &'v Value, path: &str, allowed: &[&str]) -> Option<&'v Mapping> {
        let Value::Mapping(map) = value else {
            self.problem(
                path,
                format!("expected a mapping with keys {}, found {}", allowed.join(", "), describe(value)),
            );
            return None;
        };
        for key in map.keys() {
            match key.as_str() {
                Some(k) if allowed.contains(&k) => {}
                Some(k) => {
                    self.problem(&join(path, k), format!("unknown key '{k}' (expected one of: {})", allowed.join(", ")))
                }
                None => self.problem(path, format!("keys must be strings, found {}", describe(key))),
            }
        }
        Some(map)
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

    fn mesh(&mut self, root: &Value) -> Vec<DomainConfig> {
        let Some(map) = self.mapping(
            root,
            "",
            &["domains", "auth", "governance", "lineage", "quality", "limits", "history", "freshness"],
        ) else {
            return Vec::new();
        };
        let items = self.sequence(map, "domains", "", true);
        let mut seen = HashSet::new();
        let mut domains = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = Self::element_path("", "domains", i, item);
            // Name clashes are checked on the raw name so that they are reported
            // even when the rest of the element is invalid.
            let unique = match item.get("name").and_then(Value::as_str) {
                Some(name) if RESERVED_SCHEMAS.contains(&name) => {
                    self.problem(
                        &join(&path, "name"),
                        format!("'{name}' is reserved for the engine's own tables; choose another domain name"),
                    );
                    false
                }
                Some(name) if !seen.insert(name.to_string()) => {
                    self.problem(&join(&path, "name"), format!("duplicate domain name '{name}'"));
                    false
                }
                _ => true,
            };
            if let Some(domain) = self.domain(item, &path)
                && unique
            {
                domains.push(domain);
            }
        }
        if items.is_empty() && self.problems.is_empty() {
            self.problem("domains", "a mesh needs at least one domain");
        }
        domains
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

    fn governance(&mut self, root: &Value) -> Option<GovernanceConfig> {
        let value = root.get("governance")?;
        let path = "governance";
        let map = self.mapping(value, path, &["policies", "audit"])?;
        let policies = self.file_path(map, "policies", path);
        if policies.is_none() && map.get("policies").is_none() {
            self.problem(&join(path, "policies"), "missing (the mesh-wide policy file, e.g. policies.yaml)");
        }
        let mut audit = AuditConfig { path: self.base.join("audit/audit.jsonl"), ..AuditConfig::default() };
        if let Some(value) = map.get("audit") {
            let apath = join(path, "audit");
            let keys = [
                "path",
                "max_bytes",
                "keep",
                "archive_dir",
                "max_age_days",
                "quota_bytes_per_minute",
                "chain_key_env",
                "chain_key_file",
            ];
            if let Some(amap) = self.mapping(value, &apath, &keys) {
                if let Some(p) = self.file_path(amap, "path", &apath) {
                    audit.path = p;
                }
                if amap.get("archive_dir").is_some() {
                    audit.archive_dir = self.file_path(amap, "archive_dir", &apath);
                }
                if let Some(key) = self.secret_from_env_or_file(amap, "chain_key", &apath, false) {
                    if key.trim().len() < 16 {
                        self.problem(&join(&apath, "chain_key"), "the chain key must hold at least 16 bytes");
                    } else {
                        audit.chain_key = Some(ChainKey(key.trim().as_bytes().into()));
                    }
                }
                let mut max_age = 0;
                for (key, slot) in [
                    ("max_bytes", &mut audit.max_bytes),
                    ("keep", &mut audit.keep),
                    ("quota_bytes_per_minute", &mut audit.quota_bytes_per_minute),
                    ("max_age_days", &mut max_age),
                ] {
                    match amap.get(key) {
                        None => {}
                        Some(v) => match v.as_u64() {
                            Some(n) if n > 0 => *slot = n,
                            _ => self.problem(
                                &join(&apath, key),
                                format!("expected a positive integer, found {}", describe(v)),
                            ),
                        },
                    }
                }
                if max_age > 0 {
                    audit.max_age_days = Some(max_age);
                }
                if audit.archive_dir.as_ref().is_some_and(|d| Some(d.as_path()) == audit.path.parent()) {
                    self.problem(
                        &join(&apath, "archive_dir"),
                        "must not be the directory of the audit file (the archive would mix with the live log)",
                    );
                }
            }
        }
        Some(GovernanceConfig { policies: policies?, audit })
    }

    /// The product's data contract: the file named by `contract`, or else a
    /// `<location>.odcs.yaml` beside a local product's data.
    fn contract(&mut self, map: &Mapping, path: &str, product: &str, source: &Source) -> Option<Arc<Contract>> {
        let (file, explicit) = match self.file_path(map, "contract", path) {
            Some(file) => (file, true),
            None => {
                let location = source.location();
                if location.scheme() != "file" || matches!(source, Source::Postgres(_)) {
                    return None;
                }
                let data = location.to_file_path().ok()?;
                let mut name = data.as_os_str().to_owned();
                name.push(".odcs.yaml");
                let beside = PathBuf::from(name);
                if !beside.is_file() {
                    return None;
                }
                (beside, false)
            }
        };
        let key = join(path, "contract");
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                let how = if explicit { "" } else { " (found beside the data)" };
                self.problem(&key, format!("cannot read the contract {}{how}: {e}", file.display()));
                return None;
            }
        };
        match Contract::parse(&text, &file, product) {
            Ok(contract) => Some(Arc::new(contract)),
            Err(problems) => {
                for p in problems {
                    let at = if p.path.is_empty() { String::new() } else { format!(" at {}", p.path) };
                    self.problem(&key, format!("invalid contract {}{at}: {}", file.display(), p.message));
                }
                None
            }
        }
    }

    fn lineage(&mut self, root: &Value) -> Option<LineageConfig> {
        let value = root.get("lineage")?;
        let path = "lineage";
        let map = self.mapping(value, path, &["path", "url", "namespace"])?;
        let file = self.file_path(map, "path", path);
        let url = self.string(map, "url", path, false);
        let namespace = self.string(map, "namespace", path, false).unwrap_or_else(|| "agora".to_string());
        let sink = match (file, url) {
            (Some(file), None) => LineageSink::File(file),
            (None, Some(url)) => match url::Url::parse(&url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => LineageSink::Http(u),
                _ => {
                    self.problem(
                        &join(path, "url"),
                        format!("expected an http(s) URL such as http://127.0.0.1:5000/api/v1/lineage, found '{url}'"),
                    );
                    return None;
                }
            },
            (Some(_), Some(_)) => {
                self.problem(path, "give either path (a JSON Lines file) or url (an HTTP endpoint), not both");
                return None;
            }
            (None, None) => {
                if map.get("path").is_none() {
                    self.problem(path, "missing path (a JSON Lines file) or url (an HTTP endpoint)");
                }
                return None;
            }
        };
        Some(LineageConfig { sink, namespace })
    }

    fn quality(&mut self, root: &Value) -> PathBuf {
        let default = self.base.join("quality/results.jsonl");
        let Some(value) = root.get("quality") else { return default };
        let Some(map) = self.mapping(value, "quality", &["results"]) else { return default };
        self.file_path(map, "results", "quality").unwrap_or(default)
    }

    fn history(&mut self, root: &Value) -> HistoryConfig {
        let mut config = HistoryConfig { path: Some(self.base.join("history/queries.jsonl")), ..Default::default() };
        let Some(value) = root.get("history") else { return config };
        let keys = ["path", "keep", "max_file_bytes", "keep_files"];
        let Some(map) = self.mapping(value, "history", &keys) else { return config };
        if let Some(path) = self.file_path(map, "path", "history") {
            config.path = Some(path);
        }
        if let Some(keep) = self.positive(map, "keep", "history") {
            config.keep = usize::try_from(keep).unwrap_or(usize::MAX).min(1_000_000);
        }
        if let Some(bytes) = self.positive(map, "max_file_bytes", "history") {
            config.rotation.max_bytes = bytes;
        }
        if let Some(files) = self.positive(map, "keep_files", "history") {
            config.rotation.keep = files;
        }
        config
    }

    fn owner(&mut self, value: &Value, path: &str) -> Option<Owner> {
        let map = self.mapping(value, path, &["name", "contact"])?;
        let name = self.string(map, "name", path, true);
        let contact = self.string(map, "contact", path, true);
        Some(Owner { name: name?, contact: contact? })
    }

    fn storage(&mut self, map: &Mapping, path: &str) -> ObjectStoreSettings {
        let Some(value) = map.get("storage") else { return ObjectStoreSettings::default() };
        let path = join(path, "storage");
        let keys =
            ["endpoint", "region", "allow_http", "access_key_id_env", "secret_access_key_env", "session_token_env"];
        let Some(map) = self.mapping(value, &path, &keys) else { return ObjectStoreSettings::default() };
        let endpoint = self.string(map, "endpoint", &path, false);
        if let Some(e) = &endpoint
            && url::Url::parse(e).is_err()
        {
            self.problem(
                &join(&path, "endpoint"),
                format!("malformed URL '{e}' (expected e.g. http://127.0.0.1:9000)"),
            );
        }
        ObjectStoreSettings {
            endpoint,
            region: self.string(map, "region", &path, false),
            allow_http: self.boolean(map, "allow_http", &path).unwrap_or(false),
            access_key_id: self.secret(map, "access_key_id_env", &path),
            secret_access_key: self.secret(map, "secret_access_key_env", &path),
            session_token: self.secret(map, "session_token_env", &path),
        }
    }

    fn domain(&mut self, value: &Value, path: &str) -> Option<DomainConfig> {
        let map = self.mapping(
            value,
            path,
            &["name", "description", "owner", "storage", "postgres", "attach", "policies", "products"],
        )?;
        let name = self.name(map, path);
        let policies = self.file_path(map, "policies", path);
        let postgres = self.postgres(map, path, name.as_deref().unwrap_or("?"));
        let description = self.string(map, "description", path, true);
        let owner = match map.get("owner") {
            Some(v) => self.owner(v, &join(path, "owner")),
            None => {
                self.problem(&join(path, "owner"), "missing (expected a mapping with name and contact)");
                None
            }
        };
        let storage = self.storage(map, path);
        let attach = self.attach(map, path, postgres.is_some());
        // With an attached schema, explicit products are optional.
        let items = self.sequence(map, "products", path, map.get("attach").is_none());
        let mut seen = HashSet::new();
        let mut products = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ppath = Self::element_path(path, "products", i, item);
            let unique = match item.get("name").and_then(Value::as_str) {
                Some(name) if !seen.insert(name.to_string()) => {
                    self.problem(&join(&ppath, "name"), format!("duplicate product name '{name}' in this domain"));
                    false
                }
                _ => true,
            };
            if let Some(product) = self.product(item, &ppath, owner.as_ref(), &storage, postgres.as_ref())
                && unique
            {
                products.push(product);
            }
        }
        Some(DomainConfig {
            name: name?,
            description: description?,
            owner: owner?,
            storage,
            policies,
            postgres,
            attach,
            products,
        })
    }

    fn product(
        &mut self,
        value: &Value,
        path: &str,
        domain_owner: Option<&Owner>,
        storage: &ObjectStoreSettings,
        postgres: Option<&Arc<PostgresConnection>>,
    ) -> Option<ProductConfig> {
        let map = self.mapping(value, path, &["name", "description", "owner", "tags", "source", "contract"])?;
        let name = self.name(map, path);
        let description = self.string(map, "description", path, true);
        let owner = match map.get("owner") {
            Some(v) => self.owner(v, &join(path, "owner")),
            None => domain_owner.cloned(),
        };
        let mut tags = Vec::new();
        for (i, tag) in self.sequence(map, "tags", path, false).iter().enumerate() {
            match tag.as_str() {
                Some(t) if !t.trim().is_empty() => tags.push(t.to_string()),
                _ => self.problem(
                    &format!("{}[{i}]", join(path, "tags")),
                    format!("expected a non-empty string, found {}", describe(tag)),
                ),
            }
        }
        let source = match map.get("source") {
            Some(v) => self.source(v, &join(path, "source"), storage, postgres),
            None => {
                self.problem(&join(path, "source"), "missing (expected a mapping with kind and location)");
                None
            }
        };
        let source = source?;
        let contract = self.contract(map, path, name.as_deref()?, &source);
        Some(ProductConfig { name: name?, description: description?, owner: owner?, tags, source, contract })
    }

    fn source(
        &mut self,
        value: &Value,
        path: &str,
        storage: &ObjectStoreSettings,
        postgres: Option<&Arc<PostgresConnection>>,
    ) -> Option<Source> {
        let kind = value.get("kind").and_then(Value::as_str);
        let keys: &[&str] = match kind {
            Some("parquet") => &["kind", "location", "partition_columns"],
            Some("delta") => &["kind", "location"],
            Some("postgres") => return self.postgres_source(value, path, postgres),
            Some(other) => {
                self.problem(
                    &join(path, "kind"),
                    format!("unknown source kind '{other}' (expected parquet, delta or postgres)"),
                );
                return None;
            }
            None => {
                self.problem(&join(path, "kind"), "missing (expected parquet, delta or postgres)");
                return None;
            }
        };
        let map = self.mapping(value, path, keys)?;
        let raw = self.string(map, "location", path, true)?;
        let location = match location::resolve(&raw, self.base) {
            Ok(url) => url,
            Err(message) => {
                self.problem(&join(path, "location"), message);
                return None;
            }
        };
        let store = storage.clone();
        match kind {
            Some("parquet") => {
                let partition_columns = self.partition_columns(map, path);
                Some(Source::Parquet(ParquetSource { location, partition_columns, store }))
            }
            _ => Some(Source::Delta(DeltaSource { location, store })),
        }
    }

    fn partition_columns(&mut self, map: &Mapping, path: &str) -> Option<Vec<PartitionColumn>> {
        let path = join(path, "partition_columns");
        let value = map.get("partition_columns")?;
        let Value::Mapping(columns) = value else {
            self.problem(
                &path,
                format!("expected a mapping of column name to type (string, int64, date), found {}", describe(value)),
            );
            return None;
        };
        // Order follows the file, which must match the directory nesting.
        let mut out = Vec::new();
        for (k, v) in columns {
            let Some(name) = k.as_str() else {
                self.problem(&path, "column names must be strings");
                continue;
            };
            let cpath = join(&path, name);
            let data_type = match v.as_str() {
                Some("string") | Some("utf8") => PartitionType::Utf8,
                Some("int64") | Some("bigint") | Some("int") => PartitionType::Int64,
                Some("date") => PartitionType::Date,
                _ => {
                    self.problem(&cpath, format!("unknown partition type {v:?} (expected string, int64 or date)"));
                    continue;
                }
            };
            out.push(PartitionColumn { name: name.to_string(), data_type });
        }
        Some(out)
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

    fn auth(&mut self, root: &Value) -> AuthConfig {
        let default = AuthConfig { token_ttl: std::time::Duration::from_secs(3600), ..AuthConfig::default() };
        let Some(value) = root.get("auth") else { return default };
        let path = "auth";
        let keys = [
            "allow_anonymous",
            "token_ttl_seconds",
            "signing_key_env",
            "signing_key_file",
            "users",
            "service_tokens",
            "jwt",
            "max_failed_logins",
            "lockout_seconds",
        ];
        let Some(map) = self.mapping(value, path, &keys) else { return default };
        let allow_anonymous = self.boolean(map, "allow_anonymous", path).unwrap_or(false);
        let token_ttl = match map.get("token_ttl_seconds") {
            None => default.token_ttl,
            Some(v) => match v.as_u64() {
                Some(secs) if secs > 0 => std::time::Duration::from_secs(secs),
                _ => {
                    self.problem(
                        &join(path, "token_ttl_seconds"),
                        format!("expected a positive number of seconds, found {}", describe(v)),
                    );
                    default.token_ttl
                }
            },
        };
        let signing_key = self.secret_from_env_or_file(map, "signing_key", path, false).map(String::into_bytes);
        if let Some(key) = &signing_key
            && key.len() < 32
        {
            self.problem(&join(path, "signing_key_env"), "the signing key must be at least 32 bytes long");
        }

        let mut users = Vec::new();
        let mut names = HashSet::new();
        for (i, item) in self.sequence(map, "users", path, false).iter().enumerate() {
            let upath = Self::element_path(path, "users", i, item);
            let Some(umap) = self.mapping(item, &upath, &["name", "password_hash", "groups", "attributes"]) else {
                continue;
            };
            let name = self.string(umap, "name", &upath, true);
            let hash = self.string(umap, "password_hash", &upath, true);
            if let Some(h) = &hash
                && let Err(message) = check_password_hash(h)
            {
                self.problem(&join(&upath, "password_hash"), message);
            }
            let groups = self.string_list(umap, "groups", &upath);
            let attributes = self.attributes(umap, &upath);
            self.identity_name(name.as_deref(), &upath, &mut names);
            if let (Some(name), Some(password_hash)) = (name, hash) {
                users.push(UserConfig { name, password_hash, groups, attributes });
            }
        }

        let mut service_tokens = Vec::new();
        for (i, item) in self.sequence(map, "service_tokens", path, false).iter().enumerate() {
            let tpath = Self::element_path(path, "service_tokens", i, item);
            let Some(tmap) = self.mapping(item, &tpath, &["name", "token_env", "token_file", "groups", "attributes"])
            else {
                continue;
            };
            let name = self.string(tmap, "name", &tpath, true);
            let token = self.secret_from_env_or_file(tmap, "token", &tpath, true);
            let groups = self.string_list(tmap, "groups", &tpath);
            let attributes = self.attributes(tmap, &tpath);
            self.identity_name(name.as_deref(), &tpath, &mut names);
            if let Some(t) = &token
                && t.len() < 16
            {
                self.problem(&tpath, "a service token must be at least 16 characters long");
            }
            if let (Some(name), Some(token)) = (name, token) {
                service_tokens.push(ServiceTokenConfig {
                    name,
                    token_sha256: token_digest(&token),
                    groups,
                    attributes,
                });
            }
        }
        let jwt = map.get("jwt").and_then(|v| self.jwt(v, &join(path, "jwt")));
        let mut throttle = default.throttle.clone();
        if let Some(n) = self.positive(map, "max_failed_logins", path) {
            throttle.max_failures = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(d) = self.seconds(map, "lockout_seconds", path) {
            throttle.lockout = d;
        }
        AuthConfig { allow_anonymous, token_ttl, signing_key, users, service_tokens, jwt, throttle }
    }

    fn jwt(&mut self, value: &Value, path: &str) -> Option<JwtConfig> {
        let keys = [
            "issuer",
            "audience",
            "jwks_file",
            "jwks_url",
            "user_claim",
            "groups_claim",
            "attribute_claims",
            "leeway_seconds",
        ];
        let map = self.mapping(value, path, &keys)?;
        let issuer = self.string(map, "issuer", path, true);
        let audience = self.string(map, "audience", path, true);
        let jwks = match (map.get("jwks_file").is_some(), map.get("jwks_url").is_some()) {
            (true, false) => self.file_path(map, "jwks_file", path).map(JwksSource::File),
            (false, true) => {
                let raw = self.string(map, "jwks_url", path, true)?;
                match url::Url::parse(&raw) {
                    Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Some(JwksSource::Url(u)),
                    _ => {
                        self.problem(&join(path, "jwks_url"), format!("expected an http(s) URL, found '{raw}'"));
                        None
                    }
                }
            }
            _ => {
                self.problem(path, "set exactly one of jwks_file and jwks_url");
                None
            }
        };
        let user_claim = self.string(map, "user_claim", path, false).unwrap_or_else(|| "sub".into());
        let groups_claim = self.string(map, "groups_claim", path, false).unwrap_or_else(|| "groups".into());
        let attribute_claims = self.attributes_from(map, "attribute_claims", path);
        let leeway_seconds = match map.get("leeway_seconds") {
            None => 30,
            Some(v) => v.as_u64().unwrap_or_else(|| {
                self.problem(&join(path, "leeway_seconds"), format!("expected seconds, found {}", describe(v)));
                30
            }),
        };
        Some(JwtConfig {
            issuer: issuer?,
            audience: audience?,
            jwks: jwks?,
            user_claim,
            groups_claim,
            attribute_claims,
            leeway_seconds,
        })
    }

    /// A domain's PostgreSQL connection (`postgres:` key).
    fn postgres(&mut self, map: &Mapping, path: &str, domain: &str) -> Option<Arc<PostgresConnection>> {
        let value = map.get("postgres")?;
        let path = join(path, "postgres");
        let keys = [
            "host",
            "port",
            "database",
            "user",
            "password_env",
            "password_file",
            "sslmode",
            "pool_size",
            "connect_timeout_seconds",
            "statement_timeout_seconds",
            "read_partitions",
        ];
        let map = self.mapping(value, &path, &keys)?;
        let host = self.string(map, "host", &path, true);
        let database = self.string(map, "database", &path, true);
        let user = self.string(map, "user", &path, true);
        let password = self.secret_from_env_or_file(map, "password", &path, false);
        let sslmode = self.string(map, "sslmode", &path, false).unwrap_or_else(|| "prefer".to_string());
        if !["disable", "prefer", "require", "verify-ca", "verify-full"].contains(&sslmode.as_str()) {
            self.problem(
                &join(&path, "sslmode"),
                format!("unknown sslmode '{sslmode}' (expected disable, prefer, require, verify-ca or verify-full)"),
            );
        }
        let mut number = |key: &str, default: u64, max: u64| -> u64 {
            match map.get(key) {
                None => default,
                Some(v) => match v.as_u64() {
                    Some(n) if n <= max => n,
                    _ => {
                        self.problem(
                            &join(&path, key),
                            format!("expected a whole number up to {max}, found {}", describe(v)),
                        );
                        default
                    }
                },
            }
        };
        let port = number("port", 5432, 65535) as u16;
        let pool_size = number("pool_size", 8, 1024) as u32;
        let connect_timeout = std::time::Duration::from_secs(number("connect_timeout_seconds", 5, 3600));
        let statement_timeout = std::time::Duration::from_secs(number("statement_timeout_seconds", 300, 86_400));
        let read_partitions = number("read_partitions", u64::from(DEFAULT_READ_PARTITIONS), 64) as u32;
        let connection = PostgresConnection::new(
            domain.to_string(),
            host?,
            port,
            database?,
            user?,
            password,
            sslmode,
            pool_size,
            connect_timeout,
            statement_timeout,
        );
        if read_partitions == 0 {
            self.problem(
                &join(&path, "read_partitions"),
                "expected at least 1 (1 reads every table with one statement)",
            );
        }
        match connection {
            Ok(c) => Some(Arc::new(c.with_read_partitions(read_partitions))),
            Err(message) => {
                self.problem(&path, message);
                None
            }
        }
    }

    /// `attach: { schema: NAME, exclude: [...] }`: every table and view of a
    /// PostgreSQL schema becomes a product.
    fn attach(&mut self, map: &Mapping, path: &str, has_postgres: bool) -> Option<SchemaAttachment> {
        let value = map.get("attach")?;
        let apath = join(path, "attach");
        let amap = self.mapping(value, &apath, &["schema", "exclude"])?;
        if !has_postgres {
            self.problem(&apath, "attaching a schema needs a `postgres:` connection on the domain");
        }
        let schema = self.string(amap, "schema", &apath, true)?;
        let exclude = self.string_list(amap, "exclude", &apath);
        has_postgres.then_some(SchemaAttachment { schema, exclude })
    }

    fn postgres_source(
        &mut self,
        value: &Value,
        path: &str,
        postgres: Option<&Arc<PostgresConnection>>,
    ) -> Option<Source> {
        let map = self.mapping(value, path, &["kind", "table"])?;
        let table = self.string(map, "table", path, true)?;
        let Some(connection) = postgres else {
            self.problem(path, "a postgres source needs a `postgres:` connection on its domain");
            return None;
        };
        let (schema, name) = match table.split_once('.') {
            Some((s, t)) if !s.is_empty() && !t.is_empty() && !t.contains('.') => (s.to_string(), t.to_string()),
            None if !table.is_empty() => ("public".to_string(), table.clone()),
            _ => {
                self.problem(&join(path, "table"), format!("expected schema.table, found '{table}'"));
                return None;
            }
        };
        Some(Source::Postgres(PostgresSource::new(Arc::clone(connection), schema, name)))
    }
}
