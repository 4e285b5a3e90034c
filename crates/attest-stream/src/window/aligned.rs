//! Tumbling and hopping windows over panes.

use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keyed::{KeySlab, KeyedSnap, KeyedSnapRef, SlotState, Timers};
use super::two_stack::TwoStack;
use super::{millis, EmitMode, WindowResult};
use crate::agg::Aggregator;
use crate::codec::{self, tags};
use crate::operator::LateHint;
use crate::time::MIN_TIMESTAMP;
use crate::{Collector, Operator, StreamError, Timestamp};

/// How many firings ahead [`AlignedWindowOperator::on_watermark`] loads key state.
const PREFETCH_AHEAD: usize = 4;

/// Definition of epoch-aligned windows: size, slide, pane (gcd) and grace, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct AlignedSpec {
    size: i64,
    slide: i64,
    pane: i64,
    grace: i64,
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Grace in ms, clamped so that close-time arithmetic cannot overflow.
fn grace_ms(grace: Duration) -> i64 {
    i64::try_from(grace.as_millis())
        .unwrap_or(i64::MAX)
        .min(i64::MAX / 4)
}

impl AlignedSpec {
    fn new(size: Duration, slide: Duration) -> Result<Self, StreamError> {
        let size = millis("window size", size, true)?;
        let slide = millis("window slide", slide, true)?;
        if slide > size {
            return Err(StreamError::Config(format!(
                "hopping window slide ({slide} ms) must not exceed its size ({size} ms)"
            )));
        }
        Ok(Self {
            size,
            slide,
            pane: gcd(size, slide),
            grace: 0,
        })
    }

    /// Close time (watermark at which the window closes) of the window ending at `end`.
    #[inline]
    fn close(&self, end: i64) -> i64 {
        end.saturating_sub(1).saturating_add(self.grace)
    }

    /// End of the first window containing time `t`.
    #[inline]
    fn first_end(&self, t: i64) -> i64 {
        let k = t.saturating_sub(self.size).div_euclid(self.slide);
        k.saturating_add(1)
            .saturating_mul(self.slide)
            .saturating_add(self.size)
    }

    /// End of the last window containing time `t`.
    #[inline]
    fn last_end(&self, t: i64) -> i64 {
        t.div_euclid(self.slide)
            .saturating_mul(self.slide)
            .saturating_add(self.size)
    }

    /// Smallest window end whose window is still open at `watermark`.
    fn first_open_end(&self, watermark: i64) -> i64 {
        // close(e) > w  <=>  e > w + 1 - grace ; ends are k * slide + size.
        let bound = i128::from(watermark) + 1 - i128::from(self.grace) - i128::from(self.size);
        let slide = i128::from(self.slide);
        let k = bound.div_euclid(slide) + 1;
        let e = k * slide + i128::from(self.size);
        i64::try_from(e).unwrap_or(if e < 0 { i64::MIN } else { i64::MAX })
    }
}

/// Tumbling (fixed, non-overlapping) windows `[k·size, (k+1)·size)`.
///
/// ```
/// use std::time::Duration;
/// use attest_stream::{agg::Count, window::{EmitMode, TumblingWindows}, Collector, Operator};
/// let mut op = TumblingWindows::of(Duration::from_secs(60))?
///     .aggregate::<u64, (), _>(Count, EmitMode::Final);
/// let mut out = Collector::new();
/// op.on_record((7, ()), 1_000, &mut out);
/// op.on_record((7, ()), 59_999, &mut out);
/// op.on_watermark(59_999, &mut out);
/// assert_eq!(out.outputs[0].value, 2);
/// # Ok::<(), attest_stream::StreamError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TumblingWindows {
    spec: AlignedSpec,
}

impl TumblingWindows {
    /// Windows of `size` (at least 1 ms; sub-millisecond parts are ignored).
    pub fn of(size: Duration) -> Result<Self, StreamError> {
        Ok(Self {
            spec: AlignedSpec::new(size, size)?,
        })
    }

    /// Allowed lateness: windows stay open until the watermark reaches `end - 1 + grace`.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.spec.grace = grace_ms(grace);
        self
    }

    /// The operator aggregating values `V` of each key `K` with `agg`.
    pub fn aggregate<K, V, A>(self, agg: A, mode: EmitMode) -> AlignedWindowOperator<K, V, A>
    where
        K: Eq + Hash + Clone,
        A: Aggregator<V>,
    {
        AlignedWindowOperator::new(self.spec, agg, mode)
    }
}

