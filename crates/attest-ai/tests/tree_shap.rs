//! TreeSHAP (path-dependent fast + classic, interventional) against shap's reference values,
//! brute-force Shapley enumeration and additivity; linear SHAP additivity.

use attest_ai::explain::linear::LinearExplainer;
use attest_ai::explain::tree::{Algorithm, InterventionalTreeExplainer, TreeExplainer};
use attest_ai::model::linear::LinearModel;
use attest_ai::model::tree::{MissingKind, Node, SplitRule, Tree, TreeEnsemble};
use attest_ai::model::{lightgbm, xgboost, Link};
use attest_ai::{AiError, Matrix, Model, Output};
use proptest::prelude::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

fn reference(name: &str) -> String {
    format!("{DATA}/reference/{name}")
}

/// Reads a numeric CSV, dropping the listed columns. Returns header and matrix.
fn read_csv(name: &str, drop: &[&str]) -> (Vec<String>, Matrix) {
    let mut rdr = csv::Reader::from_path(reference(name)).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(str::to_string).collect();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| !drop.contains(&header[i].as_str()))
        .collect();
    let mut data = Vec::new();
    let mut n = 0;
    for rec in rdr.records() {
        let rec = rec.unwrap();
        for &i in &keep {
            data.push(rec[i].parse::<f64>().unwrap());
        }
        n += 1;
    }
    let names = keep.iter().map(|&i| header[i].clone()).collect();
    (names, Matrix::new(data, n, keep.len()).unwrap())
}

fn xgb() -> TreeEnsemble {
    xgboost::load(reference("xgb_adult.json")).unwrap()
}

fn lgbm() -> TreeEnsemble {
    lightgbm::load(reference("lgbm_adult.txt")).unwrap()
}

fn x_test() -> Matrix {
    read_csv("X_test_encoded.csv", &["adult_row"]).1
}

#[test]
fn xgb_fast_matches_shap_reference_values() {
    let model = xgb();
    let (names, x) = read_csv("shap_xgb_100_X.csv", &["adult_row"]);
    assert_eq!(names, model.feature_names);
    let (_, expected) = read_csv("shap_xgb_100.csv", &[]);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference("shap_xgb_meta.json")).unwrap())
            .unwrap();
    let base = meta["expected_value"].as_f64().unwrap();
    for algorithm in [Algorithm::Fast, Algorithm::Classic] {
        let ex = TreeExplainer::with_algorithm(&model, algorithm).unwrap();
        assert!(
            (ex.base_value() - base).abs() < 1e-5,
            "{algorithm:?}: base {} vs shap {base}",
            ex.base_value()
        );
        let got = ex.explain(&x).unwrap();
        assert_eq!(got.len(), 100);
        let mut max_diff = 0.0f64;
        for (i, e) in got.iter().enumerate() {
            for (j, (a, b)) in e.values.iter().zip(expected.row(i)).enumerate() {
                let d = (a - b).abs();
                assert!(
                    d < 1e-5,
                    "{algorithm:?} row {i} feature {j}: {a} vs shap {b}"
                );
                max_diff = max_diff.max(d);
            }
        }
        eprintln!("{algorithm:?}: max |diff| vs shap = {max_diff:e}");
    }
}

#[test]
fn xgb_fast_equals_classic_and_is_additive_on_all_test_rows() {
    let model = xgb();
    let x = x_test();
    let fast = TreeExplainer::new(&model).unwrap().explain(&x).unwrap();
    let classic = TreeExplainer::with_algorithm(&model, Algorithm::Classic)
        .unwrap()
        .explain(&x)
        .unwrap();
    let margins = model.predict(&x, Output::Margin).unwrap();
    assert_eq!(fast.len(), x.n_rows());
    for (i, (f, c)) in fast.iter().zip(&classic).enumerate() {
        f.check_additivity(i, 1e-9).unwrap();
        c.check_additivity(i, 1e-9).unwrap();
        assert!((f.prediction - margins[i]).abs() < 1e-12);
        for (a, b) in f.values.iter().zip(&c.values) {
            assert!((a - b).abs() < 1e-9, "row {i}: fast {a} vs classic {b}");
        }
    }
}

