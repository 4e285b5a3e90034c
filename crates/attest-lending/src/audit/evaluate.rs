//! Fairness and drift metrics of one window, and the breach rule.
//!
//! Conventions (documented in the module docs of [`super`]): positive prediction = approve,
//! positive label = repaid. Selection rate = approved / decisions (all decisions of the
//! window); TPR = approved among repaid, FPR = approved among defaulted (labelled decisions
//! whose outcome was observed in the window). Disparities compare the groups with enough
//! samples, leaving out `unknown` unless configured otherwise:
//! - demographic parity difference = max − min selection rate (fairlearn, between groups),
//!   interval: Newcombe's hybrid score interval for the two groups' difference; fair value 0;
//! - disparate impact ratio = min / max selection rate, interval: Katz log; fair value 1;
//! - equalized odds difference = max(TPR difference, FPR difference) (fairlearn's worst
//!   case), interval: Newcombe for the component that attains it; fair value 0.
//!
//! A breach needs all three: the value beyond its threshold, every compared group with at
//! least `min_group_samples` in the rate's denominator, and the interval excluding the fair
//! value. Drift: PSI on reference deciles and binned KS per feature and for the predicted
//! probability; a breach needs the value above its threshold, `min_drift_samples` decisions,
//! and a p-value below `1 - confidence` divided by the window's number of drift tests
//! (Bonferroni over features and the two statistics; PSI ~ (1/n + 1/m) χ², KS asymptotic).

use std::collections::BTreeMap;

use attest_ai::fairness::{
    difference, ratio, ConfusionCounts, GroupCounts, GroupKey, Method, Metric, RateKind,
};
use serde::{Deserialize, Serialize};

use crate::events::ModelRef;

use super::reference::{BinLayout, ReferenceProfile};
use super::stats::{katz_ratio, newcombe_difference, wilson, ConfidenceInterval};
use super::window::{AuditCounts, GroupTally, WindowSpan, UNKNOWN_GROUP};

/// Metric name of the demographic parity difference.
pub const DEMOGRAPHIC_PARITY_DIFFERENCE: &str = "demographic_parity_difference";
/// Metric name of the disparate impact ratio.
pub const DISPARATE_IMPACT_RATIO: &str = "disparate_impact_ratio";
/// Metric name of the equalized odds difference.
pub const EQUALIZED_ODDS_DIFFERENCE: &str = "equalized_odds_difference";
/// The feature name used for prediction drift.
pub const PREDICTION: &str = "prediction";

/// Thresholds and evidence requirements of the breach rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Breach when the demographic parity difference is above this (default 0.1).
    pub demographic_parity_difference: f64,
    /// Breach when the disparate impact ratio is below this (default 0.8, the four-fifths
    /// rule).
    pub disparate_impact_ratio: f64,
    /// Breach when the equalized odds difference is above this (default 0.1).
    pub equalized_odds_difference: f64,
    /// Breach when a PSI is above this (default 0.2).
    pub psi: f64,
    /// Breach when a KS statistic is above this (default 0.1).
    pub ks: f64,
    /// Samples every compared group needs in the rate's denominator (default 30).
    pub min_group_samples: u64,
    /// Decisions a window needs before drift can breach (default 100).
    pub min_drift_samples: u64,
    /// Confidence level of the intervals; drift p-values must be below `1 - confidence`
    /// (default 0.95).
    pub confidence: f64,
    /// Whether the `unknown` group takes part in disparities (default false: it mixes
    /// erased and undeclared applicants of every group).
    pub include_unknown: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            demographic_parity_difference: 0.1,
            disparate_impact_ratio: 0.8,
            equalized_odds_difference: 0.1,
            psi: 0.2,
            ks: 0.1,
            min_group_samples: 30,
            min_drift_samples: 100,
            confidence: 0.95,
            include_unknown: false,
        }
    }
}

/// The metrics of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    /// Group value (`unknown` for erased or missing).
    pub group: String,
    /// Decisions.
    pub decisions: u64,
    /// Approved decisions.
    pub approved: u64,
    /// approved / decisions.
    pub selection_rate: Option<f64>,
    /// Wilson interval of the selection rate.
    pub selection_rate_interval: Option<ConfidenceInterval>,
    /// Labelled decisions (outcome observed in the window).
    pub labeled: u64,
    /// Approved among repaid.
    pub tpr: Option<f64>,
    /// Approved among defaulted.
    pub fpr: Option<f64>,
    /// The counts.
    pub counts: GroupTally,
}

