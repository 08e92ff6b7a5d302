//! Agora's network face: an Arrow Flight SQL service over an [`agora_engine::Engine`],
//! and the demo mesh generator used by `agora demo`.

pub mod demo;
mod service;

use std::net::SocketAddr;

use agora_engine::Engine;
use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use crate::service::AgoraFlightSqlService;

/// Largest gRPC message the server decodes (parameter batches, DoPut payloads).
pub const MAX_DECODING_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Serves `engine` over Flight SQL on `addr` until `shutdown` completes, then stops
/// accepting requests and lets running ones finish.
pub async fn serve(
    engine: Engine,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    serve_on(engine, listener, shutdown).await
}

/// Why the server stopped with an error.
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
    /// The gRPC transport failed.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Like [`serve`], on an already bound listener (tests bind port 0 and read the
/// port back).
pub async fn serve_on(
    engine: Engine,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let service = FlightServiceServer::new(AgoraFlightSqlService::new(engine))
        .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
        .max_encoding_message_size(usize::MAX);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
