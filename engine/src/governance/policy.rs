//! The policy model: who may read which product, which rows and in which form.
//!
//! Policies live in YAML files: one mesh-wide file (admins, tag rules, the key
//! of keyed tokens, mesh-wide grants) and, optionally, one file per domain kept
//! next to its products (owners, column tags, grants, restrictions). Loading
//! checks everything that can be checked without reading data; what needs a
//! product's schema (column names, expression types) is checked by
//! [`super::compile`] when the product is opened, and `agora serve` opens every
//! reachable product before it accepts a client. Semantics, conflict rules and
//! examples are in `docs/governance.md`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, MeshConfig, Problem};
use crate::{Principal, ProductRef};

use super::masks::Mask;
use super::subjects::Subjects;

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

/// A permission to read a domain or one product, possibly limited to some
/// columns and rows, possibly with masks. Grants add up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Unique policy id, recorded in audit records.
    pub id: String,
    /// Who receives the grant.
    pub to: Subjects,
    /// The domain (implied in a domain's own file).
    #[serde(default)]
    pub domain: String,
    /// One product of the domain; all of them when absent.
    pub product: Option<String>,
    /// The readable columns; all when absent.
    pub columns: Option<Vec<String>>,
    /// Columns removed from the readable ones.
    #[serde(default)]
    pub except_columns: Vec<String>,
    /// Rows readable through this grant: an SQL predicate over the product's columns.
    pub row_filter: Option<String>,
    /// Column → mask, applied to principals who read through this grant.
    #[serde(default)]
    pub masks: BTreeMap<String, Mask>,
}

/// A row predicate that every matching principal is held to, whatever their grants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restriction {
    /// Unique policy id.
    pub id: String,
    /// Who is restricted; everyone when absent.
    pub to: Option<Subjects>,
    /// Who is exempt.
    #[serde(default)]
    pub except: Subjects,
    /// The domain (implied in a domain's own file).
    #[serde(default)]
    pub domain: String,
    /// One product; all of the domain's when absent.
    pub product: Option<String>,
    /// The rows that remain visible.
    pub row_filter: String,
}

/// A mask or a denial applied to every column that carries a tag.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagRule {
    /// Unique policy id.
    pub id: String,
    /// The column tag the rule applies to (e.g. `pii`).
    pub tag: String,
    /// The mask applied to tagged columns.
    pub mask: Option<Mask>,
    /// Hide tagged columns altogether.
    #[serde(default)]
    pub deny: bool,
    /// Principals the rule does not apply to.
    #[serde(default)]
    pub except: Subjects,
}

