//! OpenLineage run events for every query: START when it begins, then
//! COMPLETE, FAIL or ABORT (cancelled), with the products read as input
//! datasets and column-level lineage of the result (`columnLineage` facet,
//! masked columns marked). Events go to a JSON Lines file or are POSTed to an
//! HTTP endpoint such as Marquez. A failing sink never fails the query: the
//! failure is logged and counted ([`LineageEmitter::failures`]).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};
use datafusion::physical_plan::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::{LineageConfig, LineageSink, MeshConfig};

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

/// A query's lineage: built from its optimised plan when it starts.
pub(crate) struct LineageRun {
    emitter: Arc<LineageEmitter>,
    run_id: String,
    job: Value,
    inputs: Vec<Value>,
    output: Value,
}

impl LineageRun {
    /// Describes the run and sends its START event.
    pub(crate) fn start(
        emitter: Arc<LineageEmitter>,
        run_id: String,
        plan: &LogicalPlan,
        sql: Option<&str>,
        mesh: &MeshConfig,
        masked: &[(String, String)],
    ) -> LineageRun {
        let text = sql.map(str::to_string).unwrap_or_else(|| plan.display_indent().to_string());
        let digest = Sha256::digest(text.as_bytes());
        let job_name = format!("query.{}", hex::encode(&digest[..6]));
        let mut job_facets = json!({
            "jobType": {
                "_producer": PRODUCER,
                "_schemaURL": facet("2-0-4", "JobTypeJobFacet"),
                "processingType": "BATCH",
                "integration": "AGORA",
                "jobType": "QUERY"
            }
        });
        if let Some(sql) = sql {
            job_facets["sql"] =
                json!({"_producer": PRODUCER, "_schemaURL": facet("1-1-0", "SQLJobFacet"), "query": sql});
        }
        let job = json!({"namespace": emitter.config.namespace, "name": job_name, "facets": job_facets});
        let inputs = inputs(plan, mesh);
        let lineage = ColumnLineage::of(plan, masked);
        let output_name = format!("{job_name}.result");
        let schema_fields: Vec<Value> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
            .collect();
        let output = json!({
            "namespace": DATASET_NAMESPACE,
            "name": output_name,
            "facets": {
                "schema": {"_producer": PRODUCER, "_schemaURL": facet("1-2-0", "SchemaDatasetFacet"), "fields": schema_fields},
                "columnLineage": lineage.facet(plan.schema().inner()),
            }
        });
        let run = LineageRun { emitter, run_id, job, inputs, output };
        run.send("START", None);
        run
    }

    fn send(&self, event_type: &str, error: Option<&str>) {
        let mut run = json!({"runId": self.run_id});
        if let Some(message) = error {
            run["facets"] = json!({"errorMessage": {
                "_producer": PRODUCER,
                "_schemaURL": facet("1-0-1", "ErrorMessageRunFacet"),
                "message": message,
                "programmingLanguage": "RUST"
            }});
        }
        let outputs = match event_type {
            "COMPLETE" | "START" => vec![self.output.clone()],
            _ => Vec::new(),
        };
        let event = json!({
            "eventType": event_type,
            "eventTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "producer": PRODUCER,
            "schemaURL": format!("{SPEC}/2-0-2/OpenLineage.json#/$defs/RunEvent"),
            "run": run,
            "job": self.job,
            "inputs": self.inputs,
            "outputs": outputs,
        });
        self.emitter.emit(event);
    }

    pub(crate) fn complete(self) {
        self.send("COMPLETE", None);
    }

    pub(crate) fn fail(self, error: &str) {
        self.send("FAIL", Some(error));
    }

    pub(crate) fn abort(self) {
        self.send("ABORT", None);
    }
}

/// The products a plan scans, with the columns read and the owner.
fn inputs(plan: &LogicalPlan, mesh: &MeshConfig) -> Vec<Value> {
    let mut found: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    crate::plan_reads::visit_scans(plan, &mut |scan_name, schema| {
        let fields = found.entry(scan_name.to_string()).or_default();
        for f in schema.fields() {
            let entry = (f.name().clone(), f.data_type().to_string());
            if !fields.contains(&entry) {
                fields.push(entry);
            }
        }
    });
    found
        .into_iter()
        .map(|(name, fields)| {
            let fields: Vec<Value> = fields.iter().map(|(n, t)| json!({"name": n, "type": t})).collect();
            let mut facets = json!({
                "schema": {"_producer": PRODUCER, "_schemaURL": facet("1-2-0", "SchemaDatasetFacet"), "fields": fields}
            });
            let owner = name.split_once('.').and_then(|(d, p)| mesh.domain(d)?.product(p)).map(|p| &p.owner);
            if let Some(owner) = owner {
                facets["ownership"] = json!({
                    "_producer": PRODUCER,
                    "_schemaURL": facet("1-0-1", "OwnershipDatasetFacet"),
                    "owners": [{"name": format!("team:{}", owner.name), "type": "MAINTAINER"}]
                });
            }
            json!({"namespace": DATASET_NAMESPACE, "name": name, "facets": facets})
        })
        .collect()
}

