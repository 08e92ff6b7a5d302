//! ODCS YAML into a [`Contract`], collecting every problem with its key path:
//! Agora's reading of the fields it uses (here, quality rules in `rules.rs`),
//! then the official JSON Schema's verdict (`schema.rs`), kept as warnings.

use std::path::Path;

use serde_norway::{Mapping, Value};

use agora_connectors::Problem;

use super::{Contract, ContractColumn, QualityRule, RuleKind, SlaProperty, TeamMember, Threshold};

const LOGICAL_TYPES: &[&str] =
    &["string", "date", "timestamp", "time", "number", "integer", "object", "array", "boolean", "map", "vector"];

/// Keys Agora interprets; everything else is kept as unsupported.
const TOP_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "id",
    "name",
    "version",
    "status",
    "domain",
    "dataProduct",
    "description",
    "tags",
    "team",
    "schema",
    "slaProperties",
    "quality",
];
const DESCRIPTION_KEYS: &[&str] = &["purpose", "usage", "limitations"];
const OBJECT_KEYS: &[&str] =
    &["name", "physicalName", "logicalType", "physicalType", "description", "tags", "properties", "quality"];
const PROPERTY_KEYS: &[&str] = &[
    "name",
    "physicalName",
    "logicalType",
    "physicalType",
    "description",
    "required",
    "unique",
    "primaryKey",
    "primaryKeyPosition",
    "classification",
    "tags",
    "quality",
    "enum",
    "logicalTypeOptions",
];
const SLA_KEYS: &[&str] = &["property", "value", "unit", "element"];
const TEAM_KEYS: &[&str] = &["username", "name", "role"];

pub(super) fn parse(text: &str, file: &Path, product: &str) -> Result<Contract, Vec<Problem>> {
    let root = agora_connectors::read_yaml(text).map_err(|p| vec![p])?;
    let mut w = Walker { problems: Vec::new(), unsupported: Vec::new() };
    let contract = w.contract(&root, file, product);
    match contract {
        Some(c) if w.problems.is_empty() => {
            // The official schema's verdict: warnings (see `Contract::schema_problems`).
            let schema_problems = super::schema::check(&root);
            for p in &schema_problems {
                tracing::warn!(contract = %file.display(), path = %p.path, "{}", p.message);
            }
            Ok(Contract { unsupported: w.unsupported, schema_problems, ..c })
        }
        _ => Err(w.problems),
    }
}

struct Walker {
    problems: Vec<Problem>,
    unsupported: Vec<(String, String)>,
}

mod rules;

