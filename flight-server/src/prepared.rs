//! Prepared statements and statement tickets.
//!
//! Nothing a client sends back is trusted or decoded as a structure. A
//! prepared statement lives on the server, in a bounded store keyed by a
//! random 128-bit handle that only its creator may use; binding parameters
//! updates it in place, so clients that keep using the handle they were first
//! given (as several do) see the bound values. A statement ticket carries its
//! SQL text with an HMAC over the principal and the text, under a key drawn at
//! start: a forged, altered or borrowed ticket is refused before anything is
//! parsed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use tonic::Status;

/// Marks a prepared-statement handle.
const HANDLE_PREFIX: &[u8; 4] = b"AGP2";
/// Marks a statement ticket.
const TICKET_PREFIX: &[u8; 4] = b"AGT2";
/// Bytes of an HMAC-SHA256 tag.
const TAG_BYTES: usize = 32;
/// Largest bound parameter row kept (its Arrow memory size).
pub const MAX_PARAMETER_BYTES: usize = 1024 * 1024;

/// A prepared statement: its text and the parameter row bound to it, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The statement text.
    pub sql: String,
    /// The bound parameter row, if any.
    pub parameters: Option<RecordBatch>,
    /// The result schema planned when the statement was prepared, for a
    /// statement without parameters: `GetFlightInfo` answers with it rather
    /// than plan the statement a second time (DoGet plans it afresh, under the
    /// policies of that moment).
    pub result_schema: Option<SchemaRef>,
}

impl Statement {
    /// A statement run once, as sent.
    pub fn adhoc(sql: String, parameters: Option<RecordBatch>) -> Self {
        Statement { sql, parameters, result_schema: None }
    }
}

/// Bounds of the prepared-statement store.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// Statements one principal may keep; creating one more forgets its least
    /// recently used.
    pub per_principal: usize,
    /// Statements kept in all.
    pub total: usize,
    /// A statement unused this long is forgotten.
    pub idle: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits { per_principal: 256, total: 16_384, idle: Duration::from_secs(3600) }
    }
}

struct Entry {
    owner: String,
    statement: Arc<Statement>,
    last_used: Instant,
}

/// The server's prepared statements.
pub struct PreparedStore {
    limits: StoreLimits,
    entries: Mutex<HashMap<[u8; 16], Entry>>,
}

fn unknown_handle() -> Status {
    Status::invalid_argument(
        "unknown or expired prepared statement handle: prepare the statement again (handles are kept for an hour \
         of disuse, by the principal that created them)",
    )
}

