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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use crate::{Principal, ProductRef};

use super::masks::Mask;
use super::subjects::Subjects;

mod decide;
mod load;

use self::decide::applies;
pub(crate) use self::load::substitute_placeholders;

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

#[cfg(test)]
mod tests {
    use super::load::check_expression;
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
