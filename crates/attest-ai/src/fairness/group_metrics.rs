//! Per-group metrics derived from confusion counts.

use serde::Serialize;

use super::counts::ConfusionCounts;
use super::metric::Metric;

/// A per-group metric, as a column of fairlearn's `MetricFrame`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RateKind {
    /// P(y_pred = 1).
    SelectionRate,
    /// True positive rate (recall).
    Tpr,
    /// False positive rate.
    Fpr,
    /// False negative rate.
    Fnr,
    /// True negative rate.
    Tnr,
    /// Precision.
    Precision,
    /// Accuracy.
    Accuracy,
    /// Number of rows (fairlearn's `count`, unweighted).
    Count,
}

impl RateKind {
    /// Every kind, in report order.
    pub const ALL: [RateKind; 8] = [
        RateKind::SelectionRate,
        RateKind::Tpr,
        RateKind::Fpr,
        RateKind::Fnr,
        RateKind::Tnr,
        RateKind::Precision,
        RateKind::Accuracy,
        RateKind::Count,
    ];

    /// Short name (`selection_rate`, `tpr`, ...).
    pub fn name(self) -> &'static str {
        match self {
            RateKind::SelectionRate => "selection_rate",
            RateKind::Tpr => "tpr",
            RateKind::Fpr => "fpr",
            RateKind::Fnr => "fnr",
            RateKind::Tnr => "tnr",
            RateKind::Precision => "precision",
            RateKind::Accuracy => "accuracy",
            RateKind::Count => "count",
        }
    }

    /// Computes this metric from counts.
    pub fn of(self, c: &ConfusionCounts) -> Metric {
        match self {
            RateKind::SelectionRate => c.selection_rate(),
            RateKind::Tpr => c.tpr(),
            RateKind::Fpr => c.fpr(),
            RateKind::Fnr => c.fnr(),
            RateKind::Tnr => c.tnr(),
            RateKind::Precision => c.precision(),
            RateKind::Accuracy => c.accuracy(),
            RateKind::Count => Metric::Value(c.count() as f64),
        }
    }
}

/// The metrics of one group (or overall).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupMetrics {
    /// Rows.
    pub count: u64,
    /// Total sample weight (equals `count` without weights).
    pub weight: f64,
    /// P(y_pred = 1).
    pub selection_rate: Metric,
    /// True positive rate.
    pub tpr: Metric,
    /// False positive rate.
    pub fpr: Metric,
    /// False negative rate.
    pub fnr: Metric,
    /// True negative rate.
    pub tnr: Metric,
    /// Precision.
    pub precision: Metric,
    /// Accuracy.
    pub accuracy: Metric,
    /// Weighted mean score, when scores were given.
    pub mean_score: Option<Metric>,
    /// The counts behind them.
    pub counts: ConfusionCounts,
}

impl GroupMetrics {
    /// All metrics of `c`; `with_score` adds the mean score.
    pub fn from_counts(c: &ConfusionCounts, with_score: bool) -> Self {
        GroupMetrics {
            count: c.count(),
            weight: c.weight(),
            selection_rate: c.selection_rate(),
            tpr: c.tpr(),
            fpr: c.fpr(),
            fnr: c.fnr(),
            tnr: c.tnr(),
            precision: c.precision(),
            accuracy: c.accuracy(),
            mean_score: with_score.then(|| c.mean_score()),
            counts: *c,
        }
    }
}
