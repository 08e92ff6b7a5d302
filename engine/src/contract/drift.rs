//! Schema drift: the source's actual schema against the contract's promise.

use arrow::datatypes::{DataType, Schema};

use super::Contract;

/// One difference between a contract and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// A promised column the source does not have.
    Missing(String),
    /// A source column the contract does not describe.
    Extra(String),
    /// A column whose type does not fit the contract's.
    Type {
        /// The column.
        column: String,
        /// What the contract says (`physicalType`, else `logicalType`).
        contract: String,
        /// What the source has.
        actual: DataType,
    },
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drift::Missing(c) => write!(f, "column {c} is in the contract but not in the source"),
            Drift::Extra(c) => write!(f, "column {c} is in the source but not in the contract"),
            Drift::Type { column, contract, actual } => {
                write!(f, "column {column} is {actual} in the source, the contract says {contract}")
            }
        }
    }
}

/// The differences between `contract` and the source's `schema`, in contract
/// order (missing and changed columns), then extra source columns. A contract
/// without columns promises no schema and never drifts.
pub fn drift(contract: &Contract, schema: &Schema) -> Vec<Drift> {
    if contract.columns.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for column in &contract.columns {
        match schema.field_with_name(&column.name) {
            Err(_) => out.push(Drift::Missing(column.name.clone())),
            Ok(field) => {
                // A physical type Agora does not know falls back to the logical type.
                let declared = column
                    .physical_type
                    .as_deref()
                    .map(|t| (t, fits_physical(t, field.data_type())))
                    .filter(|(_, fits)| fits.is_some());
                let declared = declared
                    .or_else(|| column.logical_type.as_deref().map(|t| (t, Some(fits_logical(t, field.data_type())))));
                if let Some((text, Some(false))) = declared {
                    out.push(Drift::Type {
                        column: column.name.clone(),
                        contract: text.to_string(),
                        actual: field.data_type().clone(),
                    });
                }
            }
        }
    }
    for field in schema.fields() {
        if contract.column(field.name()).is_none() {
            out.push(Drift::Extra(field.name().clone()));
        }
    }
    out
}

