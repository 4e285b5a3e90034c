//! A metric value that is either a number or a typed "undefined" (zero denominator).

use serde::Serialize;

/// A metric value: a finite number, or `Undefined` when its denominator is zero.
///
/// Fairness metrics are ratios of (weighted) counts. A group without actual positives has no
/// true-positive rate; rather than NaN or a silent 0, the metric says so and carries the counts
/// behind the numerator and denominator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Metric {
    /// A defined value.
    Value(f64),
    /// The denominator was zero (or had zero total weight).
    Undefined {
        /// Number of rows (unweighted) behind the numerator.
        numerator_count: u64,
        /// Number of rows (unweighted) behind the denominator.
        denominator_count: u64,
        /// What was being computed and why it is undefined.
        reason: String,
    },
}

impl Metric {
    /// The value, if defined.
    pub fn value(&self) -> Option<f64> {
        match self {
            Metric::Value(v) => Some(*v),
            Metric::Undefined { .. } => None,
        }
    }

    /// Whether the metric has a value.
    pub fn is_defined(&self) -> bool {
        matches!(self, Metric::Value(_))
    }

    /// `numerator / denominator` (weighted), or `Undefined` when the denominator is not
    /// positive.
    pub(crate) fn rate(
        numerator: f64,
        denominator: f64,
        numerator_count: u64,
        denominator_count: u64,
        what: impl FnOnce() -> String,
    ) -> Metric {
        if denominator > 0.0 {
            Metric::Value(numerator / denominator)
        } else {
            Metric::Undefined {
                numerator_count,
                denominator_count,
                reason: format!(
                    "{}: zero denominator ({denominator_count} rows, total weight {denominator})",
                    what()
                ),
            }
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Metric::Value(v) => write!(f, "{v}"),
            Metric::Undefined { reason, .. } => write!(f, "undefined ({reason})"),
        }
    }
}
