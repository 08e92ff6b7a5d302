//! Who a request runs as: the subject of every access decision and audit
//! record, whatever authenticated it (a password, a token, an identity
//! provider, or the embedding application itself).

use std::collections::BTreeMap;

/// Names of principals the engine itself uses: `local` (the embedding
/// application, [`crate::Engine::session`]), `anonymous`, and `agora-…`
/// (internal checks such as quality rules). No configured user, service token
/// or identity-provider subject may carry them, so none can inherit what
/// policies grant them.
pub fn is_reserved_principal(name: &str) -> bool {
    matches!(name, "local" | "anonymous") || name.starts_with("agora-")
}

/// What kind of identity a principal is, which decides which policy subjects
/// can name it (`users` or `services`, see `governance::Subjects`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum PrincipalKind {
    /// A person: a password user, an identity-provider subject, or the
    /// embedding application (`local`).
    #[default]
    User,
    /// A machine client authenticated by a service token.
    Service,
}

/// An authenticated identity: the subject of every access decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    /// The user or service name.
    pub user: String,
    /// A person or a service.
    pub kind: PrincipalKind,
    /// Groups the principal belongs to.
    pub groups: Vec<String>,
    /// Attributes policies may refer to (for example `region`).
    pub attributes: BTreeMap<String, String>,
}

impl Principal {
    /// The principal of unauthenticated access, when a mesh allows it.
    pub fn anonymous() -> Self {
        Principal::user("anonymous")
    }

    /// A named principal without groups or attributes.
    pub fn user(name: impl Into<String>) -> Self {
        Principal { user: name.into(), ..Principal::default() }
    }
}