/// Where one value comes from: a product's column and how it was derived.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Origin {
    dataset: String,
    field: String,
    /// IDENTITY, TRANSFORMATION or AGGREGATION (DIRECT), or JOIN, FILTER,
    /// GROUP_BY, SORT, WINDOW (INDIRECT).
    subtype: &'static str,
}

impl Origin {
    fn derived(&self, subtype: &'static str) -> Origin {
        // Aggregation dominates a later transformation; identity becomes anything.
        let subtype = match (self.subtype, subtype) {
            ("AGGREGATION", _) => "AGGREGATION",
            (_, s) => s,
        };
        Origin { subtype, ..self.clone() }
    }
}

/// Column-level lineage of a plan's output.
struct ColumnLineage {
    /// Per output column, its origins.
    fields: Vec<Vec<Origin>>,
    /// Columns that affect the whole result (joins, filters, grouping, sorting).
    indirect: Vec<Origin>,
    masked: Vec<(String, String)>,
}

impl ColumnLineage {
    fn of(plan: &LogicalPlan, masked: &[(String, String)]) -> ColumnLineage {
        let mut indirect = Vec::new();
        let fields = origins(plan, &mut indirect);
        indirect.sort();
        indirect.dedup();
        ColumnLineage { fields, indirect, masked: masked.to_vec() }
    }

    fn input_field(&self, origin: &Origin) -> Value {
        let masking = self.masked.iter().any(|(d, c)| *d == origin.dataset && *c == origin.field);
        let kind =
            if matches!(origin.subtype, "IDENTITY" | "TRANSFORMATION" | "AGGREGATION") { "DIRECT" } else { "INDIRECT" };
        // A masked column reaches the result only through its mask.
        let subtype = if masking && origin.subtype == "IDENTITY" { "TRANSFORMATION" } else { origin.subtype };
        let mut transformation = json!({"type": kind, "subtype": subtype, "masking": masking});
        if masking {
            transformation["description"] = json!("masked by governance policy");
        }
        json!({
            "namespace": DATASET_NAMESPACE,
            "name": origin.dataset,
            "field": origin.field,
            "transformations": [transformation]
        })
    }

    fn facet(&self, schema: &arrow::datatypes::Schema) -> Value {
        let mut fields = serde_json::Map::new();
        for (i, field) in schema.fields().iter().enumerate() {
            let origins = self.fields.get(i).cloned().unwrap_or_default();
            if origins.is_empty() {
                continue;
            }
            let inputs: Vec<Value> = origins.iter().map(|o| self.input_field(o)).collect();
            fields.insert(field.name().clone(), json!({"inputFields": inputs}));
        }
        let dataset: Vec<Value> = self.indirect.iter().map(|o| self.input_field(o)).collect();
        json!({
            "_producer": PRODUCER,
            "_schemaURL": facet("1-2-0", "ColumnLineageDatasetFacet"),
            "fields": fields,
            "dataset": dataset,
        })
    }
}

fn merge(into: &mut Vec<Origin>, more: impl IntoIterator<Item = Origin>) {
    for o in more {
        if !into.contains(&o) {
            into.push(o);
        }
    }
}

/// The origins of the columns `expr` refers to, in `input`'s output.
fn expr_origins(expr: &Expr, input: &LogicalPlan, input_origins: &[Vec<Origin>], subtype: &'static str) -> Vec<Origin> {
    let mut out = Vec::new();
    for column in expr.column_refs() {
        if let Ok(i) = input.schema().index_of_column(column)
            && let Some(origins) = input_origins.get(i)
        {
            merge(&mut out, origins.iter().map(|o| o.derived(subtype)));
        }
    }
    out
}

fn projected(expr: &Expr, input: &LogicalPlan, input_origins: &[Vec<Origin>], computed: &'static str) -> Vec<Origin> {
    match expr.clone().unalias() {
        Expr::Column(c) => match input.schema().index_of_column(&c) {
            Ok(i) => input_origins.get(i).cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        },
        other => expr_origins(&other, input, input_origins, computed),
    }
}

