//! The decision for one principal and one product: which grants apply,
//! which rows (row filters and restrictions combined), which columns and
//! which masks (the most specific wins; equal conflicts deny).

use std::collections::{BTreeMap, BTreeSet};

use crate::{Principal, ProductRef};

use crate::governance::masks::Mask;

use super::{Access, Denial, Grant, PolicySet, TablePolicy, TagRule};

/// Where a mask comes from; a more specific source wins over a less specific one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Specificity {
    TagRule,
    DomainGrant,
    ProductGrant,
}

impl PolicySet {
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
}

pub(super) fn applies(g: &Grant, principal: &Principal, product: &ProductRef) -> bool {
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
