//! Consumer lag: in messages and in seconds, with a Burrow-style status evaluated over a
//! sliding window of observations.
//!
//! Consumers (or a poller) report [`Observation`]s — position (ack floor), lag in messages,
//! lag in seconds — to a [`LagMonitor`]; [`LagMonitor::snapshot`] turns the last `window`
//! observations of each consumer into a [`LagRow`] with a [`LagStatus`]. Rules, first match
//! wins:
//! 1. **STOP**: the last report is older than `stop_after` (the consumer stopped reporting);
//! 2. **OK**: some observation in the window has zero lag (the consumer caught up recently),
//!    or the window holds fewer than `min_observations`;
//! 3. **STALL**: lag is non-zero and the position did not move across the whole window;
//! 4. **WARN**: the position moves, but lag never decreases across the window and ends
//!    higher than it started (the consumer falls behind);
//! 5. **OK** otherwise.
//!
//! Time is injected ([`LagMonitor::snapshot_at`]), so the rules are tested with scripted
//! sequences, without sleeping.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::message::ConsumerInfo;

/// One report of a consumer's progress.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Observation {
    /// When it was observed.
    pub at: DateTime<Utc>,
    /// The consumer's position (ack floor: every message up to it is processed).
    pub position: u64,
    /// Unprocessed messages.
    pub lag_messages: u64,
    /// Age of the oldest unprocessed message, in seconds.
    pub lag_seconds: f64,
}

impl Observation {
    /// The observation that `info` represents at `at`.
    pub fn from_info(info: &ConsumerInfo, at: DateTime<Utc>) -> Self {
        Observation {
            at,
            position: info.ack_floor,
            lag_messages: info.lag_messages(),
            lag_seconds: info.lag_seconds(at),
        }
    }
}

/// Health of a consumer, Burrow-style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LagStatus {
    /// Keeping up.
    Ok,
    /// Moving, but lag keeps growing.
    Warn,
    /// Lag is non-zero and the position is not moving.
    Stall,
    /// No report for too long.
    Stop,
}

impl std::fmt::Display for LagStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LagStatus::Ok => "OK",
            LagStatus::Warn => "WARN",
            LagStatus::Stall => "STALL",
            LagStatus::Stop => "STOP",
        })
    }
}

/// Window and thresholds of the status rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagConfig {
    /// Observations kept per consumer.
    pub window: usize,
    /// Fewest observations needed before WARN or STALL can be declared.
    pub min_observations: usize,
    /// A consumer whose last report is older than this is STOP.
    pub stop_after: Duration,
}

impl Default for LagConfig {
    fn default() -> Self {
        LagConfig {
            window: 10,
            min_observations: 3,
            stop_after: Duration::from_secs(60),
        }
    }
}

/// One consumer's lag, as [`LagMonitor::snapshot`] reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LagRow {
    /// Consumer key (usually `stream/consumer`).
    pub consumer: String,
    /// Status over the window.
    pub status: LagStatus,
    /// Latest lag in messages.
    pub lag_messages: u64,
    /// Latest lag in seconds.
    pub lag_seconds: f64,
    /// Latest position.
    pub position: u64,
    /// When the consumer last reported.
    pub last_report: DateTime<Utc>,
    /// Observations in the window.
    pub observations: usize,
}

/// Evaluates the status rules (see the module docs) on a window, oldest first.
pub fn evaluate(window: &[Observation], now: DateTime<Utc>, config: &LagConfig) -> LagStatus {
    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        return LagStatus::Stop;
    };
    let stop_after = chrono::Duration::from_std(config.stop_after).unwrap_or(chrono::Duration::MAX);
    if now - last.at > stop_after {
        return LagStatus::Stop;
    }
    if window.iter().any(|o| o.lag_messages == 0) || window.len() < config.min_observations.max(2) {
        return LagStatus::Ok;
    }
    if first.position == last.position {
        return LagStatus::Stall;
    }
    let never_decreases = window
        .windows(2)
        .all(|w| w[1].lag_messages >= w[0].lag_messages);
    if never_decreases && last.lag_messages > first.lag_messages {
        return LagStatus::Warn;
    }
    LagStatus::Ok
}

/// Collects observations per consumer and evaluates their status.
#[derive(Debug, Default)]
pub struct LagMonitor {
    config: LagConfig,
    windows: Mutex<BTreeMap<String, VecDeque<Observation>>>,
}

impl LagMonitor {
    /// A monitor with the given rules.
    pub fn new(config: LagConfig) -> Self {
        LagMonitor {
            config,
            windows: Mutex::new(BTreeMap::new()),
        }
    }

    /// The rules in force.
    pub fn config(&self) -> &LagConfig {
        &self.config
    }

    /// Records an observation for `consumer`, dropping the oldest beyond the window.
    pub fn record(&self, consumer: &str, observation: Observation) {
        let mut windows = match self.windows.lock() {
            Ok(w) => w,
            // A panic while holding the lock cannot leave a window half-updated in a way that
            // matters for monitoring; keep going with the data.
            Err(poisoned) => poisoned.into_inner(),
        };
        let w = windows.entry(consumer.to_string()).or_default();
        w.push_back(observation);
        while w.len() > self.config.window.max(1) {
            w.pop_front();
        }
    }

    /// Records what a consumer's info says at `at`.
    pub fn record_info(&self, consumer: &str, info: &ConsumerInfo, at: DateTime<Utc>) {
        self.record(consumer, Observation::from_info(info, at));
    }

