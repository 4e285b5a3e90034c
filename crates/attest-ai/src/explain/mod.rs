//! Per-feature attributions that add up to the model output.

use serde::{Deserialize, Serialize};

use crate::{AiError, Output};

pub mod gradients;
pub mod linear;
pub mod tree;

pub mod kernel;
pub mod lime;

/// Which way a feature pushed the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Raised the score.
    Increases,
    /// Lowered the score.
    Decreases,
}

/// One feature's share in one decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// Feature name.
    pub name: String,
    /// The feature's value in the explained row.
    pub value: f64,
    /// Its attribution (SHAP value, LIME weight, ...), in the explanation's output space.
    pub contribution: f64,
    /// Sign of `contribution`.
    pub direction: Direction,
}

/// Attributions for one row: `base_value + values.sum() == prediction` (within tolerance) for
/// additive methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// Expected model output over the background (or the tree's cover-weighted mean).
    pub base_value: f64,
    /// One attribution per feature, in column order.
    pub values: Vec<f64>,
    /// The model output being explained.
    pub prediction: f64,
    /// The space `base_value`, `values` and `prediction` are expressed in.
    pub output: Output,
}

impl Explanation {
    /// Checks `base_value + sum(values) ≈ prediction`; `row` names the row in the error.
    pub fn check_additivity(&self, row: usize, tolerance: f64) -> Result<(), AiError> {
        let sum: f64 = self.values.iter().sum();
        let total = self.base_value + sum;
        let diff = (total - self.prediction).abs();
        if diff.is_nan() || diff > tolerance {
            return Err(AiError::Additivity {
                row,
                base: self.base_value,
                sum,
                total,
                output: self.prediction,
                diff,
                tolerance,
            });
        }
        Ok(())
    }

    /// The `k` features with the largest |attribution|, largest first; ties keep column order.
    pub fn top_k(&self, k: usize, feature_names: &[String], row: &[f64]) -> Vec<Contribution> {
        let mut idx: Vec<usize> = (0..self.values.len()).collect();
        idx.sort_by(|&a, &b| {
            self.values[b]
                .abs()
                .partial_cmp(&self.values[a].abs())
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(&b))
        });
        idx.into_iter()
            .take(k)
            .map(|i| Contribution {
                name: feature_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("f{i}")),
                value: row.get(i).copied().unwrap_or(f64::NAN),
                contribution: self.values[i],
                direction: if self.values[i] >= 0.0 {
                    Direction::Increases
                } else {
                    Direction::Decreases
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_magnitude() {
        let e = Explanation {
            base_value: 0.5,
            values: vec![0.1, -0.4, 0.2, 0.0],
            prediction: 0.4,
            output: Output::Margin,
        };
        e.check_additivity(0, 1e-12).unwrap();
        let names: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let top = e.top_k(3, &names, &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            top.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["b", "c", "a"]
        );
        assert_eq!(top[0].direction, Direction::Decreases);
        assert_eq!(top[0].value, 2.0);
        let bad = Explanation {
            prediction: 1.0,
            ..e
        };
        assert!(matches!(
            bad.check_additivity(7, 1e-6),
            Err(AiError::Additivity { row: 7, .. })
        ));
    }
}
