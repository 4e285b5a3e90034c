//! LIME tabular: discretiser, sampling, surrogate fit, reproducibility, bad input, and parity
//! with lime 0.2.0.1 on the reference XGBoost model.

use std::collections::BTreeMap;

use attest_ai::explain::lime::{FeatureSelection, LimeConfig, LimeExplainer};
use attest_ai::model::TreeEnsemble;
use attest_ai::{AiError, Matrix, Model, Output};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

/// A known linear function of binary-ish inputs: y = 0.2 + Σ c_j x_j.
struct Linear {
    names: Vec<String>,
    coef: Vec<f64>,
}

impl Model for Linear {
    fn feature_names(&self) -> &[String] {
        &self.names
    }
    fn predict(&self, x: &Matrix, _output: Output) -> Result<Vec<f64>, AiError> {
        self.check_width(x)?;
        Ok(x.rows()
            .map(|r| 0.2 + r.iter().zip(&self.coef).map(|(a, b)| a * b).sum::<f64>())
            .collect())
    }
}

fn read_csv(path: &str, cols: usize, max_rows: usize) -> Matrix {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    let mut data = Vec::new();
    let mut n = 0;
    for rec in rdr.records().take(max_rows) {
        let rec = rec.unwrap();
        data.extend(rec.iter().take(cols).map(|v| v.parse::<f64>().unwrap()));
        n += 1;
    }
    Matrix::new(data, n, cols).unwrap()
}

fn adult_config(names: &[String]) -> LimeConfig {
    let enc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{DATA}/reference/feature_encoding.json")).unwrap(),
    )
    .unwrap();
    let mut categorical_features = Vec::new();
    let mut categorical_names = BTreeMap::new();
    for c in enc["categorical"].as_array().unwrap() {
        let c = c.as_str().unwrap();
        let j = names.iter().position(|n| n == c).unwrap();
        categorical_features.push(j);
        let codes = enc["categorical_codes"][c]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        categorical_names.insert(j, codes);
    }
    LimeConfig {
        categorical_features,
        categorical_names,
        ..LimeConfig::default()
    }
}

fn adult() -> (TreeEnsemble, Matrix, Matrix, LimeConfig) {
    let model =
        attest_ai::model::xgboost::load(format!("{DATA}/reference/xgb_adult.json")).unwrap();
    let train = read_csv(
        &format!("{DATA}/reference/X_train_encoded.csv"),
        13,
        usize::MAX,
    );
    let x = read_csv(&format!("{DATA}/reference/X_test_encoded.csv"), 13, 10);
    let cfg = adult_config(model.feature_names());
    (model, train, x, cfg)
}