/// Per output column of `plan`, where its values come from; columns that
/// influence rows (filters, join keys…) are added to `indirect`.
fn origins(plan: &LogicalPlan, indirect: &mut Vec<Origin>) -> Vec<Vec<Origin>> {
    let width = plan.schema().fields().len();
    let result = match plan {
        LogicalPlan::TableScan(scan) => {
            let Some(schema) = scan.table_name.schema() else { return vec![Vec::new(); width] };
            let dataset = format!("{schema}.{}", scan.table_name.table());
            for filter in &scan.filters {
                for c in filter.column_refs() {
                    merge(indirect, [Origin { dataset: dataset.clone(), field: c.name.clone(), subtype: "FILTER" }]);
                }
            }
            scan.projected_schema
                .fields()
                .iter()
                .map(|f| vec![Origin { dataset: dataset.clone(), field: f.name().clone(), subtype: "IDENTITY" }])
                .collect()
        }
        LogicalPlan::Projection(p) => {
            let input = origins(&p.input, indirect);
            p.expr.iter().map(|e| projected(e, &p.input, &input, "TRANSFORMATION")).collect()
        }
        LogicalPlan::Filter(f) => {
            let input = origins(&f.input, indirect);
            merge(indirect, expr_origins(&f.predicate, &f.input, &input, "FILTER"));
            input
        }
        LogicalPlan::Aggregate(a) => {
            let input = origins(&a.input, indirect);
            let mut out = Vec::new();
            for e in &a.group_expr {
                merge(indirect, expr_origins(e, &a.input, &input, "GROUP_BY"));
                out.push(projected(e, &a.input, &input, "TRANSFORMATION"));
            }
            for e in &a.aggr_expr {
                out.push(expr_origins(e, &a.input, &input, "AGGREGATION"));
            }
            out
        }
        LogicalPlan::Window(w) => {
            let mut input = origins(&w.input, indirect);
            for e in &w.window_expr {
                input.push(expr_origins(e, &w.input, &input.clone(), "AGGREGATION"));
            }
            input
        }
        LogicalPlan::Sort(s) => {
            let input = origins(&s.input, indirect);
            for e in &s.expr {
                merge(indirect, expr_origins(&e.expr, &s.input, &input, "SORT"));
            }
            input
        }
        LogicalPlan::Join(j) => {
            let left = origins(&j.left, indirect);
            let right = origins(&j.right, indirect);
            for (l, r) in &j.on {
                merge(indirect, expr_origins(l, &j.left, &left, "JOIN"));
                merge(indirect, expr_origins(r, &j.right, &right, "JOIN"));
            }
            match j.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti => left,
                JoinType::RightSemi | JoinType::RightAnti => right,
                JoinType::LeftMark => {
                    let mut out = left;
                    out.push(Vec::new());
                    out
                }
                JoinType::RightMark => {
                    let mut out = right;
                    out.push(Vec::new());
                    out
                }
                _ => left.into_iter().chain(right).collect(),
            }
        }
        LogicalPlan::Union(u) => {
            let mut out = vec![Vec::new(); width];
            for input in &u.inputs {
                for (i, o) in origins(input, indirect).into_iter().enumerate() {
                    if let Some(slot) = out.get_mut(i) {
                        merge(slot, o);
                    }
                }
            }
            out
        }
        LogicalPlan::Extension(ext) => {
            if let Some(inner) = agora_connectors::federated_plan(ext.node.as_ref()) {
                origins(inner, indirect)
            } else {
                let inputs = ext.node.inputs();
                match inputs.as_slice() {
                    [only] => origins(only, indirect),
                    _ => vec![Vec::new(); width],
                }
            }
        }
        other => {
            let inputs = other.inputs();
            match inputs.as_slice() {
                [only] if only.schema().fields().len() == width => origins(only, indirect),
                _ => vec![Vec::new(); width],
            }
        }
    };
    if result.len() == width { result } else { vec![Vec::new(); width] }
}

/// Sends COMPLETE, FAIL or ABORT when the result stream ends.
pub(crate) struct LineageStream {
    inner: SendableRecordBatchStream,
    run: Option<LineageRun>,
}

impl LineageStream {
    pub(crate) fn new(inner: SendableRecordBatchStream, run: LineageRun) -> Self {
        LineageStream { inner, run: Some(run) }
    }
}

impl Stream for LineageStream {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(run) = self.run.take() {
                    run.complete();
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(run) = self.run.take() {
                    run.fail(&e.to_string());
                }
            }
            _ => {}
        }
        polled
    }
}

impl RecordBatchStream for LineageStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

impl Drop for LineageStream {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            run.abort();
        }
    }
}
