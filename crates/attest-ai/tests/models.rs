//! Model loaders and predictions against the Python reference outputs, plus bad inputs.

use attest_ai::model::linear::{LinearModel, Term};
use attest_ai::model::{lightgbm, xgboost, Link};
use attest_ai::{AiError, Matrix, Model, Output};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

fn reference(name: &str) -> String {
    format!("{DATA}/reference/{name}")
}

fn x_test() -> (Vec<String>, Matrix) {
    let mut rdr = csv::Reader::from_path(reference("X_test_encoded.csv")).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(str::to_string).collect();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| header[i] != "adult_row")
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

/// One numeric column of preds.csv.
fn preds(column: &str) -> Vec<f64> {
    let mut rdr = csv::Reader::from_path(reference("preds.csv")).unwrap();
    let k = rdr
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == column)
        .unwrap();
    rdr.records()
        .map(|r| r.unwrap()[k].parse::<f64>().unwrap())
        .collect()
}

fn assert_close(model: &dyn Model, x: &Matrix, prefix: &str, tol: f64) {
    for (output, col) in [(Output::Margin, "margin"), (Output::Probability, "proba")] {
        let want = preds(&format!("{prefix}_{col}"));
        let got = model.predict(x, output).unwrap();
        assert_eq!(got.len(), 15_060);
        assert_eq!(want.len(), 15_060);
        let mut max = 0.0f64;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let d = (g - w).abs();
            assert!(d <= tol, "{prefix}_{col} row {i}: got {g}, reference {w}");
            max = max.max(d);
        }
        eprintln!("{prefix}_{col}: max |diff| = {max:e}");
    }
    // Class predictions at 0.5 agree too.
    let pred = preds(&format!("{prefix}_pred"));
    let p = model.predict(x, Output::Probability).unwrap();
    let agree = p
        .iter()
        .zip(&pred)
        .filter(|(p, y)| (**p >= 0.5) == (**y == 1.0))
        .count();
    assert_eq!(agree, 15_060, "{prefix}: class predictions disagree");
}

#[test]
fn xgboost_matches_reference_predictions() {
    let model = xgboost::load(reference("xgb_adult.json")).unwrap();
    let (names, x) = x_test();
    assert_eq!(model.feature_names(), names.as_slice());
    assert_eq!(model.trees.len(), 100);
    assert_eq!(model.link, Link::Logistic);
    assert!(model.as_tree_ensemble().is_some());
    assert_close(&model, &x, "xgb", 1e-5);
    // Row API agrees with the batch API.
    let m = model.predict_row(x.row(5), Output::Margin).unwrap();
    assert_eq!(m, model.predict(&x, Output::Margin).unwrap()[5]);
}

#[test]
fn lightgbm_matches_reference_predictions() {
    let model = lightgbm::load(reference("lgbm_adult.txt")).unwrap();
    let (names, x) = x_test();
    assert_eq!(model.feature_names(), names.as_slice());
    assert_eq!(model.trees.len(), 100);
    assert_close(&model, &x, "lgbm", 1e-5);
}

#[test]
fn sklearn_logistic_regression_matches_reference_predictions() {
    let model = LinearModel::from_sklearn_json(
        reference("logreg_adult.json"),
        reference("feature_encoding.json"),
    )
    .unwrap();
    let (names, x) = x_test();
    assert_eq!(model.feature_names(), names.as_slice());
    assert!(model.as_tree_ensemble().is_none());
    assert_close(&model, &x, "lr", 1e-6);
}

#[test]
fn simple_linear_json_round_trips_and_predicts() {
    let text = r#"{"feature_names": ["a", "b"], "coefficients": [0.5, -2.0],
                   "intercept": 1.0, "link": "logistic"}"#;
    let model = LinearModel::from_json_str(text, "inline").unwrap();
    let x = Matrix::from_rows(&[vec![2.0, 1.0], vec![0.0, 0.0]]).unwrap();
    let m = model.predict(&x, Output::Margin).unwrap();
    assert_eq!(m, vec![1.0 + 1.0 - 2.0, 1.0]);
    let p = model.predict(&x, Output::Probability).unwrap();
    assert!((p[1] - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-15);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lin.json");
    std::fs::write(&path, model.to_json_string().unwrap()).unwrap();
    let back = LinearModel::load_json(&path).unwrap();
    assert_eq!(back, model);

    // Identity link is the default.
    let reg = LinearModel::from_json_str(
        r#"{"feature_names": ["a"], "coefficients": [3.0], "intercept": 0.0}"#,
        "inline",
    )
    .unwrap();
    assert_eq!(reg.link, Link::Identity);
    assert_eq!(reg.predict_row(&[2.0], Output::Probability).unwrap(), 6.0);
    // The sklearn model (scaled + one-hot terms) cannot be written in the simple format.
    let sk = LinearModel::from_sklearn_json(
        reference("logreg_adult.json"),
        reference("feature_encoding.json"),
    )
    .unwrap();
    assert!(matches!(sk.terms[0], Term::Numeric { .. }));
    assert!(matches!(
        sk.to_json_string(),
        Err(AiError::InvalidArgument(_))
    ));
}

