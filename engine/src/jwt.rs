//! Bearer tokens from an enterprise identity provider (OIDC / SSO): JWTs signed
//! with a key from a JSON Web Key Set, read from a file or fetched from a URL.
//!
//! A token is accepted only if its signature verifies with the key its header
//! names (`kid`), with an asymmetric algorithm of that key's family, and if its
//! issuer, audience and expiry (`exp`, `nbf`, with a small leeway) are right.
//! Claims then map onto the principal: user name, groups and attributes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

use crate::principal::Principal;

/// Where the identity provider publishes its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS document on disk.
    File(PathBuf),
    /// The provider's `jwks_uri`, fetched at start-up and refreshed periodically.
    Url(url::Url),
}

/// The `auth.jwt` section of a mesh file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim (one of the token's audiences).
    pub audience: String,
    /// The signing keys.
    pub jwks: JwksSource,
    /// The claim that names the user (default `sub`).
    pub user_claim: String,
    /// The claim that lists the groups: an array or a space-separated string
    /// (default `groups`).
    pub groups_claim: String,
    /// Principal attribute → claim (e.g. `region: region`).
    pub attribute_claims: BTreeMap<String, String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

/// Verifies JWTs against the provider's current keys.
pub struct JwtVerifier {
    config: JwtConfig,
    keys: RwLock<Arc<JwkSet>>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier").field("issuer", &self.config.issuer).finish()
    }
}

/// Why the key set could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cannot load the JWKS from {source_name}: {message}")]
pub struct JwksError {
    source_name: String,
    message: String,
}

impl JwtVerifier {
    /// Loads the key set: reads the file or fetches the URL.
    pub async fn load(config: JwtConfig) -> Result<Self, JwksError> {
        let keys = fetch(&config.jwks).await?;
        Ok(JwtVerifier { config, keys: RwLock::new(Arc::new(keys)) })
    }

    /// A verifier over a key set already in memory.
    pub fn with_keys(config: JwtConfig, keys: JwkSet) -> Self {
        JwtVerifier { config, keys: RwLock::new(Arc::new(keys)) }
    }

    /// Reads the key set again (providers rotate keys); keeps the old set on failure.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let keys = fetch(&self.config.jwks).await?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// The source of the keys, for refresh scheduling.
    pub fn source(&self) -> &JwksSource {
        &self.config.jwks
    }

    /// Verifies a token and maps its claims to a principal. The error says what
    /// was wrong, for the server log; clients only learn that the token was refused.
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let keys = Arc::clone(&self.keys.read().unwrap_or_else(|p| p.into_inner()));
        let jwk = match &header.kid {
            Some(kid) => keys.find(kid).ok_or_else(|| format!("no key with kid '{kid}' in the JWKS"))?,
            None if keys.keys.len() == 1 => &keys.keys[0],
            None => return Err("the token names no key (kid) and the JWKS has several".into()),
        };
        // The algorithm must fit the key's family: a token cannot choose HS256
        // and use a public key as an HMAC secret.
        let family: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(_) => &[Algorithm::ES256, Algorithm::ES384],
            AlgorithmParameters::OctetKeyPair(_) => &[Algorithm::EdDSA],
            AlgorithmParameters::OctetKey(_) => return Err("symmetric keys in a JWKS are not accepted".into()),
        };
        if !family.contains(&header.alg) {
            return Err(format!("algorithm {:?} does not fit the key", header.alg));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable JWK: {e}"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway_seconds;
        let data = decode::<BTreeMap<String, Value>>(token, &key, &validation).map_err(|e| e.to_string())?;
        self.principal(&data.claims)
    }

    fn principal(&self, claims: &BTreeMap<String, Value>) -> Result<Principal, String> {
        let user = match claims.get(&self.config.user_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(format!("the token has no '{}' claim naming the user", self.config.user_claim)),
        };
        let groups = match claims.get(&self.config.groups_claim) {
            Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        };
        let mut attributes = BTreeMap::new();
        for (attribute, claim) in &self.config.attribute_claims {
            match claims.get(claim) {
                Some(Value::String(s)) => {
                    attributes.insert(attribute.clone(), s.clone());
                }
                Some(Value::Number(n)) => {
                    attributes.insert(attribute.clone(), n.to_string());
                }
                Some(Value::Bool(b)) => {
                    attributes.insert(attribute.clone(), b.to_string());
                }
                _ => {}
            }
        }
        Ok(Principal { user, kind: crate::principal::PrincipalKind::User, groups, attributes })
    }
}

async fn fetch(source: &JwksSource) -> Result<JwkSet, JwksError> {
    let (name, text) = match source {
        JwksSource::File(path) => {
            let name = path.display().to_string();
            let text = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| JwksError { source_name: name.clone(), message: e.to_string() })?;
            (name, text)
        }
        JwksSource::Url(url) => {
            let name = url.to_string();
            let err = |e: reqwest::Error| JwksError { source_name: name.clone(), message: e.to_string() };
            let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().map_err(err)?;
            let response = client.get(url.clone()).send().await.map_err(err)?.error_for_status().map_err(err)?;
            let text = response.text().await.map_err(err)?;
            (name, text)
        }
    };
    serde_json::from_str(&text).map_err(|e| JwksError { source_name: name, message: format!("not a JWKS: {e}") })
}
