//! Sliding windows with Kafka Streams' record-difference semantics.

use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keyed::{decode_keyed, encode_keyed, KeySlab, SlotState, Timers};
use super::two_stack::TwoStack;
use super::{millis, EmitMode, WindowResult};
use crate::agg::Aggregator;
use crate::codec::tags;
use crate::operator::LateHint;
use crate::time::MIN_TIMESTAMP;
use crate::{Collector, Operator, StreamError, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SlidingSpec {
    diff: i64,
    grace: i64,
}

/// Sliding windows as in Kafka Streams' `SlidingWindows`: records of a key whose times differ
/// by at most `time_difference` (inclusive) share a window, and a window exists for each
/// distinct set of such records — the window `[r - diff, r]` of each record `r`, and the window
/// `[r + 1, r + 1 + diff]` when it contains a record. Results report Kafka's inclusive
/// `[a; b]` as `start = a`, `end = b + 1`.
///
/// Example (Kafka's documentation, difference 5000 ms): records at 8000, 9200 and 12400 give
/// the windows `[3000;8000]`, `[4200;9200]`, `[7400;12400]`, `[8001;13001]` and `[9201;14201]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindows {
    spec: SlidingSpec,
}

impl SlidingWindows {
    /// Windows of records at most `time_difference` apart, with no grace period.
    pub fn of_time_difference(time_difference: Duration) -> Result<Self, StreamError> {
        Self::of_time_difference_and_grace(time_difference, Duration::ZERO)
    }

    /// Windows of records at most `time_difference` apart; a window `[a; b]` closes when the
    /// watermark reaches `b + grace` (Kafka: stream time > b + grace).
    pub fn of_time_difference_and_grace(
        time_difference: Duration,
        grace: Duration,
    ) -> Result<Self, StreamError> {
        Ok(Self {
            spec: SlidingSpec {
                diff: millis("sliding window time difference", time_difference, false)?
                    .min(i64::MAX / 4),
                grace: millis("grace", grace, false)?.min(i64::MAX / 4),
            },
        })
    }

    /// The operator aggregating values `V` of each key `K` with `agg`.
    pub fn aggregate<K, V, A>(self, agg: A, mode: EmitMode) -> SlidingWindowOperator<K, V, A>
    where
        K: Eq + Hash + Clone,
        A: Aggregator<V>,
    {
        SlidingWindowOperator {
            spec: self.spec,
            agg,
            mode,
            slab: KeySlab::default(),
            timers: Timers::default(),
            watermark: MIN_TIMESTAMP,
            ends: Vec::new(),
            windows: Vec::new(),
            left: Vec::new(),
            right: Vec::new(),
            _values: PhantomData,
        }
    }
}

/// Per key: accumulators per distinct record time, the inclusive end of the last window
/// emitted (or known closed), and the close time of the next window.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SlidingKey<Acc> {
    stack: TwoStack<Acc>,
    emitted_upto: i64,
    next_close: i64,
}

impl<Acc> Default for SlidingKey<Acc> {
    fn default() -> Self {
        Self {
            stack: TwoStack::default(),
            emitted_upto: i64::MIN,
            next_close: i64::MAX,
        }
    }
}

impl<Acc: Clone> SlotState for SlidingKey<Acc> {
    fn reset(&mut self) {
        self.stack.reset();
        self.emitted_upto = i64::MIN;
        self.next_close = i64::MAX;
    }
}

impl<Acc: Clone> SlidingKey<Acc> {
    /// Inclusive end of the first window ending after `after`, if any.
    fn next_end(&self, diff: i64, after: i64) -> Option<i64> {
        let len = self.stack.len();
        let il = self.stack.first_at_or_after(after.saturating_add(1));
        let left = (il < len).then(|| self.stack.pos(il));
        let ir = self.stack.first_at_or_after(after.saturating_sub(diff));
        let right = if ir + 1 < len {
            let r_end = self.stack.pos(ir).saturating_add(diff).saturating_add(1);
            (self.stack.pos(ir + 1) <= r_end).then_some(r_end)
        } else {
            None
        };
        match (left, right) {
            (Some(l), Some(r)) => Some(l.min(r)),
            (l, r) => l.or(r),
        }
    }
}

