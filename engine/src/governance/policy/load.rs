//! Reading the policy files into a [`PolicySet`], checking everything that
//! can be checked without a product's schema and reporting every problem
//! with its file and key path.

use std::collections::{BTreeMap, HashSet};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, MeshConfig, Problem};

use crate::governance::masks::Mask;
use crate::governance::subjects::Subjects;

use super::{Grant, PolicySet, Restriction, TagRule};

/// The mesh-wide policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GlobalFile {
    #[serde(default)]
    admins: Subjects,
    token_key_env: Option<String>,
    token_key_file: Option<PathBuf>,
    #[serde(default)]
    tag_rules: Vec<TagRule>,
    #[serde(default)]
    grants: Vec<Grant>,
    #[serde(default)]
    restrictions: Vec<Restriction>,
}

/// A domain's policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainFile {
    #[serde(default)]
    owners: Subjects,
    /// product → column → tags
    #[serde(default)]
    tags: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    grants: Vec<Grant>,
    #[serde(default)]
    restrictions: Vec<Restriction>,
}

impl PolicySet {
    /// Loads the mesh-wide file and every domain's file, reporting every problem
    /// found in a file at once, with its key path.
    pub fn load(mesh: &MeshConfig, global: &Path) -> Result<PolicySet, ConfigError> {
        let (global_file, text): (GlobalFile, String) = read_yaml(global)?;
        let mut hasher = Sha256::new();
        hasher.update(text.as_bytes());
        let mut problems = Vec::new();
        let token_key = match (&global_file.token_key_env, &global_file.token_key_file) {
            (Some(_), Some(_)) => {
                problems.push(Problem::new("token_key_env", "set token_key_env or token_key_file, not both"));
                None
            }
            (Some(var), None) => match std::env::var(var) {
                Ok(v) if v.len() >= 16 => Some(Arc::from(v.into_bytes())),
                Ok(_) => {
                    problems.push(Problem::new("token_key_env", format!("${var} must hold at least 16 bytes")));
                    None
                }
                Err(_) => {
                    problems.push(Problem::new("token_key_env", format!("environment variable {var} is not set")));
                    None
                }
            },
            (None, Some(file)) => {
                let file = global.parent().unwrap_or(Path::new(".")).join(file);
                match std::fs::read(&file) {
                    Ok(bytes) => {
                        let trimmed = bytes.trim_ascii().to_vec();
                        if trimmed.len() >= 16 {
                            Some(Arc::from(trimmed))
                        } else {
                            problems.push(Problem::new("token_key_file", "the key must hold at least 16 bytes"));
                            None
                        }
                    }
                    Err(e) => {
                        problems.push(Problem::new("token_key_file", format!("cannot read {}: {e}", file.display())));
                        None
                    }
                }
            }
            (None, None) => None,
        };
        let mut set = PolicySet {
            admins: global_file.admins,
            owners: BTreeMap::new(),
            tags: BTreeMap::new(),
            policy_tagged: BTreeMap::new(),
            grants: Vec::new(),
            restrictions: Vec::new(),
            tag_rules: global_file.tag_rules,
            token_key,
            version: String::new(),
        };
        let mut ids = HashSet::new();
        check_policies(mesh, &global_file.grants, &global_file.restrictions, None, &mut ids, &mut problems);
        for (i, rule) in set.tag_rules.iter().enumerate() {
            let path = format!("tag_rules[{}]", rule.id);
            if !ids.insert(rule.id.clone()) {
                problems.push(Problem::new(&path, format!("duplicate policy id '{}'", rule.id)));
            }
            if rule.tag.is_empty() {
                problems.push(Problem::new(format!("tag_rules[{i}].tag"), "empty tag"));
            }
            match (&rule.mask, rule.deny) {
                (None, false) => problems.push(Problem::new(&path, "a tag rule needs a mask or deny: true")),
                (Some(_), true) => problems.push(Problem::new(&path, "a tag rule has either a mask or deny: true")),
                (Some(mask), false) => check_mask(mask, &format!("{path}.mask"), &mut problems),
                (None, true) => {}
            }
        }
        set.admins.check(&mesh.auth, "admins", &mut problems);
        for rule in &set.tag_rules {
            rule.except.check(&mesh.auth, &format!("tag_rules[{}].except", rule.id), &mut problems);
        }
        check_grant_subjects(mesh, &global_file.grants, &global_file.restrictions, &mut problems);
        set.grants.extend(global_file.grants);
        set.restrictions.extend(global_file.restrictions);
        if !problems.is_empty() {
            return Err(ConfigError { file: global.to_path_buf(), problems });
        }

        for domain in &mesh.domains {
            let Some(file) = &domain.policies else { continue };
            let (mut parsed, text): (DomainFile, String) = read_yaml(file)?;
            hasher.update(text.as_bytes());
            let mut problems = Vec::new();
            for g in &mut parsed.grants {
                g.domain = domain.name.clone();
            }
            for r in &mut parsed.restrictions {
                r.domain = domain.name.clone();
            }
            check_policies(mesh, &parsed.grants, &parsed.restrictions, Some(&domain.name), &mut ids, &mut problems);
            parsed.owners.check(&mesh.auth, "owners", &mut problems);
            check_grant_subjects(mesh, &parsed.grants, &parsed.restrictions, &mut problems);
            for (product, columns) in &parsed.tags {
                if domain.product(product).is_none() {
                    let names: Vec<&str> = domain.products.iter().map(|p| p.name.as_str()).collect();
                    problems.push(Problem::new(
                        format!("tags.{product}"),
                        format!(
                            "no product '{product}' in domain '{}'; its products are: {}",
                            domain.name,
                            names.join(", ")
                        ),
                    ));
                }
                set.policy_tagged.insert((domain.name.clone(), product.clone()), columns.keys().cloned().collect());
                set.tags.insert((domain.name.clone(), product.clone()), columns.clone());
            }
            if !problems.is_empty() {
                return Err(ConfigError { file: file.clone(), problems });
            }
            set.owners.insert(domain.name.clone(), parsed.owners);
            set.grants.extend(parsed.grants);
            set.restrictions.extend(parsed.restrictions);
        }
        // A contract's column tags and classification count as tags, so that tag
        // rules cover what domains classify in their contracts.
        for domain in &mesh.domains {
            for product in &domain.products {
                let Some(contract) = &product.contract else { continue };
                for column in &contract.columns {
                    let from_contract = column.tags.iter().chain(column.classification.iter());
                    let key = (domain.name.clone(), product.name.clone());
                    for tag in from_contract {
                        // Contract tags drive tag rules: they are part of the policy version.
                        hasher.update(format!("{}.{}.{}={tag}\n", domain.name, product.name, column.name).as_bytes());
                        let tags = set.tags.entry(key.clone()).or_default().entry(column.name.clone()).or_default();
                        if !tags.contains(tag) {
                            tags.push(tag.clone());
                        }
                    }
                }
            }
        }
        let uses_tokens = set
            .grants
            .iter()
            .flat_map(|g| g.masks.values())
            .chain(set.tag_rules.iter().filter_map(|r| r.mask.as_ref()))
            .any(|m| matches!(m, Mask::Token));
        if uses_tokens && set.token_key.is_none() {
            return Err(ConfigError {
                file: global.to_path_buf(),
                problems: vec![Problem::new(
                    "token_key_env",
                    "a policy uses the token mask, which needs a secret key: set token_key_env or token_key_file",
                )],
            });
        }
        set.version = format!("sha256:{}", hex::encode(&hasher.finalize()[..8]));
        Ok(set)
    }
}

