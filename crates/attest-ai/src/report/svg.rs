//! Inline SVG charts: horizontal (grouped) bar charts, interval whiskers and waterfalls.
//!
//! Every chart is a self-contained `<svg>` element with a `<title>` for accessibility; all
//! text is escaped.

use std::fmt::Write as _;

use super::escape::{coord, escape, num};

// Wide enough for disparity names such as
// `equalized_odds_difference[between_groups,worst_case]` at the report's label size.
const LABEL_W: f64 = 380.0;
const PLOT_W: f64 = 420.0;
const VALUE_W: f64 = 90.0;
const ROW_H: f64 = 22.0;
const TOP: f64 = 30.0;
const WIDTH: f64 = LABEL_W + PLOT_W + VALUE_W;

/// Series colours (colour-blind safe palette).
pub const PALETTE: [&str; 6] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00",
];

/// Maps values in `[lo, hi]` to the plot's x range.
struct Scale {
    lo: f64,
    hi: f64,
}

impl Scale {
    fn new(values: impl Iterator<Item = f64>) -> Scale {
        let (mut lo, mut hi) = (0.0f64, 0.0f64);
        for v in values.filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if hi - lo < 1e-12 {
            hi = lo + 1.0;
        }
        Scale { lo, hi }
    }

    fn x(&self, v: f64) -> f64 {
        LABEL_W + (v - self.lo) / (self.hi - self.lo) * PLOT_W
    }
}

fn open(out: &mut String, height: f64, title: &str, class: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="{}" width="{}" height="{}" viewBox="0 0 {} {}" role="img"><title>{}</title>"#,
        escape(class),
        coord(WIDTH),
        coord(height),
        coord(WIDTH),
        coord(height),
        escape(title)
    );
    let _ = write!(
        out,
        r#"<text x="4" y="16" class="chart-title">{}</text>"#,
        escape(title)
    );
}

fn axis(out: &mut String, s: &Scale, height: f64) {
    let x0 = s.x(0.0);
    let _ = write!(
        out,
        r##"<line x1="{x}" y1="{y1}" x2="{x}" y2="{y2}" stroke="#444" stroke-width="1"/>"##,
        x = coord(x0),
        y1 = coord(TOP - 6.0),
        y2 = coord(height - 4.0)
    );
}

fn label(out: &mut String, y: f64, text: &str) {
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end" class="label">{}</text>"#,
        coord(LABEL_W - 6.0),
        coord(y),
        escape(text)
    );
}

fn value_text(out: &mut String, y: f64, text: &str) {
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" class="value">{}</text>"#,
        coord(LABEL_W + PLOT_W + 6.0),
        coord(y),
        escape(text)
    );
}

fn rect(out: &mut String, x0: f64, x1: f64, y: f64, h: f64, fill: &str, tip: &str) {
    let (a, b) = if x0 <= x1 { (x0, x1) } else { (x1, x0) };
    let _ = write!(
        out,
        r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>"#,
        coord(a),
        coord(y),
        coord((b - a).max(0.5)),
        coord(h),
        escape(fill),
        escape(tip)
    );
}

/// One row of a grouped bar chart: a label and one optional value per series (`None` is
/// drawn as "n/a": an undefined metric).
pub struct BarRow {
    /// Row label.
    pub label: String,
    /// Values per series.
    pub values: Vec<Option<f64>>,
}

/// A horizontal grouped bar chart with a legend.
pub fn grouped_bars(title: &str, series: &[String], rows: &[BarRow]) -> String {
    let per = series.len().max(1) as f64;
    let band = ROW_H * per + 8.0;
    let legend_h = 20.0;
    let height = TOP + legend_h + band * rows.len() as f64 + 10.0;
    let s = Scale::new(rows.iter().flat_map(|r| r.values.iter().flatten().copied()));
    let mut out = String::new();
    open(&mut out, height, title, "chart bars");
    for (i, name) in series.iter().enumerate() {
        let x = LABEL_W + i as f64 * 130.0;
        let _ = write!(
            out,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}" class="legend">{}</text>"#,
            coord(x),
            coord(TOP - 4.0),
            PALETTE[i % PALETTE.len()],
            coord(x + 16.0),
            coord(TOP + 6.0),
            escape(name)
        );
    }
    let top = TOP + legend_h;
    for (r, row) in rows.iter().enumerate() {
        let y0 = top + r as f64 * band;
        label(&mut out, y0 + band / 2.0, &row.label);
        for (i, v) in row.values.iter().enumerate() {
            let y = y0 + i as f64 * ROW_H;
            let name = series.get(i).map_or("", String::as_str);
            match v {
                Some(v) => {
                    rect(
                        &mut out,
                        s.x(0.0),
                        s.x(*v),
                        y + 3.0,
                        ROW_H - 6.0,
                        PALETTE[i % PALETTE.len()],
                        &format!("{}: {} = {}", row.label, name, num(*v)),
                    );
                    value_text(&mut out, y + ROW_H - 7.0, &num(*v));
                }
                None => value_text(&mut out, y + ROW_H - 7.0, "n/a"),
            }
        }
    }
    axis(&mut out, &s, height);
    out.push_str("</svg>");
    out
}

