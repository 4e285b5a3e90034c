//! A self-contained HTML report: no external assets (inline CSS and SVG), every piece of text
//! escaped.
//!
//! Sections: fairness (group metrics table and bar chart, disparities with bootstrap
//! whiskers), drift (per-column table), global importance (mean |SHAP| bars) and per-row
//! waterfalls (base value → contributions → prediction). Attributions are plain data
//! ([`GlobalImportance`], [`Waterfall`]) so the report does not depend on the explainers.
//!
//! ```
//! use attest_ai::report::{HtmlReport, Waterfall};
//! let w = Waterfall::new("row 0", 0.2, vec![("age".into(), 0.3), ("hours".into(), -0.1)], 0.4, 1e-9).unwrap();
//! let html = HtmlReport::new("Audit <draft>").waterfall(&w).render();
//! assert!(html.contains("Audit &lt;draft&gt;"));
//! ```

mod attribution;
mod escape;
mod sections;
pub mod svg;

use std::path::Path;

pub use attribution::{GlobalImportance, Waterfall};
pub use escape::escape;

use crate::drift::DriftReport;
use crate::fairness::FairnessReport;
use crate::AiError;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th:first-child,td:first-child{text-align:left}.undefined{color:#a00}.drift{color:#a00;font-weight:bold}\
svg text{font-size:12px}svg .chart-title{font-weight:bold}figure{margin:1em 0}";

/// Builds the HTML report section by section.
#[derive(Debug, Clone)]
pub struct HtmlReport {
    title: String,
    sections: Vec<String>,
}

impl HtmlReport {
    /// An empty report.
    pub fn new(title: &str) -> Self {
        HtmlReport {
            title: title.to_owned(),
            sections: Vec::new(),
        }
    }

    /// Adds a fairness section.
    pub fn fairness(mut self, heading: &str, report: &FairnessReport) -> Self {
        self.sections.push(sections::fairness(heading, report));
        self
    }

    /// Adds a drift section.
    pub fn drift(mut self, heading: &str, report: &DriftReport) -> Self {
        self.sections.push(sections::drift(heading, report));
        self
    }

    /// Adds a global importance chart.
    pub fn importance(mut self, importance: &GlobalImportance) -> Self {
        self.sections.push(sections::importance(importance));
        self
    }

    /// Adds a waterfall chart.
    pub fn waterfall(mut self, waterfall: &Waterfall) -> Self {
        self.sections.push(sections::waterfall(waterfall));
        self
    }

    /// Adds a paragraph of text.
    pub fn paragraph(mut self, text: &str) -> Self {
        self.sections.push(format!("<p>{}</p>", escape(text)));
        self
    }

    /// The complete HTML document.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16_384);
        out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        out.push_str("<title>");
        out.push_str(&escape(&self.title));
        out.push_str("</title><style>");
        out.push_str(STYLE);
        out.push_str("</style></head><body><h1>");
        out.push_str(&escape(&self.title));
        out.push_str("</h1>");
        for s in &self.sections {
            out.push_str(s);
        }
        out.push_str("</body></html>\n");
        out
    }

    /// Writes the document to `path`.
    pub fn write_to(&self, path: &Path) -> Result<(), AiError> {
        std::fs::write(path, self.render()).map_err(|source| AiError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}
