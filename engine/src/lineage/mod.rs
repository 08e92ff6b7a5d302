//! OpenLineage run events for every query: START when it begins, then
//! COMPLETE, FAIL or ABORT (cancelled), with the products read as input
//! datasets and column-level lineage of the result (`columnLineage` facet,
//! masked columns marked). Events go to a JSON Lines file or are POSTed to an
//! HTTP endpoint such as Marquez. A failing sink never fails the query: the
//! failure is logged and counted ([`LineageEmitter::failures`]).
//!
//! `run` follows one query (its events and its input datasets); `columns`
//! derives the column-level lineage of a plan.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::config::{LineageConfig, LineageSink};

mod columns;
mod run;

pub(crate) use self::run::{LineageRun, LineageStream};

/// Who produced the events: the project with its version, as OpenLineage asks.
const PRODUCER: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "/tree/", env!("CARGO_PKG_VERSION"));
const SPEC: &str = "https://openlineage.io/spec";
/// Dataset namespace of every data product.
const DATASET_NAMESPACE: &str = "agora://mesh";
/// Events waiting for the HTTP sender; more are dropped (and counted).
const HTTP_QUEUE: usize = 1024;

fn facet(path: &str, name: &str) -> String {
    format!("{SPEC}/facets/{path}/{name}.json#/$defs/{name}")
}

/// Sends lineage events to the configured sink.
#[derive(Debug)]
pub struct LineageEmitter {
    config: LineageConfig,
    /// The file sink, rotated by size.
    file: Option<crate::jsonl::JsonlFile>,
    http: OnceLock<tokio::sync::mpsc::Sender<Value>>,
    failures: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    /// Events queued for the HTTP sender and not yet attempted.
    queued: Arc<AtomicU64>,
}

impl LineageEmitter {
    pub(crate) fn new(config: LineageConfig) -> Arc<Self> {
        let file = match &config.sink {
            LineageSink::File(path) => Some(crate::jsonl::JsonlFile::new(path, crate::jsonl::Rotation::default())),
            LineageSink::Http(_) => None,
        };
        Arc::new(LineageEmitter {
            config,
            file,
            http: OnceLock::new(),
            failures: Arc::new(AtomicU64::new(0)),
            sent: Arc::new(AtomicU64::new(0)),
            queued: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Events that could not be delivered since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Events delivered since start.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until queued events have been sent (or failed), at most `timeout`:
    /// for a short-lived process that must not exit with events in flight.
    pub async fn flush(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.queued.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    fn fail(&self, what: &str, error: &dyn std::fmt::Display) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(sink = what, error = %error, "lineage event not delivered");
    }

    fn emit(&self, event: Value) {
        match &self.config.sink {
            LineageSink::File(path) => {
                let Some(file) = &self.file else { return };
                let written = serde_json::to_vec(&event).map_err(std::io::Error::other);
                match written.and_then(|line| file.append(&[line], false)) {
                    Ok(()) => {
                        self.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => self.fail(&path.display().to_string(), &e),
                }
            }
            LineageSink::Http(url) => {
                let sender = self.http.get_or_init(|| self.start_sender(url.clone()));
                self.queued.fetch_add(1, Ordering::AcqRel);
                if let Err(e) = sender.try_send(event) {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    self.fail(url.as_str(), &e);
                }
            }
        }
    }

    /// One task posts events in order, so that START arrives before COMPLETE.
    fn start_sender(&self, url: url::Url) -> tokio::sync::mpsc::Sender<Value> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(HTTP_QUEUE);
        let failures = Arc::clone(&self.failures);
        let sent = Arc::clone(&self.sent);
        let queued = Arc::clone(&self.queued);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no async runtime: lineage events cannot be posted");
            return tx;
        };
        handle.spawn(async move {
            let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build();
            let client = match client {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot build the lineage HTTP client");
                    return;
                }
            };
            while let Some(event) = rx.recv().await {
                let body = serde_json::to_vec(&event).unwrap_or_default();
                let request = client.post(url.clone()).header(reqwest::header::CONTENT_TYPE, "application/json");
                let outcome = request.body(body).send().await;
                match outcome.and_then(|r| r.error_for_status()) {
                    Ok(_) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        let (sink, error) = (without_credentials(&url), e.without_url());
                        tracing::warn!(sink = %sink, error = %error, "lineage event not delivered");
                    }
                }
                queued.fetch_sub(1, Ordering::AcqRel);
            }
        });
        tx
    }
}

/// The URL for logs: a user name or token in it is not printed.
fn without_credentials(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}
