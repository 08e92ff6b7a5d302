//! The `auth` section of a mesh file: users, service tokens, JWT issuers.

use std::collections::HashSet;

use serde_norway::Value;

use super::{Walker, describe, join};
use crate::identity::{
    AuthConfig, ServiceTokenConfig, UserConfig, check_password_hash, is_reserved_principal, token_digest,
};
use crate::jwt::{JwksSource, JwtConfig};

impl Walker<'_> {
    /// Checks a user's or service token's name: unique among identities and
    /// not one of the engine's reserved principals.
    pub(super) fn identity_name(&mut self, name: Option<&str>, path: &str, names: &mut HashSet<String>) {
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

    pub(super) fn auth(&mut self, root: &Value) -> AuthConfig {
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

    pub(super) fn jwt(&mut self, value: &Value, path: &str) -> Option<JwtConfig> {
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
}
