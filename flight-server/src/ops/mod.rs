//! The operations listener: Prometheus metrics, liveness and readiness over
//! plain HTTP, apart from the Flight port.
//!
//! - `GET /metrics`: the Prometheus text format (see [`metrics`]).
//! - `GET /healthz`: 200 while the process serves at all (liveness).
//! - `GET /readyz`: 200 when the server should receive traffic, 503 when not,
//!   with a JSON body naming each check (see [`ready`]).
//!
//! None of these needs credentials, and none shows data: they are meant for
//! a loopback or cluster-internal address (the default binds loopback). The
//! readiness body names the mesh file and audit path when they fail.

pub(crate) mod metrics;
mod ready;

use std::sync::Arc;

use agora_engine::Engine;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use self::ready::Readiness;

struct OpsState {
    engine: Engine,
    readiness: Readiness,
}

/// Serves the operations endpoints of `engine` on `listener` until `shutdown`.
pub async fn serve_ops(
    engine: Engine,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Installed before the first scrape, so that every count since start is
    // kept; histogram samples are folded into their buckets regularly, so
    // that memory does not grow between scrapes.
    if let Some(handle) = metrics::exporter() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let state = Arc::new(OpsState { readiness: Readiness::new(engine.clone()), engine });
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn scrape(State(state): State<Arc<OpsState>>) -> Response {
    let body = metrics::render(&state.engine);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn readyz(State(state): State<Arc<OpsState>>) -> Response {
    let report = state.readiness.report().await;
    let code = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = format!("{}\n", report.body);
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
