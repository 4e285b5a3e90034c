//! The HTML report: well-formed, self-contained, escaped, with every figure.

use attest_ai::drift::{drift_report, ColumnSpec};
use attest_ai::fairness::{
    BootstrapConfig, FairnessConfig, FairnessInput, FairnessReport, PrivilegedGroups,
};
use attest_ai::report::{GlobalImportance, HtmlReport, Waterfall};
use attest_ai::{AiError, Matrix};

const VOID: [&str; 2] = ["meta", "br"];

/// Checks that every tag is closed in order; returns the number of elements seen per name.
fn check_balanced(html: &str) -> std::collections::BTreeMap<String, usize> {
    let mut stack: Vec<String> = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>').expect("unterminated tag");
        let tag = &after[..end];
        rest = &after[end + 1..];
        if tag.starts_with('!') {
            assert!(tag.starts_with("!DOCTYPE"), "unexpected markup <{tag}>");
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack
                .pop()
                .unwrap_or_else(|| panic!("closing </{name}> with nothing open"));
            assert_eq!(open, name, "mismatched </{name}>, open <{open}>");
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(!name.is_empty(), "bad tag <{tag}>");
        // Attribute values must not contain raw quotes or angle brackets: the escaper handles them.
        assert!(!tag.contains('<'), "raw '<' inside <{tag}>");
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{tag}>"
        );
        *seen.entry(name.clone()).or_insert(0) += 1;
        if tag.ends_with('/') || VOID.contains(&name.as_str()) {
            continue;
        }
        stack.push(name);
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    // No stray '>' in text either (escaped as &gt;).
    seen
}

fn fairness_report() -> FairnessReport {
    let y_true = [1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1];
    let y_pred = [1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1];
    let group = [
        "<script>alert(1)</script>",
        "<script>alert(1)</script>",
        "<script>alert(1)</script>",
        "A & \"B\"",
        "A & \"B\"",
        "A & \"B\"",
        "<script>alert(1)</script>",
        "A & \"B\"",
        "<script>alert(1)</script>",
        "A & \"B\"",
        "<script>alert(1)</script>",
        "A & \"B\"",
    ];
    let input = FairnessInput::new(&y_true, &y_pred).sensitive("group", &group);
    let config = FairnessConfig {
        privileged: Some(PrivilegedGroups::single("group", "A & \"B\"")),
        bootstrap: Some(BootstrapConfig {
            replicates: 100,
            seed: 3,
            confidence: 0.9,
        }),
    };
    FairnessReport::compute(&input, &config).unwrap()
}

#[test]
fn report_is_well_formed_escaped_and_complete() {
    let fr = fairness_report();
    let names: Vec<String> = ["age", "hours <per> week", "capital_gain"]
        .map(String::from)
        .to_vec();
    let imp = GlobalImportance::from_attributions(
        "Global importance",
        &names,
        &[vec![0.5, -0.25, 0.0], vec![-1.5, 0.25, 0.125]],
    )
    .unwrap();
    assert_eq!(imp.features[0].1, 1.0);
    let wf = Waterfall::new(
        "Row 7 </section>",
        -1.2,
        vec![("age = 52".into(), 0.8), ("capital_gain = 0".into(), -0.3)],
        -0.7,
        1e-12,
    )
    .unwrap();
    let reference = Matrix::from_rows(
        &(0..1500)
            .map(|i| vec![f64::from(i % 50), f64::from(i % 3)])
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let current = Matrix::from_rows(
        &(0..1200)
            .map(|i| vec![f64::from(i % 50) + 20.0, f64::from(i % 3)])
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let dr = drift_report(
        &reference,
        &current,
        &[ColumnSpec::numeric("x<1>"), ColumnSpec::categorical("c")],
    )
    .unwrap();
    let html = HtmlReport::new("Audit <of> model & data")
        .paragraph("Generated for <b>review</b>.")
        .fairness("Fairness by group", &fr)
        .drift("Drift", &dr)
        .importance(&imp)
        .waterfall(&wf)
        .render();
    let seen = check_balanced(&html);
    // Figures: group bars, disparity whiskers, importance bars, waterfall.
    assert_eq!(seen.get("svg"), Some(&4), "{seen:?}");
    assert!(html.contains("class=\"chart bars\""));
    assert!(html.contains("class=\"chart whiskers\""));
    assert!(html.contains("class=\"chart waterfall\""));
    assert!(
        seen.get("circle").copied().unwrap_or(0) >= 10,
        "disparity points"
    );
    assert!(
        html.contains("class=\"whisker\""),
        "interval whiskers drawn"
    );
    // Escaping: no live script, no raw injected markup.
    assert!(!html.contains("<script"));
    assert!(!html.contains("<b>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("A &amp; &quot;B&quot;"));
    assert!(html.contains("Audit &lt;of&gt; model &amp; data"));
    assert!(html.contains("hours &lt;per&gt; week"));
    assert!(html.contains("Row 7 &lt;/section&gt;"));
    // Self-contained: no external references.
    for needle in ["src=", "href=", "http://", "https://", "@import", "url("] {
        let allowed = needle == "http://"
            && html.matches("http://").count()
                == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count();
        assert!(
            !html.contains(needle) || allowed,
            "external reference {needle}"
        );
    }
    // Drift: x drifted (shift of 20 on a 0..49 range).
    assert!(html.contains("dataset drift detected") || html.contains("dataset drift not detected"));
    assert!(dr.columns[0].drifted);
    // Writing to disk round-trips.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    HtmlReport::new("x")
        .importance(&imp)
        .write_to(&path)
        .unwrap();
    let back = std::fs::read_to_string(&path).unwrap();
    check_balanced(&back);
}

#[test]
fn waterfall_rejects_non_additive_input_and_importance_checks_shapes() {
    let err = Waterfall::new("w", 0.0, vec![("a".into(), 1.0)], 2.0, 1e-9).unwrap_err();
    assert!(matches!(err, AiError::Additivity { .. }), "{err}");
    let names = vec!["a".to_string(), "b".to_string()];
    let err = GlobalImportance::from_attributions("g", &names, &[vec![1.0]]).unwrap_err();
    assert!(
        matches!(
            err,
            AiError::FeatureCount {
                expected: 2,
                got: 1
            }
        ),
        "{err}"
    );
    let err = GlobalImportance::from_attributions("g", &names, &[vec![1.0, f64::NAN]]).unwrap_err();
    assert!(
        matches!(err, AiError::NonFinite { ref column, .. } if column == "b"),
        "{err}"
    );
}

#[test]
fn undefined_metrics_render_as_undefined_not_nan() {
    let y_true = [1, 0, 0, 0];
    let y_pred = [1, 0, 1, 0];
    let g = ["A", "A", "B", "B"];
    let r = FairnessReport::compute(
        &FairnessInput::new(&y_true, &y_pred).sensitive("g", &g),
        &FairnessConfig::default(),
    )
    .unwrap();
    let html = HtmlReport::new("t").fairness("f", &r).render();
    check_balanced(&html);
    assert!(html.contains("class=\"undefined\""));
    assert!(!html.contains("NaN"));
}
