//! What the auditor reads from the global log, decoded from the lending events.
//!
//! Event time is taken from the payload: `submitted_at`, `decided_at`, `observed_at`
//! (milliseconds since the Unix epoch), so a replay sees the same times.

use attest_core::RecordedEvent;
use attest_stream::Timestamp;
use serde::{Deserialize, Serialize};

use crate::events::{
    Decision, LoanApplicationSubmitted, LoanDecisionMade, LoanOutcomeObserved, ModelRef, Outcome,
    SealedAttributes, LOAN_APPLICATION_SUBMITTED, LOAN_DECISION_MADE, LOAN_OUTCOME_OBSERVED,
};

use super::AuditError;

/// The application part the auditor needs: who applied, the sealed protected attributes and
/// the numeric features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    /// Decision id.
    pub decision_id: String,
    /// Applicant (key-vault subject).
    pub applicant_id: String,
    /// Sealed protected attributes, if any were given.
    pub sealed: Option<SealedAttributes>,
    /// Numeric features by name (non-numeric values are left out).
    pub features: Vec<(String, f64)>,
}

/// The decision part: model, prediction, probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decided {
    /// Decision id.
    pub decision_id: String,
    /// Applicant.
    pub applicant_id: String,
    /// The model that decided.
    pub model: ModelRef,
    /// Positive prediction: the loan was approved.
    pub approve: bool,
    /// Predicted probability of default.
    pub probability: f64,
}

/// The observed outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Decision id.
    pub decision_id: String,
    /// Positive label: the loan was repaid.
    pub repaid: bool,
}

/// A lending event as the auditor reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LendingRecord {
    /// From `LoanApplicationSubmitted`.
    Submitted(Submitted),
    /// From `LoanDecisionMade`.
    Decided(Decided),
    /// From `LoanOutcomeObserved`.
    Observed(Observed),
}

fn millis(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    t.timestamp_millis()
}

fn codec(event: &RecordedEvent, e: serde_json::Error) -> AuditError {
    AuditError::Decode {
        position: event.position,
        event_type: event.event_type.as_str().to_owned(),
        reason: e.to_string(),
    }
}

/// Decodes a lending event with its event time; `Ok(None)` for event
/// types the auditor does not read.
pub fn decode(event: &RecordedEvent) -> Result<Option<(LendingRecord, Timestamp)>, AuditError> {
    match event.event_type.as_str() {
        LOAN_APPLICATION_SUBMITTED => {
            let s: LoanApplicationSubmitted = event.decode_json().map_err(|e| codec(event, e))?;
            let features = s
                .features
                .iter()
                .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
                .collect();
            Ok(Some((
                LendingRecord::Submitted(Submitted {
                    decision_id: s.decision_id,
                    applicant_id: s.applicant_id,
                    sealed: s.protected,
                    features,
                }),
                millis(s.submitted_at),
            )))
        }
        LOAN_DECISION_MADE => {
            let d: LoanDecisionMade = event.decode_json().map_err(|e| codec(event, e))?;
            Ok(Some((
                LendingRecord::Decided(Decided {
                    decision_id: d.decision_id,
                    applicant_id: d.applicant_id,
                    model: d.model,
                    approve: d.decision == Decision::Approve,
                    probability: d.probability,
                }),
                millis(d.decided_at),
            )))
        }
        LOAN_OUTCOME_OBSERVED => {
            let o: LoanOutcomeObserved = event.decode_json().map_err(|e| codec(event, e))?;
            Ok(Some((
                LendingRecord::Observed(Observed {
                    decision_id: o.decision_id,
                    repaid: o.outcome == Outcome::Repaid,
                }),
                millis(o.observed_at),
            )))
        }
        _ => Ok(None),
    }
}
