//! `attest audit`: fairness audit of predictions by sensitive group (fairlearn and AIF360
//! measures, optional bootstrap intervals, optional HTML report).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use attest_ai::data::{parse_cell, Table};
use attest_ai::fairness::{
    BootstrapConfig, FairnessConfig, FairnessInput, FairnessReport, GroupMetrics, Interval, Metric,
    PrivilegedGroups,
};
use attest_ai::report::HtmlReport;
use attest_ai::AiError;
use serde_json::{json, Value};

use crate::GlobalArgs;

/// Fairness audit of a CSV of predictions.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// CSV with a header row: labels, predictions and sensitive columns.
    #[arg(long)]
    pub data: PathBuf,
    /// Column of actual labels (0/1).
    #[arg(long)]
    pub label: String,
    /// Column of predicted labels (0/1), or of scores with --threshold.
    #[arg(long)]
    pub pred: String,
    /// Turn the --pred column into labels: 1 when the value is >= this threshold.
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Sensitive columns, comma-separated. Each is audited on its own; several are also
    /// audited together (intersectional groups).
    #[arg(long, value_delimiter = ',', required = true)]
    pub sensitive: Vec<String>,
    /// Privileged group for the AIF360 measures, `feature=value`; join conditions that must all
    /// hold with commas (`sex=Male,race=White`), repeat the flag for alternatives.
    #[arg(long)]
    pub privileged: Vec<String>,
    /// Column of model scores (their per-group mean is reported).
    #[arg(long)]
    pub score: Option<String>,
    /// Column of non-negative sample weights.
    #[arg(long)]
    pub weights: Option<String>,
    /// Bootstrap replicates for confidence intervals (0 = none).
    #[arg(long, default_value_t = 0)]
    pub bootstrap: usize,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Two-sided confidence level of the bootstrap intervals.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Write the self-contained HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

/// Parses `--privileged` values into conjunctions of `(feature, value)`.
fn parse_privileged(
    specs: &[String],
    sensitive: &[String],
) -> anyhow::Result<Vec<Vec<(String, String)>>> {
    let mut any_of = Vec::new();
    for spec in specs {
        let mut all = Vec::new();
        for cond in spec.split(',') {
            let Some((f, v)) = cond.split_once('=') else {
                bail!("--privileged {spec:?}: expected feature=value, got {cond:?}");
            };
            let (f, v) = (f.trim(), v.trim());
            if f.is_empty() {
                bail!("--privileged {spec:?}: empty feature name in {cond:?}");
            }
            if !sensitive.iter().any(|s| s == f) {
                bail!(
                    "--privileged {spec:?}: {f:?} is not a --sensitive column ({})",
                    sensitive.join(", ")
                );
            }
            all.push((f.to_string(), v.to_string()));
        }
        any_of.push(all);
    }
    Ok(any_of)
}

/// A 0/1 label cell (`0`, `1`, `0.0`, `1.0`, `true`, `false`).
fn parse_label(cell: &str, column: &str, row: usize) -> Result<u8, AiError> {
    let t = cell.trim();
    let bad = |reason: &str| AiError::InvalidValue {
        column: column.to_string(),
        row,
        value: t.to_string(),
        reason: reason.to_string(),
    };
    if t.eq_ignore_ascii_case("true") {
        return Ok(1);
    }
    if t.eq_ignore_ascii_case("false") {
        return Ok(0);
    }
    if t.is_empty() {
        return Err(bad("empty cell; labels must be 0 or 1"));
    }
    let v = t.parse::<f64>().unwrap_or(f64::NAN);
    if v == 0.0 {
        Ok(0)
    } else if v == 1.0 {
        Ok(1)
    } else {
        Err(bad("labels must be 0 or 1"))
    }
}

/// A numeric column that must be complete (no empty cells).
fn numeric_column(table: &Table, column: &str) -> anyhow::Result<Vec<f64>> {
    table
        .column(column)?
        .iter()
        .enumerate()
        .map(|(row, cell)| {
            let cell = cell.trim();
            if cell.is_empty() {
                return Err(AiError::InvalidValue {
                    column: column.to_string(),
                    row,
                    value: String::new(),
                    reason: "empty cell; a number is required".into(),
                }
                .into());
            }
            Ok(parse_cell(cell, column, row)?)
        })
        .collect()
}

/// One report: the sensitive features it groups by and the result.
struct Audit {
    features: Vec<String>,
    report: FairnessReport,
}