    /// Forgets a consumer.
    pub fn remove(&self, consumer: &str) {
        match self.windows.lock() {
            Ok(mut w) => w.remove(consumer),
            Err(poisoned) => poisoned.into_inner().remove(consumer),
        };
    }

    /// One row per consumer, evaluated now.
    pub fn snapshot(&self) -> Vec<LagRow> {
        self.snapshot_at(Utc::now())
    }

    /// One row per consumer (sorted by name), evaluated at `now`.
    pub fn snapshot_at(&self, now: DateTime<Utc>) -> Vec<LagRow> {
        let windows = match self.windows.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        windows
            .iter()
            .filter_map(|(name, w)| {
                let last = *w.back()?;
                let obs: Vec<Observation> = w.iter().copied().collect();
                Some(LagRow {
                    consumer: name.clone(),
                    status: evaluate(&obs, now, &self.config),
                    lag_messages: last.lag_messages,
                    lag_seconds: last.lag_seconds,
                    position: last.position,
                    last_report: last.at,
                    observations: obs.len(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn obs(s: i64, position: u64, lag: u64) -> Observation {
        Observation {
            at: t(s),
            position,
            lag_messages: lag,
            lag_seconds: lag as f64 / 10.0,
        }
    }

    fn status(seq: &[(i64, u64, u64)], now: i64) -> LagStatus {
        let m = LagMonitor::new(LagConfig {
            window: 5,
            min_observations: 3,
            stop_after: Duration::from_secs(30),
        });
        for &(s, p, l) in seq {
            m.record("c", obs(s, p, l));
        }
        m.snapshot_at(t(now))[0].status
    }

    #[test]
    fn caught_up_consumer_is_ok() {
        assert_eq!(
            status(&[(0, 10, 5), (10, 20, 0), (20, 30, 3)], 25),
            LagStatus::Ok
        );
    }

    #[test]
    fn growing_lag_while_moving_is_warn() {
        assert_eq!(
            status(&[(0, 10, 5), (10, 20, 8), (20, 30, 8), (30, 40, 12)], 35),
            LagStatus::Warn
        );
    }

    #[test]
    fn shrinking_lag_is_ok() {
        assert_eq!(
            status(&[(0, 10, 12), (10, 20, 9), (20, 30, 11), (30, 40, 4)], 35),
            LagStatus::Ok
        );
    }

    #[test]
    fn position_not_moving_with_lag_is_stall() {
        assert_eq!(
            status(&[(0, 10, 5), (10, 10, 6), (20, 10, 9)], 25),
            LagStatus::Stall
        );
    }

    #[test]
    fn no_report_for_too_long_is_stop() {
        assert_eq!(
            status(&[(0, 10, 5), (10, 20, 3), (20, 30, 1)], 51),
            LagStatus::Stop
        );
        assert_eq!(
            status(&[(0, 10, 5), (10, 20, 3), (20, 30, 1)], 50),
            LagStatus::Ok
        );
    }

    #[test]
    fn too_few_observations_is_ok() {
        assert_eq!(status(&[(0, 10, 5), (10, 10, 9)], 15), LagStatus::Ok);
    }

    #[test]
    fn window_slides_past_old_zero_lag() {
        // The zero-lag report falls out of the 5-observation window, then the stall shows.
        let seq = [
            (0, 5, 0),
            (10, 10, 4),
            (20, 10, 4),
            (30, 10, 5),
            (40, 10, 6),
            (50, 10, 7),
        ];
        assert_eq!(status(&seq[..5], 45), LagStatus::Ok);
        assert_eq!(status(&seq, 55), LagStatus::Stall);
    }

    #[test]
    fn snapshot_reports_latest_values_per_consumer() {
        let m = LagMonitor::new(LagConfig::default());
        m.record("b", obs(0, 3, 7));
        m.record("a", obs(0, 1, 2));
        m.record("a", obs(5, 4, 0));
        let rows = m.snapshot_at(t(6));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].consumer, "a");
        assert_eq!(
            (rows[0].position, rows[0].lag_messages, rows[0].observations),
            (4, 0, 2)
        );
        assert_eq!(rows[1].lag_seconds, 0.7);
        m.remove("a");
        assert_eq!(m.snapshot_at(t(6)).len(), 1);
    }

    proptest! {
        #[test]
        fn a_zero_lag_in_a_fresh_window_is_always_ok(
            lags in prop::collection::vec(0u64..100, 1..10),
            positions in prop::collection::vec(0u64..100, 10),
            zero_at in 0usize..10,
        ) {
            let mut lags = lags;
            let i = zero_at % lags.len();
            lags[i] = 0;
            let window: Vec<Observation> = lags.iter().enumerate()
                .map(|(k, &l)| obs(k as i64, positions[k], l)).collect();
            let now = window.last().unwrap().at;
            prop_assert_eq!(evaluate(&window, now, &LagConfig::default()), LagStatus::Ok);
        }

        #[test]
        fn stale_reports_are_always_stop(
            lags in prop::collection::vec(0u64..100, 1..10),
            extra in 61i64..10_000,
        ) {
            let window: Vec<Observation> = lags.iter().enumerate()
                .map(|(k, &l)| obs(k as i64, k as u64, l)).collect();
            let now = window.last().unwrap().at + chrono::Duration::seconds(extra);
            prop_assert_eq!(evaluate(&window, now, &LagConfig::default()), LagStatus::Stop);
        }
    }
}