impl PreparedStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        PreparedStore { limits, entries: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `sql` for `owner` and returns its handle. `result_schema` is what
    /// it was planned to return, when it has no parameters.
    pub fn create(&self, owner: &str, sql: String, result_schema: Option<SchemaRef>) -> Result<Vec<u8>, Status> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|_| Status::unavailable("no random source for a statement handle"))?;
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, e| now.duration_since(e.last_used) < self.limits.idle);
        let owned = entries.values().filter(|e| e.owner == owner).count();
        if owned >= self.limits.per_principal {
            evict_oldest(&mut entries, Some(owner));
        }
        if entries.len() >= self.limits.total {
            evict_oldest(&mut entries, None);
        }
        let statement = Arc::new(Statement { sql, parameters: None, result_schema });
        entries.insert(id, Entry { owner: owner.to_string(), statement, last_used: now });
        let mut handle = HANDLE_PREFIX.to_vec();
        handle.extend_from_slice(&id);
        Ok(handle)
    }

    /// The statement behind `handle`, if `owner` created it.
    pub fn get(&self, owner: &str, handle: &[u8]) -> Result<Arc<Statement>, Status> {
        let id = parse_handle(handle)?;
        let mut entries = self.lock();
        let entry = entries.get_mut(&id).filter(|e| e.owner == owner).ok_or_else(unknown_handle)?;
        if entry.last_used.elapsed() >= self.limits.idle {
            entries.remove(&id);
            return Err(unknown_handle());
        }
        entry.last_used = Instant::now();
        Ok(Arc::clone(&entry.statement))
    }

    /// Binds `parameters` to the statement behind `handle`.
    pub fn bind(&self, owner: &str, handle: &[u8], parameters: Option<RecordBatch>) -> Result<(), Status> {
        if let Some(batch) = &parameters
            && batch.get_array_memory_size() > MAX_PARAMETER_BYTES
        {
            return Err(Status::invalid_argument(format!(
                "the bound parameters take {} bytes, over the limit of {MAX_PARAMETER_BYTES}",
                batch.get_array_memory_size()
            )));
        }
        let id = parse_handle(handle)?;
        let mut entries = self.lock();
        let entry = entries.get_mut(&id).filter(|e| e.owner == owner).ok_or_else(unknown_handle)?;
        // Bound values can change the result's types: planned again from now on.
        entry.statement = Arc::new(Statement::adhoc(entry.statement.sql.clone(), parameters));
        entry.last_used = Instant::now();
        Ok(())
    }

    /// Closes `owner`'s statement `handle`; false when there is no such
    /// statement of theirs (another principal's handle closes nothing).
    pub fn close(&self, owner: &str, handle: &[u8]) -> bool {
        let Ok(id) = parse_handle(handle) else { return false };
        let mut entries = self.lock();
        if entries.get(&id).is_some_and(|e| e.owner == owner) {
            entries.remove(&id);
            return true;
        }
        false
    }

    /// Statements kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

fn parse_handle(handle: &[u8]) -> Result<[u8; 16], Status> {
    let id = handle.strip_prefix(HANDLE_PREFIX.as_slice()).ok_or_else(unknown_handle)?;
    id.try_into().map_err(|_| unknown_handle())
}

fn evict_oldest(entries: &mut HashMap<[u8; 16], Entry>, owner: Option<&str>) {
    let oldest = entries
        .iter()
        .filter(|(_, e)| owner.is_none_or(|o| e.owner == o))
        .min_by_key(|(_, e)| e.last_used)
        .map(|(id, _)| *id);
    if let Some(id) = oldest {
        entries.remove(&id);
    }
}

/// Signs and checks statement tickets.
pub struct TicketSigner {
    key: [u8; 32],
}

type HmacSha256 = hmac::Hmac<Sha256>;

impl TicketSigner {
    /// A signer with a fresh random key: tickets are valid for this process only.
    pub fn new() -> Result<Self, String> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| format!("no random source for the ticket key: {e}"))?;
        Ok(TicketSigner { key })
    }

    /// The MAC over (owner, SQL); the owner's length keeps the two apart.
    fn mac(&self, owner: &str, sql: &str) -> Result<HmacSha256, Status> {
        let mut mac = HmacSha256::new_from_slice(&self.key).map_err(|_| Status::internal("ticket key unusable"))?;
        mac.update(&(owner.len() as u64).to_le_bytes());
        mac.update(owner.as_bytes());
        mac.update(sql.as_bytes());
        Ok(mac)
    }

    /// A ticket for `owner` to fetch the result of `sql`.
    pub fn ticket(&self, owner: &str, sql: &str) -> Result<Vec<u8>, Status> {
        let mut out = Vec::with_capacity(4 + TAG_BYTES + sql.len());
        out.extend_from_slice(TICKET_PREFIX);
        out.extend_from_slice(&self.mac(owner, sql)?.finalize().into_bytes());
        out.extend_from_slice(sql.as_bytes());
        Ok(out)
    }

    /// The SQL of a ticket this server issued to `owner`.
    pub fn open(&self, owner: &str, ticket: &[u8]) -> Result<String, Status> {
        let invalid =
            || Status::invalid_argument("invalid ticket: fetch results with the ticket GetFlightInfo returned");
        let rest = ticket.strip_prefix(TICKET_PREFIX.as_slice()).ok_or_else(invalid)?;
        let (tag, sql) = rest.split_at_checked(TAG_BYTES).ok_or_else(invalid)?;
        let sql = std::str::from_utf8(sql).map_err(|_| invalid())?;
        self.mac(owner, sql)?.verify_slice(tag).map_err(|_| invalid())?;
        Ok(sql.to_string())
    }
}

