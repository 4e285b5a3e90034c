//! Per-feature drift report with Evidently's default tests and thresholds.
//!
//! The test for each column follows Evidently's `_get_default_stattest`
//! (evidentlyai/evidently, `src/evidently/calculations/stattests/registry.py`), verified
//! against its source:
//! - reference with **more than 1000 rows**: numeric columns with more than 5 distinct values
//!   use the Wasserstein distance normed by the reference standard deviation
//!   (`wasserstein_distance_norm.py`: `wasserstein / max(np.std(reference), 0.001)`,
//!   population std, drift when `>= 0.1`); categorical columns and numeric ones with at most
//!   5 distinct values use the Jensen–Shannon distance (`jensenshannon.py`: base 2 on the
//!   per-value proportions, drift when `>= 0.1`);
//! - reference with **at most 1000 rows**: numeric columns with more than 5 distinct values use
//!   the two-sample KS p-value; other columns the chi-square goodness-of-fit p-value
//!   (`chisquare_stattest.py`, more than 2 distinct values) or the two-proportion z-test
//!   p-value (`z_stattest.py`, at most 2); drift when `p < 0.05` (the `StatTest` default
//!   threshold).
//!
//! Dataset drift: the share of drifted columns `>= 0.5` (Evidently's `drift_share` default).
//!
//! Distinct values are counted over both samples together (Evidently's `n_values`).

use serde::Serialize;

use super::categorical::{
    categorical_drift, chi2_goodness_of_fit, proportions_z_test, CategoricalDrift, CategoryCounts,
};
use super::distance::jensen_shannon;
use super::numeric::{numeric_drift, NumericDrift};
use crate::{AiError, Matrix};

/// Evidently's row count above which distance measures replace p-values.
pub const EVIDENTLY_LARGE_REFERENCE: usize = 1000;
/// Threshold for distance measures (normed Wasserstein, Jensen–Shannon).
pub const EVIDENTLY_DISTANCE_THRESHOLD: f64 = 0.1;
/// Threshold for p-values.
pub const EVIDENTLY_PVALUE_THRESHOLD: f64 = 0.05;
/// Default share of drifted columns that means dataset drift.
pub const EVIDENTLY_DRIFT_SHARE: f64 = 0.5;

/// Whether a column is numeric or categorical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ColumnKind {
    /// Continuous or ordinal values.
    Numeric,
    /// Category codes.
    Categorical,
}

/// A column of the matrices: its name and kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// Kind.
    pub kind: ColumnKind,
}

impl ColumnSpec {
    /// A numeric column.
    pub fn numeric(name: &str) -> Self {
        ColumnSpec {
            name: name.to_owned(),
            kind: ColumnKind::Numeric,
        }
    }

    /// A categorical column.
    pub fn categorical(name: &str) -> Self {
        ColumnSpec {
            name: name.to_owned(),
            kind: ColumnKind::Categorical,
        }
    }
}

/// All statistics of a column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ColumnStats {
    /// Numeric statistics.
    Numeric(NumericDrift),
    /// Categorical statistics.
    Categorical(CategoricalDrift),
}

/// The test that decided drift for a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DriftTest {
    /// Normed Wasserstein distance >= threshold.
    WassersteinNormed,
    /// Jensen–Shannon distance (base 2) >= threshold.
    JensenShannon,
    /// KS p-value < threshold.
    KolmogorovSmirnov,
    /// Chi-square goodness-of-fit p-value < threshold.
    ChiSquare,
    /// Two-proportion z-test p-value < threshold.
    ZTest,
}

impl DriftTest {
    /// Whether the score is a p-value (drift below the threshold) rather than a distance.
    pub fn is_pvalue(self) -> bool {
        matches!(
            self,
            DriftTest::KolmogorovSmirnov | DriftTest::ChiSquare | DriftTest::ZTest
        )
    }
}

/// Drift of one column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnDrift {
    /// Column name.
    pub name: String,
    /// Kind.
    pub kind: ColumnKind,
    /// The deciding test.
    pub test: DriftTest,
    /// Its score (distance or p-value).
    pub score: f64,
    /// Its threshold.
    pub threshold: f64,
    /// Whether the column drifted.
    pub drifted: bool,
    /// Every statistic of the column.
    pub stats: ColumnStats,
}

/// Drift of a dataset, column by column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    /// Per column, in spec order.
    pub columns: Vec<ColumnDrift>,
    /// How many drifted.
    pub drifted_columns: usize,
    /// drifted / all.
    pub share_drifted: f64,
    /// The share threshold used.
    pub drift_share: f64,
    /// `share_drifted >= drift_share`.
    pub dataset_drift: bool,
}

fn column(m: &Matrix, j: usize) -> Vec<f64> {
    m.rows().map(|r| r[j]).collect()
}