/// Hopping windows `[k·slide, k·slide + size)`, computed from panes of `gcd(size, slide)`:
/// each record updates one pane, so the cost per record does not grow with `size / slide`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoppingWindows {
    spec: AlignedSpec,
}

impl HoppingWindows {
    /// Windows of `size` starting every `slide` (`0 < slide <= size`, whole milliseconds).
    pub fn of(size: Duration, slide: Duration) -> Result<Self, StreamError> {
        Ok(Self {
            spec: AlignedSpec::new(size, slide)?,
        })
    }

    /// Allowed lateness: windows stay open until the watermark reaches `end - 1 + grace`.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.spec.grace = grace_ms(grace);
        self
    }

    /// Number of panes per window (`size / gcd(size, slide)`).
    pub fn panes_per_window(&self) -> i64 {
        self.spec.size / self.spec.pane
    }

    /// The operator aggregating values `V` of each key `K` with `agg`.
    pub fn aggregate<K, V, A>(self, agg: A, mode: EmitMode) -> AlignedWindowOperator<K, V, A>
    where
        K: Eq + Hash + Clone,
        A: Aggregator<V>,
    {
        AlignedWindowOperator::new(self.spec, agg, mode)
    }
}

/// Per-key state: panes (position = pane index) and the close time of the key's next window.
///
/// Records of the newest pane accumulate in `tail`, inline in the key's slot (a cache line
/// that the record touches anyway); when a newer pane starts, the tail becomes `prev`, and
/// panes join the two-stack as complete pending items only when a window query needs them
/// (the stack is then being touched anyway) or a third pane starts: most records touch no
/// pane memory. `prev` and `tail` only hold panes beyond every pane in the stack and beyond
/// its last query (`prev < tail`; `prev` implies `tail`), so pushing them later yields
/// exactly the accumulators that per-record adds to the stack would have built.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PaneKey<Acc> {
    /// Boxed so that the slot (key, inline panes, next close) stays small.
    stack: Box<TwoStack<Acc>>,
    tail: Option<(i64, Acc)>,
    prev: Option<(i64, Acc)>,
    /// Lowest pane that may start a tail (beyond every stack pane and the stack's query
    /// horizon); kept here so that starting a tail does not touch the boxed stack.
    tail_from: i64,
    next_close: i64,
}

impl<Acc> Default for PaneKey<Acc> {
    fn default() -> Self {
        Self {
            stack: Box::default(),
            tail: None,
            prev: None,
            tail_from: i64::MIN,
            next_close: i64::MAX,
        }
    }
}

impl<Acc: Clone> SlotState for PaneKey<Acc> {
    fn reset(&mut self) {
        self.stack.reset();
        self.tail = None;
        self.prev = None;
        self.tail_from = i64::MIN;
        self.next_close = i64::MAX;
    }
}

impl<Acc: Clone> PaneKey<Acc> {
    /// Folds `value` into pane `pos`; `false` (nothing changed) below the evicted horizon.
    #[inline]
    fn add<V, A: Aggregator<V, Acc = Acc>>(&mut self, agg: &A, pos: i64, value: &V) -> bool {
        match &mut self.tail {
            Some((p, acc)) if *p == pos => {
                agg.add(acc, value);
                return true;
            }
            Some((p, _)) if *p < pos => {
                self.flush_prev();
                self.prev = self.tail.take();
                self.start_tail(agg, pos, value);
                return true;
            }
            Some(_) => {
                if let Some((p, acc)) = &mut self.prev {
                    if *p == pos {
                        agg.add(acc, value);
                        return true;
                    }
                }
                // Below the tail and not the previous pane: the stack takes it (after the
                // previous pane, to keep the stack in position order).
                self.flush_prev();
            }
            None if pos >= self.tail_from && pos < i64::MAX => {
                debug_assert!(self.stack.can_push_pending(pos));
                self.start_tail(agg, pos, value);
                return true;
            }
            None => {}
        }
        let added = self.stack.add(agg, pos, value);
        if added {
            self.tail_from = self.tail_from.max(pos.saturating_add(1));
        }
        added
    }

    #[inline]
    fn start_tail<V, A: Aggregator<V, Acc = Acc>>(&mut self, agg: &A, pos: i64, value: &V) {
        let mut acc = agg.init();
        agg.add(&mut acc, value);
        self.tail = Some((pos, acc));
    }

