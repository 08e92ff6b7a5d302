//! Object-store requests made visible: a metric and a trace span per request.
//!
//! Every store Agora registers (S3 buckets, the local file system) is wrapped
//! in an [`ObservedStore`]: each request is counted in
//! `agora_object_store_requests_total{store, operation, outcome}`, the bytes
//! it returned are added to `agora_object_store_read_bytes_total{store}`, and
//! it runs inside an OpenTelemetry client span (`object_store <operation>`)
//! that becomes a child of the query's execution span. An operator sees which
//! store a query reads from, how much and how often, without the stores'
//! own access logs.
//!
//! Hand-written because `object_store` ships no instrumentation layer and no
//! maintained crate provides one for object_store 0.13; the wrapper only
//! forwards, so it adds one span and a few atomic increments per request.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};
use tracing::Instrument;

/// An object store whose requests are counted and traced.
#[derive(Debug)]
pub(crate) struct ObservedStore {
    inner: Arc<dyn ObjectStore>,
    /// The store's label: `s3://bucket` or `file`.
    name: Arc<str>,
}

impl ObservedStore {
    /// `inner`, observed under the label `name`.
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, name: &str) -> Self {
        ObservedStore { inner, name: Arc::from(name) }
    }

    /// A client span for one request, when the request is part of something
    /// traced (a query); requests outside one (listing at start-up) make no
    /// span of their own.
    fn span(&self, operation: &'static str, location: &Path) -> tracing::Span {
        if tracing::Span::current().is_none() {
            return tracing::Span::none();
        }
        tracing::info_span!(
            "object_store.request",
            otel.name = %format!("object_store {operation}"),
            otel.kind = "client",
            agora.store = %self.name,
            object_store.operation = operation,
            object_store.path = %location,
            object_store.bytes = tracing::field::Empty,
        )
    }

    /// Counts one finished request and the bytes it returned.
    fn record(&self, operation: &'static str, ok: bool, bytes: u64, span: &tracing::Span) {
        let outcome = if ok { "ok" } else { "error" };
        let store = self.name.to_string();
        metrics::counter!("agora_object_store_requests_total", "store" => store.clone(), "operation" => operation, "outcome" => outcome)
            .increment(1);
        if bytes > 0 {
            metrics::counter!("agora_object_store_read_bytes_total", "store" => store).increment(bytes);
            span.record("object_store.bytes", bytes);
        }
    }
}

impl fmt::Display for ObservedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Observed({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for ObservedStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let span = self.span("put", location);
        let result = self.inner.put_opts(location, payload, opts).instrument(span.clone()).await;
        self.record("put", result.is_ok(), 0, &span);
        result
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        let span = self.span("put_multipart", location);
        let result = self.inner.put_multipart_opts(location, opts).instrument(span.clone()).await;
        self.record("put_multipart", result.is_ok(), 0, &span);
        result
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let operation = if options.head { "head" } else { "get" };
        let span = self.span(operation, location);
        let result = self.inner.get_opts(location, options).instrument(span.clone()).await;
        // The body is read by the caller; the range it covers is what the
        // store sends.
        let bytes = match &result {
            Ok(got) if operation == "get" => got.range.end.saturating_sub(got.range.start),
            _ => 0,
        };
        self.record(operation, result.is_ok(), bytes, &span);
        result
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let span = self.span("get_ranges", location);
        let result = self.inner.get_ranges(location, ranges).instrument(span.clone()).await;
        let bytes = match &result {
            Ok(parts) => parts.iter().map(|part| part.len() as u64).sum(),
            Err(_) => 0,
        };
        self.record("get_ranges", result.is_ok(), bytes, &span);
        result
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let store = self.name.to_string();
        self.inner
            .delete_stream(locations)
            .inspect(move |deleted| {
                let outcome = if deleted.is_ok() { "ok" } else { "error" };
                metrics::counter!("agora_object_store_requests_total", "store" => store.clone(), "operation" => "delete", "outcome" => outcome)
                    .increment(1);
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.record("list", true, 0, &tracing::Span::none());
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.record("list", true, 0, &tracing::Span::none());
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let root = Path::default();
        let span = self.span("list_with_delimiter", prefix.unwrap_or(&root));
        let result = self.inner.list_with_delimiter(prefix).instrument(span.clone()).await;
        self.record("list_with_delimiter", result.is_ok(), 0, &span);
        result
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let span = self.span("copy", from);
        let result = self.inner.copy_opts(from, to, options).instrument(span.clone()).await;
        self.record("copy", result.is_ok(), 0, &span);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn requests_pass_through_unchanged() {
        let store = ObservedStore::new(Arc::new(InMemory::new()), "memory");
        let path = Path::from("a/b.parquet");
        store.put(&path, PutPayload::from_static(b"0123456789")).await.unwrap();
        assert_eq!(store.get_range(&path, 2..5).await.unwrap().as_ref(), b"234");
        let ranges = store.get_ranges(&path, &[0..1, 8..10]).await.unwrap();
        assert_eq!(ranges.iter().map(|r| r.to_vec()).collect::<Vec<_>>(), vec![b"0".to_vec(), b"89".to_vec()]);
        assert_eq!(store.head(&path).await.unwrap().size, 10);
        let listed: Vec<_> = store.list(None).map(|m| m.unwrap().location).collect().await;
        assert_eq!(listed, vec![path.clone()]);
        assert!(store.get(&Path::from("missing")).await.is_err());
    }
}
