//! KernelSHAP: exactness against brute-force Shapley values, agreement of the tree fast paths
//! with the generic path, shap's sampling invariants, bad input, and parity with shap 0.51's
//! KernelExplainer on the reference XGBoost model.

use attest_ai::explain::kernel::{
    Background, Coalitions, KernelConfig, KernelExplainer, L1Reg, Strategy,
};
use attest_ai::model::tree::{MissingKind, Node, SplitRule, Tree};
use attest_ai::model::{Link, TreeEnsemble};
use attest_ai::{AiError, Matrix, Model, Output};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A tree ensemble exposed as a model, with or without its structure (the latter forces the
/// generic path through plain predictions).
struct Trees {
    ens: TreeEnsemble,
    expose: bool,
}

impl Model for Trees {
    fn feature_names(&self) -> &[String] {
        &self.ens.feature_names
    }
    fn predict(&self, x: &Matrix, output: Output) -> Result<Vec<f64>, AiError> {
        self.check_width(x)?;
        Ok(x.rows()
            .map(|r| {
                let m =
                    self.ens.base_margin + self.ens.trees.iter().map(|t| t.predict(r)).sum::<f64>();
                match output {
                    Output::Margin => m,
                    Output::Probability => self.ens.link.apply(m),
                }
            })
            .collect())
    }
    fn as_tree_ensemble(&self) -> Option<&TreeEnsemble> {
        self.expose.then_some(&self.ens)
    }
}

/// A smooth nonlinear function with interactions that, like a linear model, rejects NaN.
struct Formula {
    names: Vec<String>,
}

impl Formula {
    fn new(p: usize) -> Self {
        Formula {
            names: (0..p).map(|j| format!("x{j}")).collect(),
        }
    }
}

impl Model for Formula {
    fn feature_names(&self) -> &[String] {
        &self.names
    }
    fn predict(&self, x: &Matrix, output: Output) -> Result<Vec<f64>, AiError> {
        self.check_width(x)?;
        x.rows()
            .enumerate()
            .map(|(i, r)| {
                if let Some(j) = r.iter().position(|v| !v.is_finite()) {
                    return Err(AiError::NonFinite {
                        column: self.names[j].clone(),
                        row: i,
                        value: r[j],
                    });
                }
                let mut z = 0.3;
                for (j, v) in r.iter().enumerate() {
                    z += (j as f64 + 1.0) * 0.1 * v;
                    if j + 1 < r.len() {
                        z += 0.2 * v * r[j + 1];
                    }
                }
                z += (r[0] * 1.3).sin();
                Ok(match output {
                    Output::Margin => z,
                    Output::Probability => 1.0 / (1.0 + (-z).exp()),
                })
            })
            .collect()
    }
}

fn names(p: usize) -> Vec<String> {
    (0..p).map(|j| format!("f{j}")).collect()
}

/// A random ensemble over `p` features whose values are small integers (so that rows collide
/// on splits), with both split rules and random missing directions.
fn random_ensemble(seed: u64, p: usize, n_trees: usize, depth: usize) -> TreeEnsemble {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut trees = Vec::new();
    for _ in 0..n_trees {
        let mut nodes = Vec::new();
        grow(&mut rng, &mut nodes, p, depth);
        trees.push(Tree { nodes });
    }
    TreeEnsemble {
        feature_names: names(p),
        trees,
        base_margin: rng.gen_range(-1.0..1.0),
        link: Link::Logistic,
    }
}

fn grow(rng: &mut ChaCha8Rng, nodes: &mut Vec<Node>, p: usize, depth: usize) -> u32 {
    let id = nodes.len();
    let leaf = depth == 0 || (id > 0 && rng.gen_bool(0.2));
    nodes.push(Node {
        feature: rng.gen_range(0..p) as u32,
        rule: if rng.gen_bool(0.5) {
            SplitRule::LessThanF32 {
                threshold: rng.gen_range(0..5) as f32 + 0.5,
            }
        } else {
            SplitRule::LessOrEqual {
                threshold: rng.gen_range(0..5) as f64,
                missing: MissingKind::NaN,
            }
        },
        left: Node::NONE,
        right: Node::NONE,
        default_left: rng.gen_bool(0.5),
        value: rng.gen_range(-1.0..1.0),
        cover: 1.0,
    });
    if !leaf {
        let l = grow(rng, nodes, p, depth - 1);
        let r = grow(rng, nodes, p, depth - 1);
        nodes[id].left = l;
        nodes[id].right = r;
    }
    id as u32
}

fn random_rows(rng: &mut ChaCha8Rng, n: usize, p: usize, nan_rate: f64) -> Matrix {
    let data = (0..n * p)
        .map(|_| {
            if rng.gen_bool(nan_rate) {
                f64::NAN
            } else {
                rng.gen_range(0..6) as f64
            }
        })
        .collect();
    Matrix::new(data, n, p).unwrap()
}

/// Exact Shapley values of v(S) = Σ_b w_b f(x_S, b_rest) by enumerating all 2^M coalitions.
fn brute_force(model: &dyn Model, x: &[f64], bg: &Background, output: Output) -> Vec<f64> {
    let p = x.len();
    let n = bg.n_rows();
    let mut v = vec![0.0; 1 << p];
    for (s, vs) in v.iter_mut().enumerate() {
        let mut data = Vec::with_capacity(n * p);
        for b in bg.data().rows() {
            for j in 0..p {
                data.push(if s >> j & 1 == 1 { x[j] } else { b[j] });
            }
        }
        let y = model
            .predict(&Matrix::new(data, n, p).unwrap(), output)
            .unwrap();
        *vs = y.iter().zip(bg.weights()).map(|(a, w)| a * w).sum();
    }
    let fact = |k: usize| (1..=k).map(|i| i as f64).product::<f64>();
    (0..p)
        .map(|j| {
            let mut phi = 0.0;
            for s in 0..1usize << p {
                if s >> j & 1 == 1 {
                    continue;
                }
                let k = s.count_ones() as usize;
                let w = fact(k) * fact(p - k - 1) / fact(p);
                phi += w * (v[s | 1 << j] - v[s]);
            }
            phi
        })
        .collect()
}

fn config(strategy: Strategy, output: Output) -> KernelConfig {
    KernelConfig {
        strategy,
        output,
        ..KernelConfig::default()
    }
}

/// A row that differs from every background row in every feature (all features vary).
fn all_varying_row(bg: &Matrix, rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..bg.n_cols())
        .map(|j| {
            let max = bg.rows().map(|r| r[j]).fold(f64::MIN, f64::max);
            max + 1.0 + rng.gen_range(0..2) as f64
        })
        .collect()
}

