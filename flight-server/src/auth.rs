//! Authentication of Flight requests.
//!
//! Every RPC except `Handshake` (and the standard gRPC health service) must
//! carry `authorization: Bearer <token>`; a tower layer checks it before the
//! request reaches the service and attaches the resulting [`Principal`] to
//! the request. `Handshake` exchanges HTTP Basic
//! credentials (padded or unpadded base64, as Go clients send) for a session
//! token returned in the `authorization` response header. Basic credentials are
//! accepted by `Handshake` only: a password check costs tens of milliseconds of
//! CPU, so it happens once per login, throttled, never on every call.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use agora_engine::audit::{Outcome, RequestEvent, RequestKind};
use agora_engine::{AuthError, Authenticator, Engine, Principal};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use futures::future::BoxFuture;
use http::HeaderMap;
use tonic::Status;
use tower::{Layer, Service};

/// Standard base64 that accepts input with or without `=` padding.
const BASE64_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";

/// The standard gRPC health service: answered without credentials (load
/// balancers and orchestrators have none), not audited (it carries no data
/// and no principal), counted in the metrics.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Credentials found in an `authorization` header.
pub enum Credentials {
    /// `Basic base64(user:password)`.
    Basic { user: String, password: String },
    /// `Bearer token`.
    Bearer(String),
}

/// Reads the `authorization` header. `Ok(None)` when there is none.
pub fn credentials(headers: &HeaderMap) -> Result<Option<Credentials>, Status> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| unauthenticated())?;
    let (scheme, rest) = value.split_once(' ').ok_or_else(unauthenticated)?;
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => {
            let decoded = BASE64_ANY_PADDING.decode(rest.trim()).map_err(|_| unauthenticated())?;
            let decoded = String::from_utf8(decoded).map_err(|_| unauthenticated())?;
            let (user, password) = decoded.split_once(':').ok_or_else(unauthenticated)?;
            Ok(Some(Credentials::Basic { user: user.to_string(), password: password.to_string() }))
        }
        "bearer" => Ok(Some(Credentials::Bearer(rest.trim().to_string()))),
        _ => Err(unauthenticated()),
    }
}

/// The one answer to every authentication failure: it never says which part was
/// wrong.
pub fn unauthenticated() -> Status {
    Status::unauthenticated("invalid or missing credentials")
}

/// Marks a refusal whose request the service has recorded already; the
/// authentication layer records every other refused or failed request.
const RECORDED: &str = "x-agora-recorded";

/// `status`, marked as recorded in the audit log (see [`AuthLayer`]).
pub(crate) fn recorded(mut status: Status) -> Status {
    status.metadata_mut().insert(RECORDED, tonic::metadata::MetadataValue::from_static("1"));
    status
}

/// Records a refused or failed request that nothing recorded on its way
/// (a default method, a command that does not decode, a forged ticket or
/// handle, an unknown path), and takes the marker off recorded ones.
async fn record_unrecorded(
    mut response: http::Response<tonic::body::Body>,
    engine: &Engine,
    method: &str,
    principal: (&str, &[String]),
    client: Option<String>,
) -> http::Response<tonic::body::Body> {
    if response.headers_mut().remove(RECORDED).is_some() {
        return response;
    }
    let Some(status) = Status::from_header_map(response.headers()) else { return response };
    let message = status.message().to_string();
    let outcome = match status.code() {
        tonic::Code::Ok => return response,
        tonic::Code::Unauthenticated
        | tonic::Code::PermissionDenied
        | tonic::Code::InvalidArgument
        | tonic::Code::NotFound
        | tonic::Code::Unimplemented
        | tonic::Code::ResourceExhausted
        | tonic::Code::FailedPrecondition
        | tonic::Code::OutOfRange => Outcome::Denied(message),
        _ => Outcome::Failed(message),
    };
    let _ = engine.record_event(rpc_event(method, principal, client, outcome)).await;
    response
}