/// Keyed sliding window aggregation (see [`SlidingWindows`] and the [module docs](super)).
///
/// Records are aggregated per distinct timestamp; closing windows are computed with
/// two-stack sliding aggregation, so each record costs O(1) amortised merges in
/// [`EmitMode::Final`] whatever the number of windows it belongs to.
pub struct SlidingWindowOperator<K: Eq + Hash, V, A: Aggregator<V>> {
    spec: SlidingSpec,
    agg: A,
    mode: EmitMode,
    slab: KeySlab<K, SlidingKey<A::Acc>>,
    timers: Timers,
    watermark: Timestamp,
    ends: Vec<i64>,
    windows: Vec<(i64, i64)>,
    left: Vec<A::Acc>,
    right: Vec<A::Acc>,
    _values: PhantomData<fn(V)>,
}

impl<K: Eq + Hash, V, A: Aggregator<V>> std::fmt::Debug for SlidingWindowOperator<K, V, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlidingWindowOperator")
            .field("spec", &self.spec)
            .field("mode", &self.mode)
            .field("watermark", &self.watermark)
            .finish_non_exhaustive()
    }
}

impl<K, V, A> SlidingWindowOperator<K, V, A>
where
    K: Eq + Hash + Clone,
    A: Aggregator<V>,
{
    /// The last watermark seen.
    pub fn watermark(&self) -> Timestamp {
        self.watermark
    }

    /// Whether a record of `key` at `time` (behind watermark - grace, so its own left window
    /// is closed) falls into a window that is still open: the left window of a buffered
    /// record in `(after, time + diff]`, or the right window of one in `[after - diff, time)`.
    fn in_open_window(&self, key: &K, time: Timestamp) -> bool {
        let SlidingSpec { diff, grace } = self.spec;
        let Some((_, st)) = self.slab.find(key).and_then(|s| self.slab.get(s)) else {
            return false;
        };
        let after = st.emitted_upto.max(self.watermark.saturating_sub(grace));
        let i = st.stack.first_at_or_after(after.saturating_add(1));
        if i < st.stack.len() && st.stack.pos(i) <= time.saturating_add(diff) {
            return true;
        }
        let j = st.stack.first_at_or_after(after.saturating_sub(diff));
        j < st.stack.len() && st.stack.pos(j) < time
    }

    /// Handles the key's timer at `at`: emits its next window if it is due, then registers
    /// the next window's close — or, when no window is pending, a clean-up at the time the
    /// newest record can no longer be part of any open window (a later record's window
    /// `[t - diff, t]` may still include it until then).
    fn fire(&mut self, slot: u32, at: i64, out: &mut Collector<WindowResult<K, A::Out>, (K, V)>) {
        let SlidingSpec { diff, grace } = self.spec;
        let wm = self.watermark;
        let Some((key, st)) = self.slab.get_mut(slot) else {
            return;
        };
        if st.next_close != at {
            return; // stale entry
        }
        if let Some(end) = st.next_end(diff, st.emitted_upto) {
            if end.saturating_add(grace) <= wm {
                let start = end.saturating_sub(diff);
                if let Some(acc) = st.stack.range(&self.agg, start, end.saturating_add(1)) {
                    out.emit(WindowResult {
                        key: key.clone(),
                        start,
                        end: end.saturating_add(1),
                        value: self.agg.result(&acc),
                        is_final: true,
                    });
                }
                st.emitted_upto = end;
            }
        }
        let next = match st.next_end(diff, st.emitted_upto) {
            Some(ne) => ne.saturating_add(grace),
            None => match st.stack.len() {
                0 => i64::MIN,
                n => st
                    .stack
                    .pos(n - 1)
                    .saturating_add(diff)
                    .saturating_add(grace),
            },
        };
        if next <= wm && st.next_end(diff, st.emitted_upto).is_none() {
            self.slab.remove(slot);
            return;
        }
        if next <= at {
            // Only reachable when window arithmetic saturates at the ends of the i64 range.
            tracing::warn!(
                next,
                "window times saturate at the i64 limit; dropping key state"
            );
            self.slab.remove(slot);
            return;
        }
        st.next_close = next;
        self.timers.add(next, slot);
    }
}

