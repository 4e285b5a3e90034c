//! The one error type of the toolkit: every variant names its culprit.

use thiserror::Error;

/// Errors of models, explainers and metrics.
#[derive(Debug, Error)]
pub enum AiError {
    /// A row or matrix has the wrong number of features for the model.
    #[error("feature count mismatch: the model expects {expected} features, the input has {got}")]
    FeatureCount {
        /// What the model expects.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// A required column is absent from the input.
    #[error("column {name:?} not found; available columns: {available}")]
    MissingColumn {
        /// The missing column.
        name: String,
        /// The columns that were there, comma-separated.
        available: String,
    },
    /// A value that must be finite is NaN or infinite.
    #[error("non-finite value {value} in column {column:?} at row {row}")]
    NonFinite {
        /// Column name.
        column: String,
        /// 0-based row.
        row: usize,
        /// The value.
        value: f64,
    },
    /// A value could not be parsed or is out of its domain.
    #[error("invalid value {value:?} in column {column:?} at row {row}: {reason}")]
    InvalidValue {
        /// Column name.
        column: String,
        /// 0-based row.
        row: usize,
        /// The value as text.
        value: String,
        /// Why.
        reason: String,
    },
    /// A model file that cannot be read as the format it claims.
    #[error("unsupported or malformed model file {path}: {reason}")]
    ModelFormat {
        /// Path or description of the source.
        path: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Attributions do not add up to the model output.
    #[error("additivity check failed at row {row}: base {base} + sum of attributions {sum} = {total}, model output {output} (|diff| {diff:e} > tolerance {tolerance:e})")]
    Additivity {
        /// Row index.
        row: usize,
        /// Base value.
        base: f64,
        /// Sum of attributions.
        sum: f64,
        /// base + sum.
        total: f64,
        /// Model output.
        output: f64,
        /// |total - output|.
        diff: f64,
        /// Allowed difference.
        tolerance: f64,
    },
    /// An argument outside its domain (empty background, k = 0, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Two inputs that must have one entry per row differ in length.
    #[error("length mismatch: {column:?} has {got} entries, expected {expected} (one per row)")]
    LengthMismatch {
        /// The input whose length is wrong.
        column: String,
        /// The expected length (rows).
        expected: usize,
        /// Its actual length.
        got: usize,
    },
    /// A group that a metric needs has no rows (or only zero-weight rows).
    #[error("empty group {group}: {reason}")]
    EmptyGroup {
        /// The group, as text.
        group: String,
        /// What needed it.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl AiError {
    /// A short machine-readable code, stable across versions (used by the CLI and HTTP API).
    pub fn code(&self) -> &'static str {
        match self {
            AiError::FeatureCount { .. } => "feature_count_mismatch",
            AiError::MissingColumn { .. } => "missing_column",
            AiError::NonFinite { .. } => "non_finite_value",
            AiError::InvalidValue { .. } => "invalid_value",
            AiError::ModelFormat { .. } => "unsupported_model",
            AiError::Additivity { .. } => "additivity_failed",
            AiError::InvalidArgument(_) => "invalid_argument",
            AiError::LengthMismatch { .. } => "length_mismatch",
            AiError::EmptyGroup { .. } => "empty_group",
            AiError::Io { .. } => "io",
        }
    }
}
