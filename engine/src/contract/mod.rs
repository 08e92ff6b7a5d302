//! Data contracts in the Open Data Contract Standard (ODCS v3, YAML).
//!
//! A contract is the product's promise to its consumers: what it means
//! (purpose, usage, limitations), who answers for it, its columns with their
//! descriptions and classification, the quality rules it must pass and its
//! service levels. Agora reads one contract per product, shows it in the
//! `system` tables, checks the source's schema against it (drift) and runs its
//! quality rules (`agora check --quality`).
//!
//! The parser interprets the ODCS fields Agora acts on and keeps every other
//! field, with its key path, in [`Contract::unsupported`], so that nothing a
//! domain wrote is silently dropped.

mod drift;
mod parse;
pub mod quality;
mod schema;

use std::path::PathBuf;

pub use self::drift::{Drift, drift};

/// One product's data contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    /// The file it was read from.
    pub file: PathBuf,
    /// `apiVersion`, e.g. `v3.0.2`.
    pub api_version: String,
    /// `id`: the contract's stable identifier.
    pub id: String,
    /// `name`.
    pub name: Option<String>,
    /// `version` of this contract.
    pub version: String,
    /// `status`: proposed, draft, active, deprecated, retired.
    pub status: Option<String>,
    /// `domain` as the contract names it.
    pub domain: Option<String>,
    /// `dataProduct`.
    pub data_product: Option<String>,
    /// `description.purpose`.
    pub purpose: Option<String>,
    /// `description.usage`.
    pub usage: Option<String>,
    /// `description.limitations`.
    pub limitations: Option<String>,
    /// `tags` of the contract and of its schema object.
    pub tags: Vec<String>,
    /// `team`: who answers for the product.
    pub team: Vec<TeamMember>,
    /// The table's description from its schema object.
    pub table_description: Option<String>,
    /// The promised columns, in contract order.
    pub columns: Vec<ContractColumn>,
    /// Quality rules, table-level and column-level, including those implied by
    /// `required` and `unique`.
    pub rules: Vec<QualityRule>,
    /// `slaProperties`.
    pub sla: Vec<SlaProperty>,
    /// ODCS fields Agora does not act on, kept as (key path, JSON value).
    pub unsupported: Vec<(String, String)>,
    /// Where the contract departs from the official ODCS JSON Schema. Logged
    /// as warnings, not refused: Agora has always loaded such contracts
    /// (later-version fields under an older `apiVersion`, say) and still does.
    pub schema_problems: Vec<agora_connectors::Problem>,
}

/// A member of the team that owns the product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamMember {
    /// `username` (often an e-mail address).
    pub username: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `role`, e.g. `owner`.
    pub role: Option<String>,
}

/// A column as the contract promises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractColumn {
    /// Column name (the `physicalName` when given, else `name`).
    pub name: String,
    /// `logicalType`: string, date, timestamp, time, number, integer, object, array, boolean.
    pub logical_type: Option<String>,
    /// `physicalType`, e.g. `bigint`, `decimal(15,2)`, `varchar`.
    pub physical_type: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `required`: no NULLs.
    pub required: bool,
    /// `unique`.
    pub unique: bool,
    /// `primaryKey`.
    pub primary_key: bool,
    /// `primaryKeyPosition`: the column's place in a composite key (1-based).
    pub primary_key_position: Option<i64>,
    /// `classification`, e.g. public, internal, confidential, restricted.
    pub classification: Option<String>,
    /// `tags`, e.g. `pii`.
    pub tags: Vec<String>,
}

/// A quality rule, reduced to what Agora can run.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityRule {
    /// A name for reports: the rule's `name`, else derived from kind and column.
    pub name: String,
    /// The column the rule is about, for column-level rules.
    pub column: Option<String>,
    /// What is measured.
    pub kind: RuleKind,
    /// What the measured value must satisfy.
    pub threshold: Threshold,
    /// Whether the measure is a row count or a percentage of the rows.
    pub percent: bool,
    /// `dimension` (completeness, uniqueness, conformity, …).
    pub dimension: Option<String>,
    /// `severity` (error, warning, info).
    pub severity: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// Where in the contract the rule is written.
    pub path: String,
}

/// The measure a rule computes.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// Rows where the column is NULL.
    NullValues,
    /// Rows that repeat another row's value: of the rule's column, or of these
    /// columns together (a composite key).
    DuplicateValues(Vec<String>),
    /// Rows where the column is NULL or one of these placeholder values.
    MissingValues(Vec<Literal>),
    /// Non-NULL rows whose value is not in the list.
    InvalidValues(Vec<Literal>),
    /// Non-NULL rows whose text does not match the regular expression.
    PatternMismatch(String),
    /// Non-NULL rows outside the bounds (either optional).
    OutOfRange {
        /// Lowest accepted value.
        min: Option<Literal>,
        /// Highest accepted value.
        max: Option<Literal>,
        /// The bounds themselves are not accepted (`exclusiveMinimum` / `exclusiveMaximum`).
        exclusive: (bool, bool),
    },
    /// All rows.
    RowCount,
    /// A query returning one number; `{object}` stands for the product.
    Sql(String),
    /// Age of the newest data (seconds), from the column or the source's
    /// modification time; from an SLA `latency`/`freshness` property.
    Freshness {
        /// The column holding the data's time, if the SLA names one.
        column: Option<String>,
    },
    /// A rule Agora cannot run (`type: text`, a custom engine); reported, not checked.
    NotExecutable(String),
}

