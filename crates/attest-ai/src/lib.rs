//! Attest's responsible-AI toolkit, usable on its own.
//!
//! - [`model`]: the [`Model`] trait and loaders (XGBoost JSON, LightGBM text, linear/logistic
//!   JSON, a small candle MLP);
//! - [`explain`]: per-feature attributions with a base value (TreeSHAP, KernelSHAP, LIME, linear
//!   SHAP), additivity-checked, with a `top_k` summary;
//! - [`fairness`]: group metrics and disparities (fairlearn / AIF360 conventions);
//! - [`drift`]: distribution-shift statistics (PSI, KS, Jensen-Shannon, Wasserstein, chi-square).
//!
//! Inputs are dense row-major [`Matrix`] values in `f64`; `NaN` marks a missing value.

pub mod data;
pub mod drift;
pub mod error;
pub mod explain;
pub mod fairness;
pub mod matrix;
pub mod model;
pub mod report;

pub use error::AiError;
pub use explain::{Contribution, Direction, Explanation};
pub use matrix::Matrix;
pub use model::{Model, Output};
