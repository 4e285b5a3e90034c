//! Linear and logistic regression.
//!
//! The margin is `intercept + Σ_i term_i(x_i)`, one [`Term`] per input column: a numeric term
//! `coef · (x − center) / scale`, or a one-hot term `coefs[code]` for an ordinal-coded
//! categorical column (code `k` selects the coefficient of the `k`-th one-hot column). The
//! output is the margin (identity link) or `1 / (1 + e^−margin)` (logistic link).
//!
//! Two sources:
//!
//! - **Our own JSON format** ([`LinearModel::from_json_str`]), for plain linear/logistic
//!   models on raw features:
//!
//!   ```json
//!   { "feature_names": ["age", "income"],
//!     "coefficients": [0.03, -1.2e-5],
//!     "intercept": -1.5,
//!     "link": "logistic" }
//!   ```
//!
//!   `link` is `"identity"` (linear regression, the default when absent) or `"logistic"`.
//! - **A scikit-learn `LogisticRegression` export** behind a `ColumnTransformer` of a
//!   `OneHotEncoder` (columns `cat__<feature>_<category>`) and a `StandardScaler` (columns
//!   `num__<feature>`), with the ordinal encoding of the inputs
//!   ([`LinearModel::from_sklearn_json`]); see `reference/logreg_adult.json` and
//!   `reference/feature_encoding.json`.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::tree::Link;
use crate::{AiError, Matrix, Model, Output};

/// The part of the margin contributed by one input column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Term {
    /// `coef · (x − center) / scale`.
    Numeric {
        /// Coefficient on the standardised value.
        coef: f64,
        /// Value subtracted first (scaler mean; 0 for raw features).
        center: f64,
        /// Divisor (scaler scale; 1 for raw features).
        scale: f64,
    },
    /// One-hot encoded ordinal code: the column holds an integer code `k` in
    /// `0..coefs.len()` and contributes `coefs[k]`.
    OneHot {
        /// Coefficient of each category's one-hot column, by code.
        coefs: Vec<f64>,
    },
}

impl Term {
    /// This term's margin contribution for value `x` of column `column` (named in errors,
    /// along with `row`).
    pub fn eval(&self, x: f64, column: &str, row: usize) -> Result<f64, AiError> {
        if !x.is_finite() {
            return Err(AiError::NonFinite {
                column: column.to_string(),
                row,
                value: x,
            });
        }
        match self {
            Term::Numeric {
                coef,
                center,
                scale,
            } => Ok(coef * (x - center) / scale),
            Term::OneHot { coefs } => {
                if x.fract() != 0.0 || x < 0.0 || x >= coefs.len() as f64 {
                    return Err(AiError::InvalidValue {
                        column: column.to_string(),
                        row,
                        value: x.to_string(),
                        reason: format!("not a category code (an integer in 0..{})", coefs.len()),
                    });
                }
                Ok(coefs[x as usize])
            }
        }
    }
}

/// A linear or logistic regression model over named columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    /// Input column names.
    pub feature_names: Vec<String>,
    /// One term per input column.
    pub terms: Vec<Term>,
    /// Constant margin.
    pub intercept: f64,
    /// Link from margin to output.
    pub link: Link,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimpleJson {
    feature_names: Vec<String>,
    coefficients: Vec<f64>,
    intercept: f64,
    #[serde(default)]
    link: Option<String>,
}

impl LinearModel {
    /// A model on raw numeric features: `margin = intercept + Σ coefficients[i]·x_i`.
    pub fn new(
        feature_names: Vec<String>,
        coefficients: Vec<f64>,
        intercept: f64,
        link: Link,
    ) -> Result<Self, AiError> {
        if feature_names.len() != coefficients.len() {
            return Err(AiError::InvalidArgument(format!(
                "{} feature names for {} coefficients",
                feature_names.len(),
                coefficients.len()
            )));
        }
        if let Some(i) = coefficients.iter().position(|c| !c.is_finite()) {
            return Err(AiError::InvalidArgument(format!(
                "coefficient of {:?} is not finite",
                feature_names[i]
            )));
        }
        if !intercept.is_finite() {
            return Err(AiError::InvalidArgument("intercept is not finite".into()));
        }
        Ok(LinearModel {
            feature_names,
            terms: coefficients
                .into_iter()
                .map(|coef| Term::Numeric {
                    coef,
                    center: 0.0,
                    scale: 1.0,
                })
                .collect(),
            intercept,
            link,
        })
    }

