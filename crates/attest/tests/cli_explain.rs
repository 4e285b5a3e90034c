//! `attest explain` end to end: the built binary on the reference models and data.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn reference(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/reference"
    ))
    .join(name)
}

fn attest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attest"))
        .args(args)
        .env_remove("ATTEST_LOG")
        .output()
        .expect("run the attest binary")
}

fn path_arg(p: &std::path::Path) -> String {
    p.display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "attest failed ({:?}): {}",
        o.status,
        stderr(o)
    );
}

/// Runs `attest --json explain ...` and splits the JSON lines into rows and the summary.
fn explain_json(args: &[&str]) -> (Vec<Value>, Value) {
    let mut full = vec!["--json", "explain"];
    full.extend_from_slice(args);
    let o = attest(&full);
    assert_ok(&o);
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each stdout line is JSON"))
        .collect();
    let (summary, rows) = lines.split_last().expect("at least the summary line");
    assert_eq!(summary["type"], "summary");
    assert!(rows.iter().all(|r| r["type"] == "row"));
    (rows.to_vec(), summary.clone())
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// A numeric CSV as (header, rows).
fn read_csv(name: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut rdr = csv::Reader::from_path(reference(name)).expect("open reference csv");
    let header = rdr
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    let rows = rdr
        .records()
        .map(|r| r.expect("record").iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}

fn column_f64(name: &str, column: &str) -> Vec<f64> {
    let (h, rows) = read_csv(name);
    let j = h.iter().position(|c| c == column).expect("column");
    rows.iter().map(|r| r[j].parse().expect("number")).collect()
}

fn additive(row: &Value, tol: f64) {
    let sum: f64 = floats(&row["values"]).iter().sum();
    let base = row["base_value"].as_f64().expect("base");
    let pred = row["prediction"].as_f64().expect("prediction");
    assert!(
        (base + sum - pred).abs() <= tol,
        "row {}: {base} + {sum} != {pred}",
        row["row"]
    );
}

#[test]
fn tree_shap_json_matches_the_shap_reference() {
    let (rows, summary) = explain_json(&[
        "--model",
        &path_arg(&reference("xgb_adult.json")),
        "--data",
        &path_arg(&reference("X_test_encoded.csv")),
        "--limit",
        "40",
    ]);
    assert_eq!(rows.len(), 40);
    let (header, shap) = read_csv("shap_xgb_100.csv");
    assert_eq!(
        summary["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        header
    );
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(reference("shap_xgb_meta.json")).unwrap())
            .unwrap();
    let expected_base = meta["expected_value"].as_f64().unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["row"].as_u64(), Some(i as u64));
        assert_eq!(row["method"], "tree");
        assert_eq!(row["output"], "margin");
        assert!((row["base_value"].as_f64().unwrap() - expected_base).abs() < 1e-5);
        let ours = floats(&row["values"]);
        for (j, (a, b)) in ours.iter().zip(&shap[i]).enumerate() {
            let b: f64 = b.parse().unwrap();
            assert!(
                (a - b).abs() < 1e-5,
                "row {i} feature {}: ours {a}, shap {b}",
                header[j]
            );
        }
        additive(row, 1e-6);
        let top = row["top"].as_array().unwrap();
        assert_eq!(top.len(), 3, "default --top 3");
        // The top features are the largest |SHAP| of the reference row.
        let mut order: Vec<usize> = (0..header.len()).collect();
        let refrow: Vec<f64> = shap[i].iter().map(|s| s.parse().unwrap()).collect();
        order.sort_by(|&a, &b| refrow[b].abs().total_cmp(&refrow[a].abs()));
        assert_eq!(top[0]["name"], header[order[0]].as_str());
    }
    assert_eq!(summary["rows"], 40);
    assert_eq!(summary["additive"], true);
    assert_eq!(summary["model_type"], "xgboost");
    let gi = summary["global_importance"].as_array().unwrap();
    assert_eq!(gi.len(), header.len());
    // Mean |SHAP| over the 40 rows, from the reference values.
    let top_feature = gi[0]["feature"].as_str().unwrap();
    let j = header.iter().position(|h| h == top_feature).unwrap();
    let mean: f64 = shap[..40]
        .iter()
        .map(|r| r[j].parse::<f64>().unwrap().abs())
        .sum::<f64>()
        / 40.0;
    assert!((gi[0]["mean_abs"].as_f64().unwrap() - mean).abs() < 1e-5);
    for w in gi.windows(2) {
        assert!(w[0]["mean_abs"].as_f64() >= w[1]["mean_abs"].as_f64());
    }
}

