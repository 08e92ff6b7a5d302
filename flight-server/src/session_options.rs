//! Flight SQL sessions: `SetSessionOptions`, `GetSessionOptions` and
//! `CloseSession`.
//!
//! A session is server-side state a client refers to by the cookie
//! `arrow_flight_session_id` (the name the Flight specification suggests; the
//! JDBC driver keeps cookies, the ADBC driver with its cookie middleware on).
//! Its options are Agora session settings: `schema`, the domain unqualified
//! product names resolve in (JDBC's `schema`, ADBC's current database schema),
//! and `catalog`, which can only be `mesh`. A session belongs to the principal
//! that opened it: another principal's cookie is an unknown session, so a
//! leaked cookie grants nothing and reveals nothing. The store is bounded like
//! the prepared statements' (per principal, in all, and by idle time).
//!
//! arrow-flight 59 has no generated code for these messages (they are in
//! `Flight.proto` since Arrow 15); they are defined here with prost, field for
//! field.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The cookie naming a session.
pub const COOKIE: &str = "arrow_flight_session_id";

/// `SessionOptionValue` of `Flight.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionOptionValue {
    /// The value; none means "unset the option".
    #[prost(oneof = "OptionValue", tags = "1, 2, 3, 4, 5")]
    pub option_value: Option<OptionValue>,
}

/// `SessionOptionValue.StringListValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringListValue {
    /// The strings.
    #[prost(string, repeated, tag = "1")]
    pub values: Vec<String>,
}

/// The `option_value` one-of of `SessionOptionValue`.
// The variants are named after Flight.proto's fields (`string_value`, …).
#[allow(clippy::enum_variant_names)]
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum OptionValue {
    /// A string.
    #[prost(string, tag = "1")]
    StringValue(String),
    /// A boolean.
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    /// A 64-bit integer.
    #[prost(sfixed64, tag = "3")]
    Int64Value(i64),
    /// A double.
    #[prost(double, tag = "4")]
    DoubleValue(f64),
    /// A list of strings.
    #[prost(message, tag = "5")]
    StringListValue(StringListValue),
}

/// `SetSessionOptionsRequest` (the body of the `SetSessionOptions` action).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsRequest {
    /// The options to set, by name.
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

/// `SetSessionOptionsResult.ErrorValue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorValue {
    /// Not sent by Agora.
    Unspecified = 0,
    /// No option of that name.
    InvalidName = 1,
    /// The value or its type is not accepted.
    InvalidValue = 2,
    /// The option cannot be set.
    Error = 3,
}

/// `SetSessionOptionsResult.Error`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionError {
    /// What was wrong.
    #[prost(enumeration = "ErrorValue", tag = "1")]
    pub value: i32,
}

/// `SetSessionOptionsResult`: an entry for each option that was not set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsResult {
    /// The options that were not set, by name.
    #[prost(map = "string, message", tag = "1")]
    pub errors: HashMap<String, SetSessionOptionError>,
}

/// `GetSessionOptionsResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSessionOptionsResult {
    /// The session's options, by name.
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

/// `CloseSessionResult.Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CloseStatus {
    /// Not sent by Agora.
    Unspecified = 0,
    /// The session is gone.
    Closed = 1,
    /// Not sent by Agora: closing is immediate.
    Closing = 2,
    /// Not sent by Agora: every session can be closed.
    NotCloseable = 3,
}

/// `CloseSessionResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CloseSessionResult {
    /// The outcome.
    #[prost(enumeration = "CloseStatus", tag = "1")]
    pub status: i32,
}

/// Bounds of the session store.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Sessions one principal may keep; opening one more forgets its least
    /// recently used.
    pub per_principal: usize,
    /// Sessions kept in all; when full (after forgetting idle ones) a new
    /// session is refused rather than another principal's forgotten.
    pub total: usize,
    /// A session unused this long is forgotten.
    pub idle: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        // A BI tool keeps a connection open through a working day.
        SessionLimits { per_principal: 64, total: 10_000, idle: Duration::from_secs(12 * 3600) }
    }
}

/// The options of one session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionSettings {
    /// The schema unqualified names resolve in.
    pub schema: Option<String>,
}

struct ServerSession {
    owner: String,
    settings: SessionSettings,
    last_used: Instant,
}

/// The server's sessions, by cookie value.
pub struct SessionStore {
    limits: SessionLimits,
    sessions: Mutex<HashMap<String, ServerSession>>,
}

/// What `SetSessionOptions` did.
pub struct SetOutcome {
    /// The options that were not set.
    pub result: SetSessionOptionsResult,
    /// The cookie value of a session opened by this request (to send in a
    /// `set-cookie` header); none when the request's session was updated.
    pub opened: Option<String>,
}

/// Refuses to keep a session for a principal that did not log in: every
/// anonymous client is the same principal and would share (and evict) them.
pub fn refuse_anonymous(user: &str) -> Result<(), Status> {
    if user == agora_engine::Principal::anonymous().user {
        return Err(Status::permission_denied(
            "sessions need a login: anonymous clients cannot set session options (qualify names as domain.product)",
        ));
    }
    Ok(())
}

