//! The type policy for results sent to clients.
//!
//! DataFusion produces `Utf8View`/`BinaryView` columns, which the Flight SQL JDBC
//! driver before 19.0 and other older clients cannot read. With plain types on
//! (the default), every schema and batch the server sends carries `Utf8`/`Binary`
//! instead (and dictionaries are always sent as their values), applied identically to FlightInfo schemas, prepared-statement
//! schemas, table schemas and data so that they always agree.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::error::ArrowError;

/// How result types are presented to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypePolicy {
    /// Send view types as their plain equivalents.
    pub plain_view_types: bool,
}

impl Default for TypePolicy {
    fn default() -> Self {
        TypePolicy { plain_view_types: true }
    }
}

impl TypePolicy {
    fn data_type(&self, data_type: &DataType) -> DataType {
        // Dictionaries are always sent hydrated (the Flight encoder's default), so
        // announced schemas must say so too.
        if let DataType::Dictionary(_, v) = data_type {
            return self.data_type(v);
        }
        if !self.plain_view_types {
            return data_type.clone();
        }
        match data_type {
            DataType::Utf8View => DataType::Utf8,
            DataType::BinaryView => DataType::Binary,
            DataType::List(f) => DataType::List(self.field(f)),
            DataType::LargeList(f) => DataType::LargeList(self.field(f)),
            DataType::FixedSizeList(f, n) => DataType::FixedSizeList(self.field(f), *n),
            DataType::Struct(fields) => DataType::Struct(fields.iter().map(|f| self.field(f)).collect()),
            DataType::Map(f, sorted) => DataType::Map(self.field(f), *sorted),
            other => other.clone(),
        }
    }

    fn field(&self, field: &FieldRef) -> FieldRef {
        Arc::new(
            Field::new(field.name(), self.data_type(field.data_type()), field.is_nullable())
                .with_metadata(field.metadata().clone()),
        )
    }

    /// The schema clients see for `schema`.
    pub fn schema(&self, schema: &Schema) -> SchemaRef {
        let fields: Vec<FieldRef> = schema.fields().iter().map(|f| self.field(f)).collect();
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    /// Converts a batch to `target` (a schema made by [`Self::schema`]).
    pub fn batch(&self, batch: RecordBatch, target: &SchemaRef) -> Result<RecordBatch, ArrowError> {
        if batch.schema().fields() == target.fields() {
            return Ok(batch);
        }
        let columns = batch
            .columns()
            .iter()
            .zip(target.fields())
            .map(|(column, field)| {
                if column.data_type() == field.data_type() {
                    Ok(Arc::clone(column))
                } else {
                    cast(column, field.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(Arc::clone(target), columns)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int32Array, StringViewArray};

    use super::*;

    #[test]
    fn view_types_become_plain_types_in_schema_and_data() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("l", DataType::List(Arc::new(Field::new("item", DataType::Utf8View, true))), true),
            Field::new("i", DataType::Int32, false),
        ]));
        let policy = TypePolicy::default();
        let plain = policy.schema(&schema);
        assert_eq!(plain.field(0).data_type(), &DataType::Utf8);
        assert_eq!(plain.field(1).data_type(), &DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))));
        assert!(!plain.field(2).is_nullable());

        let two = Schema::new(vec![schema.field(0).clone(), schema.field(2).clone()]);
        let batch = RecordBatch::try_new(
            Arc::new(two.clone()),
            vec![Arc::new(StringViewArray::from(vec![Some("a"), None])), Arc::new(Int32Array::from(vec![1, 2]))],
        )
        .unwrap();
        let target = policy.schema(&two);
        let converted = policy.batch(batch, &target).unwrap();
        assert_eq!(converted.schema(), target);
        assert_eq!(converted.column(0).data_type(), &DataType::Utf8);

        let keep = TypePolicy { plain_view_types: false };
        assert_eq!(keep.schema(&schema).field(0).data_type(), &DataType::Utf8View);
    }
}