/// Parity with lime 0.2.0.1 (`lime_xgb_10.json`: 5,000 samples, quartile discretiser, 10
/// features, `predict_proba[:, 1]`) on test rows 0..9.
///
/// Random streams differ, so the reference is one draw from the sampling distribution and
/// ours another. Tolerances come from the data (8 of our seeds, measured when this test was
/// written): a weight's spread over our seeds is 0.01-0.07 wide (widest for
/// `capital_loss <= 0.00`, whose other bin holds 5% of the training data); the reference
/// falls inside our 8-seed envelope or at most 0.022 outside it for every term with
/// |weight| >= 0.045. Checked here:
/// - the strongest term: same label and sign in every row;
/// - every reference term with |weight| >= 0.045: in our seed-0 top 10 with the same sign, and
///   inside our 8-seed envelope widened by 0.03;
/// - each of the reference's top 3 labels is in the top 5 of at least one of our 8 seeds
///   (`capital_loss <= 0.00` ranks 2nd-9th depending on the seed);
/// - weighted R² within 0.06 and local prediction within 0.1 of the reference (observed
///   at most 0.045 and 0.07).
///
/// Weaker terms are not compared: they sit at the selection threshold. One of them is off
/// beyond sampling error and left unexplained: `education=10th` in row 4 is +0.041 in the
/// reference but between -0.034 and +0.001 over 20 of our seeds.
#[test]
fn parity_with_lime_on_xgboost() {
    let (model, train, x, cfg) = adult();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{DATA}/reference/lime_xgb_10.json")).unwrap(),
    )
    .unwrap();
    let runs: Vec<_> = (0..8)
        .map(|seed| {
            LimeExplainer::new(
                &model,
                &train,
                LimeConfig {
                    seed,
                    ..cfg.clone()
                },
            )
            .unwrap()
            .explain(&x)
            .unwrap()
        })
        .collect();
    for i in 0..10 {
        let r = &reference[i];
        let ours = &runs[0][i];
        assert_eq!(ours.terms.len(), 10);
        assert_eq!(
            ours.prediction,
            model.predict_row(x.row(i), Output::Probability).unwrap()
        );
        let ref_terms: Vec<(String, f64)> = r["explanation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[0].as_str().unwrap().to_string(), e[1].as_f64().unwrap()))
            .collect();
        assert_eq!(
            ours.terms[0].label, ref_terms[0].0,
            "row {i}: strongest term"
        );
        assert_eq!(ours.terms[0].weight.signum(), ref_terms[0].1.signum());
        for (l, _) in &ref_terms[..3] {
            let in_top5 = runs
                .iter()
                .any(|run| run[i].terms[..5].iter().any(|t| &t.label == l));
            assert!(in_top5, "row {i}: {l} is in no top 5 of our 8 seeds");
        }
        for (l, w) in ref_terms.iter().filter(|(_, w)| w.abs() >= 0.045) {
            let t = ours.terms.iter().find(|t| &t.label == l);
            let t = t.unwrap_or_else(|| panic!("row {i}: {l} ({w}) missing from ours"));
            assert_eq!(t.weight.signum(), w.signum(), "row {i}: {l} sign");
            let seen: Vec<f64> = runs
                .iter()
                .filter_map(|run| {
                    run[i]
                        .terms
                        .iter()
                        .find(|t| &t.label == l)
                        .map(|t| t.weight)
                })
                .collect();
            let lo = seen.iter().cloned().fold(f64::INFINITY, f64::min) - 0.03;
            let hi = seen.iter().cloned().fold(f64::NEG_INFINITY, f64::max) + 0.03;
            assert!(
                (lo..=hi).contains(w),
                "row {i}: {l} ref {w} outside [{lo}, {hi}]"
            );
        }
        let (rs, rl) = (
            r["score"].as_f64().unwrap(),
            r["local_pred"].as_f64().unwrap(),
        );
        assert!(
            (ours.score - rs).abs() <= 0.06,
            "row {i}: score {} vs {rs}",
            ours.score
        );
        assert!(
            (ours.local_prediction - rl).abs() <= 0.1,
            "row {i}: local prediction {} vs {rl}",
            ours.local_prediction
        );
        let sum: f64 = ours.terms.iter().map(|t| t.weight).sum();
        assert!((ours.intercept + sum - ours.local_prediction).abs() < 1e-12);
    }
}

#[test]
fn quartile_discretiser_matches_lime() {
    let names: Vec<String> = ["a", "g", "c"].iter().map(|s| s.to_string()).collect();
    let model = Linear {
        names,
        coef: vec![1.0, 1.0, 1.0],
    };
    // a = 1..=8 (quartiles 2.75, 4.5, 6.25); g mostly 0 (quartiles collapse to one border);
    // c categorical.
    let rows: Vec<Vec<f64>> = (1..=8)
        .map(|i| vec![i as f64, if i == 8 { 500.0 } else { 0.0 }, (i % 3) as f64])
        .collect();
    let train = Matrix::from_rows(&rows).unwrap();
    let cfg = LimeConfig {
        categorical_features: vec![2],
        ..LimeConfig::default()
    };
    let exp = LimeExplainer::new(&model, &train, cfg).unwrap();
    let a = exp.bins(0).unwrap();
    assert_eq!(a.borders, vec![2.75, 4.5, 6.25]);
    assert_eq!(
        a.labels,
        [
            "a <= 2.75",
            "2.75 < a <= 4.50",
            "4.50 < a <= 6.25",
            "a > 6.25"
        ]
    );
    assert_eq!(a.means, vec![1.5, 3.5, 5.5, 7.5]);
    assert!((a.stds[0] - (0.5 + 1e-11)).abs() < 1e-15);
    assert_eq!(a.mins, vec![1.0, 2.75, 4.5, 6.25]);
    assert_eq!(a.maxs, vec![2.75, 4.5, 6.25, 8.0]);
    assert_eq!(
        (a.bin(2.75), a.bin(2.76), a.bin(100.0), a.bin(-1.0)),
        (0, 1, 3, 0)
    );
    let g = exp.bins(1).unwrap();
    assert_eq!(g.borders, vec![0.0]);
    assert_eq!(g.labels, ["g <= 0.00", "g > 0.00"]);
    assert!(exp.bins(2).is_none());
    assert!((exp.kernel_width() - 0.75 * 3f64.sqrt()).abs() < 1e-15);
}

