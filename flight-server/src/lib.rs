//! Agora's network face: an Arrow Flight SQL service over an [`agora_engine::Engine`].
//! The demo mesh generator used by `agora demo` is the `agora-demo` crate.

mod auth;
mod cancel;
mod flight_service;
mod keys;
mod listener;
mod metadata;
pub mod ops;
mod pattern;
mod prepared;
mod service;
mod session_options;
pub mod telemetry;
mod types;

use futures::FutureExt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agora_engine::jwt::{JwksSource, JwtVerifier};
use agora_engine::{Authenticator, Engine};
use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

pub use crate::auth::AuthLayer;
pub use crate::flight_service::AgoraFlightService;
pub use crate::service::AgoraFlightSqlService;
pub use crate::types::TypePolicy;

/// Largest gRPC message the server decodes (commands, parameter batches).
pub const MAX_DECODING_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Largest gRPC message the server sends. Result batches are split into
/// messages of about 2 MiB by the Flight encoder, so this only stops a
/// runaway (one huge value).
pub const MAX_ENCODING_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// How often an idle HTTP/2 connection is pinged, and how long the peer has
/// to answer before the connection is closed: peers that vanished (or never
/// read) give their connection back.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// How the server is exposed.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Serve TLS with these PEM files; plaintext when `None`.
    pub tls: Option<TlsFiles>,
    /// How result types are presented to clients.
    pub types: TypePolicy,
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Nobody could log in: no users or service tokens and anonymous access off.
    #[error(
        "the mesh configuration defines no users or service tokens and does not allow anonymous access; add an `auth` section (see docs/configuration.md) or set `auth.allow_anonymous: true`"
    )]
    NoIdentities,
    /// A TLS file could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The operating system gave no random bytes for the server's keys.
    #[error("{0}")]
    Random(String),
    /// The identity provider's keys could not be loaded.
    #[error("JWT: {0}")]
    Jwks(String),
    /// The gRPC transport failed.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `engine` over Flight SQL on `addr` until `shutdown` completes, then stops
/// accepting requests and lets running ones finish.
pub async fn serve(
    engine: Engine,
    addr: SocketAddr,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let server = FlightServer::prepare(engine, options).await?;
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    server.serve_on(listener, shutdown).await
}

/// Like [`serve`], on an already bound listener (tests bind port 0 and read the
/// port back).
pub async fn serve_on(
    engine: Engine,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    FlightServer::prepare(engine, options).await?.serve_on(listener, shutdown).await
}

/// A Flight SQL server that passed every start-up check (identities, the
/// identity provider's keys, TLS files, random keys) and only waits for a
/// listener: what `agora serve` has before it says it is serving.
pub struct FlightServer {
    engine: Engine,
    auth: Arc<Authenticator>,
    tls: Option<ServerTlsConfig>,
    flight: AgoraFlightSqlService,
}

impl FlightServer {
    /// Runs the start-up checks.
    pub async fn prepare(engine: Engine, options: ServeOptions) -> Result<Self, ServeError> {
        let mut authenticator = Authenticator::new(engine.config().auth.clone());
        if let Some(jwt) = &engine.config().auth.jwt {
            let verifier = Arc::new(JwtVerifier::load(jwt.clone()).await.map_err(|e| ServeError::Jwks(e.to_string()))?);
            if matches!(verifier.source(), JwksSource::Url(_)) {
                // Providers rotate their keys: read the set again every ten minutes.
                let weak = Arc::downgrade(&verifier);
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let Some(v) = weak.upgrade() else { break };
                        if let Err(e) = v.refresh().await {
                            tracing::warn!(error = %e, "JWKS refresh failed; keeping the previous keys");
                        }
                    }
                });
            }
            authenticator = authenticator.with_jwt(verifier);
        }
        let auth = Arc::new(authenticator);
        if !auth.has_identities() && !auth.allows_anonymous() {
            return Err(ServeError::NoIdentities);
        }
        let tls = options.tls.as_ref().map(tls_config).transpose()?;
        let flight =
            AgoraFlightSqlService::new(engine.clone(), Arc::clone(&auth), options.types).map_err(ServeError::Random)?;
        Ok(FlightServer { engine, auth, tls, flight })
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting
    /// requests and lets running ones finish. The standard gRPC health
    /// service (`grpc.health.v1.Health`) answers on the same port without
    /// credentials.
    pub async fn serve_on(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let shutdown = shutdown.shared();
        self.serve_draining(listener, shutdown.clone(), shutdown).await
    }

    /// Serves on `listener`; when `drain` completes the server reports
    /// `NOT_SERVING` on the health service and refuses new queries
    /// (`UNAVAILABLE`), but keeps its connections and answers everything
    /// else (a client closing its prepared statements or its session after
    /// a result it read, a cancel); when `stop` completes it stops accepting
    /// requests and lets the ones in flight finish.
    pub async fn serve_draining(
        self,
        listener: TcpListener,
        drain: impl std::future::Future<Output = ()> + Send,
        stop: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let limits = &self.engine.config().limits;
        let connections = listener::ConnectionLimits {
            max_connections: limits.max_connections,
            max_per_address: limits.max_connections_per_address,
            handshake_timeout: limits.handshake_timeout,
        };
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<FlightServiceServer<AgoraFlightService>>().await;
        let service = FlightServiceServer::new(AgoraFlightService::new(self.flight))
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_ENCODING_MESSAGE_SIZE);
        let incoming = listener::accept(listener, connections);
        let draining = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&draining);
        // tonic polls this future while it serves: the drain step runs when
        // `drain` completes, the server stops when `stop` does.
        let shutdown = async move {
            let draining = async move {
                drain.await;
                flag.store(true, Ordering::SeqCst);
                // Load balancers watching the health service stop sending.
                health.set_not_serving::<FlightServiceServer<AgoraFlightService>>().await;
                health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            };
            tokio::pin!(stop, draining);
            tokio::select! {
                biased;
                _ = &mut draining => stop.await,
                _ = &mut stop => {}
            }
        };
        builder
            .layer(AuthLayer::new(self.auth, self.engine, draining))
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        Ok(())
    }
}

fn tls_config(files: &TlsFiles) -> Result<ServerTlsConfig, ServeError> {
    // Dependencies enable both of rustls' crypto back ends, so rustls cannot pick
    // one by itself; an already installed provider is kept.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", path.display())))
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
    if let Some(ca) = &files.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}