#[test]
fn exact_shapley_for_small_m_generic_model() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for p in 2..=8 {
        let model = Formula::new(p);
        let bgm =
            Matrix::new((0..5 * p).map(|_| rng.gen_range(-1.0..1.0)).collect(), 5, p).unwrap();
        let bg = Background::weighted(bgm.clone(), vec![1.0, 2.0, 3.0, 1.0, 0.5]).unwrap();
        let x: Vec<f64> = (0..p).map(|_| rng.gen_range(2.0..3.0)).collect();
        for output in [Output::Margin, Output::Probability] {
            let exp =
                KernelExplainer::new(&model, bg.clone(), config(Strategy::Auto, output)).unwrap();
            let e = exp.explain_row(&x).unwrap();
            let truth = brute_force(&model, &x, &bg, output);
            for (a, b) in e.values.iter().zip(&truth) {
                assert!(
                    (a - b).abs() < 1e-9,
                    "p={p} {output:?}: {:?} vs {truth:?}",
                    e.values
                );
            }
            e.check_additivity(0, 1e-9).unwrap();
        }
    }
}

#[test]
fn exact_shapley_for_small_m_all_tree_paths() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for p in 2..=8 {
        let ens = random_ensemble(p as u64, p, 6, 4);
        let bgm = random_rows(&mut rng, 70, p, 0.05);
        let x = all_varying_row(&bgm, &mut rng);
        let bg = Background::new(bgm).unwrap();
        let opaque = Trees {
            ens: ens.clone(),
            expose: false,
        };
        let truth = brute_force(&opaque, &x, &bg, Output::Probability);
        let exposed = Trees { ens, expose: true };
        for strategy in [
            Strategy::Generic,
            Strategy::TreeBitset,
            Strategy::TreeTable,
            Strategy::Auto,
        ] {
            let exp =
                KernelExplainer::new(&exposed, bg.clone(), config(strategy, Output::Probability))
                    .unwrap();
            let e = exp.explain_row(&x).unwrap();
            for (a, b) in e.values.iter().zip(&truth) {
                assert!(
                    (a - b).abs() < 1e-9,
                    "p={p} {strategy:?}: {:?} vs {truth:?}",
                    e.values
                );
            }
        }
    }
}

