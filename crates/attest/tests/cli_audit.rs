//! `attest audit` end to end: the built binary on the reference predictions.

use std::path::{Path, PathBuf};
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

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn audit_json(args: &[&str]) -> Value {
    let mut full = vec!["--json", "audit"];
    full.extend_from_slice(args);
    let o = attest(&full);
    assert!(o.status.success(), "audit failed: {}", stderr(&o));
    serde_json::from_str(stdout(&o).trim()).expect("stdout is one JSON object")
}

fn fairness_reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(reference("fairness.json")).unwrap()).unwrap()
}

fn disparity(report: &Value, name: &str) -> f64 {
    report["disparities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no disparity {name}"))["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("{name} undefined"))
}

fn group<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == name)
        .unwrap_or_else(|| panic!("no group {name}"))
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-9, "{what}: ours {a}, reference {b}");
}

#[test]
fn figures_match_fairlearn_and_aif360_by_sex() {
    let preds = p(&reference("preds.csv"));
    let v = audit_json(&[
        "--data",
        &preds,
        "--label",
        "y_true",
        "--pred",
        "xgb_pred",
        "--sensitive",
        "sex",
        "--privileged",
        "sex=Male",
    ]);
    let reference = fairness_reference();
    let r = &reference["models"]["xgb"]["fairness"]["sex"];
    assert_eq!(v["rows"], 15060);
    let reports = v["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1);
    let rep = &reports[0];
    for g in ["Female", "Male"] {
        let ours = group(rep, g);
        let theirs = &r["by_group"][g];
        close(
            ours["selection_rate"].as_f64().unwrap(),
            theirs["selection_rate"].as_f64().unwrap(),
            "selection rate",
        );
        close(
            ours["tpr"].as_f64().unwrap(),
            theirs["tpr"].as_f64().unwrap(),
            "tpr",
        );
        close(
            ours["fpr"].as_f64().unwrap(),
            theirs["fpr"].as_f64().unwrap(),
            "fpr",
        );
        assert_eq!(ours["count"].as_f64(), theirs["count"].as_f64());
    }
    close(
        disparity(rep, "demographic_parity_difference[between_groups]"),
        r["demographic_parity_difference"].as_f64().unwrap(),
        "demographic parity difference",
    );
    close(
        disparity(rep, "demographic_parity_ratio[between_groups]"),
        r["demographic_parity_ratio"].as_f64().unwrap(),
        "demographic parity ratio",
    );
    close(
        disparity(rep, "equalized_odds_difference[between_groups,worst_case]"),
        r["equalized_odds_difference"].as_f64().unwrap(),
        "equalized odds difference",
    );
    close(
        disparity(rep, "equalized_odds_ratio[between_groups,worst_case]"),
        r["equalized_odds_ratio"].as_f64().unwrap(),
        "equalized odds ratio",
    );
    let aif = &rep["aif360"];
    close(
        aif["disparate_impact"].as_f64().unwrap(),
        r["aif360"]["disparate_impact"].as_f64().unwrap(),
        "disparate impact",
    );
    close(
        aif["statistical_parity_difference"].as_f64().unwrap(),
        r["aif360"]["statistical_parity_difference"]
            .as_f64()
            .unwrap(),
        "statistical parity difference",
    );
    close(
        aif["average_odds_difference"].as_f64().unwrap(),
        r["aif360"]["classic_api_average_odds_difference"]
            .as_f64()
            .unwrap(),
        "average odds difference",
    );
    close(
        aif["equal_opportunity_difference"].as_f64().unwrap(),
        r["aif360"]["classic_api_equal_opportunity_difference"]
            .as_f64()
            .unwrap(),
        "equal opportunity difference",
    );
    assert_eq!(aif["four_fifths_rule"], "violated");
    assert!(disparity(rep, "theil_index") > 0.0);
}

#[test]
fn race_against_white_and_the_intersection() {
    let v = audit_json(&[
        "--data",
        &p(&reference("preds.csv")),
        "--label",
        "y_true",
        "--pred",
        "lgbm_pred",
        "--sensitive",
        "race,sex",
        "--privileged",
        "race=White",
    ]);
    let reference = fairness_reference();
    let r = &reference["models"]["lgbm"]["fairness"]["race"];
    let reports = v["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 3, "race, sex and race x sex");
    assert_eq!(reports[0]["sensitive"], serde_json::json!(["race"]));
    assert_eq!(reports[2]["sensitive"], serde_json::json!(["race", "sex"]));
    let race = &reports[0];
    close(
        disparity(race, "demographic_parity_difference[between_groups]"),
        r["demographic_parity_difference"].as_f64().unwrap(),
        "demographic parity difference",
    );
    close(
        race["aif360"]["disparate_impact"].as_f64().unwrap(),
        r["aif360"]["disparate_impact"].as_f64().unwrap(),
        "disparate impact",
    );
    // The privileged condition is on race only: the sex report has no AIF360 part, the
    // intersection has the same pooled figures as the race report.
    assert!(reports[1]["aif360"].is_null());
    assert_eq!(
        reports[2]["aif360"]["disparate_impact"],
        race["aif360"]["disparate_impact"]
    );
    assert_eq!(reports[2]["groups"].as_array().unwrap().len(), 10);
}

#[test]
fn text_output_has_groups_disparities_and_the_verdict() {
    let o = attest(&[
        "audit",
        "--data",
        &p(&reference("preds.csv")),
        "--label",
        "y_true",
        "--pred",
        "xgb_pred",
        "--sensitive",
        "sex",
        "--privileged",
        "sex=Male",
        "--score",
        "xgb_proba",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        "== by sex ==",
        "Female",
        "(overall)",
        "selection_rate",
        "precision",
        "mean_score",
        "demographic_parity_difference[between_groups]",
        "equalized_odds_ratio[between_groups,worst_case]",
        "equal_opportunity_difference[between_groups]",
        "theil_index",
        "four-fifths rule VIOLATED",
        "0.335082",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(!text.to_lowercase().contains("nan"));
}

#[test]
fn thresholding_scores_equals_the_stored_predictions() {
    let base = [
        "--data".to_string(),
        p(&reference("preds.csv")),
        "--label".into(),
        "y_true".into(),
        "--sensitive".into(),
        "sex".into(),
    ];
    let mut a: Vec<&str> = base.iter().map(String::as_str).collect();
    a.extend(["--pred", "xgb_pred"]);
    let mut b: Vec<&str> = base.iter().map(String::as_str).collect();
    b.extend(["--pred", "xgb_proba", "--threshold", "0.5"]);
    let (va, vb) = (audit_json(&a), audit_json(&b));
    assert_eq!(va["reports"], vb["reports"]);
}

#[test]
fn bootstrap_intervals_are_seeded() {
    let args = [
        "--data",
        &p(&reference("preds.csv")),
        "--label",
        "y_true",
        "--pred",
        "xgb_pred",
        "--sensitive",
        "sex",
        "--privileged",
        "sex=Male",
        "--bootstrap",
        "60",
        "--seed",
        "7",
    ];
    let v = audit_json(&args);
    let rep = &v["reports"][0];
    for d in rep["disparities"].as_array().unwrap() {
        let i = &d["interval"];
        let (lo, hi) = (i["lower"].as_f64().unwrap(), i["upper"].as_f64().unwrap());
        assert!(lo <= hi, "{d}");
        assert_eq!(
            i["defined_replicates"].as_u64().unwrap() + i["undefined_replicates"].as_u64().unwrap(),
            60
        );
    }
    assert_eq!(audit_json(&args), v, "same seed, same intervals");
    let mut other = args.to_vec();
    let last = other.len() - 1;
    other[last] = "8";
    assert_ne!(audit_json(&other)["reports"], v["reports"]);
}

#[test]
fn undefined_metrics_are_explained_not_nan() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("small.csv");
    // Group b has no actual positives: its TPR and FNR are 0/0.
    std::fs::write(&csv, "y,yhat,g\n1,1,a\n0,0,a\n1,0,a\n0,1,b\n0,0,b\n").unwrap();
    let o = attest(&[
        "audit",
        "--data",
        &p(&csv),
        "--label",
        "y",
        "--pred",
        "yhat",
        "--sensitive",
        "g",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("undefined (0/0"), "{text}");
    assert!(!text.to_lowercase().contains("nan"), "{text}");
    let v = audit_json(&[
        "--data",
        &p(&csv),
        "--label",
        "y",
        "--pred",
        "yhat",
        "--sensitive",
        "g",
    ]);
    let b = group(&v["reports"][0], "b");
    assert!(b["tpr"]["undefined"].is_string(), "{b}");
    assert_eq!(b["tpr"]["denominator_count"], 0);
    assert_eq!(b["selection_rate"].as_f64(), Some(0.5));
}

#[test]
fn weights_of_two_change_nothing_but_the_weight() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("w.csv");
    let mut text = String::from("y,yhat,g,w1,w2\n");
    for i in 0..40 {
        text.push_str(&format!(
            "{},{},{},1,2\n",
            i % 2,
            (i / 3) % 2,
            if i % 5 == 0 { "x" } else { "y" }
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let run = |w: &str| {
        audit_json(&[
            "--data",
            &p(&csv),
            "--label",
            "y",
            "--pred",
            "yhat",
            "--sensitive",
            "g",
            "--weights",
            w,
        ])
    };
    let (one, two) = (run("w1"), run("w2"));
    assert_eq!(
        one["reports"][0]["disparities"],
        two["reports"][0]["disparities"]
    );
    assert_eq!(
        one["reports"][0]["overall"]["weight"].as_f64().unwrap() * 2.0,
        two["reports"][0]["overall"]["weight"].as_f64().unwrap()
    );
}

fn expect_error(args: &[&str], needles: &[&str]) {
    let o = attest(args);
    assert_eq!(o.status.code(), Some(1), "stdout: {}", stdout(&o));
    let err = stderr(&o);
    assert!(err.starts_with("error["), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in {err}");
    }
}

#[test]
fn bad_label_is_named_with_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "y,yhat,g\n1,1,a\n2,0,b\n").unwrap();
    expect_error(
        &[
            "audit",
            "--data",
            &p(&csv),
            "--label",
            "y",
            "--pred",
            "yhat",
            "--sensitive",
            "g",
        ],
        &["\"y\"", "row 1", "\"2\"", "0 or 1"],
    );
}

#[test]
fn missing_column_is_named() {
    expect_error(
        &[
            "audit",
            "--data",
            &p(&reference("preds.csv")),
            "--label",
            "y_true",
            "--pred",
            "xgb_pred",
            "--sensitive",
            "gender",
        ],
        &["column \"gender\" not found", "available columns"],
    );
}

#[test]
fn empty_data_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("empty.csv");
    std::fs::write(&csv, "y,yhat,g\n").unwrap();
    expect_error(
        &[
            "audit",
            "--data",
            &p(&csv),
            "--label",
            "y",
            "--pred",
            "yhat",
            "--sensitive",
            "g",
        ],
        &["no data rows", "empty.csv"],
    );
}

#[test]
fn privileged_group_without_rows_is_named() {
    expect_error(
        &[
            "audit",
            "--data",
            &p(&reference("preds.csv")),
            "--label",
            "y_true",
            "--pred",
            "xgb_pred",
            "--sensitive",
            "sex",
            "--privileged",
            "sex=Martian",
        ],
        &["sex = Martian", "no row matches"],
    );
    expect_error(
        &[
            "audit",
            "--data",
            &p(&reference("preds.csv")),
            "--label",
            "y_true",
            "--pred",
            "xgb_pred",
            "--sensitive",
            "sex",
            "--privileged",
            "race=White",
        ],
        &["\"race\" is not a --sensitive column"],
    );
}

#[test]
fn json_error_format() {
    let o = attest(&[
        "--json",
        "audit",
        "--data",
        &p(&reference("preds.csv")),
        "--label",
        "sex",
        "--pred",
        "xgb_pred",
        "--sensitive",
        "race",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let v: Value = serde_json::from_str(stderr(&o).trim()).expect("one JSON object");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("\"sex\"") && msg.contains("\"Male\""), "{msg}");
}

#[test]
fn html_report_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("audit.html");
    let o = attest(&[
        "audit",
        "--data",
        &p(&reference("preds.csv")),
        "--label",
        "y_true",
        "--pred",
        "xgb_pred",
        "--sensitive",
        "sex,race",
        "--privileged",
        "sex=Male",
        "--bootstrap",
        "20",
        "--html",
        &p(&html),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.contains("<svg"));
    assert!(text.contains("By sex x race"));
    assert!(stdout(&o).contains("HTML report written to"));
}