/// Decides drift for one column with Evidently's defaults.
pub fn column_drift(
    spec: &ColumnSpec,
    reference: &[f64],
    current: &[f64],
) -> Result<ColumnDrift, AiError> {
    let (stats, n_ref, n_unique) = match spec.kind {
        ColumnKind::Numeric => {
            let s = numeric_drift(&spec.name, reference, current)?;
            let (n, u) = (s.n_reference, s.n_unique);
            (ColumnStats::Numeric(s), n, u)
        }
        ColumnKind::Categorical => {
            let s = categorical_drift(&spec.name, reference, current)?;
            let n = s.counts.reference.iter().sum::<u64>() as usize;
            let u = s.counts.categories.len();
            (ColumnStats::Categorical(s), n, u)
        }
    };
    let numeric_many = spec.kind == ColumnKind::Numeric && n_unique > 5;
    let (test, score, threshold) = if n_ref > EVIDENTLY_LARGE_REFERENCE {
        match (&stats, numeric_many) {
            (ColumnStats::Numeric(s), true) => (
                DriftTest::WassersteinNormed,
                s.wasserstein_normed_evidently,
                EVIDENTLY_DISTANCE_THRESHOLD,
            ),
            (ColumnStats::Categorical(s), _) => (
                DriftTest::JensenShannon,
                s.jensen_shannon,
                EVIDENTLY_DISTANCE_THRESHOLD,
            ),
            (ColumnStats::Numeric(_), false) => {
                let c = CategoryCounts::new(&spec.name, reference, current)?;
                let js = jensen_shannon(&c.reference_proportions(), &c.current_proportions(), 2.0);
                (DriftTest::JensenShannon, js, EVIDENTLY_DISTANCE_THRESHOLD)
            }
        }
    } else if let (ColumnStats::Numeric(s), true) = (&stats, numeric_many) {
        (
            DriftTest::KolmogorovSmirnov,
            s.ks.pvalue,
            EVIDENTLY_PVALUE_THRESHOLD,
        )
    } else {
        let c = match &stats {
            ColumnStats::Categorical(s) => s.counts.clone(),
            ColumnStats::Numeric(_) => CategoryCounts::new(&spec.name, reference, current)?,
        };
        if n_unique > 2 {
            (
                DriftTest::ChiSquare,
                chi2_goodness_of_fit(&c).pvalue,
                EVIDENTLY_PVALUE_THRESHOLD,
            )
        } else {
            (
                DriftTest::ZTest,
                proportions_z_test(&c).1,
                EVIDENTLY_PVALUE_THRESHOLD,
            )
        }
    };
    let drifted = if test.is_pvalue() {
        score < threshold
    } else {
        score >= threshold
    };
    Ok(ColumnDrift {
        name: spec.name.clone(),
        kind: spec.kind,
        test,
        score,
        threshold,
        drifted,
        stats,
    })
}

/// Compares `current` with `reference` column by column (`columns` names and types the
/// matrix columns, in order) and decides dataset drift at [`EVIDENTLY_DRIFT_SHARE`].
pub fn drift_report(
    reference: &Matrix,
    current: &Matrix,
    columns: &[ColumnSpec],
) -> Result<DriftReport, AiError> {
    drift_report_with_share(reference, current, columns, EVIDENTLY_DRIFT_SHARE)
}

/// [`drift_report`] with a custom dataset drift share in (0, 1].
pub fn drift_report_with_share(
    reference: &Matrix,
    current: &Matrix,
    columns: &[ColumnSpec],
    drift_share: f64,
) -> Result<DriftReport, AiError> {
    for m in [reference, current] {
        if m.n_cols() != columns.len() {
            return Err(AiError::FeatureCount {
                expected: columns.len(),
                got: m.n_cols(),
            });
        }
    }
    if columns.is_empty() {
        return Err(AiError::InvalidArgument(
            "drift report over zero columns".into(),
        ));
    }
    if !(drift_share > 0.0 && drift_share <= 1.0) {
        return Err(AiError::InvalidArgument(format!(
            "drift share must be in (0, 1], got {drift_share}"
        )));
    }
    let cols = columns
        .iter()
        .enumerate()
        .map(|(j, spec)| column_drift(spec, &column(reference, j), &column(current, j)))
        .collect::<Result<Vec<_>, _>>()?;
    let drifted = cols.iter().filter(|c| c.drifted).count();
    let share = drifted as f64 / cols.len() as f64;
    tracing::debug!(drifted, columns = cols.len(), share, "drift report");
    Ok(DriftReport {
        columns: cols,
        drifted_columns: drifted,
        share_drifted: share,
        drift_share,
        dataset_drift: share >= drift_share,
    })
}