/// Does an Arrow type fit an ODCS `logicalType`?
fn fits_logical(logical: &str, actual: &DataType) -> bool {
    use DataType::*;
    match logical {
        "string" => is_text(actual),
        "integer" => actual.is_integer(),
        "number" => actual.is_numeric(),
        "boolean" => matches!(actual, Boolean),
        "date" => matches!(actual, Date32 | Date64 | Timestamp(_, _)),
        "timestamp" => matches!(actual, Timestamp(_, _) | Date64),
        "time" => matches!(actual, Time32(_) | Time64(_)),
        "array" => matches!(actual, List(_) | LargeList(_) | FixedSizeList(_, _) | ListView(_) | LargeListView(_)),
        "object" => matches!(actual, Struct(_) | Map(_, _)),
        _ => true,
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Does an Arrow type fit a `physicalType` such as `bigint` or `decimal(15,2)`?
/// `None` for a physical type Agora does not know, which is then not checked.
fn fits_physical(physical: &str, actual: &DataType) -> Option<bool> {
    use DataType::*;
    let t = physical.trim().to_ascii_lowercase();
    // `decimal(15,2)`, `timestamp(3) with time zone`: the arguments, and the
    // name without them.
    let (base, args) = match (t.find('('), t.find(')')) {
        (Some(open), Some(close)) if open < close => {
            let name = format!("{} {}", &t[..open], &t[close + 1..]);
            (name.split_whitespace().collect::<Vec<_>>().join(" "), Some(t[open + 1..close].to_string()))
        }
        _ => (t.split_whitespace().collect::<Vec<_>>().join(" "), None),
    };
    let fits = match base.as_str() {
        "bigint" | "int8" | "long" | "int64" => matches!(actual, Int64),
        "integer" | "int" | "int4" | "int32" => matches!(actual, Int32),
        "smallint" | "int2" | "int16" => matches!(actual, Int16),
        "tinyint" | "int1" => matches!(actual, Int8),
        "double" | "double precision" | "float8" | "float64" => matches!(actual, Float64),
        "real" | "float" | "float4" | "float32" => matches!(actual, Float32),
        "decimal" | "numeric" => match (actual, args) {
            (Decimal128(p, s) | Decimal256(p, s) | Decimal64(p, s) | Decimal32(p, s), Some(args)) => {
                let parts: Vec<&str> = args.split(',').map(str::trim).collect();
                let want_p: Option<u8> = parts.first().and_then(|x| x.parse().ok());
                let want_s: i8 = parts.get(1).and_then(|x| x.parse().ok()).unwrap_or(0);
                want_p.is_none_or(|wp| wp == *p) && want_s == *s
            }
            (Decimal128(..) | Decimal256(..) | Decimal64(..) | Decimal32(..), None) => true,
            _ => false,
        },
        "varchar" | "string" | "text" | "char" | "character varying" | "character" | "bpchar" | "json" | "jsonb"
        | "uuid" | "enum" => is_text(actual) || (base == "uuid" && matches!(actual, FixedSizeBinary(16))),
        "boolean" | "bool" => matches!(actual, Boolean),
        "date" => matches!(actual, Date32 | Date64),
        "timestamp" | "timestamp without time zone" | "datetime" => matches!(actual, Timestamp(_, None)),
        "timestamptz" | "timestamp with time zone" => matches!(actual, Timestamp(_, Some(_))),
        "time" => matches!(actual, Time32(_) | Time64(_)),
        "bytea" | "binary" | "varbinary" | "blob" => {
            matches!(actual, Binary | LargeBinary | BinaryView | FixedSizeBinary(_))
        }
        "interval" => matches!(actual, Interval(_) | Duration(_)),
        _ => return None,
    };
    Some(fits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    fn contract() -> Contract {
        let yaml = r#"
apiVersion: v3.0.2
kind: DataContract
id: urn:test
version: 1.0.0
status: active
schema:
  - name: part
    properties:
      - { name: p_partkey, physicalType: bigint }
      - { name: p_size, physicalType: bigint }
      - { name: p_price, physicalType: "decimal(15,2)" }
      - { name: p_name, logicalType: string }
      - { name: p_weight, physicalType: decimal }
      - { name: p_at, physicalType: "timestamp(3) with time zone" }
      - { name: p_serial, physicalType: serial, logicalType: integer }
"#;
        Contract::parse(yaml, std::path::Path::new("part.yaml"), "part").expect("valid contract")
    }

    #[test]
    fn reports_missing_extra_and_changed_columns() {
        let schema = Schema::new(vec![
            Field::new("p_partkey", DataType::Int64, false),
            Field::new("p_size", DataType::Int32, false),
            Field::new("p_price", DataType::Decimal128(15, 2), false),
            Field::new("p_name", DataType::Utf8View, false),
            Field::new("p_comment", DataType::Utf8, false),
            Field::new("p_at", DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, Some("UTC".into())), false),
            Field::new("p_serial", DataType::Utf8, false),
        ]);
        let found = drift(&contract(), &schema);
        assert_eq!(
            found,
            vec![
                Drift::Type { column: "p_size".into(), contract: "bigint".into(), actual: DataType::Int32 },
                Drift::Missing("p_weight".into()),
                Drift::Type { column: "p_serial".into(), contract: "integer".into(), actual: DataType::Utf8 },
                Drift::Extra("p_comment".into()),
            ]
        );
    }

    #[test]
    fn decimal_scale_and_logical_types_are_compared() {
        let schema = Schema::new(vec![
            Field::new("p_partkey", DataType::Int64, false),
            Field::new("p_size", DataType::Int64, false),
            Field::new("p_price", DataType::Decimal128(15, 3), false),
            Field::new("p_name", DataType::Int32, false),
            Field::new("p_weight", DataType::Decimal128(10, 0), false),
            Field::new("p_at", DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())), false),
            Field::new("p_serial", DataType::Int32, false),
        ]);
        let found: Vec<String> = drift(&contract(), &schema).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            vec![
                "column p_price is Decimal128(15, 3) in the source, the contract says decimal(15,2)".to_string(),
                "column p_name is Int32 in the source, the contract says string".to_string(),
            ]
        );
    }
}
