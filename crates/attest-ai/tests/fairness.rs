//! Fairness metrics: golden values from fairlearn 0.15 / AIF360 0.6 (reference/fairness.json),
//! monoid laws, typed errors and undefined values.

use std::collections::BTreeMap;

use attest_ai::fairness::{
    bootstrap_intervals, theil_index, Agg, BootstrapConfig, ConfusionCounts, DisparityKind,
    FairnessConfig, FairnessInput, FairnessReport, GroupCounts, GroupKey, Method, Metric,
    PrivilegedGroups, RateKind,
};
use attest_ai::AiError;
use proptest::prelude::*;
use serde_json::Value;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

struct Preds {
    sex: Vec<String>,
    race: Vec<String>,
    y_true: Vec<u8>,
    pred: BTreeMap<String, Vec<u8>>,
}

fn load_preds() -> Preds {
    let mut rdr = csv::Reader::from_path(format!("{DATA}/reference/preds.csv")).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (isex, irace, iy) = (col("sex"), col("race"), col("y_true"));
    let models = ["xgb", "lgbm", "lr"];
    let ipred: Vec<usize> = models.iter().map(|m| col(&format!("{m}_pred"))).collect();
    let mut p = Preds {
        sex: vec![],
        race: vec![],
        y_true: vec![],
        pred: models.iter().map(|m| (m.to_string(), vec![])).collect(),
    };
    for rec in rdr.records() {
        let rec = rec.unwrap();
        p.sex.push(rec[isex].to_owned());
        p.race.push(rec[irace].to_owned());
        p.y_true.push(rec[iy].parse().unwrap());
        for (m, i) in models.iter().zip(&ipred) {
            p.pred.get_mut(*m).unwrap().push(rec[*i].parse().unwrap());
        }
    }
    p
}

fn close(got: &Metric, want: &Value, what: &str) {
    let want = want
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number in json"));
    let got = got
        .value()
        .unwrap_or_else(|| panic!("{what}: undefined {got:?}"));
    assert!(
        (got - want).abs() <= 1e-9,
        "{what}: got {got}, fairlearn/aif360 {want}"
    );
}

#[test]
fn golden_fairlearn_and_aif360_all_models() {
    let preds = load_preds();
    let text = std::fs::read_to_string(format!("{DATA}/reference/fairness.json")).unwrap();
    let golden: Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for model in ["xgb", "lgbm", "lr"] {
        for (feature, privileged) in [("sex", "Male"), ("race", "White")] {
            let values = if feature == "sex" {
                &preds.sex
            } else {
                &preds.race
            };
            let input =
                FairnessInput::new(&preds.y_true, &preds.pred[model]).sensitive(feature, values);
            let config = FairnessConfig {
                privileged: Some(PrivilegedGroups::single(feature, privileged)),
                bootstrap: None,
            };
            let r = FairnessReport::compute(&input, &config).unwrap();
            let g = &golden["models"][model]["fairness"][feature];
            let tag = |s: &str| format!("{model}/{feature}/{s}");
            let by_group = g["by_group"].as_object().unwrap();
            assert_eq!(r.by_group.len(), by_group.len(), "{}", tag("groups"));
            for ((key, m), (name, want)) in r.by_group.iter().zip(by_group) {
                assert_eq!(key.to_string(), *name, "{}", tag("group order"));
                close(&m.selection_rate, &want["selection_rate"], &tag(name));
                close(&m.tpr, &want["tpr"], &tag(name));
                close(&m.fpr, &want["fpr"], &tag(name));
                close(&Metric::Value(m.count as f64), &want["count"], &tag(name));
                checked += 4;
            }
            let o = &g["overall"];
            close(
                &r.overall.selection_rate,
                &o["selection_rate"],
                &tag("overall sr"),
            );
            close(&r.overall.tpr, &o["tpr"], &tag("overall tpr"));
            close(&r.overall.fpr, &o["fpr"], &tag("overall fpr"));
            for (kind, key) in [
                (RateKind::SelectionRate, "selection_rate"),
                (RateKind::Tpr, "tpr"),
                (RateKind::Fpr, "fpr"),
                (RateKind::Count, "count"),
            ] {
                let d = r.difference(kind, Method::BetweenGroups);
                close(&d, &g["metricframe_difference"][key], &tag("mf difference"));
                let q = r.ratio(kind, Method::BetweenGroups);
                close(&q, &g["metricframe_ratio"][key], &tag("mf ratio"));
                checked += 2;
            }
            let disp = |k: DisparityKind| r.disparity(k).unwrap().value.clone();
            let bg = Method::BetweenGroups;
            close(
                &disp(DisparityKind::DemographicParityDifference(bg)),
                &g["demographic_parity_difference"],
                &tag("dpd"),
            );
            close(
                &disp(DisparityKind::DemographicParityRatio(bg)),
                &g["demographic_parity_ratio"],
                &tag("dpr"),
            );
            close(
                &disp(DisparityKind::EqualizedOddsDifference(bg, Agg::WorstCase)),
                &g["equalized_odds_difference"],
                &tag("eod"),
            );
            close(
                &disp(DisparityKind::EqualizedOddsRatio(bg, Agg::WorstCase)),
                &g["equalized_odds_ratio"],
                &tag("eor"),
            );
            let a = &g["aif360"];
            assert_eq!(a["privileged"], privileged);
            let s = r.aif360.as_ref().unwrap();
            close(&s.disparate_impact, &a["disparate_impact"], &tag("di"));
            close(
                &s.disparate_impact,
                &a["classic_api_disparate_impact"],
                &tag("di"),
            );
            close(
                &s.statistical_parity_difference,
                &a["statistical_parity_difference"],
                &tag("spd"),
            );
            close(
                &s.equal_opportunity_difference,
                &a["classic_api_equal_opportunity_difference"],
                &tag("aif eod"),
            );
            close(
                &s.average_odds_difference,
                &a["classic_api_average_odds_difference"],
                &tag("aod"),
            );
            let di = s.disparate_impact.value().unwrap();
            assert_eq!(s.four_fifths_violated, Some(di < 0.8));
            checked += 9;
        }
    }
    assert!(checked >= 186, "checked {checked} values");
}

