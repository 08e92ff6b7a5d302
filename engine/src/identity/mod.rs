//! Who is asking: principals, and the authentication that establishes them.
//!
//! Every session runs as a [`Principal`]. A server establishes it with an
//! [`Authenticator`] built from the mesh's `auth` section: users log in with a
//! password (argon2 hashes in the file) and receive a signed, expiring session
//! token (an HS256 JWT, see `session_token`); machine clients present a static
//! service token. Token checks are stateless, so any server instance sharing
//! the signing key accepts a token another one issued.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::PasswordVerifier;
use argon2::password_hash::phc::PasswordHash;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::login_throttle::{Lockout, LoginThrottle, ThrottleConfig};

mod session_token;

pub use crate::principal::{Principal, PrincipalKind, is_reserved_principal};

/// The `auth` section of a mesh file.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// Serve clients that present no credentials, as [`Principal::anonymous`].
    pub allow_anonymous: bool,
    /// How long a session token issued at login stays valid.
    pub token_ttl: Duration,
    /// Key that signs session tokens; random per process when `None` (tokens then
    /// do not survive a restart and are not shared between instances).
    pub signing_key: Option<Vec<u8>>,
    /// Users who log in with a password.
    pub users: Vec<UserConfig>,
    /// Static bearer tokens for machine clients.
    pub service_tokens: Vec<ServiceTokenConfig>,
    /// JWT bearer tokens from an enterprise identity provider.
    pub jwt: Option<crate::jwt::JwtConfig>,
    /// Back-off for wrong passwords (`max_failed_logins`, `lockout_seconds`).
    pub throttle: ThrottleConfig,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("allow_anonymous", &self.allow_anonymous)
            .field("token_ttl", &self.token_ttl)
            .field("signing_key", &self.signing_key.as_ref().map(|_| "<set>"))
            .field("users", &self.users)
            .field("service_tokens", &self.service_tokens)
            .field("jwt", &self.jwt)
            .field("throttle", &self.throttle)
            .finish()
    }
}

/// A user who logs in with a password.
#[derive(Debug, Clone)]
pub struct UserConfig {
    /// Login name.
    pub name: String,
    /// Argon2 hash in PHC format (`agora hash-password` makes one).
    pub password_hash: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
}

impl UserConfig {
    /// The principal this user's sessions run as.
    pub fn principal(&self) -> Principal {
        Principal { groups: self.groups.clone(), attributes: self.attributes.clone(), ..Principal::user(&self.name) }
    }
}

/// A static bearer token for a machine client.
#[derive(Clone)]
pub struct ServiceTokenConfig {
    /// The principal name the token stands for.
    pub name: String,
    /// SHA-256 of the token; the token itself is read from an environment
    /// variable or file and not kept.
    pub token_sha256: [u8; 32],
    /// Groups.
    pub groups: Vec<String>,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
}

impl ServiceTokenConfig {
    /// The principal the token's requests run as.
    pub fn principal(&self) -> Principal {
        Principal {
            user: self.name.clone(),
            kind: PrincipalKind::Service,
            groups: self.groups.clone(),
            attributes: self.attributes.clone(),
        }
    }
}

impl fmt::Debug for ServiceTokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceTokenConfig").field("name", &self.name).field("groups", &self.groups).finish()
    }
}

/// Why credentials were refused. The message never says which part was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password, or an invalid or expired token.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// No credentials were given and the mesh requires them.
    #[error("authentication required")]
    Missing,
    /// Too many wrong passwords for this user or from this address: no
    /// password is checked until the lockout ends.
    #[error("too many failed logins for this user or address; retry in {} s", .retry_after.as_secs().max(1))]
    LockedOut {
        /// How long until the next attempt is considered.
        retry_after: Duration,
    },
}

/// Checks credentials and issues session tokens.
pub struct Authenticator {
    config: AuthConfig,
    key: Vec<u8>,
    /// A hash verified for unknown users, so that a login for a missing user costs
    /// as much as one for a real user with a wrong password.
    decoy_hash: String,
    /// Verifies identity-provider tokens, when `auth.jwt` is configured.
    jwt: Option<std::sync::Arc<crate::jwt::JwtVerifier>>,
    /// Failed logins per user and address.
    throttle: LoginThrottle,
}

