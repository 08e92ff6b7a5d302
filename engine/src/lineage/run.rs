//! One query's lineage: its START event when it begins, with the products
//! it reads as input datasets, and COMPLETE, FAIL or ABORT when its stream
//! ends.

use std::collections::BTreeMap;
use std::pin::Pin;

use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::MeshConfig;

use super::columns::ColumnLineage;
use super::{DATASET_NAMESPACE, LineageEmitter, PRODUCER, SPEC, facet};

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
