//! Traces: the server's `tracing` spans exported over OpenTelemetry.
//!
//! Off unless an OTLP endpoint is given (`--otlp-endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`). Spans then go over OTLP/HTTP with JSON
//! bodies to `<endpoint>/v1/traces`, batched (`OTEL_BSP_*` tune the batches).
//! Each Flight request is a server span whose parent is the client's W3C
//! `traceparent`, when it sends one; the engine's query, planning and
//! execution spans and the PostgreSQL statements below it are its children.

use std::time::Duration;

use anyhow::{Context, Result};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;

/// The exporter of one process; flushed by [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Starts exporting to `endpoint` (an `http(s)://host:port` base URL);
    /// returns the layer to add to the subscriber.
    pub fn start<S>(endpoint: &str) -> Result<(Self, impl tracing_subscriber::Layer<S>)>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        let url = url::Url::parse(endpoint).with_context(|| format!("--otlp-endpoint: not a URL: {endpoint}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!("--otlp-endpoint: expected an http(s):// URL, got {endpoint}");
        }
        let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(traces)
            .with_timeout(Duration::from_secs(10))
            .build()
            .context("cannot start the OTLP exporter")?;
        let resource = Resource::builder()
            .with_service_name("agora")
            .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        let tracer = provider.tracer("agora");
        Ok((Telemetry { provider }, tracing_opentelemetry::layer().with_tracer(tracer)))
    }

    /// Sends the spans still batched; at exit.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            eprintln!("warning: traces not flushed at exit: {e}");
        }
    }
}

/// Makes `span` a child of the trace in `headers`' W3C `traceparent`, if
/// any (a malformed header is ignored: the span starts a trace of its own).
pub(crate) fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The trace id of `span` (32 hex digits), when traces are exported.
pub(crate) fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_http_urls() {
        for bad in ["ftp://collector:4318", "collector:4318", ""] {
            let refused = Telemetry::start::<tracing_subscriber::Registry>(bad).err().map(|e| format!("{e:#}"));
            assert!(refused.is_some_and(|m| m.starts_with("--otlp-endpoint:")), "{bad}");
        }
    }

    #[test]
    fn a_malformed_traceparent_leaves_the_span_without_a_parent() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static("00-zz-00f067aa0ba902b7-01"));
        let parent = TraceContextPropagator::new().extract(&Headers(&headers));
        assert!(!parent.span().span_context().is_valid());
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let parent = TraceContextPropagator::new().extract(&Headers(&headers));
        assert_eq!(parent.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