/// A disparity between two groups with its interval and verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisparityView {
    /// The value.
    pub value: f64,
    /// Its confidence interval.
    pub interval: Option<ConfidenceInterval>,
    /// The value of perfect parity (0 for differences, 1 for ratios).
    pub fair_value: f64,
    /// The configured threshold.
    pub threshold: f64,
    /// The two groups that define it (higher rate, lower rate).
    pub groups: (String, String),
    /// For the equalized odds difference: which rate attains it (`tpr` or `fpr`).
    pub component: Option<String>,
    /// Samples behind it (the two groups' denominators).
    pub samples: u64,
    /// Whether the breach rule holds.
    pub breached: bool,
}

/// Fairness of one sensitive attribute in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeFairness {
    /// `sex`, `race` or `age_band`.
    pub attribute: String,
    /// Every group seen.
    pub groups: Vec<GroupView>,
    /// Max − min selection rate over eligible groups.
    pub demographic_parity_difference: Option<DisparityView>,
    /// Min / max selection rate over eligible groups.
    pub disparate_impact_ratio: Option<DisparityView>,
    /// max(TPR difference, FPR difference) over eligible groups.
    pub equalized_odds_difference: Option<DisparityView>,
}

impl AttributeFairness {
    /// The disparities by metric name.
    pub fn disparities(&self) -> [(&'static str, Option<&DisparityView>); 3] {
        [
            (
                DEMOGRAPHIC_PARITY_DIFFERENCE,
                self.demographic_parity_difference.as_ref(),
            ),
            (DISPARATE_IMPACT_RATIO, self.disparate_impact_ratio.as_ref()),
            (
                EQUALIZED_ODDS_DIFFERENCE,
                self.equalized_odds_difference.as_ref(),
            ),
        ]
    }
}

/// Drift of one column (a feature or the prediction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDriftView {
    /// Feature name or `prediction`.
    pub feature: String,
    /// Values counted in the window.
    pub samples: u64,
    /// Decisions where the feature was missing.
    pub missing: u64,
    /// PSI on the reference deciles.
    pub psi: Option<f64>,
    /// p-value of "no drift" for the PSI.
    pub psi_pvalue: Option<f64>,
    /// Whether the PSI breaches.
    pub psi_breached: bool,
    /// Binned KS statistic.
    pub ks: Option<f64>,
    /// Its asymptotic p-value.
    pub ks_pvalue: Option<f64>,
    /// Whether the KS breaches.
    pub ks_breached: bool,
}

/// Drift of one window against the model's reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftView {
    /// Decisions counted.
    pub samples: u64,
    /// Reference rows.
    pub reference_rows: usize,
    /// Prediction drift (when the reference predictions are known).
    pub prediction: Option<ColumnDriftView>,
    /// Per feature.
    pub features: Vec<ColumnDriftView>,
}

/// The audit of one model in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowAudit {
    /// The model.
    pub model: ModelRef,
    /// The window.
    pub window: WindowSpan,
    /// Its length as a label (`1h`, `24h`).
    pub label: String,
    /// Whether the window has closed (final) or is still open (live view).
    pub closed: bool,
    /// Decisions.
    pub decisions: u64,
    /// Labelled decisions.
    pub labeled: u64,
    /// Per sensitive attribute.
    pub fairness: Vec<AttributeFairness>,
    /// Drift, when the model has a reference profile.
    pub drift: Option<DriftView>,
}

fn rate(x: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| x as f64 / n as f64)
}

/// A group and its counts.
type Entry<'a> = (&'a String, &'a GroupTally);

/// Picks (highest, lowest) by `value` among `eligible`; ties keep the first in group order.
fn extremes<'a>(
    eligible: &[Entry<'a>],
    value: impl Fn(&GroupTally) -> f64,
) -> Option<(Entry<'a>, Entry<'a>)> {
    let first = *eligible.first()?;
    let (mut hi, mut lo) = (first, first);
    for e in &eligible[1..] {
        if value(e.1) > value(hi.1) {
            hi = *e;
        }
        if value(e.1) < value(lo.1) {
            lo = *e;
        }
    }
    Some((hi, lo))
}