/// A literal value in a rule (accepted values, range bounds).
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A number.
    Number(f64),
    /// Text (also dates, written as text).
    Text(String),
    /// A boolean.
    Bool(bool),
}

impl Literal {
    /// The literal as SQL.
    pub fn to_sql(&self) -> String {
        match self {
            Literal::Number(n) => format!("{n}"),
            Literal::Text(t) => format!("'{}'", t.replace('\'', "''")),
            Literal::Bool(b) => b.to_string(),
        }
    }
}

/// What a measured value must satisfy (the ODCS `mustBe…` operators).
#[derive(Debug, Clone, PartialEq)]
pub enum Threshold {
    /// `mustBe`.
    Equal(f64),
    /// `mustNotBe`.
    NotEqual(f64),
    /// `mustBeGreaterThan`.
    Greater(f64),
    /// `mustBeGreaterOrEqualTo`.
    GreaterOrEqual(f64),
    /// `mustBeLessThan`.
    Less(f64),
    /// `mustBeLessOrEqualTo`.
    LessOrEqual(f64),
    /// `mustBeBetween` (inclusive).
    Between(f64, f64),
    /// `mustNotBeBetween`.
    NotBetween(f64, f64),
}

impl Threshold {
    /// Does `value` satisfy the threshold?
    pub fn holds(&self, value: f64) -> bool {
        match *self {
            Threshold::Equal(x) => value == x,
            Threshold::NotEqual(x) => value != x,
            Threshold::Greater(x) => value > x,
            Threshold::GreaterOrEqual(x) => value >= x,
            Threshold::Less(x) => value < x,
            Threshold::LessOrEqual(x) => value <= x,
            Threshold::Between(a, b) => value >= a && value <= b,
            Threshold::NotBetween(a, b) => value < a || value > b,
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Equal(x) => write!(f, "= {x}"),
            Threshold::NotEqual(x) => write!(f, "<> {x}"),
            Threshold::Greater(x) => write!(f, "> {x}"),
            Threshold::GreaterOrEqual(x) => write!(f, ">= {x}"),
            Threshold::Less(x) => write!(f, "< {x}"),
            Threshold::LessOrEqual(x) => write!(f, "<= {x}"),
            Threshold::Between(a, b) => write!(f, "between {a} and {b}"),
            Threshold::NotBetween(a, b) => write!(f, "not between {a} and {b}"),
        }
    }
}

/// A service-level property (`slaProperties`).
#[derive(Debug, Clone, PartialEq)]
pub struct SlaProperty {
    /// `property`, e.g. `latency`, `frequency`, `availability`.
    pub property: String,
    /// `value` as written.
    pub value: String,
    /// `unit`, e.g. `d`, `h`, `m`.
    pub unit: Option<String>,
    /// `element`: the column (`table.column`) the property applies to.
    pub element: Option<String>,
}

impl SlaProperty {
    /// The property as a duration in seconds (`value` × `unit`), when it is one.
    pub fn seconds(&self) -> Option<f64> {
        let value: f64 = self.value.trim().parse().ok()?;
        let unit = self.unit.as_deref().unwrap_or("d").to_ascii_lowercase();
        let factor = match unit.as_str() {
            "s" | "sec" | "second" | "seconds" => 1.0,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "week" | "weeks" => 7.0 * 86_400.0,
            "y" | "yr" | "year" | "years" => 365.0 * 86_400.0,
            _ => return None,
        };
        Some(value * factor)
    }
}

impl Contract {
    /// Parses ODCS YAML for `product` (the schema object of that name, or the
    /// only one). Reports every problem with its key path.
    pub fn parse(
        text: &str,
        file: &std::path::Path,
        product: &str,
    ) -> Result<Contract, Vec<agora_connectors::Problem>> {
        parse::parse(text, file, product)
    }

    /// The owner to show: the team member with role `owner`, else the first.
    pub fn owner(&self) -> Option<String> {
        let owner = self.team.iter().find(|m| m.role.as_deref().is_some_and(|r| r.eq_ignore_ascii_case("owner")));
        let member = owner.or_else(|| self.team.first())?;
        member.name.clone().or_else(|| member.username.clone())
    }

    /// The contract column of that name.
    pub fn column(&self, name: &str) -> Option<&ContractColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The unsupported fields as one JSON object (`{"key.path": value}`), for display.
    pub fn unsupported_json(&self) -> Option<String> {
        if self.unsupported.is_empty() {
            return None;
        }
        let parts: Vec<String> =
            self.unsupported.iter().map(|(k, v)| format!("{}: {v}", serde_json::Value::String(k.clone()))).collect();
        Some(format!("{{{}}}", parts.join(", ")))
    }
}
