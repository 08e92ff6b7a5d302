//! Prometheus metrics: what the server counts, and the exporter that renders it.
//!
//! Counters and histograms are recorded through the `metrics` facade where
//! things happen (requests here, queries and audit writes in the engine); gauges of the
//! engine's resources are read from [`Engine::usage`] when Prometheus scrapes.
//! Label values come from fixed sets only (never a client's text), so a
//! client cannot grow the registry.

use std::sync::OnceLock;
use std::time::Duration;

use agora_engine::Engine;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds of every `_seconds` histogram: from a cached metadata call
/// to a statement that runs into the default timeout.
const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// The Flight and health RPCs, by method name: the only values of the `rpc`
/// label (anything else a client sends is counted as `other`).
const RPCS: &[&str] = &[
    "Handshake",
    "ListFlights",
    "GetFlightInfo",
    "PollFlightInfo",
    "GetSchema",
    "DoGet",
    "DoPut",
    "DoExchange",
    "DoAction",
    "ListActions",
    "Check",
    "Watch",
];

/// The process's exporter, installed as the global `metrics` recorder on
/// first use. `None` when another recorder was installed first (an embedding
/// application's own): Agora's metrics then go to that one.
pub(crate) fn exporter() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!("another metrics recorder is installed; /metrics serves nothing");
                    None
                }
            }
        })
        .as_ref()
}

/// Help texts, shown by Prometheus and Grafana.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("agora_build_info", "Always 1; the labels say which Agora this is.");
    describe_counter!("agora_rpc_requests_total", "Flight and health requests answered, by RPC and gRPC status code.");
    describe_histogram!(
        "agora_rpc_duration_seconds",
        "Time to the response headers of each RPC (a DoGet's stream continues)."
    );
    describe_counter!(
        "agora_queries_total",
        "Queries ended (system.queries), by outcome: ok, failed, denied, timeout, resource_exhausted, cancelled."
    );
    describe_histogram!(
        "agora_query_duration_seconds",
        "From a query's arrival to its end (queued, planning and execution), by outcome."
    );
    describe_counter!("agora_result_rows_total", "Rows sent to clients.");
    describe_counter!("agora_result_bytes_total", "Arrow memory size of the batches sent to clients.");
    describe_counter!("agora_logins_total", "Handshakes, by outcome: ok, wrong_credentials, locked_out.");
    describe_histogram!(
        "agora_audit_write_seconds",
        "Writing one audit record: written (start records) or durable (fsynced)."
    );
    describe_gauge!("agora_queries_running", "Queries holding a slot (limits.max_concurrent_queries).");
    describe_gauge!("agora_queries_queued", "Queries waiting for a slot.");
    describe_gauge!("agora_queries_max_running", "limits.max_concurrent_queries.");
    describe_gauge!("agora_memory_pool_reserved_bytes", "Bytes reserved by running operators in the memory pool.");
    describe_gauge!("agora_memory_pool_limit_bytes", "limits.memory_limit_bytes.");
    describe_gauge!("agora_spill_bytes", "Bytes of spill files on disk.");
    describe_gauge!("agora_spill_limit_bytes", "limits.max_spill_bytes.");
    describe_gauge!("agora_audit_retention_drops", "Times retention deleted audit records that were not archived.");
    describe_counter!(
        "agora_object_store_requests_total",
        "Object-store requests (get, get_ranges, head, list…), by store and outcome."
    );
    describe_counter!("agora_object_store_read_bytes_total", "Bytes object stores returned, by store.");
    describe_gauge!("agora_postgres_pool_size", "Most connections a domain's PostgreSQL pool opens.");
    describe_gauge!("agora_postgres_connections_in_use", "Connections checked out of a domain's PostgreSQL pool.");
    describe_histogram!(
        "agora_postgres_pool_wait_seconds",
        "Time a checkout waited for a connection of a domain's PostgreSQL pool."
    );
    describe_counter!("agora_postgres_read_rows_total", "Rows read from a domain's PostgreSQL server.");
    describe_counter!("agora_postgres_read_bytes_total", "Arrow bytes read from a domain's PostgreSQL server.");
    metrics::gauge!("agora_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// The `rpc` label of a request path (`/package.Service/Method`).
pub(crate) fn rpc_label(path: &str) -> &'static str {
    let method = path.rsplit('/').next().unwrap_or_default();
    RPCS.iter().find(|m| **m == method).copied().unwrap_or("other")
}

/// Counts an answered RPC.
pub(crate) fn record_rpc(rpc: &'static str, code: tonic::Code, elapsed: Duration) {
    metrics::counter!("agora_rpc_requests_total", "rpc" => rpc, "code" => code_label(code)).increment(1);
    metrics::histogram!("agora_rpc_duration_seconds", "rpc" => rpc).record(elapsed.as_secs_f64());
}

/// Counts a Handshake.
pub(crate) fn record_login(outcome: &'static str) {
    metrics::counter!("agora_logins_total", "outcome" => outcome).increment(1);
}

/// Renders every metric, with the engine's gauges read now.
pub(crate) fn render(engine: &Engine) -> String {
    let Some(handle) = exporter() else { return String::new() };
    let usage = engine.usage();
    metrics::gauge!("agora_queries_running").set(usage.running_queries as f64);
    metrics::gauge!("agora_queries_queued").set(usage.queued_queries as f64);
    metrics::gauge!("agora_queries_max_running").set(usage.max_running_queries as f64);
    metrics::gauge!("agora_memory_pool_reserved_bytes").set(usage.memory_reserved_bytes as f64);
    metrics::gauge!("agora_memory_pool_limit_bytes").set(usage.memory_limit_bytes as f64);
    metrics::gauge!("agora_spill_bytes").set(usage.spill_bytes as f64);
    metrics::gauge!("agora_spill_limit_bytes").set(usage.spill_limit_bytes as f64);
    if let Some(audit) = engine.audit_log() {
        metrics::gauge!("agora_audit_retention_drops").set(audit.retention_drops() as f64);
    }
    handle.render()
}

fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_labels_come_from_a_fixed_set() {
        assert_eq!(rpc_label("/arrow.flight.protocol.FlightService/DoGet"), "DoGet");
        assert_eq!(rpc_label("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(rpc_label("/x.Y/anything-a-client-invents"), "other");
        assert_eq!(rpc_label(""), "other");
    }
}
