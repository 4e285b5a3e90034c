//! Plain view structs: everything a dashboard page shows, gathered before rendering.
//!
//! The renderer ([`super::render`]) turns these into HTML and knows nothing about the store,
//! the lending service or the auditor; the gatherers in [`super`] fill them.

use attest_lending::{Decision, ModelRef, Outcome};
use chrono::{DateTime, Utc};

/// Counts over every decision in the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Decisions made.
    pub decisions: u64,
    /// Of which approved.
    pub approvals: u64,
    /// Of which declined.
    pub declines: u64,
    /// Outcomes observed: repaid.
    pub repaid: u64,
    /// Outcomes observed: defaulted.
    pub defaulted: u64,
}

impl Totals {
    /// Approved / decided; `None` with zero decisions.
    pub fn approval_rate(&self) -> Option<f64> {
        (self.decisions > 0).then(|| self.approvals as f64 / self.decisions as f64)
    }
}

/// Decisions per minute (by the decision's `decided_at`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateView {
    /// The last 60 whole minutes up to now, oldest first: (minute start, decisions).
    pub per_minute: Vec<(DateTime<Utc>, u64)>,
    /// Decisions in the last 60 seconds.
    pub last_minute: u64,
    /// Decisions in the last hour.
    pub last_hour: u64,
}

/// Approval (selection) rate of one sensitive group, as computed by the auditor.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupApproval {
    /// Model id@version audited.
    pub model: String,
    /// Sensitive attribute (`sex`, `race`, `age_band`).
    pub attribute: String,
    /// Group value (`unknown` for missing or erased attributes).
    pub group: String,
    /// Window description (e.g. `24h sliding`).
    pub window: String,
    /// Decisions of the group in the window.
    pub decisions: u64,
    /// Approved / decided (`None`: undefined).
    pub approval_rate: Option<f64>,
}

/// A disparity metric between groups with its interval and threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct DisparityRow {
    /// Model id@version audited.
    pub model: String,
    /// Sensitive attribute.
    pub attribute: String,
    /// Metric name (e.g. `demographic_parity_difference`).
    pub metric: String,
    /// Window description.
    pub window: String,
    /// Estimate (`None`: undefined, e.g. a group with no samples).
    pub value: Option<f64>,
    /// Confidence interval of the estimate.
    pub interval: Option<(f64, f64)>,
    /// Configured threshold, if any.
    pub threshold: Option<f64>,
    /// Whether the auditor considers it breached.
    pub breached: bool,
    /// Samples the estimate rests on.
    pub samples: u64,
}

/// Drift of one feature (or the prediction) against the model's reference sample.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftRow {
    /// Model id@version audited.
    pub model: String,
    /// Feature name, or `prediction`.
    pub feature: String,
    /// Population stability index.
    pub psi: Option<f64>,
    /// Kolmogorov–Smirnov statistic.
    pub ks: Option<f64>,
    /// KS p-value, if computed.
    pub ks_p_value: Option<f64>,
    /// Configured PSI threshold.
    pub psi_threshold: Option<f64>,
    /// Configured KS threshold.
    pub ks_threshold: Option<f64>,
    /// Whether the auditor flags it as drifted.
    pub drifted: bool,
    /// Samples in the current window.
    pub samples: u64,
}

/// How far a consumer or projection is behind the log head.
#[derive(Debug, Clone, PartialEq)]
pub struct LagRow {
    /// Consumer or projection name.
    pub name: String,
    /// Events behind the head.
    pub events: u64,
    /// Seconds behind (`None`: unknown).
    pub seconds: Option<f64>,
}

/// What the auditor could tell.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditStatus {
    /// Audit state is available, as of this time.
    Available {
        /// When the snapshot was taken.
        as_of: Option<DateTime<Utc>>,
    },
    /// No audit state (auditor not running or not caught up); the reason is shown.
    Unavailable(String),
}

/// One row of the recent-decisions table.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentDecision {
    /// Decision id.
    pub id: String,
    /// Approve or decline.
    pub decision: Decision,
    /// Probability of default.
    pub probability: f64,
    /// Model that decided.
    pub model: ModelRef,
    /// When.
    pub decided_at: DateTime<Utc>,
    /// Outcome, once observed.
    pub outcome: Option<Outcome>,
}