#[test]
fn sampled_regime_keeps_efficiency_and_is_seeded() {
    let p = 12;
    let model = Formula::new(p);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let bgm = Matrix::new(
        (0..20 * p).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        20,
        p,
    )
    .unwrap();
    let x: Vec<f64> = (0..p).map(|_| rng.gen_range(1.0..2.0)).collect();
    let cfg = KernelConfig {
        nsamples: Some(300),
        seed: 7,
        ..KernelConfig::default()
    };
    let bg = Background::new(bgm).unwrap();
    let exp = KernelExplainer::new(&model, bg.clone(), cfg.clone()).unwrap();
    let a = exp.explain_row(&x).unwrap();
    let b = exp.explain_row(&x).unwrap();
    assert_eq!(a, b, "same seed must give identical output");
    a.check_additivity(0, 1e-9).unwrap();
    let other = KernelExplainer::new(&model, bg.clone(), KernelConfig { seed: 8, ..cfg }).unwrap();
    let c = other.explain_row(&x).unwrap();
    assert_ne!(a.values, c.values, "another seed samples other coalitions");
    c.check_additivity(0, 1e-9).unwrap();
    // Sampling error against the exact values (M = 12: 4094 coalitions). Measured max |error|
    // over seeds 0..3: 0.019-0.027 at 300 coalitions, 0.004-0.006 at 2000, 0 at 4094 (full
    // enumeration); the bound below is 0.15 x the largest |phi| (0.0106).
    let truth = brute_force(&model, &x, &bg, Output::Probability);
    let spread = truth.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (ns, tol) in [(2000, 0.15 * spread), (4094, 1e-9)] {
        let cfg = KernelConfig {
            nsamples: Some(ns),
            seed: 7,
            ..KernelConfig::default()
        };
        let e = KernelExplainer::new(&model, bg.clone(), cfg)
            .unwrap()
            .explain_row(&x)
            .unwrap();
        for (v, t) in e.values.iter().zip(&truth) {
            assert!(
                (v - t).abs() < tol,
                "nsamples {ns}: {v} vs {t} (spread {spread})"
            );
        }
    }
    // explain() over a matrix equals explain_row per row.
    let xm = Matrix::from_rows(&[x.clone(), x.iter().map(|v| v * 0.5).collect()]).unwrap();
    let all = exp.explain(&xm).unwrap();
    assert_eq!(all[0], a);
    assert_eq!(all[1], exp.explain_row(xm.row(1)).unwrap());
}

#[test]
fn coalition_sampling_follows_shap() {
    // M = 13, nsamples 2074: sizes 1 and 2 (with complements) are enumerated, as in shap.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let co = Coalitions::sample(13, 2074, &mut rng).unwrap();
    assert_eq!(co.len(), 2074);
    let total: f64 = co.weights().iter().sum();
    assert!((total - 1.0).abs() < 1e-12);
    let size = |s: usize| (0..13).filter(|&k| co.contains(s, k)).count();
    let enumerated = 2 * 13 + 2 * 78;
    for s in 0..enumerated {
        let k = size(s);
        assert!(
            k == 1 || k == 12 || k == 2 || k == 11,
            "coalition {s} has size {k}"
        );
    }
    for s in enumerated..co.len() {
        let k = size(s);
        assert!((3..=10).contains(&k), "random coalition {s} has size {k}");
    }
    // Paired: every random coalition of size <= 6 is followed by its complement.
    let mut s = enumerated;
    while s + 1 < co.len() {
        if size(s) <= 6 {
            for k in 0..13 {
                assert_ne!(co.contains(s, k), co.contains(s + 1, k));
            }
            s += 2;
        } else {
            s += 1;
        }
    }
    // No duplicates.
    let mut seen = std::collections::HashSet::new();
    for s in 0..co.len() {
        assert!(seen.insert(co.mask(s).to_vec()), "duplicate coalition {s}");
    }
    // Full enumeration when the budget covers 2^M - 2.
    let co = Coalitions::sample(6, 62, &mut rng).unwrap();
    assert_eq!(co.len(), 62);
}

