//! HTML rendering of the dashboard pages: server-rendered, inline CSS and SVG, no script and
//! no external resource (the favicon is an empty data URL so the browser fetches nothing).
//!
//! Every piece of text that comes from a request, the log or the auditor goes through
//! [`escape`]; decision ids in links are also percent-encoded.

use std::fmt::Write as _;

use attest_ai::report::escape;
use attest_ai::report::svg::{self, BarRow, Whisker};
use attest_lending::{Decision, Outcome};
use chrono::{DateTime, Utc};

use super::view::{
    AuditStatus, DecisionPageView, IncidentRow, IncidentsPageView, ModelsPageView, OverviewView,
    RateView,
};

/// Seconds between automatic reloads of the overview and incidents pages.
pub const REFRESH_SECONDS: u32 = 15;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}\
header{background:#1f2a44;color:#fff;padding:.6em 2em}header a{color:#cfe0ff;margin-right:1.2em;text-decoration:none}\
header strong{margin-right:2em}main{padding:1em 2em;max-width:1150px}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.8em 0;background:#fff}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th:first-child,td:first-child{text-align:left}td.text{text-align:left}\
.tiles{display:flex;flex-wrap:wrap;gap:1em}.tile{background:#fff;border:1px solid #ccc;border-radius:6px;padding:.6em 1em;min-width:150px}\
.tile .label{font-size:.85em;color:#555}.tile .figure{font-size:1.6em;font-weight:bold}\
.note{color:#555;font-style:italic}.bad{color:#b00020;font-weight:bold}.ok{color:#1b7a2e}\
.approve{color:#1b7a2e;font-weight:bold}.decline{color:#b00020;font-weight:bold}\
svg text{font-size:12px}svg .chart-title{font-weight:bold}figure{margin:.8em 0}\
footer{color:#777;font-size:.8em;padding:1em 2em}code{font-size:.95em}";

/// Escapes and percent-encodes a path segment (keeps `A-Z a-z 0-9 - _ . ~`).
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A number with 4 decimals (`n/a` when not finite).
pub fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "n/a".into()
    }
}

/// A fraction as a percentage with one decimal (`62.5%`).
pub fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1}%", v * 100.0)
    } else {
        "n/a".into()
    }
}

fn opt_num(v: Option<f64>) -> String {
    v.map_or_else(|| "undefined".into(), num)
}

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn decision_word(d: Decision) -> &'static str {
    match d {
        Decision::Approve => "approve",
        Decision::Decline => "decline",
    }
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Repaid => "repaid",
        Outcome::Defaulted => "defaulted",
    }
}

fn page(title: &str, refresh: bool, generated_at: &DateTime<Utc>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 4096);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    if refresh {
        let _ = write!(
            out,
            "<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">"
        );
    }
    let _ = write!(
        out,
        "<title>Attest · {}</title><link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style></head><body>",
        escape(title)
    );
    out.push_str(
        "<header><nav><strong>Attest</strong><a href=\"/\">Overview</a><a href=\"/models\">Models</a>\
<a href=\"/incidents\">Incidents</a></nav></header><main>",
    );
    let _ = write!(out, "<h1>{}</h1>", escape(title));
    out.push_str(body);
    let _ = writeln!(
        out,
        "</main><footer>Generated at {}{}</footer></body></html>",
        time(generated_at),
        if refresh {
            format!(" · reloads every {REFRESH_SECONDS} s")
        } else {
            String::new()
        }
    );
    out
}

fn tile(out: &mut String, id: &str, label: &str, figure: &str) {
    let _ = write!(
        out,
        "<div class=\"tile\"><div class=\"label\">{}</div><div class=\"figure\" id=\"{}\">{}</div></div>",
        escape(label),
        escape(id),
        escape(figure)
    );
}

