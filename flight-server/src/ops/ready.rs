//! Readiness: whether this server should receive traffic, and why not.
//!
//! Ready means the mesh file on disk still validates (a broken edit is seen
//! before the next restart fails) and, on a governed mesh, the audit log can
//! be written (requests would be refused otherwise). Sources are probed and
//! reported, but do not make the server unready: one domain's database being
//! down must not take every other domain out of the load balancer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_engine::{Engine, MeshConfig};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// How long one report is served before the checks run again: a flood of
/// `/readyz` requests costs at most one round of probes per interval.
const REPORT_TTL: Duration = Duration::from_secs(2);

/// The readiness checks of one server, with the last report.
pub(crate) struct Readiness {
    engine: Engine,
    last: Mutex<Option<(Instant, Arc<Report>)>>,
}

/// One round of checks.
#[derive(Debug)]
pub(crate) struct Report {
    /// Whether the server should receive traffic.
    pub(crate) ready: bool,
    /// The checks, for people and scripts.
    pub(crate) body: Value,
}

impl Readiness {
    pub(crate) fn new(engine: Engine) -> Self {
        Readiness { engine, last: Mutex::new(None) }
    }

    /// The current report (at most [`REPORT_TTL`] old).
    pub(crate) async fn report(&self) -> Arc<Report> {
        let mut last = self.last.lock().await;
        if let Some((at, report)) = last.as_ref()
            && at.elapsed() < REPORT_TTL
        {
            return Arc::clone(report);
        }
        let report = Arc::new(self.check().await);
        *last = Some((Instant::now(), Arc::clone(&report)));
        report
    }

    async fn check(&self) -> Report {
        let config = match self.engine.config().file.clone() {
            Some(path) => {
                let checked = tokio::task::spawn_blocking(move || revalidate(&path)).await;
                checked.unwrap_or_else(|_| Err("the check failed unexpectedly".into()))
            }
            None => Ok(()),
        };
        let audit = self
            .engine
            .audit_log()
            .map(|log| log.check_writable().map_err(|e| format!("cannot write {}: {e}", log.path().display())));
        let sources = self.sources().await;
        let ready = config.is_ok() && audit.as_ref().is_none_or(Result::is_ok);
        let body = json!({
            "ready": ready,
            "config": check_json(&config),
            "audit": audit.as_ref().map(check_json),
            "sources": sources,
        });
        Report { ready, body }
    }

    /// Whether each domain's database accepts connections.
    async fn sources(&self) -> Vec<Value> {
        let probed = self.engine.probe_sources().await;
        probed.into_iter().map(|(domain, r)| json!({ "domain": domain, "reachable": r.is_ok() })).collect()
    }
}

/// Validates the mesh file as it is on disk now. Secrets are read when the
/// server starts; here a variable that is not set counts as set, so that
/// only the file's own syntax and structure are judged.
fn revalidate(path: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let env = |name: &str| Some(std::env::var(name).unwrap_or_default());
    MeshConfig::from_yaml(&text, path, &env).map(drop).map_err(|e| e.to_string())
}

fn check_json(result: &Result<(), String>) -> Value {
    match result {
        Ok(()) => json!({ "ok": true }),
        Err(e) => json!({ "ok": false, "error": e }),
    }
}