fn no_session() -> Status {
    Status::not_found(format!(
        "no session: this request carries no `{COOKIE}` cookie of a session of yours that is still open (sessions \
         are opened by SetSessionOptions and forgotten after 12 hours of disuse)"
    ))
}

fn string(value: &str) -> SessionOptionValue {
    SessionOptionValue { option_value: Some(OptionValue::StringValue(value.to_string())) }
}

/// The session a request names, from its `cookie` headers.
pub fn session_id(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
}

impl SessionStore {
    /// An empty store.
    pub fn new(limits: SessionLimits) -> Self {
        SessionStore { limits, sessions: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ServerSession>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The settings of `owner`'s session `id`, marking it used; none for an
    /// unknown, expired or another principal's session.
    pub fn settings(&self, id: &str, owner: &str) -> Option<SessionSettings> {
        let now = Instant::now();
        let mut sessions = self.lock();
        let session = sessions.get_mut(id).filter(|s| s.owner == owner)?;
        if now.duration_since(session.last_used) >= self.limits.idle {
            sessions.remove(id);
            return None;
        }
        session.last_used = now;
        Some(session.settings.clone())
    }

    /// Applies `request` to `owner`'s session `id`, opening a session when
    /// there is none. `schemas` are the schemas the principal may see: a
    /// `schema` outside them is an invalid value, whether or not it exists.
    pub fn set(
        &self,
        id: Option<&str>,
        owner: &str,
        request: SetSessionOptionsRequest,
        schemas: &[String],
    ) -> Result<SetOutcome, Status> {
        let current = id.and_then(|id| self.settings(id, owner));
        let opened = current.is_none();
        let mut settings = current.unwrap_or_default();
        let mut errors = HashMap::new();
        for (name, value) in request.session_options {
            let refused = match (name.as_str(), value.option_value) {
                ("schema", None) => {
                    settings.schema = None;
                    None
                }
                ("schema", Some(OptionValue::StringValue(schema))) if schemas.contains(&schema) => {
                    settings.schema = Some(schema);
                    None
                }
                ("catalog", None) => None,
                ("catalog", Some(OptionValue::StringValue(catalog))) if catalog == agora_engine::CATALOG => None,
                ("schema" | "catalog", Some(_)) => Some(ErrorValue::InvalidValue),
                _ => Some(ErrorValue::InvalidName),
            };
            if let Some(error) = refused {
                errors.insert(name, SetSessionOptionError { value: error as i32 });
            }
        }
        let result = SetSessionOptionsResult { errors };
        let now = Instant::now();
        let mut sessions = self.lock();
        if !opened && let Some(session) = id.and_then(|id| sessions.get_mut(id)) {
            session.settings = settings;
            session.last_used = now;
            return Ok(SetOutcome { result, opened: None });
        }
        sessions.retain(|_, s| now.duration_since(s.last_used) < self.limits.idle);
        if sessions.values().filter(|s| s.owner == owner).count() >= self.limits.per_principal {
            let oldest = sessions.iter().filter(|(_, s)| s.owner == owner).min_by_key(|(_, s)| s.last_used);
            if let Some(key) = oldest.map(|(key, _)| key.clone()) {
                sessions.remove(&key);
            }
        }
        if sessions.len() >= self.limits.total {
            return Err(Status::resource_exhausted(format!(
                "the server keeps {} sessions, its limit; close sessions you no longer use (CloseSession)",
                self.limits.total
            )));
        }
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|_| Status::unavailable("no random source for a session id"))?;
        let new_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        sessions.insert(new_id.clone(), ServerSession { owner: owner.to_string(), settings, last_used: now });
        Ok(SetOutcome { result, opened: Some(new_id) })
    }

    /// The options of `owner`'s session `id`, as they apply: without a
    /// session (none yet, expired, another principal's) only the catalog, as
    /// drivers read the current catalog and schema before setting any; a
    /// schema the principal may no longer see (`schemas`) is not reported,
    /// as it no longer applies.
    pub fn get(&self, id: Option<&str>, owner: &str, schemas: &[String]) -> GetSessionOptionsResult {
        let settings = id.and_then(|id| self.settings(id, owner)).unwrap_or_default();
        let mut session_options = HashMap::from([("catalog".to_string(), string(agora_engine::CATALOG))]);
        if let Some(schema) = settings.schema.filter(|s| schemas.contains(s)) {
            session_options.insert("schema".to_string(), string(&schema));
        }
        GetSessionOptionsResult { session_options }
    }

    /// Forgets `owner`'s session `id`.
    pub fn close(&self, id: Option<&str>, owner: &str) -> Result<CloseSessionResult, Status> {
        let id = id.ok_or_else(no_session)?;
        let mut sessions = self.lock();
        match sessions.get(id) {
            Some(session) if session.owner == owner => {
                sessions.remove(id);
                Ok(CloseSessionResult { status: CloseStatus::Closed as i32 })
            }
            _ => Err(no_session()),
        }
    }

    /// Sessions kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn request(options: &[(&str, Option<OptionValue>)]) -> SetSessionOptionsRequest {
        SetSessionOptionsRequest {
            session_options: options
                .iter()
                .map(|(name, value)| (name.to_string(), SessionOptionValue { option_value: value.clone() }))
                .collect(),
        }
    }

