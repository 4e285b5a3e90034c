//! Disparities between groups: fairlearn's (`MetricFrame.difference/ratio`,
//! `demographic_parity_*`, `equalized_odds_*`, `equal_opportunity_*`) and AIF360's
//! (privileged vs unprivileged, generalized entropy).

use serde::Serialize;

use super::counts::{ConfusionCounts, GroupCounts};
use super::group_metrics::RateKind;
use super::groups::GroupKey;
use super::metric::Metric;
use crate::AiError;

/// How fairlearn compares groups (`method=` of `MetricFrame.difference` / `ratio`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Method {
    /// Difference = max - min over groups; ratio = min / max.
    BetweenGroups,
    /// Difference = max |group - overall|; ratio = min over groups of
    /// min(group / overall, overall / group).
    ToOverall,
}

/// How the TPR and FPR disparities are combined into equalized odds (fairlearn's `agg=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Agg {
    /// The larger difference / the smaller ratio.
    WorstCase,
    /// The mean of the two.
    Mean,
}

fn name_of(method: Method) -> &'static str {
    match method {
        Method::BetweenGroups => "between_groups",
        Method::ToOverall => "to_overall",
    }
}

/// Per-group values of `metric`, failing with the first undefined one.
fn group_values(
    counts: &GroupCounts,
    metric: RateKind,
) -> Result<Vec<(&GroupKey, f64, u64)>, Metric> {
    let mut out = Vec::with_capacity(counts.len());
    for (k, c) in counts.groups() {
        match metric.of(c) {
            Metric::Value(v) => out.push((k, v, c.count())),
            Metric::Undefined {
                numerator_count,
                denominator_count,
                reason,
            } => {
                return Err(Metric::Undefined {
                    numerator_count,
                    denominator_count,
                    reason: format!("{} of group {k}: {reason}", metric.name()),
                })
            }
        }
    }
    if out.is_empty() {
        return Err(Metric::Undefined {
            numerator_count: 0,
            denominator_count: 0,
            reason: "no groups".into(),
        });
    }
    Ok(out)
}

fn overall_value(counts: &GroupCounts, metric: RateKind) -> Result<(f64, u64), Metric> {
    let all = counts.overall();
    match metric.of(&all) {
        Metric::Value(v) => Ok((v, all.count())),
        Metric::Undefined {
            numerator_count,
            denominator_count,
            reason,
        } => Err(Metric::Undefined {
            numerator_count,
            denominator_count,
            reason: format!("overall {}: {reason}", metric.name()),
        }),
    }
}

