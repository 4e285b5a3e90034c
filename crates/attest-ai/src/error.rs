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