const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Bw0g+7Rw1oM2GqrvDJhm5hmYZfxS0Y5dfSzpeA7Wx6w";

impl Authenticator {
    /// Builds an authenticator; draws a random signing key if none is configured.
    pub fn new(config: AuthConfig) -> Self {
        let key = match &config.signing_key {
            Some(k) => k.clone(),
            None => {
                let mut k = vec![0u8; 32];
                if getrandom::fill(&mut k).is_err() {
                    // Without an OS random source no token can be trusted: use a
                    // key no one knows but that also never verifies.
                    tracing::error!("no OS random source: session tokens are disabled");
                    k.clear();
                }
                k
            }
        };
        let decoy_hash =
            config.users.first().map(|u| u.password_hash.clone()).unwrap_or_else(|| DECOY_HASH.to_string());
        let throttle = LoginThrottle::new(config.throttle.clone());
        Authenticator { config, key, decoy_hash, jwt: None, throttle }
    }

    /// Accepts JWT bearer tokens checked by `verifier`.
    pub fn with_jwt(mut self, verifier: std::sync::Arc<crate::jwt::JwtVerifier>) -> Self {
        self.jwt = Some(verifier);
        self
    }

    /// Whether clients without credentials are served (as the anonymous principal).
    pub fn allows_anonymous(&self) -> bool {
        self.config.allow_anonymous
    }

    /// Whether any way to log in is configured.
    pub fn has_identities(&self) -> bool {
        !self.config.users.is_empty() || !self.config.service_tokens.is_empty() || self.jwt.is_some()
    }

    /// Verifies a user's password, unless the user or the client `address`
    /// is locked out after too many failures (see [`LoginThrottle`]). Argon2
    /// verification compares in constant time and costs tens of milliseconds
    /// of CPU: servers call this off their network threads.
    pub fn login(&self, user: &str, password: &str, address: Option<IpAddr>) -> Result<Principal, AuthError> {
        if let Lockout::For(retry_after) = self.throttle.check(user, address) {
            return Err(AuthError::LockedOut { retry_after });
        }
        match self.verify_password(user, password) {
            Ok(principal) => {
                self.throttle.succeeded(user);
                Ok(principal)
            }
            Err(e) => {
                if let Lockout::For(d) = self.throttle.failed(user, address) {
                    tracing::warn!(
                        user = ?user,
                        address = ?address,
                        lockout_seconds = d.as_secs(),
                        "too many failed logins: locked out"
                    );
                }
                Err(e)
            }
        }
    }

