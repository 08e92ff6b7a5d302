//! The mask catalogue: one canonical implementation per mask, the same for every
//! source, because masks are evaluated by the engine above the scan.
//!
//! A masked column keeps its name and type. The functions below are not
//! registered in sessions: a user cannot call the token function to test
//! guesses against tokens.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{DFSchema, ScalarValue, exec_err};
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility, cast, lit,
};
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// A way of hiding a column's values while keeping its name and type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Mask {
    /// Every value becomes NULL (any type).
    Null,
    /// Every value becomes `****` (text).
    Redact,
    /// All but the last `n` characters become `*` (text).
    LastN {
        /// How many trailing characters stay visible.
        n: usize,
    },
    /// The local part of an e-mail address is hidden: `****@example.com` (text).
    Email,
    /// A keyed deterministic token (HMAC-SHA-256 with the mesh's secret key): the
    /// same value gives the same token in every domain, so masked keys still
    /// join (integers and text).
    Token,
    /// Dates and timestamps truncated to the first day of their year.
    Year,
    /// A custom SQL expression; `{col}` stands for the column.
    Sql {
        /// The expression, e.g. `left({col}, 1) || '.'`.
        expr: String,
    },
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mask::Null => f.write_str("null"),
            Mask::Redact => f.write_str("redact"),
            Mask::LastN { n } => write!(f, "last_n({n})"),
            Mask::Email => f.write_str("email"),
            Mask::Token => f.write_str("token"),
            Mask::Year => f.write_str("year"),
            Mask::Sql { expr } => write!(f, "sql({expr})"),
        }
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        || matches!(t, DataType::Dictionary(_, v) if is_text(v))
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Dictionary(_, v) if is_integer(v))
}

impl Mask {
    /// The expression that masks `column` (of type `data_type`), cast back to
    /// that type. Errors say why the mask does not fit the column.
    pub(crate) fn expr(
        &self,
        column: Expr,
        name: &str,
        data_type: &DataType,
        key: Option<&Arc<[u8]>>,
        state: &SessionState,
        schema: &DFSchema,
    ) -> std::result::Result<Expr, String> {
        let needs = |ok: bool, what: &str| {
            if ok { Ok(()) } else { Err(format!("mask {self} applies to {what} columns, not to {name} ({data_type})")) }
        };
        let masked = match self {
            Mask::Null => {
                let null = ScalarValue::try_from(data_type).map_err(|e| e.strip_backtrace())?;
                return Ok(lit(null));
            }
            Mask::Redact => {
                needs(is_text(data_type), "text")?;
                lit("****")
            }
            Mask::LastN { n } => {
                needs(is_text(data_type), "text")?;
                let n = i64::try_from(*n).unwrap_or(i64::MAX);
                ScalarUDF::new_from_impl(MaskLastN::new()).call(vec![cast(column, DataType::Utf8), lit(n)])
            }
            Mask::Email => {
                needs(is_text(data_type), "text")?;
                ScalarUDF::new_from_impl(MaskEmail::new()).call(vec![cast(column, DataType::Utf8)])
            }
            Mask::Token => {
                needs(is_text(data_type) || is_integer(data_type), "text or integer")?;
                let Some(key) = key else { return Err("the token mask needs token_key_env or token_key_file".into()) };
                let input = if is_integer(data_type) { DataType::Int64 } else { DataType::Utf8 };
                ScalarUDF::new_from_impl(MaskToken::new(Arc::clone(key))).call(vec![cast(column, input)])
            }
            Mask::Year => {
                let ok = matches!(data_type, DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _));
                needs(ok, "date or timestamp")?;
                let ts = match data_type {
                    DataType::Timestamp(_, _) => column,
                    _ => cast(column, DataType::Timestamp(TimeUnit::Nanosecond, None)),
                };
                datafusion::functions::expr_fn::date_trunc(lit("year"), ts)
            }
            Mask::Sql { expr } => {
                let text = expr.replace("{col}", &format!("\"{}\"", name.replace('"', "\"\"")));
                let e = state.create_logical_expr(&text, schema).map_err(|e| e.strip_backtrace())?;
                super::expressions::check_scalar(&e)?;
                e
            }
        };
        Ok(cast(masked, data_type.clone()))
    }
}

/// `mask_last_n(text, n)`: all but the last `n` characters replaced by `*`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct MaskLastN {
    signature: Signature,
}

