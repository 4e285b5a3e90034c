//! The dashboard's own read model: a catch-up-then-live subscription to the global log that
//! keeps, in memory, what the overview and incidents pages show and the auditor does not:
//! decision and outcome counts, decisions per minute, the latest decisions, and incidents
//! with their current status.
//!
//! It is rebuilt from the log on every start (position 0), so it needs no table and cannot
//! disagree with the log; memory is bounded (per-minute buckets for 24 hours, the last
//! [`RECENT`] decisions, one row per incident).
//!
//! Decisions are counted from `LoanDecisionMade` events (one per decision: idempotent retries
//! append nothing), outcomes from `LoanOutcomeObserved`. Incidents: `IncidentOpened` opens a
//! row (status `open`); any later event `Incident<Status>` in the same `incident-<id>` stream
//! sets the status to the lower-cased `<Status>` (`IncidentAcknowledged` → `acknowledged`,
//! `IncidentResolved` → `resolved`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use attest_core::{Position, RecordedEvent};
use attest_lending::events::{
    IncidentOpened, LoanDecisionMade, LoanOutcomeObserved, INCIDENT_OPENED, LOAN_CATEGORY,
    LOAN_DECISION_MADE, LOAN_OUTCOME_OBSERVED,
};
use attest_lending::incident::INCIDENT_CATEGORY;
use attest_lending::Outcome;
use attest_store::{DynStore, LogFilter, StoreError, Subscription};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use tokio::task::JoinHandle;

use super::view::{IncidentRow, LagRow, RateView, RecentDecision, Totals};

/// How many of the latest decisions the overview lists.
pub const RECENT: usize = 25;
/// Per-minute buckets kept (24 hours).
const BUCKETS: i64 = 24 * 60;
/// Name of this read model in the lag table.
pub const FEED_NAME: &str = "dashboard read model";

#[derive(Debug, Default)]
struct FeedState {
    totals: Totals,
    /// Minute start (Unix seconds) → decisions.
    per_minute: BTreeMap<i64, u64>,
    recent: VecDeque<RecentDecision>,
    incidents: HashMap<String, IncidentRow>,
    position: Position,
    /// When the feed last saw the head (no event left to apply).
    caught_up_at: Option<DateTime<Utc>>,
    /// Events that could not be decoded (skipped, logged).
    skipped: u64,
}

impl FeedState {
    fn apply(&mut self, e: &RecordedEvent) {
        let ty = e.event_type.as_str();
        let category = e.stream_id.category();
        if category == LOAN_CATEGORY {
            if ty == LOAN_DECISION_MADE {
                match e.decode_json::<LoanDecisionMade>() {
                    Ok(d) => self.decided(d),
                    Err(err) => self.skip(e, &err),
                }
            } else if ty == LOAN_OUTCOME_OBSERVED {
                match e.decode_json::<LoanOutcomeObserved>() {
                    Ok(o) => self.observed(&o),
                    Err(err) => self.skip(e, &err),
                }
            }
        } else if category == INCIDENT_CATEGORY {
            let id = e.stream_id.id_part().to_string();
            if ty == INCIDENT_OPENED {
                match e.decode_json::<IncidentOpened>() {
                    Ok(i) => {
                        self.incidents.insert(
                            id.clone(),
                            IncidentRow {
                                id: if i.incident_id.is_empty() {
                                    id
                                } else {
                                    i.incident_id
                                },
                                status: "open".into(),
                                model: i.model.to_string(),
                                reason: i.reason,
                                trigger: i.trigger,
                                opened_at: Some(i.opened_at),
                                updated_at: Some(e.recorded_at),
                            },
                        );
                    }
                    Err(err) => self.skip(e, &err),
                }
            } else if let Some(status) = ty.strip_prefix("Incident") {
                if let Some(row) = self.incidents.get_mut(&id) {
                    row.status = status.to_ascii_lowercase();
                    row.updated_at = Some(e.recorded_at);
                }
            }
        }
        self.position = e.position;
    }

    fn skip(&mut self, e: &RecordedEvent, err: &serde_json::Error) {
        self.skipped += 1;
        tracing::warn!(
            position = e.position,
            stream = e.stream_id.as_str(),
            event_type = e.event_type.as_str(),
            error = %err,
            "dashboard feed: undecodable event skipped"
        );
    }

    fn decided(&mut self, d: LoanDecisionMade) {
        self.totals.decisions += 1;
        match d.decision {
            attest_lending::Decision::Approve => self.totals.approvals += 1,
            attest_lending::Decision::Decline => self.totals.declines += 1,
        }
        let minute = d.decided_at.timestamp().div_euclid(60) * 60;
        *self.per_minute.entry(minute).or_insert(0) += 1;
        while self.per_minute.len() as i64 > BUCKETS {
            self.per_minute.pop_first();
        }
        self.recent.push_front(RecentDecision {
            id: d.decision_id,
            decision: d.decision,
            probability: d.probability,
            model: d.model,
            decided_at: d.decided_at,
            outcome: None,
        });
        self.recent.truncate(RECENT);
    }

    fn observed(&mut self, o: &LoanOutcomeObserved) {
        match o.outcome {
            Outcome::Repaid => self.totals.repaid += 1,
            Outcome::Defaulted => self.totals.defaulted += 1,
        }
        if let Some(r) = self.recent.iter_mut().find(|r| r.id == o.decision_id) {
            r.outcome = Some(o.outcome);
        }
    }