#[test]
fn feature_count_mismatch_is_a_typed_error() {
    let xgb = xgboost::load(reference("xgb_adult.json")).unwrap();
    let lgb = lightgbm::load(reference("lgbm_adult.txt")).unwrap();
    let lr = LinearModel::from_sklearn_json(
        reference("logreg_adult.json"),
        reference("feature_encoding.json"),
    )
    .unwrap();
    let x = Matrix::new(vec![1.0; 12], 1, 12).unwrap();
    for m in [&xgb as &dyn Model, &lgb, &lr] {
        match m.predict(&x, Output::Margin) {
            Err(AiError::FeatureCount { expected, got }) => {
                assert_eq!((expected, got), (13, 12));
            }
            other => panic!("expected FeatureCount, got {other:?}"),
        }
    }
}

#[test]
fn linear_model_rejects_bad_values() {
    let lr = LinearModel::from_sklearn_json(
        reference("logreg_adult.json"),
        reference("feature_encoding.json"),
    )
    .unwrap();
    let (_, x) = x_test();
    let mut row = x.row(0).to_vec();
    row[1] = 99.0; // workclass has 7 codes
    match lr.predict_row(&row, Output::Margin) {
        Err(AiError::InvalidValue { column, .. }) => assert_eq!(column, "workclass"),
        other => panic!("expected InvalidValue, got {other:?}"),
    }
    row[1] = 2.0;
    row[0] = f64::NAN;
    match lr.predict_row(&row, Output::Margin) {
        Err(AiError::NonFinite { column, .. }) => assert_eq!(column, "age"),
        other => panic!("expected NonFinite, got {other:?}"),
    }
}

fn model_format_reason(r: Result<impl std::fmt::Debug, AiError>) -> String {
    match r {
        Err(AiError::ModelFormat { reason, .. }) => reason,
        other => panic!("expected ModelFormat, got {other:?}"),
    }
}

