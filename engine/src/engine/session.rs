//! One client's connection to the engine: who it runs as, where its queries
//! come from, and what it may see of the mesh.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::CatalogProvider;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use super::query::PendingLineage;
use super::{Engine, ProductRemarks};
use crate::audit::stream::PendingAudit;
use crate::audit::{AuditLog, AuditRecord, RequestEvent};
use crate::governance::Viewer;
use crate::query_context::Origin;
use crate::session::SessionCatalog;
use crate::{EngineError, Principal, ProductRef};

/// One client's connection to the engine: runs SQL against the mesh.
#[derive(Clone)]
pub struct Session {
    pub(super) ctx: SessionContext,
    pub(super) engine: Engine,
    pub(super) viewer: Viewer,
    /// The `mesh` catalog as the session's principal sees it.
    pub(super) catalog: SessionCatalog,
    /// The audit log, on a governed mesh.
    pub(super) audit: Option<Arc<AuditLog>>,
    /// Where the session's queries come from, for their contexts.
    pub(super) origin: Origin,
    /// The schema unqualified product names resolve in, when one was chosen
    /// (see [`Session::with_default_schema`]).
    pub(super) default_schema: Option<Arc<str>>,
}

impl Session {
    /// Records the address of the client the session serves, for the audit
    /// log and the query history.
    pub fn with_client(mut self, address: impl Into<String>) -> Self {
        self.origin.client = Some(address.into());
        self
    }

    /// Records the protocol the session's queries arrive by (`flight-sql`;
    /// `embedded` when not set), for the query history.
    pub fn with_protocol(mut self, protocol: &'static str) -> Self {
        self.origin.protocol = Some(protocol);
        self
    }

    /// Records what the client says its queries are for (trimmed, capped
    /// at [`crate::query_context::MAX_PURPOSE_CHARS`]).
    pub fn with_purpose(mut self, purpose: &str) -> Self {
        self.origin.purpose = crate::query_context::purpose(purpose);
        self
    }

    /// Records the W3C trace the session's queries belong to, from a
    /// `traceparent` header (ignored when malformed).
    pub fn with_traceparent(mut self, traceparent: &str) -> Self {
        self.origin.trace_id = crate::query_context::trace_id_of(traceparent);
        self
    }

    /// Records the trace the session's queries belong to (32 lower-case hex
    /// digits, as OpenTelemetry writes a trace id; anything else is ignored).
    pub fn with_trace_id(mut self, trace_id: &str) -> Self {
        let valid = trace_id.len() == 32 && trace_id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        self.origin.trace_id = valid.then(|| trace_id.to_string());
        self
    }

    /// Makes `schema` the one unqualified product names resolve in, as a
    /// Flight SQL session's `schema` option or JDBC's `schema` property ask:
    /// `SELECT * FROM nation` then reads `customers.nation`. Without it a
    /// bare name is refused with a hint, so that a query never silently
    /// reads another domain's product of the same name. Only a schema the
    /// principal may see can be chosen (see [`Session::schemas`]); the
    /// error for any other is the same whether or not it exists.
    pub fn with_default_schema(mut self, schema: &str) -> Result<Self, EngineError> {
        let schemas = self.schemas();
        if !schemas.iter().any(|s| s == schema) {
            return Err(EngineError::NotFound(format!(
                "no schema '{schema}' to resolve unqualified names in; the schemas are: {}",
                schemas.join(", ")
            )));
        }
        self.default_schema = Some(Arc::from(schema));
        Ok(self)
    }

    /// The schema unqualified names resolve in, if one was chosen.
    pub fn default_schema(&self) -> Option<&str> {
        self.default_schema.as_deref()
    }

    /// The schemas (domains, and `system` on a governed mesh) the principal may see.
    pub fn schemas(&self) -> Vec<String> {
        self.catalog().schema_names()
    }

    /// The products of `domain` the principal may see.
    pub fn products(&self, domain: &str) -> Vec<String> {
        self.catalog().schema(domain).map(|s| s.table_names()).unwrap_or_default()
    }