/// AIF360's per-row definition: b = y_pred - y_true + 1, mu = mean(b),
/// theil = mean(ln((b/mu)^b) / mu).
fn theil_naive(y_true: &[u8], y_pred: &[u8]) -> f64 {
    let b: Vec<f64> = y_true
        .iter()
        .zip(y_pred)
        .map(|(t, p)| f64::from(*p) - f64::from(*t) + 1.0)
        .collect();
    let mu = b.iter().sum::<f64>() / b.len() as f64;
    b.iter().map(|b| ((b / mu).powf(*b)).ln() / mu).sum::<f64>() / b.len() as f64
}

#[test]
fn theil_index_matches_per_row_definition() {
    let preds = load_preds();
    for model in ["xgb", "lgbm", "lr"] {
        let input =
            FairnessInput::new(&preds.y_true, &preds.pred[model]).sensitive("sex", &preds.sex);
        let counts = GroupCounts::from_input(&input).unwrap();
        let got = theil_index(&counts.overall()).value().unwrap();
        let want = theil_naive(&preds.y_true, &preds.pred[model]);
        assert!((got - want).abs() < 1e-12, "{model}: {got} vs {want}");
        assert!(got > 0.0);
    }
}

#[test]
fn intersections_follow_multiindex_order_and_counts() {
    let preds = load_preds();
    let y = &preds.pred["xgb"];
    let input = FairnessInput::new(&preds.y_true, y)
        .sensitive("sex", &preds.sex)
        .sensitive("race", &preds.race);
    let counts = GroupCounts::from_input(&input).unwrap();
    assert_eq!(counts.len(), 10);
    let keys: Vec<&GroupKey> = counts.groups().map(|(k, _)| k).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys[0].to_string(), "(Female, Amer-Indian-Eskimo)");
    // Brute force the count of one intersection.
    let key = GroupKey(vec!["Male".into(), "Black".into()]);
    let c = counts.get(&key).unwrap();
    let want_tp = (0..preds.y_true.len())
        .filter(|&i| {
            preds.sex[i] == "Male" && preds.race[i] == "Black" && preds.y_true[i] == 1 && y[i] == 1
        })
        .count() as u64;
    let want_n = (0..preds.y_true.len())
        .filter(|&i| preds.sex[i] == "Male" && preds.race[i] == "Black")
        .count() as u64;
    assert_eq!(c.n_tp, want_tp);
    assert_eq!(c.count(), want_n);
    assert_eq!(counts.overall().count(), preds.y_true.len() as u64);
}