/// attest-ai's fairlearn-style point estimate over the eligible groups.
fn ai_counts(
    attribute: &str,
    eligible: &[(&String, &GroupTally)],
    f: impl Fn(&GroupTally) -> ConfusionCounts,
) -> Option<GroupCounts> {
    let groups: BTreeMap<GroupKey, ConfusionCounts> = eligible
        .iter()
        .map(|(g, t)| (GroupKey(vec![(*g).clone()]), f(t)))
        .collect();
    GroupCounts::from_parts(vec![attribute.to_owned()], groups).ok()
}

/// A difference of rates `x/n` between the highest and lowest eligible group.
fn rate_difference(
    attribute: &str,
    groups: &BTreeMap<String, GroupTally>,
    th: &Thresholds,
    kind: RateKind,
    counts_of: impl Fn(&GroupTally) -> (u64, u64),
    as_confusion: impl Fn(&GroupTally) -> ConfusionCounts,
    threshold: f64,
) -> Option<DisparityView> {
    let eligible: Vec<(&String, &GroupTally)> = groups
        .iter()
        .filter(|(g, t)| {
            (th.include_unknown || g.as_str() != UNKNOWN_GROUP)
                && counts_of(t).1 >= th.min_group_samples.max(1)
        })
        .collect();
    if eligible.len() < 2 {
        return None;
    }
    let value_of = |t: &GroupTally| {
        let (x, n) = counts_of(t);
        x as f64 / n as f64
    };
    let (hi, lo) = extremes(&eligible, value_of)?;
    let value = match difference(
        &ai_counts(attribute, &eligible, as_confusion)?,
        kind,
        Method::BetweenGroups,
    ) {
        Metric::Value(v) => v,
        Metric::Undefined { .. } => return None,
    };
    let (xh, nh) = counts_of(hi.1);
    let (xl, nl) = counts_of(lo.1);
    let interval = newcombe_difference(xh, nh, xl, nl, th.confidence);
    Some(DisparityView {
        value,
        breached: value > threshold && interval.is_some_and(|i| i.excludes(0.0)),
        interval,
        fair_value: 0.0,
        threshold,
        groups: (hi.0.clone(), lo.0.clone()),
        component: None,
        samples: nh + nl,
    })
}

/// Fairness of one attribute's groups.
pub fn attribute_fairness(
    attribute: &str,
    groups: &BTreeMap<String, GroupTally>,
    th: &Thresholds,
) -> AttributeFairness {
    let views = groups
        .iter()
        .map(|(g, t)| GroupView {
            group: g.clone(),
            decisions: t.decisions,
            approved: t.approved,
            selection_rate: rate(t.approved, t.decisions),
            selection_rate_interval: wilson(t.approved, t.decisions, th.confidence),
            labeled: t.labeled(),
            tpr: rate(t.tp, t.tp + t.fn_),
            fpr: rate(t.fp, t.fp + t.tn),
            counts: *t,
        })
        .collect();
    let sr = |t: &GroupTally| (t.approved, t.decisions);
    let dpd = rate_difference(
        attribute,
        groups,
        th,
        RateKind::SelectionRate,
        sr,
        GroupTally::selection,
        th.demographic_parity_difference,
    );
    let di = disparate_impact(attribute, groups, th);
    let tpr = rate_difference(
        attribute,
        groups,
        th,
        RateKind::Tpr,
        |t| (t.tp, t.tp + t.fn_),
        GroupTally::confusion,
        th.equalized_odds_difference,
    );
    let fpr = rate_difference(
        attribute,
        groups,
        th,
        RateKind::Fpr,
        |t| (t.fp, t.fp + t.tn),
        GroupTally::confusion,
        th.equalized_odds_difference,
    );
    let eod = match (tpr, fpr) {
        (Some(a), Some(b)) => Some(if b.value > a.value {
            ("fpr", b)
        } else {
            ("tpr", a)
        }),
        (Some(a), None) => Some(("tpr", a)),
        (None, Some(b)) => Some(("fpr", b)),
        (None, None) => None,
    }
    .map(|(c, mut v)| {
        v.component = Some(c.to_owned());
        v
    });
    AttributeFairness {
        attribute: attribute.to_owned(),
        groups: views,
        demographic_parity_difference: dpd,
        disparate_impact_ratio: di,
        equalized_odds_difference: eod,
    }
}

