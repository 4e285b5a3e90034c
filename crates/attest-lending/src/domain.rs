//! The `LoanApplication` aggregate: one application, its decision and its outcome.
//!
//! Commands:
//! - [`LoanCommand::SubmitAndDecide`]: on a new stream, produces `LoanApplicationSubmitted`
//!   and `LoanDecisionMade` together (appended atomically); on an existing one it is refused
//!   with [`LoanRejection::AlreadySubmitted`];
//! - [`LoanCommand::RecordOutcome`]: produces `LoanOutcomeObserved` once; a second time is
//!   [`LoanRejection::OutcomeAlreadyRecorded`], before any decision
//!   [`LoanRejection::NotSubmitted`].
//!
//! `handle` is pure: the service computes the score, contributions and clock readings and puts
//! them in the command.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::events::{
    LoanApplicationSubmitted, LoanDecisionMade, LoanEvent, LoanOutcomeObserved, Outcome,
};

/// The state of one loan application.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoanApplication {
    /// The submission, once made.
    pub submitted: Option<LoanApplicationSubmitted>,
    /// The decision, once made.
    pub decision: Option<LoanDecisionMade>,
    /// The outcome, once observed.
    pub outcome: Option<LoanOutcomeObserved>,
}

/// What callers ask of a loan application.
#[derive(Debug, Clone, PartialEq)]
pub enum LoanCommand {
    /// Submit the application together with the model's decision on it.
    SubmitAndDecide {
        /// The submission event to record.
        submitted: Box<LoanApplicationSubmitted>,
        /// The decision event to record.
        decision: Box<LoanDecisionMade>,
    },
    /// Record the observed outcome.
    RecordOutcome {
        /// Repaid or defaulted.
        outcome: Outcome,
        /// When it was observed.
        observed_at: chrono::DateTime<chrono::Utc>,
    },
}

/// Why a loan command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoanRejection {
    /// The application exists already.
    #[error("loan application {0} was already submitted")]
    AlreadySubmitted(String),
    /// No application (or no decision) to attach an outcome to.
    #[error("no decided loan application here")]
    NotSubmitted,
    /// The outcome is known already.
    #[error("the outcome of {0} was already recorded")]
    OutcomeAlreadyRecorded(String),
    /// The submission and decision disagree on ids.
    #[error("submission and decision disagree: {0}")]
    Inconsistent(String),
}

impl attest_cqrs::Aggregate for LoanApplication {
    const CATEGORY: &'static str = crate::events::LOAN_CATEGORY;
    // Three events at most: snapshots would never pay off.
    const SNAPSHOT_EVERY: u64 = 0;
    type Command = LoanCommand;
    type Event = LoanEvent;
    type Error = LoanRejection;

    fn handle(&self, command: LoanCommand) -> Result<Vec<LoanEvent>, LoanRejection> {
        match command {
            LoanCommand::SubmitAndDecide {
                submitted,
                decision,
            } => {
                if let Some(s) = &self.submitted {
                    return Err(LoanRejection::AlreadySubmitted(s.decision_id.clone()));
                }
                if submitted.decision_id != decision.decision_id
                    || submitted.applicant_id != decision.applicant_id
                {
                    return Err(LoanRejection::Inconsistent(format!(
                        "{}/{} vs {}/{}",
                        submitted.decision_id,
                        submitted.applicant_id,
                        decision.decision_id,
                        decision.applicant_id
                    )));
                }
                Ok(vec![
                    LoanEvent::Submitted(*submitted),
                    LoanEvent::DecisionMade(*decision),
                ])
            }
            LoanCommand::RecordOutcome {
                outcome,
                observed_at,
            } => {
                let Some(d) = &self.decision else {
                    return Err(LoanRejection::NotSubmitted);
                };
                if self.outcome.is_some() {
                    return Err(LoanRejection::OutcomeAlreadyRecorded(d.decision_id.clone()));
                }
                Ok(vec![LoanEvent::OutcomeObserved(LoanOutcomeObserved {
                    decision_id: d.decision_id.clone(),
                    outcome,
                    observed_at,
                })])
            }
        }
    }

    fn apply(&mut self, event: &LoanEvent) {
        match event {
            LoanEvent::Submitted(s) => self.submitted = Some(s.clone()),
            LoanEvent::DecisionMade(d) => self.decision = Some(d.clone()),
            LoanEvent::OutcomeObserved(o) => self.outcome = Some(o.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Decision, ModelRef};
    use attest_cqrs::Aggregate;

    fn cmd(id: &str) -> LoanCommand {
        let now = chrono::Utc::now();
        LoanCommand::SubmitAndDecide {
            submitted: Box::new(LoanApplicationSubmitted {
                decision_id: id.into(),
                applicant_id: "a1".into(),
                features: Default::default(),
                protected: None,
                request_hash: "h".into(),
                idempotency_key: None,
                submitted_at: now,
            }),
            decision: Box::new(LoanDecisionMade {
                decision_id: id.into(),
                applicant_id: "a1".into(),
                model: ModelRef {
                    id: "m".into(),
                    version: 1,
                },
                score: 0.0,
                probability: 0.5,
                decision: Decision::Decline,
                threshold: 0.5,
                top_contributions: vec![],
                trace_id: "t".into(),
                decided_at: now,
            }),
        }
    }

    #[test]
    fn lifecycle_and_refusals() {
        let mut a = LoanApplication::default();
        let outcome = LoanCommand::RecordOutcome {
            outcome: Outcome::Repaid,
            observed_at: chrono::Utc::now(),
        };
        assert_eq!(a.handle(outcome.clone()), Err(LoanRejection::NotSubmitted));
        let evs = a.handle(cmd("d1")).unwrap();
        assert_eq!(evs.len(), 2);
        evs.iter().for_each(|e| a.apply(e));
        assert!(matches!(
            a.handle(cmd("d1")),
            Err(LoanRejection::AlreadySubmitted(_))
        ));
        let evs = a.handle(outcome.clone()).unwrap();
        evs.iter().for_each(|e| a.apply(e));
        assert!(matches!(
            a.handle(outcome),
            Err(LoanRejection::OutcomeAlreadyRecorded(_))
        ));
        // Untagged events round-trip through JSON to the right variant.
        for e in [
            LoanEvent::Submitted(a.submitted.clone().unwrap()),
            LoanEvent::DecisionMade(a.decision.clone().unwrap()),
            LoanEvent::OutcomeObserved(a.outcome.clone().unwrap()),
        ] {
            let back: LoanEvent = serde_json::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
            assert_eq!(back, e);
        }
    }
}