#[test]
fn tree_text_output_shows_rows_and_global_importance() {
    let o = attest(&[
        "explain",
        "--model",
        &path_arg(&reference("xgb_adult.json")),
        "--data",
        &path_arg(&reference("X_test_encoded.csv")),
        "--rows",
        "2..4",
        "--top",
        "2",
    ]);
    assert_ok(&o);
    let text = stdout(&o);
    assert!(text.contains("row 2: prediction"), "{text}");
    assert!(text.contains("row 3: prediction"), "{text}");
    assert!(!text.contains("row 4:"), "{text}");
    assert!(text.contains("global importance (mean |SHAP| over 2 rows)"));
    let (header, shap) = read_csv("shap_xgb_100.csv");
    let refrow: Vec<f64> = shap[2].iter().map(|s| s.parse().unwrap()).collect();
    let best = (0..header.len())
        .max_by(|&a, &b| refrow[a].abs().total_cmp(&refrow[b].abs()))
        .unwrap();
    let after_row2 = &text[text.find("row 2:").unwrap()..];
    let first_feature_line = after_row2.lines().nth(2).unwrap();
    assert!(
        first_feature_line.trim_start().starts_with(&header[best]),
        "{first_feature_line}"
    );
    assert!(first_feature_line.contains(if refrow[best] > 0.0 {
        "increases"
    } else {
        "decreases"
    }));
    // Progress bars never go to a non-terminal stderr.
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn lightgbm_and_sklearn_predictions_match_the_reference() {
    let data = path_arg(&reference("X_test_encoded.csv"));
    let (rows, summary) = explain_json(&[
        "--model",
        &path_arg(&reference("lgbm_adult.txt")),
        "--data",
        &data,
        "--limit",
        "10",
    ]);
    assert_eq!(summary["model_type"], "lightgbm");
    let lgbm = column_f64("preds.csv", "lgbm_margin");
    for (i, r) in rows.iter().enumerate() {
        assert!((r["prediction"].as_f64().unwrap() - lgbm[i]).abs() < 1e-5);
        additive(r, 1e-6);
    }
    let (rows, summary) = explain_json(&[
        "--model",
        &path_arg(&reference("logreg_adult.json")),
        "--data",
        &data,
        "--limit",
        "10",
    ]);
    assert_eq!(summary["model_type"], "sklearn-logreg");
    assert_eq!(summary["method"], "linear");
    assert!(summary["background"]["source"]
        .as_str()
        .unwrap()
        .contains("all 15060 rows"));
    let lr = column_f64("preds.csv", "lr_margin");
    for (i, r) in rows.iter().enumerate() {
        assert!((r["prediction"].as_f64().unwrap() - lr[i]).abs() < 1e-6);
        additive(r, 1e-6);
    }
}

#[test]
fn kernel_shap_with_the_reference_background() {
    let args = [
        "--model",
        &path_arg(&reference("xgb_adult.json")),
        "--data",
        &path_arg(&reference("X_test_encoded.csv")),
        "--method",
        "kernel",
        "--nsamples",
        "64",
        "--limit",
        "3",
        "--background",
        &path_arg(&reference("kernel_background_100.csv")),
    ];
    let (rows, summary) = explain_json(&args);
    assert_eq!(rows.len(), 3);
    assert_eq!(summary["output"], "probability");
    assert_eq!(summary["background"]["rows"], 100);
    let (h, kernel_ref) = read_csv("shap_kernel_xgb_10.csv");
    let ev = h.iter().position(|c| c == "expected_value").unwrap();
    let expected_value: f64 = kernel_ref[0][ev].parse().unwrap();
    let proba = column_f64("preds.csv", "xgb_proba");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["method"], "kernel");
        assert!((r["base_value"].as_f64().unwrap() - expected_value).abs() < 1e-6);
        assert!((r["prediction"].as_f64().unwrap() - proba[i]).abs() < 1e-6);
        additive(r, 1e-6);
    }
    // Seeded: the same command gives the same numbers.
    let (again, _) = explain_json(&args);
    assert_eq!(rows, again);
}