impl MaskLastN {
    fn new() -> Self {
        MaskLastN { signature: Signature::exact(vec![DataType::Utf8, DataType::Int64], Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for MaskLastN {
    fn name(&self) -> &str {
        "mask_last_n"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = match args.args.get(1) {
            Some(ColumnarValue::Scalar(ScalarValue::Int64(Some(n)))) => usize::try_from(*n).unwrap_or(0),
            _ => return exec_err!("mask_last_n takes a constant count"),
        };
        map_strings(&args, |s| {
            let count = s.chars().count();
            let hidden = count.saturating_sub(n);
            s.chars().enumerate().map(|(i, c)| if i < hidden { '*' } else { c }).collect()
        })
    }
}

/// `mask_email(text)`: `alice@example.com` → `****@example.com`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct MaskEmail {
    signature: Signature,
}

impl MaskEmail {
    fn new() -> Self {
        MaskEmail { signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for MaskEmail {
    fn name(&self) -> &str {
        "mask_email"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        map_strings(&args, |s| match s.rfind('@') {
            Some(at) => format!("****{}", &s[at..]),
            None => "****".to_string(),
        })
    }
}

/// `mask_token(value)`: HMAC-SHA-256 of the value under the mesh key. Integers
/// map to non-negative integers, text to `tok_` and 20 hex digits.
#[derive(PartialEq, Eq, Hash)]
struct MaskToken {
    signature: Signature,
    key: Arc<[u8]>,
}

impl fmt::Debug for MaskToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MaskToken { key: <redacted> }")
    }
}

impl MaskToken {
    fn new(key: Arc<[u8]>) -> Self {
        let signature = Signature::one_of(
            vec![TypeSignature::Exact(vec![DataType::Utf8]), TypeSignature::Exact(vec![DataType::Int64])],
            Volatility::Immutable,
        );
        MaskToken { signature, key }
    }

    fn digest(&self, tag: u8, bytes: &[u8]) -> [u8; 32] {
        // The key is at least 16 bytes (checked at load); HMAC accepts any length.
        let mut mac = match hmac::Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return [0; 32],
        };
        mac.update(&[tag]);
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }
}

impl ScalarUDFImpl for MaskToken {
    fn name(&self) -> &str {
        "mask_token"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args.first().cloned().unwrap_or(DataType::Utf8))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let array = args.args[0].to_array(args.number_rows)?;
        if let Some(ints) = array.as_any().downcast_ref::<Int64Array>() {
            let out: Int64Array = ints
                .iter()
                .map(|v| {
                    v.map(|v| {
                        let d = self.digest(b'i', &v.to_be_bytes());
                        let mut first = [0u8; 8];
                        first.copy_from_slice(&d[..8]);
                        i64::from_be_bytes(first) & i64::MAX
                    })
                })
                .collect();
            return Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef));
        }
        map_strings(&args, |s| {
            let d = self.digest(b's', s.as_bytes());
            format!("tok_{}", hex::encode(&d[..10]))
        })
    }
}

fn map_strings(args: &ScalarFunctionArgs, f: impl Fn(&str) -> String) -> Result<ColumnarValue> {
    let array = args.args[0].to_array(args.number_rows)?;
    let Some(strings) = array.as_any().downcast_ref::<StringArray>() else {
        return exec_err!("mask expects text, got {}", array.data_type());
    };
    let out: StringArray = strings.iter().map(|v| v.map(&f)).collect();
    Ok(ColumnarValue::Array(Arc::new(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    fn run(udf: &dyn ScalarUDFImpl, args: Vec<ColumnarValue>, rows: usize, out: DataType) -> ArrayRef {
        let arg_fields = args.iter().map(|a| Arc::new(Field::new("a", a.data_type(), true))).collect();
        let result = udf
            .invoke_with_args(ScalarFunctionArgs {
                args,
                arg_fields,
                number_rows: rows,
                return_field: Arc::new(Field::new("r", out, true)),
                config_options: Arc::default(),
            })
            .unwrap();
        result.to_array(rows).unwrap()
    }

    fn strings(a: &ArrayRef) -> Vec<Option<String>> {
        a.as_any().downcast_ref::<StringArray>().unwrap().iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn last_n_keeps_length_and_tail() {
        let input = ColumnarValue::Array(Arc::new(StringArray::from(vec![Some("25-989-741-2988"), Some("ab"), None])));
        let out =
            run(&MaskLastN::new(), vec![input, ColumnarValue::Scalar(ScalarValue::Int64(Some(4)))], 3, DataType::Utf8);
        assert_eq!(strings(&out), vec![Some("***********2988".into()), Some("ab".into()), None]);
    }

    #[test]
    fn email_hides_the_local_part() {
        let input = ColumnarValue::Array(Arc::new(StringArray::from(vec!["alice@example.com", "nobody"])));
        let out = run(&MaskEmail::new(), vec![input], 2, DataType::Utf8);
        assert_eq!(strings(&out), vec![Some("****@example.com".into()), Some("****".into())]);
    }

    #[test]
    fn tokens_are_deterministic_keyed_and_typed() {
        let key: Arc<[u8]> = Arc::from(b"0123456789abcdef".to_vec());
        let other: Arc<[u8]> = Arc::from(b"fedcba9876543210".to_vec());
        let ints = || ColumnarValue::Array(Arc::new(Int64Array::from(vec![Some(42), Some(42), Some(7), None])));
        let a = run(&MaskToken::new(Arc::clone(&key)), vec![ints()], 4, DataType::Int64);
        let a = a.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(a.value(0), a.value(1));
        assert_ne!(a.value(0), a.value(2));
        assert_ne!(a.value(0), 42);
        assert!(a.value(0) >= 0 && a.is_null(3));
        let b = run(&MaskToken::new(other), vec![ints()], 4, DataType::Int64);
        assert_ne!(a.value(0), b.as_any().downcast_ref::<Int64Array>().unwrap().value(0));
        let s = run(
            &MaskToken::new(key),
            vec![ColumnarValue::Array(Arc::new(StringArray::from(vec!["x", "x"])))],
            2,
            DataType::Utf8,
        );
        let s = strings(&s);
        assert_eq!(s[0], s[1]);
        assert!(s[0].as_deref().unwrap().starts_with("tok_") && s[0].as_deref().unwrap().len() == 24);
    }
}
