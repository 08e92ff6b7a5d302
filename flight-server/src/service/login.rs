//! Logins: the Flight Handshake (a password or a bearer token in, a bearer
//! token out), with password checks queued off the network threads.

use std::pin::Pin;
use std::sync::Arc;

use agora_engine::AuthError;
use agora_engine::Principal;
use agora_engine::audit::{Outcome, RequestEvent, RequestKind};
use arrow_flight::{HandshakeRequest, HandshakeResponse};
use futures::Stream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::AgoraFlightSqlService;
use super::errors::status;
use crate::auth::{Credentials, credentials, recorded, unauthenticated};

/// What a Handshake answers: one response with the token.
pub(super) type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

impl AgoraFlightSqlService {
    /// Answers a Handshake: logs the client in and hands back its bearer token.
    pub(super) async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        let client = request.remote_addr();
        let token = match credentials(request.metadata().as_ref())? {
            Some(Credentials::Basic { user, password }) => {
                let principal = self.login(user, password, client).await?;
                self.auth.issue_token(&principal)
            }
            Some(Credentials::Bearer(token)) => {
                let outcome = match self.auth.verify_token(&token) {
                    Ok(p) => Ok(p),
                    Err(_) => Err(Outcome::Denied("invalid or expired bearer token".into())),
                };
                let (user, groups) = match &outcome {
                    Ok(p) => (p.user.clone(), p.groups.clone()),
                    Err(_) => ("-".to_string(), Vec::new()),
                };
                let event = RequestEvent {
                    kind: RequestKind::Login,
                    action: "Handshake".into(),
                    user,
                    groups,
                    client: client.map(|a| a.to_string()),
                    outcome: outcome.clone().err().unwrap_or(Outcome::Ok),
                };
                let written = self.engine.record_event(event).await;
                outcome.map_err(|_| recorded(unauthenticated()))?;
                written.map_err(status)?;
                token
            }
            None if self.auth.allows_anonymous() => String::new(),
            None => return Err(unauthenticated()),
        };
        let payload = HandshakeResponse { protocol_version: 0, payload: token.clone().into() };
        let stream: HandshakeStream = Box::pin(futures::stream::once(async move { Ok(payload) }));
        let mut response = Response::new(stream);
        if !token.is_empty() {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::internal("token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    /// Checks a password off the network threads, at most a few at a time.
    async fn login(
        &self,
        user: String,
        password: String,
        client: Option<std::net::SocketAddr>,
    ) -> Result<Principal, Status> {
        let address = client.map(|a| a.ip());
        let _permit =
            tokio::time::timeout(std::time::Duration::from_secs(10), Arc::clone(&self.logins).acquire_owned())
                .await
                .map_err(|_| Status::unavailable("the server is busy checking logins; retry shortly"))?
                .map_err(|_| Status::unavailable("the server is shutting down"))?;
        let auth = Arc::clone(&self.auth);
        let name = user.clone();
        let outcome = tokio::task::spawn_blocking(move || auth.login(&name, &password, address))
            .await
            .map_err(|_| Status::internal("the login check failed unexpectedly"))?;
        let login = |user: &str, groups: Vec<String>, outcome: Outcome| RequestEvent {
            kind: RequestKind::Login,
            action: "Handshake".into(),
            user: user.to_string(),
            groups,
            client: client.map(|a| a.to_string()),
            outcome,
        };
        match outcome {
            Ok(principal) => {
                tracing::info!(principal = ?principal.user, "login");
                crate::ops::metrics::record_login("ok");
                // A login that cannot be recorded does not succeed.
                let event = login(&principal.user, principal.groups.clone(), Outcome::Ok);
                self.engine.record_event(event).await.map_err(status)?;
                Ok(principal)
            }
            Err(e @ AuthError::LockedOut { .. }) => {
                tracing::warn!(user = ?user, address = ?address, "login refused: locked out");
                crate::ops::metrics::record_login("locked_out");
                let _ = self.engine.record_event(login(&user, Vec::new(), Outcome::Denied(e.to_string()))).await;
                Err(recorded(Status::resource_exhausted(e.to_string())))
            }
            Err(_) => {
                tracing::warn!(user = ?user, address = ?address, "login refused");
                crate::ops::metrics::record_login("wrong_credentials");
                let reason = Outcome::Denied("wrong user name or password".into());
                let _ = self.engine.record_event(login(&user, Vec::new(), reason)).await;
                Err(recorded(unauthenticated()))
            }
        }
    }
}