pub(super) use agora_connectors::join;

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("'{s}'"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

fn to_json(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

impl Walker {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem { path: path.to_string(), message: message.into() });
    }

    /// The mapping at `path`; keys outside `known` are kept as unsupported.
    fn mapping<'v>(&mut self, value: &'v Value, path: &str, known: &[&str]) -> Option<&'v Mapping> {
        let Value::Mapping(map) = value else {
            self.problem(path, format!("expected a mapping, found {}", describe(value)));
            return None;
        };
        for (k, v) in map {
            let key = k.as_str().map(str::to_string).unwrap_or_else(|| to_json(k));
            if !known.contains(&key.as_str()) {
                self.unsupported.push((join(path, &key), to_json(v)));
            }
        }
        Some(map)
    }

    fn string(&mut self, map: &Mapping, key: &str, path: &str, required: bool) -> Option<String> {
        match map.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.problem(&join(path, key), "missing (required by ODCS)");
                }
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                self.problem(&join(path, key), format!("expected a string, found {}", describe(other)));
                None
            }
        }
    }

    fn boolean(&mut self, map: &Mapping, key: &str, path: &str) -> bool {
        match map.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.problem(&join(path, key), format!("expected true or false, found {}", describe(other)));
                false
            }
        }
    }

    fn list<'v>(&mut self, map: &'v Mapping, key: &str, path: &str) -> &'v [Value] {
        match map.get(key) {
            None | Some(Value::Null) => &[],
            Some(Value::Sequence(items)) => items,
            Some(other) => {
                self.problem(&join(path, key), format!("expected a list, found {}", describe(other)));
                &[]
            }
        }
    }

    fn strings(&mut self, map: &Mapping, key: &str, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, item) in self.list(map, key, path).iter().enumerate() {
            match item.as_str() {
                Some(s) => out.push(s.to_string()),
                None => self.problem(
                    &format!("{}[{i}]", join(path, key)),
                    format!("expected a string, found {}", describe(item)),
                ),
            }
        }
        out
    }

    fn contract(&mut self, root: &Value, file: &Path, product: &str) -> Option<Contract> {
        let map = self.mapping(root, "", TOP_KEYS)?;
        let api_version = self.string(map, "apiVersion", "", true);
        if let Some(v) = &api_version
            && !v.starts_with("v3.")
        {
            self.problem("apiVersion", format!("unsupported ODCS version '{v}'; Agora reads ODCS v3 (e.g. v3.0.2)"));
        }
        match self.string(map, "kind", "", true).as_deref() {
            None | Some("DataContract") => {}
            Some(other) => self.problem("kind", format!("expected 'DataContract', found '{other}'")),
        }
        let id = self.string(map, "id", "", true);
        let version = self.string(map, "version", "", true);
        let status = self.string(map, "status", "", false);
        let (mut purpose, mut usage, mut limitations) = (None, None, None);
        match map.get("description") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => purpose = Some(s.clone()),
            Some(value) => {
                if let Some(d) = self.mapping(value, "description", DESCRIPTION_KEYS) {
                    purpose = self.string(d, "purpose", "description", false);
                    usage = self.string(d, "usage", "description", false);
                    limitations = self.string(d, "limitations", "description", false);
                }
            }
        }
        let mut tags = self.strings(map, "tags", "");
        let team = self.team(map.get("team"));
        let mut rules = Vec::new();
        self.rules(map, "", None, &mut rules);
        let (table_description, columns) = self.schema(map, product, &mut tags, &mut rules);
        let sla = self.sla(map);
        for p in &sla {
            if matches!(p.property.as_str(), "latency" | "freshness") {
                let column = p.element.as_ref().map(|e| e.rsplit('.').next().unwrap_or(e).to_string());
                match p.seconds() {
                    Some(seconds) => rules.push(QualityRule {
                        name: format!("freshness within {} {}", p.value, p.unit.as_deref().unwrap_or("d")),
                        column: column.clone(),
                        kind: RuleKind::Freshness { column },
                        threshold: Threshold::LessOrEqual(seconds),
                        percent: false,
                        dimension: Some("timeliness".into()),
                        severity: None,
                        description: None,
                        path: "slaProperties".into(),
                    }),
                    None => self.problem(
                        "slaProperties",
                        format!(
                            "{}: value '{}' with unit '{}' is not a duration",
                            p.property,
                            p.value,
                            p.unit.as_deref().unwrap_or("")
                        ),
                    ),
                }
            }
        }
        Some(Contract {
            file: file.to_path_buf(),
            api_version: api_version?,
            id: id?,
            name: self.string(map, "name", "", false),
            version: version?,
            status,
            domain: self.string(map, "domain", "", false),
            data_product: self.string(map, "dataProduct", "", false),
            purpose,
            usage,
            limitations,
            tags,
            team,
            table_description,
            columns,
            rules,
            sla,
            unsupported: Vec::new(),
            schema_problems: Vec::new(),
        })
    }

    /// `team`: a list of members (v3.0) or `{name, members: [...]}` (v3.1).
    fn team(&mut self, value: Option<&Value>) -> Vec<TeamMember> {
        let (items, path): (&[Value], String) = match value {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Sequence(items)) => (items, "team".into()),
            Some(v @ Value::Mapping(_)) => {
                let Some(map) = self.mapping(v, "team", &["name", "members"]) else { return Vec::new() };
                (self.list(map, "members", "team"), "team.members".into())
            }
            Some(other) => {
                self.problem("team", format!("expected a list of members, found {}", describe(other)));
                return Vec::new();
            }
        };
        let mut team = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            if let Some(m) = self.mapping(item, &p, TEAM_KEYS) {
                team.push(TeamMember {
                    username: self.string(m, "username", &p, false),
                    name: self.string(m, "name", &p, false),
                    role: self.string(m, "role", &p, false),
                });
            }
        }
        team
    }

    fn schema(
        &mut self,
        map: &Mapping,
        product: &str,
        tags: &mut Vec<String>,
        rules: &mut Vec<QualityRule>,
    ) -> (Option<String>, Vec<ContractColumn>) {
        let objects = self.list(map, "schema", "");
        if objects.is_empty() {
            return (None, Vec::new());
        }
        let name_of = |o: &Value| {
            o.get("physicalName")
                .and_then(Value::as_str)
                .or_else(|| o.get("name").and_then(Value::as_str))
                .map(str::to_string)
        };
        let index = objects
            .iter()
            .position(|o| {
                name_of(o).as_deref() == Some(product) || o.get("name").and_then(Value::as_str) == Some(product)
            })
            .or(if objects.len() == 1 { Some(0) } else { None });
        let Some(index) = index else {
            let names: Vec<String> = objects.iter().filter_map(name_of).collect();
            self.problem("schema", format!("no schema object named '{product}'; objects are: {}", names.join(", ")));
            return (None, Vec::new());
        };
        for (i, other) in objects.iter().enumerate().filter(|(i, _)| *i != index) {
            self.unsupported.push((format!("schema[{i}]"), to_json(other)));
        }
        let path = format!("schema[{index}]");
        let Some(object) = self.mapping(&objects[index], &path, OBJECT_KEYS) else { return (None, Vec::new()) };
        if let Some(t) = self.string(object, "logicalType", &path, false)
            && t != "object"
        {
            self.problem(&join(&path, "logicalType"), format!("a table's logicalType is 'object', found '{t}'"));
        }
        tags.extend(self.strings(object, "tags", &path));
        let description = self.string(object, "description", &path, false);
        self.rules(object, &path, None, rules);
        let mut columns: Vec<ContractColumn> = Vec::new();
        let mut primary_key: Vec<(i64, String, String)> = Vec::new();
        for (i, item) in self.list(object, "properties", &path).iter().enumerate() {
            let p = format!("{path}.properties[{i}]");
            let Some(m) = self.mapping(item, &p, PROPERTY_KEYS) else { continue };
            let Some(name) = self.string(m, "physicalName", &p, false).or_else(|| self.string(m, "name", &p, true))
            else {
                continue;
            };
            if columns.iter().any(|c| c.name == name) {
                self.problem(&join(&p, "name"), format!("duplicate column '{name}'"));
                continue;
            }
            let logical_type = self.string(m, "logicalType", &p, false);
            if let Some(t) = &logical_type
                && !LOGICAL_TYPES.contains(&t.as_str())
            {
                self.problem(
                    &join(&p, "logicalType"),
                    format!("expected one of {}, found '{t}'", LOGICAL_TYPES.join(", ")),
                );
            }
            let column = ContractColumn {
                name: name.clone(),
                logical_type,
                physical_type: self.string(m, "physicalType", &p, false),
                description: self.string(m, "description", &p, false),
                required: self.boolean(m, "required", &p),
                unique: self.boolean(m, "unique", &p),
                primary_key: self.boolean(m, "primaryKey", &p),
                primary_key_position: m.get("primaryKeyPosition").and_then(Value::as_i64),
                classification: self.string(m, "classification", &p, false),
                tags: self.strings(m, "tags", &p),
            };
            let implied = |kind: RuleKind, what: &str, key: &str| QualityRule {
                name: format!("{name} {what}"),
                column: Some(name.clone()),
                kind,
                threshold: Threshold::Equal(0.0),
                percent: false,
                dimension: None,
                severity: Some("error".into()),
                description: None,
                path: join(&p, key),
            };
            if column.required {
                rules.push(implied(RuleKind::NullValues, "is not null", "required"));
            }
            if column.unique {
                rules.push(implied(RuleKind::DuplicateValues(Vec::new()), "is unique", "unique"));
            }
            if column.primary_key {
                primary_key.push((
                    m.get("primaryKeyPosition").and_then(Value::as_i64).unwrap_or(i64::MAX),
                    name.clone(),
                    join(&p, "primaryKey"),
                ));
            }
            if let Some(values) = self.enum_values(m, &p) {
                rules.push(implied(RuleKind::InvalidValues(values), "in its enum", "enum"));
            }
            if let Some(kind) = self.range(m, &p) {
                rules.push(implied(kind, "within its range", "logicalTypeOptions"));
            }
            self.rules(m, &p, Some(&name), rules);
            columns.push(column);
        }
        if !primary_key.is_empty() {
            primary_key.sort();
            let names: Vec<String> = primary_key.iter().map(|(_, n, _)| n.clone()).collect();
            for (_, n, p) in &primary_key {
                if !columns.iter().any(|c| c.name == *n && c.required) {
                    rules.push(QualityRule {
                        name: format!("{n} is not null (primary key)"),
                        column: Some(n.clone()),
                        kind: RuleKind::NullValues,
                        threshold: Threshold::Equal(0.0),
                        percent: false,
                        dimension: Some("completeness".into()),
                        severity: Some("error".into()),
                        description: None,
                        path: p.clone(),
                    });
                }
            }
            let (column, columns_of_key) =
                if names.len() == 1 { (Some(names[0].clone()), Vec::new()) } else { (None, names.clone()) };
            rules.push(QualityRule {
                name: format!("primary key ({}) is unique", names.join(", ")),
                column,
                kind: RuleKind::DuplicateValues(columns_of_key),
                threshold: Threshold::Equal(0.0),
                percent: false,
                dimension: Some("uniqueness".into()),
                severity: Some("error".into()),
                description: None,
                path: primary_key[0].2.clone(),
            });
        }
        (description, columns)
    }

    fn sla(&mut self, map: &Mapping) -> Vec<SlaProperty> {
        let mut out = Vec::new();
        for (i, item) in self.list(map, "slaProperties", "").iter().enumerate() {
            let p = format!("slaProperties[{i}]");
            let Some(m) = self.mapping(item, &p, SLA_KEYS) else { continue };
            let property = self.string(m, "property", &p, true);
            let value = self.string(m, "value", &p, true);
            if let (Some(property), Some(value)) = (property, value) {
                out.push(SlaProperty {
                    property,
                    value,
                    unit: self.string(m, "unit", &p, false),
                    element: self.string(m, "element", &p, false),
                });
            }
        }
        out
    }
}
