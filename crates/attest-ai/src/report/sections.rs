//! The report sections, as HTML fragments.

use std::fmt::Write as _;

use super::attribution::{GlobalImportance, Waterfall};
use super::escape::{escape, num};
use super::svg::{self, BarRow, Whisker};
use crate::drift::{ColumnStats, DriftReport};
use crate::fairness::{FairnessReport, Metric};

fn metric_cell(m: &Metric) -> String {
    match m {
        Metric::Value(v) => format!("<td>{}</td>", num(*v)),
        Metric::Undefined { reason, .. } => {
            format!(
                "<td class=\"undefined\" title=\"{}\">undefined</td>",
                escape(reason)
            )
        }
    }
}

pub(super) fn fairness(heading: &str, r: &FairnessReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<section class=\"fairness\"><h2>{}</h2><p>Sensitive features: {}</p>",
        escape(heading),
        escape(&r.feature_names.join(", "))
    );
    out.push_str("<table class=\"groups\"><thead><tr><th>group</th><th>count</th><th>weight</th><th>selection rate</th><th>TPR</th><th>FPR</th><th>FNR</th><th>TNR</th><th>precision</th><th>accuracy</th></tr></thead><tbody>");
    let rows = r
        .by_group
        .iter()
        .map(|(k, m)| (k.to_string(), m))
        .chain(std::iter::once(("overall".to_string(), &r.overall)));
    for (name, m) in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td>",
            escape(&name),
            m.count,
            num(m.weight)
        );
        for v in [
            &m.selection_rate,
            &m.tpr,
            &m.fpr,
            &m.fnr,
            &m.tnr,
            &m.precision,
            &m.accuracy,
        ] {
            out.push_str(&metric_cell(v));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    let series = ["selection rate", "TPR", "FPR"].map(String::from);
    let bars: Vec<BarRow> = r
        .by_group
        .iter()
        .map(|(k, m)| BarRow {
            label: k.to_string(),
            values: vec![m.selection_rate.value(), m.tpr.value(), m.fpr.value()],
        })
        .collect();
    let _ = write!(
        out,
        "<figure>{}</figure>",
        svg::grouped_bars("Group metrics", &series, &bars)
    );
    out.push_str("<table class=\"disparities\"><thead><tr><th>disparity</th><th>value</th><th>interval</th></tr></thead><tbody>");
    for d in &r.disparities {
        let interval = match &d.interval {
            Some(i) => format!(
                "{} [{}, {}] ({} of {} replicates defined)",
                escape(&format!("{:.0}%", i.confidence * 100.0)),
                num(i.lower),
                num(i.upper),
                i.defined_replicates,
                i.defined_replicates + i.undefined_replicates
            ),
            None => String::from("&#8212;"),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td>{}<td>{}</td></tr>",
            escape(&d.name),
            metric_cell(&d.value),
            interval
        );
    }
    out.push_str("</tbody></table>");
    let items: Vec<Whisker> = r
        .disparities
        .iter()
        .map(|d| Whisker {
            label: d.name.clone(),
            value: d.value.value(),
            interval: d.interval.map(|i| (i.lower, i.upper)),
        })
        .collect();
    let _ = write!(
        out,
        "<figure>{}</figure>",
        svg::whiskers("Disparities", &items)
    );
    if let Some(a) = &r.aif360 {
        let verdict = match a.four_fifths_violated {
            Some(true) => "violated (disparate impact below 0.8)",
            Some(false) => "satisfied",
            None => "undefined",
        };
        let _ = write!(
            out,
            "<p>AIF360, privileged: {}. Four-fifths rule: {}.</p>",
            escape(&a.privileged),
            escape(verdict)
        );
    }
    out.push_str("</section>");
    out
}

pub(super) fn drift(heading: &str, r: &DriftReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<section class=\"drift\"><h2>{}</h2><p>{} of {} columns drifted (share {}, threshold {}): dataset drift {}.</p>",
        escape(heading),
        r.drifted_columns,
        r.columns.len(),
        num(r.share_drifted),
        num(r.drift_share),
        if r.dataset_drift { "detected" } else { "not detected" }
    );
    out.push_str("<table><thead><tr><th>column</th><th>test</th><th>score</th><th>threshold</th><th>drift</th><th>PSI</th><th>Jensen-Shannon</th></tr></thead><tbody>");
    for c in &r.columns {
        let (psi, js) = match &c.stats {
            ColumnStats::Numeric(s) => (s.psi, s.jensen_shannon),
            ColumnStats::Categorical(s) => (s.psi, s.jensen_shannon),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.name),
            escape(&format!("{:?}", c.test)),
            num(c.score),
            num(c.threshold),
            if c.drifted { " class=\"drift\"" } else { "" },
            if c.drifted { "yes" } else { "no" },
            num(psi),
            num(js)
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

pub(super) fn importance(g: &GlobalImportance) -> String {
    let mut feats = g.features.clone();
    feats.sort_by(|a, b| b.1.total_cmp(&a.1));
    let rows: Vec<BarRow> = feats
        .into_iter()
        .map(|(label, v)| BarRow {
            label,
            values: vec![Some(v)],
        })
        .collect();
    format!(
        "<section class=\"importance\"><h2>{}</h2><figure>{}</figure></section>",
        escape(&g.title),
        svg::grouped_bars(&g.title, &["mean |SHAP|".to_string()], &rows)
    )
}

pub(super) fn waterfall(w: &Waterfall) -> String {
    format!(
        "<section class=\"waterfall\"><h2>{}</h2><figure>{}</figure><p>base value {} + contributions {} = prediction {}</p></section>",
        escape(&w.title),
        svg::waterfall(&w.title, w.base_value, &w.contributions, "prediction"),
        num(w.base_value),
        num(w.contributions.iter().map(|c| c.1).sum()),
        num(w.prediction)
    )
}