#[test]
fn to_overall_and_mean_aggregation_by_hand() {
    // Group A: tpr 1/2, fpr 1/2; group B: tpr 1, fpr 0. Overall tpr 2/3, fpr 1/3.
    let y_true = [1, 1, 0, 0, 1, 0];
    let y_pred = [1, 0, 1, 0, 1, 0];
    let g = ["A", "A", "A", "A", "B", "B"];
    let input = FairnessInput::new(&y_true, &y_pred).sensitive("g", &g);
    let r = FairnessReport::compute(&input, &FairnessConfig::default()).unwrap();
    let v = |k| r.disparity(k).unwrap().value.value().unwrap();
    let eps = 1e-15;
    // selection rates: A 2/4, B 1/2 -> 0 difference.
    assert!(
        v(DisparityKind::DemographicParityDifference(
            Method::BetweenGroups
        ))
        .abs()
            < eps
    );
    // tpr diff 1/2, fpr diff 1/2.
    let eo_mean = v(DisparityKind::EqualizedOddsDifference(
        Method::BetweenGroups,
        Agg::Mean,
    ));
    assert!((eo_mean - 0.5).abs() < eps);
    // to_overall tpr: max(|1/2-2/3|, |1-2/3|) = 1/3; fpr: max(|1/2-1/3|, |0-1/3|) = 1/3.
    let eo_to = v(DisparityKind::EqualizedOddsDifference(
        Method::ToOverall,
        Agg::WorstCase,
    ));
    assert!((eo_to - 1.0 / 3.0).abs() < eps);
    // to_overall ratio tpr: min(0.5/(2/3), (2/3)/1) = 2/3; fpr: B has 0 -> 0.
    let eor = v(DisparityKind::EqualizedOddsRatio(
        Method::ToOverall,
        Agg::Mean,
    ));
    assert!((eor - (2.0 / 3.0) / 2.0).abs() < eps);
    let eopp = v(DisparityKind::EqualOpportunityRatio(Method::BetweenGroups));
    assert!((eopp - 0.5).abs() < eps);
    // No privileged groups: no AIF360 measures.
    assert!(r.aif360.is_none());
    assert!(r.disparity(DisparityKind::DisparateImpact).is_none());
}

#[test]
fn zero_denominators_are_typed_undefined() {
    // Group B has no actual positives: its TPR is undefined, so are TPR disparities.
    let y_true = [1, 0, 0, 0];
    let y_pred = [1, 0, 1, 0];
    let g = ["A", "A", "B", "B"];
    let input = FairnessInput::new(&y_true, &y_pred).sensitive("g", &g);
    let r = FairnessReport::compute(&input, &FairnessConfig::default()).unwrap();
    match &r.by_group[1].1.tpr {
        Metric::Undefined {
            numerator_count,
            denominator_count,
            reason,
        } => {
            assert_eq!((*numerator_count, *denominator_count), (0, 0));
            assert!(reason.contains("true positive rate"), "{reason}");
        }
        v => panic!("expected undefined, got {v:?}"),
    }
    let eo = &r
        .disparity(DisparityKind::EqualizedOddsDifference(
            Method::BetweenGroups,
            Agg::WorstCase,
        ))
        .unwrap()
        .value;
    match eo {
        Metric::Undefined { reason, .. } => assert!(reason.contains("group B"), "{reason}"),
        v => panic!("expected undefined, got {v:?}"),
    }
    // Nobody selected: the selection-rate ratio is 0/0.
    let none = [0, 0, 0, 0];
    let input = FairnessInput::new(&y_true, &none).sensitive("g", &g);
    let r = FairnessReport::compute(&input, &FairnessConfig::default()).unwrap();
    let dpr = &r
        .disparity(DisparityKind::DemographicParityRatio(Method::BetweenGroups))
        .unwrap()
        .value;
    assert!(!dpr.is_defined());
    let dpd = &r
        .disparity(DisparityKind::DemographicParityDifference(
            Method::BetweenGroups,
        ))
        .unwrap()
        .value;
    assert_eq!(dpd.value(), Some(0.0));
}