    fn rate(&self, now: DateTime<Utc>) -> RateView {
        let now_minute = now
            .duration_trunc(TimeDelta::minutes(1))
            .unwrap_or(now)
            .timestamp();
        let first = now_minute - 59 * 60;
        let per_minute = (0..60)
            .map(|i| {
                let start = first + i * 60;
                let count = self.per_minute.get(&start).copied().unwrap_or(0);
                (DateTime::from_timestamp(start, 0).unwrap_or(now), count)
            })
            .collect();
        let last_hour = self.per_minute.range(first..).map(|(_, c)| *c).sum();
        // Whole-minute buckets: "last minute" is the current and the previous bucket weighted
        // by how much of the previous one lies within the last 60 seconds.
        let into = (now - DateTime::from_timestamp(now_minute, 0).unwrap_or(now))
            .num_milliseconds()
            .clamp(0, 60_000) as f64
            / 60_000.0;
        let current = self.per_minute.get(&now_minute).copied().unwrap_or(0);
        let previous = self
            .per_minute
            .get(&(now_minute - 60))
            .copied()
            .unwrap_or(0);
        let last_minute = current + ((previous as f64) * (1.0 - into)).round() as u64;
        RateView {
            per_minute,
            last_minute,
            last_hour,
        }
    }
}

/// What the feed knows now (a consistent copy).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedSnapshot {
    /// Decision and outcome counts.
    pub totals: Totals,
    /// Decisions per minute.
    pub rate: RateView,
    /// Latest decisions, newest first.
    pub recent: Vec<RecentDecision>,
    /// Incidents, newest first.
    pub incidents: Vec<IncidentRow>,
    /// This read model's lag behind the log head.
    pub lag: LagRow,
    /// Log position applied.
    pub position: Position,
}

/// The running feed: a background task applying the log to the in-memory state.
pub struct DashboardFeed {
    state: Arc<RwLock<FeedState>>,
    store: DynStore,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for DashboardFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let position = self.state.read().map(|s| s.position).unwrap_or_default();
        f.debug_struct("DashboardFeed")
            .field("position", &position)
            .finish_non_exhaustive()
    }
}

impl DashboardFeed {
    /// Starts the feed on `store` from the beginning of the log (must be called inside a tokio
    /// runtime).
    pub fn start(store: DynStore) -> Self {
        let state = Arc::new(RwLock::new(FeedState::default()));
        let task = tokio::spawn(run(store.clone(), state.clone()));
        DashboardFeed { state, store, task }
    }

    /// A consistent copy of the state, with the decision rate relative to `now`.
    pub fn snapshot(&self, now: DateTime<Utc>) -> FeedSnapshot {
        let head = *self.store.head_watch().borrow();
        // A poisoned lock only means a panic elsewhere while holding it; the counters are
        // still the last consistent values, so keep serving them.
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        let behind = head.saturating_sub(s.position);
        let seconds = if behind == 0 {
            Some(0.0)
        } else {
            s.caught_up_at
                .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
        };
        let mut incidents: Vec<IncidentRow> = s.incidents.values().cloned().collect();
        incidents.sort_by(|a, b| b.opened_at.cmp(&a.opened_at).then(a.id.cmp(&b.id)));
        FeedSnapshot {
            totals: s.totals.clone(),
            rate: s.rate(now),
            recent: s.recent.iter().cloned().collect(),
            incidents,
            lag: LagRow {
                name: FEED_NAME.to_string(),
                events: behind,
                seconds,
            },
            position: s.position,
        }
    }

    /// Waits until the feed has applied every event up to `position` (for tests and for a
    /// page that must show a decision just made). Returns false on timeout.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let at = self
                .state
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .position;
            if at >= position {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for DashboardFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(store: DynStore, state: Arc<RwLock<FeedState>>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let from = state.read().unwrap_or_else(|p| p.into_inner()).position;
        let mut sub = Subscription::new(store.clone(), from, LogFilter::All);
        let head = store.head_watch();
        loop {
            match sub.next().await {
                Ok(e) => {
                    backoff = Duration::from_millis(100);
                    let at_head = e.position >= *head.borrow();
                    let mut s = state.write().unwrap_or_else(|p| p.into_inner());
                    s.apply(&e);
                    if at_head {
                        s.caught_up_at = Some(Utc::now());
                    }
                }
                Err(StoreError::Closed) => {
                    tracing::info!("dashboard feed: store closed, stopping");
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "dashboard feed: read failed, retrying");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_counts_last_hour_and_minute() {
        let mut s = FeedState::default();
        let now = DateTime::parse_from_rfc3339("2026-01-01T10:30:30Z")
            .unwrap()
            .with_timezone(&Utc);
        let minute = |m: i64| {
            DateTime::parse_from_rfc3339("2026-01-01T10:30:00Z")
                .unwrap()
                .timestamp()
                + m * 60
        };
        s.per_minute.insert(minute(0), 4);
        s.per_minute.insert(minute(-1), 10);
        s.per_minute.insert(minute(-59), 1);
        s.per_minute.insert(minute(-60), 100);
        let r = s.rate(now);
        assert_eq!(r.per_minute.len(), 60);
        assert_eq!(r.per_minute[59].1, 4);
        assert_eq!(r.per_minute[0].1, 1);
        assert_eq!(r.last_hour, 15);
        // Half of the previous minute lies within the last 60 s.
        assert_eq!(r.last_minute, 4 + 5);
    }
}
