//! `agora serve`: serves a mesh over Arrow Flight SQL (with the operations
//! listener for metrics and health), and on SIGTERM or Ctrl-C drains it:
//! new queries refused, running ones given time to finish, then stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agora_engine::Engine;
use agora_flight_server::FlightServer;
use anyhow::{Context, Result};

use super::args::{MetricsBind, ServerArgs};

/// Runs `agora serve` on the mesh `config` until a signal stops it.
pub async fn run(config: &Path, bind: SocketAddr, server: &ServerArgs) -> Result<ExitCode> {
    let engine = Engine::open(config).await?;
    serve(engine, bind, server, None).await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves `engine` on `bind` until a signal stops it; with `demo_mesh`, the
/// demo's help is printed once serving.
pub async fn serve(engine: Engine, bind: SocketAddr, server: &ServerArgs, demo_mesh: Option<PathBuf>) -> Result<()> {
    // Never serve under policies that do not fit the data.
    engine.validate_policies().await?;
    match (engine.policies(), engine.audit_log()) {
        (Some(p), Some(audit)) => {
            tracing::info!(version = p.version(), audit = %audit.path().display(), "policies loaded; deny by default")
        }
        _ => tracing::warn!(
            "no governance section: the mesh is open, every authenticated principal reads every product, and nothing is audited"
        ),
    }
    // Every start-up check passes before anything says it is serving.
    let flight = FlightServer::prepare(engine.clone(), server.options()).await?;
    let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| format!("cannot listen on {bind}"))?;
    let ops = match server.metrics_bind {
        MetricsBind::Off => None,
        MetricsBind::At(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--metrics-bind; `off` serves no metrics)"))?,
        ),
    };
    let bind = listener.local_addr().unwrap_or(bind);
    let products: usize = engine.domains().iter().map(|d| d.products.len()).sum();
    println!(
        "Agora serving {} domains, {products} products over Arrow Flight SQL at grpc://{bind}",
        engine.domains().len()
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Some(ops) = ops {
        let addr = ops.local_addr().context("the metrics listener has no address")?;
        println!("Metrics at http://{addr}/metrics, health at http://{addr}/healthz and /readyz");
        let mut stopped = stopped.clone();
        let engine = engine.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = agora_flight_server::ops::serve_ops(engine, ops, shutdown).await {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
    }
    if let Some(mesh) = demo_mesh {
        super::demo::print_help(&mesh, bind);
    }
    // First signal: drain (new queries refused, connections kept, running
    // queries finish); then stop once nothing runs, the drain time is over,
    // or at a second signal.
    let (begin_drain, drain) = tokio::sync::oneshot::channel::<()>();
    let (begin_stop, stopping) = tokio::sync::oneshot::channel::<()>();
    let serving = flight.serve_draining(
        listener,
        async move {
            let _ = drain.await;
        },
        async move {
            let _ = stopping.await;
        },
    );
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => return Ok(result?),
        _ = shutdown_signal() => {}
    }
    let _ = stop.send(true);
    let _ = begin_drain.send(());
    let drain = std::time::Duration::try_from_secs_f64(server.drain_seconds.max(0.0)).unwrap_or_default();
    tracing::info!(drain_seconds = drain.as_secs_f64(), "shutdown requested; running queries may finish");
    let drained = tokio::select! {
        result = &mut serving => return Ok(result?),
        _ = idle(&engine) => true,
        _ = tokio::time::sleep(drain) => false,
        _ = shutdown_signal() => false,
    };
    if !drained {
        let running = engine.usage().running_queries;
        tracing::warn!(running, "stopping the running queries: drain time over or second signal");
        engine.stop_queries();
    }
    let _ = begin_stop.send(());
    // Streams stopped end with an error, and are audited, within moments.
    match tokio::time::timeout(std::time::Duration::from_secs(5), &mut serving).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::warn!("exiting with requests still open");
            Ok(())
        }
    }
}

/// How long a draining server must have had no query before it stops: a
/// client that just read its result closes its statement and its session
/// right after, and those calls must still find the server.
const QUIET_BEFORE_STOP: std::time::Duration = std::time::Duration::from_millis(300);

/// Completes once `engine` has had no query queued, running or streaming for
/// [`QUIET_BEFORE_STOP`].
async fn idle(engine: &Engine) {
    let mut quiet_since: Option<std::time::Instant> = None;
    loop {
        if engine.is_idle() {
            let since = *quiet_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= QUIET_BEFORE_STOP {
                return;
            }
        } else {
            quiet_since = None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Completes at SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
