//! The `domains` of a mesh file: domains, their products and each product's
//! source and contract.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use agora_connectors::{ObjectStoreSettings, PostgresConnection, Problem, Source, SourceContext, SourceSpec};
use serde_norway::{Mapping, Value};

use super::{Walker, describe, join};
use crate::config::{DomainConfig, Owner, ProductConfig, RESERVED_SCHEMAS, SchemaAttachment};
use crate::contract::Contract;

impl Walker<'_> {
    pub(super) fn mesh(&mut self, root: &Value) -> Vec<DomainConfig> {
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

    pub(super) fn domain(&mut self, value: &Value, path: &str) -> Option<DomainConfig> {
        let map = self.mapping(
            value,
            path,
            &["name", "description", "owner", "storage", "postgres", "attach", "policies", "products"],
        )?;
        let name = self.name(map, path);
        let domain_name = name.as_deref().unwrap_or("?");
        let policies = self.file_path(map, "policies", path);
        let postgres = self.postgres(map, path, domain_name);
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
            if let Some(product) = self.product(item, &ppath, owner.as_ref(), domain_name, &storage, postgres.as_ref())
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

    pub(super) fn owner(&mut self, value: &Value, path: &str) -> Option<Owner> {
        let map = self.mapping(value, path, &["name", "contact"])?;
        let name = self.string(map, "name", path, true);
        let contact = self.string(map, "contact", path, true);
        Some(Owner { name: name?, contact: contact? })
    }

    pub(super) fn storage(&mut self, map: &Mapping, path: &str) -> ObjectStoreSettings {
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

    /// `attach: { schema: NAME, exclude: [...] }`: every table and view of a
    /// PostgreSQL schema becomes a product.
    pub(super) fn attach(&mut self, map: &Mapping, path: &str, has_postgres: bool) -> Option<SchemaAttachment> {
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

    pub(super) fn product(
        &mut self,
        value: &Value,
        path: &str,
        domain_owner: Option<&Owner>,
        domain: &str,
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
        let product = map.get("name").and_then(Value::as_str).unwrap_or_default();
        let ctx = SourceContext { base: self.base, storage, postgres, domain, product };
        let source = match map.get("source") {
            Some(v) => self.source(v, &join(path, "source"), &ctx),
            None => {
                self.problem(&join(path, "source"), "missing (expected a mapping with kind and location)");
                None
            }
        };
        let source = source?;
        let contract = self.contract(map, path, name.as_deref()?, &source);
        Some(ProductConfig { name: name?, description: description?, owner: owner?, tags, source, contract })
    }

    /// The product's data contract: the file named by `contract`, or else a
    /// `<location>.odcs.yaml` beside a local product's data.
    pub(super) fn contract(
        &mut self,
        map: &Mapping,
        path: &str,
        product: &str,
        source: &Source,
    ) -> Option<Arc<Contract>> {
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

    /// A product's `source:` section: `${VAR}`s filled in, then read and
    /// validated by its connector's spec ([`SourceSpec`]).
    pub(super) fn source(&mut self, value: &Value, path: &str, ctx: &SourceContext<'_>) -> Option<Source> {
        let before = self.problems.len();
        let value = self.interpolate_all(value, path);
        let unset = self.problems.split_off(before);
        let spec = SourceSpec::from_value(&value).map_err(|problems| self.problems_under(path, problems));
        // Unset variables are reported after the section's own problems, and
        // stop it: a location with a hole in it would only add noise.
        let interpolated = unset.is_empty();
        self.problems.extend(unset);
        match spec.ok().filter(|_| interpolated)?.into_source(ctx) {
            Ok(source) => Some(source),
            Err(problems) => {
                self.problems_under(path, problems);
                None
            }
        }
    }

    /// `value` with `${VAR}` filled in in every string (keys untouched).
    fn interpolate_all(&mut self, value: &Value, path: &str) -> Value {
        match value {
            Value::String(s) => self.interpolate(s, path).map_or_else(|| value.clone(), Value::String),
            Value::Sequence(items) => Value::Sequence(
                items.iter().enumerate().map(|(i, v)| self.interpolate_all(v, &format!("{path}[{i}]"))).collect(),
            ),
            Value::Mapping(map) => Value::Mapping(
                map.iter()
                    .map(|(k, v)| {
                        let key = k.as_str().map_or_else(|| path.to_string(), |k| join(path, k));
                        (k.clone(), self.interpolate_all(v, &key))
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Records a section's problems under the section's path.
    fn problems_under(&mut self, path: &str, problems: Vec<Problem>) {
        self.problems.extend(problems.into_iter().map(|p| p.under(path)));
    }
}