#[test]
fn lgbm_fast_equals_classic_and_is_additive_on_all_test_rows() {
    let model = lgbm();
    let x = x_test();
    let fast = TreeExplainer::new(&model).unwrap().explain(&x).unwrap();
    let classic = TreeExplainer::with_algorithm(&model, Algorithm::Classic)
        .unwrap()
        .explain(&x)
        .unwrap();
    for (i, (f, c)) in fast.iter().zip(&classic).enumerate() {
        f.check_additivity(i, 1e-9).unwrap();
        c.check_additivity(i, 1e-9).unwrap();
        for (a, b) in f.values.iter().zip(&c.values) {
            assert!((a - b).abs() < 1e-9, "row {i}: fast {a} vs classic {b}");
        }
    }
}

#[test]
fn missing_values_follow_default_directions_and_stay_additive() {
    for model in [xgb(), lgbm()] {
        let x = x_test().slice_rows(0, 50);
        let mut data = x.as_slice().to_vec();
        for (k, v) in data.iter_mut().enumerate() {
            if k % 3 == 0 {
                *v = f64::NAN;
            }
        }
        let x = Matrix::new(data, 50, 13).unwrap();
        let fast = TreeExplainer::new(&model).unwrap();
        let classic = TreeExplainer::with_algorithm(&model, Algorithm::Classic).unwrap();
        for i in 0..50 {
            let f = fast.explain_row(x.row(i)).unwrap();
            let c = classic.explain_row(x.row(i)).unwrap();
            f.check_additivity(i, 1e-9).unwrap();
            for (a, b) in f.values.iter().zip(&c.values) {
                assert!((a - b).abs() < 1e-9);
            }
        }
    }
}

#[test]
fn feature_count_mismatch_is_rejected() {
    let model = xgb();
    let ex = TreeExplainer::new(&model).unwrap();
    let bad = Matrix::new(vec![0.0; 24], 2, 12).unwrap();
    assert!(matches!(
        ex.explain(&bad),
        Err(AiError::FeatureCount {
            expected: 13,
            got: 12
        })
    ));
    assert!(matches!(
        ex.explain_row(&[1.0; 14]),
        Err(AiError::FeatureCount {
            expected: 13,
            got: 14
        })
    ));
    let bg = Matrix::new(vec![0.0; 10], 1, 10).unwrap();
    assert!(matches!(
        InterventionalTreeExplainer::new(&model, &bg),
        Err(AiError::FeatureCount { .. })
    ));
    let empty = Matrix::new(vec![], 0, 13).unwrap();
    assert!(matches!(
        InterventionalTreeExplainer::new(&model, &empty),
        Err(AiError::InvalidArgument(_))
    ));
}

// ------------------------------------------------------------------------------------------
// Brute force oracles on small random trees
// ------------------------------------------------------------------------------------------

fn factorial(n: usize) -> f64 {
    (1..=n).map(|k| k as f64).product()
}

/// Exact Shapley values of the set function `v` over `m` players.
fn brute_shapley(m: usize, v: impl Fn(u32) -> f64) -> Vec<f64> {
    let vals: Vec<f64> = (0..1u32 << m).map(&v).collect();
    (0..m)
        .map(|j| {
            let mut phi = 0.0;
            for s in 0..1u32 << m {
                if s & (1 << j) != 0 {
                    continue;
                }
                let k = s.count_ones() as usize;
                let w = factorial(k) * factorial(m - k - 1) / factorial(m);
                phi += w * (vals[(s | 1 << j) as usize] - vals[s as usize]);
            }
            phi
        })
        .collect()
}

/// Path-dependent value: E[f | x_S] following covers for features outside S.
fn cond_expectation(t: &Tree, i: usize, x: &[f64], s: u32) -> f64 {
    let n = &t.nodes[i];
    if n.is_leaf() {
        return n.value;
    }
    if s & (1 << n.feature) != 0 {
        return cond_expectation(t, n.next(x) as usize, x, s);
    }
    let (l, r) = (&t.nodes[n.left as usize], &t.nodes[n.right as usize]);
    (l.cover * cond_expectation(t, n.left as usize, x, s)
        + r.cover * cond_expectation(t, n.right as usize, x, s))
        / n.cover
}