#[test]
fn kernel_default_background_is_a_seeded_sample_and_says_so() {
    let o = attest(&[
        "explain",
        "--model",
        &path_arg(&reference("xgb_adult.json")),
        "--data",
        &path_arg(&reference("X_test_encoded.csv")),
        "--method",
        "kernel",
        "--nsamples",
        "32",
        "--limit",
        "1",
    ]);
    assert_ok(&o);
    let text = stdout(&o);
    assert!(
        text.contains("background: seeded sample of 100 rows"),
        "{text}"
    );
}

#[test]
fn lime_is_seeded_and_not_checked_for_additivity() {
    let args = [
        "--model",
        &path_arg(&reference("xgb_adult.json")),
        "--data",
        &path_arg(&reference("X_test_encoded.csv")),
        "--method",
        "lime",
        "--nsamples",
        "400",
        "--limit",
        "2",
        "--seed",
        "3",
    ];
    let (rows, summary) = explain_json(&args);
    assert_eq!(summary["additive"], false);
    assert_eq!(summary["method"], "lime");
    let proba = column_f64("preds.csv", "xgb_proba");
    for (i, r) in rows.iter().enumerate() {
        let lime = &r["lime"];
        let terms = lime["terms"].as_array().unwrap();
        assert!(!terms.is_empty());
        let sum: f64 = terms.iter().map(|t| t["weight"].as_f64().unwrap()).sum();
        let local = lime["local_prediction"].as_f64().unwrap();
        assert!((lime["intercept"].as_f64().unwrap() + sum - local).abs() < 1e-9);
        assert!((r["prediction"].as_f64().unwrap() - proba[i]).abs() < 1e-6);
        // The values vector carries the term weights at their columns.
        let values = floats(&r["values"]);
        for t in terms {
            let j = t["feature"].as_u64().unwrap() as usize;
            assert_eq!(values[j], t["weight"].as_f64().unwrap());
        }
    }
    let (again, _) = explain_json(&args);
    assert_eq!(rows, again);
}