fn extremes<'a>(
    vals: &[(&'a GroupKey, f64, u64)],
) -> ((&'a GroupKey, f64, u64), (&'a GroupKey, f64, u64)) {
    let mut lo = vals[0];
    let mut hi = vals[0];
    for v in &vals[1..] {
        if v.1 < lo.1 {
            lo = *v;
        }
        if v.1 > hi.1 {
            hi = *v;
        }
    }
    (lo, hi)
}

/// fairlearn `MetricFrame(...).difference(method)` for one metric.
pub fn difference(counts: &GroupCounts, metric: RateKind, method: Method) -> Metric {
    let vals = match group_values(counts, metric) {
        Ok(v) => v,
        Err(u) => return u,
    };
    match method {
        Method::BetweenGroups => {
            let (lo, hi) = extremes(&vals);
            Metric::Value(hi.1 - lo.1)
        }
        Method::ToOverall => match overall_value(counts, metric) {
            Ok((o, _)) => Metric::Value(vals.iter().map(|v| (v.1 - o).abs()).fold(0.0, f64::max)),
            Err(u) => u,
        },
    }
}

/// fairlearn `MetricFrame(...).ratio(method)` for one metric.
///
/// Undefined when a denominator value is 0; then the counts are the row counts of the two
/// groups involved (numerator group, denominator group).
pub fn ratio(counts: &GroupCounts, metric: RateKind, method: Method) -> Metric {
    let vals = match group_values(counts, metric) {
        Ok(v) => v,
        Err(u) => return u,
    };
    match method {
        Method::BetweenGroups => {
            let (lo, hi) = extremes(&vals);
            if hi.1 > 0.0 {
                Metric::Value(lo.1 / hi.1)
            } else {
                Metric::Undefined {
                    numerator_count: lo.2,
                    denominator_count: hi.2,
                    reason: format!(
                        "{} ratio between groups: the largest value (group {}) is {}",
                        metric.name(),
                        hi.0,
                        hi.1
                    ),
                }
            }
        }
        Method::ToOverall => {
            let (o, n_all) = match overall_value(counts, metric) {
                Ok(o) => o,
                Err(u) => return u,
            };
            if o <= 0.0 {
                return Metric::Undefined {
                    numerator_count: 0,
                    denominator_count: n_all,
                    reason: format!(
                        "{} ratio to overall: the overall value is {o}",
                        metric.name()
                    ),
                };
            }
            let mut best = f64::INFINITY;
            for (_, v, _) in &vals {
                let r = v / o;
                let r = if r > 1.0 { 1.0 / r } else { r };
                best = best.min(r);
            }
            Metric::Value(best)
        }
    }
}

fn combine(a: Metric, b: Metric, f: impl FnOnce(f64, f64) -> f64) -> Metric {
    match (a, b) {
        (Metric::Value(x), Metric::Value(y)) => Metric::Value(f(x, y)),
        (u @ Metric::Undefined { .. }, _) | (_, u @ Metric::Undefined { .. }) => u,
    }
}

/// Which groups AIF360 treats as privileged: a disjunction of conjunctions of
/// `feature == value` conditions (AIF360's `privileged_groups=[{..}, ..]`). Every other row is
/// unprivileged (as AIF360 does when `unprivileged_groups` is the complement).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivilegedGroups {
    any_of: Vec<Vec<(String, String)>>,
}

impl PrivilegedGroups {
    /// Rows with `feature == value` are privileged.
    pub fn single(feature: &str, value: &str) -> Self {
        PrivilegedGroups {
            any_of: vec![vec![(feature.to_owned(), value.to_owned())]],
        }
    }

    /// A row is privileged when every condition of at least one inner list holds.
    pub fn any_of(any_of: Vec<Vec<(String, String)>>) -> Self {
        PrivilegedGroups { any_of }
    }