    fn verify_password(&self, user: &str, password: &str) -> Result<Principal, AuthError> {
        let found = self.config.users.iter().find(|u| u.name == user);
        let hash = found.map(|u| u.password_hash.as_str()).unwrap_or(self.decoy_hash.as_str());
        let verified = PasswordHash::new(hash)
            .ok()
            .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false);
        match found {
            Some(u) if verified => Ok(u.principal()),
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    /// Issues a session token for a logged-in user, valid for the configured TTL.
    pub fn issue_token(&self, principal: &Principal) -> String {
        let expires = now_secs().saturating_add(self.config.token_ttl.as_secs());
        session_token::issue(&self.key, &principal.user, expires)
    }

    /// Resolves a bearer token: a session token issued by [`Self::issue_token`] or
    /// a configured service token.
    pub fn verify_token(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(jwt) = token.strip_prefix(session_token::PREFIX) {
            return self.verify_session_token(jwt);
        }
        if let Some(jwt) = &self.jwt
            && token.split('.').count() == 3
        {
            let principal = jwt.verify(token).map_err(|reason| {
                tracing::info!(%reason, "JWT refused");
                AuthError::InvalidCredentials
            })?;
            // Policies name principals by name: a subject that is also a
            // configured user or service, or a reserved name, would inherit
            // their grants.
            let name = principal.user.as_str();
            let taken = self.config.users.iter().any(|u| u.name == name)
                || self.config.service_tokens.iter().any(|t| t.name == name);
            if taken || is_reserved_principal(name) {
                tracing::warn!(subject = ?name, "JWT refused: its subject is a configured or reserved principal name");
                return Err(AuthError::InvalidCredentials);
            }
            return Ok(principal);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every service token so the time taken does not reveal
        // which one (if any) matched.
        let mut matched = None;
        for service in &self.config.service_tokens {
            if bool::from(service.token_sha256.ct_eq(&digest)) {
                matched = Some(service);
            }
        }
        matched.map(ServiceTokenConfig::principal).ok_or(AuthError::InvalidCredentials)
    }

    fn verify_session_token(&self, jwt: &str) -> Result<Principal, AuthError> {
        let user = session_token::verify(&self.key, jwt, now_secs()).ok_or(AuthError::InvalidCredentials)?;
        // Groups and attributes come from the current configuration: a user removed
        // from the file loses access even with an unexpired token.
        let u = self.config.users.iter().find(|u| u.name == user).ok_or(AuthError::InvalidCredentials)?;
        Ok(u.principal())
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Hashes a password for the `auth.users[].password_hash` key (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Checks that a string is an argon2 PHC hash, for configuration validation.
pub(crate) fn check_password_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash)
        .map_err(|e| format!("not an argon2 PHC hash ({e}); make one with `agora hash-password`"))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!("expected an argon2 hash, found algorithm '{}'", parsed.algorithm.as_str()));
    }
    Ok(())
}

/// SHA-256 of a service token, as kept in [`ServiceTokenConfig`].
pub(crate) fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn authenticator() -> Authenticator {
        let hash = hash_password("s3cret").unwrap();
        Authenticator::new(AuthConfig {
            allow_anonymous: false,
            token_ttl: Duration::from_secs(60),
            signing_key: Some(b"0123456789abcdef0123456789abcdef".to_vec()),
            jwt: None,
            throttle: ThrottleConfig::default(),
            users: vec![UserConfig {
                name: "alice".into(),
                password_hash: hash,
                groups: vec!["analysts".into()],
                attributes: BTreeMap::from([("region".into(), "EUROPE".into())]),
            }],
            service_tokens: vec![ServiceTokenConfig {
                name: "etl".into(),
                token_sha256: token_digest("machine-token"),
                groups: vec!["etl".into()],
                attributes: BTreeMap::new(),
            }],
        })
    }

    #[test]
    fn passwords_are_checked() {
        let auth = authenticator();
        let alice = auth.login("alice", "s3cret", None).unwrap();
        assert_eq!(alice.groups, vec!["analysts"]);
        assert_eq!(alice.attributes["region"], "EUROPE");
        assert_eq!(auth.login("alice", "wrong", None), Err(AuthError::InvalidCredentials));
        assert_eq!(auth.login("mallory", "s3cret", None), Err(AuthError::InvalidCredentials));
    }

    #[test]
    fn session_tokens_round_trip_and_resist_tampering() {
        let auth = authenticator();
        let token = auth.issue_token(&Principal::user("alice"));
        assert_eq!(auth.verify_token(&token).unwrap().user, "alice");
        // The claims say who the token is for: claiming another user breaks the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        assert!(claims.contains("\"sub\":\"alice\""), "{claims}");
        let forged_claims = URL_SAFE_NO_PAD.encode(claims.replace("alice", "admin"));
        let forged = [parts[0], parts[1], &forged_claims, parts[3]].join(".");
        assert_eq!(auth.verify_token(&forged), Err(AuthError::InvalidCredentials));
        let mut truncated = token.clone();
        truncated.pop();
        assert_eq!(auth.verify_token(&truncated), Err(AuthError::InvalidCredentials));
        // A token signed by another key is refused.
        let other =
            Authenticator::new(AuthConfig { signing_key: Some(b"another key".to_vec()), ..authenticator().config });
        assert_eq!(other.verify_token(&token), Err(AuthError::InvalidCredentials));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let auth = Authenticator::new(AuthConfig { token_ttl: Duration::ZERO, ..authenticator().config });
        let token = auth.issue_token(&Principal::user("alice"));
        assert_eq!(auth.verify_token(&token), Err(AuthError::InvalidCredentials));
    }

    #[test]
    fn service_tokens_resolve_to_their_principal() {
        let auth = authenticator();
        assert_eq!(auth.verify_token("machine-token").unwrap().user, "etl");
        assert_eq!(auth.verify_token("machine-tokem"), Err(AuthError::InvalidCredentials));
    }

    #[test]
    fn password_hashes_are_validated() {
        assert!(check_password_hash(&hash_password("x").unwrap()).is_ok());
        assert!(check_password_hash("plaintext").unwrap_err().contains("agora hash-password"));
    }
}