impl<K, V, A> LateHint for SlidingWindowOperator<K, V, A>
where
    K: Eq + Hash + Clone,
    A: Aggregator<V>,
{
    fn may_be_late(&self, time: Timestamp) -> bool {
        // A record after watermark - grace always has its own left window open.
        time.saturating_add(self.spec.grace) <= self.watermark
    }
}

impl<K, V, A> Operator for SlidingWindowOperator<K, V, A>
where
    K: Eq + Hash + Clone + Send + Serialize + serde::de::DeserializeOwned,
    V: Send,
    A: Aggregator<V>,
{
    type In = (K, V);
    type Out = WindowResult<K, A::Out>;

    fn on_record(
        &mut self,
        record: (K, V),
        time: Timestamp,
        out: &mut Collector<Self::Out, (K, V)>,
    ) {
        let SlidingSpec { diff, grace } = self.spec;
        if self.may_be_late(time) && !self.in_open_window(&record.0, time) {
            out.late(record, time);
            return;
        }
        let (key, value) = record;
        let slot = self.slab.slot_of(key);
        let st = self.slab.state_mut(slot);
        if !st.stack.add(&self.agg, time, &value) {
            let st_empty = st.stack.is_empty();
            if let Some((k, _)) = self.slab.get(slot) {
                let k = k.clone();
                out.late((k, value), time);
            }
            if st_empty {
                self.slab.remove(slot);
            }
            return;
        }
        // Windows ending at or before watermark - grace are closed: never emit them.
        st.emitted_upto = st.emitted_upto.max(self.watermark.saturating_sub(grace));
        let after = st.emitted_upto;
        if let Some(ne) = st.next_end(diff, after) {
            let c = ne.saturating_add(grace);
            if c < st.next_close {
                st.next_close = c;
                self.timers.add(c, slot);
            }
        }
        if self.mode == EmitMode::OnUpdate {
            let Self {
                slab,
                agg,
                ends,
                windows,
                left,
                right,
                ..
            } = self;
            let Some((key, st)) = slab.get_mut(slot) else {
                return;
            };
            ends.clear();
            let lo = st
                .stack
                .first_at_or_after(time.saturating_sub(diff).saturating_sub(1));
            let len = st.stack.len();
            let mut i = lo;
            while i < len {
                let p = st.stack.pos(i);
                if p > time.saturating_add(diff) {
                    break;
                }
                if p < time {
                    ends.push(p.saturating_add(diff).saturating_add(1)); // right window
                } else {
                    ends.push(p); // left window
                }
                i += 1;
            }
            ends.sort_unstable();
            ends.dedup();
            windows.clear();
            windows.extend(
                ends.iter()
                    .filter(|&&e| e > after)
                    .map(|&e| (e.saturating_sub(diff), e.saturating_add(1))),
            );
            st.stack
                .ranges_containing(agg, time, windows, left, right, |lo, hi, acc| {
                    out.emit(WindowResult {
                        key: key.clone(),
                        start: lo,
                        end: hi,
                        value: agg.result(&acc),
                        is_final: false,
                    })
                });
        }
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<Self::Out, (K, V)>) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        while let Some((at, slots)) = self.timers.pop_due(watermark) {
            for &slot in &slots {
                self.fire(slot, at, out);
            }
            self.timers.recycle(slots);
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StreamError> {
        encode_keyed(
            tags::SLIDING,
            self.spec,
            self.watermark,
            &self.slab,
            &self.timers,
        )
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StreamError> {
        (self.watermark, self.slab, self.timers) =
            decode_keyed(tags::SLIDING, snapshot, &self.spec, "sliding windows")?;
        Ok(())
    }
}