#[test]
fn typed_errors_name_the_culprit() {
    let g = ["A", "B", "A"];
    let bad = [0, 2, 1];
    let ok = [0, 1, 1];
    let err =
        GroupCounts::from_input(&FairnessInput::new(&ok, &bad).sensitive("g", &g)).unwrap_err();
    match err {
        AiError::InvalidValue {
            column, row, value, ..
        } => {
            assert_eq!((column.as_str(), row, value.as_str()), ("y_pred", 1, "2"));
        }
        e => panic!("{e}"),
    }
    let fl = [0.0, 0.5, 1.0];
    let err =
        GroupCounts::from_input(&FairnessInput::new(&fl, &fl).sensitive("g", &g)).unwrap_err();
    assert!(
        matches!(err, AiError::InvalidValue { ref column, row: 1, .. } if column == "y_true"),
        "{err}"
    );
    let short = ["A", "B"];
    let err = GroupCounts::from_input(&FairnessInput::new(&ok, &ok).sensitive("race", &short))
        .unwrap_err();
    assert!(
        matches!(err, AiError::LengthMismatch { ref column, expected: 3, got: 2 } if column == "race"),
        "{err}"
    );
    let w = [1.0, f64::NAN, 1.0];
    let err = GroupCounts::from_input(&FairnessInput::new(&ok, &ok).sensitive("g", &g).weights(&w))
        .unwrap_err();
    assert!(
        matches!(err, AiError::NonFinite { ref column, row: 1, .. } if column == "sample_weight"),
        "{err}"
    );
    let w = [1.0, -1.0, 1.0];
    let err = GroupCounts::from_input(&FairnessInput::new(&ok, &ok).sensitive("g", &g).weights(&w))
        .unwrap_err();
    assert!(
        matches!(err, AiError::InvalidValue { ref column, .. } if column == "sample_weight"),
        "{err}"
    );
    let empty: [u8; 0] = [];
    let none: [&str; 0] = [];
    let err = GroupCounts::from_input(&FairnessInput::new(&empty, &empty).sensitive("g", &none))
        .unwrap_err();
    assert!(matches!(err, AiError::InvalidArgument(_)), "{err}");
    // A privileged value that never occurs: an empty group.
    let cfg = FairnessConfig {
        privileged: Some(PrivilegedGroups::single("g", "Z")),
        bootstrap: None,
    };
    let err = FairnessReport::compute(&FairnessInput::new(&ok, &ok).sensitive("g", &g), &cfg)
        .unwrap_err();
    assert!(
        matches!(err, AiError::EmptyGroup { ref group, .. } if group.contains("g = Z")),
        "{err}"
    );
    // A privileged condition on an unknown feature.
    let cfg = FairnessConfig {
        privileged: Some(PrivilegedGroups::single("sex", "M")),
        bootstrap: None,
    };
    let err = FairnessReport::compute(&FairnessInput::new(&ok, &ok).sensitive("g", &g), &cfg)
        .unwrap_err();
    assert!(
        matches!(err, AiError::MissingColumn { ref name, .. } if name == "sex"),
        "{err}"
    );
}

#[test]
fn weights_scale_metrics() {
    let y_true = [1, 1, 0, 0];
    let y_pred = [1, 0, 1, 0];
    let g = ["A", "A", "A", "A"];
    let w = [3.0, 1.0, 1.0, 0.0];
    let input = FairnessInput::new(&y_true, &y_pred)
        .sensitive("g", &g)
        .weights(&w)
        .score(&[0.9, 0.2, 0.6, 0.1]);
    let r = FairnessReport::compute(&input, &FairnessConfig::default()).unwrap();
    let m = &r.by_group[0].1;
    assert_eq!(m.tpr.value(), Some(0.75));
    assert_eq!(m.fpr.value(), Some(1.0));
    assert_eq!(m.selection_rate.value(), Some(0.8));
    assert_eq!(m.count, 4);
    let mean = m.mean_score.as_ref().unwrap().value().unwrap();
    assert!((mean - (2.7 + 0.2 + 0.6) / 5.0).abs() < 1e-15);
}