/// Vertical bars of decisions per minute.
fn rate_chart(rate: &RateView) -> String {
    const W: f64 = 890.0;
    const H: f64 = 140.0;
    const LEFT: f64 = 50.0;
    const TOP: f64 = 26.0;
    const BOTTOM: f64 = 22.0;
    let max = rate
        .per_minute
        .iter()
        .map(|b| b.1)
        .max()
        .unwrap_or(0)
        .max(1);
    let n = rate.per_minute.len().max(1) as f64;
    let plot_w = W - LEFT - 10.0;
    let plot_h = H - TOP - BOTTOM;
    let bar_w = plot_w / n;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart rate\" width=\"{W}\" height=\"{H}\" \
viewBox=\"0 0 {W} {H}\" role=\"img\"><title>Decisions per minute, last hour</title>\
<text x=\"4\" y=\"16\" class=\"chart-title\">Decisions per minute, last hour</text>\
<text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{max}</text><text x=\"{lx}\" y=\"{by}\" text-anchor=\"end\">0</text>",
        lx = LEFT - 6.0,
        ty = TOP + 10.0,
        by = TOP + plot_h
    );
    for (i, (start, count)) in rate.per_minute.iter().enumerate() {
        let h = plot_h * (*count as f64) / (max as f64);
        let x = LEFT + i as f64 * bar_w;
        let _ = write!(
            out,
            "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"#0072b2\"><title>{}: {}</title></rect>",
            x + 1.0,
            TOP + plot_h - h,
            (bar_w - 2.0).max(1.0),
            h,
            escape(&start.format("%H:%M").to_string()),
            count
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"#444\"/>",
        y = TOP + plot_h,
        x2 = W - 10.0
    );
    if let (Some(first), Some(last)) = (rate.per_minute.first(), rate.per_minute.last()) {
        let _ = write!(
            out,
            "<text x=\"{LEFT}\" y=\"{y}\">{}</text><text x=\"{x2}\" y=\"{y}\" text-anchor=\"end\">{}</text>",
            escape(&first.0.format("%H:%M").to_string()),
            escape(&last.0.format("%H:%M").to_string()),
            y = H - 6.0,
            x2 = W - 10.0
        );
    }
    out.push_str("</svg>");
    out
}

