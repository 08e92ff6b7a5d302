//! Who a policy names: users, services and groups, typed so that one name
//! cannot stand for two kinds of principal.
//!
//! `users` match people (password users, identity-provider subjects, the
//! embedding application's `local`), `services` match service tokens, and
//! `groups` match either by membership. A service token called `admin` is
//! not the user `admin`, whatever the names say; listing a configured
//! service under `users` (or a configured user under `services`) is a
//! configuration error rather than a grant that silently matches nobody.

use serde::Deserialize;

use crate::Principal;
use crate::config::Problem;
use crate::identity::{AuthConfig, PrincipalKind, is_reserved_principal};

/// A set of users, services and groups a policy applies to.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Subjects {
    /// Names of people: password users and identity-provider subjects.
    #[serde(default)]
    pub users: Vec<String>,
    /// Names of service tokens (`auth.service_tokens[].name`).
    #[serde(default)]
    pub services: Vec<String>,
    /// Group names; a principal in any of them matches.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Subjects {
    /// Whether `principal` is named here (as its kind) or is in one of the groups.
    pub fn matches(&self, principal: &Principal) -> bool {
        let named = match principal.kind {
            PrincipalKind::User => &self.users,
            PrincipalKind::Service => &self.services,
        };
        named.contains(&principal.user) || self.groups.iter().any(|g| principal.groups.contains(g))
    }

    /// Names that cannot mean what they say: a configured service listed as
    /// a user or the reverse, and engine-internal names (`agora-…`).
    pub(crate) fn check(&self, auth: &AuthConfig, path: &str, problems: &mut Vec<Problem>) {
        let problem = |key: &str, message: String| Problem { path: format!("{path}.{key}"), message };
        for name in &self.users {
            if auth.service_tokens.iter().any(|t| &t.name == name) {
                problems.push(problem(
                    "users",
                    format!("'{name}' is a service token (auth.service_tokens): list it under services"),
                ));
            }
        }
        for name in &self.services {
            if auth.users.iter().any(|u| &u.name == name) {
                problems.push(problem("services", format!("'{name}' is a user (auth.users): list it under users")));
            } else if !auth.service_tokens.iter().any(|t| &t.name == name) {
                problems.push(problem(
                    "services",
                    format!("no service token '{name}' in auth.service_tokens (a service must be configured)"),
                ));
            }
        }
        for (key, names) in [("users", &self.users), ("services", &self.services)] {
            for name in
                names.iter().filter(|n| is_reserved_principal(n) && !matches!(n.as_str(), "local" | "anonymous"))
            {
                problems.push(problem(key, format!("'{name}' is reserved for the engine's own checks")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ServiceTokenConfig;

    fn service(name: &str) -> Principal {
        Principal { kind: PrincipalKind::Service, ..Principal::user(name) }
    }

    #[test]
    fn a_name_matches_only_its_kind() {
        let admins = Subjects { users: vec!["root".into()], ..Subjects::default() };
        assert!(admins.matches(&Principal::user("root")));
        assert!(!admins.matches(&service("root")), "a service token named like an admin is not the admin");
        let etl = Subjects { services: vec!["etl".into()], ..Subjects::default() };
        assert!(etl.matches(&service("etl")) && !etl.matches(&Principal::user("etl")));
        let group = Subjects { groups: vec!["ops".into()], ..Subjects::default() };
        assert!(group.matches(&Principal { groups: vec!["ops".into()], ..service("bot") }));
    }

    #[test]
    fn names_of_the_wrong_kind_are_configuration_errors() {
        let auth = AuthConfig {
            service_tokens: vec![ServiceTokenConfig {
                name: "etl".into(),
                token_sha256: [0; 32],
                groups: vec![],
                attributes: Default::default(),
            }],
            ..AuthConfig::default()
        };
        let mut problems = Vec::new();
        let wrong = Subjects {
            users: vec!["etl".into(), "agora-quality".into()],
            services: vec!["nobody".into()],
            groups: vec![],
        };
        wrong.check(&auth, "grants[g].to", &mut problems);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["grants[g].to.users", "grants[g].to.services", "grants[g].to.users"], "{problems:?}");
        assert!(problems[0].message.contains("list it under services"));
        let mut none = Vec::new();
        Subjects { users: vec!["local".into()], services: vec!["etl".into()], groups: vec![] }
            .check(&auth, "admins", &mut none);
        assert!(none.is_empty(), "{none:?}");
    }
}
