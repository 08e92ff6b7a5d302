//! Static Flight SQL metadata: server capabilities (GetSqlInfo), the type catalogue
//! (GetXdbcTypeInfo), column metadata for table schemas, and the schemas of the
//! key commands, for which Agora knows no keys.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use agora_engine::ProductRemarks;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity, SqlSupportedTransaction, XdbcDataType,
    XdbcDatetimeSubcode,
};

/// What GetSqlInfo answers.
pub static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Agora");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, SqlSupportedTransaction::None as i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(SqlInfo::SqlIdentifierCase, SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlQuotedIdentifierCase, SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32);
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(SqlInfo::SqlNullOrdering, SqlNullOrdering::SqlNullsSortedHigh as i32);
    b.append(SqlInfo::SqlKeywords, KEYWORDS);
    b.append(SqlInfo::SqlNumericFunctions, NUMERIC_FUNCTIONS);
    b.append(SqlInfo::SqlStringFunctions, STRING_FUNCTIONS);
    b.append(SqlInfo::SqlSystemFunctions, SYSTEM_FUNCTIONS);
    b.append(SqlInfo::SqlDatetimeFunctions, DATETIME_FUNCTIONS);
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    b.append(SqlInfo::SqlSchemaTerm, "domain");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(SqlInfo::SqlMaxColumnNameLength, 63i64);
    b.append(SqlInfo::SqlDbSchemaNameLength, 63i64);
    b.append(SqlInfo::SqlMaxTableNameLength, 63i64);
    b.append(SqlInfo::SqlMaxCatalogNameLength, 63i64);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    // JDBC reads this one as a Long, as IOx and Spice send it.
    b.append(SqlInfo::SqlDefaultTransactionIsolation, 0i64);
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, true);
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    // The builder only fails on inconsistent types for one id, which the list above has not.
    b.build().unwrap_or_else(|e| panic!("static SqlInfo list is inconsistent: {e}"))
});

const KEYWORDS: &[&str] = &[
    "ANALYZE",
    "ARRAY",
    "ASC",
    "BETWEEN",
    "CASE",
    "CAST",
    "CROSS",
    "CUBE",
    "DESC",
    "DISTINCT",
    "EXCEPT",
    "EXPLAIN",
    "FILTER",
    "FULL",
    "GROUPING",
    "ILIKE",
    "INTERSECT",
    "INTERVAL",
    "LATERAL",
    "LIMIT",
    "NATURAL",
    "NULLS",
    "OFFSET",
    "OVER",
    "PARTITION",
    "QUALIFY",
    "RECURSIVE",
    "ROLLUP",
    "SEMI",
    "ANTI",
    "SHOW",
    "TRY_CAST",
    "UNNEST",
    "USING",
    "WINDOW",
    "WITH",
];
const NUMERIC_FUNCTIONS: &[&str] = &[
    "abs", "acos", "asin", "atan", "atan2", "cbrt", "ceil", "cos", "degrees", "exp", "floor", "ln", "log", "log10",
    "log2", "pi", "power", "radians", "random", "round", "signum", "sin", "sqrt", "tan", "trunc",
];
const STRING_FUNCTIONS: &[&str] = &[
    "ascii",
    "btrim",
    "char_length",
    "chr",
    "concat",
    "concat_ws",
    "initcap",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "md5",
    "octet_length",
    "regexp_like",
    "regexp_match",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "substring",
    "to_hex",
    "translate",
    "trim",
    "upper",
];
const SYSTEM_FUNCTIONS: &[&str] = &["arrow_typeof", "coalesce", "nullif", "nvl", "version"];
const DATETIME_FUNCTIONS: &[&str] = &[
    "current_date",
    "current_time",
    "date_bin",
    "date_part",
    "date_trunc",
    "extract",
    "from_unixtime",
    "now",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_unixtime",
];