    /// Human-readable description, e.g. `sex = Male`.
    pub fn describe(&self) -> String {
        self.any_of
            .iter()
            .map(|all| {
                all.iter()
                    .map(|(f, v)| format!("{f} = {v}"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            })
            .collect::<Vec<_>>()
            .join(" or ")
    }

    /// Whether the group `key` (over `features`) is privileged.
    fn matches(&self, features: &[String], key: &GroupKey) -> Result<bool, AiError> {
        for all in &self.any_of {
            let mut ok = true;
            for (f, v) in all {
                let i =
                    features
                        .iter()
                        .position(|n| n == f)
                        .ok_or_else(|| AiError::MissingColumn {
                            name: f.clone(),
                            available: features.join(", "),
                        })?;
                ok &= key.0[i] == *v;
            }
            if ok {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Pooled counts of the (privileged, unprivileged) rows.
    pub fn partition(
        &self,
        counts: &GroupCounts,
    ) -> Result<(ConfusionCounts, ConfusionCounts), AiError> {
        if self.any_of.is_empty() || self.any_of.iter().any(Vec::is_empty) {
            return Err(AiError::InvalidArgument(
                "privileged groups need at least one condition".into(),
            ));
        }
        let mut p = ConfusionCounts::default();
        let mut u = ConfusionCounts::default();
        for (k, c) in counts.groups() {
            if self.matches(counts.feature_names(), k)? {
                p.merge(c);
            } else {
                u.merge(c);
            }
        }
        Ok((p, u))
    }
}

/// One disparity measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DisparityKind {
    /// fairlearn `demographic_parity_difference` (selection rate).
    DemographicParityDifference(Method),
    /// fairlearn `demographic_parity_ratio`.
    DemographicParityRatio(Method),
    /// fairlearn `equalized_odds_difference` (TPR and FPR).
    EqualizedOddsDifference(Method, Agg),
    /// fairlearn `equalized_odds_ratio`.
    EqualizedOddsRatio(Method, Agg),
    /// fairlearn `equal_opportunity_difference` (TPR).
    EqualOpportunityDifference(Method),
    /// fairlearn `equal_opportunity_ratio` (TPR).
    EqualOpportunityRatio(Method),
    /// AIF360 `disparate_impact`: SR(unprivileged) / SR(privileged).
    DisparateImpact,
    /// AIF360 `statistical_parity_difference`: SR(unprivileged) - SR(privileged).
    StatisticalParityDifference,
    /// AIF360 `equal_opportunity_difference`: TPR(unprivileged) - TPR(privileged).
    Aif360EqualOpportunityDifference,
    /// AIF360 `average_odds_difference`: mean of the FPR and TPR differences (unpriv - priv).
    AverageOddsDifference,
    /// AIF360 `theil_index`: generalized entropy index, alpha = 1, benefits
    /// b = y_pred - y_true + 1, over all rows.
    TheilIndex,
    /// AIF360 `between_group_theil_index`, with every row's benefit replaced by its group's
    /// mean, over the report's groups.
    BetweenGroupTheilIndex,
}

impl DisparityKind {
    /// Whether it needs privileged groups.
    pub fn needs_privileged(self) -> bool {
        matches!(
            self,
            DisparityKind::DisparateImpact
                | DisparityKind::StatisticalParityDifference
                | DisparityKind::Aif360EqualOpportunityDifference
                | DisparityKind::AverageOddsDifference
        )
    }

    /// Every kind: all fairlearn kinds with both methods and aggregations, then AIF360's.
    pub fn all() -> Vec<DisparityKind> {
        let mut v = Vec::new();
        for m in [Method::BetweenGroups, Method::ToOverall] {
            v.push(DisparityKind::DemographicParityDifference(m));
            v.push(DisparityKind::DemographicParityRatio(m));
            for a in [Agg::WorstCase, Agg::Mean] {
                v.push(DisparityKind::EqualizedOddsDifference(m, a));
                v.push(DisparityKind::EqualizedOddsRatio(m, a));
            }
            v.push(DisparityKind::EqualOpportunityDifference(m));
            v.push(DisparityKind::EqualOpportunityRatio(m));
        }
        v.extend([
            DisparityKind::DisparateImpact,
            DisparityKind::StatisticalParityDifference,
            DisparityKind::Aif360EqualOpportunityDifference,
            DisparityKind::AverageOddsDifference,
            DisparityKind::TheilIndex,
            DisparityKind::BetweenGroupTheilIndex,
        ]);
        v
    }

    /// A stable snake_case name, e.g. `equalized_odds_difference[to_overall,mean]`.
    pub fn name(self) -> String {
        let agg = |a: Agg| match a {
            Agg::WorstCase => "worst_case",
            Agg::Mean => "mean",
        };
        match self {
            DisparityKind::DemographicParityDifference(m) => {
                format!("demographic_parity_difference[{}]", name_of(m))
            }
            DisparityKind::DemographicParityRatio(m) => {
                format!("demographic_parity_ratio[{}]", name_of(m))
            }
            DisparityKind::EqualizedOddsDifference(m, a) => {
                format!("equalized_odds_difference[{},{}]", name_of(m), agg(a))
            }
            DisparityKind::EqualizedOddsRatio(m, a) => {
                format!("equalized_odds_ratio[{},{}]", name_of(m), agg(a))
            }
            DisparityKind::EqualOpportunityDifference(m) => {
                format!("equal_opportunity_difference[{}]", name_of(m))
            }
            DisparityKind::EqualOpportunityRatio(m) => {
                format!("equal_opportunity_ratio[{}]", name_of(m))
            }
            DisparityKind::DisparateImpact => "aif360_disparate_impact".into(),
            DisparityKind::StatisticalParityDifference => {
                "aif360_statistical_parity_difference".into()
            }
            DisparityKind::Aif360EqualOpportunityDifference => {
                "aif360_equal_opportunity_difference".into()
            }
            DisparityKind::AverageOddsDifference => "aif360_average_odds_difference".into(),
            DisparityKind::TheilIndex => "theil_index".into(),
            DisparityKind::BetweenGroupTheilIndex => "between_group_theil_index".into(),
        }
    }

    /// Evaluates it on `counts`; `partition` holds the (privileged, unprivileged) pooled
    /// counts for the AIF360 kinds (undefined without it).
    pub fn evaluate(
        self,
        counts: &GroupCounts,
        partition: Option<&(ConfusionCounts, ConfusionCounts)>,
    ) -> Metric {
        use DisparityKind as K;
        let eo = |m: Method,
                  a: Agg,
                  f: fn(&GroupCounts, RateKind, Method) -> Metric,
                  worst: fn(f64, f64) -> f64| {
            combine(
                f(counts, RateKind::Tpr, m),
                f(counts, RateKind::Fpr, m),
                |x, y| match a {
                    Agg::WorstCase => worst(x, y),
                    Agg::Mean => 0.5 * (x + y),
                },
            )
        };
        match self {
            K::DemographicParityDifference(m) => difference(counts, RateKind::SelectionRate, m),
            K::DemographicParityRatio(m) => ratio(counts, RateKind::SelectionRate, m),
            K::EqualizedOddsDifference(m, a) => eo(m, a, difference, f64::max),
            K::EqualizedOddsRatio(m, a) => eo(m, a, ratio, f64::min),
            K::EqualOpportunityDifference(m) => difference(counts, RateKind::Tpr, m),
            K::EqualOpportunityRatio(m) => ratio(counts, RateKind::Tpr, m),
            K::TheilIndex => theil_index(&counts.overall()),
            K::BetweenGroupTheilIndex => between_group_theil_index(counts),
            K::DisparateImpact
            | K::StatisticalParityDifference
            | K::Aif360EqualOpportunityDifference
            | K::AverageOddsDifference => match partition {
                None => Metric::Undefined {
                    numerator_count: 0,
                    denominator_count: 0,
                    reason: format!("{} needs privileged groups", self.name()),
                },
                Some((p, u)) => aif360(self, p, u),
            },
        }
    }
}

fn aif360(kind: DisparityKind, p: &ConfusionCounts, u: &ConfusionCounts) -> Metric {
    let tag = |m: Metric, who: &str| match m {
        Metric::Undefined {
            numerator_count,
            denominator_count,
            reason,
        } => Metric::Undefined {
            numerator_count,
            denominator_count,
            reason: format!("{who}: {reason}"),
        },
        v => v,
    };
    let diff = |f: fn(&ConfusionCounts) -> Metric| {
        combine(
            tag(f(u), "unprivileged"),
            tag(f(p), "privileged"),
            |a, b| a - b,
        )
    };
    match kind {
        DisparityKind::DisparateImpact => {
            let (su, sp) = (u.selection_rate(), p.selection_rate());
            match (su, sp) {
                (Metric::Value(a), Metric::Value(b)) if b > 0.0 => Metric::Value(a / b),
                (Metric::Value(_), Metric::Value(_)) => Metric::Undefined {
                    numerator_count: u.n_tp + u.n_fp,
                    denominator_count: p.n_tp + p.n_fp,
                    reason: "disparate impact: the privileged selection rate is 0".into(),
                },
                (a, b) => combine(tag(a, "unprivileged"), tag(b, "privileged"), |x, _| x),
            }
        }
        DisparityKind::StatisticalParityDifference => diff(ConfusionCounts::selection_rate),
        DisparityKind::Aif360EqualOpportunityDifference => diff(ConfusionCounts::tpr),
        DisparityKind::AverageOddsDifference => combine(
            diff(ConfusionCounts::fpr),
            diff(ConfusionCounts::tpr),
            |a, b| 0.5 * (a + b),
        ),
        _ => Metric::Undefined {
            numerator_count: 0,
            denominator_count: 0,
            reason: format!(
                "{} is not a privileged-vs-unprivileged measure",
                kind.name()
            ),
        },
    }
}

/// `x ln x` with `0 ln 0 = 0`.
fn xlogx(x: f64) -> f64 {
    if x > 0.0 {
        x * x.ln()
    } else {
        0.0
    }
}

/// AIF360's Theil index (generalized entropy index with alpha = 1) from counts: benefits are
/// 0 for false negatives, 1 for correct predictions and 2 for false positives;
/// `mean((b / mu) ln(b / mu))`, weighted by sample weight.
pub fn theil_index(c: &ConfusionCounts) -> Metric {
    let w = c.weight();
    let benefit = c.tp + c.tn + 2.0 * c.fp;
    if w <= 0.0 || benefit <= 0.0 {
        return Metric::Undefined {
            numerator_count: c.n_tp + c.n_tn + c.n_fp,
            denominator_count: c.count(),
            reason: "theil index: the mean benefit is 0 (no rows, or only false negatives)".into(),
        };
    }
    let mu = benefit / w;
    Metric::Value(((c.tp + c.tn) * xlogx(1.0 / mu) + c.fp * xlogx(2.0 / mu)) / w)
}

/// Between-group Theil index: the Theil index after replacing every benefit by its group's
/// mean benefit.
pub fn between_group_theil_index(counts: &GroupCounts) -> Metric {
    let all = counts.overall();
    let w = all.weight();
    let benefit = all.tp + all.tn + 2.0 * all.fp;
    if w <= 0.0 || benefit <= 0.0 {
        return theil_index(&all);
    }
    let mu = benefit / w;
    let mut s = 0.0;
    for (_, c) in counts.groups() {
        let wg = c.weight();
        if wg > 0.0 {
            let mug = (c.tp + c.tn + 2.0 * c.fp) / wg;
            s += wg * xlogx(mug / mu);
        }
    }
    Metric::Value(s / w)
}

/// AIF360's `generalized_entropy_index` for any alpha from counts (alpha = 1 is
/// [`theil_index`], alpha = 0 the mean log deviation, undefined with false negatives).
pub fn generalized_entropy_index(c: &ConfusionCounts, alpha: f64) -> Metric {
    if (alpha - 1.0).abs() < f64::EPSILON {
        return theil_index(c);
    }
    let w = c.weight();
    let benefit = c.tp + c.tn + 2.0 * c.fp;
    if w <= 0.0 || benefit <= 0.0 {
        return theil_index(c);
    }
    let mu = benefit / w;
    if alpha == 0.0 {
        if c.fn_ > 0.0 {
            return Metric::Undefined {
                numerator_count: c.n_fn,
                denominator_count: c.count(),
                reason:
                    "generalized entropy index alpha = 0: log of a zero benefit (false negatives)"
                        .into(),
            };
        }
        return Metric::Value(-((c.tp + c.tn) * (1.0 / mu).ln() + c.fp * (2.0 / mu).ln()) / w);
    }
    let term = |b: f64| (b / mu).powf(alpha) - 1.0;
    let s = c.fn_ * term(0.0) + (c.tp + c.tn) * term(1.0) + c.fp * term(2.0);
    Metric::Value(s / w / (alpha * (alpha - 1.0)))
}
