//! Fairness metrics following fairlearn 0.15 and AIF360 0.6 conventions.
//!
//! Inputs ([`FairnessInput`]): `y_true` and `y_pred` (0/1), optional scores, one or more
//! sensitive feature columns (several give intersectional groups, like fairlearn's MultiIndex)
//! and optional sample weights. Rows are validated and encoded once to dense cells
//! (`group * 4 + y_true * 2 + y_pred`), then counted in a single pass into per-group
//! [`ConfusionCounts`] — a monoid ([`GroupCounts::merge`], `Default`), so chunks or a stream
//! give the same counts as one pass. Every metric and disparity is a function of the counts.
//!
//! A zero denominator yields [`Metric::Undefined`] (with the counts behind it), never NaN.
//!
//! ```
//! use attest_ai::fairness::{FairnessConfig, FairnessInput, FairnessReport, PrivilegedGroups};
//! let y_true = [1, 0, 1, 0, 1, 0];
//! let y_pred = [1, 0, 0, 1, 1, 0];
//! let sex = ["F", "F", "F", "M", "M", "M"];
//! let input = FairnessInput::new(&y_true, &y_pred).sensitive("sex", &sex);
//! let config = FairnessConfig { privileged: Some(PrivilegedGroups::single("sex", "M")), ..Default::default() };
//! let report = FairnessReport::compute(&input, &config).unwrap();
//! assert_eq!(report.by_group.len(), 2);
//! ```

mod bootstrap;
mod counts;
mod disparity;
mod group_metrics;
mod groups;
mod label;
mod metric;
mod report;

pub use bootstrap::{bootstrap_intervals, BootstrapConfig, Interval};
pub use counts::{ConfusionCounts, EncodedInput, FairnessInput, GroupCounts};
pub use disparity::{
    between_group_theil_index, difference, generalized_entropy_index, ratio, theil_index, Agg,
    DisparityKind, Method, PrivilegedGroups,
};
pub use group_metrics::{GroupMetrics, RateKind};
pub use groups::{encode_groups, EncodedGroups, GroupKey, SensitiveFeature};
pub use label::BinaryLabel;
pub use metric::Metric;
pub use report::{Aif360Summary, Disparity, FairnessConfig, FairnessReport};
