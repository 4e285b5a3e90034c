//! Exact SHAP values for linear models, in margin space.
//!
//! With independent features and a background set, the Shapley value of column `i` of a
//! linear model is its term minus the term's background mean: `φ_i = t_i(x_i) − mean_b t_i(b_i)`.
//! For a numeric term that is `w_i (x_i − mean_i) / scale_i`; for a one-hot encoded column it
//! is `Σ_c w_c (onehot_c(x_i) − mean_b onehot_c(b_i))`, i.e. the one-hot columns' attributions
//! summed back onto their original feature. The base value is the mean margin over the
//! background, so `base + Σ φ = margin(x)` exactly.

use rayon::prelude::*;

use super::Explanation;
use crate::model::linear::LinearModel;
use crate::{AiError, Matrix, Output};

/// Linear SHAP for a [`LinearModel`].
#[derive(Debug, Clone)]
pub struct LinearExplainer<'a> {
    model: &'a LinearModel,
    /// Mean of each term over the background.
    term_means: Vec<f64>,
    base_value: f64,
}

impl<'a> LinearExplainer<'a> {
    /// Prepares the explainer from a background set (non-empty, as wide as the model, every
    /// value valid for the model).
    pub fn new(model: &'a LinearModel, background: &Matrix) -> Result<Self, AiError> {
        let n = model.terms.len();
        if background.n_cols() != n {
            return Err(AiError::FeatureCount {
                expected: n,
                got: background.n_cols(),
            });
        }
        if background.n_rows() == 0 {
            return Err(AiError::InvalidArgument("empty background set".into()));
        }
        let mut sums = vec![0.0; n];
        for (r, row) in background.rows().enumerate() {
            for (i, ((t, x), name)) in model
                .terms
                .iter()
                .zip(row)
                .zip(&model.feature_names)
                .enumerate()
            {
                sums[i] += t.eval(*x, name, r)?;
            }
        }
        let inv = 1.0 / background.n_rows() as f64;
        let term_means: Vec<f64> = sums.into_iter().map(|s| s * inv).collect();
        let base_value = model.intercept + term_means.iter().sum::<f64>();
        Ok(LinearExplainer {
            model,
            term_means,
            base_value,
        })
    }

    /// The mean margin over the background.
    pub fn base_value(&self) -> f64 {
        self.base_value
    }

    /// Each term's mean over the background, in column order.
    pub fn term_means(&self) -> &[f64] {
        &self.term_means
    }

    /// Explains one row; `row_index` names it in errors.
    pub fn explain_row(&self, row: &[f64], row_index: usize) -> Result<Explanation, AiError> {
        let n = self.model.terms.len();
        if row.len() != n {
            return Err(AiError::FeatureCount {
                expected: n,
                got: row.len(),
            });
        }
        let mut values = Vec::with_capacity(n);
        let mut margin = self.model.intercept;
        for (((t, x), name), mean) in self
            .model
            .terms
            .iter()
            .zip(row)
            .zip(&self.model.feature_names)
            .zip(&self.term_means)
        {
            let v = t.eval(*x, name, row_index)?;
            margin += v;
            values.push(v - mean);
        }
        Ok(Explanation {
            base_value: self.base_value,
            values,
            prediction: margin,
            output: Output::Margin,
        })
    }

    /// Explains every row of `x`, in parallel over rows.
    pub fn explain(&self, x: &Matrix) -> Result<Vec<Explanation>, AiError> {
        let n = self.model.terms.len();
        if x.n_cols() != n {
            return Err(AiError::FeatureCount {
                expected: n,
                got: x.n_cols(),
            });
        }
        (0..x.n_rows())
            .into_par_iter()
            .with_min_len(64)
            .map(|i| self.explain_row(x.row(i), i))
            .collect()
    }
}