    #[inline]
    fn push(&mut self, pane: Option<(i64, Acc)>) {
        if let Some((p, acc)) = pane {
            self.stack.push_pending(p, acc);
            self.tail_from = self.tail_from.max(p.saturating_add(1));
        }
    }

    #[inline]
    fn flush_prev(&mut self) {
        let prev = self.prev.take();
        self.push(prev);
    }

    /// Moves the inline panes into the stack (before any query).
    #[inline]
    fn flush(&mut self) {
        self.flush_prev();
        let tail = self.tail.take();
        self.push(tail);
    }

    /// Moves the inline panes below pane `hi` into the stack.
    #[inline]
    fn flush_below(&mut self, hi: i64) {
        if matches!(&self.prev, Some((p, _)) if *p < hi) {
            self.flush_prev();
        }
        if self.prev.is_none() && matches!(&self.tail, Some((p, _)) if *p < hi) {
            let tail = self.tail.take();
            self.push(tail);
        }
    }

    /// The first inline pane, if any.
    fn first_inline(&self) -> Option<i64> {
        self.prev.as_ref().or(self.tail.as_ref()).map(|(p, _)| *p)
    }

    fn is_empty(&self) -> bool {
        self.tail.is_none() && self.prev.is_none() && self.stack.is_empty()
    }
}

/// Derived values for the pane of the last record (records mostly arrive in time order).
#[derive(Debug, Clone, Copy)]
struct PaneCache {
    lo: i64,
    hi: i64,
    pane: i64,
    first_end: i64,
    last_end: i64,
}

impl PaneCache {
    const EMPTY: Self = Self {
        lo: 0,
        hi: 0,
        pane: 0,
        first_end: 0,
        last_end: 0,
    };
}

/// Keyed tumbling or hopping window aggregation (see [`TumblingWindows`],
/// [`HoppingWindows`] and the [module docs](super) for semantics).
///
/// Input `(key, value)`, output [`WindowResult`]; late records go to the late side output.
pub struct AlignedWindowOperator<K: Eq + Hash, V, A: Aggregator<V>> {
    spec: AlignedSpec,
    agg: A,
    mode: EmitMode,
    slab: KeySlab<K, PaneKey<A::Acc>>,
    timers: Timers,
    watermark: Timestamp,
    first_open_end: i64,
    cache: PaneCache,
    windows: Vec<(i64, i64)>,
    left: Vec<A::Acc>,
    right: Vec<A::Acc>,
    _values: PhantomData<fn(V)>,
}

impl<K: Eq + Hash + std::fmt::Debug, V, A: Aggregator<V>> std::fmt::Debug
    for AlignedWindowOperator<K, V, A>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedWindowOperator")
            .field("spec", &self.spec)
            .field("mode", &self.mode)
            .field("watermark", &self.watermark)
            .field("keys", &self.slab.len())
            .finish_non_exhaustive()
    }
}

