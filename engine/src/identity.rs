//! Who is asking: principals, and the authentication that establishes them.
//!
//! Every session runs as a [`Principal`]. A server establishes it with an
//! [`Authenticator`] built from the mesh's `auth` section: users log in with a
//! password (argon2 hashes in the file) and receive a signed, expiring session
//! token; machine clients present a static service token. Token checks are
//! stateless (an HMAC over the token's claims), so any server instance sharing the
//! signing key accepts a token another one issued.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::PasswordVerifier;
use argon2::password_hash::phc::PasswordHash;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::login_throttle::{Lockout, LoginThrottle, ThrottleConfig};

/// Names of principals the engine itself uses: `local` (the embedding
/// application, [`crate::Engine::session`]), `anonymous`, and `agora-…`
/// (internal checks such as quality rules). No configured user, service token
/// or identity-provider subject may carry them, so none can inherit what
/// policies grant them.
pub fn is_reserved_principal(name: &str) -> bool {
    matches!(name, "local" | "anonymous") || name.starts_with("agora-")
}

/// What kind of identity a principal is, which decides which policy subjects
/// can name it (`users` or `services`, see [`crate::governance::Subjects`]).
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

const TOKEN_PREFIX: &str = "agora1";
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Bw0g+7Rw1oM2GqrvDJhm5hmYZfxS0Y5dfSzpeA7Wx6w";

type HmacSha256 = hmac::Hmac<Sha256>;

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
        let claims = format!("{}:{expires}", URL_SAFE_NO_PAD.encode(principal.user.as_bytes()));
        let signature = URL_SAFE_NO_PAD.encode(self.sign(claims.as_bytes()));
        format!("{TOKEN_PREFIX}.{claims}.{signature}")
    }

    /// Resolves a bearer token: a session token issued by [`Self::issue_token`] or
    /// a configured service token.
    pub fn verify_token(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(rest) = token.strip_prefix(TOKEN_PREFIX).and_then(|r| r.strip_prefix('.')) {
            return self.verify_session_token(rest);
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

    fn verify_session_token(&self, rest: &str) -> Result<Principal, AuthError> {
        let (claims, signature) = rest.rsplit_once('.').ok_or(AuthError::InvalidCredentials)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| AuthError::InvalidCredentials)?;
        if self.key.is_empty() {
            return Err(AuthError::InvalidCredentials);
        }
        let mut mac = HmacSha256::new_from_slice(&self.key).map_err(|_| AuthError::InvalidCredentials)?;
        mac.update(claims.as_bytes());
        mac.verify_slice(&signature).map_err(|_| AuthError::InvalidCredentials)?;
        let (user, expires) = claims.split_once(':').ok_or(AuthError::InvalidCredentials)?;
        let expires: u64 = expires.parse().map_err(|_| AuthError::InvalidCredentials)?;
        if expires <= now_secs() {
            return Err(AuthError::InvalidCredentials);
        }
        let user = URL_SAFE_NO_PAD.decode(user).map_err(|_| AuthError::InvalidCredentials)?;
        let user = String::from_utf8(user).map_err(|_| AuthError::InvalidCredentials)?;
        // Groups and attributes come from the current configuration: a user removed
        // from the file loses access even with an unexpired token.
        let u = self.config.users.iter().find(|u| u.name == user).ok_or(AuthError::InvalidCredentials)?;
        Ok(u.principal())
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        match HmacSha256::new_from_slice(&self.key) {
            Ok(mut mac) => {
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
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
        let forged = token.replace(&URL_SAFE_NO_PAD.encode("alice"), &URL_SAFE_NO_PAD.encode("admin"));
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
