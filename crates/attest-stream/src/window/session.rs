//! Session windows: gap-based, merging.

use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keyed::{decode_keyed, encode_keyed, KeySlab, SlotState, Timers};
use super::{millis, EmitMode, WindowResult};
use crate::agg::Aggregator;
use crate::codec::tags;
use crate::operator::LateHint;
use crate::time::MIN_TIMESTAMP;
use crate::{Collector, Operator, StreamError, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SessionSpec {
    gap: i64,
    grace: i64,
}

/// Session windows: a key's records less than `gap` apart belong to one session
/// `[first, last + gap)`; a record that bridges two sessions merges them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindows {
    spec: SessionSpec,
}

impl SessionWindows {
    /// Sessions closed by `gap` of inactivity (at least 1 ms).
    pub fn with_gap(gap: Duration) -> Result<Self, StreamError> {
        Ok(Self {
            spec: SessionSpec {
                gap: millis("session gap", gap, true)?.min(i64::MAX / 4),
                grace: 0,
            },
        })
    }

    /// Allowed lateness: a session stays open until the watermark reaches `end - 1 + grace`.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.spec.grace = i64::try_from(grace.as_millis())
            .unwrap_or(i64::MAX)
            .min(i64::MAX / 4);
        self
    }

    /// The operator aggregating values `V` of each key `K` with `agg`.
    pub fn aggregate<K, V, A>(self, agg: A, mode: EmitMode) -> SessionWindowOperator<K, V, A>
    where
        K: Eq + Hash + Clone,
        A: Aggregator<V>,
    {
        SessionWindowOperator {
            spec: self.spec,
            agg,
            mode,
            slab: KeySlab::default(),
            timers: Timers::default(),
            watermark: MIN_TIMESTAMP,
            _values: PhantomData,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session<Acc> {
    start: i64,
    last: i64,
    acc: Acc,
}

/// A key's open sessions, sorted and disjoint, and its registered timer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionKey<Acc> {
    sessions: Vec<Session<Acc>>,
    timer: i64,
}

impl<Acc> Default for SessionKey<Acc> {
    fn default() -> Self {
        Self {
            sessions: Vec::new(),
            timer: i64::MAX,
        }
    }
}

impl<Acc> SlotState for SessionKey<Acc> {
    fn reset(&mut self) {
        self.sessions.clear();
        self.timer = i64::MAX;
    }
}

/// Keyed session window aggregation (see [`SessionWindows`] and the [module docs](super)).
///
/// In [`EmitMode::OnUpdate`], each record emits its (possibly merged) session; sessions
/// absorbed by a merge are not retracted (their results are superseded by the merged one).
pub struct SessionWindowOperator<K: Eq + Hash, V, A: Aggregator<V>> {
    spec: SessionSpec,
    agg: A,
    mode: EmitMode,
    slab: KeySlab<K, SessionKey<A::Acc>>,
    timers: Timers,
    watermark: Timestamp,
    _values: PhantomData<fn(V)>,
}

impl<K: Eq + Hash, V, A: Aggregator<V>> std::fmt::Debug for SessionWindowOperator<K, V, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionWindowOperator")
            .field("spec", &self.spec)
            .field("mode", &self.mode)
            .field("watermark", &self.watermark)
            .finish_non_exhaustive()
    }
}

impl<K, V, A> SessionWindowOperator<K, V, A>
where
    K: Eq + Hash + Clone,
    A: Aggregator<V>,
{
    #[inline]
    fn close_of(&self, last: i64) -> i64 {
        last.saturating_add(self.spec.gap)
            .saturating_sub(1)
            .saturating_add(self.spec.grace)
    }

    /// The last watermark seen.
    pub fn watermark(&self) -> Timestamp {
        self.watermark
    }

    fn fire(&mut self, slot: u32, at: i64, out: &mut Collector<WindowResult<K, A::Out>, (K, V)>) {
        let (gap, grace, wm) = (self.spec.gap, self.spec.grace, self.watermark);
        let Some((key, st)) = self.slab.get_mut(slot) else {
            return;
        };
        if st.timer != at {
            return; // stale entry
        }
        let close = |last: i64| {
            last.saturating_add(gap)
                .saturating_sub(1)
                .saturating_add(grace)
        };
        let mut done = 0;
        for s in &st.sessions {
            if close(s.last) > wm {
                break;
            }
            out.emit(WindowResult {
                key: key.clone(),
                start: s.start,
                end: s.last.saturating_add(gap),
                value: self.agg.result(&s.acc),
                is_final: true,
            });
            done += 1;
        }
        st.sessions.drain(..done);
        match st.sessions.first() {
            None => self.slab.remove(slot),
            Some(s) => {
                let c = close(s.last);
                st.timer = c;
                self.timers.add(c, slot);
            }
        }
    }
}

