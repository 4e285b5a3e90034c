//! The audit snapshot served to `/v1/audit/*`, the dashboard and `/metrics`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::ModelRef;

use super::evaluate::{Thresholds, WindowAudit};
use super::operator::{Breach, BreachKind};
use super::window::{WindowKind, WindowSpan};

/// A breach as recorded: what, where, and the ids of what the auditor appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreachRecord {
    /// Deterministic breach key.
    pub key: String,
    /// The model.
    pub model: ModelRef,
    /// First breaching window.
    pub window: WindowSpan,
    /// Details.
    pub kind: BreachKind,
    /// The incident opened for it (stream `incident-<id>`).
    pub incident_id: String,
    /// Id of the `FairnessThresholdBreached` / `DriftDetected` event.
    pub event_id: String,
}

impl From<Breach> for BreachRecord {
    fn from(b: Breach) -> Self {
        BreachRecord {
            incident_id: crate::incident::incident_id_for(&b.key),
            event_id: super::sink::breach_event_id(&b.key).to_string(),
            key: b.key,
            model: b.model,
            window: b.window,
            kind: b.kind,
        }
    }
}

/// A point-in-time view of the audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditState {
    /// When this view was computed.
    pub generated_at: DateTime<Utc>,
    /// Whether this process runs the auditor now (false: a copy persisted by the owner).
    pub owner: bool,
    /// Global position of the last event the auditor read.
    pub position: u64,
    /// Head of the global log when the view was computed.
    pub head_position: u64,
    /// Events behind the head (`head_position - position`, all categories).
    pub lag_events: u64,
    /// Age of the last event read when the auditor is behind, else 0.
    pub lag_seconds: f64,
    /// Late records (outside their window or without a pending decision).
    pub late_records: u64,
    /// Decisions waiting for their outcome.
    pub pending_outcomes: usize,
    /// Largest event time seen.
    pub max_event_time: Option<DateTime<Utc>>,
    /// The breach rule in force.
    pub thresholds: Thresholds,
    /// The open windows as they stand (tumbling and sliding, per model).
    pub current: Vec<WindowAudit>,
    /// The last closed window per model and kind.
    pub last_closed: Vec<WindowAudit>,
    /// Recent breaches, newest first.
    pub breaches: Vec<BreachRecord>,
}

impl AuditState {
    /// An empty state (nothing audited yet).
    pub fn empty(thresholds: Thresholds, owner: bool) -> Self {
        AuditState {
            generated_at: Utc::now(),
            owner,
            position: 0,
            head_position: 0,
            lag_events: 0,
            lag_seconds: 0.0,
            late_records: 0,
            pending_outcomes: 0,
            max_event_time: None,
            thresholds,
            current: Vec::new(),
            last_closed: Vec::new(),
            breaches: Vec::new(),
        }
    }

    /// The current window of `kind` for `model` (by `id@vversion`), if any.
    pub fn current_window(&self, model: &str, kind: WindowKind) -> Option<&WindowAudit> {
        self.current
            .iter()
            .find(|w| w.model.to_string() == model && w.window.kind == kind)
    }
}