fn check_policies(
    mesh: &MeshConfig,
    grants: &[Grant],
    restrictions: &[Restriction],
    domain_file: Option<&str>,
    ids: &mut HashSet<String>,
    problems: &mut Vec<Problem>,
) {
    let check_target = |path: &str, domain: &str, product: Option<&String>, problems: &mut Vec<Problem>| {
        if domain_file.is_none() && domain.is_empty() {
            problems.push(Problem::new(path, "missing domain (a mesh-wide policy names its domain)"));
            return;
        }
        let Some(d) = mesh.domain(domain) else {
            let names: Vec<&str> = mesh.domains.iter().map(|d| d.name.as_str()).collect();
            problems.push(Problem::new(
                format!("{path}.domain"),
                format!("no domain '{domain}'; domains are: {}", names.join(", ")),
            ));
            return;
        };
        if let Some(p) = product
            && d.product(p).is_none()
        {
            let names: Vec<&str> = d.products.iter().map(|p| p.name.as_str()).collect();
            problems.push(Problem::new(
                format!("{path}.product"),
                format!("no product '{p}' in domain '{domain}'; its products are: {}", names.join(", ")),
            ));
        }
    };
    for g in grants {
        let path = format!("grants[{}]", g.id);
        if !ids.insert(g.id.clone()) {
            problems.push(Problem::new(&path, format!("duplicate policy id '{}'", g.id)));
        }
        if g.to.users.is_empty() && g.to.groups.is_empty() {
            problems.push(Problem::new(format!("{path}.to"), "names no user or group"));
        }
        check_target(&path, &g.domain, g.product.as_ref(), problems);
        if let Some(f) = &g.row_filter {
            check_expression(f, &format!("{path}.row_filter"), problems);
        }
        for (column, mask) in &g.masks {
            check_mask(mask, &format!("{path}.masks.{column}"), problems);
        }
    }
    for r in restrictions {
        let path = format!("restrictions[{}]", r.id);
        if !ids.insert(r.id.clone()) {
            problems.push(Problem::new(&path, format!("duplicate policy id '{}'", r.id)));
        }
        check_target(&path, &r.domain, r.product.as_ref(), problems);
        check_expression(&r.row_filter, &format!("{path}.row_filter"), problems);
    }
}