/// A random tree over `m` features (values in 0..4), depth up to `depth`; covers are positive
/// and need not add up (as with XGBoost's float hessian sums).
fn random_tree(
    rng: &mut rand_chacha::ChaCha8Rng,
    m: usize,
    depth: usize,
    lgbm_style: bool,
) -> Tree {
    use rand::Rng;
    fn grow(
        rng: &mut rand_chacha::ChaCha8Rng,
        nodes: &mut Vec<Node>,
        m: usize,
        depth: usize,
        lgbm_style: bool,
    ) -> u32 {
        let me = nodes.len();
        let leaf = depth == 0 || rng.gen_bool(0.2);
        let cover = rng.gen_range(1.0..100.0);
        let rule = if lgbm_style {
            SplitRule::LessOrEqual {
                threshold: rng.gen_range(0..4) as f64 + 0.5,
                missing: [MissingKind::None, MissingKind::Zero, MissingKind::NaN]
                    [rng.gen_range(0..3)],
            }
        } else {
            SplitRule::LessThanF32 {
                threshold: rng.gen_range(0..4) as f32 + 0.5,
            }
        };
        nodes.push(Node {
            feature: rng.gen_range(0..m) as u32,
            rule,
            left: Node::NONE,
            right: Node::NONE,
            default_left: rng.gen_bool(0.5),
            value: rng.gen_range(-2.0..2.0),
            cover,
        });
        if !leaf {
            let l = grow(rng, nodes, m, depth - 1, lgbm_style);
            let r = grow(rng, nodes, m, depth - 1, lgbm_style);
            nodes[me].left = l;
            nodes[me].right = r;
        }
        me as u32
    }
    let mut nodes = Vec::new();
    grow(rng, &mut nodes, m, depth, lgbm_style);
    Tree { nodes }
}

fn random_ensemble(seed: u64, m: usize, n_trees: usize, depth: usize) -> TreeEnsemble {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let lgbm_style = seed.is_multiple_of(2);
    TreeEnsemble {
        feature_names: (0..m).map(|i| format!("f{i}")).collect(),
        trees: (0..n_trees)
            .map(|_| random_tree(&mut rng, m, depth, lgbm_style))
            .collect(),
        base_margin: 0.25,
        link: Link::Logistic,
    }
}