    /// A product's schema as the principal sees it: readable columns only
    /// (also of the engine's `system` tables).
    pub async fn product_schema(&self, product: &ProductRef) -> Result<SchemaRef, EngineError> {
        if product.domain == "system" {
            let missing = || EngineError::NotFound(format!("system.{} does not exist", product.product));
            let schema = self.catalog().schema("system").ok_or_else(missing)?;
            let table = schema.table(&product.product).await?.ok_or_else(missing)?;
            return Ok(table.schema());
        }
        Ok(self.catalog().table(product).await?.schema())
    }

    /// What a product says about itself, for catalog browsers (Flight SQL
    /// and JDBC `REMARKS`): its description and its columns' descriptions
    /// from its contract. `None` for a product the principal may not see (or
    /// that does not exist): the same answer, so it confirms nothing.
    pub fn product_remarks(&self, product: &ProductRef) -> Option<ProductRemarks> {
        if !self.viewer.may_see(product) {
            return None;
        }
        let entry = self.engine.inner.catalog.product(product)?;
        let columns = entry
            .config
            .contract
            .iter()
            .flat_map(|c| c.columns.iter())
            .filter_map(|c| Some((c.name.clone(), c.description.clone()?)))
            .collect();
        Some(ProductRemarks { description: entry.config.description.clone(), columns })
    }

    pub(super) fn catalog(&self) -> &SessionCatalog {
        &self.catalog
    }

    pub(super) fn pending_lineage(&self, id: &str, sql: Option<&str>) -> Option<PendingLineage> {
        let emitter = self.engine.inner.lineage.as_ref()?;
        Some(PendingLineage {
            run_id: id.to_string(),
            emitter: Arc::clone(emitter),
            sql: sql.map(str::to_string),
            engine: self.engine.clone(),
        })
    }

    /// Writes the start record of a request (on a governed mesh): the
    /// request is refused when it cannot be recorded or when the principal
    /// is over its audit quota.
    /// The write happens off the async threads: it may have to rotate the log.
    pub(super) async fn begin_audit(&self, id: &str, sql: Option<&str>) -> Result<Option<PendingAudit>, EngineError> {
        let Some(log) = self.audit.as_ref() else { return Ok(None) };
        let mut record = AuditRecord::start(&self.viewer.principal, self.origin.client.as_deref(), sql);
        record.query_id = id.to_string();
        record.policy_version = self.viewer.policies.as_ref().map(|p| p.version().to_string());
        let log = Arc::clone(log);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn_blocking(move || PendingAudit::begin(&log, record))
                .await
                .map_err(|e| EngineError::Internal(format!("the audit write stopped: {e}")))?
                .map(Some),
            Err(_) => PendingAudit::begin(&log, record).map(Some),
        }
    }

    /// Records a request that is not a query, served from the session's
    /// view (a catalogue listing: `action` names it, e.g. `GetTables`), so
    /// that every request is in the audit log. An error means the request
    /// must be refused: the log cannot be written, or the principal is over
    /// its audit quota.
    pub async fn record_request(&self, action: &str) -> Result<(), EngineError> {
        let Some(log) = self.audit.as_ref() else { return Ok(()) };
        let event = RequestEvent {
            kind: crate::audit::RequestKind::Metadata,
            action: action.to_string(),
            user: self.viewer.principal.user.clone(),
            groups: self.viewer.principal.groups.clone(),
            client: self.origin.client.clone(),
            outcome: crate::audit::Outcome::Ok,
        };
        crate::audit::event::record_event(log, event).await
    }

    /// Plans and starts a query, returning its stream of record batches.
    pub async fn sql(&self, sql: &str) -> Result<SendableRecordBatchStream, EngineError> {
        self.query(sql).await?.stream().await
    }

    /// Runs a query to completion and returns every batch. For small results only.
    pub async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>, EngineError> {
        let stream = self.sql(sql).await?;
        stream.map_err(EngineError::from).try_collect().await
    }

    /// Who the session runs as.
    pub fn principal(&self) -> &Principal {
        &self.viewer.principal
    }
}