/// Every policy of a mesh, validated.
pub struct PolicySet {
    admins: Subjects,
    owners: BTreeMap<String, Subjects>,
    /// (domain, product) → column → tags, from policy files and contracts.
    tags: BTreeMap<(String, String), BTreeMap<String, Vec<String>>>,
    /// The columns tagged in policy files, which must exist; a contract's column
    /// missing from the source is drift, reported elsewhere.
    policy_tagged: BTreeMap<(String, String), Vec<String>>,
    grants: Vec<Grant>,
    restrictions: Vec<Restriction>,
    tag_rules: Vec<TagRule>,
    pub(crate) token_key: Option<Arc<[u8]>>,
    version: String,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySet")
            .field("version", &self.version)
            .field("grants", &self.grants.len())
            .field("restrictions", &self.restrictions.len())
            .field("tag_rules", &self.tag_rules.len())
            .field("token_key", &self.token_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Where a mask comes from; a more specific source wins over a less specific one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Specificity {
    TagRule,
    DomainGrant,
    ProductGrant,
}

/// What one principal may read of one product.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// Everything, unchanged (admins, the domain's owners, ungoverned meshes).
    Full,
    /// The listed columns, under a row filter and masks.
    Limited(TablePolicy),
}

/// The policy-neutral form every decision reduces to for one product.
#[derive(Debug, Clone, PartialEq)]
pub struct TablePolicy {
    /// Readable columns, in the product's column order.
    pub columns: Vec<String>,
    /// The rows the principal may see, with principal attributes substituted,
    /// and the ids of the policies it came from.
    pub row_filter: Option<(String, Vec<String>)>,
    /// Column → mask and the id of the policy that chose it.
    pub masks: BTreeMap<String, (Mask, String)>,
}

/// Why access was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial(pub String);

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
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
                problems.push(problem("token_key_env", "set token_key_env or token_key_file, not both"));
                None
            }
            (Some(var), None) => match std::env::var(var) {
                Ok(v) if v.len() >= 16 => Some(Arc::from(v.into_bytes())),
                Ok(_) => {
                    problems.push(problem("token_key_env", format!("${var} must hold at least 16 bytes")));
                    None
                }
                Err(_) => {
                    problems.push(problem("token_key_env", format!("environment variable {var} is not set")));
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
                            problems.push(problem("token_key_file", "the key must hold at least 16 bytes"));
                            None
                        }
                    }
                    Err(e) => {
                        problems.push(problem("token_key_file", format!("cannot read {}: {e}", file.display())));
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
                problems.push(problem(&path, format!("duplicate policy id '{}'", rule.id)));
            }
            if rule.tag.is_empty() {
                problems.push(problem(&format!("tag_rules[{i}].tag"), "empty tag"));
            }
            match (&rule.mask, rule.deny) {
                (None, false) => problems.push(problem(&path, "a tag rule needs a mask or deny: true")),
                (Some(_), true) => problems.push(problem(&path, "a tag rule has either a mask or deny: true")),
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
                    problems.push(problem(
                        &format!("tags.{product}"),
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
                problems: vec![problem(
                    "token_key_env",
                    "a policy uses the token mask, which needs a secret key: set token_key_env or token_key_file",
                )],
            });
        }
        set.version = format!("sha256:{}", hex::encode(&hasher.finalize()[..8]));
        Ok(set)
    }

    /// A digest of every policy file, recorded with each audit record.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether the principal administers the mesh: reads everything, sees every audit record.
    pub fn is_admin(&self, principal: &Principal) -> bool {
        self.admins.matches(principal)
    }

    /// Whether the principal owns the domain: reads its products unchanged and
    /// sees the audit records that touch it.
    pub fn is_owner(&self, principal: &Principal, domain: &str) -> bool {
        self.owners.get(domain).is_some_and(|o| o.matches(principal))
    }

    /// Whether the principal may see that the product exists (some grant names it).
    /// Cheap: needs no schema, so catalogue listings use it.
    pub fn may_see(&self, principal: &Principal, product: &ProductRef) -> bool {
        self.is_admin(principal)
            || self.is_owner(principal, &product.domain)
            || self.grants.iter().any(|g| applies(g, principal, product))
    }

    /// The tags of one column of a product.
    pub fn column_tags(&self, product: &ProductRef, column: &str) -> &[String] {
        self.tags
            .get(&(product.domain.clone(), product.product.clone()))
            .and_then(|c| c.get(column))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Decides what `principal` may read of `product`, whose columns are `columns`.
    pub fn access(&self, principal: &Principal, product: &ProductRef, columns: &[String]) -> Result<Access, Denial> {
        if self.is_admin(principal) || self.is_owner(principal, &product.domain) {
            return Ok(Access::Full);
        }
        let grants: Vec<&Grant> = self.grants.iter().filter(|g| applies(g, principal, product)).collect();
        if grants.is_empty() {
            return Err(Denial(format!(
                "access denied: {} has no grant on {product} (deny by default)",
                describe_principal(principal)
            )));
        }
        // Columns: the union of what each grant allows, less tag denials.
        let mut visible: BTreeSet<&str> = BTreeSet::new();
        let mut per_grant: Vec<BTreeSet<&str>> = Vec::new();
        for g in &grants {
            let allowed: BTreeSet<&str> = columns
                .iter()
                .map(String::as_str)
                .filter(|c| g.columns.as_ref().is_none_or(|list| list.iter().any(|l| l == c)))
                .filter(|c| !g.except_columns.iter().any(|e| e == c))
                .collect();
            visible.extend(allowed.iter().copied());
            per_grant.push(allowed);
        }
        let active_rules: Vec<&TagRule> = self.tag_rules.iter().filter(|r| !r.except.matches(principal)).collect();
        visible.retain(|c| {
            let tags = self.column_tags(product, c);
            !active_rules.iter().any(|r| r.deny && tags.contains(&r.tag))
        });
        if visible.is_empty() {
            return Err(Denial(format!(
                "access denied: {} may read no column of {product}",
                describe_principal(principal)
            )));
        }

        // Rows: grants add up (OR); a grant without a filter shows every row.
        let row_filter = if grants.iter().any(|g| g.row_filter.is_none()) {
            None
        } else {
            let mut parts = Vec::new();
            for g in &grants {
                let text = g.row_filter.as_deref().unwrap_or_default();
                parts.push(format!("({})", substitute(text, principal, &g.id)?));
            }
            Some((parts.join(" OR "), grants.iter().map(|g| g.id.clone()).collect::<Vec<_>>()))
        };
        // Restrictions hold whatever the grants say (AND).
        let mut filter_text = row_filter.as_ref().map(|(t, _)| t.clone());
        let mut filter_ids = row_filter.map(|(_, ids)| ids).unwrap_or_default();
        for r in self.restrictions.iter().filter(|r| {
            r.domain == product.domain
                && r.product.as_ref().is_none_or(|p| *p == product.product)
                && r.to.as_ref().is_none_or(|to| to.matches(principal))
                && !r.except.matches(principal)
        }) {
            let part = format!("({})", substitute(&r.row_filter, principal, &r.id)?);
            filter_text = Some(match filter_text {
                Some(existing) => format!("({existing}) AND {part}"),
                None => part,
            });
            filter_ids.push(r.id.clone());
        }

        // Masks: the most specific source wins; two different masks from equally
        // specific sources cannot be resolved, so access is denied.
        let mut masks = BTreeMap::new();
        for column in &visible {
            let mut candidates: Vec<(Specificity, &Mask, &str)> = Vec::new();
            for (g, allowed) in grants.iter().zip(&per_grant) {
                if let Some(mask) = g.masks.get(*column)
                    && allowed.contains(column)
                {
                    let level = if g.product.is_some() { Specificity::ProductGrant } else { Specificity::DomainGrant };
                    candidates.push((level, mask, &g.id));
                }
            }
            let tags = self.column_tags(product, column);
            for r in &active_rules {
                if let Some(mask) = &r.mask
                    && tags.contains(&r.tag)
                {
                    candidates.push((Specificity::TagRule, mask, &r.id));
                }
            }
            let Some(top) = candidates.iter().map(|c| c.0).max() else { continue };
            let winners: Vec<_> = candidates.iter().filter(|c| c.0 == top).collect();
            let first = winners[0];
            if let Some(other) = winners.iter().find(|c| c.1 != first.1) {
                return Err(Denial(format!(
                    "access denied: conflicting masks for column {column} of {product}: {} from policy '{}' and {} \
                     from policy '{}' are equally specific",
                    first.1, first.2, other.1, other.2
                )));
            }
            masks.insert(column.to_string(), (first.1.clone(), first.2.to_string()));
        }

        let columns = columns.iter().filter(|c| visible.contains(c.as_str())).cloned().collect();
        let row_filter = filter_text.map(|t| (t, filter_ids));
        Ok(Access::Limited(TablePolicy { columns, row_filter, masks }))
    }

    /// The grants that name `product` (directly or through its domain).
    pub(crate) fn grants_on<'a>(&'a self, product: &'a ProductRef) -> impl Iterator<Item = &'a Grant> + 'a {
        self.grants
            .iter()
            .filter(|g| g.domain == product.domain && g.product.as_ref().is_none_or(|p| *p == product.product))
    }

    /// The restrictions that name `product` (directly or through its domain).
    pub(crate) fn restrictions_on<'a>(&'a self, product: &'a ProductRef) -> impl Iterator<Item = &'a Restriction> + 'a {
        self.restrictions
            .iter()
            .filter(|r| r.domain == product.domain && r.product.as_ref().is_none_or(|p| *p == product.product))
    }

    /// The tag rules with a mask, for checking against tagged columns.
    pub(crate) fn tag_masks(&self, product: &ProductRef, column: &str) -> Vec<(&str, &Mask)> {
        let tags = self.column_tags(product, column);
        self.tag_rules
            .iter()
            .filter(|r| tags.contains(&r.tag))
            .filter_map(|r| r.mask.as_ref().map(|m| (r.id.as_str(), m)))
            .collect()
    }

    /// Every tagged column of a product with its tags (policy files and contract).
    pub fn product_tags(&self, product: &ProductRef) -> Option<&BTreeMap<String, Vec<String>>> {
        self.tags.get(&(product.domain.clone(), product.product.clone()))
    }

    /// The tags that tag rules act on (mask or deny): such columns are sensitive.
    pub fn governed_tags(&self) -> impl Iterator<Item = &str> {
        self.tag_rules.iter().map(|r| r.tag.as_str())
    }

    /// Tagged column names of a product, for checking that they exist.
    pub(crate) fn tagged_columns(&self, product: &ProductRef) -> Vec<&str> {
        self.policy_tagged
            .get(&(product.domain.clone(), product.product.clone()))
            .map(|c| c.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

fn applies(g: &Grant, principal: &Principal, product: &ProductRef) -> bool {
    g.domain == product.domain && g.product.as_ref().is_none_or(|p| *p == product.product) && g.to.matches(principal)
}

fn describe_principal(p: &Principal) -> String {
    if p.groups.is_empty() {
        format!("user '{}'", p.user)
    } else {
        format!("user '{}' (groups: {})", p.user, p.groups.join(", "))
    }
}

/// Replaces `${principal.user}` and `${principal.<attribute>}` with SQL string
/// literals. A missing attribute denies: a filter that cannot be built must not
/// be dropped.
pub(crate) fn substitute(text: &str, principal: &Principal, policy: &str) -> Result<String, Denial> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(Denial(format!("policy '{policy}': unterminated ${{ in row filter")));
        };
        let name = after[..end].trim();
        let value = match name.strip_prefix("principal.") {
            Some("user") => Some(principal.user.as_str()),
            Some(attr) => principal.attributes.get(attr).map(String::as_str),
            None => {
                return Err(Denial(format!(
                    "policy '{policy}': unknown variable ${{{name}}} (expected ${{principal.user}} or ${{principal.<attribute>}})"
                )));
            }
        };
        let Some(value) = value else {
            return Err(Denial(format!(
                "access denied: policy '{policy}' filters on ${{{name}}}, which user '{}' does not have",
                principal.user
            )));
        };
        out.push('\'');
        out.push_str(&value.replace('\'', "''"));
        out.push('\'');
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
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
            problems.push(problem(path, "missing domain (a mesh-wide policy names its domain)"));
            return;
        }
        let Some(d) = mesh.domain(domain) else {
            let names: Vec<&str> = mesh.domains.iter().map(|d| d.name.as_str()).collect();
            problems.push(problem(
                &format!("{path}.domain"),
                format!("no domain '{domain}'; domains are: {}", names.join(", ")),
            ));
            return;
        };
        if let Some(p) = product
            && d.product(p).is_none()
        {
            let names: Vec<&str> = d.products.iter().map(|p| p.name.as_str()).collect();
            problems.push(problem(
                &format!("{path}.product"),
                format!("no product '{p}' in domain '{domain}'; its products are: {}", names.join(", ")),
            ));
        }
    };
    for g in grants {
        let path = format!("grants[{}]", g.id);
        if !ids.insert(g.id.clone()) {
            problems.push(problem(&path, format!("duplicate policy id '{}'", g.id)));
        }
        if g.to.users.is_empty() && g.to.groups.is_empty() {
            problems.push(problem(&format!("{path}.to"), "names no user or group"));
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
            problems.push(problem(&path, format!("duplicate policy id '{}'", r.id)));
        }
        check_target(&path, &r.domain, r.product.as_ref(), problems);
        check_expression(&r.row_filter, &format!("{path}.row_filter"), problems);
    }
}