#[test]
fn xgboost_rejects_bad_files() {
    let text = std::fs::read_to_string(reference("xgb_adult.json")).unwrap();
    // Truncated.
    let r = model_format_reason(xgboost::parse(&text[..text.len() / 2], "trunc", None));
    assert!(r.contains("not valid JSON"), "{r}");
    // Garbage.
    let r = model_format_reason(xgboost::parse("\u{1}\u{2}garbage", "garbage", None));
    assert!(r.contains("not valid JSON"), "{r}");
    // Unsupported objective.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut multi = v.clone();
    multi["learner"]["objective"]["name"] = "multi:softprob".into();
    let r = model_format_reason(xgboost::parse(&multi.to_string(), "m", None));
    assert!(r.contains("multi:softprob"), "{r}");
    let mut pois = v.clone();
    pois["learner"]["objective"]["name"] = "count:poisson".into();
    let r = model_format_reason(xgboost::parse(&pois.to_string(), "p", None));
    assert!(r.contains("count:poisson"), "{r}");
    // Multiclass via num_class.
    let mut nc = v.clone();
    nc["learner"]["learner_model_param"]["num_class"] = "3".into();
    let r = model_format_reason(xgboost::parse(&nc.to_string(), "nc", None));
    assert!(r.contains("num_class"), "{r}");
    // Missing field.
    let mut missing = v.clone();
    missing["learner"]["gradient_booster"]["model"]["trees"][3]
        .as_object_mut()
        .unwrap()
        .remove("sum_hessian");
    let r = model_format_reason(xgboost::parse(&missing.to_string(), "miss", None));
    assert!(r.contains("tree 3") && r.contains("sum_hessian"), "{r}");
    // Child out of range.
    let mut bad_child = v.clone();
    bad_child["learner"]["gradient_booster"]["model"]["trees"][0]["left_children"][0] = 9999.into();
    let r = model_format_reason(xgboost::parse(&bad_child.to_string(), "child", None));
    assert!(r.contains("out of range"), "{r}");
    // Split on a feature the model does not have.
    let mut bad_feat = v.clone();
    bad_feat["learner"]["gradient_booster"]["model"]["trees"][0]["split_indices"][0] = 40.into();
    let r = model_format_reason(xgboost::parse(&bad_feat.to_string(), "feat", None));
    assert!(r.contains("feature index 40"), "{r}");
    // Categorical splits.
    let mut cat = v.clone();
    cat["learner"]["gradient_booster"]["model"]["trees"][0]["split_type"][0] = 1.into();
    let r = model_format_reason(xgboost::parse(&cat.to_string(), "cat", None));
    assert!(r.contains("categorical"), "{r}");
    // Missing file is an I/O error naming the path.
    match xgboost::load("/nonexistent/model.json") {
        Err(AiError::Io { path, .. }) => assert!(path.contains("nonexistent")),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn xgboost_feature_names_and_base_score_forms() {
    let text = std::fs::read_to_string(reference("xgb_adult.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let reference_model = xgboost::parse(&text, "ref", None).unwrap();
    // XGBoost < 3 stores the base score as a plain string.
    v["learner"]["learner_model_param"]["base_score"] = "2.4892248E-1".into();
    // Without names in the file: f0.. or the caller's.
    v["learner"]
        .as_object_mut()
        .unwrap()
        .remove("feature_names");
    let unnamed = xgboost::parse(&v.to_string(), "v", None).unwrap();
    assert_eq!(unnamed.feature_names[0], "f0");
    assert_eq!(unnamed.base_margin, reference_model.base_margin);
    let names =
        attest_ai::model::feature_names_from_encoding(reference("feature_encoding.json")).unwrap();
    assert_eq!(names, reference_model.feature_names);
    let named = xgboost::parse(&v.to_string(), "v", Some(&names)).unwrap();
    assert_eq!(named, reference_model);
    let r = model_format_reason(xgboost::parse(&v.to_string(), "v", Some(&names[..3])));
    assert!(r.contains("3 feature names"), "{r}");
    // Multi-target base score is rejected.
    v["learner"]["learner_model_param"]["base_score"] = "[0.1,0.2]".into();
    let r = model_format_reason(xgboost::parse(&v.to_string(), "v", None));
    assert!(r.contains("base_score"), "{r}");
}

#[test]
fn lightgbm_rejects_bad_files() {
    let text = std::fs::read_to_string(reference("lgbm_adult.txt")).unwrap();
    // Truncated in the middle of the trees.
    let cut = text.find("Tree=50").unwrap() + 200;
    let r = model_format_reason(lightgbm::parse(&text[..cut], "trunc"));
    assert!(r.contains("tree 50"), "{r}");
    // Garbage.
    let r = model_format_reason(lightgbm::parse("PK\u{3}\u{4} zip?", "garbage"));
    assert!(r.contains("first line"), "{r}");
    // Unsupported objectives.
    let multi = text.replace(
        "objective=binary sigmoid:1",
        "objective=multiclass num_class:3",
    );
    let r = model_format_reason(lightgbm::parse(&multi, "multi"));
    assert!(r.contains("multiclass"), "{r}");
    let nc = text.replace("num_class=1", "num_class=3");
    let r = model_format_reason(lightgbm::parse(&nc, "nc"));
    assert!(r.contains("num_class = 3"), "{r}");
    // Categorical split bit.
    let cat = text.replacen("decision_type=2 ", "decision_type=3 ", 1);
    let r = model_format_reason(lightgbm::parse(&cat, "cat"));
    assert!(r.contains("categorical"), "{r}");
    // Missing line.
    let start = text.find("leaf_count=").unwrap();
    let end = start + text[start..].find('\n').unwrap() + 1;
    let no_counts = format!("{}{}", &text[..start], &text[end..]);
    let r = model_format_reason(lightgbm::parse(&no_counts, "nc"));
    assert!(r.contains("tree 0") && r.contains("leaf_count"), "{r}");
}

#[test]
fn lightgbm_sigmoid_scaling_and_missing_types() {
    let text = std::fs::read_to_string(reference("lgbm_adult.txt")).unwrap();
    let base = lightgbm::parse(&text, "base").unwrap();
    let scaled = lightgbm::parse(
        &text.replace("objective=binary sigmoid:1", "objective=binary sigmoid:2"),
        "s2",
    )
    .unwrap();
    let (_, x) = x_test();
    let x = x.slice_rows(0, 100);
    let m1 = base.predict(&x, Output::Margin).unwrap();
    let m2 = scaled.predict(&x, Output::Margin).unwrap();
    let p2 = scaled.predict(&x, Output::Probability).unwrap();
    for i in 0..100 {
        // LightGBM: p = 1 / (1 + exp(-sigmoid * raw)).
        assert!((m2[i] - 2.0 * m1[i]).abs() < 1e-12);
        assert!((p2[i] - 1.0 / (1.0 + (-2.0 * m1[i]).exp())).abs() < 1e-12);
    }
    // Regression objective → identity link.
    let reg = lightgbm::parse(
        &text.replace("objective=binary sigmoid:1", "objective=regression"),
        "r",
    )
    .unwrap();
    assert_eq!(reg.link, Link::Identity);
    // A NaN input is treated per the split's missing type (None: as 0.0).
    let mut row = x.row(0).to_vec();
    row[9] = f64::NAN; // capital_gain
    let mut zero = row.clone();
    zero[9] = 0.0;
    assert_eq!(
        base.predict_row(&row, Output::Margin).unwrap(),
        base.predict_row(&zero, Output::Margin).unwrap()
    );
}

// ------------------------------------------------------------------------------------------
// MLP (candle) and integrated gradients
// ------------------------------------------------------------------------------------------

mod mlp {
    use std::collections::HashMap;

    use attest_ai::explain::gradients::IntegratedGradients;
    use attest_ai::model::mlp::Mlp;
    use attest_ai::model::Link;
    use attest_ai::{AiError, Matrix, Model, Output};
    use candle_core::{Device, Tensor};

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("x{i}")).collect()
    }

    fn hand_made() -> Mlp {
        // 2 -> 2 (ReLU) -> 1
        let dev = Device::Cpu;
        let mut t = HashMap::new();
        t.insert(
            "layers.0.weight".to_string(),
            Tensor::from_vec(vec![1.0f32, -1.0, 0.5, 2.0], (2, 2), &dev).unwrap(),
        );
        t.insert(
            "layers.0.bias".to_string(),
            Tensor::from_vec(vec![0.0f32, -1.0], 2, &dev).unwrap(),
        );
        t.insert(
            "layers.1.weight".to_string(),
            Tensor::from_vec(vec![3.0f32, -2.0], (1, 2), &dev).unwrap(),
        );
        t.insert(
            "layers.1.bias".to_string(),
            Tensor::from_vec(vec![0.25f32], 1, &dev).unwrap(),
        );
        Mlp::from_tensors(&t, names(2), Link::Logistic, "hand").unwrap()
    }

    #[test]
    fn hand_made_network_computes_relu_forward() {
        let m = hand_made();
        assert_eq!(m.layer_sizes(), vec![2, 2, 1]);
        let x = Matrix::from_rows(&[vec![2.0, 1.0], vec![-1.0, 3.0]]).unwrap();
        let got = m.predict(&x, Output::Margin).unwrap();
        // row 0: h = relu([1, 1 + 2 - 1]) = [1, 2]; out = 3 - 4 + 0.25
        // row 1: h = relu([-4, -0.5 + 6 - 1]) = [0, 4.5]; out = -9 + 0.25
        assert_eq!(got, vec![-0.75, -8.75]);
        let p = m.predict(&x, Output::Probability).unwrap();
        assert!((p[0] - 1.0 / (1.0 + 0.75f64.exp())).abs() < 1e-15);
    }

    #[test]
    fn random_network_round_trips_through_safetensors() {
        let m = Mlp::new_random(names(13), &[16, 8], Link::Logistic).unwrap();
        assert_eq!(m.layer_sizes(), vec![13, 16, 8, 1]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mlp.safetensors");
        m.save_safetensors(&path).unwrap();
        let back = Mlp::load_safetensors(&path, names(13), Link::Logistic).unwrap();
        assert_eq!(back.layer_sizes(), m.layer_sizes());
        let rows: Vec<Vec<f64>> = (0..50)
            .map(|i| {
                (0..13)
                    .map(|j| ((i * 7 + j * 3) % 11) as f64 - 5.0)
                    .collect()
            })
            .collect();
        let x = Matrix::from_rows(&rows).unwrap();
        let a = m.predict(&x, Output::Probability).unwrap();
        let b = back.predict(&x, Output::Probability).unwrap();
        assert_eq!(a, b);
        assert!(a.iter().any(|p| (p - a[0]).abs() > 1e-9), "outputs vary");
    }

    #[test]
    fn bad_networks_and_inputs_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.safetensors");
        std::fs::write(&garbage, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json").unwrap();
        match Mlp::load_safetensors(&garbage, names(2), Link::Identity) {
            Err(AiError::ModelFormat { reason, .. }) => assert!(reason.contains("safetensors")),
            other => panic!("expected ModelFormat, got {other:?}"),
        }
        let m = hand_made();
        let path = dir.path().join("ok.safetensors");
        m.save_safetensors(&path).unwrap();
        // Wrong number of feature names for the first layer.
        match Mlp::load_safetensors(&path, names(3), Link::Identity) {
            Err(AiError::ModelFormat { reason, .. }) => {
                assert!(
                    reason.contains("layers.0.weight takes 2 inputs"),
                    "{reason}"
                )
            }
            other => panic!("expected ModelFormat, got {other:?}"),
        }
        // Two outputs.
        let mut t = HashMap::new();
        let dev = Device::Cpu;
        t.insert(
            "layers.0.weight".to_string(),
            Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap(),
        );
        t.insert(
            "layers.0.bias".to_string(),
            Tensor::zeros(2, candle_core::DType::F32, &dev).unwrap(),
        );
        match Mlp::from_tensors(&t, names(3), Link::Identity, "two") {
            Err(AiError::ModelFormat { reason, .. }) => assert!(reason.contains("2 outputs")),
            other => panic!("expected ModelFormat, got {other:?}"),
        }
        t.insert(
            "extra".to_string(),
            Tensor::zeros(2, candle_core::DType::F32, &dev).unwrap(),
        );
        match Mlp::from_tensors(&t, names(3), Link::Identity, "extra") {
            Err(AiError::ModelFormat { reason, .. }) => assert!(reason.contains("extra")),
            other => panic!("expected ModelFormat, got {other:?}"),
        }
        // Inputs.
        let x = Matrix::from_rows(&[vec![1.0, f64::NAN]]).unwrap();
        assert!(matches!(
            m.predict(&x, Output::Margin),
            Err(AiError::NonFinite { row: 0, .. })
        ));
        let x = Matrix::from_rows(&[vec![1.0, 2.0, 3.0]]).unwrap();
        assert!(matches!(
            m.predict(&x, Output::Margin),
            Err(AiError::FeatureCount {
                expected: 2,
                got: 3
            })
        ));
    }

    #[test]
    fn integrated_gradients_exact_for_linear_network() {
        let dev = Device::Cpu;
        let mut t = HashMap::new();
        t.insert(
            "layers.0.weight".to_string(),
            Tensor::from_vec(vec![0.5f64, -2.0, 3.0], (1, 3), &dev).unwrap(),
        );
        t.insert(
            "layers.0.bias".to_string(),
            Tensor::from_vec(vec![1.0f64], 1, &dev).unwrap(),
        );
        let m = Mlp::from_tensors(&t, names(3), Link::Identity, "lin").unwrap();
        let ig = IntegratedGradients::new(&m, &[1.0, 1.0, 1.0], 4).unwrap();
        let e = ig.explain_row(&[3.0, 0.0, 2.0]).unwrap();
        assert_eq!(e.values, vec![0.5 * 2.0, -2.0 * -1.0, 3.0 * 1.0]);
        assert_eq!(e.base_value, 1.0 + 0.5 - 2.0 + 3.0);
        e.check_additivity(0, 1e-12).unwrap();
    }

    #[test]
    fn integrated_gradients_are_complete_on_a_relu_network() {
        let m = Mlp::new_random(names(5), &[12, 6], Link::Logistic).unwrap();
        let ig = IntegratedGradients::new(&m, &[0.0; 5], 16384).unwrap();
        let rows = Matrix::from_rows(&[
            vec![1.0, -2.0, 0.5, 3.0, -1.0],
            vec![-0.5, 0.25, 2.0, -3.0, 1.5],
        ])
        .unwrap();
        let exps = ig.explain(&rows).unwrap();
        for (i, e) in exps.iter().enumerate() {
            // The Riemann sum's error at the ReLU kinks scales with the attributions along the
            // path, not with their net sum (random weights can make the net change tiny while
            // individual attributions are large), so the tolerance is 1 % of the larger.
            let spread = (e.prediction - e.base_value).abs().max(1e-3);
            let magnitude = e.values.iter().map(|v| v.abs()).sum::<f64>();
            e.check_additivity(i, 1e-2 * spread.max(magnitude)).unwrap();
        }
        assert!(matches!(
            IntegratedGradients::new(&m, &[0.0; 5], 0),
            Err(AiError::InvalidArgument(_))
        ));
    }
}
