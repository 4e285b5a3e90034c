//! Stream-stream interval join.

use std::collections::VecDeque;
use std::hash::Hash;
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::codec::tags;
use crate::operator::LateHint;
use crate::time::MIN_TIMESTAMP;
use crate::window::keyed::{decode_keyed, encode_keyed, KeySlab, SlotState, Timers};
use crate::{Collector, Operator, StreamError, Timestamp};

/// Input of a two-sided join operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinInput<K, L, R> {
    /// A record of the left stream with its key.
    Left(K, L),
    /// A record of the right stream with its key.
    Right(K, R),
}

/// A matched pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined<K, L, R> {
    /// The join key.
    pub key: K,
    /// The left record.
    pub left: L,
    /// Event time of the left record.
    pub left_time: Timestamp,
    /// The right record.
    pub right: R,
    /// Event time of the right record.
    pub right_time: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct IntervalSpec {
    lower: i64,
    upper: i64,
    grace: i64,
}

/// Definition of an interval join: a left record at `t` matches right records with times in
/// `[t + lower, t + upper]` (both inclusive, as Flink's `between`).
///
/// A record is late — routed to the late side output — when `time + grace <= watermark`;
/// buffered records are evicted once no non-late partner can arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalJoin {
    spec: IntervalSpec,
}

impl IntervalJoin {
    /// Right times in `[t - before, t + after]` for a left record at `t`.
    pub fn between(before: Duration, after: Duration) -> Result<Self, StreamError> {
        let before = crate::window::millis("join bound 'before'", before, false)?;
        let after = crate::window::millis("join bound 'after'", after, false)?;
        Self::bounds_ms(-before, after)
    }

    /// Right times in `[t + lower, t + upper]` (milliseconds, `lower <= upper`, may be
    /// negative), e.g. `bounds_ms(1, 3_600_000)` for "within the hour after".
    pub fn bounds_ms(lower: i64, upper: i64) -> Result<Self, StreamError> {
        const LIMIT: i64 = i64::MAX / 4;
        if lower > upper {
            return Err(StreamError::Config(format!(
                "interval join lower bound {lower} ms exceeds upper bound {upper} ms"
            )));
        }
        if lower.abs() > LIMIT || upper.abs() > LIMIT {
            return Err(StreamError::Config(
                "interval join bounds are too large".to_string(),
            ));
        }
        Ok(Self {
            spec: IntervalSpec {
                lower,
                upper,
                grace: 0,
            },
        })
    }