    fn schema(name: &str) -> Option<OptionValue> {
        Some(OptionValue::StringValue(name.to_string()))
    }

    fn visible() -> Vec<String> {
        vec!["customers".into(), "sales".into()]
    }

    #[test]
    fn a_session_holds_its_schema_for_its_owner_only() {
        let store = SessionStore::new(SessionLimits::default());
        let set = store.set(None, "ana", request(&[("schema", schema("sales"))]), &visible()).unwrap();
        assert!(set.result.errors.is_empty());
        let id = set.opened.expect("a new session");
        assert_eq!(store.settings(&id, "ana").unwrap().schema.as_deref(), Some("sales"));
        assert_eq!(store.settings(&id, "mallory"), None);
        let theirs = store.get(Some(&id), "mallory", &visible()).session_options;
        assert_eq!(theirs.keys().collect::<Vec<_>>(), vec!["catalog"], "another principal sees no schema");
        let hers = store.get(Some(&id), "ana", &visible()).session_options;
        assert_eq!(hers.get("schema"), Some(&string("sales")));
        // A schema she may no longer see is not reported.
        let now_hidden = store.get(Some(&id), "ana", &["customers".to_string()]).session_options;
        assert!(!now_hidden.contains_key("schema"));
        assert_eq!(store.close(Some(&id), "mallory").unwrap_err().code(), tonic::Code::NotFound);
        // Updating keeps the session and its cookie.
        let again = store.set(Some(&id), "ana", request(&[("schema", None)]), &visible()).unwrap();
        assert_eq!(again.opened, None);
        assert_eq!(store.settings(&id, "ana").unwrap().schema, None);
        assert_eq!(store.close(Some(&id), "ana").unwrap().status, CloseStatus::Closed as i32);
        assert_eq!(store.settings(&id, "ana"), None);
    }

    #[test]
    fn options_outside_what_the_principal_may_use_are_refused_by_name() {
        let store = SessionStore::new(SessionLimits::default());
        let options = [
            ("schema", schema("hr")),
            ("catalog", schema("other")),
            ("search_path", schema("sales")),
            ("schema2", Some(OptionValue::BoolValue(true))),
        ];
        let set = store.set(None, "ana", request(&options), &visible()).unwrap();
        let errors: HashMap<&str, i32> = set.result.errors.iter().map(|(k, v)| (k.as_str(), v.value)).collect();
        assert_eq!(
            errors,
            HashMap::from([
                ("schema", ErrorValue::InvalidValue as i32),
                ("catalog", ErrorValue::InvalidValue as i32),
                ("search_path", ErrorValue::InvalidName as i32),
                ("schema2", ErrorValue::InvalidName as i32),
            ])
        );
        let id = set.opened.unwrap();
        assert_eq!(store.settings(&id, "ana").unwrap(), SessionSettings::default());
        let options = store.get(Some(&id), "ana", &visible()).session_options;
        assert_eq!(options.keys().collect::<Vec<_>>(), vec!["catalog"]);
    }

    #[test]
    fn the_store_is_bounded_per_principal_in_all_and_by_idle_time() {
        let limits = SessionLimits { per_principal: 2, total: 3, idle: Duration::from_secs(3600) };
        let store = SessionStore::new(limits);
        let open = |owner: &str| store.set(None, owner, request(&[]), &visible()).map(|s| s.opened.unwrap());
        let first = open("ana").unwrap();
        let _second = open("ana").unwrap();
        let _third = open("ana").unwrap();
        assert_eq!(store.len(), 2, "a third session of ana forgets her oldest");
        assert_eq!(store.settings(&first, "ana"), None);
        open("bob").unwrap();
        assert_eq!(open("carl").unwrap_err().code(), tonic::Code::ResourceExhausted);
        assert_eq!(store.len(), 3, "nobody else's session was forgotten");

        let idle = SessionStore::new(SessionLimits { idle: Duration::ZERO, ..limits });
        let id = idle.set(None, "ana", request(&[]), &visible()).unwrap().opened.unwrap();
        assert_eq!(idle.settings(&id, "ana"), None);
    }

    #[test]
    fn the_cookie_is_found_among_others_and_the_messages_round_trip() {
        let mut metadata = MetadataMap::new();
        metadata.insert("cookie", "theme=dark; arrow_flight_session_id=abc123".parse().unwrap());
        assert_eq!(session_id(&metadata).as_deref(), Some("abc123"));
        assert_eq!(session_id(&MetadataMap::new()), None);

        let sent = request(&[("schema", schema("sales")), ("catalog", None)]);
        let decoded = SetSessionOptionsRequest::decode(sent.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, sent);
        // Field numbers as in Flight.proto: map entry 1 {key 1, value 2 {string_value 1}}.
        let one = request(&[("schema", schema("s"))]).encode_to_vec();
        assert_eq!(one, b"\x0a\x0d\x0a\x06schema\x12\x03\x0a\x01s");
    }
}