#[test]
fn bootstrap_is_seeded_and_brackets_plausibly() {
    let preds = load_preds();
    let input = FairnessInput::new(&preds.y_true, &preds.pred["xgb"]).sensitive("sex", &preds.sex);
    let enc = input.encode().unwrap();
    let kinds = [
        DisparityKind::DemographicParityDifference(Method::BetweenGroups),
        DisparityKind::DisparateImpact,
        DisparityKind::TheilIndex,
    ];
    let p = PrivilegedGroups::single("sex", "Male");
    let cfg = BootstrapConfig {
        replicates: 200,
        seed: 7,
        confidence: 0.9,
    };
    let a = bootstrap_intervals(&enc, &kinds, Some(&p), &cfg).unwrap();
    let b = bootstrap_intervals(&enc, &kinds, Some(&p), &cfg).unwrap();
    assert_eq!(a, b, "same seed, same intervals");
    let c =
        bootstrap_intervals(&enc, &kinds, Some(&p), &BootstrapConfig { seed: 8, ..cfg }).unwrap();
    assert_ne!(a, c, "another seed, other intervals");
    let counts = enc.counts();
    let part = p.partition(&counts).unwrap();
    for (k, i) in kinds.iter().zip(&a) {
        let i = i.unwrap();
        let est = k.evaluate(&counts, Some(&part)).value().unwrap();
        assert!(i.lower < i.upper, "{k:?} {i:?}");
        assert_eq!(i.defined_replicates, 200);
        // With 4,913 / 10,147 rows per group the 90% interval is narrow around the estimate.
        assert!(
            i.lower - 0.05 < est && est < i.upper + 0.05,
            "{k:?} {est} {i:?}"
        );
        assert!(i.upper - i.lower < 0.1, "{k:?} {i:?}");
    }
    let bad = BootstrapConfig {
        confidence: 1.0,
        ..cfg
    };
    assert!(bootstrap_intervals(&enc, &kinds, Some(&p), &bad).is_err());
    // Through the report: every disparity gets an interval.
    let cfg_r = FairnessConfig {
        privileged: Some(p),
        bootstrap: Some(BootstrapConfig {
            replicates: 50,
            seed: 1,
            confidence: 0.95,
        }),
    };
    let r = FairnessReport::compute(&input, &cfg_r).unwrap();
    assert!(r.disparities.iter().all(|d| d.interval.is_some()));
}

#[test]
fn merge_rejects_different_features_and_has_identity() {
    let y = [1, 0];
    let a =
        GroupCounts::from_input(&FairnessInput::new(&y, &y).sensitive("a", &["x", "y"])).unwrap();
    let b =
        GroupCounts::from_input(&FairnessInput::new(&y, &y).sensitive("b", &["x", "y"])).unwrap();
    let mut m = a.clone();
    assert!(m.merge(&b).is_err());
    let mut id = GroupCounts::default();
    id.merge(&a).unwrap();
    assert_eq!(id, a);
    let mut a2 = a.clone();
    a2.merge(&GroupCounts::default()).unwrap();
    assert_eq!(a2, a);
}

fn rows() -> impl Strategy<Value = Vec<(u8, u8, u8, u8, u8)>> {
    // (y_true, y_pred, group a, group b, weight in eighths)
    prop::collection::vec((0u8..2, 0u8..2, 0u8..3, 0u8..2, 0u8..17), 1..200)
}

proptest! {
    #[test]
    fn merging_chunks_equals_one_pass(rows in rows(), cuts in prop::collection::vec(0usize..200, 0..5)) {
        let yt: Vec<u8> = rows.iter().map(|r| r.0).collect();
        let yp: Vec<u8> = rows.iter().map(|r| r.1).collect();
        let a: Vec<String> = rows.iter().map(|r| format!("a{}", r.2)).collect();
        let b: Vec<String> = rows.iter().map(|r| format!("b{}", r.3)).collect();
        // Dyadic weights: sums are exact in any order, so equality is exact.
        let w: Vec<f64> = rows.iter().map(|r| f64::from(r.4) / 8.0).collect();
        let whole = GroupCounts::from_input(
            &FairnessInput::new(&yt, &yp).sensitive("a", &a).sensitive("b", &b).weights(&w),
        ).unwrap();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (rows.len() + 1)).collect();
        cuts.push(0);
        cuts.push(rows.len());
        cuts.sort_unstable();
        cuts.dedup();
        let mut merged = GroupCounts::default();
        for win in cuts.windows(2) {
            let (s, e) = (win[0], win[1]);
            if s == e { continue; }
            let part = GroupCounts::from_input(
                &FairnessInput::new(&yt[s..e], &yp[s..e])
                    .sensitive("a", &a[s..e])
                    .sensitive("b", &b[s..e])
                    .weights(&w[s..e]),
            ).unwrap();
            merged.merge(&part).unwrap();
        }
        prop_assert_eq!(&merged, &whole);
        // Same report from merged counts.
        let r1 = FairnessReport::from_counts(&merged, None, false).unwrap();
        let r2 = FairnessReport::from_counts(&whole, None, false).unwrap();
        prop_assert_eq!(r1, r2);
    }

    #[test]
    fn counts_are_a_commutative_monoid(x in prop::array::uniform8(0u64..1000), y in prop::array::uniform8(0u64..1000)) {
        let mk = |v: [u64; 8]| ConfusionCounts {
            tp: v[0] as f64, fp: v[1] as f64, tn: v[2] as f64, fn_: v[3] as f64,
            n_tp: v[4], n_fp: v[5], n_tn: v[6], n_fn: v[7], score_sum: 0.0,
        };
        let (a, b) = (mk(x), mk(y));
        let mut ab = a; ab.merge(&b);
        let mut ba = b; ba.merge(&a);
        prop_assert_eq!(ab, ba);
        let mut a0 = a; a0.merge(&ConfusionCounts::default());
        prop_assert_eq!(a0, a);
    }

    #[test]
    fn rates_are_probabilities_or_undefined(rows in rows()) {
        let yt: Vec<u8> = rows.iter().map(|r| r.0).collect();
        let yp: Vec<u8> = rows.iter().map(|r| r.1).collect();
        let a: Vec<String> = rows.iter().map(|r| format!("a{}", r.2)).collect();
        let r = FairnessReport::compute(&FairnessInput::new(&yt, &yp).sensitive("a", &a), &FairnessConfig::default()).unwrap();
        for (_, m) in &r.by_group {
            for v in [&m.selection_rate, &m.tpr, &m.fpr, &m.fnr, &m.tnr, &m.precision, &m.accuracy] {
                if let Some(v) = v.value() { prop_assert!((0.0..=1.0).contains(&v)); }
            }
            if let (Some(t), Some(f)) = (m.tpr.value(), m.fnr.value()) {
                prop_assert!((t + f - 1.0).abs() < 1e-12);
            }
        }
        for d in &r.disparities {
            if let Some(v) = d.value.value() { prop_assert!(v.is_finite() && v >= 0.0, "{} {}", d.name, v); }
        }
    }
}