    /// Accept records up to `grace` behind the watermark.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.spec.grace = i64::try_from(grace.as_millis())
            .unwrap_or(i64::MAX)
            .min(i64::MAX / 4);
        self
    }

    /// The join operator for keys `K`, left records `L` and right records `R`.
    pub fn operator<K, L, R>(self) -> IntervalJoinOperator<K, L, R>
    where
        K: Eq + Hash + Clone,
    {
        IntervalJoinOperator {
            spec: self.spec,
            slab: KeySlab::default(),
            timers: Timers::default(),
            watermark: MIN_TIMESTAMP,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct JoinKey<L, R> {
    left: VecDeque<(i64, L)>,
    right: VecDeque<(i64, R)>,
    timer: i64,
}

impl<L, R> Default for JoinKey<L, R> {
    fn default() -> Self {
        Self {
            left: VecDeque::new(),
            right: VecDeque::new(),
            timer: i64::MAX,
        }
    }
}

impl<L, R> SlotState for JoinKey<L, R> {
    fn reset(&mut self) {
        self.left.clear();
        self.right.clear();
        self.timer = i64::MAX;
    }
}

impl IntervalSpec {
    fn left_expiry(&self, t: i64) -> i64 {
        t.saturating_add(self.upper).saturating_add(self.grace)
    }
    fn right_expiry(&self, t: i64) -> i64 {
        t.saturating_sub(self.lower).saturating_add(self.grace)
    }
}

impl<L, R> JoinKey<L, R> {
    fn next_expiry(&self, spec: &IntervalSpec) -> Option<i64> {
        let l = self.left.front().map(|(t, _)| spec.left_expiry(*t));
        let r = self.right.front().map(|(t, _)| spec.right_expiry(*t));
        match (l, r) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The interval join operator (see [`IntervalJoin`]).
pub struct IntervalJoinOperator<K: Eq + Hash, L, R> {
    spec: IntervalSpec,
    slab: KeySlab<K, JoinKey<L, R>>,
    timers: Timers,
    watermark: Timestamp,
}

impl<K: Eq + Hash, L, R> std::fmt::Debug for IntervalJoinOperator<K, L, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntervalJoinOperator")
            .field("spec", &self.spec)
            .field("watermark", &self.watermark)
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, L, R> IntervalJoinOperator<K, L, R> {
    /// Number of buffered records (left, right) over all keys.
    pub fn buffered(&self) -> (usize, usize) {
        self.slab.iter().fold((0, 0), |(l, r), (_, s)| {
            (l + s.left.len(), r + s.right.len())
        })
    }

    /// The last watermark seen.
    pub fn watermark(&self) -> Timestamp {
        self.watermark
    }

    fn fire(&mut self, slot: u32, at: i64) {
        let spec = self.spec;
        let wm = self.watermark;
        let Some((_, st)) = self.slab.get_mut(slot) else {
            return;
        };
        if st.timer != at {
            return;
        }
        while st
            .left
            .front()
            .is_some_and(|(t, _)| spec.left_expiry(*t) <= wm)
        {
            st.left.pop_front();
        }
        while st
            .right
            .front()
            .is_some_and(|(t, _)| spec.right_expiry(*t) <= wm)
        {
            st.right.pop_front();
        }
        match st.next_expiry(&spec) {
            None => self.slab.remove(slot),
            Some(e) => {
                st.timer = e;
                self.timers.add(e, slot);
            }
        }
    }
}

/// Inserts keeping time order (after equal times, so arrival order is kept among ties).
fn insert_sorted<T>(buf: &mut VecDeque<(i64, T)>, time: i64, value: T) {
    let idx = match buf.back() {
        Some((t, _)) if *t <= time => buf.len(),
        _ => buf.partition_point(|(t, _)| *t <= time),
    };
    buf.insert(idx, (time, value));
}

impl<K: Eq + Hash + Clone, L, R> LateHint for IntervalJoinOperator<K, L, R> {
    fn may_be_late(&self, time: Timestamp) -> bool {
        time.saturating_add(self.spec.grace) <= self.watermark
    }
}

impl<K, L, R> Operator for IntervalJoinOperator<K, L, R>
where
    K: Eq + Hash + Clone + Send + Serialize + DeserializeOwned,
    L: Clone + Send + Serialize + DeserializeOwned,
    R: Clone + Send + Serialize + DeserializeOwned,
{
    type In = JoinInput<K, L, R>;
    type Out = Joined<K, L, R>;

    fn on_record(
        &mut self,
        record: JoinInput<K, L, R>,
        time: Timestamp,
        out: &mut Collector<Self::Out, Self::In>,
    ) {
        if self.may_be_late(time) {
            out.late(record, time);
            return;
        }
        let spec = self.spec;
        let (slot, expiry) = match record {
            JoinInput::Left(key, left) => {
                let slot = self.slab.slot_of(key);
                let Some((key, st)) = self.slab.get_mut(slot) else {
                    return;
                };
                let lo = time.saturating_add(spec.lower);
                let hi = time.saturating_add(spec.upper);
                let start = st.right.partition_point(|(t, _)| *t < lo);
                for (rt, r) in st.right.range(start..) {
                    if *rt > hi {
                        break;
                    }
                    out.emit(Joined {
                        key: key.clone(),
                        left: left.clone(),
                        left_time: time,
                        right: r.clone(),
                        right_time: *rt,
                    });
                }
                insert_sorted(&mut st.left, time, left);
                (slot, spec.left_expiry(time))
            }
            JoinInput::Right(key, right) => {
                let slot = self.slab.slot_of(key);
                let Some((key, st)) = self.slab.get_mut(slot) else {
                    return;
                };
                // Lefts at t_l with t_l + lower <= time <= t_l + upper.
                let lo = time.saturating_sub(spec.upper);
                let hi = time.saturating_sub(spec.lower);
                let start = st.left.partition_point(|(t, _)| *t < lo);
                for (lt, l) in st.left.range(start..) {
                    if *lt > hi {
                        break;
                    }
                    out.emit(Joined {
                        key: key.clone(),
                        left: l.clone(),
                        left_time: *lt,
                        right: right.clone(),
                        right_time: time,
                    });
                }
                insert_sorted(&mut st.right, time, right);
                (slot, spec.right_expiry(time))
            }
        };
        let st = self.slab.state_mut(slot);
        if expiry < st.timer {
            st.timer = expiry;
            self.timers.add(expiry, slot);
        }
    }

    fn on_watermark(&mut self, watermark: Timestamp, _out: &mut Collector<Self::Out, Self::In>) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        while let Some((at, slots)) = self.timers.pop_due(watermark) {
            for &slot in &slots {
                self.fire(slot, at);
            }
            self.timers.recycle(slots);
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StreamError> {
        encode_keyed(
            tags::INTERVAL_JOIN,
            self.spec,
            self.watermark,
            &self.slab,
            &self.timers,
        )
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StreamError> {
        (self.watermark, self.slab, self.timers) =
            decode_keyed(tags::INTERVAL_JOIN, snapshot, &self.spec, "join")?;
        Ok(())
    }
}