impl<K, V, A> AlignedWindowOperator<K, V, A>
where
    K: Eq + Hash + Clone,
    A: Aggregator<V>,
{
    fn new(spec: AlignedSpec, agg: A, mode: EmitMode) -> Self {
        Self {
            spec,
            agg,
            mode,
            slab: KeySlab::default(),
            timers: Timers::default(),
            watermark: MIN_TIMESTAMP,
            first_open_end: spec.first_open_end(MIN_TIMESTAMP),
            cache: PaneCache::EMPTY,
            windows: Vec::new(),
            left: Vec::new(),
            right: Vec::new(),
            _values: PhantomData,
        }
    }

    /// The last watermark seen.
    pub fn watermark(&self) -> Timestamp {
        self.watermark
    }

    /// Number of keys with open windows.
    pub fn open_keys(&self) -> usize {
        self.slab.len()
    }

    #[inline]
    fn pane_cache(&mut self, t: Timestamp) -> PaneCache {
        if t >= self.cache.lo && t < self.cache.hi {
            return self.cache;
        }
        let s = &self.spec;
        let pane = t.div_euclid(s.pane);
        let lo = pane.saturating_mul(s.pane);
        self.cache = PaneCache {
            lo,
            hi: lo.saturating_add(s.pane),
            pane,
            first_end: s.first_end(t),
            last_end: s.last_end(t),
        };
        self.cache
    }

    fn fire(&mut self, slot: u32, at: i64, out: &mut Collector<WindowResult<K, A::Out>, (K, V)>) {
        let spec = self.spec;
        let Some((key, st)) = self.slab.get_mut(slot) else {
            return;
        };
        if st.next_close != at {
            return; // stale timer entry
        }
        let end = at.saturating_add(1).saturating_sub(spec.grace);
        let start = end.saturating_sub(spec.size);
        let hi_pane = end.div_euclid(spec.pane);
        // Inline panes at or beyond the window's end stay inline (they are in no queried
        // range and remain beyond the stack's query horizon).
        st.flush_below(hi_pane);
        let lo_pane = start.div_euclid(spec.pane);
        st.tail_from = st.tail_from.max(lo_pane).max(hi_pane);
        if let Some(acc) = st.stack.range(&self.agg, lo_pane, hi_pane) {
            out.emit(WindowResult {
                key: key.clone(),
                start,
                end,
                value: self.agg.result(&acc),
                is_final: true,
            });
        }
        let next_start_pane = start.saturating_add(spec.slide).div_euclid(spec.pane);
        let i = st.stack.first_at_or_after_from_front(next_start_pane);
        let next_pane = if i < st.stack.len() {
            st.stack.pos(i)
        } else if let Some(p) = st.first_inline() {
            // Inline panes are beyond every stack pane and at or beyond `hi_pane`, which is
            // at or beyond `next_start_pane` (slide <= size).
            p
        } else {
            self.slab.remove(slot);
            return;
        };
        let q = next_pane.saturating_mul(spec.pane);
        let next_end = end.saturating_add(spec.slide).max(spec.first_end(q));
        let close = spec.close(next_end);
        if close <= at {
            // Only reachable when window arithmetic saturates at the ends of the i64 range.
            tracing::warn!(
                close,
                "window times saturate at the i64 limit; dropping key state"
            );
            self.slab.remove(slot);
            return;
        }
        st.next_close = close;
        self.timers.add(close, slot);
    }
}

impl<K, V, A> LateHint for AlignedWindowOperator<K, V, A>
where
    K: Eq + Hash + Clone,
    A: Aggregator<V>,
{
    fn may_be_late(&self, time: Timestamp) -> bool {
        let s = &self.spec;
        // The last window containing `time` ends after time - slide + size.
        time.saturating_add(s.size - s.slide)
            .saturating_add(s.grace)
            <= self.watermark
    }
}