/// fairlearn 0.15.0 on reference/preds.csv, lgbm predictions, sensitive features sex x race
/// (10 intersections), every method / aggregation: computed with the peer venv, e.g.
/// `fairlearn.metrics.equalized_odds_difference(y, p, sensitive_features=df[["sex", "race"]],
/// method="to_overall", agg="mean")`.
const FAIRLEARN_INTERSECTIONS: [(&str, f64); 16] = [
    ("dpd_between_groups", 0.3233082706766917),
    ("dpr_between_groups", 0.0),
    ("eod_between_groups_worst_case", 0.8),
    ("eor_between_groups_worst_case", 0.0),
    ("eod_between_groups_mean", 0.4621301775147929),
    ("eor_between_groups_mean", 0.0),
    ("eopd_between_groups", 0.8),
    ("eopr_between_groups", 0.0),
    ("dpd_to_overall", 0.2148074369189907),
    ("dpr_to_overall", 0.0),
    ("eod_to_overall_worst_case", 0.6662162162162162),
    ("eor_to_overall_worst_case", 0.0),
    ("eod_to_overall_mean", 0.36699895317853065),
    ("eor_to_overall_mean", 0.0),
    ("eopd_to_overall", 0.6662162162162162),
    ("eopr_to_overall", 0.0),
];

#[test]
fn golden_fairlearn_intersections_all_methods() {
    let preds = load_preds();
    let input = FairnessInput::new(&preds.y_true, &preds.pred["lgbm"])
        .sensitive("sex", &preds.sex)
        .sensitive("race", &preds.race);
    let r = FairnessReport::compute(&input, &FairnessConfig::default()).unwrap();
    assert_eq!(r.by_group.len(), 10);
    for (name, want) in FAIRLEARN_INTERSECTIONS {
        let m = if name.contains("to_overall") {
            Method::ToOverall
        } else {
            Method::BetweenGroups
        };
        let agg = if name.ends_with("_mean") {
            Agg::Mean
        } else {
            Agg::WorstCase
        };
        let kind = match &name[..name.find('_').unwrap()] {
            "dpd" => DisparityKind::DemographicParityDifference(m),
            "dpr" => DisparityKind::DemographicParityRatio(m),
            "eod" => DisparityKind::EqualizedOddsDifference(m, agg),
            "eor" => DisparityKind::EqualizedOddsRatio(m, agg),
            "eopd" => DisparityKind::EqualOpportunityDifference(m),
            "eopr" => DisparityKind::EqualOpportunityRatio(m),
            other => panic!("{other}"),
        };
        close(
            &r.disparity(kind).unwrap().value,
            &serde_json::json!(want),
            name,
        );
    }
}