/// Runs `attest audit`.
pub async fn run(args: AuditArgs, g: &GlobalArgs) -> anyhow::Result<()> {
    let mut sensitive: Vec<String> = Vec::new();
    for s in args.sensitive.iter().map(|s| s.trim()) {
        if s.is_empty() {
            bail!("--sensitive has an empty column name");
        }
        if !sensitive.iter().any(|x| x == s) {
            sensitive.push(s.to_string());
        }
    }
    let privileged = parse_privileged(&args.privileged, &sensitive)?;
    if !(args.confidence > 0.0 && args.confidence < 1.0) {
        bail!("--confidence must be in (0, 1), got {}", args.confidence);
    }

    let table = Table::read_csv(&args.data)?;
    if table.is_empty() {
        bail!("no data rows in {}", args.data.display());
    }
    let y_true: Vec<u8> = table
        .column(&args.label)?
        .iter()
        .enumerate()
        .map(|(i, c)| parse_label(c, &args.label, i))
        .collect::<Result<_, _>>()?;
    let y_pred: Vec<u8> = match args.threshold {
        Some(t) => {
            if !t.is_finite() {
                bail!("--threshold must be a finite number");
            }
            numeric_column(&table, &args.pred)?
                .into_iter()
                .map(|v| u8::from(v >= t))
                .collect()
        }
        None => table
            .column(&args.pred)?
            .iter()
            .enumerate()
            .map(|(i, c)| parse_label(c, &args.pred, i))
            .collect::<Result<_, _>>()?,
    };
    let scores = match &args.score {
        Some(c) => Some(numeric_column(&table, c)?),
        None => None,
    };
    let weights = match &args.weights {
        Some(c) => {
            let w = numeric_column(&table, c)?;
            if let Some((row, v)) = w.iter().enumerate().find(|(_, v)| **v < 0.0) {
                bail!(AiError::InvalidValue {
                    column: c.clone(),
                    row,
                    value: v.to_string(),
                    reason: "sample weights must be non-negative".into(),
                });
            }
            Some(w)
        }
        None => None,
    };
    let columns: Vec<Vec<&str>> = sensitive
        .iter()
        .map(|s| table.column(s))
        .collect::<Result<_, _>>()?;

    // One report per feature, plus the intersection when there are several. Every privileged
    // condition names --sensitive columns only, so the last report can always evaluate it.
    let mut sets: Vec<Vec<usize>> = (0..sensitive.len()).map(|i| vec![i]).collect();
    if sensitive.len() > 1 {
        sets.push((0..sensitive.len()).collect());
    }
    let mut audits = Vec::with_capacity(sets.len());
    for set in sets {
        let features: Vec<String> = set.iter().map(|&i| sensitive[i].clone()).collect();
        // Privileged conditions that this grouping can evaluate.
        let applicable: Vec<Vec<(String, String)>> = privileged
            .iter()
            .filter(|all| all.iter().all(|(f, _)| features.contains(f)))
            .cloned()
            .collect();
        let config = FairnessConfig {
            privileged: if applicable.is_empty() {
                None
            } else {
                Some(PrivilegedGroups::any_of(applicable))
            },
            bootstrap: (args.bootstrap > 0).then_some(BootstrapConfig {
                replicates: args.bootstrap,
                seed: args.seed,
                confidence: args.confidence,
            }),
        };
        let mut input = FairnessInput::new(&y_true, &y_pred);
        for &i in &set {
            input = input.sensitive(&sensitive[i], &columns[i]);
        }
        if let Some(s) = &scores {
            input = input.score(s);
        }
        if let Some(w) = &weights {
            input = input.weights(w);
        }
        let report = FairnessReport::compute(&input, &config)
            .with_context(|| format!("auditing by {}", features.join(" x ")))?;
        audits.push(Audit { features, report });
    }

    if let Some(path) = &args.html {
        let mut html = HtmlReport::new("Attest fairness audit").paragraph(&format!(
            "{} rows of {}; label {}, prediction {}{}.",
            table.len(),
            args.data.display(),
            args.label,
            args.pred,
            args.threshold
                .map(|t| format!(" (>= {t})"))
                .unwrap_or_default()
        ));
        for a in &audits {
            html = html.fairness(&format!("By {}", a.features.join(" x ")), &a.report);
        }
        html.write_to(path)?;
    }

    let out = &mut std::io::stdout().lock();
    if g.json {
        let v = json!({
            "data": args.data.display().to_string(),
            "rows": table.len(),
            "label": args.label,
            "pred": args.pred,
            "threshold": args.threshold,
            "weighted": weights.is_some(),
            "bootstrap": (args.bootstrap > 0).then(|| json!({
                "replicates": args.bootstrap, "seed": args.seed, "confidence": args.confidence,
            })),
            "reports": audits.iter().map(audit_json).collect::<Vec<_>>(),
            "html": args.html.as_ref().map(|p| p.display().to_string()),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "fairness audit of {}: {} rows, label {}, prediction {}{}{}",
            args.data.display(),
            table.len(),
            args.label,
            args.pred,
            args.threshold
                .map(|t| format!(" (>= {t})"))
                .unwrap_or_default(),
            if weights.is_some() { ", weighted" } else { "" }
        )?;
        for a in &audits {
            write_audit_text(out, a, scores.is_some())?;
        }
        if let Some(p) = &args.html {
            writeln!(out, "\nHTML report written to {}", p.display())?;
        }
    }
    Ok(())
}

/// A metric as JSON: a number, or an object saying why it is undefined.
fn metric_json(m: &Metric) -> Value {
    match m {
        Metric::Value(v) => json!(v),
        Metric::Undefined {
            numerator_count,
            denominator_count,
            reason,
        } => json!({
            "undefined": reason,
            "numerator_count": numerator_count,
            "denominator_count": denominator_count,
        }),
    }
}

/// A metric as a table cell: `undefined (n/d)` instead of NaN.
fn metric_cell(m: &Metric) -> String {
    match m {
        Metric::Value(v) => format!("{v:.6}"),
        Metric::Undefined {
            numerator_count,
            denominator_count,
            ..
        } => format!("undefined ({numerator_count}/{denominator_count})"),
    }
}

/// A metric on its own line: `undefined (n/d: reason)` instead of NaN.
fn metric_line(m: &Metric) -> String {
    match m {
        Metric::Value(v) => format!("{v:.6}"),
        Metric::Undefined {
            numerator_count,
            denominator_count,
            reason,
        } => format!("undefined ({numerator_count}/{denominator_count}: {reason})"),
    }
}

fn interval_json(i: &Interval) -> Value {
    json!({
        "lower": i.lower,
        "upper": i.upper,
        "confidence": i.confidence,
        "defined_replicates": i.defined_replicates,
        "undefined_replicates": i.undefined_replicates,
    })
}

fn group_json(m: &GroupMetrics) -> Value {
    let mut v = json!({
        "count": m.count,
        "weight": m.weight,
        "selection_rate": metric_json(&m.selection_rate),
        "tpr": metric_json(&m.tpr),
        "fpr": metric_json(&m.fpr),
        "fnr": metric_json(&m.fnr),
        "tnr": metric_json(&m.tnr),
        "precision": metric_json(&m.precision),
        "accuracy": metric_json(&m.accuracy),
    });
    if let Some(s) = &m.mean_score {
        v["mean_score"] = metric_json(s);
    }
    v
}

fn four_fifths(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "violated",
        Some(false) => "passed",
        None => "undefined",
    }
}

