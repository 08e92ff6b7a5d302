//! Quality rules of a contract: ODCS `quality[]` entries, `enum` and
//! `logicalTypeOptions` ranges, and their thresholds.

use serde_norway::{Mapping, Value};

use super::{Walker, describe, join};
use crate::contract::{Literal, QualityRule, RuleKind, Threshold};

const RULE_KEYS: &[&str] = &[
    "id",
    "type",
    "metric",
    "rule",
    "name",
    "description",
    "dimension",
    "severity",
    "unit",
    "validValues",
    "arguments",
    "query",
    "engine",
    "implementation",
    "mustBe",
    "mustNotBe",
    "mustBeGreaterThan",
    "mustBeGreaterOrEqualTo",
    "mustBeGreaterThanOrEqualTo",
    "mustBeLessThan",
    "mustBeLessOrEqualTo",
    "mustBeLessThanOrEqualTo",
    "mustBeBetween",
    "mustNotBeBetween",
];

impl Walker {
    /// `enum: [{value: …}, …]` (ODCS 3.2): the accepted values.
    pub(super) fn enum_values(&mut self, map: &Mapping, path: &str) -> Option<Vec<Literal>> {
        let items = self.list(map, "enum", path);
        if items.is_empty() {
            return None;
        }
        let mut values = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("{}[{i}]", join(path, "enum"));
            let value = match item {
                Value::Mapping(m) => m.get("value"),
                other => Some(other),
            };
            match value {
                Some(Value::Null) => {}
                Some(v) => match literal(v) {
                    Some(l) => values.push(l),
                    None => self.problem(&p, format!("expected a scalar value, found {}", describe(v))),
                },
                None => self.problem(&join(&p, "value"), "missing (required by ODCS)"),
            }
        }
        Some(values)
    }

    /// `logicalTypeOptions` bounds (`minimum`, `maximum`, `exclusiveMinimum`,
    /// `exclusiveMaximum`) as a range rule.
    pub(super) fn range(&mut self, map: &Mapping, path: &str) -> Option<RuleKind> {
        let options = map.get("logicalTypeOptions")?;
        let p = join(path, "logicalTypeOptions");
        let Value::Mapping(options) = options else {
            self.problem(&p, format!("expected a mapping, found {}", describe(options)));
            return None;
        };
        let mut bound = |keys: [&str; 2]| -> (Option<Literal>, bool) {
            for (i, key) in keys.iter().enumerate() {
                match options.get(*key) {
                    None | Some(Value::Null) => {}
                    // JSON Schema draft 4 style: exclusiveMinimum: true next to minimum.
                    Some(Value::Bool(_)) => {}
                    Some(v) => match literal(v) {
                        Some(l) => return (Some(l), i == 1),
                        None => {
                            self.problem(&join(&p, key), format!("expected a number or a date, found {}", describe(v)))
                        }
                    },
                }
            }
            (None, false)
        };
        let (min, exclusive_min) = bound(["minimum", "exclusiveMinimum"]);
        let (max, exclusive_max) = bound(["maximum", "exclusiveMaximum"]);
        let flag = |key: &str| options.get(key).and_then(Value::as_bool).unwrap_or(false);
        let exclusive = (exclusive_min || flag("exclusiveMinimum"), exclusive_max || flag("exclusiveMaximum"));
        if min.is_none() && max.is_none() {
            return None;
        }
        Some(RuleKind::OutOfRange { min, max, exclusive })
    }

    pub(super) fn rules(&mut self, map: &Mapping, path: &str, column: Option<&str>, out: &mut Vec<QualityRule>) {
        for (i, item) in self.list(map, "quality", path).iter().enumerate() {
            let p = format!("{}[{i}]", join(path, "quality"));
            if let Some(rule) = self.rule(item, &p, column) {
                out.push(rule);
            }
        }
    }

    pub(super) fn rule(&mut self, value: &Value, path: &str, column: Option<&str>) -> Option<QualityRule> {
        let map = self.mapping(value, path, RULE_KEYS)?;
        let kind_name = self.string(map, "type", path, false).unwrap_or_else(|| "library".into());
        let metric = self.string(map, "metric", path, false).or_else(|| self.string(map, "rule", path, false));
        let arguments = match map.get("arguments") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Mapping(_)) => v.as_mapping(),
            Some(other) => {
                self.problem(&join(path, "arguments"), format!("expected a mapping, found {}", describe(other)));
                None
            }
        };
        let arg = |key: &str| arguments.and_then(|a| a.get(key)).or_else(|| map.get(key));
        let needs_column = |w: &mut Self, what: &str| {
            if column.is_none() {
                w.problem(path, format!("'{what}' is a column rule; write it under a property's quality"));
            }
        };
        let kind = match kind_name.as_str() {
            "sql" => match self.string(map, "query", path, true) {
                Some(q) => RuleKind::Sql(q),
                None => return None,
            },
            "text" => RuleKind::NotExecutable("a text rule, for people to check".into()),
            "custom" => {
                let engine = self.string(map, "engine", path, false).unwrap_or_else(|| "unnamed".into());
                RuleKind::NotExecutable(format!("a custom rule for engine '{engine}'"))
            }
            "library" => {
                match metric.as_deref() {
                    Some("nullValues" | "nullCheck") => {
                        needs_column(self, "nullValues");
                        RuleKind::NullValues
                    }
                    Some("missingValues") => {
                        needs_column(self, "missingValues");
                        let mut values = Vec::new();
                        if let Some(Value::Sequence(items)) = arg("missingValues") {
                            for v in items {
                                if let Some(l) = literal(v) {
                                    values.push(l);
                                }
                            }
                        }
                        RuleKind::MissingValues(values)
                    }
                    Some("duplicateValues" | "duplicateCount" | "uniqueCheck") => {
                        let columns = match arg("properties") {
                            Some(Value::Sequence(items)) => {
                                items.iter().filter_map(Value::as_str).map(str::to_string).collect()
                            }
                            _ => Vec::new(),
                        };
                        if columns.is_empty() {
                            needs_column(self, "duplicateValues");
                        }
                        RuleKind::DuplicateValues(columns)
                    }
                    Some("invalidValues" | "validValues") => {
                        needs_column(self, "invalidValues");
                        let valid = arg("validValues");
                        let (min, max) = (arg("minimum").or(arg("min")), arg("maximum").or(arg("max")));
                        match (valid, min, max) {
                            (None, None, None) if matches!(arg("pattern"), Some(Value::String(_))) => {
                                RuleKind::PatternMismatch(
                                    arg("pattern").and_then(Value::as_str).unwrap_or_default().to_string(),
                                )
                            }
                            (Some(Value::Sequence(items)), _, _) => {
                                let mut values = Vec::new();
                                for (j, v) in items.iter().enumerate() {
                                    match literal(v) {
                                        Some(l) => values.push(l),
                                        None => self.problem(
                                            &format!("{path}.arguments.validValues[{j}]"),
                                            format!("expected a number, string or boolean, found {}", describe(v)),
                                        ),
                                    }
                                }
                                RuleKind::InvalidValues(values)
                            }
                            (None, min, max) if min.is_some() || max.is_some() => {
                                let bound = |w: &mut Self, v: Option<&Value>, key: &str| {
                                    let v = v?;
                                    let l = literal(v);
                                    if l.is_none() {
                                        w.problem(
                                            &format!("{path}.arguments.{key}"),
                                            format!("expected a number or a date, found {}", describe(v)),
                                        );
                                    }
                                    l
                                };
                                RuleKind::OutOfRange {
                                    min: bound(self, min, "minimum"),
                                    max: bound(self, max, "maximum"),
                                    exclusive: (false, false),
                                }
                            }
                            _ => {
                                self.problem(
                                &join(path, "arguments"),
                                "invalidValues needs arguments.validValues (a list), arguments.pattern or arguments.minimum / maximum",
                            );
                                return None;
                            }
                        }
                    }
                    Some("rowCount") => RuleKind::RowCount,
                    Some(other) => {
                        self.problem(
                        &join(path, if map.contains_key("metric") { "metric" } else { "rule" }),
                        format!("unknown metric '{other}'; expected nullValues, missingValues, duplicateValues, invalidValues or rowCount"),
                    );
                        return None;
                    }
                    None => {
                        self.problem(path, "missing metric (nullValues, duplicateValues, invalidValues, rowCount) or type sql/text/custom");
                        return None;
                    }
                }
            }
            other => {
                self.problem(&join(path, "type"), format!("expected library, sql, text or custom, found '{other}'"));
                return None;
            }
        };
        let threshold = self.threshold(map, path, &kind)?;
        let percent = match self.string(map, "unit", path, false).as_deref() {
            None | Some("rows") => false,
            Some("percent") => true,
            Some(other) => {
                self.problem(&join(path, "unit"), format!("expected rows or percent, found '{other}'"));
                false
            }
        };
        let label = match &kind {
            RuleKind::NullValues => "null values",
            RuleKind::DuplicateValues(_) => "duplicate values",
            RuleKind::MissingValues(_) => "missing values",
            RuleKind::InvalidValues(_) => "invalid values",
            RuleKind::PatternMismatch(_) => "values not matching the pattern",
            RuleKind::OutOfRange { .. } => "values out of range",
            RuleKind::RowCount => "row count",
            RuleKind::Sql(_) => "sql",
            RuleKind::Freshness { .. } => "freshness",
            RuleKind::NotExecutable(_) => "documented rule",
        };
        let id = self.string(map, "id", path, false);
        let name = id.or_else(|| self.string(map, "name", path, false)).unwrap_or_else(|| match column {
            Some(c) => format!("{c} {label}"),
            None => label.to_string(),
        });
        Some(QualityRule {
            name,
            column: column.map(str::to_string),
            kind,
            threshold,
            percent,
            dimension: self.string(map, "dimension", path, false),
            severity: self.string(map, "severity", path, false),
            description: self.string(map, "description", path, false),
            path: path.to_string(),
        })
    }

    pub(super) fn threshold(&mut self, map: &Mapping, path: &str, kind: &RuleKind) -> Option<Threshold> {
        let number = |w: &mut Self, key: &str, v: &Value| -> Option<f64> {
            let n = v.as_f64();
            if n.is_none() {
                w.problem(&join(path, key), format!("expected a number, found {}", describe(v)));
            }
            n
        };
        let pair = |w: &mut Self, key: &str, v: &Value| -> Option<(f64, f64)> {
            match v.as_sequence().map(|s| s.as_slice()) {
                Some([a, b]) => match (a.as_f64(), b.as_f64()) {
                    (Some(a), Some(b)) if a <= b => Some((a, b)),
                    _ => {
                        w.problem(&join(path, key), "expected two numbers, lowest first");
                        None
                    }
                },
                _ => {
                    w.problem(&join(path, key), format!("expected a list of two numbers, found {}", describe(v)));
                    None
                }
            }
        };
        let mut found = Vec::new();
        for (key, v) in map.iter().filter_map(|(k, v)| Some((k.as_str()?, v))) {
            let t = match key {
                "mustBe" => number(self, key, v).map(Threshold::Equal),
                "mustNotBe" => number(self, key, v).map(Threshold::NotEqual),
                "mustBeGreaterThan" => number(self, key, v).map(Threshold::Greater),
                "mustBeGreaterOrEqualTo" | "mustBeGreaterThanOrEqualTo" => {
                    number(self, key, v).map(Threshold::GreaterOrEqual)
                }
                "mustBeLessThan" => number(self, key, v).map(Threshold::Less),
                "mustBeLessOrEqualTo" | "mustBeLessThanOrEqualTo" => number(self, key, v).map(Threshold::LessOrEqual),
                "mustBeBetween" => pair(self, key, v).map(|(a, b)| Threshold::Between(a, b)),
                "mustNotBeBetween" => pair(self, key, v).map(|(a, b)| Threshold::NotBetween(a, b)),
                _ => continue,
            };
            found.push(t);
        }
        match found.as_slice() {
            [] => match kind {
                // A count of bad rows must be zero unless the rule says otherwise.
                RuleKind::NullValues
                | RuleKind::DuplicateValues(_)
                | RuleKind::MissingValues(_)
                | RuleKind::InvalidValues(_)
                | RuleKind::PatternMismatch(_)
                | RuleKind::OutOfRange { .. }
                | RuleKind::NotExecutable(_) => Some(Threshold::Equal(0.0)),
                _ => {
                    self.problem(path, "missing a condition (mustBe, mustBeGreaterThan, mustBeBetween, …)");
                    None
                }
            },
            [one] => one.clone(),
            _ => {
                self.problem(path, "more than one condition; write one rule per condition");
                None
            }
        }
    }
}

pub(super) fn literal(value: &Value) -> Option<Literal> {
    match value {
        Value::Number(n) => n.as_f64().map(Literal::Number),
        Value::String(s) => Some(Literal::Text(s.clone())),
        Value::Bool(b) => Some(Literal::Bool(*b)),
        _ => None,
    }
}