/// One point estimate with an optional interval.
pub struct Whisker {
    /// Label.
    pub label: String,
    /// Estimate (`None`: undefined).
    pub value: Option<f64>,
    /// Interval bounds.
    pub interval: Option<(f64, f64)>,
}

/// Point estimates with confidence-interval whiskers.
pub fn whiskers(title: &str, items: &[Whisker]) -> String {
    let height = TOP + 10.0 + ROW_H * items.len() as f64 + 10.0;
    let s = Scale::new(items.iter().flat_map(|w| {
        w.value
            .into_iter()
            .chain(w.interval.into_iter().flat_map(|(a, b)| [a, b]))
    }));
    let mut out = String::new();
    open(&mut out, height, title, "chart whiskers");
    for (i, w) in items.iter().enumerate() {
        let y = TOP + 10.0 + i as f64 * ROW_H + ROW_H / 2.0;
        label(&mut out, y + 4.0, &w.label);
        if let Some((a, b)) = w.interval {
            let _ = write!(
                out,
                r##"<g class="whisker"><line x1="{a}" y1="{y}" x2="{b}" y2="{y}" stroke="#555" stroke-width="1.5"/><line x1="{a}" y1="{t}" x2="{a}" y2="{u}" stroke="#555"/><line x1="{b}" y1="{t}" x2="{b}" y2="{u}" stroke="#555"/></g>"##,
                a = coord(s.x(a)),
                b = coord(s.x(b)),
                y = coord(y),
                t = coord(y - 5.0),
                u = coord(y + 5.0)
            );
        }
        match w.value {
            Some(v) => {
                let tip = match w.interval {
                    Some((a, b)) => format!("{} = {} [{}, {}]", w.label, num(v), num(a), num(b)),
                    None => format!("{} = {}", w.label, num(v)),
                };
                let _ = write!(
                    out,
                    r##"<circle cx="{}" cy="{}" r="4" fill="#0072b2"><title>{}</title></circle>"##,
                    coord(s.x(v)),
                    coord(y),
                    escape(&tip)
                );
                value_text(&mut out, y + 4.0, &num(v));
            }
            None => value_text(&mut out, y + 4.0, "undefined"),
        }
    }
    axis(&mut out, &s, height);
    out.push_str("</svg>");
    out
}

/// A waterfall: base value, then each contribution as a step, then the final value.
pub fn waterfall(title: &str, base: f64, steps: &[(String, f64)], final_label: &str) -> String {
    let height = TOP + 10.0 + ROW_H * (steps.len() + 2) as f64 + 10.0;
    let mut running = base;
    let mut extent = vec![base];
    for (_, v) in steps {
        running += v;
        extent.push(running);
    }
    let s = Scale::new(extent.into_iter());
    let mut out = String::new();
    open(&mut out, height, title, "chart waterfall");
    let row_y = |i: usize| TOP + 10.0 + i as f64 * ROW_H;
    label(&mut out, row_y(0) + ROW_H - 7.0, "base value");
    rect(
        &mut out,
        s.x(0.0),
        s.x(base),
        row_y(0) + 3.0,
        ROW_H - 6.0,
        "#888888",
        &format!("base value = {}", num(base)),
    );
    value_text(&mut out, row_y(0) + ROW_H - 7.0, &num(base));
    let mut at = base;
    for (i, (name, v)) in steps.iter().enumerate() {
        let y = row_y(i + 1);
        let fill = if *v >= 0.0 { "#d55e00" } else { "#0072b2" };
        label(&mut out, y + ROW_H - 7.0, name);
        rect(
            &mut out,
            s.x(at),
            s.x(at + v),
            y + 3.0,
            ROW_H - 6.0,
            fill,
            &format!("{name}: {}", num(*v)),
        );
        value_text(
            &mut out,
            y + ROW_H - 7.0,
            &format!("{}{}", if *v >= 0.0 { "+" } else { "" }, num(*v)),
        );
        at += v;
    }
    let y = row_y(steps.len() + 1);
    label(&mut out, y + ROW_H - 7.0, final_label);
    rect(
        &mut out,
        s.x(0.0),
        s.x(at),
        y + 3.0,
        ROW_H - 6.0,
        "#333333",
        &format!("{final_label} = {}", num(at)),
    );
    value_text(&mut out, y + ROW_H - 7.0, &num(at));
    axis(&mut out, &s, height);
    out.push_str("</svg>");
    out
}
