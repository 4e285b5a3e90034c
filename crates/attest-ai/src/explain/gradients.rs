//! Integrated gradients (Sundararajan et al. 2017) for [`Mlp`] models, with candle autograd.
//!
//! `φ_i = (x_i − b_i) · ∫₀¹ ∂f/∂x_i (b + α (x − b)) dα` in margin space, the integral taken
//! with the midpoint rule over `steps` points in one batched forward/backward pass. By the
//! completeness axiom `f(b) + Σ φ ≈ f(x)`; for a ReLU network the quadrature error shrinks
//! as `steps` grows (it is exact when no ReLU changes state along the path, e.g. with no
//! hidden layer).

use candle_core::{Device, Tensor, Var};

use super::Explanation;
use crate::model::mlp::{check_finite, Mlp};
use crate::{AiError, Matrix, Model, Output};

/// Integrated-gradients explainer for an [`Mlp`].
#[derive(Debug, Clone)]
pub struct IntegratedGradients<'a> {
    model: &'a Mlp,
    baseline: Vec<f64>,
    steps: usize,
    base_value: f64,
}

impl<'a> IntegratedGradients<'a> {
    /// Prepares the explainer with a baseline row and the number of quadrature points.
    pub fn new(model: &'a Mlp, baseline: &[f64], steps: usize) -> Result<Self, AiError> {
        if steps == 0 {
            return Err(AiError::InvalidArgument("steps must be at least 1".into()));
        }
        let b = Matrix::new(baseline.to_vec(), 1, baseline.len())?;
        let base_value = model.predict(&b, Output::Margin)?[0];
        Ok(IntegratedGradients {
            model,
            baseline: baseline.to_vec(),
            steps,
            base_value,
        })
    }

    /// The margin at the baseline.
    pub fn base_value(&self) -> f64 {
        self.base_value
    }

    /// Explains one row (margin space).
    pub fn explain_row(&self, row: &[f64]) -> Result<Explanation, AiError> {
        let n = self.baseline.len();
        let x = Matrix::new(row.to_vec(), 1, row.len())?;
        self.model.check_width(&x)?;
        check_finite(&x, self.model.feature_names())?;
        let prediction = self.model.predict(&x, Output::Margin)?[0];
        let e = |what: &'static str| {
            move |err: candle_core::Error| {
                AiError::InvalidArgument(format!("integrated gradients ({what}): {err}"))
            }
        };
        let m = self.steps;
        let mut path = Vec::with_capacity(m * n);
        for k in 0..m {
            let alpha = (k as f64 + 0.5) / m as f64;
            path.extend(
                self.baseline
                    .iter()
                    .zip(row)
                    .map(|(b, x)| b + alpha * (x - b)),
            );
        }
        let t = Tensor::from_vec(path, (m, n), &Device::Cpu).map_err(e("input"))?;
        let var = Var::from_tensor(&t).map_err(e("input"))?;
        let out = self.model.forward(var.as_tensor())?;
        let grads = out
            .sum_all()
            .and_then(|s| s.backward())
            .map_err(e("backward"))?;
        let g = grads
            .get(var.as_tensor())
            .ok_or_else(|| AiError::InvalidArgument("no gradient for the input".into()))?;
        let mean: Vec<f64> = g
            .mean(0)
            .and_then(|t| t.to_vec1::<f64>())
            .map_err(e("gradient"))?;
        let values = mean
            .iter()
            .zip(row.iter().zip(&self.baseline))
            .map(|(g, (x, b))| g * (x - b))
            .collect();
        Ok(Explanation {
            base_value: self.base_value,
            values,
            prediction,
            output: Output::Margin,
        })
    }

    /// Explains every row of `x`.
    pub fn explain(&self, x: &Matrix) -> Result<Vec<Explanation>, AiError> {
        self.model.check_width(x)?;
        x.rows().map(|r| self.explain_row(r)).collect()
    }
}