/// What GetXdbcTypeInfo answers: the SQL types DataFusion accepts in casts.
pub static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let row = |name: &str, data_type: XdbcDataType, size: Option<i32>, prefix: Option<&str>, case: bool| XdbcTypeInfo {
        type_name: name.to_string(),
        data_type,
        column_size: size,
        literal_prefix: prefix.map(str::to_string),
        literal_suffix: prefix.map(str::to_string),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: case,
        searchable: Searchable::Full,
        unsigned_attribute: None,
        fixed_prec_scale: false,
        auto_increment: None,
        local_type_name: Some(name.to_string()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: None,
        interval_precision: None,
    };
    b.append(row("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None, false));
    b.append(row("TINYINT", XdbcDataType::XdbcTinyint, Some(3), None, false));
    b.append(row("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), None, false));
    b.append(row("INTEGER", XdbcDataType::XdbcInteger, Some(10), None, false));
    b.append(row("BIGINT", XdbcDataType::XdbcBigint, Some(19), None, false));
    b.append(row("REAL", XdbcDataType::XdbcReal, Some(24), None, false));
    b.append(row("DOUBLE", XdbcDataType::XdbcDouble, Some(53), None, false));
    b.append(XdbcTypeInfo {
        create_params: Some(vec!["precision".to_string(), "scale".to_string()]),
        fixed_prec_scale: true,
        minimum_scale: Some(0),
        maximum_scale: Some(38),
        num_prec_radix: Some(10),
        ..row("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), None, false)
    });
    b.append(row("VARCHAR", XdbcDataType::XdbcVarchar, Some(i32::MAX), Some("'"), true));
    b.append(row("VARBINARY", XdbcDataType::XdbcVarbinary, Some(i32::MAX), None, false));
    b.append(XdbcTypeInfo {
        datetime_subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeYear), // = SQL_CODE_DATE (1); the proto aliases the two,
        sql_data_type: XdbcDataType::XdbcDatetime,
        ..row("DATE", XdbcDataType::XdbcDate, Some(10), Some("'"), false)
    });
    b.append(XdbcTypeInfo {
        datetime_subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeTime),
        sql_data_type: XdbcDataType::XdbcDatetime,
        ..row("TIME", XdbcDataType::XdbcTime, Some(18), Some("'"), false)
    });
    b.append(XdbcTypeInfo {
        datetime_subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
        sql_data_type: XdbcDataType::XdbcDatetime,
        ..row("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(29), Some("'"), false)
    });
    b.append(row("INTERVAL", XdbcDataType::XdbcInterval, None, Some("'"), false));
    b.build().unwrap_or_else(|e| panic!("static XDBC type list is inconsistent: {e}"))
});

/// The SQL type name clients show for an Arrow type.
pub fn sql_type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "TINYINT UNSIGNED".into(),
        DataType::UInt16 => "SMALLINT UNSIGNED".into(),
        DataType::UInt32 => "INTEGER UNSIGNED".into(),
        DataType::UInt64 => "BIGINT UNSIGNED".into(),
        DataType::Float16 | DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            "VARBINARY".into()
        }
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE".into(),
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("{}[]", sql_type_name(f.data_type()))
        }
        DataType::Dictionary(_, v) => sql_type_name(v),
        DataType::Struct(_) => "STRUCT".into(),
        DataType::Map(_, _) => "MAP".into(),
        other => other.to_string().to_uppercase(),
    }
}

/// A product's schema with the `ARROW:FLIGHT:SQL:*` column metadata that JDBC's
/// `getColumns` and ADBC's `GetObjects` read.
pub fn table_schema_with_metadata(
    schema: &Schema,
    catalog: &str,
    domain: &str,
    product: &str,
    remarks: Option<&ProductRemarks>,
) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut m: HashMap<String, String> = f.metadata().clone();
            m.insert("ARROW:FLIGHT:SQL:CATALOG_NAME".into(), catalog.into());
            m.insert("ARROW:FLIGHT:SQL:DB_SCHEMA_NAME".into(), domain.into());
            m.insert("ARROW:FLIGHT:SQL:TABLE_NAME".into(), product.into());
            m.insert("ARROW:FLIGHT:SQL:TYPE_NAME".into(), sql_type_name(f.data_type()));
            if let Some((precision, scale)) = precision_scale(f.data_type()) {
                m.insert("ARROW:FLIGHT:SQL:PRECISION".into(), precision.to_string());
                m.insert("ARROW:FLIGHT:SQL:SCALE".into(), scale.to_string());
            }
            m.insert("ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT".into(), "0".into());
            m.insert(
                "ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE".into(),
                if matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
                    "1"
                } else {
                    "0"
                }
                .into(),
            );
            m.insert("ARROW:FLIGHT:SQL:IS_READ_ONLY".into(), "1".into());
            m.insert("ARROW:FLIGHT:SQL:IS_SEARCHABLE".into(), "1".into());
            // The column's description from the product's contract: JDBC's
            // `REMARKS`, ADBC's `remarks`.
            if let Some(remark) = remarks.and_then(|r| r.columns.get(f.name())) {
                m.insert("ARROW:FLIGHT:SQL:REMARKS".into(), remark.clone());
            }
            f.as_ref().clone().with_metadata(m)
        })
        .collect();
    Schema::new(fields)
}

fn precision_scale(data_type: &DataType) -> Option<(u8, i8)> {
    match data_type {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => Some((*p, *s)),
        DataType::Timestamp(TimeUnit::Second, _) => Some((19, 0)),
        DataType::Timestamp(TimeUnit::Millisecond, _) => Some((23, 3)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Some((26, 6)),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Some((29, 9)),
        _ => None,
    }
}

/// The result schema of GetPrimaryKeys, per the Flight SQL specification.
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The result schema of GetExportedKeys, GetImportedKeys and GetCrossReference.
pub fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}