impl<K, V, A> Operator for AlignedWindowOperator<K, V, A>
where
    K: Eq + Hash + Clone + Send + Serialize + serde::de::DeserializeOwned,
    V: Send,
    A: Aggregator<V>,
    A::Acc: Send,
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
        let c = self.pane_cache(time);
        if self.spec.close(c.last_end) <= self.watermark {
            out.late(record, time);
            return;
        }
        let (key, value) = record;
        let slot = self.slab.slot_of(key);
        let st = self.slab.state_mut(slot);
        // Cannot fail: the record's last window is open, so its pane is above the key's
        // evicted horizon (see module docs); kept as a guard.
        if !st.add(&self.agg, c.pane, &value) {
            let st_empty = st.is_empty();
            if let Some((k, _)) = self.slab.get_mut(slot) {
                let k = k.clone();
                out.late((k, value), time);
            }
            if st_empty {
                self.slab.remove(slot);
            }
            return;
        }
        let first_open = c.first_end.max(self.first_open_end);
        let close = self.spec.close(first_open);
        if close < st.next_close {
            st.next_close = close;
            self.timers.add(close, slot);
        }
        if self.mode == EmitMode::OnUpdate {
            let spec = self.spec;
            self.windows.clear();
            let mut e = first_open;
            while e <= c.last_end {
                self.windows.push((
                    e.saturating_sub(spec.size).div_euclid(spec.pane),
                    e.div_euclid(spec.pane),
                ));
                match e.checked_add(spec.slide) {
                    Some(next) => e = next,
                    None => break,
                }
            }
            let Self {
                slab,
                agg,
                windows,
                left,
                right,
                ..
            } = self;
            if let Some((key, st)) = slab.get_mut(slot) {
                st.flush();
                st.stack
                    .ranges_containing(agg, c.pane, windows, left, right, |lo, hi, acc| {
                        out.emit(WindowResult {
                            key: key.clone(),
                            start: lo.saturating_mul(spec.pane),
                            end: hi.saturating_mul(spec.pane),
                            value: agg.result(&acc),
                            is_final: false,
                        })
                    });
            }
        }
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<Self::Out, (K, V)>) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        self.first_open_end = self.spec.first_open_end(watermark);
        while let Some((at, slots)) = self.timers.pop_due(watermark) {
            for (n, &slot) in slots.iter().enumerate() {
                if let Some(&ahead) = slots.get(n + PREFETCH_AHEAD) {
                    // Loads the state a few firings ahead, so that its cache misses overlap
                    // with the work on this one (keys' pane state is far apart in memory).
                    if let Some((_, st)) = self.slab.get(ahead) {
                        std::hint::black_box(st.stack.ends());
                    }
                }
                self.fire(slot, at, out);
            }
            self.timers.recycle(slots);
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StreamError> {
        codec::encode(
            tags::ALIGNED,
            &KeyedSnapRef {
                spec: self.spec,
                watermark: self.watermark,
                slab: &self.slab,
                timers: &self.timers,
            },
        )
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StreamError> {
        let snap: KeyedSnap<AlignedSpec, K, PaneKey<A::Acc>> =
            codec::decode(tags::ALIGNED, snapshot)?;
        if snap.spec != self.spec {
            return Err(StreamError::State(format!(
                "snapshot is for windows {:?}, operator has {:?}",
                snap.spec, self.spec
            )));
        }
        self.watermark = snap.watermark;
        self.first_open_end = self.spec.first_open_end(snap.watermark);
        self.slab = snap.slab;
        self.slab.rebuild_index();
        self.timers = snap.timers;
        self.cache = PaneCache::EMPTY;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::agg::Sum;

    /// Disordered records across inline panes (tail, prev) and the stack, with grace and a
    /// snapshot/restore midway: final results equal a brute-force oracle, late records go
    /// to the side output.
    #[test]
    fn inline_panes_match_oracle_under_disorder() {
        let ms = Duration::from_millis;
        let def = HoppingWindows::of(ms(5_000), ms(2_000))
            .map(|h| h.with_grace(ms(1_500)))
            .map_err(|e| e.to_string());
        let Ok(def) = def else {
            panic!("valid definition");
        };
        let (size, slide, grace) = (5_000i64, 2_000i64, 1_500i64);
        let mut op = def.aggregate::<u64, f64, _>(Sum, EmitMode::Final);
        let mut out = Collector::new();
        let mut oracle: BTreeMap<(u64, i64), f64> = BTreeMap::new();
        let (mut wm, mut max_seen, mut late) = (i64::MIN, 0i64, 0usize);
        let mut x: u64 = 12_345;
        for i in 0..4_000i64 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let key = (x >> 33) % 4;
            let t = i * 37 - ((x >> 40) % 8_000) as i64;
            let v = ((x >> 20) % 100) as f64;
            let last_end = t.div_euclid(slide) * slide + size;
            if last_end - 1 + grace <= wm {
                late += 1;
            } else {
                let mut s = t.div_euclid(slide) * slide;
                while s + size > t {
                    if s + size - 1 + grace > wm {
                        *oracle.entry((key, s)).or_default() += v;
                    }
                    s -= slide;
                }
            }
            op.on_record((key, v), t, &mut out);
            max_seen = max_seen.max(t);
            if i % 7 == 6 {
                wm = wm.max(max_seen - 700);
                op.on_watermark(max_seen - 700, &mut out);
            }
            if i == 2_000 {
                let snap = op.snapshot().map_err(|e| e.to_string());
                let mut fresh = def.aggregate::<u64, f64, _>(Sum, EmitMode::Final);
                assert_eq!(
                    snap.and_then(|s| fresh.restore(&s).map_err(|e| e.to_string())),
                    Ok(())
                );
                op = fresh;
            }
        }
        op.on_watermark(1_000_000_000, &mut out);
        let got: BTreeMap<(u64, i64), f64> = out
            .outputs
            .iter()
            .map(|r| {
                assert!(r.is_final);
                assert_eq!(r.end - r.start, size);
                ((r.key, r.start), r.value)
            })
            .collect();
        assert_eq!(got.len(), out.outputs.len(), "one result per window");
        assert_eq!(got, oracle);
        assert_eq!(out.late.len(), late);
        assert!(late > 0, "the workload must exercise late records");
        assert_eq!(op.open_keys(), 0);
    }
}