fn check_mask(mask: &Mask, path: &str, problems: &mut Vec<Problem>) {
    match mask {
        Mask::LastN { n } if *n == 0 => problems.push(problem(&format!("{path}.n"), "must be at least 1")),
        Mask::Sql { expr } => check_expression(&expr.replace("{col}", "x"), &format!("{path}.expr"), problems),
        _ => {}
    }
}

/// Checks the syntax of an SQL expression; names and types are checked against
/// the product's schema when it is opened.
fn check_expression(text: &str, path: &str, problems: &mut Vec<Problem>) {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let placeholder = substitute_placeholders(text);
    if let Err(e) = Parser::new(&GenericDialect {}).try_with_sql(&placeholder).and_then(|mut p| p.parse_expr()) {
        problems.push(problem(path, format!("not a valid SQL expression: {e}")));
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
    let depth = |p: Problem| ConfigError { file: file.to_path_buf(), problems: vec![p] };
    agora_connectors::check_yaml_depth(&text).map_err(depth)?;
    let parsed = serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(&text)).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::single(file, &path, e.into_inner().to_string())
    })?;
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

fn problem(path: &str, message: impl Into<String>) -> Problem {
    Problem { path: path.to_string(), message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(user: &str, groups: &[&str], attrs: &[(&str, &str)]) -> Principal {
        Principal {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Principal::user(user)
        }
    }

    fn grant(id: &str, group: &str, product: Option<&str>) -> Grant {
        Grant {
            id: id.into(),
            to: Subjects { groups: vec![group.into()], ..Subjects::default() },
            domain: "crm".into(),
            product: product.map(Into::into),
            columns: None,
            except_columns: vec![],
            row_filter: None,
            masks: BTreeMap::new(),
        }
    }

    fn set(grants: Vec<Grant>, restrictions: Vec<Restriction>, tag_rules: Vec<TagRule>) -> PolicySet {
        let mut tags = BTreeMap::new();
        tags.insert(
            ("crm".to_string(), "customer".to_string()),
            BTreeMap::from([("phone".to_string(), vec!["pii".to_string()])]),
        );
        PolicySet {
            admins: Subjects { groups: vec!["admins".into()], ..Subjects::default() },
            owners: BTreeMap::from([(
                "crm".to_string(),
                Subjects { users: vec!["olga".into()], ..Subjects::default() },
            )]),
            tags,
            policy_tagged: BTreeMap::new(),
            grants,
            restrictions,
            tag_rules,
            token_key: None,
            version: String::new(),
        }
    }

    fn cols() -> Vec<String> {
        ["id", "region", "phone", "balance"].iter().map(|s| s.to_string()).collect()
    }

    fn product() -> ProductRef {
        ProductRef::new("crm", "customer")
    }

    fn limited(a: Access) -> TablePolicy {
        match a {
            Access::Limited(t) => t,
            Access::Full => panic!("expected limited access"),
        }
    }

    #[test]
    fn deny_by_default_and_admins_and_owners_read_everything() {
        let s = set(vec![grant("g", "analysts", None)], vec![], vec![]);
        let err = s.access(&principal("eve", &["guests"], &[]), &product(), &cols()).unwrap_err();
        assert!(err.0.contains("no grant on crm.customer"), "{err}");
        assert!(!s.may_see(&principal("eve", &[], &[]), &product()));
        assert_eq!(s.access(&principal("root", &["admins"], &[]), &product(), &cols()), Ok(Access::Full));
        assert_eq!(s.access(&principal("olga", &[], &[]), &product(), &cols()), Ok(Access::Full));
    }

    #[test]
    fn row_filters_of_grants_or_and_restrictions_and() {
        let mut a = grant("a", "analysts", Some("customer"));
        a.row_filter = Some("region = ${principal.region}".into());
        let mut b = grant("b", "auditors", None);
        b.row_filter = Some("balance > 100".into());
        let r = Restriction {
            id: "r".into(),
            to: None,
            except: Subjects::default(),
            domain: "crm".into(),
            product: None,
            row_filter: "id > 0".into(),
        };
        let s = set(vec![a, b], vec![r], vec![]);
        let p = principal("ann", &["analysts", "auditors"], &[("region", "EU'ROPE")]);
        let t = limited(s.access(&p, &product(), &cols()).unwrap());
        let (text, ids) = t.row_filter.unwrap();
        assert_eq!(text, "((region = 'EU''ROPE') OR (balance > 100)) AND (id > 0)");
        assert_eq!(ids, vec!["a", "b", "r"]);
        // Missing attribute: denied, never unfiltered.
        let err = s.access(&principal("bob", &["analysts"], &[]), &product(), &cols()).unwrap_err();
        assert!(err.0.contains("${principal.region}"), "{err}");
    }

    #[test]
    fn a_grant_without_filter_shows_all_rows_but_restrictions_still_apply() {
        let mut a = grant("a", "analysts", None);
        a.row_filter = Some("region = 'EU'".into());
        let b = grant("b", "auditors", None);
        let s = set(vec![a, b], vec![], vec![]);
        let t = limited(s.access(&principal("x", &["analysts", "auditors"], &[]), &product(), &cols()).unwrap());
        assert_eq!(t.row_filter, None);
    }

    #[test]
    fn columns_union_and_tag_denial() {
        let mut a = grant("a", "analysts", None);
        a.columns = Some(vec!["id".into(), "phone".into()]);
        let mut b = grant("b", "sales", None);
        b.except_columns = vec!["balance".into()];
        let deny = TagRule {
            id: "no-pii".into(),
            tag: "pii".into(),
            mask: None,
            deny: true,
            except: Subjects { groups: vec!["support".into()], ..Subjects::default() },
        };
        let s = set(vec![a, b], vec![], vec![deny]);
        let t = limited(s.access(&principal("x", &["analysts"], &[]), &product(), &cols()).unwrap());
        assert_eq!(t.columns, vec!["id"]);
        let t = limited(s.access(&principal("x", &["analysts", "sales"], &[]), &product(), &cols()).unwrap());
        assert_eq!(t.columns, vec!["id", "region"]);
        let t = limited(s.access(&principal("x", &["analysts", "support"], &[]), &product(), &cols()).unwrap());
        assert_eq!(t.columns, vec!["id", "phone"]);
    }

    #[test]
    fn most_specific_mask_wins_and_equal_conflicts_deny() {
        let tag = TagRule {
            id: "pii-null".into(),
            tag: "pii".into(),
            mask: Some(Mask::Null),
            deny: false,
            except: Subjects::default(),
        };
        let mut product_grant = grant("p", "analysts", Some("customer"));
        product_grant.masks.insert("phone".into(), Mask::LastN { n: 4 });
        let s = set(vec![product_grant.clone()], vec![], vec![tag.clone()]);
        let t = limited(s.access(&principal("x", &["analysts"], &[]), &product(), &cols()).unwrap());
        assert_eq!(t.masks["phone"], (Mask::LastN { n: 4 }, "p".to_string()));

        // Only the tag rule applies to a domain-wide grant without masks.
        let s = set(vec![grant("d", "analysts", None)], vec![], vec![tag.clone()]);
        let t = limited(s.access(&principal("x", &["analysts"], &[]), &product(), &cols()).unwrap());
        assert_eq!(t.masks["phone"], (Mask::Null, "pii-null".to_string()));

        let mut other = grant("q", "sales", Some("customer"));
        other.masks.insert("phone".into(), Mask::Email);
        let s = set(vec![product_grant, other], vec![], vec![tag]);
        let err = s.access(&principal("x", &["analysts", "sales"], &[]), &product(), &cols()).unwrap_err();
        assert!(err.0.contains("conflicting masks for column phone"), "{err}");
    }

    #[test]
    fn placeholders_are_filled_for_syntax_checks() {
        assert_eq!(substitute_placeholders("a = ${principal.region} and b"), "a = '' and b");
        let mut problems = Vec::new();
        check_expression("region = = 1", "x", &mut problems);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("not a valid SQL expression"));
    }
}