/// The parameter schema advertised to clients: fields `$1`, `$2`… in order, typed
/// as inferred (`Null` where the use does not tell).
pub fn parameter_schema(parameters: &[(String, Option<DataType>)]) -> SchemaRef {
    let fields: Vec<Field> =
        parameters.iter().map(|(name, t)| Field::new(name, t.clone().unwrap_or(DataType::Null), true)).collect();
    Arc::new(Schema::new(fields))
}

/// Turns the single bound row into positional values, cast to the types the
/// query expects. Columns are taken in order whatever their names (ADBC names
/// them `0`, `1`…, the arrow-rs client `$1`…); dictionary and union columns are
/// unwrapped.
pub fn parameter_values(
    batch: &RecordBatch,
    expected: &[(String, Option<DataType>)],
) -> Result<Vec<ScalarValue>, Status> {
    if batch.num_rows() != 1 {
        return Err(Status::invalid_argument(format!(
            "bind exactly one row of parameters to a query, got {}",
            batch.num_rows()
        )));
    }
    if batch.num_columns() != expected.len() {
        return Err(Status::invalid_argument(format!(
            "the statement has {} parameter(s), {} value(s) were bound",
            expected.len(),
            batch.num_columns()
        )));
    }
    batch
        .columns()
        .iter()
        .zip(expected)
        .map(|(column, (name, data_type))| {
            let value = scalar(column).map_err(|e| Status::invalid_argument(format!("parameter {name}: {e}")))?;
            match data_type {
                Some(t) if !value.is_null() && &value.data_type() != t => value.cast_to(t).map_err(|e| {
                    Status::invalid_argument(format!("parameter {name}: cannot use {value:?} as {t}: {e}"))
                }),
                Some(t) if value.is_null() => {
                    ScalarValue::try_from(t).map_err(|e| Status::invalid_argument(e.to_string()))
                }
                _ => Ok(value),
            }
        })
        .collect()
}

fn scalar(column: &ArrayRef) -> Result<ScalarValue, String> {
    let value = ScalarValue::try_from_array(column.as_ref(), 0).map_err(|e| e.to_string())?;
    Ok(unwrap(value))
}

/// Strips dictionary and union wrappers, which clients use to send loosely typed
/// parameters.
fn unwrap(value: ScalarValue) -> ScalarValue {
    match value {
        ScalarValue::Dictionary(_, inner) => unwrap(*inner),
        ScalarValue::Union(Some((_, inner)), _, _) => unwrap(*inner),
        ScalarValue::Union(None, _, _) => ScalarValue::Null,
        ScalarValue::Utf8View(v) | ScalarValue::LargeUtf8(v) => ScalarValue::Utf8(v),
        other => other,
    }
}

