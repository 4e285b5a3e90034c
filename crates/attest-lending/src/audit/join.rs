//! The interval join of decisions with their later outcomes, by decision id.
//!
//! A decision waits for its outcome for at most `bound` of event time (365 days by default);
//! an outcome within the bound joins it (once: the decision leaves the buffer), an outcome
//! without a pending decision (unknown, already labelled, or too late) is the caller's late
//! record. The buffer keeps only what the labelled count needs — model, prediction, time —
//! never protected attributes: the outcome side brings the groups, resolved through the key
//! vault when the outcome is read, so an erasure in between is honoured.

use std::collections::{BTreeSet, HashMap};

use attest_stream::Timestamp;
use serde::{Deserialize, Serialize};

use crate::events::ModelRef;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    time: Timestamp,
    model: ModelRef,
    approve: bool,
}

/// Pending decisions keyed by decision id, with an expiry index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionJoin {
    bound_ms: i64,
    pending: HashMap<String, Pending>,
    expiry: BTreeSet<(Timestamp, String)>,
}

impl DecisionJoin {
    /// A join keeping decisions for `bound_ms` milliseconds of event time.
    pub fn new(bound_ms: i64) -> Self {
        DecisionJoin {
            bound_ms: bound_ms.max(0),
            ..Default::default()
        }
    }

    /// Decisions waiting for an outcome.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Buffers a decision made at `time`.
    pub fn decided(&mut self, decision_id: &str, model: &ModelRef, approve: bool, time: Timestamp) {
        let p = Pending {
            time,
            model: model.clone(),
            approve,
        };
        if let Some(old) = self.pending.insert(decision_id.to_owned(), p) {
            self.expiry.remove(&(old.time, decision_id.to_owned()));
        }
        self.expiry.insert((time, decision_id.to_owned()));
    }

    /// Joins an outcome observed at `time`: the decision's model and prediction, or `None`
    /// when no decision is pending for it within the bound.
    pub fn observed(&mut self, decision_id: &str, time: Timestamp) -> Option<(ModelRef, bool)> {
        let p = self.pending.get(decision_id)?;
        if time.saturating_sub(p.time) > self.bound_ms {
            return None;
        }
        let p = self.pending.remove(decision_id)?;
        self.expiry.remove(&(p.time, decision_id.to_owned()));
        Some((p.model, p.approve))
    }

    /// Drops decisions whose bound lies before `watermark`.
    pub fn advance(&mut self, watermark: Timestamp) {
        let horizon = watermark.saturating_sub(self.bound_ms);
        while let Some((t, _)) = self.expiry.first() {
            if *t >= horizon {
                break;
            }
            if let Some((_, id)) = self.expiry.pop_first() {
                self.pending.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_within_bound_once() {
        let m = ModelRef {
            id: "credit".into(),
            version: 1,
        };
        let mut j = DecisionJoin::new(1_000);
        j.decided("1", &m, true, 0);
        j.decided("2", &m, false, 0);
        assert_eq!(j.observed("1", 500), Some((m.clone(), true)));
        // Twice, unknown, too late.
        assert_eq!(j.observed("1", 600), None);
        assert_eq!(j.observed("9", 600), None);
        assert_eq!(j.observed("2", 1_001), None);
        assert_eq!(j.pending(), 1);
        j.advance(1_000);
        assert_eq!(j.pending(), 1);
        j.advance(1_001);
        assert_eq!(j.pending(), 0);
    }
}