fn audit_json(a: &Audit) -> Value {
    let r = &a.report;
    json!({
        "sensitive": a.features,
        "groups": r.by_group.iter().map(|(k, m)| {
            let mut v = group_json(m);
            v["group"] = json!(k.to_string());
            v["values"] = json!(k.values());
            v
        }).collect::<Vec<_>>(),
        "overall": group_json(&r.overall),
        "disparities": r.disparities.iter().map(|d| json!({
            "name": d.name,
            "value": metric_json(&d.value),
            "interval": d.interval.as_ref().map(interval_json),
        })).collect::<Vec<_>>(),
        "aif360": r.aif360.as_ref().map(|s| json!({
            "privileged": s.privileged,
            "disparate_impact": metric_json(&s.disparate_impact),
            "statistical_parity_difference": metric_json(&s.statistical_parity_difference),
            "equal_opportunity_difference": metric_json(&s.equal_opportunity_difference),
            "average_odds_difference": metric_json(&s.average_odds_difference),
            "four_fifths_rule": four_fifths(s.four_fifths_violated),
        })),
    })
}

fn write_audit_text(out: &mut impl Write, a: &Audit, with_score: bool) -> anyhow::Result<()> {
    let r = &a.report;
    writeln!(out)?;
    writeln!(out, "== by {} ==", a.features.join(" x "))?;
    let mut rows: Vec<(String, &GroupMetrics)> =
        r.by_group.iter().map(|(k, m)| (k.to_string(), m)).collect();
    rows.push(("(overall)".to_string(), &r.overall));
    let mut header = vec![
        "group",
        "count",
        "selection_rate",
        "TPR",
        "FPR",
        "FNR",
        "precision",
        "accuracy",
    ];
    if with_score {
        header.push("mean_score");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, m)| {
            let mut c = vec![
                name.clone(),
                m.count.to_string(),
                metric_cell(&m.selection_rate),
                metric_cell(&m.tpr),
                metric_cell(&m.fpr),
                metric_cell(&m.fnr),
                metric_cell(&m.precision),
                metric_cell(&m.accuracy),
            ];
            if with_score {
                c.push(m.mean_score.as_ref().map(metric_cell).unwrap_or_default());
            }
            c
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|j| {
            cells
                .iter()
                .map(|c| c[j].len())
                .chain(std::iter::once(header[j].len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |out: &mut dyn Write, c: &[&str]| -> std::io::Result<()> {
        write!(out, "  {:<w$}", c[0], w = widths[0])?;
        for (v, w) in c[1..].iter().zip(&widths[1..]) {
            write!(out, "  {v:>w$}")?;
        }
        writeln!(out)
    };
    line(out, &header)?;
    for c in &cells {
        let refs: Vec<&str> = c.iter().map(String::as_str).collect();
        line(out, &refs)?;
    }
    writeln!(out, "disparities")?;
    let nw = r
        .disparities
        .iter()
        .map(|d| d.name.len())
        .max()
        .unwrap_or(0);
    for d in &r.disparities {
        let ci = match &d.interval {
            Some(i) => format!(
                "  [{:.0}% CI {:.6}, {:.6}; {}/{} replicates defined]",
                i.confidence * 100.0,
                i.lower,
                i.upper,
                i.defined_replicates,
                i.defined_replicates + i.undefined_replicates
            ),
            None => String::new(),
        };
        writeln!(out, "  {:<nw$}  {}{ci}", d.name, metric_line(&d.value))?;
    }
    if let Some(s) = &r.aif360 {
        writeln!(
            out,
            "AIF360 (privileged: {}; unprivileged: every other row)",
            s.privileged
        )?;
        let verdict = match s.four_fifths_violated {
            Some(true) => "four-fifths rule VIOLATED (< 0.8)",
            Some(false) => "four-fifths rule passed (>= 0.8)",
            None => "four-fifths rule undefined",
        };
        writeln!(
            out,
            "  disparate impact               {}  -> {verdict}",
            metric_line(&s.disparate_impact)
        )?;
        writeln!(
            out,
            "  statistical parity difference  {}",
            metric_line(&s.statistical_parity_difference)
        )?;
        writeln!(
            out,
            "  equal opportunity difference   {}",
            metric_line(&s.equal_opportunity_difference)
        )?;
        writeln!(
            out,
            "  average odds difference        {}",
            metric_line(&s.average_odds_difference)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(parse_label("1", "y", 0).unwrap(), 1);
        assert_eq!(parse_label("0.0", "y", 0).unwrap(), 0);
        assert_eq!(parse_label("True", "y", 0).unwrap(), 1);
        let e = parse_label("2", "y", 4).unwrap_err().to_string();
        assert!(
            e.contains("\"y\"") && e.contains("row 4") && e.contains("\"2\""),
            "{e}"
        );
        assert!(parse_label("", "y", 0).is_err());
    }

    #[test]
    fn privileged_specs() {
        let s = vec!["sex".to_string(), "race".to_string()];
        let p = parse_privileged(&["sex=Male,race=White".into(), "sex=Female".into()], &s).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0],
            vec![
                ("sex".into(), "Male".into()),
                ("race".into(), "White".into())
            ]
        );
        assert!(parse_privileged(&["age=30".into()], &s).is_err());
        assert!(parse_privileged(&["sex".into()], &s).is_err());
    }

    proptest::proptest! {
        #[test]
        fn only_zero_and_one_are_labels(v in proptest::num::f64::ANY) {
            let r = parse_label(&v.to_string(), "y", 3);
            proptest::prop_assert_eq!(r.is_ok(), v == 0.0 || v == 1.0);
            if let Ok(l) = r {
                proptest::prop_assert_eq!(f64::from(l), v);
            }
        }

        #[test]
        fn metrics_never_print_nan(v in -1e6f64..1e6, n in 0u64..1000, d in 0u64..1000) {
            for m in [
                Metric::Value(v),
                Metric::Undefined { numerator_count: n, denominator_count: d, reason: "r".into() },
            ] {
                proptest::prop_assert!(!metric_cell(&m).contains("NaN"));
                proptest::prop_assert!(!metric_line(&m).contains("NaN"));
                proptest::prop_assert!(!metric_json(&m).is_null());
            }
        }
    }

    #[test]
    fn undefined_metrics_never_print_nan() {
        let m = Metric::Undefined {
            numerator_count: 0,
            denominator_count: 0,
            reason: "tpr: zero denominator".into(),
        };
        assert_eq!(metric_cell(&m), "undefined (0/0)");
        assert!(metric_line(&m).starts_with("undefined (0/0: "));
        assert!(metric_json(&m)["undefined"].is_string());
    }
}