/// Resolves the principal of a non-handshake request.
fn principal(auth: &Authenticator, headers: &HeaderMap) -> Result<Principal, Status> {
    match credentials(headers)? {
        Some(Credentials::Bearer(token)) => match auth.verify_token(&token) {
            Ok(p) => Ok(p),
            // Some clients send junk such as `Bearer None` when they have no
            // credentials; where anonymous access is allowed that is no credentials.
            Err(AuthError::InvalidCredentials) if auth.allows_anonymous() && !auth.has_identities() => {
                Ok(Principal::anonymous())
            }
            Err(_) => Err(unauthenticated()),
        },
        Some(Credentials::Basic { .. }) => Err(Status::unauthenticated(
            "Basic credentials are accepted by Handshake only: send the bearer token it returns",
        )),
        None if auth.allows_anonymous() => Ok(Principal::anonymous()),
        None => Err(unauthenticated()),
    }
}

/// Adds authentication and a request log line to a gRPC service, and records
/// in the engine's audit log the requests that never reach it (refused as
/// unauthenticated, or failed with a panic).
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    engine: Engine,
    draining: Arc<AtomicBool>,
}

impl AuthLayer {
    /// Authenticates requests with `auth`; records refusals in `engine`'s
    /// audit log. Once `draining` is set, requests that would start new work
    /// are refused (see [`starts_work`]).
    pub fn new(auth: Arc<Authenticator>, engine: Engine, draining: Arc<AtomicBool>) -> Self {
        AuthLayer { auth, engine, draining }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: Arc::clone(&self.auth),
            engine: self.engine.clone(),
            draining: Arc::clone(&self.draining),
        }
    }
}

/// The service produced by [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
    engine: Engine,
    draining: Arc<AtomicBool>,
}

/// The Flight methods that start work: what a draining server refuses. The
/// others stay open until it stops: `DoGet` (its ticket was issued before
/// the drain, so its query belongs to a client already served),
/// `DoAction` (closing prepared statements and sessions, cancelling) and
/// the listings.
fn starts_work(method: &str) -> bool {
    matches!(method, "Handshake" | "GetFlightInfo" | "PollFlightInfo" | "GetSchema" | "DoPut" | "DoExchange")
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path().to_string();
        let rpc = crate::ops::metrics::rpc_label(&path);
        if path.starts_with(HEALTH_PREFIX) {
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            return Box::pin(async move {
                let response = inner.call(request).await;
                if let Ok(r) = &response {
                    crate::ops::metrics::record_rpc(rpc, grpc_code(r), started.elapsed());
                }
                response
            });
        }
        let method = path.rsplit('/').next().unwrap_or_default().to_string();
        let client = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr)
            .map(|a| a.to_string());
        if self.draining.load(Ordering::SeqCst) && starts_work(&method) {
            let status =
                Status::unavailable("the server is shutting down and takes no new queries; retry on another server");
            crate::ops::metrics::record_rpc(rpc, status.code(), started.elapsed());
            let event = rpc_event(&method, ("-", &[]), client, Outcome::Failed(status.message().to_string()));
            return refused(self.engine.clone(), event, status);
        }
        let (user, groups) = if path == HANDSHAKE_PATH {
            ("-".to_string(), Vec::new())
        } else {
            match principal(&self.auth, request.headers()) {
                Ok(p) => {
                    let who = (p.user.clone(), p.groups.clone());
                    request.extensions_mut().insert(p);
                    who
                }
                Err(status) => {
                    tracing::warn!(rpc = ?method, "request refused: unauthenticated");
                    crate::ops::metrics::record_rpc(rpc, status.code(), started.elapsed());
                    let event = rpc_event(&method, ("-", &[]), client, Outcome::Denied(status.message().to_string()));
                    return refused(self.engine.clone(), event, status);
                }
            }
        };
        let engine = self.engine.clone();
        // The request's span (a trace's server span when traces are
        // exported); its name and method come from the fixed set of RPCs.
        let span = tracing::info_span!(
            "rpc",
            otel.name = %format!("FlightService/{rpc}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "arrow.flight.protocol.FlightService",
            rpc.method = rpc,
            enduser.id = %user,
        );
        crate::telemetry::continue_trace(&span, request.headers());
        // The clone taken by `poll_ready` must serve this call (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let future = async move {
            // A panic while serving one request fails that request alone.
            let response = match AssertUnwindSafe(inner.call(request)).catch_unwind().await {
                Ok(Ok(response)) => {
                    let response = client_decode_errors(response);
                    Ok(record_unrecorded(response, &engine, &method, (&user, &groups), client).await)
                }
                Ok(Err(e)) => Err(e),
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".into());
                    tracing::error!(rpc = ?method, principal = ?user, panic = ?message, "request panicked");
                    let event = rpc_event(
                        &method,
                        (&user, &groups),
                        client,
                        Outcome::Failed(format!("internal error (panic): {message}")),
                    );
                    let _ = engine.record_event(event).await;
                    Ok(Status::internal("internal error while serving the request; it was logged").into_http())
                }
            };
            tracing::info!(rpc = ?method, principal = ?user, elapsed_ms = started.elapsed().as_millis() as u64, "request");
            if let Ok(r) = &response {
                crate::ops::metrics::record_rpc(rpc, grpc_code(r), started.elapsed());
            }
            response
        };
        let future: BoxFuture<'static, _> = Box::pin(tracing::Instrument::instrument(future, span));
        future
    }
}

