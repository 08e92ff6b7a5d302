//! Prepared statements without server state.
//!
//! A handle carries the SQL text and the bound parameter values (as an Arrow IPC
//! stream), so any server instance can execute it and nothing has to be cleaned
//! up when a client never closes it.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use datafusion::common::ScalarValue;
use tonic::Status;

/// Marks Agora handles, so that a foreign or corrupt handle is refused clearly.
const MAGIC: &[u8; 4] = b"AGP1";

/// A decoded prepared-statement handle.
#[derive(Debug, Clone, PartialEq)]
pub struct Handle {
    /// The statement text.
    pub sql: String,
    /// The bound parameter row, if any.
    pub parameters: Option<RecordBatch>,
}

impl Handle {
    /// Encodes the handle: magic, SQL length (u32 LE), SQL, then an IPC stream of
    /// the parameters.
    pub fn encode(&self) -> Result<Vec<u8>, Status> {
        let mut out = Vec::with_capacity(self.sql.len() + 8);
        out.extend_from_slice(MAGIC);
        let len = u32::try_from(self.sql.len()).map_err(|_| Status::invalid_argument("statement too long"))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(self.sql.as_bytes());
        if let Some(batch) = &self.parameters {
            let mut writer = StreamWriter::try_new(&mut out, &batch.schema())
                .map_err(|e| Status::internal(format!("cannot encode parameters: {e}")))?;
            writer.write(batch).map_err(|e| Status::internal(format!("cannot encode parameters: {e}")))?;
            writer.finish().map_err(|e| Status::internal(format!("cannot encode parameters: {e}")))?;
        }
        Ok(out)
    }

    /// Decodes a handle made by [`Handle::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Status> {
        let invalid = || Status::invalid_argument("invalid prepared statement handle");
        let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(invalid)?;
        let (len, rest) = rest.split_at_checked(4).ok_or_else(invalid)?;
        let len = u32::from_le_bytes(len.try_into().map_err(|_| invalid())?) as usize;
        let (sql, rest) = rest.split_at_checked(len).ok_or_else(invalid)?;
        let sql = String::from_utf8(sql.to_vec()).map_err(|_| invalid())?;
        let parameters = if rest.is_empty() {
            None
        } else {
            let mut reader = StreamReader::try_new(Cursor::new(rest), None).map_err(|_| invalid())?;
            reader.next().transpose().map_err(|_| invalid())?
        };
        Ok(Handle { sql, parameters })
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
    fn handles_round_trip_with_and_without_parameters() {
        let bare = Handle { sql: "SELECT 1".into(), parameters: None };
        assert_eq!(Handle::decode(&bare.encode().unwrap()).unwrap(), bare);
        let schema =
            Arc::new(Schema::new(vec![Field::new("0", DataType::Int64, true), Field::new("1", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![7])), Arc::new(StringArray::from(vec![Some("x")]))],
        )
        .unwrap();
        let bound = Handle { sql: "SELECT $1, $2".into(), parameters: Some(batch) };
        assert_eq!(Handle::decode(&bound.encode().unwrap()).unwrap(), bound);
        assert!(Handle::decode(b"nonsense").is_err());
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