/// Renders the overview page.
pub fn overview(v: &OverviewView) -> String {
    let mut b = String::with_capacity(16_384);
    b.push_str("<section class=\"tiles\" id=\"summary\">");
    tile(
        &mut b,
        "decision-count",
        "Decisions",
        &v.totals.decisions.to_string(),
    );
    tile(
        &mut b,
        "approval-rate",
        "Approval rate",
        &v.totals.approval_rate().map_or_else(|| "n/a".into(), pct),
    );
    tile(
        &mut b,
        "decisions-last-minute",
        "Decisions, last minute",
        &v.rate.last_minute.to_string(),
    );
    tile(
        &mut b,
        "decisions-last-hour",
        "Decisions, last hour",
        &v.rate.last_hour.to_string(),
    );
    tile(
        &mut b,
        "outcome-count",
        "Outcomes (repaid / defaulted)",
        &format!("{} / {}", v.totals.repaid, v.totals.defaulted),
    );
    let _ = write!(
        b,
        "<div class=\"tile\"><div class=\"label\">Open incidents</div><div class=\"figure\"><a id=\"open-incidents\" href=\"/incidents\">{}</a></div></div>",
        v.open_incidents
    );
    b.push_str("</section>");
    let _ = write!(
        b,
        "<p>Active model: <code id=\"active-model\">{}</code></p>",
        v.active_model
            .as_ref()
            .map_or_else(|| "none".into(), |m| escape(&m.to_string()))
    );

    b.push_str("<section id=\"rate\"><h2>Decision rate</h2>");
    if v.totals.decisions == 0 {
        b.push_str("<p class=\"note\">No decisions yet.</p>");
    }
    b.push_str("<figure>");
    b.push_str(&rate_chart(&v.rate));
    b.push_str("</figure></section>");

    match &v.audit {
        AuditStatus::Available { as_of } => {
            if let Some(t) = as_of {
                let _ = write!(
                    b,
                    "<p class=\"note\" id=\"audit-as-of\">Audit state as of {}.</p>",
                    time(t)
                );
            }
            audit_sections(&mut b, v);
        }
        AuditStatus::Unavailable(reason) => {
            let _ = write!(
                b,
                "<section id=\"audit\"><h2>Fairness and drift</h2><p class=\"note\" id=\"audit-unavailable\">Audit state unavailable: {}</p></section>",
                escape(reason)
            );
        }
    }

    b.push_str("<section id=\"lag\"><h2>Consumer and projection lag</h2>");
    if v.lags.is_empty() {
        b.push_str("<p class=\"note\">No consumers reported.</p>");
    } else {
        b.push_str("<table><thead><tr><th>consumer / projection</th><th>events behind</th><th>seconds behind</th></tr></thead><tbody>");
        for l in &v.lags {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&l.name),
                l.events,
                l.seconds
                    .map_or_else(|| "unknown".into(), |s| format!("{s:.1}"))
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</section>");

    b.push_str("<section id=\"recent\"><h2>Recent decisions</h2>");
    if v.recent.is_empty() {
        b.push_str("<p class=\"note\">No decisions yet.</p>");
    } else {
        b.push_str("<table><thead><tr><th>decision id</th><th>decision</th><th>P(default)</th><th>model</th><th>decided at</th><th>outcome</th></tr></thead><tbody>");
        for r in &v.recent {
            let word = decision_word(r.decision);
            let _ = write!(
                b,
                "<tr><td><a href=\"/decisions/{}\">{}</a></td><td class=\"{word}\">{word}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                path_segment(&r.id),
                escape(&r.id),
                num(r.probability),
                escape(&r.model.to_string()),
                time(&r.decided_at),
                r.outcome.map_or("—", outcome_word)
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</section>");
    page("Overview", true, &v.generated_at, &b)
}

fn audit_sections(b: &mut String, v: &OverviewView) {
    b.push_str("<section id=\"groups\"><h2>Approval rate by group</h2>");
    if v.groups.is_empty() {
        b.push_str("<p class=\"note\">No audited decisions yet.</p>");
    } else {
        b.push_str("<table><thead><tr><th>model</th><th>attribute</th><th>group</th><th>window</th><th>decisions</th><th>approval rate</th></tr></thead><tbody>");
        for g in &v.groups {
            let _ = write!(
                b,
                "<tr><td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(&g.model),
                escape(&g.attribute),
                escape(&g.group),
                escape(&g.window),
                g.decisions,
                g.approval_rate.map_or_else(|| "undefined".into(), pct)
            );
        }
        b.push_str("</tbody></table>");
        let mut windows: Vec<String> = Vec::new();
        for g in &v.groups {
            if !windows.contains(&g.window) {
                windows.push(g.window.clone());
            }
        }
        let mut rows: Vec<BarRow> = Vec::new();
        let mut keys: Vec<(String, String, String)> = Vec::new();
        for g in &v.groups {
            let key = (g.model.clone(), g.attribute.clone(), g.group.clone());
            let idx = match keys.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    keys.push(key);
                    rows.push(BarRow {
                        label: format!("{} · {} = {}", g.model, g.attribute, g.group),
                        values: vec![None; windows.len()],
                    });
                    rows.len() - 1
                }
            };
            if let Some(w) = windows.iter().position(|w| *w == g.window) {
                rows[idx].values[w] = g.approval_rate;
            }
        }
        b.push_str("<figure>");
        b.push_str(&svg::grouped_bars(
            "Approval rate by group",
            &windows,
            &rows,
        ));
        b.push_str("</figure>");
    }
    b.push_str("</section>");

    b.push_str("<section id=\"disparities\"><h2>Current disparities</h2>");
    if v.disparities.is_empty() {
        b.push_str("<p class=\"note\">No disparities computed yet.</p>");
    } else {
        b.push_str("<table><thead><tr><th>model</th><th>attribute</th><th>metric</th><th>window</th><th>value</th><th>interval</th><th>threshold</th><th>samples</th><th>status</th></tr></thead><tbody>");
        for d in &v.disparities {
            let (class, status) = if d.breached {
                ("bad", "breached")
            } else {
                ("ok", "no breach")
            };
            let _ = write!(
                b,
                "<tr><td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{status}</td></tr>",
                escape(&d.model),
                escape(&d.attribute),
                escape(&d.metric),
                escape(&d.window),
                opt_num(d.value),
                d.interval
                    .map_or_else(|| "—".into(), |(a, z)| format!("[{}, {}]", num(a), num(z))),
                d.threshold.map_or_else(|| "—".into(), num),
                d.samples
            );
        }
        b.push_str("</tbody></table>");
        let items: Vec<Whisker> = v
            .disparities
            .iter()
            .map(|d| Whisker {
                label: format!("{} · {} · {}", d.attribute, d.metric, d.window),
                value: d.value,
                interval: d.interval,
            })
            .collect();
        b.push_str("<figure>");
        b.push_str(&svg::whiskers("Disparities with intervals", &items));
        b.push_str("</figure>");
    }
    b.push_str("</section>");

    b.push_str("<section id=\"drift\"><h2>Drift per feature</h2>");
    if v.drift.is_empty() {
        b.push_str("<p class=\"note\">No drift computed yet.</p>");
    } else {
        b.push_str("<table><thead><tr><th>model</th><th>feature</th><th>PSI</th><th>KS</th><th>KS p-value</th><th>PSI threshold</th><th>KS threshold</th><th>samples</th><th>status</th></tr></thead><tbody>");
        for d in &v.drift {
            let above =
                |v: Option<f64>, t: Option<f64>| matches!((v, t), (Some(v), Some(t)) if v > t);
            let (class, status) = if d.drifted {
                ("bad", "drifted")
            } else if above(d.psi, d.psi_threshold) || above(d.ks, d.ks_threshold) {
                ("note", "above threshold, not enough evidence yet")
            } else {
                ("ok", "stable")
            };
            let _ = write!(
                b,
                "<tr><td>{}</td><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{status}</td></tr>",
                escape(&d.model),
                escape(&d.feature),
                opt_num(d.psi),
                opt_num(d.ks),
                d.ks_p_value.map_or_else(|| "—".into(), num),
                d.psi_threshold.map_or_else(|| "—".into(), num),
                d.ks_threshold.map_or_else(|| "—".into(), num),
                d.samples
            );
        }
        b.push_str("</tbody></table>");
        let rows: Vec<BarRow> = v
            .drift
            .iter()
            .map(|d| BarRow {
                label: format!("{} · {}", d.model, d.feature),
                values: vec![d.psi, d.ks],
            })
            .collect();
        b.push_str("<figure>");
        b.push_str(&svg::grouped_bars(
            "Drift against the reference sample",
            &["PSI".to_string(), "KS".to_string()],
            &rows,
        ));
        b.push_str("</figure>");
    }
    b.push_str("</section>");
}

/// Renders a decision page.
pub fn decision(v: &DecisionPageView, generated_at: &DateTime<Utc>) -> String {
    let mut b = String::with_capacity(16_384);
    let word = decision_word(v.decision);
    b.push_str("<section id=\"decision\"><table><tbody>");
    let rows: [(&str, String); 8] = [
        ("decision id", escape(&v.id)),
        ("applicant", escape(&v.applicant_id)),
        (
            "decision",
            format!("<span class=\"{word}\" id=\"decision-outcome\">{word}</span>"),
        ),
        (
            "probability of default",
            format!("<span id=\"probability\">{}</span>", num(v.probability)),
        ),
        ("threshold", num(v.threshold)),
        (
            "model",
            format!("<code id=\"model\">{}</code>", escape(&v.model.to_string())),
        ),
        (
            "trace id",
            format!("<code id=\"trace-id\">{}</code>", escape(&v.trace_id)),
        ),
        (
            "decided at",
            v.decided_at.as_ref().map_or_else(|| "—".into(), time),
        ),
    ];
    for (k, val) in rows {
        let _ = write!(b, "<tr><th>{k}</th><td class=\"text\">{val}</td></tr>");
    }
    let outcome = match &v.outcome {
        Some((o, at)) => format!(
            "{}{}",
            outcome_word(*o),
            at.as_ref()
                .map_or_else(String::new, |t| format!(" (observed {})", time(t)))
        ),
        None => "not observed yet".into(),
    };
    let _ = write!(
        b,
        "<tr><th>outcome</th><td class=\"text\" id=\"outcome\">{}</td></tr></tbody></table></section>",
        escape(&outcome)
    );

    b.push_str(
        "<section id=\"top-contributions\"><h2>Top contributions (recorded with the decision)</h2>",
    );
    if v.top.is_empty() {
        b.push_str("<p class=\"note\">None recorded.</p>");
    } else {
        b.push_str("<table><thead><tr><th>feature</th><th>value</th><th>SHAP contribution</th></tr></thead><tbody>");
        for (f, val, c) in &v.top {
            let _ = write!(
                b,
                "<tr><td class=\"feature\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(f),
                num(*val),
                num(*c)
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</section>");

    b.push_str("<section id=\"waterfall\"><h2>SHAP waterfall</h2>");
    match &v.explanation {
        Ok(w) => {
            let _ = write!(
                b,
                "<p>Method <code>{}</code>; values in {}: base value <span id=\"base-value\">{}</span> → output <span id=\"output-value\">{}</span>. Orange steps raise the probability of default (towards decline), blue steps lower it.</p>",
                escape(&w.method),
                escape(&w.output_space),
                num(w.base_value),
                num(w.output)
            );
            let steps: Vec<(String, f64)> = w
                .steps
                .iter()
                .map(|s| {
                    let label = match s.value {
                        Some(x) => format!("{} = {}", s.feature, trim_num(x)),
                        None => s.feature.clone(),
                    };
                    (label, s.contribution)
                })
                .collect();
            b.push_str("<figure>");
            b.push_str(&svg::waterfall(
                &format!("From base value to output ({})", w.output_space),
                w.base_value,
                &steps,
                "output",
            ));
            b.push_str("</figure>");
        }
        Err(reason) => {
            let _ = write!(
                b,
                "<p class=\"note\" id=\"explanation-unavailable\">Explanation unavailable: {}</p>",
                escape(reason)
            );
        }
    }
    b.push_str("</section>");

    b.push_str("<section id=\"inputs\"><h2>Inputs</h2><table><thead><tr><th>feature</th><th>value</th></tr></thead><tbody>");
    for (k, val) in &v.inputs {
        let _ = write!(b, "<tr><td>{}</td><td>{}</td></tr>", escape(k), escape(val));
    }
    b.push_str("</tbody></table></section>");
    b.push_str("<section id=\"protected\"><h2>Protected attributes</h2><p class=\"note\">Never model input; sealed per applicant and erasable.</p>");
    if v.protected.is_empty() {
        b.push_str("<p class=\"note\">None given.</p>");
    } else {
        b.push_str("<table><tbody>");
        for (k, val) in &v.protected {
            let _ = write!(
                b,
                "<tr><th>{}</th><td class=\"text\">{}</td></tr>",
                escape(k),
                escape(val)
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</section>");
    page(&format!("Decision {}", v.id), false, generated_at, &b)
}

/// Shortest readable text for a feature value (integers without decimals).
fn trim_num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// Renders the models page (global importance of the active model).
pub fn models(v: &ModelsPageView, generated_at: &DateTime<Utc>) -> String {
    let mut b = String::with_capacity(8192);
    let _ = write!(
        b,
        "<p>Active model: <code id=\"active-model\">{}</code></p>",
        v.active_model
            .as_ref()
            .map_or_else(|| "none".into(), |m| escape(&m.to_string()))
    );
    b.push_str("<section id=\"importance\"><h2>Global importance (mean |SHAP|)</h2>");
    match &v.importance {
        Ok(imp) => {
            let _ = write!(
                b,
                "<p>Model <code>{}</code>: mean absolute exact SHAP value (TreeSHAP for tree ensembles, linear SHAP for linear models) per feature over the <span id=\"importance-rows\">{}</span> rows of its reference sample, in log-odds of default; computed once per model version at {}.</p>",
                escape(&imp.model.to_string()),
                imp.rows,
                time(&imp.computed_at)
            );
            b.push_str(
                "<table><thead><tr><th>feature</th><th>mean |SHAP|</th></tr></thead><tbody>",
            );
            for (f, m) in &imp.features {
                let _ = write!(
                    b,
                    "<tr><td class=\"feature\">{}</td><td>{}</td></tr>",
                    escape(f),
                    num(*m)
                );
            }
            b.push_str("</tbody></table>");
            let rows: Vec<BarRow> = imp
                .features
                .iter()
                .map(|(f, m)| BarRow {
                    label: f.clone(),
                    values: vec![Some(*m)],
                })
                .collect();
            b.push_str("<figure>");
            b.push_str(&svg::grouped_bars(
                "Mean |SHAP| over the reference sample",
                &["mean |SHAP|".to_string()],
                &rows,
            ));
            b.push_str("</figure>");
        }
        Err(reason) => {
            let _ = write!(
                b,
                "<p class=\"note\" id=\"importance-unavailable\">Global importance unavailable: {}</p>",
                escape(reason)
            );
        }
    }
    b.push_str("</section>");
    page("Models", false, generated_at, &b)
}

fn incident_row(b: &mut String, i: &IncidentRow) {
    let class = if i.is_open() { "bad" } else { "ok" };
    let _ = write!(
        b,
        "<tr><td class=\"text\">{}</td><td class=\"{class}\">{}</td><td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td>{}</td><td>{}</td></tr>",
        escape(&i.id),
        escape(&i.status),
        escape(&i.model),
        escape(&i.trigger),
        escape(&i.reason),
        i.opened_at.as_ref().map_or_else(|| "—".into(), time),
        i.updated_at.as_ref().map_or_else(|| "—".into(), time)
    );
}

/// Renders the incidents page.
pub fn incidents(v: &IncidentsPageView, generated_at: &DateTime<Utc>) -> String {
    let mut b = String::with_capacity(8192);
    let open = v.incidents.iter().filter(|i| i.is_open()).count();
    let _ = write!(
        b,
        "<p><span id=\"incident-open-count\">{open}</span> open of <span id=\"incident-count\">{}</span>.</p>",
        v.incidents.len()
    );
    if v.incidents.is_empty() {
        b.push_str("<p class=\"note\">No incidents.</p>");
    } else {
        b.push_str("<table id=\"incidents\"><thead><tr><th>incident</th><th>status</th><th>model</th><th>trigger</th><th>reason</th><th>opened</th><th>updated</th></tr></thead><tbody>");
        for i in &v.incidents {
            incident_row(&mut b, i);
        }
        b.push_str("</tbody></table>");
    }
    page("Incidents", true, generated_at, &b)
}

/// Renders the sign-in form (`next`: where to go afterwards; `message`: why the last attempt
/// failed; `signed_in`: whether this browser already holds a sign-in cookie).
pub fn sign_in(
    next: &str,
    message: Option<&str>,
    signed_in: bool,
    generated_at: &DateTime<Utc>,
) -> String {
    let mut b = String::new();
    b.push_str(
        "<p>This server requires an API key. Sign in with a key that has the <code>read</code> \
scope (<code>attest keys create --scopes read</code>); this browser keeps it in an HttpOnly \
cookie for 12 hours and uses it to read pages only.</p>",
    );
    if let Some(m) = message {
        let _ = write!(b, "<p class=\"bad\" id=\"signin-error\">{}</p>", escape(m));
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/login\" id=\"signin\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
<label>API key <input type=\"password\" name=\"key\" autocomplete=\"current-password\" required size=\"60\"></label> \
<button type=\"submit\">Sign in</button></form>",
        escape(next)
    );
    if signed_in {
        b.push_str(
            "<form method=\"post\" action=\"/logout\" id=\"signout\"><p>This browser is signed in. \
<button type=\"submit\">Sign out</button></p></form>",
        );
    }
    page("Sign in", false, generated_at, &b)
}

/// Renders a small error page (404 for an unknown decision, 503 when a source fails).
pub fn error_page(title: &str, message: &str, generated_at: &DateTime<Utc>) -> String {
    page(
        title,
        false,
        generated_at,
        &format!("<p id=\"error-message\">{}</p>", escape(message)),
    )
}

#[cfg(test)]
mod tests {
    use super::super::view::*;
    use super::*;
    use attest_lending::ModelRef;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap()
    }

    fn empty_overview() -> OverviewView {
        OverviewView {
            generated_at: now(),
            active_model: None,
            totals: Totals::default(),
            rate: RateView::default(),
            groups: vec![],
            disparities: vec![],
            drift: vec![],
            lags: vec![],
            open_incidents: 0,
            recent: vec![],
            audit: AuditStatus::Unavailable("auditor not running".into()),
        }
    }

    #[test]
    fn empty_overview_renders_zero_and_notes() {
        let html = overview(&empty_overview());
        assert!(html.contains("<div class=\"figure\" id=\"decision-count\">0</div>"));
        assert!(html.contains("id=\"approval-rate\">n/a<"));
        assert!(html.contains("No decisions yet."));
        assert!(html.contains("Audit state unavailable: auditor not running"));
        assert!(html.contains("http-equiv=\"refresh\""));
        assert!(!html.contains("<script"));
        // Nothing is fetched: no script, no image or stylesheet source, no external link.
        assert!(!html.contains(" src="));
        assert!(!html.contains("href=\"http"));
    }

    #[test]
    fn overview_escapes_everything_user_provided() {
        let mut v = empty_overview();
        v.totals = Totals {
            decisions: 3,
            approvals: 2,
            declines: 1,
            repaid: 1,
            defaulted: 0,
        };
        v.audit = AuditStatus::Available { as_of: Some(now()) };
        v.groups = vec![GroupApproval {
            model: "credit@v1".into(),
            attribute: "sex".into(),
            group: "<script>alert(1)</script>".into(),
            window: "24h sliding".into(),
            decisions: 3,
            approval_rate: Some(2.0 / 3.0),
        }];
        v.recent = vec![RecentDecision {
            id: "a\"b/<c>".into(),
            decision: Decision::Approve,
            probability: 0.25,
            model: ModelRef {
                id: "m&m".into(),
                version: 2,
            },
            decided_at: now(),
            outcome: Some(Outcome::Repaid),
        }];
        let html = overview(&v);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("href=\"/decisions/a%22b%2F%3Cc%3E\""));
        assert!(html.contains("a&quot;b/&lt;c&gt;"));
        assert!(html.contains("m&amp;m@v2"));
        assert!(html.contains("id=\"approval-rate\">66.7%<"));
        assert!(html.contains("66.7%</td>"));
    }

    #[test]
    fn decision_page_draws_waterfall_from_base_to_output() {
        let v = DecisionPageView {
            id: "d1".into(),
            applicant_id: "app-1".into(),
            decision: Decision::Decline,
            probability: 0.7,
            threshold: 0.5,
            model: ModelRef {
                id: "credit".into(),
                version: 1,
            },
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            decided_at: Some(now()),
            inputs: vec![("debt_to_income".into(), "0.45".into())],
            protected: vec![("sex".into(), "erased".into())],
            top: vec![("debt_to_income".into(), 0.45, 0.8)],
            explanation: Ok(WaterfallView {
                method: "tree".into(),
                output_space: "log-odds of default".into(),
                base_value: -1.0,
                output: -0.1,
                steps: vec![
                    WaterfallStep {
                        feature: "debt_to_income".into(),
                        value: Some(0.45),
                        contribution: 0.8,
                    },
                    WaterfallStep {
                        feature: "late_payments_24m".into(),
                        value: Some(2.0),
                        contribution: 0.1,
                    },
                ],
            }),
            outcome: None,
        };
        let html = decision(&v, &now());
        assert!(html.contains("class=\"chart waterfall\""));
        assert!(html.contains("debt_to_income = 0.4500"));
        assert!(html.contains("late_payments_24m = 2"));
        assert!(html.contains("id=\"base-value\">-1.0000<"));
        assert!(html.contains("id=\"output-value\">-0.1000<"));
        assert!(html.contains("not observed yet"));
        assert!(html.contains("erased"));
    }

    #[test]
    fn incidents_page_counts_open() {
        let row = |id: &str, status: &str| IncidentRow {
            id: id.into(),
            status: status.into(),
            model: "credit@v1".into(),
            reason: "dpd <0.3>".into(),
            trigger: "FairnessThresholdBreached".into(),
            opened_at: Some(now()),
            updated_at: None,
        };
        let html = incidents(
            &IncidentsPageView {
                incidents: vec![row("i1", "open"), row("i2", "resolved")],
            },
            &now(),
        );
        assert!(html.contains("id=\"incident-open-count\">1<"));
        assert!(html.contains("id=\"incident-count\">2<"));
        assert!(html.contains("dpd &lt;0.3&gt;"));
        let empty = incidents(&IncidentsPageView { incidents: vec![] }, &now());
        assert!(empty.contains("No incidents."));
    }

    #[test]
    fn path_segment_encodes_reserved_bytes() {
        assert_eq!(path_segment("abc-1_2.~"), "abc-1_2.~");
        assert_eq!(path_segment("a b/é"), "a%20b%2F%C3%A9");
    }
}