fn random_row(seed: u64, m: usize) -> Vec<f64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9);
    (0..m)
        .map(|_| {
            if rng.gen_bool(0.1) {
                f64::NAN
            } else {
                rng.gen_range(0..5) as f64
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn path_dependent_matches_brute_force(seed in any::<u64>(), m in 1usize..6, depth in 1usize..7) {
        let ens = random_ensemble(seed, m, 3, depth);
        let row = random_row(seed, m);
        let expect = brute_shapley(m, |s| {
            ens.trees.iter().map(|t| cond_expectation(t, 0, &row, s)).sum::<f64>()
        });
        for algorithm in [Algorithm::Fast, Algorithm::Classic] {
            let ex = TreeExplainer::with_algorithm(&ens, algorithm).unwrap();
            let e = ex.explain_row(&row).unwrap();
            // Relative to the magnitudes involved: random leaves can make the base value and
            // the attributions large (hundreds) and nearly cancel, and f64 sums then carry
            // absolute rounding of ~1e-13 per unit of magnitude.
            let scale = 1.0 + e.base_value.abs() + e.values.iter().map(|v| v.abs()).sum::<f64>();
            e.check_additivity(0, 1e-9 * scale).unwrap();
            for (a, b) in e.values.iter().zip(&expect) {
                prop_assert!((a - b).abs() < 1e-9 * scale, "{:?}: {} vs brute {}", algorithm, a, b);
            }
        }
    }

    #[test]
    fn interventional_matches_brute_force(seed in any::<u64>(), m in 1usize..6, depth in 1usize..6, n_bg in 1usize..5) {
        let ens = random_ensemble(seed, m, 3, depth);
        let row = random_row(seed, m);
        let bg_rows: Vec<Vec<f64>> = (0..n_bg).map(|k| random_row(seed.wrapping_add(k as u64 + 1), m)).collect();
        let bg = Matrix::from_rows(&bg_rows).unwrap();
        let expect = brute_shapley(m, |s| {
            bg_rows.iter().map(|b| {
                let h: Vec<f64> = (0..m).map(|j| if s & (1 << j) != 0 { row[j] } else { b[j] }).collect();
                ens.margin_row(&h)
            }).sum::<f64>() / n_bg as f64
        });
        let ex = InterventionalTreeExplainer::new(&ens, &bg).unwrap();
        let e = ex.explain_row(&row).unwrap();
        let scale = 1.0 + e.base_value.abs() + e.values.iter().map(|v| v.abs()).sum::<f64>();
        e.check_additivity(0, 1e-9 * scale).unwrap();
        for (a, b) in e.values.iter().zip(&expect) {
            prop_assert!((a - b).abs() < 1e-9 * scale, "{} vs brute {}", a, b);
        }
    }
}

#[test]
fn deep_tree_falls_back_to_classic_and_still_matches() {
    // A 22-deep chain alternating over 22 distinct features exceeds the table cap.
    let m = 22;
    let leaf = |value: f64| Node {
        feature: 0,
        rule: SplitRule::LessThanF32 { threshold: 0.5 },
        left: Node::NONE,
        right: Node::NONE,
        default_left: false,
        value,
        cover: 1.0,
    };
    let mut nodes = Vec::new();
    for d in 0..m {
        // Internal node 2d: left = leaf 2d+1, right = next internal node (or the last leaf).
        let me = nodes.len() as u32;
        nodes.push(Node {
            feature: d as u32,
            rule: SplitRule::LessThanF32 { threshold: 0.5 },
            left: me + 1,
            right: me + 2,
            default_left: false,
            value: 0.0,
            cover: (m - d) as f64 + 1.0,
        });
        nodes.push(leaf(d as f64 - 3.0));
    }
    nodes.push(leaf(7.0));
    let ens = TreeEnsemble {
        feature_names: (0..m).map(|i| format!("f{i}")).collect(),
        trees: vec![Tree { nodes }],
        base_margin: 0.0,
        link: Link::Identity,
    };
    ens.validate("chain").unwrap();
    let row: Vec<f64> = (0..m).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect();
    let fast = TreeExplainer::new(&ens).unwrap().explain_row(&row).unwrap();
    let classic = TreeExplainer::with_algorithm(&ens, Algorithm::Classic)
        .unwrap()
        .explain_row(&row)
        .unwrap();
    fast.check_additivity(0, 1e-9).unwrap();
    assert_eq!(fast.values, classic.values);
}

#[test]
fn interventional_on_real_model_matches_brute_force_and_is_additive() {
    let model = xgb();
    let x = x_test();
    let (_, train) = read_csv("X_train_encoded.csv", &[]);
    let bg = train.slice_rows(0, 8);
    let ex = InterventionalTreeExplainer::new(&model, &bg).unwrap();
    let m = 13;
    for i in [0usize, 7] {
        let row = x.row(i);
        let e = ex.explain_row(row).unwrap();
        e.check_additivity(i, 1e-9).unwrap();
        let expect = brute_shapley(m, |s| {
            bg.rows()
                .map(|b| {
                    let h: Vec<f64> = (0..m)
                        .map(|j| if s & (1 << j) != 0 { row[j] } else { b[j] })
                        .collect();
                    model.margin_row(&h)
                })
                .sum::<f64>()
                / bg.n_rows() as f64
        });
        for (a, b) in e.values.iter().zip(&expect) {
            assert!((a - b).abs() < 1e-9, "row {i}: {a} vs brute {b}");
        }
    }
    // Batch API agrees with the row API and stays additive.
    let batch = ex.explain(&x.slice_rows(0, 20)).unwrap();
    for (i, e) in batch.iter().enumerate() {
        e.check_additivity(i, 1e-9).unwrap();
        assert_eq!(e, &ex.explain_row(x.row(i)).unwrap());
    }
}

#[test]
fn linear_shap_is_additive_and_groups_one_hot_columns() {
    let model = LinearModel::from_sklearn_json(
        reference("logreg_adult.json"),
        reference("feature_encoding.json"),
    )
    .unwrap();
    let (_, train) = read_csv("X_train_encoded.csv", &[]);
    let x = x_test();
    let ex = LinearExplainer::new(&model, &train).unwrap();
    let exps = ex.explain(&x).unwrap();
    let margins = model.predict(&x, Output::Margin).unwrap();
    for (i, e) in exps.iter().enumerate() {
        e.check_additivity(i, 1e-9).unwrap();
        assert!((e.prediction - margins[i]).abs() < 1e-12);
    }
    // Mean attribution over the background itself is zero for every feature.
    let bg = ex.explain(&train).unwrap();
    for j in 0..13 {
        let mean: f64 = bg.iter().map(|e| e.values[j]).sum::<f64>() / bg.len() as f64;
        assert!(mean.abs() < 1e-9, "feature {j}: mean attribution {mean}");
    }
    // Numeric feature: phi = coef * (x - mean_bg) / scale.
    let logreg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference("logreg_adult.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = logreg["feature_names_out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let k = names.iter().position(|n| *n == "num__age").unwrap();
    let coef = logreg["coef"].as_array().unwrap()[k].as_f64().unwrap();
    let scale = logreg["scaler"]["scale"][0].as_f64().unwrap();
    let mean_age: f64 = train.rows().map(|r| r[0]).sum::<f64>() / train.n_rows() as f64;
    let row = x.row(3);
    let expect = coef * (row[0] - mean_age) / scale;
    assert!((exps[3].values[0] - expect).abs() < 1e-9);
    // Categorical feature (sex, column 8): sum over its two one-hot columns.
    let kf = names.iter().position(|n| *n == "cat__sex_Female").unwrap();
    let km = names.iter().position(|n| *n == "cat__sex_Male").unwrap();
    let (cf, cm) = (
        logreg["coef"][kf].as_f64().unwrap(),
        logreg["coef"][km].as_f64().unwrap(),
    );
    let p_male = train.rows().filter(|r| r[8] == 1.0).count() as f64 / train.n_rows() as f64;
    let (of, om) = if row[8] == 1.0 {
        (0.0, 1.0)
    } else {
        (1.0, 0.0)
    };
    let expect = cf * (of - (1.0 - p_male)) + cm * (om - p_male);
    assert!((exps[3].values[8] - expect).abs() < 1e-9);
}

#[test]
fn linear_shap_simple_model_and_errors() {
    let model = LinearModel::new(
        vec!["a".into(), "b".into()],
        vec![2.0, -3.0],
        1.0,
        Link::Identity,
    )
    .unwrap();
    let bg = Matrix::from_rows(&[vec![0.0, 1.0], vec![2.0, 3.0]]).unwrap();
    let ex = LinearExplainer::new(&model, &bg).unwrap();
    let e = ex.explain_row(&[4.0, 0.0], 0).unwrap();
    assert_eq!(e.values, vec![2.0 * (4.0 - 1.0), -3.0 * (0.0 - 2.0)]);
    assert_eq!(e.base_value, 1.0 + 2.0 * 1.0 - 3.0 * 2.0);
    e.check_additivity(0, 1e-12).unwrap();
    assert!(matches!(
        ex.explain_row(&[1.0], 0),
        Err(AiError::FeatureCount {
            expected: 2,
            got: 1
        })
    ));
    assert!(matches!(
        ex.explain_row(&[f64::NAN, 1.0], 5),
        Err(AiError::NonFinite { row: 5, .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn linear_shap_is_exact_and_additive(
        coefs in proptest::collection::vec(-5.0f64..5.0, 1..8),
        intercept in -3.0f64..3.0,
        seed in any::<u64>(),
        n_bg in 1usize..20,
    ) {
        use rand::{Rng, SeedableRng};
        let m = coefs.len();
        let model = LinearModel::new(
            (0..m).map(|i| format!("f{i}")).collect(),
            coefs.clone(),
            intercept,
            Link::Logistic,
        )
        .unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let bg_rows: Vec<Vec<f64>> = (0..n_bg)
            .map(|_| (0..m).map(|_| rng.gen_range(-10.0..10.0)).collect())
            .collect();
        let bg = Matrix::from_rows(&bg_rows).unwrap();
        let row: Vec<f64> = (0..m).map(|_| rng.gen_range(-10.0..10.0)).collect();
        let ex = LinearExplainer::new(&model, &bg).unwrap();
        let e = ex.explain_row(&row, 0).unwrap();
        e.check_additivity(0, 1e-9).unwrap();
        prop_assert!((e.prediction - model.predict_row(&row, Output::Margin).unwrap()).abs() < 1e-12);
        for j in 0..m {
            let mean = bg_rows.iter().map(|b| b[j]).sum::<f64>() / n_bg as f64;
            prop_assert!((e.values[j] - coefs[j] * (row[j] - mean)).abs() < 1e-9);
        }
    }
}
