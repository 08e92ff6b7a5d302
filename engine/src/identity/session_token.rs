//! Session tokens: what a user who logged in with a password presents on
//! every later call. A token is `agora1.` followed by a JWT signed with
//! HS256 under the engine's signing key (`auth.signing_key`), with the
//! user's name (`sub`), its expiry (`exp`), and Agora as issuer and
//! audience. The prefix tells it apart from an identity provider's JWT
//! before any key is tried; groups and attributes are not in the token but
//! read from the configuration at each call.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What every session token starts with (the format's version).
pub(super) const PREFIX: &str = "agora1.";
const ISSUER: &str = "agora";
const AUDIENCE: &str = "agora-session";

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    iss: String,
    aud: String,
}

/// A token for `user`, valid until `expires` (seconds since the epoch).
pub(super) fn issue(key: &[u8], user: &str, expires: u64) -> String {
    let claims = Claims { sub: user.to_string(), exp: expires, iss: ISSUER.into(), aud: AUDIENCE.into() };
    // Encoding claims of strings and a number with HMAC cannot fail; an
    // empty token would simply never verify.
    let jwt = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(key))
        .unwrap_or_default();
    format!("{PREFIX}{jwt}")
}

/// The user a token (without its prefix) was issued to, if its signature,
/// issuer, audience and expiry hold at `now`. An empty key verifies nothing
/// (the engine had no random source to draw one from).
pub(super) fn verify(key: &[u8], jwt: &str, now: u64) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<Claims>(jwt, &DecodingKey::from_secret(key), &validation).ok()?.claims;
    // jsonwebtoken accepts a token in its expiry second; Agora does not.
    (claims.exp > now).then_some(claims.sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An expiry an hour from now (jsonwebtoken also checks `exp` against
    /// the clock).
    fn in_an_hour() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600
    }

    #[test]
    fn tokens_carry_their_user_until_they_expire() {
        let expires = in_an_hour();
        let token = issue(b"key", "alice", expires);
        let jwt = token.strip_prefix(PREFIX).unwrap();
        assert_eq!(verify(b"key", jwt, expires - 1).as_deref(), Some("alice"));
        assert_eq!(verify(b"key", jwt, expires), None);
        assert_eq!(verify(b"other key", jwt, 1_000), None);
        assert_eq!(verify(b"", jwt, 1_000), None);
    }

    #[test]
    fn other_algorithms_and_audiences_are_refused() {
        let claims = Claims { sub: "alice".into(), exp: in_an_hour(), iss: ISSUER.into(), aud: "elsewhere".into() };
        let jwt =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"key")).unwrap();
        assert_eq!(verify(b"key", &jwt, 1_000), None);
        let claims = Claims { aud: AUDIENCE.into(), ..claims };
        let jwt =
            jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &EncodingKey::from_secret(b"key")).unwrap();
        assert_eq!(verify(b"key", &jwt, 1_000), None);
        // An unsigned token (`alg: none`) claiming to be an admin's.
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let payload = format!(r#"{{"sub":"admin","exp":{},"iss":"{ISSUER}","aud":"{AUDIENCE}"}}"#, in_an_hour());
        let unsigned = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&payload));
        assert_eq!(verify(b"key", &unsigned, 1_000), None);
    }
}
