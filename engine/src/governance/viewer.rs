//! Who is asking, under which policies: what every access decision of a
//! session, a system table or a cancellation is made for.

use std::sync::Arc;

use super::policy::{Access, PolicySet};
use crate::{EngineError, Principal, ProductRef};

/// What a session needs to decide: the principal and the policies in force
/// (none for an open mesh).
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    /// Who the session runs as.
    pub(crate) principal: Arc<Principal>,
    /// The policies in force; `None` for an open mesh.
    pub(crate) policies: Option<Arc<PolicySet>>,
}

impl Viewer {
    pub(crate) fn may_see(&self, product: &ProductRef) -> bool {
        self.policies.as_ref().is_none_or(|p| p.may_see(&self.principal, product))
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.policies.as_ref().is_none_or(|p| p.is_admin(&self.principal))
    }

    /// May the viewer read `column` of `product` (masked or not)?
    pub(crate) fn may_read_column(&self, product: &ProductRef, column: &str) -> bool {
        let Some(policies) = &self.policies else { return true };
        match policies.access(&self.principal, product, &[column.to_string()]) {
            Ok(Access::Full) => true,
            Ok(Access::Limited(policy)) => policy.columns.iter().any(|c| c == column),
            Err(_) => false,
        }
    }

    /// May the viewer read audit records about `domain`? Admins may read all,
    /// a domain's owners those of their domain.
    pub(crate) fn may_audit_domain(&self, domain: &str) -> bool {
        self.is_admin() || self.policies.as_ref().is_some_and(|p| p.is_owner(&self.principal, domain))
    }

    /// May the viewer read an audit record of a request that read `products`
    /// (`domain.product`)?
    pub(crate) fn may_audit(&self, products: &[String]) -> bool {
        self.is_admin() || products.iter().any(|p| p.split('.').next().is_some_and(|d| self.may_audit_domain(d)))
    }

    /// The denial for a product the principal has no grant on, and, on a
    /// governed mesh, for a product that does not exist: the two must not be told
    /// apart by a principal that may read neither.
    pub(crate) fn denied(&self, product: &ProductRef) -> EngineError {
        let p = &self.principal;
        let groups = if p.groups.is_empty() { String::new() } else { format!(" (groups: {})", p.groups.join(", ")) };
        EngineError::Denied(format!(
            "access denied: user '{}'{groups} has no grant on {product} (deny by default)",
            p.user
        ))
    }
}