fn disparate_impact(
    attribute: &str,
    groups: &BTreeMap<String, GroupTally>,
    th: &Thresholds,
) -> Option<DisparityView> {
    let eligible: Vec<(&String, &GroupTally)> = groups
        .iter()
        .filter(|(g, t)| {
            (th.include_unknown || g.as_str() != UNKNOWN_GROUP)
                && t.decisions >= th.min_group_samples.max(1)
        })
        .collect();
    if eligible.len() < 2 {
        return None;
    }
    let (hi, lo) = extremes(&eligible, |t| t.approved as f64 / t.decisions as f64)?;
    let value = match ratio(
        &ai_counts(attribute, &eligible, GroupTally::selection)?,
        RateKind::SelectionRate,
        Method::BetweenGroups,
    ) {
        Metric::Value(v) => v,
        Metric::Undefined { .. } => return None,
    };
    let interval = katz_ratio(
        lo.1.approved,
        lo.1.decisions,
        hi.1.approved,
        hi.1.decisions,
        th.confidence,
    );
    Some(DisparityView {
        value,
        breached: value < th.disparate_impact_ratio && interval.is_some_and(|i| i.excludes(1.0)),
        interval,
        fair_value: 1.0,
        threshold: th.disparate_impact_ratio,
        groups: (hi.0.clone(), lo.0.clone()),
        component: None,
        samples: hi.1.decisions + lo.1.decisions,
    })
}

fn column_drift(
    feature: &str,
    layout: &BinLayout,
    counts: &[u64],
    missing: u64,
    th: &Thresholds,
) -> ColumnDriftView {
    let samples: u64 = counts.iter().sum();
    let alpha = 1.0 - th.confidence;
    let enough = samples >= th.min_drift_samples.max(1);
    let (psi, psi_pvalue) = match layout.psi(counts) {
        Some((v, p)) => (Some(v), p),
        None => (None, None),
    };
    let ks = layout.ks(counts);
    ColumnDriftView {
        feature: feature.to_owned(),
        samples,
        missing,
        psi_breached: enough
            && psi.is_some_and(|v| v > th.psi)
            && psi_pvalue.is_some_and(|p| p < alpha),
        psi,
        psi_pvalue,
        ks_breached: enough && ks.is_some_and(|k| k.statistic > th.ks && k.pvalue < alpha),
        ks: ks.map(|k| k.statistic),
        ks_pvalue: ks.map(|k| k.pvalue),
    }
}

/// Drift of a window's counts against `profile`.
///
/// A window runs two tests (PSI and KS) per feature and for the prediction; each breaches
/// only below `(1 - confidence) / tests` (Bonferroni), so that traffic without drift raises a
/// drift breach in a window with probability at most `1 - confidence`, however many
/// features the model has.
pub fn drift(counts: &AuditCounts, profile: &ReferenceProfile, th: &Thresholds) -> DriftView {
    let tests =
        2 * (profile.layouts.iter().flatten().count() + usize::from(profile.prediction.is_some()));
    let th = &Thresholds {
        confidence: 1.0 - (1.0 - th.confidence) / tests.max(1) as f64,
        ..*th
    };
    let d = &counts.drift;
    let prediction = profile
        .prediction
        .as_ref()
        .map(|l| column_drift(PREDICTION, l, &d.prediction, 0, th));
    let features = profile
        .features
        .iter()
        .zip(&profile.layouts)
        .enumerate()
        .filter_map(|(i, (name, layout))| {
            let layout = layout.as_ref()?;
            let c = d.features.get(i).map_or(&[][..], Vec::as_slice);
            Some(column_drift(
                name,
                layout,
                c,
                d.missing.get(i).copied().unwrap_or(0),
                th,
            ))
        })
        .collect();
    DriftView {
        samples: d.samples,
        reference_rows: profile.reference_rows,
        prediction,
        features,
    }
}

