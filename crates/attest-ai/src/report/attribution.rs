//! Plain attribution data for the report (no dependency on the explainers).

use crate::AiError;

/// Global importance: mean |attribution| per feature.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalImportance {
    /// Chart title.
    pub title: String,
    /// (feature, mean |SHAP|), any order (the chart sorts descending).
    pub features: Vec<(String, f64)>,
}

impl GlobalImportance {
    /// Mean absolute attribution per feature over `rows` (one attribution vector per row,
    /// in `names` order).
    pub fn from_attributions(
        title: &str,
        names: &[String],
        rows: &[Vec<f64>],
    ) -> Result<Self, AiError> {
        if rows.is_empty() {
            return Err(AiError::InvalidArgument(
                "global importance over zero rows".into(),
            ));
        }
        let mut sums = vec![0.0; names.len()];
        for (i, r) in rows.iter().enumerate() {
            if r.len() != names.len() {
                return Err(AiError::FeatureCount {
                    expected: names.len(),
                    got: r.len(),
                });
            }
            for (j, (s, v)) in sums.iter_mut().zip(r).enumerate() {
                if !v.is_finite() {
                    return Err(AiError::NonFinite {
                        column: names[j].clone(),
                        row: i,
                        value: *v,
                    });
                }
                *s += v.abs();
            }
        }
        let n = rows.len() as f64;
        Ok(GlobalImportance {
            title: title.to_owned(),
            features: names
                .iter()
                .cloned()
                .zip(sums.into_iter().map(|s| s / n))
                .collect(),
        })
    }
}

/// One row's explanation as a waterfall: base value, contributions, prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Waterfall {
    /// Chart title.
    pub title: String,
    /// The explainer's base value (expected output).
    pub base_value: f64,
    /// (feature, or feature = value text, contribution), drawn in this order.
    pub contributions: Vec<(String, f64)>,
    /// The model output: base value + sum of contributions.
    pub prediction: f64,
}

impl Waterfall {
    /// Checks additivity: `|base + Σ contributions - prediction| <= tolerance`.
    pub fn new(
        title: &str,
        base_value: f64,
        contributions: Vec<(String, f64)>,
        prediction: f64,
        tolerance: f64,
    ) -> Result<Self, AiError> {
        let sum: f64 = contributions.iter().map(|c| c.1).sum();
        let total = base_value + sum;
        let diff = (total - prediction).abs();
        if diff.is_nan() || diff > tolerance {
            return Err(AiError::Additivity {
                row: 0,
                base: base_value,
                sum,
                total,
                output: prediction,
                diff,
                tolerance,
            });
        }
        Ok(Waterfall {
            title: title.to_owned(),
            base_value,
            contributions,
            prediction,
        })
    }
}