fn check_mask(mask: &Mask, path: &str, problems: &mut Vec<Problem>) {
    match mask {
        Mask::LastN { n } if *n == 0 => problems.push(Problem::new(format!("{path}.n"), "must be at least 1")),
        Mask::Sql { expr } => check_expression(&expr.replace("{col}", "x"), &format!("{path}.expr"), problems),
        _ => {}
    }
}

/// Checks the syntax of an SQL expression; names and types are checked against
/// the product's schema when it is opened.
pub(super) fn check_expression(text: &str, path: &str, problems: &mut Vec<Problem>) {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let placeholder = substitute_placeholders(text);
    if let Err(e) = Parser::new(&GenericDialect {}).try_with_sql(&placeholder).and_then(|mut p| p.parse_expr()) {
        problems.push(Problem::new(path, format!("not a valid SQL expression: {e}")));
    }
}

/// The text with every `${…}` replaced by an empty string literal.
pub(crate) fn substitute_placeholders(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                out.push_str("''");
                rest = &rest[start + end + 1..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses a policy file; also returns its text, which goes into the policy digest.
/// A serde error is a [`Problem`] at its key path (`grants[0].columns`), with
/// serde_norway's message (and line) as before.
fn read_yaml<T: for<'de> Deserialize<'de>>(file: &Path) -> Result<(T, String), ConfigError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ConfigError::single(file, "", format!("cannot read the policy file: {e}")))?;
    let in_file = |p: Problem| ConfigError { file: file.to_path_buf(), problems: vec![p] };
    agora_connectors::check_yaml_depth(&text).map_err(in_file)?;
    let parsed = serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(&text))
        .map_err(|e| in_file(agora_connectors::at_its_path(e)))?;
    Ok((parsed, text))
}

fn check_grant_subjects(
    mesh: &MeshConfig,
    grants: &[Grant],
    restrictions: &[Restriction],
    problems: &mut Vec<Problem>,
) {
    for g in grants {
        g.to.check(&mesh.auth, &format!("grants[{}].to", g.id), problems);
    }
    for r in restrictions {
        if let Some(to) = &r.to {
            to.check(&mesh.auth, &format!("restrictions[{}].to", r.id), problems);
        }
        r.except.check(&mesh.auth, &format!("restrictions[{}].except", r.id), problems);
    }
}