impl<K, V, A> LateHint for SessionWindowOperator<K, V, A>
where
    K: Eq + Hash + Clone,
    A: Aggregator<V>,
{
    fn may_be_late(&self, time: Timestamp) -> bool {
        self.close_of(time) <= self.watermark
    }
}

impl<K, V, A> Operator for SessionWindowOperator<K, V, A>
where
    K: Eq + Hash + Clone + Send + Serialize + serde::de::DeserializeOwned,
    V: Send,
    A: Aggregator<V>,
{
    type In = (K, V);
    type Out = WindowResult<K, A::Out>;

    #[inline]
    fn on_record(
        &mut self,
        record: (K, V),
        time: Timestamp,
        out: &mut Collector<Self::Out, (K, V)>,
    ) {
        let gap = self.spec.gap;
        let own_close = self.close_of(time);
        let own_late = own_close <= self.watermark;
        if own_late {
            // Late unless it joins an open session of its key.
            let joins = self.slab.find(&record.0).is_some_and(|slot| {
                self.slab.get(slot).is_some_and(|(_, st)| {
                    st.sessions.iter().any(|s| {
                        time < s.last.saturating_add(gap) && time.saturating_add(gap) > s.start
                    })
                })
            });
            if !joins {
                out.late(record, time);
                return;
            }
        }
        let (key, value) = record;
        let slot = self.slab.slot_of(key);
        let st = self.slab.state_mut(slot);
        let sessions = &mut st.sessions;
        // First session that could overlap [time, time + gap): its last + gap > time.
        let i = sessions.partition_point(|s| s.last.saturating_add(gap) <= time);
        let mut j = i;
        while j < sessions.len() && sessions[j].start < time.saturating_add(gap) {
            j += 1;
        }
        let idx = if i == j {
            let mut acc = self.agg.init();
            self.agg.add(&mut acc, &value);
            sessions.insert(
                i,
                Session {
                    start: time,
                    last: time,
                    acc,
                },
            );
            i
        } else {
            // Merge sessions i..j and the record into sessions[i].
            if j - i > 1 {
                let (head, tail) = sessions.split_at_mut(i + 1);
                let target = &mut head[i];
                for s in &tail[..j - i - 1] {
                    self.agg.merge(&mut target.acc, &s.acc);
                    target.last = target.last.max(s.last);
                }
                sessions.drain(i + 1..j);
            }
            let target = &mut sessions[i];
            self.agg.add(&mut target.acc, &value);
            target.start = target.start.min(time);
            target.last = target.last.max(time);
            i
        };
        let first_close = st.sessions[0]
            .last
            .saturating_add(gap)
            .saturating_sub(1)
            .saturating_add(self.spec.grace);
        if first_close < st.timer {
            st.timer = first_close;
            self.timers.add(first_close, slot);
        }
        if self.mode == EmitMode::OnUpdate {
            if let Some((key, st)) = self.slab.get_mut(slot) {
                let s = &st.sessions[idx];
                out.emit(WindowResult {
                    key: key.clone(),
                    start: s.start,
                    end: s.last.saturating_add(gap),
                    value: self.agg.result(&s.acc),
                    is_final: false,
                });
            }
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
            tags::SESSION,
            self.spec,
            self.watermark,
            &self.slab,
            &self.timers,
        )
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StreamError> {
        (self.watermark, self.slab, self.timers) =
            decode_keyed(tags::SESSION, snapshot, &self.spec, "sessions")?;
        Ok(())
    }
}