/// Binary categorical features and a linear model: the interpretable representation is the
/// model's input up to sign, so LIME recovers the coefficients (ridge shrinkage is tiny with
/// 5,000 samples) with R² near 1.
#[test]
fn recovers_a_linear_model_on_binary_features() {
    let p = 8;
    let coef = vec![0.5, -0.3, 0.2, 0.0, -0.1, 0.05, 0.4, -0.45];
    let model = Linear {
        names: (0..p).map(|j| format!("x{j}")).collect(),
        coef: coef.clone(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let rows: Vec<Vec<f64>> = (0..2000)
        .map(|_| (0..p).map(|_| f64::from(rng.gen_bool(0.5) as u8)).collect())
        .collect();
    let train = Matrix::from_rows(&rows).unwrap();
    let x = vec![1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0];
    for (selection, k) in [(FeatureSelection::Auto, 10), (FeatureSelection::Auto, 4)] {
        let cfg = LimeConfig {
            categorical_features: (0..p).collect(),
            num_features: k,
            feature_selection: selection,
            ..LimeConfig::default()
        };
        let exp = LimeExplainer::new(&model, &train, cfg).unwrap();
        let e = exp.explain_row(&x).unwrap();
        assert_eq!(e.terms.len(), k.min(p));
        assert!(e.score > 0.99 || k < p, "score {}", e.score);
        for t in &e.terms {
            let expect = if x[t.feature] == 1.0 {
                coef[t.feature]
            } else {
                -coef[t.feature]
            };
            let tol = if k < p { 0.08 } else { 0.01 };
            assert!(
                (t.weight - expect).abs() < tol,
                "k={k} {}: {} vs {expect}",
                t.label,
                t.weight
            );
        }
        if k == 4 {
            // Forward selection (k <= 6) finds the four largest |coefficients|.
            let mut got: Vec<usize> = e.terms.iter().map(|t| t.feature).collect();
            got.sort_unstable();
            assert_eq!(got, vec![0, 1, 6, 7]);
        } else {
            assert!((e.local_prediction - e.prediction).abs() < 0.01);
        }
        assert_eq!(e.terms[0].label, "x0=1");
        let ex = e.to_explanation(p);
        for t in &e.terms {
            assert_eq!(ex.values[t.feature], t.weight);
        }
        assert_eq!(ex.base_value, e.intercept);
    }
}

#[test]
fn same_seed_same_output_and_rows_are_independent() {
    let (model, train, x, cfg) = adult();
    let exp = LimeExplainer::new(&model, &train, cfg.clone()).unwrap();
    let a = exp.explain(&x.slice_rows(0, 3)).unwrap();
    let b = exp.explain(&x.slice_rows(0, 3)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a[2], exp.explain_row(x.row(2)).unwrap());
    let other = LimeExplainer::new(&model, &train, LimeConfig { seed: 99, ..cfg }).unwrap();
    assert_ne!(other.explain_row(x.row(0)).unwrap(), a[0]);
}

#[test]
fn bad_input_is_rejected_with_typed_errors() {
    let model = Linear {
        names: vec!["a".into(), "b".into()],
        coef: vec![1.0, 2.0],
    };
    let train = Matrix::from_rows(&[vec![0.0, 1.0], vec![1.0, 0.0], vec![2.0, 1.0]]).unwrap();
    let new = |cfg: LimeConfig| LimeExplainer::new(&model, &train, cfg);
    let k0 = LimeConfig {
        num_features: 0,
        ..LimeConfig::default()
    };
    assert!(matches!(new(k0), Err(AiError::InvalidArgument(_))));
    let s1 = LimeConfig {
        num_samples: 1,
        ..LimeConfig::default()
    };
    assert!(matches!(new(s1), Err(AiError::InvalidArgument(_))));
    let w0 = LimeConfig {
        kernel_width: Some(0.0),
        ..LimeConfig::default()
    };
    assert!(matches!(new(w0), Err(AiError::InvalidArgument(_))));
    let cat = LimeConfig {
        categorical_features: vec![2],
        ..LimeConfig::default()
    };
    assert!(matches!(new(cat), Err(AiError::InvalidArgument(_))));
    let empty = Matrix::new(vec![], 0, 2).unwrap();
    assert!(matches!(
        LimeExplainer::new(&model, &empty, LimeConfig::default()),
        Err(AiError::InvalidArgument(_))
    ));
    let wide = Matrix::from_rows(&[vec![0.0, 1.0, 2.0]]).unwrap();
    assert!(matches!(
        LimeExplainer::new(&model, &wide, LimeConfig::default()),
        Err(AiError::FeatureCount {
            expected: 2,
            got: 3
        })
    ));
    let nan = Matrix::from_rows(&[vec![0.0, f64::NAN]]).unwrap();
    assert!(matches!(
        LimeExplainer::new(&model, &nan, LimeConfig::default()),
        Err(AiError::NonFinite { .. })
    ));
    let exp = new(LimeConfig::default()).unwrap();
    match exp.explain_row(&[f64::NAN, 1.0]) {
        Err(AiError::NonFinite { column, .. }) => assert_eq!(column, "a"),
        other => panic!("expected NonFinite, got {other:?}"),
    }
    assert!(matches!(
        exp.explain_row(&[1.0]),
        Err(AiError::FeatureCount {
            expected: 2,
            got: 1
        })
    ));
    let xm = Matrix::from_rows(&[vec![1.0, 1.0], vec![f64::INFINITY, 0.0]]).unwrap();
    assert!(matches!(
        exp.explain(&xm),
        Err(AiError::NonFinite { row: 1, .. })
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]

    /// Structural invariants for any linear model, row and seed: min(k, M) terms sorted by
    /// |weight|, local prediction = intercept + Σ weights, R² <= 1, the row's own prediction.
    #[test]
    fn invariants(seed in 0u64..1000, k in 1usize..8, coefs in proptest::collection::vec(-1.0f64..1.0, 5)) {
        let model = Linear { names: (0..5).map(|j| format!("x{j}")).collect(), coef: coefs };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rows: Vec<Vec<f64>> = (0..200).map(|_| (0..5).map(|_| rng.gen_range(0.0..10.0)).collect()).collect();
        let train = Matrix::from_rows(&rows).unwrap();
        let cfg = LimeConfig { num_samples: 500, num_features: k, seed, categorical_features: vec![], ..LimeConfig::default() };
        let exp = LimeExplainer::new(&model, &train, cfg).unwrap();
        let x: Vec<f64> = (0..5).map(|_| rng.gen_range(0.0..10.0)).collect();
        let e = exp.explain_row(&x).unwrap();
        proptest::prop_assert_eq!(e.terms.len(), k.min(5));
        for w in e.terms.windows(2) {
            proptest::prop_assert!(w[0].weight.abs() >= w[1].weight.abs());
        }
        let sum: f64 = e.terms.iter().map(|t| t.weight).sum();
        proptest::prop_assert!((e.intercept + sum - e.local_prediction).abs() < 1e-9);
        proptest::prop_assert!(e.score <= 1.0 + 1e-12);
        proptest::prop_assert_eq!(e.prediction, model.predict_row(&x, Output::Probability).unwrap());
    }
}