#[test]
fn constant_features_get_zero_and_single_feature_gets_everything() {
    let p = 4;
    let model = Formula::new(p);
    let bgm = Matrix::from_rows(&[
        vec![0.0, 1.0, 5.0, 0.2],
        vec![0.5, 1.0, 5.0, -0.3],
        vec![1.0, 1.0, 5.0, 0.7],
    ])
    .unwrap();
    let bg = Background::new(bgm).unwrap();
    let exp = KernelExplainer::new(&model, bg.clone(), KernelConfig::default()).unwrap();
    // Features 1 and 2 equal every background row (feature 2 within isclose's tolerance).
    let x = [2.0, 1.0, 5.0 + 1e-9, 1.5];
    let e = exp.explain_row(&x).unwrap();
    assert_eq!(e.values[1], 0.0);
    assert_eq!(e.values[2], 0.0);
    assert!(e.values[0] != 0.0 && e.values[3] != 0.0);
    e.check_additivity(0, 1e-9).unwrap();
    // Only feature 3 varies: it takes f(x) - base.
    let x = [0.0, 1.0, 5.0, 9.0];
    let bg1 = Background::new(Matrix::from_rows(&[vec![0.0, 1.0, 5.0, 0.0]]).unwrap()).unwrap();
    let exp1 = KernelExplainer::new(&model, bg1, KernelConfig::default()).unwrap();
    let e = exp1.explain_row(&x).unwrap();
    assert_eq!(e.values[..3], [0.0, 0.0, 0.0]);
    assert!((e.values[3] - (e.prediction - e.base_value)).abs() < 1e-15);
    // Nothing varies: all zeros.
    let e = exp1.explain_row(&[0.0, 1.0, 5.0, 0.0]).unwrap();
    assert_eq!(e.values, vec![0.0; 4]);
}

#[test]
fn background_summaries() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    // Three well separated blobs of sizes 10, 20, 30.
    let mut rows = Vec::new();
    for (c, n) in [(0.0, 10), (10.0, 20), (20.0, 30)] {
        for _ in 0..n {
            rows.push(vec![
                c + rng.gen_range(-0.5..0.5),
                -c + rng.gen_range(-0.5..0.5),
            ]);
        }
    }
    let data = Matrix::from_rows(&rows).unwrap();
    let km = Background::kmeans(&data, 3, 0).unwrap();
    assert_eq!(km.n_rows(), 3);
    let mut w: Vec<f64> = km.weights().to_vec();
    w.sort_by(|a, b| a.partial_cmp(b).unwrap());
    for (a, b) in w.iter().zip([10.0 / 60.0, 20.0 / 60.0, 30.0 / 60.0]) {
        assert!((a - b).abs() < 1e-12, "{w:?}");
    }
    // round_values: every centre coordinate is a value of that column.
    for r in km.data().rows() {
        for (j, v) in r.iter().enumerate() {
            assert!(data.rows().any(|d| d[j] == *v));
        }
    }
    assert_eq!(km, Background::kmeans(&data, 3, 0).unwrap());
    let s = Background::sample(&data, 7, 1).unwrap();
    assert_eq!(s.n_rows(), 7);
    assert!(s.data().rows().all(|r| data.rows().any(|d| d == r)));
    assert_eq!(s, Background::sample(&data, 7, 1).unwrap());
    assert_eq!(Background::sample(&data, 100, 1).unwrap().n_rows(), 60);
}