/// Answers a request the service never sees with `status`, after
/// recording `event` in the audit log.
fn refused<E>(
    engine: Engine,
    event: RequestEvent,
    status: Status,
) -> Pin<Box<dyn std::future::Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>> {
    Box::pin(async move {
        let _ = engine.record_event(event).await;
        Ok(status.into_http())
    })
}

/// The gRPC status of a response as far as its headers tell: a stream that
/// started is `OK` here (its end, in the trailers, is counted per query).
fn grpc_code(response: &http::Response<tonic::body::Body>) -> tonic::Code {
    match response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok()) {
        Some(code) => tonic::Code::from_i32(code),
        None => tonic::Code::Ok,
    }
}

/// A record of a request the engine never saw, from `principal` (user, groups).
pub(crate) fn rpc_event(
    method: &str,
    principal: (&str, &[String]),
    client: Option<String>,
    outcome: Outcome,
) -> RequestEvent {
    RequestEvent {
        kind: RequestKind::Rpc,
        action: method.to_string(),
        user: principal.0.to_string(),
        groups: principal.1.to_vec(),
        client,
        outcome,
    }
}

/// arrow-flight reports a command it cannot decode (a known type with a
/// malformed body) as `INTERNAL`; it is the client's mistake, so it is
/// answered as `INVALID_ARGUMENT`.
fn client_decode_errors(mut response: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    let headers = response.headers();
    let internal = headers.get("grpc-status").is_some_and(|v| v.as_bytes() == b"13");
    let decode = headers.get("grpc-message").is_some_and(|v| v.as_bytes().starts_with(b"ParseError"));
    if internal && decode {
        let status = Status::invalid_argument("malformed Flight SQL command: its body does not decode");
        let (mut parts, body) = response.into_parts();
        let fresh = status.into_http::<tonic::body::Body>();
        parts.headers = fresh.headers().clone();
        response = http::Response::from_parts(parts, body);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn basic_credentials_decode_with_and_without_padding() {
        // "ab:c" encodes to "YWI6Yw==" with padding.
        for encoded in ["YWI6Yw==", "YWI6Yw"] {
            match credentials(&headers(&format!("Basic {encoded}"))).unwrap() {
                Some(Credentials::Basic { user, password }) => {
                    assert_eq!((user.as_str(), password.as_str()), ("ab", "c"))
                }
                _ => panic!("expected basic credentials"),
            }
        }
        assert!(matches!(credentials(&headers("Bearer xyz")).unwrap(), Some(Credentials::Bearer(t)) if t == "xyz"));
        assert!(credentials(&headers("Digest abc")).is_err());
        assert!(credentials(&HeaderMap::new()).unwrap().is_none());
    }
}
