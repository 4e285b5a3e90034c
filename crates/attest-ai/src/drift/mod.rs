//! Distribution-shift (drift) statistics matching scipy, and a per-feature drift report with
//! Evidently's default tests.
//!
//! - [`numeric`]: two-sample Kolmogorov–Smirnov (scipy `ks_2samp`, method auto: exact up to
//!   10,000 values per sample, else `kstwo` at the effective size), Wasserstein-1 (raw, over
//!   the reference std, Evidently's normed form), PSI and Jensen–Shannon on reference-decile
//!   bins;
//! - [`categorical`]: chi-square test of independence on the 2 x k table (scipy
//!   `chi2_contingency(correction=False)`), Evidently's goodness-of-fit chi-square and z-test,
//!   PSI and Jensen–Shannon per category;
//! - [`report`]: the per-column decision and dataset drift;
//! - [`kolmogorov`], [`special`]: the distributions behind the p-values.
//!
//! Missing values (NaN) are dropped from each sample; infinities are errors.

pub mod categorical;
pub mod distance;
pub mod kolmogorov;
pub mod numeric;
pub mod report;
pub mod special;

pub use categorical::{
    categorical_drift, chi2_contingency, CategoricalDrift, CategoryCounts, ChiSquare,
};
pub use distance::{jensen_shannon, psi};
pub use numeric::{
    decile_edges, ks_2samp, numeric_drift, wasserstein, KsMethod, KsResult, NumericDrift,
};
pub use report::{
    column_drift, drift_report, drift_report_with_share, ColumnDrift, ColumnKind, ColumnSpec,
    ColumnStats, DriftReport, DriftTest,
};