#[test]
fn bad_input_is_rejected_with_typed_errors() {
    let model = Formula::new(3);
    let empty = Matrix::new(vec![], 0, 3).unwrap();
    assert!(matches!(
        Background::new(empty.clone()),
        Err(AiError::InvalidArgument(_))
    ));
    assert!(matches!(
        Background::kmeans(&empty, 2, 0),
        Err(AiError::InvalidArgument(_))
    ));
    let bg = Background::new(Matrix::from_rows(&[vec![0.0, 1.0, 2.0]]).unwrap()).unwrap();
    let narrow = Background::new(Matrix::from_rows(&[vec![0.0, 1.0]]).unwrap()).unwrap();
    assert!(matches!(
        KernelExplainer::new(&model, narrow, KernelConfig::default()),
        Err(AiError::FeatureCount {
            expected: 3,
            got: 2
        })
    ));
    for ns in [0, 1] {
        let cfg = KernelConfig {
            nsamples: Some(ns),
            ..KernelConfig::default()
        };
        assert!(matches!(
            KernelExplainer::new(&model, bg.clone(), cfg),
            Err(AiError::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        KernelExplainer::new(
            &model,
            bg.clone(),
            config(Strategy::TreeTable, Output::Margin)
        ),
        Err(AiError::InvalidArgument(_))
    ));
    assert!(matches!(
        Background::sample(&bg.data().clone(), 0, 0),
        Err(AiError::InvalidArgument(_))
    ));
    assert!(matches!(
        Background::weighted(bg.data().clone(), vec![f64::NAN]),
        Err(AiError::NonFinite { .. })
    ));
    let exp = KernelExplainer::new(&model, bg.clone(), KernelConfig::default()).unwrap();
    assert!(matches!(
        exp.explain_row(&[1.0, 2.0]),
        Err(AiError::FeatureCount {
            expected: 3,
            got: 2
        })
    ));
    // The formula model cannot take NaN: a typed error naming the column.
    match exp.explain_row(&[1.0, f64::NAN, 3.0]) {
        Err(AiError::NonFinite { column, .. }) => assert_eq!(column, "x1"),
        other => panic!("expected NonFinite, got {other:?}"),
    }
    let xm = Matrix::from_rows(&[vec![1.0, 2.0, 3.0], vec![1.0, 2.0, f64::INFINITY]]).unwrap();
    assert!(matches!(
        exp.explain(&xm),
        Err(AiError::NonFinite { row: 1, .. })
    ));
    // A tree model takes NaN (missing goes the default way) and still adds up.
    let p = 5;
    let trees = Trees {
        ens: random_ensemble(9, p, 5, 3),
        expose: true,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let bg = Background::new(random_rows(&mut rng, 30, p, 0.1)).unwrap();
    let exp = KernelExplainer::new(&trees, bg, KernelConfig::default()).unwrap();
    let e = exp
        .explain_row(&[f64::NAN, 1.0, 2.0, f64::NAN, 4.0])
        .unwrap();
    e.check_additivity(0, 1e-9).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The tree fast paths compute the same coalition values as the generic path (same seed,
    /// so the same coalitions), in both output spaces, with missing values, and the
    /// attributions always add up.
    #[test]
    fn tree_paths_agree_with_generic(seed in 0u64..10_000, p in 2usize..11, n in 1usize..140,
                                     nsamples in 2usize..400, margin in any::<bool>()) {
        let output = if margin { Output::Margin } else { Output::Probability };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ens = random_ensemble(seed, p, 8, 5);
        let bg = Background::new(random_rows(&mut rng, n, p, 0.05)).unwrap();
        let x = random_rows(&mut rng, 1, p, 0.1);
        let model = Trees { ens, expose: true };
        let mut results = Vec::new();
        for strategy in [Strategy::Generic, Strategy::TreeBitset, Strategy::TreeTable] {
            let cfg = KernelConfig { nsamples: Some(nsamples), output, seed, strategy, ..KernelConfig::default() };
            let exp = KernelExplainer::new(&model, bg.clone(), cfg).unwrap();
            let e = exp.explain_row(x.row(0)).unwrap();
            e.check_additivity(0, 1e-9).unwrap();
            results.push(e);
        }
        for r in &results[1..] {
            prop_assert!((r.base_value - results[0].base_value).abs() < 1e-12);
            for (a, b) in r.values.iter().zip(&results[0].values) {
                prop_assert!((a - b).abs() < 1e-9, "{:?} vs {:?}", r.values, results[0].values);
            }
        }
    }
}

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

/// Reads the first `cols` columns of a CSV file with a header.
fn read_csv(path: &str, cols: usize, max_rows: usize) -> (Vec<String>, Matrix) {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = rdr
        .headers()
        .unwrap()
        .iter()
        .take(cols)
        .map(String::from)
        .collect();
    let mut data = Vec::new();
    let mut n = 0;
    for rec in rdr.records().take(max_rows) {
        let rec = rec.unwrap();
        data.extend(rec.iter().take(cols).map(|v| v.parse::<f64>().unwrap()));
        n += 1;
    }
    (header, Matrix::new(data, n, cols).unwrap())
}

fn rank(v: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].abs().partial_cmp(&v[a].abs()).unwrap().then(a.cmp(&b)));
    idx
}

/// Parity with shap 0.51 `KernelExplainer` (probability output, 100-row background,
/// nsamples auto = 2074, `l1_reg=False`) on test rows 0..9.
///
/// The random coalitions differ from numpy's, so values agree within sampling error. Measured
/// when this test was written: max |ours - shap| per row 0.0004-0.0021, and max |seed s - seed
/// 0| over our seeds 1..4 is 0.0005-0.0030 (our own sampling spread is as large as the gap to
/// shap). Tolerances: max |diff| <= 0.005 per row (about 1.7x the worst seed-to-seed spread;
/// the largest |phi| per row ranges 0.034-0.77), the three strongest features in the same
/// order and the five strongest as the same set (ranks 4-5 swap in row 5, where shap has
/// 0.0723 vs 0.0714), base value to 1e-6 (XGBoost scores in float32), efficiency to 1e-9.
#[test]
fn parity_with_shap_kernel_explainer_on_xgboost() {
    // The real loader and the real `Model` impl of `TreeEnsemble`.
    let model =
        attest_ai::model::xgboost::load(format!("{DATA}/reference/xgb_adult.json")).unwrap();
    let (names, x) = read_csv(&format!("{DATA}/reference/X_test_encoded.csv"), 13, 10);
    assert_eq!(names, model.feature_names());
    let (_, bgm) = read_csv(
        &format!("{DATA}/reference/kernel_background_100.csv"),
        13,
        1000,
    );
    assert_eq!(bgm.n_rows(), 100);
    let (_, reference) = read_csv(&format!("{DATA}/reference/shap_kernel_xgb_10.csv"), 15, 10);
    let bg = Background::new(bgm).unwrap();
    for seed in [0, 1] {
        let cfg = KernelConfig {
            seed,
            ..KernelConfig::default()
        };
        let exp = KernelExplainer::new(&model, bg.clone(), cfg).unwrap();
        assert!((exp.base_value() - reference.row(0)[14]).abs() < 1e-6);
        let ours = exp.explain(&x).unwrap();
        for (i, e) in ours.iter().enumerate() {
            let r = &reference.row(i)[..13];
            e.check_additivity(i, 1e-9).unwrap();
            let f = model.predict_row(x.row(i), Output::Probability).unwrap();
            assert_eq!(e.prediction, f);
            let shap_total = r.iter().sum::<f64>() + reference.row(i)[14];
            assert!(
                (shap_total - f).abs() < 1e-6,
                "row {i}: shap adds to {shap_total}, f = {f}"
            );
            let diff = e
                .values
                .iter()
                .zip(r)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                diff <= 0.005,
                "seed {seed} row {i}: max |diff| {diff}\nours {:?}\nshap {r:?}",
                e.values
            );
            let (ro, rr) = (rank(&e.values), rank(r));
            assert_eq!(ro[..3], rr[..3], "seed {seed} row {i}: top-3 order");
            let mut a = ro[..5].to_vec();
            let mut b = rr[..5].to_vec();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "seed {seed} row {i}: top-5 set");
        }
    }
}

