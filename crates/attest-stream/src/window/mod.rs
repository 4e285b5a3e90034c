//! Keyed event-time windows: tumbling, hopping, sliding (Kafka Streams record-difference
//! semantics) and session windows, each an [`Operator`](crate::Operator) over `(key, value)`
//! records that aggregates values incrementally with an [`Aggregator`](crate::agg::Aggregator).
//!
//! # Bounds
//! Every window is reported as a half-open interval `[start, end)` of event time in
//! milliseconds ([`WindowResult::start`], [`WindowResult::end`]).
//! - **Tumbling** windows of size `s` are `[k·s, (k+1)·s)`.
//! - **Hopping** windows of size `s` advancing by `d` are `[k·d, k·d + s)`; a record belongs to
//!   `s / d` of them. They are computed from *panes* of `gcd(s, d)`: a record updates one pane
//!   of its key, and a closing window combines its panes with two-stack sliding aggregation, so
//!   neither the cost per record nor the cost per result grows with the overlap `s / d` (see
//!   [`AlignedWindowOperator`] for the pane-major layout that keeps firing sequential).
//! - **Sliding** windows follow Kafka Streams' `SlidingWindows` (maximum time difference `t`,
//!   both ends inclusive there): each record at `r` defines the window `[r - t, r]`, and the
//!   window `[r + 1, r + 1 + t]` if that one contains a record; every distinct, non-empty set of
//!   records within `t` of each other gets exactly one window. Kafka's inclusive `[a; b]` is
//!   reported here as `[a, b + 1)`.
//! - **Session** windows (gap `g`): each record at `r` opens `[r, r + g)`; windows of a key that
//!   overlap merge (their accumulators are merged), so a record that bridges two sessions
//!   joins them into one. A session is `[first record, last record + g)`.
//!
//! # Watermarks, firing and lateness
//! A watermark `w` promises that no record with event time `<= w` will follow (beyond the
//! allowed lateness). A window `[start, end)` is complete when `w >= end - 1`. With an allowed
//! lateness (grace) `g`, it stays open, and updatable by late records, until
//! `w >= end - 1 + g`; at that point it **closes**: its final result is emitted and its state
//! dropped. A record whose windows are all closed goes to [`Collector::late`] (the late side
//! output) — never dropped silently.
//!
//! Closing is driven by watermarks, so final results come out for keys that went quiet.
//! Tumbling and hopping windows share their boundaries across keys: a closing window is
//! fired for every key with records in it, in key slot order (first-seen order for a fresh
//! operator), and the cost of a watermark is proportional to the keys with state. Sliding
//! and session windows close per key through a timer index ordered by close time, so their
//! cost is proportional to what closes. Results of one watermark are emitted in order of
//! close time.
//!
//! # Emit modes
//! - [`EmitMode::Final`]: one result per window, when it closes (`is_final = true`).
//! - [`EmitMode::OnUpdate`]: after every record, the updated result of each still-open window
//!   the record belongs to (`is_final = false`), and the final result when the window closes.
//!   For hopping windows that is one result per overlapping window (`s / d` of them).
//!
//! # Empty windows
//! Windows without records produce nothing (as in Flink and Kafka Streams): a key with no
//! record in a window has no result for it, and a gap in a key's records emits nothing.
//!
//! # State
//! [`Operator::snapshot`](crate::Operator::snapshot) encodes the complete state (every open
//! window's accumulators, the timer index, the last watermark and the window definition) in
//! a compact binary form; restoring it into an operator with another definition is an error.

mod aligned;
pub(crate) mod keyed;
mod session;
mod sliding;
pub(crate) mod two_stack;

use std::time::Duration;

pub use aligned::{AlignedWindowOperator, HoppingWindows, TumblingWindows};
pub use session::{SessionWindowOperator, SessionWindows};
pub use sliding::{SlidingWindowOperator, SlidingWindows};

use crate::{StreamError, Timestamp};

#[cfg(doc)]
use crate::Collector;

/// When window results are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum EmitMode {
    /// After every record (updated result, not final) and once more when the window closes.
    OnUpdate,
    /// Only when the window closes (watermark past end - 1 + grace).
    #[default]
    Final,
}

/// The result of one window for one key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowResult<K, O> {
    /// The key.
    pub key: K,
    /// Window start (inclusive), ms.
    pub start: Timestamp,
    /// Window end (exclusive), ms.
    pub end: Timestamp,
    /// The aggregated value.
    pub value: O,
    /// `true` for the final result emitted when the window closes; `false` for an update
    /// ([`EmitMode::OnUpdate`]) that a later update or the final result supersedes.
    pub is_final: bool,
}

/// Converts a duration to whole milliseconds, rejecting zero when `positive` is set.
pub(crate) fn millis(what: &str, d: Duration, positive: bool) -> Result<i64, StreamError> {
    let ms = i64::try_from(d.as_millis())
        .map_err(|_| StreamError::Config(format!("{what} is too large")))?;
    if positive && ms <= 0 {
        return Err(StreamError::Config(format!(
            "{what} must be at least 1 ms, got {d:?}"
        )));
    }
    Ok(ms)
}