/// The complete audit of one window.
pub fn window_audit(
    model: &ModelRef,
    window: WindowSpan,
    closed: bool,
    counts: &AuditCounts,
    profile: Option<&ReferenceProfile>,
    th: &Thresholds,
) -> WindowAudit {
    WindowAudit {
        model: model.clone(),
        label: window.label(),
        window,
        closed,
        decisions: counts.decisions(),
        labeled: counts.labeled(),
        fairness: counts
            .fairness
            .iter()
            .map(|(attr, groups)| attribute_fairness(attr, groups, th))
            .collect(),
        drift: profile.map(|p| drift(counts, p, th)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(decisions: u64, approved: u64) -> GroupTally {
        GroupTally {
            decisions,
            approved,
            ..Default::default()
        }
    }

    #[test]
    fn demographic_parity_by_hand() {
        // F: 30/100 approved, M: 60/100 approved, unknown ignored.
        let mut g = BTreeMap::new();
        g.insert("F".to_string(), tally(100, 30));
        g.insert("M".to_string(), tally(100, 60));
        g.insert(UNKNOWN_GROUP.to_string(), tally(500, 0));
        let f = attribute_fairness("sex", &g, &Thresholds::default());
        let dpd = f.demographic_parity_difference.unwrap();
        assert!((dpd.value - 0.3).abs() < 1e-12);
        assert_eq!(dpd.groups, ("M".to_string(), "F".to_string()));
        let i = dpd.interval.unwrap();
        assert!(i.lower > 0.0 && i.lower < 0.3 && i.upper > 0.3);
        assert!(dpd.breached);
        let di = f.disparate_impact_ratio.unwrap();
        assert!((di.value - 0.5).abs() < 1e-12);
        assert!(di.breached);
        // No labels: no equalized odds.
        assert!(f.equalized_odds_difference.is_none());
        assert_eq!(f.groups.len(), 3);
    }

    #[test]
    fn small_or_uncertain_differences_do_not_breach() {
        let th = Thresholds::default();
        // Below the minimum samples: no disparity at all.
        let mut g = BTreeMap::new();
        g.insert("F".to_string(), tally(20, 2));
        g.insert("M".to_string(), tally(20, 18));
        let f = attribute_fairness("sex", &g, &th);
        assert!(f.demographic_parity_difference.is_none());
        // Enough samples, value above the threshold, but the interval includes 0.
        let mut g = BTreeMap::new();
        g.insert("F".to_string(), tally(30, 12));
        g.insert("M".to_string(), tally(30, 16));
        let f = attribute_fairness("sex", &g, &th);
        let dpd = f.demographic_parity_difference.unwrap();
        assert!(dpd.value > th.demographic_parity_difference);
        assert!(!dpd.interval.unwrap().excludes(0.0));
        assert!(!dpd.breached);
    }

    #[test]
    fn equalized_odds_takes_the_worse_rate() {
        // F: TPR 40/50, FPR 10/50; M: TPR 45/50, FPR 30/50 -> TPR diff 0.1, FPR diff 0.4.
        let mut g = BTreeMap::new();
        g.insert(
            "F".to_string(),
            GroupTally {
                tp: 40,
                fn_: 10,
                fp: 10,
                tn: 40,
                ..Default::default()
            },
        );
        g.insert(
            "M".to_string(),
            GroupTally {
                tp: 45,
                fn_: 5,
                fp: 30,
                tn: 20,
                ..Default::default()
            },
        );
        let f = attribute_fairness("sex", &g, &Thresholds::default());
        let eod = f.equalized_odds_difference.unwrap();
        assert!((eod.value - 0.4).abs() < 1e-12);
        assert_eq!(eod.component.as_deref(), Some("fpr"));
        assert_eq!(eod.groups, ("M".to_string(), "F".to_string()));
        assert!(eod.breached);
        // fairlearn's equalized_odds_difference on the same rows agrees.
        let gc = ai_counts("sex", &g.iter().collect::<Vec<_>>(), GroupTally::confusion).unwrap();
        let tpr = difference(&gc, RateKind::Tpr, Method::BetweenGroups)
            .value()
            .unwrap();
        let fpr = difference(&gc, RateKind::Fpr, Method::BetweenGroups)
            .value()
            .unwrap();
        assert!((tpr.max(fpr) - eod.value).abs() < 1e-12);
    }
}