    /// Reads our own JSON format (see the module docs).
    pub fn load_json(path: impl AsRef<Path>) -> Result<Self, AiError> {
        let path = path.as_ref();
        let text = read(path)?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parses our own JSON format; `source` names it in errors.
    pub fn from_json_str(text: &str, source: &str) -> Result<Self, AiError> {
        let err = |reason: String| AiError::ModelFormat {
            path: source.to_string(),
            reason,
        };
        let s: SimpleJson = serde_json::from_str(text)
            .map_err(|e| err(format!("not a linear model JSON document: {e}")))?;
        let link = match s.link.as_deref() {
            None | Some("identity") => Link::Identity,
            Some("logistic") => Link::Logistic,
            Some(other) => {
                return Err(err(format!(
                    "unsupported link {other:?} (use \"identity\" or \"logistic\")"
                )))
            }
        };
        Self::new(s.feature_names, s.coefficients, s.intercept, link).map_err(|e| match e {
            AiError::InvalidArgument(reason) => err(reason),
            other => other,
        })
    }

    /// Serialises a model whose terms are all plain numeric (`center` 0, `scale` 1) to our own
    /// JSON format.
    pub fn to_json_string(&self) -> Result<String, AiError> {
        let mut coefs = Vec::with_capacity(self.terms.len());
        for (name, t) in self.feature_names.iter().zip(&self.terms) {
            match t {
                Term::Numeric {
                    coef,
                    center,
                    scale,
                } if *center == 0.0 && *scale == 1.0 => coefs.push(*coef),
                _ => {
                    return Err(AiError::InvalidArgument(format!(
                        "column {name:?} is not a plain numeric term; the simple JSON format \
                         cannot represent it"
                    )))
                }
            }
        }
        let v = serde_json::json!({
            "feature_names": self.feature_names,
            "coefficients": coefs,
            "intercept": self.intercept,
            "link": match self.link { Link::Identity => "identity", Link::Logistic => "logistic" },
        });
        serde_json::to_string_pretty(&v)
            .map_err(|e| AiError::InvalidArgument(format!("cannot serialise model: {e}")))
    }

    /// Loads a scikit-learn `LogisticRegression` export (`logreg_path`, e.g.
    /// `reference/logreg_adult.json`) together with the ordinal encoding of the input columns
    /// (`encoding_path`, e.g. `reference/feature_encoding.json`). The model's columns are the
    /// encoding's `features`, in order; categorical codes index the encoding's
    /// `categorical_codes` lists.
    pub fn from_sklearn_json(
        logreg_path: impl AsRef<Path>,
        encoding_path: impl AsRef<Path>,
    ) -> Result<Self, AiError> {
        let (lp, ep) = (logreg_path.as_ref(), encoding_path.as_ref());
        Self::from_sklearn_str(
            &read(lp)?,
            &lp.display().to_string(),
            &read(ep)?,
            &ep.display().to_string(),
        )
    }

    /// [`LinearModel::from_sklearn_json`] on texts; the sources name them in errors.
    pub fn from_sklearn_str(
        logreg: &str,
        logreg_source: &str,
        encoding: &str,
        encoding_source: &str,
    ) -> Result<Self, AiError> {
        let lerr = |reason: String| AiError::ModelFormat {
            path: logreg_source.to_string(),
            reason,
        };
        let eerr = |reason: String| AiError::ModelFormat {
            path: encoding_source.to_string(),
            reason,
        };
        let lr: SklearnLogreg = serde_json::from_str(logreg).map_err(|e| {
            lerr(format!(
                "not a scikit-learn logistic regression export: {e}"
            ))
        })?;
        let enc: Encoding = serde_json::from_str(encoding)
            .map_err(|e| eerr(format!("not a feature encoding document: {e}")))?;
        let coef: Vec<f64> = match lr.coef {
            CoefShape::Flat(c) => c,
            CoefShape::Nested(mut rows) if rows.len() == 1 => rows.remove(0),
            CoefShape::Nested(rows) => {
                return Err(lerr(format!(
                    "coef has {} rows; only binary models (one row) are supported",
                    rows.len()
                )))
            }
        };
        let intercept = match lr.intercept {
            CoefShape1::One(x) => x,
            CoefShape1::Vec(v) if v.len() == 1 => v[0],
            CoefShape1::Vec(v) => {
                return Err(lerr(format!(
                    "intercept has {} values; only binary models are supported",
                    v.len()
                )))
            }
        };
        if coef.len() != lr.feature_names_out.len() {
            return Err(lerr(format!(
                "{} coefficients for {} output columns",
                coef.len(),
                lr.feature_names_out.len()
            )));
        }
        let column: HashMap<&str, usize> = lr
            .feature_names_out
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut used = vec![false; coef.len()];
        let mut take = |name: String| -> Result<f64, AiError> {
            let i = *column
                .get(name.as_str())
                .ok_or_else(|| lerr(format!("no output column {name:?}")))?;
            used[i] = true;
            Ok(coef[i])
        };
        let mut terms = Vec::with_capacity(enc.features.len());
        for f in &enc.features {
            if let Some(codes) = enc.categorical_codes.get(f) {
                if let Some(cats) = lr.onehot_categories.get(f) {
                    if let Some(c) = codes.iter().find(|c| !cats.contains(c)) {
                        return Err(lerr(format!(
                            "category {c:?} of {f:?} is unknown to the one-hot encoder"
                        )));
                    }
                }
                let coefs = codes
                    .iter()
                    .map(|c| take(format!("cat__{f}_{c}")))
                    .collect::<Result<Vec<_>, _>>()?;
                terms.push(Term::OneHot { coefs });
            } else {
                let k = lr
                    .scaler
                    .columns
                    .iter()
                    .position(|c| c == f)
                    .ok_or_else(|| lerr(format!("feature {f:?} is neither one-hot nor scaled")))?;
                let (center, scale) = match (lr.scaler.mean.get(k), lr.scaler.scale.get(k)) {
                    (Some(m), Some(s)) if s.is_finite() && *s != 0.0 => (*m, *s),
                    _ => return Err(lerr(format!("scaler has no valid mean/scale for {f:?}"))),
                };
                terms.push(Term::Numeric {
                    coef: take(format!("num__{f}"))?,
                    center,
                    scale,
                });
            }
        }
        if let Some(i) = used.iter().position(|u| !u) {
            return Err(lerr(format!(
                "output column {:?} is not produced by any input feature",
                lr.feature_names_out[i]
            )));
        }
        Ok(LinearModel {
            feature_names: enc.features,
            terms,
            intercept,
            link: Link::Logistic,
        })
    }

    /// The margin of one row; `row_index` names the row in errors.
    pub fn margin_row(&self, row: &[f64], row_index: usize) -> Result<f64, AiError> {
        if row.len() != self.terms.len() {
            return Err(AiError::FeatureCount {
                expected: self.terms.len(),
                got: row.len(),
            });
        }
        let mut m = self.intercept;
        for ((t, x), name) in self.terms.iter().zip(row).zip(&self.feature_names) {
            m += t.eval(*x, name, row_index)?;
        }
        Ok(m)
    }
}

impl Model for LinearModel {
    fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    fn predict(&self, x: &Matrix, output: Output) -> Result<Vec<f64>, AiError> {
        self.check_width(x)?;
        x.rows()
            .enumerate()
            .map(|(i, r)| {
                let m = self.margin_row(r, i)?;
                Ok(match output {
                    Output::Margin => m,
                    Output::Probability => self.link.apply(m),
                })
            })
            .collect()
    }
}

fn read(path: &Path) -> Result<String, AiError> {
    std::fs::read_to_string(path).map_err(|source| AiError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CoefShape {
    Flat(Vec<f64>),
    Nested(Vec<Vec<f64>>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CoefShape1 {
    One(f64),
    Vec(Vec<f64>),
}

#[derive(Deserialize)]
struct Scaler {
    columns: Vec<String>,
    mean: Vec<f64>,
    scale: Vec<f64>,
}

#[derive(Deserialize)]
struct SklearnLogreg {
    feature_names_out: Vec<String>,
    coef: CoefShape,
    intercept: CoefShape1,
    scaler: Scaler,
    #[serde(default)]
    onehot_categories: HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct Encoding {
    features: Vec<String>,
    #[serde(default)]
    categorical_codes: HashMap<String, Vec<String>>,
}
