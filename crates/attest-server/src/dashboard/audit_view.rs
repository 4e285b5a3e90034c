//! Turns the auditor's [`AuditState`] into the overview's rows, and adapts an auditor's
//! snapshot to the server's [`AuditSource`] so `/v1/audit/*` and the dashboard read the same
//! state.
//!
//! The dashboard reads the JSON document behind `GET /v1/audit/fairness` (through the
//! server's [`AuditHandle`]) and decodes it as an [`AuditState`]: whatever is installed in the
//! handle must serve the full snapshot there, as [`SnapshotAuditSource`] does.

use std::sync::Arc;

use async_trait::async_trait;
use attest_lending::audit::{AuditState, WindowAudit, WindowKind};
use serde_json::Value;

use super::view::{AuditStatus, DisparityRow, DriftRow, GroupApproval, LagRow};
use crate::audit::{AuditError, AuditHandle, AuditSource};

/// The audit part of the overview.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRows {
    /// Whether audit state was available.
    pub status: AuditStatus,
    /// Approval rate per group.
    pub groups: Vec<GroupApproval>,
    /// Disparities.
    pub disparities: Vec<DisparityRow>,
    /// Drift per feature.
    pub drift: Vec<DriftRow>,
    /// The auditor's consumer lag.
    pub lags: Vec<LagRow>,
}

impl AuditRows {
    fn unavailable(reason: String) -> Self {
        AuditRows {
            status: AuditStatus::Unavailable(reason),
            groups: Vec::new(),
            disparities: Vec::new(),
            drift: Vec::new(),
            lags: Vec::new(),
        }
    }
}

/// Reads the installed auditor's state.
pub async fn gather(audit: &AuditHandle) -> AuditRows {
    match audit.fairness().await {
        Ok(v) => from_json(v),
        Err(AuditError::Unavailable(reason)) => AuditRows::unavailable(reason),
        Err(e) => AuditRows::unavailable(e.to_string()),
    }
}

/// Decodes the fairness document as an [`AuditState`] and converts it.
pub fn from_json(doc: Value) -> AuditRows {
    match serde_json::from_value::<AuditState>(doc) {
        Ok(state) => rows(&state),
        Err(e) => {
            tracing::warn!(error = %e, "dashboard: audit document is not an AuditState");
            AuditRows::unavailable(format!("the audit document could not be read: {e}"))
        }
    }
}

fn window_name(w: &WindowAudit) -> String {
    let kind = match w.window.kind {
        WindowKind::Tumbling => "tumbling",
        WindowKind::Sliding => "sliding",
    };
    format!("{} {kind}", w.label)
}

/// The overview rows of one snapshot: groups and disparities of every current window (the
/// last closed ones when none is open), drift of the sliding window, and the auditor's lag.
pub fn rows(state: &AuditState) -> AuditRows {
    let windows: &[WindowAudit] = if state.current.is_empty() {
        &state.last_closed
    } else {
        &state.current
    };
    let mut groups = Vec::new();
    let mut disparities = Vec::new();
    let mut drift = Vec::new();
    for w in windows {
        let model = w.model.to_string();
        let window = window_name(w);
        for a in &w.fairness {
            for g in &a.groups {
                groups.push(GroupApproval {
                    model: model.clone(),
                    attribute: a.attribute.clone(),
                    group: g.group.clone(),
                    window: window.clone(),
                    decisions: g.decisions,
                    approval_rate: g.selection_rate,
                });
            }
            for (metric, d) in a.disparities() {
                let Some(d) = d else { continue };
                disparities.push(DisparityRow {
                    model: model.clone(),
                    attribute: a.attribute.clone(),
                    metric: metric.to_string(),
                    window: window.clone(),
                    value: d.value.is_finite().then_some(d.value),
                    interval: d.interval.map(|c| (c.lower, c.upper)),
                    threshold: Some(d.threshold),
                    breached: d.breached,
                    samples: d.samples,
                });
            }
        }
        if w.window.kind != WindowKind::Sliding {
            continue;
        }
        if let Some(dv) = &w.drift {
            for c in dv.prediction.iter().chain(&dv.features) {
                drift.push(DriftRow {
                    model: model.clone(),
                    feature: c.feature.clone(),
                    psi: c.psi,
                    ks: c.ks,
                    ks_p_value: c.ks_pvalue,
                    psi_threshold: Some(state.thresholds.psi),
                    ks_threshold: Some(state.thresholds.ks),
                    drifted: c.psi_breached || c.ks_breached,
                    samples: c.samples,
                });
            }
        }
    }
    AuditRows {
        status: AuditStatus::Available {
            as_of: Some(state.generated_at),
        },
        groups,
        disparities,
        drift,
        lags: vec![LagRow {
            name: if state.owner {
                "auditor".to_string()
            } else {
                "auditor (not owner here: last persisted snapshot)".to_string()
            },
            events: state.lag_events,
            seconds: Some(state.lag_seconds),
        }],
    }
}

/// Serves an auditor's snapshot as the server's [`AuditSource`]: `fairness` is the full
/// [`AuditState`] (what the dashboard decodes), `drift` the per-window drift views.
pub struct SnapshotAuditSource<F> {
    snapshot: F,
}

impl<F> SnapshotAuditSource<F>
where
    F: Fn() -> Arc<AuditState> + Send + Sync + 'static,
{
    /// An audit source reading snapshots from `snapshot` (e.g.
    /// `move || handle.snapshot()` over an auditor handle).
    pub fn new(snapshot: F) -> Self {
        SnapshotAuditSource { snapshot }
    }
}

#[async_trait]
impl<F> AuditSource for SnapshotAuditSource<F>
where
    F: Fn() -> Arc<AuditState> + Send + Sync + 'static,
{
    async fn fairness(&self) -> Result<Value, AuditError> {
        let s = (self.snapshot)();
        serde_json::to_value(&*s).map_err(|e| AuditError::Failed(e.to_string()))
    }

    async fn drift(&self) -> Result<Value, AuditError> {
        let s = (self.snapshot)();
        let windows: Vec<Value> = s
            .current
            .iter()
            .map(|w| {
                serde_json::json!({
                    "model": w.model,
                    "window": w.window,
                    "label": w.label,
                    "closed": w.closed,
                    "drift": w.drift,
                })
            })
            .collect();
        Ok(serde_json::json!({
            "generated_at": s.generated_at,
            "thresholds": s.thresholds,
            "lag_events": s.lag_events,
            "lag_seconds": s.lag_seconds,
            "windows": windows,
        }))
    }
}
