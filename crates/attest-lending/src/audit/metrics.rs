//! Prometheus gauges of the audit (prometheus-client), set from each published snapshot.
//!
//! Gauges (label sets in braces; `window` is the window length, `1h` or `24h`; values are
//! those of the *open* windows, i.e. the live view):
//! - `attest_fairness_selection_rate{model,attribute,group,window}`
//! - `attest_fairness_true_positive_rate{model,attribute,group,window}`
//! - `attest_fairness_false_positive_rate{model,attribute,group,window}`
//! - `attest_fairness_decisions{model,attribute,group,window}`
//! - `attest_fairness_demographic_parity_difference{model,attribute,window}`
//! - `attest_fairness_disparate_impact_ratio{model,attribute,window}`
//! - `attest_fairness_equalized_odds_difference{model,attribute,window}`
//! - `attest_drift_psi{model,feature,window}` and `attest_drift_ks_statistic{model,feature,window}`
//!   (`feature="prediction"` is prediction drift)
//! - `attest_audit_lag_seconds`, `attest_audit_lag_events`, `attest_audit_late_records`,
//!   `attest_audit_pending_outcomes`, `attest_audit_breaches` (breaches in the snapshot).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::state::AuditState;

type Labels = Vec<(String, String)>;
type FGauge = Gauge<f64, AtomicU64>;

/// The audit gauges. Cloning shares them (register once, set from anywhere).
#[derive(Debug, Clone, Default)]
pub struct AuditMetrics {
    selection_rate: Family<Labels, FGauge>,
    tpr: Family<Labels, FGauge>,
    fpr: Family<Labels, FGauge>,
    decisions: Family<Labels, FGauge>,
    dpd: Family<Labels, FGauge>,
    di: Family<Labels, FGauge>,
    eod: Family<Labels, FGauge>,
    psi: Family<Labels, FGauge>,
    ks: Family<Labels, FGauge>,
    lag_seconds: FGauge,
    lag_events: FGauge,
    late: FGauge,
    pending: FGauge,
    breaches: FGauge,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl AuditMetrics {
    /// New, unregistered gauges.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers every gauge in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let fams: [(&str, &str, &Family<Labels, FGauge>); 9] = [
            ("attest_fairness_selection_rate", "Approval rate of a group in the open window (approved / decisions).", &self.selection_rate),
            ("attest_fairness_true_positive_rate", "Approval rate among applicants who repaid (outcomes observed in the open window).", &self.tpr),
            ("attest_fairness_false_positive_rate", "Approval rate among applicants who defaulted (outcomes observed in the open window).", &self.fpr),
            ("attest_fairness_decisions", "Decisions of a group in the open window.", &self.decisions),
            ("attest_fairness_demographic_parity_difference", "Max minus min selection rate over groups with enough samples.", &self.dpd),
            ("attest_fairness_disparate_impact_ratio", "Min over max selection rate over groups with enough samples.", &self.di),
            ("attest_fairness_equalized_odds_difference", "Max of the TPR and FPR differences over groups with enough samples.", &self.eod),
            ("attest_drift_psi", "Population stability index of a feature (or the prediction) against the model's reference.", &self.psi),
            ("attest_drift_ks_statistic", "Two-sample Kolmogorov-Smirnov statistic (binned) against the model's reference.", &self.ks),
        ];
        for (name, help, fam) in fams {
            registry.register(name, help, fam.clone());
        }
        registry.register(
            "attest_audit_lag_seconds",
            "Age of the last event the auditor read while it is behind the log head.",
            self.lag_seconds.clone(),
        );
        registry.register(
            "attest_audit_lag_events",
            "Events between the auditor's position and the log head.",
            self.lag_events.clone(),
        );
        registry.register(
            "attest_audit_late_records",
            "Records that arrived too late for their window or without a pending decision.",
            self.late.clone(),
        );
        registry.register(
            "attest_audit_pending_outcomes",
            "Decisions waiting for their outcome in the join.",
            self.pending.clone(),
        );
        registry.register(
            "attest_audit_breaches",
            "Fairness and drift breaches in the audit snapshot.",
            self.breaches.clone(),
        );
    }

    /// Sets every gauge from `s` (series of groups or features no longer present are
    /// removed).
    pub fn update(&self, s: &AuditState) {
        for f in [
            &self.selection_rate,
            &self.tpr,
            &self.fpr,
            &self.decisions,
            &self.dpd,
            &self.di,
            &self.eod,
            &self.psi,
            &self.ks,
        ] {
            f.clear();
        }
        for w in &s.current {
            let model = w.model.to_string();
            let window = w.label.as_str();
            for a in &w.fairness {
                for g in &a.groups {
                    let l = labels(&[
                        ("model", &model),
                        ("attribute", &a.attribute),
                        ("group", &g.group),
                        ("window", window),
                    ]);
                    self.decisions.get_or_create(&l).set(g.decisions as f64);
                    if let Some(v) = g.selection_rate {
                        self.selection_rate.get_or_create(&l).set(v);
                    }
                    if let Some(v) = g.tpr {
                        self.tpr.get_or_create(&l).set(v);
                    }
                    if let Some(v) = g.fpr {
                        self.fpr.get_or_create(&l).set(v);
                    }
                }
                let l = labels(&[
                    ("model", &model),
                    ("attribute", &a.attribute),
                    ("window", window),
                ]);
                if let Some(d) = &a.demographic_parity_difference {
                    self.dpd.get_or_create(&l).set(d.value);
                }
                if let Some(d) = &a.disparate_impact_ratio {
                    self.di.get_or_create(&l).set(d.value);
                }
                if let Some(d) = &a.equalized_odds_difference {
                    self.eod.get_or_create(&l).set(d.value);
                }
            }
            if let Some(d) = &w.drift {
                for c in d.prediction.iter().chain(&d.features) {
                    let l = labels(&[
                        ("model", &model),
                        ("feature", &c.feature),
                        ("window", window),
                    ]);
                    if let Some(v) = c.psi {
                        self.psi.get_or_create(&l).set(v);
                    }
                    if let Some(v) = c.ks {
                        self.ks.get_or_create(&l).set(v);
                    }
                }
            }
        }
        self.lag_seconds.set(s.lag_seconds);
        self.lag_events.set(s.lag_events as f64);
        self.late.set(s.late_records as f64);
        self.pending.set(s.pending_outcomes as f64);
        self.breaches.set(s.breaches.len() as f64);
    }
}
