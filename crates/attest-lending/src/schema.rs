//! The active model's input schema and request validation.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{FieldError, FieldErrorCode};
use crate::events::{FeatureKind, FeatureSpec, ModelRef};

/// Ordered model inputs with type, range and description (for validation and OpenAPI).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSchema {
    /// The model this schema belongs to.
    pub model: ModelRef,
    /// Features in model column order; every one is required.
    pub features: Vec<FeatureSpec>,
}

impl FeatureSchema {
    /// Feature names in column order.
    pub fn names(&self) -> Vec<String> {
        self.features.iter().map(|f| f.name.clone()).collect()
    }

    /// Checks `features` against the schema and returns the model row (column order).
    ///
    /// Every schema feature must be present (`missing` otherwise; `null` counts as missing),
    /// be a JSON number (`wrong_type`), a whole number for [`FeatureKind::Integer`]
    /// (`wrong_type`), and lie in `[min, max]` (`out_of_range`). Keys the schema does not
    /// know are `unknown_field`. All problems are reported, in schema order then key order.
    pub fn validate(&self, features: &Map<String, Value>) -> Result<Vec<f64>, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut row = Vec::with_capacity(self.features.len());
        for spec in &self.features {
            // Built only on the error paths: the happy path allocates nothing per feature.
            let path = || format!("features.{}", spec.name);
            match features.get(&spec.name) {
                None | Some(Value::Null) => {
                    errors.push(FieldError::new(
                        path(),
                        FieldErrorCode::Missing,
                        format!("required feature {} is missing", spec.name),
                    ));
                    row.push(f64::NAN);
                }
                Some(Value::Number(n)) => {
                    // serde_json numbers are always representable as f64 (no arbitrary precision).
                    let x = n.as_f64().unwrap_or(f64::NAN);
                    if !x.is_finite() {
                        errors.push(FieldError::new(
                            path(),
                            FieldErrorCode::OutOfRange,
                            format!("{} must be a finite number", spec.name),
                        ));
                    } else if spec.kind == FeatureKind::Integer && x.fract() != 0.0 {
                        errors.push(FieldError::new(
                            path(),
                            FieldErrorCode::WrongType,
                            format!("{} must be an integer, got {x}", spec.name),
                        ));
                    } else if x < spec.min || x > spec.max {
                        errors.push(FieldError::new(
                            path(),
                            FieldErrorCode::OutOfRange,
                            format!(
                                "{} must be between {} and {}, got {x}",
                                spec.name, spec.min, spec.max
                            ),
                        ));
                    }
                    row.push(x);
                }
                Some(other) => {
                    errors.push(FieldError::new(
                        path(),
                        FieldErrorCode::WrongType,
                        format!(
                            "{} must be a {}, got {}",
                            spec.name,
                            match spec.kind {
                                FeatureKind::Number => "number",
                                FeatureKind::Integer => "integer",
                            },
                            json_type(other)
                        ),
                    ));
                    row.push(f64::NAN);
                }
            }
        }
        for key in features.keys() {
            if !self.features.iter().any(|f| &f.name == key) {
                errors.push(FieldError::new(
                    format!("features.{key}"),
                    FieldErrorCode::UnknownField,
                    format!("{key:?} is not an input of model {}", self.model),
                ));
            }
        }
        if errors.is_empty() {
            Ok(row)
        } else {
            Err(errors)
        }
    }
}

/// The JSON type name of a value, for messages.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Derives feature specs from reference rows: the kind is `integer` when every value is whole,
/// the range is the observed `[min, max]` widened by half its span on each side (never below 0
/// when the data is non-negative), so legitimate values slightly beyond the sample pass while
/// gross errors (units, sign) are refused.
pub fn derive_specs(names: &[String], rows: &[Vec<f64>]) -> Vec<FeatureSpec> {
    names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let vals: Vec<f64> = rows
                .iter()
                .filter_map(|r| r.get(j).copied())
                .filter(|v| v.is_finite())
                .collect();
            let (lo, hi) = vals
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let integer = !vals.is_empty() && vals.iter().all(|v| v.fract() == 0.0);
            let (min, max) = if vals.is_empty() {
                (f64::MIN, f64::MAX)
            } else {
                let span = (hi - lo).max(if integer {
                    1.0
                } else {
                    hi.abs().max(1.0) * 0.1
                });
                let mut min = lo - span / 2.0;
                let mut max = hi + span / 2.0;
                if lo >= 0.0 {
                    min = min.max(0.0);
                }
                if integer {
                    min = min.floor();
                    max = max.ceil();
                }
                (min, max)
            };
            FeatureSpec {
                name: name.clone(),
                kind: if integer {
                    FeatureKind::Integer
                } else {
                    FeatureKind::Number
                },
                min,
                max,
                description: format!("{name} (range derived from the reference sample)"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> FeatureSchema {
        FeatureSchema {
            model: ModelRef {
                id: "m".into(),
                version: 1,
            },
            features: vec![
                FeatureSpec {
                    name: "a".into(),
                    kind: FeatureKind::Number,
                    min: 0.0,
                    max: 10.0,
                    description: String::new(),
                },
                FeatureSpec {
                    name: "b".into(),
                    kind: FeatureKind::Integer,
                    min: 0.0,
                    max: 2.0,
                    description: String::new(),
                },
            ],
        }
    }

    #[test]
    fn validates_each_field() {
        let s = schema();
        let ok: Map<String, Value> = serde_json::from_str(r#"{"a": 1.5, "b": 2}"#).unwrap();
        assert_eq!(s.validate(&ok).unwrap(), vec![1.5, 2.0]);
        let bad: Map<String, Value> =
            serde_json::from_str(r#"{"a": "x", "b": 1.5, "c": 1}"#).unwrap();
        let errs = s.validate(&bad).unwrap_err();
        let codes: Vec<_> = errs.iter().map(|e| (e.field.as_str(), e.code)).collect();
        assert_eq!(
            codes,
            vec![
                ("features.a", FieldErrorCode::WrongType),
                ("features.b", FieldErrorCode::WrongType),
                ("features.c", FieldErrorCode::UnknownField)
            ]
        );
        let range: Map<String, Value> = serde_json::from_str(r#"{"a": 11, "b": null}"#).unwrap();
        let errs = s.validate(&range).unwrap_err();
        assert_eq!(errs[0].code, FieldErrorCode::OutOfRange);
        assert_eq!(errs[1].code, FieldErrorCode::Missing);
    }

    #[test]
    fn derives_ranges_from_reference() {
        let names = vec!["x".to_string(), "k".to_string()];
        let rows = vec![vec![10.5, 0.0], vec![20.0, 2.0]];
        let specs = derive_specs(&names, &rows);
        assert_eq!(specs[0].kind, FeatureKind::Number);
        assert_eq!((specs[0].min, specs[0].max), (5.75, 24.75));
        assert_eq!(specs[1].kind, FeatureKind::Integer);
        assert_eq!((specs[1].min, specs[1].max), (0.0, 3.0));
    }
}