/// On the real model the two tree paths give the generic path's numbers.
#[test]
fn tree_paths_match_generic_on_xgboost() {
    // The real loader and the real `Model` impl of `TreeEnsemble`.
    let model =
        attest_ai::model::xgboost::load(format!("{DATA}/reference/xgb_adult.json")).unwrap();
    let (_, x) = read_csv(&format!("{DATA}/reference/X_test_encoded.csv"), 13, 2);
    let (_, bgm) = read_csv(
        &format!("{DATA}/reference/kernel_background_100.csv"),
        13,
        1000,
    );
    let bg = Background::new(bgm).unwrap();
    let run = |strategy| {
        KernelExplainer::new(&model, bg.clone(), config(strategy, Output::Probability))
            .unwrap()
            .explain(&x)
            .unwrap()
    };
    let generic = run(Strategy::Generic);
    for strategy in [Strategy::TreeBitset, Strategy::TreeTable] {
        for (a, b) in run(strategy).iter().zip(&generic) {
            for (p, q) in a.values.iter().zip(&b.values) {
                assert!((p - q).abs() < 1e-12, "{strategy:?}: {p} vs {q}");
            }
        }
    }
}

/// shap 0.51's default `l1_reg="num_features(10)"` (LARS keeps 10 features, 3 get 0), same
/// setting otherwise. With seed 0 the three zeroed features match shap's in 8 of 10 rows; in
/// the other two, one of the three differs and the features concerned have |phi| <= 0.007
/// in shap's output. Max |diff| per row measured 0.0003-0.0067. Checked: exactly 10 non-zero
/// values, at least 2 of the 3 zeroed features shared with shap, every feature with
/// |phi_shap| >= 0.01 kept, max |diff| <= 0.01, efficiency to 1e-9.
#[test]
fn parity_with_shap_l1_num_features() {
    let model =
        attest_ai::model::xgboost::load(format!("{DATA}/reference/xgb_adult.json")).unwrap();
    let (_, x) = read_csv(&format!("{DATA}/reference/X_test_encoded.csv"), 13, 10);
    let (_, bgm) = read_csv(
        &format!("{DATA}/reference/kernel_background_100.csv"),
        13,
        1000,
    );
    let path = format!("{DATA}/reference/shap_kernel_xgb_10_l1default.csv");
    let (_, reference) = read_csv(&path, 15, 10);
    let bg = Background::new(bgm).unwrap();
    let cfg = KernelConfig {
        l1_reg: L1Reg::NumFeatures(10),
        ..KernelConfig::default()
    };
    let ours = KernelExplainer::new(&model, bg.clone(), cfg)
        .unwrap()
        .explain(&x)
        .unwrap();
    for (i, e) in ours.iter().enumerate() {
        let r = &reference.row(i)[..13];
        e.check_additivity(i, 1e-9).unwrap();
        assert_eq!(
            e.values.iter().filter(|v| **v != 0.0).count(),
            10,
            "row {i}"
        );
        let shared = (0..13)
            .filter(|&j| r[j] == 0.0 && e.values[j] == 0.0)
            .count();
        assert!(shared >= 2, "row {i}: {:?} vs {r:?}", e.values);
        for (j, (rv, ov)) in r.iter().zip(&e.values).enumerate() {
            if rv.abs() >= 0.01 {
                assert!(*ov != 0.0, "row {i}: feature {j} dropped");
            }
        }
        let diff = e
            .values
            .iter()
            .zip(r)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(diff <= 0.01, "row {i}: max |diff| {diff}");
    }
    // Selecting every feature is the unregularised solution; k = 0 is rejected.
    let all = KernelConfig {
        l1_reg: L1Reg::NumFeatures(13),
        ..KernelConfig::default()
    };
    let plain = KernelExplainer::new(&model, bg.clone(), KernelConfig::default()).unwrap();
    let full = KernelExplainer::new(&model, bg.clone(), all).unwrap();
    let (a, b) = (
        plain.explain_row(x.row(0)).unwrap(),
        full.explain_row(x.row(0)).unwrap(),
    );
    for (p, q) in a.values.iter().zip(&b.values) {
        assert!((p - q).abs() < 1e-12);
    }
    let zero = KernelConfig {
        l1_reg: L1Reg::NumFeatures(0),
        ..KernelConfig::default()
    };
    assert!(matches!(
        KernelExplainer::new(&model, bg, zero),
        Err(AiError::InvalidArgument(_))
    ));
}