#[test]
fn html_report_has_importance_and_waterfall_charts() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let o = attest(&[
        "explain",
        "--model",
        &path_arg(&reference("xgb_adult.json")),
        "--data",
        &path_arg(&reference("X_test_encoded.csv")),
        "--limit",
        "5",
        "--html",
        &path_arg(&html),
        "--waterfall-row",
        "3",
    ]);
    assert_ok(&o);
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.contains("<svg"));
    assert!(text.contains("Global importance"));
    assert!(text.contains("Row 3"), "waterfall of the requested row");
    assert!(!text.contains("src=\"http"), "self-contained");

    let o = attest(&[
        "explain",
        "--model",
        &path_arg(&reference("xgb_adult.json")),
        "--data",
        &path_arg(&reference("X_test_encoded.csv")),
        "--limit",
        "5",
        "--html",
        &path_arg(&dir.path().join("other.html")),
        "--waterfall-row",
        "9",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--waterfall-row 9"), "{}", stderr(&o));
}

#[test]
fn missing_feature_column_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("no_age.csv");
    let src = std::fs::read_to_string(reference("X_test_encoded.csv")).unwrap();
    let trimmed: String = src
        .lines()
        .take(5)
        .map(|l| l.split_once(',').unwrap().1.to_string() + "\n")
        .collect();
    std::fs::write(&csv, trimmed).unwrap();
    let o = attest(&[
        "explain",
        "--model",
        &path_arg(&reference("xgb_adult.json")),
        "--data",
        &path_arg(&csv),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("error["), "{err}");
    assert!(err.contains("column \"age\" not found"), "{err}");
}

#[test]
fn unsupported_model_file_is_rejected() {
    let o = attest(&[
        "explain",
        "--model",
        &path_arg(&reference("preds.csv")),
        "--data",
        &path_arg(&reference("X_test_encoded.csv")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("error["), "{err}");
    assert!(err.contains("unsupported model file"), "{err}");
    assert!(err.contains("preds.csv"), "{err}");

    let o = attest(&[
        "explain",
        "--model",
        &path_arg(&reference("fairness.json")),
        "--data",
        &path_arg(&reference("X_test_encoded.csv")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unsupported model file"));
}

#[test]
fn wrong_method_for_the_model_is_an_error() {
    let o = attest(&[
        "explain",
        "--model",
        &path_arg(&reference("xgb_adult.json")),
        "--data",
        &path_arg(&reference("X_test_encoded.csv")),
        "--method",
        "linear",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--method linear needs a linear model"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn json_errors_are_one_json_object_on_stderr() {
    let o = attest(&[
        "--json",
        "explain",
        "--model",
        &path_arg(&reference("xgb_adult.json")),
        "--data",
        &path_arg(&reference("preds.csv")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let v: Value = serde_json::from_str(stderr(&o).trim()).expect("stderr is one JSON object");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("column \"age\" not found"), "{msg}");
    assert!(v["error"]["code"].is_string());
}

#[test]
fn bad_row_ranges_are_rejected() {
    for (spec, needle) in [("10..5", "selects no rows"), ("0..99999", "past the end")] {
        let o = attest(&[
            "explain",
            "--model",
            &path_arg(&reference("xgb_adult.json")),
            "--data",
            &path_arg(&reference("shap_xgb_100_X.csv")),
            "--rows",
            spec,
        ]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains(needle), "{spec}: {}", stderr(&o));
    }
}

/// The first `n` data lines of X_test_encoded.csv, with `edit` applied to data row `row`.
fn test_rows_with(n: usize, row: usize, edit: impl Fn(&str) -> String) -> String {
    let src = std::fs::read_to_string(reference("X_test_encoded.csv")).unwrap();
    let mut out = String::new();
    for (i, line) in src.lines().take(n + 1).enumerate() {
        let line = if i == row + 1 {
            edit(line)
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn per_row_errors_name_the_data_row() {
    let dir = tempfile::tempdir().unwrap();
    // LIME needs finite values: an empty (missing) age at data row 20, explained from row 18
    // (the error must name the data row, not the row inside a batch).
    let csv = dir.path().join("missing.csv");
    std::fs::write(
        &csv,
        test_rows_with(40, 20, |l| format!(",{}", l.split_once(',').unwrap().1)),
    )
    .unwrap();
    let o = attest(&[
        "explain",
        "--model",
        &path_arg(&reference("xgb_adult.json")),
        "--data",
        &path_arg(&csv),
        "--background",
        &path_arg(&reference("kernel_background_100.csv")),
        "--method",
        "lime",
        "--nsamples",
        "50",
        "--rows",
        "18..24",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("\"age\"") && err.contains("row 20"), "{err}");

    // TreeSHAP routes the missing value by the default direction and stays additive.
    let (rows, _) = explain_json(&[
        "--model",
        &path_arg(&reference("xgb_adult.json")),
        "--data",
        &path_arg(&csv),
        "--rows",
        "20",
    ]);
    assert_eq!(rows.len(), 1);
    assert!(rows[0]["top"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["name"] != "age" || c["value"].is_null()));
    additive(&rows[0], 1e-6);

    // A category code the logistic regression does not know (sex = 7) at data row 5.
    let csv = dir.path().join("badcode.csv");
    std::fs::write(
        &csv,
        test_rows_with(10, 5, |l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            cells[8] = "7.0";
            cells.join(",")
        }),
    )
    .unwrap();
    let o = attest(&[
        "explain",
        "--model",
        &path_arg(&reference("logreg_adult.json")),
        "--data",
        &path_arg(&csv),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("\"sex\"") && err.contains("row 5"), "{err}");
}