/// The `/` page.
#[derive(Debug, Clone, PartialEq)]
pub struct OverviewView {
    /// When the page was generated.
    pub generated_at: DateTime<Utc>,
    /// The model deciding now, if known.
    pub active_model: Option<ModelRef>,
    /// Counts over all decisions.
    pub totals: Totals,
    /// Decision rate.
    pub rate: RateView,
    /// Approval rate by sensitive group (from the auditor).
    pub groups: Vec<GroupApproval>,
    /// Current disparities (from the auditor).
    pub disparities: Vec<DisparityRow>,
    /// Drift per feature (from the auditor).
    pub drift: Vec<DriftRow>,
    /// Consumer and projection lag.
    pub lags: Vec<LagRow>,
    /// Incidents not resolved.
    pub open_incidents: usize,
    /// The latest decisions, newest first.
    pub recent: Vec<RecentDecision>,
    /// Whether audit figures are available.
    pub audit: AuditStatus,
}

/// One step of a SHAP waterfall.
#[derive(Debug, Clone, PartialEq)]
pub struct WaterfallStep {
    /// Feature name.
    pub feature: String,
    /// The feature's value in the application, if known.
    pub value: Option<f64>,
    /// Its contribution (in the explanation's output space).
    pub contribution: f64,
}

/// A full explanation of one decision, drawn from the base value to the output.
#[derive(Debug, Clone, PartialEq)]
pub struct WaterfallView {
    /// Explainer (`tree`, `kernel`, `lime`).
    pub method: String,
    /// What the values are in (e.g. `log-odds of default`).
    pub output_space: String,
    /// Expected output over the background.
    pub base_value: f64,
    /// The model output being explained.
    pub output: f64,
    /// Contributions, drawn in this order.
    pub steps: Vec<WaterfallStep>,
}

/// The `/decisions/{id}` page.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionPageView {
    /// Decision id.
    pub id: String,
    /// Applicant id.
    pub applicant_id: String,
    /// Approve or decline.
    pub decision: Decision,
    /// Probability of default.
    pub probability: f64,
    /// Decline threshold.
    pub threshold: f64,
    /// Model that decided.
    pub model: ModelRef,
    /// W3C trace id.
    pub trace_id: String,
    /// When decided, if known.
    pub decided_at: Option<DateTime<Utc>>,
    /// Model inputs as (feature, value text), in schema order where known.
    pub inputs: Vec<(String, String)>,
    /// Protected attributes as (attribute, value text or `erased`).
    pub protected: Vec<(String, String)>,
    /// The top contributions recorded with the decision: (feature, value, contribution).
    pub top: Vec<(String, f64, f64)>,
    /// The full explanation, or why it could not be computed.
    pub explanation: Result<WaterfallView, String>,
    /// The observed outcome, if any, and when.
    pub outcome: Option<(Outcome, Option<DateTime<Utc>>)>,
}

/// Global importance of one model version.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportanceView {
    /// Model id@version.
    pub model: ModelRef,
    /// Rows of the reference sample it was computed over.
    pub rows: usize,
    /// (feature, mean |SHAP|), largest first.
    pub features: Vec<(String, f64)>,
    /// When it was computed (once per model version).
    pub computed_at: DateTime<Utc>,
}

/// The `/models` page.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelsPageView {
    /// The model deciding now.
    pub active_model: Option<ModelRef>,
    /// Its global importance, or why it is not available.
    pub importance: Result<ImportanceView, String>,
}

/// One incident.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRow {
    /// Incident id.
    pub id: String,
    /// `open`, `acknowledged`, `resolved`, ...
    pub status: String,
    /// Model concerned (id@version), if known.
    pub model: String,
    /// Why it was opened.
    pub reason: String,
    /// The event type that triggered it.
    pub trigger: String,
    /// When it was opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// When its status last changed.
    pub updated_at: Option<DateTime<Utc>>,
}

impl IncidentRow {
    /// Whether the incident still needs attention (not resolved or closed).
    pub fn is_open(&self) -> bool {
        !matches!(self.status.as_str(), "resolved" | "closed")
    }
}

/// The `/incidents` page.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentsPageView {
    /// Incidents, newest first.
    pub incidents: Vec<IncidentRow>,
}