/// Whether a bound batch carries no values: clients send an empty batch when a
/// statement has no parameters.
pub fn is_empty_bind(batch: &RecordBatch) -> bool {
    batch.num_rows() == 0 || batch.num_columns() == 0
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};

    use super::*;

    #[test]
    fn binding_parameters_forgets_the_prepared_result_schema() {
        let store = PreparedStore::new(StoreLimits::default());
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let handle = store.create("ann", "SELECT count(*) AS n FROM t".into(), Some(Arc::clone(&schema))).unwrap();
        assert_eq!(store.get("ann", &handle).unwrap().result_schema, Some(schema));
        let row =
            RecordBatch::try_from_iter([("p", Arc::new(arrow::array::Int64Array::from(vec![1])) as ArrayRef)]).unwrap();
        store.bind("ann", &handle, Some(row)).unwrap();
        assert_eq!(store.get("ann", &handle).unwrap().result_schema, None, "bound values may change the types");
    }

    #[test]
    fn statements_belong_to_their_creator_and_binding_updates_them() {
        let store = PreparedStore::new(StoreLimits::default());
        let handle = store.create("ann", "SELECT $1".into(), None).unwrap();
        assert_eq!(store.get("ann", &handle).unwrap().sql, "SELECT $1");
        assert_eq!(store.get("bob", &handle).unwrap_err().code(), tonic::Code::InvalidArgument);
        let schema = Arc::new(Schema::new(vec![Field::new("0", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![7]))]).unwrap();
        assert!(store.bind("bob", &handle, Some(batch.clone())).is_err());
        store.bind("ann", &handle, Some(batch.clone())).unwrap();
        assert_eq!(store.get("ann", &handle).unwrap().parameters.as_ref(), Some(&batch));
        let mut forged = handle.clone();
        forged[5] ^= 1;
        assert!(store.get("ann", &forged).is_err());
        assert!(store.get("ann", &handle[..10]).is_err());
        assert!(store.get("ann", b"").is_err());
        store.close("bob", &handle);
        assert!(store.get("ann", &handle).is_ok(), "only the creator closes");
        store.close("ann", &handle);
        assert!(store.get("ann", &handle).is_err());
    }

    #[test]
    fn the_store_is_bounded_per_principal_and_in_time() {
        let store = PreparedStore::new(StoreLimits { per_principal: 2, total: 3, idle: Duration::from_millis(50) });
        let a = store.create("ann", "SELECT 1".into(), None).unwrap();
        let _b = store.create("ann", "SELECT 2".into(), None).unwrap();
        let _c = store.create("ann", "SELECT 3".into(), None).unwrap();
        assert!(store.get("ann", &a).is_err(), "the least recently used is forgotten");
        let _d = store.create("bob", "SELECT 4".into(), None).unwrap();
        let _e = store.create("cid", "SELECT 5".into(), None).unwrap();
        assert_eq!(store.len(), 3);
        std::thread::sleep(Duration::from_millis(60));
        let _f = store.create("cid", "SELECT 6".into(), None).unwrap();
        assert_eq!(store.len(), 1, "idle statements expire");
    }

    #[test]
    fn tickets_are_bound_to_their_principal_and_text() {
        let signer = TicketSigner::new().unwrap();
        let ticket = signer.ticket("ann", "SELECT 1").unwrap();
        assert_eq!(signer.open("ann", &ticket).unwrap(), "SELECT 1");
        assert!(signer.open("bob", &ticket).is_err());
        let mut altered = ticket.clone();
        let last = altered.len() - 1;
        altered[last] = b'2';
        assert!(signer.open("ann", &altered).is_err());
        assert!(signer.open("ann", &ticket[..20]).is_err());
        assert!(TicketSigner::new().unwrap().open("ann", &ticket).is_err(), "another server's key");
    }

    #[test]
    fn values_are_cast_to_the_expected_types() {
        let schema =
            Arc::new(Schema::new(vec![Field::new("0", DataType::Int64, true), Field::new("1", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![7])), Arc::new(StringArray::from(vec![None::<&str>]))],
        )
        .unwrap();
        let expected = vec![("$1".to_string(), Some(DataType::Int32)), ("$2".to_string(), Some(DataType::Date32))];
        let values = parameter_values(&batch, &expected).unwrap();
        assert_eq!(values, vec![ScalarValue::Int32(Some(7)), ScalarValue::Date32(None)]);
        let err = parameter_values(&batch, &expected[..1]).unwrap_err();
        assert!(err.message().contains("1 parameter(s), 2 value(s)"), "{err}");
    }
}
