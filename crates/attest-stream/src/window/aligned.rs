//! Tumbling and hopping windows over panes.

use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::keyed::{KeySlab, SlotState};
use super::two_stack::ranges_containing_in;
use super::{millis, EmitMode, WindowResult};
use crate::agg::Aggregator;
use crate::codec::{self, tags};
use crate::operator::LateHint;
use crate::time::MIN_TIMESTAMP;
use crate::{Collector, Operator, StreamError, Timestamp};

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

/// Per-key state in the key's slab slot: the key's two newest panes, inline, so that most
/// records update the slot they looked up anyway and touch no other memory. Older panes live
/// in the operator's pane-major columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PaneKey<Acc> {
    /// The key's newest pane, at or beyond `hi` (not yet part of any fired window).
    tail: Option<(i64, Acc)>,
    /// The key's second-newest pane, at or beyond `hi`; `prev` implies `tail`.
    prev: Option<(i64, Acc)>,
}

impl<Acc> Default for PaneKey<Acc> {
    fn default() -> Self {
        Self {
            tail: None,
            prev: None,
        }
    }
}

/// A key's share of the two-stack over the columns (indexed by slot, apart from the slab so
/// that records do not carry it through the cache).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WinAcc<Acc> {
    /// Merge of the key's panes in the front region `[lo, front_end)`.
    front: Option<Acc>,
    /// Merge of the key's panes in the back region `[front_end, hi)`.
    back: Option<Acc>,
}

impl<Acc> Default for WinAcc<Acc> {
    fn default() -> Self {
        Self {
            front: None,
            back: None,
        }
    }
}

impl<Acc: Clone> SlotState for PaneKey<Acc> {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// One pane of every key that has records in it, sorted by slot: the pane-major layout that
/// makes firing a window a sequential walk instead of a cache miss per key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Column<Acc> {
    pane: i64,
    slots: Vec<u32>,
    accs: Vec<Acc>,
    /// In the front region, per entry: the merge of the same key's panes after this one up
    /// to `front_end` (what the key's `front` becomes when this pane is evicted). Empty in
    /// the back region.
    after: Vec<Option<Acc>>,
}

impl<Acc> Column<Acc> {
    fn clear(&mut self) {
        self.slots.clear();
        self.accs.clear();
        self.after.clear();
    }

    /// Sorts the entries by slot (they are, unless pending entries were combined in).
    fn sort_by_slot(&mut self) {
        if self.slots.is_sorted() {
            return;
        }
        let mut entries: Vec<(u32, Acc)> = self.slots.drain(..).zip(self.accs.drain(..)).collect();
        entries.sort_unstable_by_key(|(slot, _)| *slot);
        for (slot, acc) in entries {
            self.slots.push(slot);
            self.accs.push(acc);
        }
    }
}

/// A pane beyond `hi` holding the panes that keys pushed out of their inline pair (a third
/// pane in flight) or that arrived out of order: looked up by slot through `index`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "Acc: Serialize", deserialize = "Acc: Deserialize<'de>"))]
struct PendingColumn<Acc> {
    slots: Vec<u32>,
    accs: Vec<Acc>,
    #[serde(skip)]
    index: FxHashMap<u32, u32>,
}

impl<Acc> Default for PendingColumn<Acc> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            accs: Vec::new(),
            index: FxHashMap::default(),
        }
    }
}

impl<Acc> PendingColumn<Acc> {
    /// The accumulator of `slot`, created with `init` if absent.
    fn entry(&mut self, slot: u32, init: impl FnOnce() -> Acc) -> &mut Acc {
        let i = match self.index.get(&slot) {
            Some(&i) => i as usize,
            None => {
                self.index.insert(slot, self.slots.len() as u32);
                self.slots.push(slot);
                self.accs.push(init());
                self.slots.len() - 1
            }
        };
        &mut self.accs[i]
    }

    fn rebuild_index(&mut self) {
        self.index = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, i as u32))
            .collect();
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
///
/// # Layout
/// All keys share the window boundaries, so the operator fires each window for every key at
/// once and keeps panes *pane-major*: one column (`Column`) per pane holds every key's accumulator
/// for it, sorted by key slot. The panes of the windows still to fire form one global
/// two-stack over the columns, `[lo, front_end)` front and `[front_end, hi)` back:
///
/// - a record adds to its key's inline newest pane (`tail`/`prev` in the key's slot);
/// - firing window `[s, e)` moves the panes below `e` into columns and merges them into each
///   key's `back`, evicts the columns below `s` (each entry hands its key the precomputed
///   merge of the key's later front panes, `after`), and emits `front ⊕ back` per key;
/// - when the front runs out, the back is flipped into it: one backward pass over the
///   columns computes every entry's `after`.
///
/// Every pass walks the slab or a column in slot order, so the cost per emitted result is a
/// few sequential reads and merges, independent of `size / slide`, instead of cache misses
/// in each key's own pane history. The price is paid where it is rare: a record behind the
/// watermark (still within some open window) edits the columns in place, and
/// [`EmitMode::OnUpdate`] gathers the key's panes from the columns of the record's windows
/// (a binary search per column, `O(size / pane · log keys)` per record).
pub struct AlignedWindowOperator<K: Eq + Hash, V, A: Aggregator<V>> {
    spec: AlignedSpec,
    agg: A,
    mode: EmitMode,
    slab: KeySlab<K, PaneKey<A::Acc>>,
    /// Per slot: the key's front and back merges.
    win: Vec<WinAcc<A::Acc>>,
    /// Columns of the panes in `[lo, hi)`, in pane order (only non-empty panes).
    live: VecDeque<Column<A::Acc>>,
    /// Panes at or beyond `hi` that are not inline in their key's slot.
    pending: BTreeMap<i64, PendingColumn<A::Acc>>,
    /// First pane of the last fired window (panes below it are evicted).
    lo: i64,
    /// Boundary between the front and the back region of the two-stack.
    front_end: i64,
    /// End pane (exclusive) of the last fired window.
    hi: i64,
    /// End of the next window to fire, if any key has state.
    next_end: Option<i64>,
    watermark: Timestamp,
    first_open_end: i64,
    /// The panes of the last two distinct records' times (records near a pane boundary
    /// alternate between two panes; each miss costs three divisions).
    cache: [PaneCache; 2],
    // Scratch buffers, kept for their capacity.
    staged: Vec<Column<A::Acc>>,
    pool: Vec<Column<A::Acc>>,
    gone: Vec<u32>,
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
            .field("columns", &self.live.len())
            .finish_non_exhaustive()
    }
}

#[inline]
fn add_opt<V, A: Aggregator<V>>(agg: &A, acc: &mut Option<A::Acc>, value: &V) {
    match acc {
        Some(a) => agg.add(a, value),
        None => {
            let mut a = agg.init();
            agg.add(&mut a, value);
            *acc = Some(a);
        }
    }
}

#[inline]
fn merge_opt<V, A: Aggregator<V>>(agg: &A, acc: &mut Option<A::Acc>, other: &A::Acc) {
    match acc {
        Some(a) => agg.merge(a, other),
        None => *acc = Some(other.clone()),
    }
}

/// The column for `pane` among `staged`, created (from `pool`) if absent; the last one is
/// checked first (flushes mostly go to one or two panes).
#[inline]
fn staged_column<'a, Acc>(
    staged: &'a mut Vec<Column<Acc>>,
    pool: &mut Vec<Column<Acc>>,
    pane: i64,
) -> &'a mut Column<Acc> {
    let i = match staged.iter().rposition(|c| c.pane == pane) {
        Some(i) => i,
        None => {
            let mut c = pool.pop().unwrap_or_else(|| Column {
                pane,
                slots: Vec::new(),
                accs: Vec::new(),
                after: Vec::new(),
            });
            c.pane = pane;
            staged.push(c);
            staged.len() - 1
        }
    };
    &mut staged[i]
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
            win: Vec::new(),
            live: VecDeque::new(),
            pending: BTreeMap::new(),
            lo: i64::MIN,
            front_end: i64::MIN,
            hi: i64::MIN,
            next_end: None,
            watermark: MIN_TIMESTAMP,
            first_open_end: spec.first_open_end(MIN_TIMESTAMP),
            cache: [PaneCache::EMPTY; 2],
            staged: Vec::new(),
            pool: Vec::new(),
            gone: Vec::new(),
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
        if t >= self.cache[0].lo && t < self.cache[0].hi {
            return self.cache[0];
        }
        if t >= self.cache[1].lo && t < self.cache[1].hi {
            self.cache.swap(0, 1);
            return self.cache[0];
        }
        let s = &self.spec;
        let pane = t.div_euclid(s.pane);
        let lo = pane.saturating_mul(s.pane);
        self.cache[1] = self.cache[0];
        self.cache[0] = PaneCache {
            lo,
            hi: lo.saturating_add(s.pane),
            pane,
            first_end: s.first_end(t),
            last_end: s.last_end(t),
        };
        self.cache[0]
    }

    /// Folds `value` into pane `pane >= hi` of the key in `slot`: inline when it is one of
    /// the key's two newest panes, else in a pending column.
    #[inline]
    fn add_ahead(&mut self, slot: u32, pane: i64, value: &V) {
        let agg = &self.agg;
        let st = self.slab.state_mut(slot);
        match &mut st.tail {
            Some((p, acc)) if *p == pane => agg.add(acc, value),
            Some((p, _)) if *p < pane => {
                let pushed = st.prev.take();
                st.prev = st.tail.take();
                let mut acc = agg.init();
                agg.add(&mut acc, value);
                st.tail = Some((pane, acc));
                if let Some((p, acc)) = pushed {
                    let entry = self
                        .pending
                        .entry(p)
                        .or_default()
                        .entry(slot, || agg.init());
                    agg.merge(entry, &acc);
                }
            }
            Some(_) => match &mut st.prev {
                Some((p, acc)) if *p == pane => agg.add(acc, value),
                _ => {
                    let entry = self
                        .pending
                        .entry(pane)
                        .or_default()
                        .entry(slot, || agg.init());
                    agg.add(entry, value);
                }
            },
            None => {
                let mut acc = agg.init();
                agg.add(&mut acc, value);
                st.tail = Some((pane, acc));
            }
        }
    }

    /// Folds `value` into pane `pane` in `[lo, hi)` of the key in `slot` (a record behind
    /// the watermark whose later windows are still open): updates the column, the key's
    /// `front`/`back` and, in the front, the `after` merges of the key's earlier panes.
    /// O(columns) binary searches; records within the watermark never come here.
    fn add_live(&mut self, slot: u32, pane: i64, value: &V) {
        let agg = &self.agg;
        let ci = match self.live.binary_search_by_key(&pane, |c| c.pane) {
            Ok(i) => i,
            Err(i) => {
                let mut c = self.pool.pop().unwrap_or_else(|| Column {
                    pane,
                    slots: Vec::new(),
                    accs: Vec::new(),
                    after: Vec::new(),
                });
                c.pane = pane;
                self.live.insert(i, c);
                i
            }
        };
        let in_front = pane < self.front_end;
        let after_next = if in_front {
            // The merge of the key's front panes after this one: from its next front entry.
            self.live
                .range(ci + 1..)
                .take_while(|c| c.pane < self.front_end)
                .find_map(|c| {
                    let j = c.slots.binary_search(&slot).ok()?;
                    let mut acc = c.accs[j].clone();
                    if let Some(after) = &c.after[j] {
                        agg.merge(&mut acc, after);
                    }
                    Some(acc)
                })
        } else {
            None
        };
        let col = &mut self.live[ci];
        match col.slots.binary_search(&slot) {
            Ok(j) => agg.add(&mut col.accs[j], value),
            Err(j) => {
                let mut acc = agg.init();
                agg.add(&mut acc, value);
                col.slots.insert(j, slot);
                col.accs.insert(j, acc);
                if in_front {
                    col.after.insert(j, after_next);
                }
            }
        }
        let st = &mut self.win[slot as usize];
        if in_front {
            add_opt(agg, &mut st.front, value);
            for c in self.live.range_mut(..ci) {
                if let Ok(j) = c.slots.binary_search(&slot) {
                    add_opt(agg, &mut c.after[j], value);
                }
            }
        } else {
            add_opt(agg, &mut st.back, value);
        }
    }

    /// The back becomes the front: one backward pass over the columns computes each entry's
    /// `after` and each key's `front`.
    fn flip(&mut self) {
        self.front_end = self.hi;
        for w in &mut self.win {
            *w = WinAcc::default();
        }
        let agg = &self.agg;
        for col in self.live.iter_mut().rev() {
            col.after.clear();
            for (slot, acc) in col.slots.iter().zip(&col.accs) {
                let st = &mut self.win[*slot as usize];
                col.after.push(st.front.clone());
                merge_opt(agg, &mut st.front, acc);
            }
        }
    }

    /// Fires window `[end - size, end)` for every key.
    fn fire(&mut self, end: i64, out: &mut Collector<WindowResult<K, A::Out>, (K, V)>) {
        let spec = self.spec;
        let start = end.saturating_sub(spec.size);
        let new_hi = end.div_euclid(spec.pane);
        let new_lo = start.div_euclid(spec.pane);
        // 1. Panes below the window's start leave. A no-op in practice: the previous firing
        //    evicted up to this window's start, and a skip over empty windows leaves no
        //    columns; kept so that `front`/`back` are right whatever the firing sequence.
        self.evict_below(new_lo);
        let seal = new_hi > self.hi;
        let Self {
            slab,
            win,
            agg,
            staged,
            pool,
            pending,
            ..
        } = self;
        // 2. Pending columns below the window's end join the back.
        if seal {
            while let Some(entry) = pending.first_entry() {
                if *entry.key() >= new_hi {
                    break;
                }
                let (p, pc) = entry.remove_entry();
                let c = staged_column(staged, pool, p);
                for (slot, acc) in pc.slots.into_iter().zip(pc.accs) {
                    merge_opt(agg, &mut win[slot as usize].back, &acc);
                    c.slots.push(slot);
                    c.accs.push(acc);
                }
            }
        }
        // 3. One pass over the slab in slot order: inline panes below the window's end join
        //    the back (and a column), then each key with records in the window emits
        //    `front ⊕ back`.
        slab.for_each_mut(|slot, key, st| {
            let w = &mut win[slot as usize];
            if seal {
                // `prev` before `tail`: pane order.
                for inline in [&mut st.prev, &mut st.tail] {
                    if matches!(inline, Some((p, _)) if *p < new_hi) {
                        if let Some((p, acc)) = inline.take() {
                            merge_opt(agg, &mut w.back, &acc);
                            let c = staged_column(staged, pool, p);
                            c.slots.push(slot);
                            c.accs.push(acc);
                        }
                    }
                }
            }
            let value = match (&w.front, &w.back) {
                (Some(f), Some(b)) => {
                    let mut acc = f.clone();
                    agg.merge(&mut acc, b);
                    agg.result(&acc)
                }
                (Some(acc), None) | (None, Some(acc)) => agg.result(acc),
                (None, None) => return,
            };
            out.emit(WindowResult {
                key: key.clone(),
                start,
                end,
                value,
                is_final: true,
            });
        });
        // 4. The new columns, in pane order, sorted by slot.
        if seal {
            staged.sort_unstable_by_key(|c| c.pane);
            for mut c in staged.drain(..) {
                c.sort_by_slot();
                debug_assert!(self.live.back().is_none_or(|b| b.pane < c.pane));
                self.live.push_back(c);
            }
            self.hi = new_hi;
        }
        // 5. The panes that no later window holds leave now, so that a key whose last window
        //    fired goes at once (and the next firing finds only its own work).
        self.evict_below(start.saturating_add(spec.slide).div_euclid(spec.pane));
        for slot in self.gone.drain(..) {
            self.slab.remove(slot);
        }
    }

    /// Evicts the columns of panes below `lo`: each entry hands its key the merge of the
    /// key's later front panes (flipping the back into the front first when the front has
    /// run out). Keys left with nothing are queued in `gone`.
    fn evict_below(&mut self, lo: i64) {
        while let Some(c) = self.live.front() {
            if c.pane >= lo {
                break;
            }
            if c.pane >= self.front_end {
                self.flip();
            }
            let Some(mut c) = self.live.pop_front() else {
                break;
            };
            for (slot, after) in c.slots.iter().zip(c.after.drain(..)) {
                let w = &mut self.win[*slot as usize];
                w.front = after;
                if w.front.is_none()
                    && w.back.is_none()
                    && self.slab.state_mut(*slot).tail.is_none()
                {
                    self.gone.push(*slot);
                }
            }
            c.clear();
            if self.pool.len() < 64 {
                self.pool.push(c);
            }
        }
        self.lo = self.lo.max(lo);
        self.front_end = self.front_end.max(self.lo);
    }

    /// The lowest pane held beyond `hi` (inline or pending), if any key has one.
    fn min_pending_pane(&self) -> Option<i64> {
        let mut min = self.pending.first_key_value().map(|(p, _)| *p);
        for (_, st) in self.slab.iter() {
            if let Some((p, _)) = st.prev.as_ref().or(st.tail.as_ref()) {
                min = Some(min.map_or(*p, |m| m.min(*p)));
            }
        }
        min
    }

    /// Drops every key's state (window arithmetic reached the end of the i64 range).
    fn clear_state(&mut self) {
        self.slab = KeySlab::default();
        self.win.clear();
        self.live.clear();
        self.pending.clear();
        self.next_end = None;
    }

    /// [`EmitMode::OnUpdate`]: the current result of every open window containing the
    /// record's pane, from the key's panes gathered out of the columns and its slot.
    fn emit_updates(
        &mut self,
        slot: u32,
        c: PaneCache,
        first_open: i64,
        out: &mut Collector<WindowResult<K, A::Out>, (K, V)>,
    ) {
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
        let (Some(&(from, _)), Some(&(_, to))) = (self.windows.first(), self.windows.last()) else {
            return;
        };
        // (Window ends saturate at the top of the i64 range; the record's pane is always in.)
        let to = to.max(c.pane.saturating_add(1));
        let Some((key, st)) = self.slab.get(slot) else {
            return;
        };
        let mut panes: Vec<(i64, &A::Acc)> = Vec::new();
        let first = self.live.partition_point(|col| col.pane < from);
        for col in self.live.range(first..) {
            if col.pane >= to {
                break;
            }
            if let Ok(j) = col.slots.binary_search(&slot) {
                panes.push((col.pane, &col.accs[j]));
            }
        }
        for (p, pc) in self.pending.range(from..to) {
            if let Some(&j) = pc.index.get(&slot) {
                panes.push((*p, &pc.accs[j as usize]));
            }
        }
        for (p, acc) in [&st.prev, &st.tail].into_iter().flatten() {
            if (from..to).contains(p) {
                panes.push((*p, acc));
            }
        }
        panes.sort_unstable_by_key(|(p, _)| *p);
        let agg = &self.agg;
        ranges_containing_in(
            agg,
            panes.len(),
            |j| panes[j],
            c.pane,
            &self.windows,
            &mut self.left,
            &mut self.right,
            |lo, hi, acc| {
                out.emit(WindowResult {
                    key: key.clone(),
                    start: lo.saturating_mul(spec.pane),
                    end: hi.saturating_mul(spec.pane),
                    value: agg.result(&acc),
                    is_final: false,
                })
            },
        );
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

/// The checkpoint of an [`AlignedWindowOperator`]: written from borrowed parts, read into
/// owned ones ([`OwnedSnap`]).
#[derive(Serialize, Deserialize)]
struct AlignedSnap<S, W, L, P> {
    spec: AlignedSpec,
    watermark: i64,
    next_end: Option<i64>,
    lo: i64,
    front_end: i64,
    hi: i64,
    slab: S,
    win: W,
    live: L,
    pending: P,
}

type OwnedSnap<K, Acc> = AlignedSnap<
    KeySlab<K, PaneKey<Acc>>,
    Vec<WinAcc<Acc>>,
    VecDeque<Column<Acc>>,
    BTreeMap<i64, PendingColumn<Acc>>,
>;

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
        if self.spec.close(c.last_end) <= self.watermark || c.pane < self.lo {
            // All of the record's windows are closed (the second test is implied by the
            // first and kept as a guard: panes below `lo` are evicted).
            out.late(record, time);
            return;
        }
        let (key, value) = record;
        let slot = self.slab.slot_of(key);
        if slot as usize >= self.win.len() {
            self.win.resize_with(slot as usize + 1, WinAcc::default);
        }
        if c.pane >= self.hi {
            self.add_ahead(slot, c.pane, &value);
        } else {
            self.add_live(slot, c.pane, &value);
        }
        let first_open = c.first_end.max(self.first_open_end);
        self.next_end = Some(self.next_end.map_or(first_open, |e| e.min(first_open)));
        if self.mode == EmitMode::OnUpdate {
            self.emit_updates(slot, c, first_open, out);
        }
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<Self::Out, (K, V)>) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        self.first_open_end = self.spec.first_open_end(watermark);
        while let Some(end) = self.next_end {
            if self.spec.close(end) > watermark {
                break;
            }
            if self.live.is_empty() {
                // No pane in [lo, hi): skip to the first window holding the lowest pane
                // ahead, so that a gap in event time costs nothing per empty window.
                match self.min_pending_pane() {
                    None => {
                        self.next_end = None;
                        break;
                    }
                    Some(p) => {
                        let first = self.spec.first_end(p.saturating_mul(self.spec.pane));
                        if first > end {
                            self.next_end = Some(first);
                            continue;
                        }
                    }
                }
            }
            self.fire(end, out);
            self.next_end = match end.checked_add(self.spec.slide) {
                Some(next) if self.spec.close(next) > self.spec.close(end) => Some(next),
                _ => {
                    // Only reachable when window arithmetic saturates at the ends of the
                    // i64 range.
                    tracing::warn!(
                        end,
                        "window times saturate at the i64 limit; dropping window state"
                    );
                    self.clear_state();
                    None
                }
            };
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StreamError> {
        codec::encode(
            tags::ALIGNED,
            &AlignedSnap {
                spec: self.spec,
                watermark: self.watermark,
                next_end: self.next_end,
                lo: self.lo,
                front_end: self.front_end,
                hi: self.hi,
                slab: &self.slab,
                win: &self.win[..],
                live: &self.live,
                pending: &self.pending,
            },
        )
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StreamError> {
        let snap: OwnedSnap<K, A::Acc> = codec::decode(tags::ALIGNED, snapshot)?;
        if snap.spec != self.spec {
            return Err(StreamError::State(format!(
                "snapshot is for windows {:?}, operator has {:?}",
                snap.spec, self.spec
            )));
        }
        let slots = snap.slab.slot_count();
        let in_range = |s: &u32| (*s as usize) < slots;
        if snap.win.len() > slots
            || !snap.live.iter().all(|c| {
                c.slots.iter().all(in_range)
                    && c.accs.len() == c.slots.len()
                    && c.after.len()
                        == if c.pane < snap.front_end {
                            c.slots.len()
                        } else {
                            0
                        }
                    && c.pane < snap.hi
            })
            || !snap
                .live
                .iter()
                .zip(snap.live.iter().skip(1))
                .all(|(a, b)| a.pane < b.pane)
            || snap.pending.keys().next().is_some_and(|p| *p < snap.hi)
            || !snap
                .pending
                .values()
                .all(|c| c.slots.iter().all(in_range) && c.accs.len() == c.slots.len())
        {
            return Err(StreamError::State(
                "window snapshot is inconsistent (columns do not match the key slots or regions)"
                    .into(),
            ));
        }
        self.watermark = snap.watermark;
        self.first_open_end = self.spec.first_open_end(snap.watermark);
        self.next_end = snap.next_end;
        self.lo = snap.lo;
        self.front_end = snap.front_end;
        self.hi = snap.hi;
        self.slab = snap.slab;
        self.slab.rebuild_index();
        self.win = snap.win;
        self.win.resize_with(slots, WinAcc::default);
        self.live = snap.live;
        self.pending = snap.pending;
        for pc in self.pending.values_mut() {
            pc.rebuild_index();
        }
        self.cache = [PaneCache::EMPTY; 2];
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::agg::Sum;

    type Res = WindowResult<u64, f64>;

    /// Runs `recs` (key, value, time) through hopping windows with watermarks `max seen - lag`
    /// every `wm_every` records and a snapshot/restore after record `cut`, checking every
    /// update (OnUpdate) against the sums of the accepted records so far and every final
    /// result against an oracle applying the same lateness rule. Returns the late count.
    #[allow(clippy::too_many_arguments)]
    fn check_against_oracle(
        size: i64,
        slide: i64,
        grace: i64,
        lag: i64,
        wm_every: usize,
        cut: usize,
        mode: EmitMode,
        recs: &[(u64, i64, i64)],
    ) -> usize {
        let ms = Duration::from_millis;
        let def = HoppingWindows::of(ms(size as u64), ms(slide as u64))
            .map(|h| h.with_grace(ms(grace as u64)))
            .map_err(|e| e.to_string());
        let Ok(def) = def else {
            panic!("valid definition");
        };
        let mut op = def.aggregate::<u64, f64, _>(Sum, mode);
        let mut out: Collector<Res, (u64, f64)> = Collector::new();
        // Sums of the accepted records per window; finals as emitted.
        let mut oracle: BTreeMap<(u64, i64), f64> = BTreeMap::new();
        let mut emitted: BTreeMap<(u64, i64), f64> = BTreeMap::new();
        let (mut wm, mut max_seen, mut late) = (i64::MIN, i64::MIN, 0usize);
        let mut take_finals = |out: &mut Collector<Res, (u64, f64)>, wm: i64| {
            for r in out.outputs.drain(..) {
                assert!(r.is_final, "a watermark emits finals only: {r:?}");
                assert_eq!(r.end - r.start, size);
                assert!(r.end - 1 + grace <= wm, "emitted before it closed: {r:?}");
                assert!(
                    emitted.insert((r.key, r.start), r.value).is_none(),
                    "twice: {r:?}"
                );
            }
        };
        for (i, &(key, v, t)) in recs.iter().enumerate() {
            let v = v as f64;
            let last_start = t.div_euclid(slide) * slide;
            if last_start + size - 1 + grace > wm {
                let mut s = last_start;
                while s + size > t {
                    if s + size - 1 + grace > wm {
                        *oracle.entry((key, s)).or_default() += v;
                    }
                    s -= slide;
                }
            } else {
                late += 1;
            }
            op.on_record((key, v), t, &mut out);
            for r in out.outputs.drain(..) {
                assert!(!r.is_final, "a record emits updates only: {r:?}");
                assert_eq!(r.end - r.start, size);
                assert_eq!(oracle.get(&(r.key, r.start)), Some(&r.value), "{r:?}");
            }
            max_seen = max_seen.max(t);
            if i % wm_every == wm_every - 1 && max_seen - lag > wm {
                wm = max_seen - lag;
                op.on_watermark(wm, &mut out);
                take_finals(&mut out, wm);
            }
            if i == cut {
                let snap = op.snapshot().map_err(|e| e.to_string());
                let mut fresh = def.aggregate::<u64, f64, _>(Sum, mode);
                assert_eq!(
                    snap.and_then(|s| fresh.restore(&s).map_err(|e| e.to_string())),
                    Ok(())
                );
                op = fresh;
            }
        }
        op.on_watermark(i64::MAX / 4, &mut out);
        take_finals(&mut out, i64::MAX / 4);
        assert_eq!(
            emitted, oracle,
            "one final per window with records, with its sum"
        );
        assert_eq!(out.late.len(), late);
        assert_eq!(op.open_keys(), 0, "no state after the last window closed");
        late
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Any pane/window geometry, disorder beyond the watermark lag (records behind the
        /// watermark land in the front, back and pending regions), grace, and a restore at
        /// any point: updates and finals equal the oracle.
        #[test]
        fn hopping_matches_oracle_under_any_disorder(
            panes in 1i64..6,
            slide_panes in 1i64..4,
            extra_panes in 0i64..8,
            grace in 0i64..3_000,
            disorder in 0i64..12_000,
            lag in 0i64..2_000,
            wm_every in 1usize..9,
            keys in 1u64..6,
            update in any::<bool>(),
            cut in 0usize..400,
            raw in prop::collection::vec((any::<u64>(), -20i64..20, 0i64..400), 1..400),
        ) {
            let pane = 250 * panes;
            let slide = pane * slide_panes;
            let size = slide + pane * extra_panes;
            let mut base = 1_000_000i64;
            let recs: Vec<(u64, i64, i64)> = raw
                .iter()
                .map(|&(r, v, step)| {
                    base += step;
                    (r % keys, v, base - (r >> 20) as i64 % (disorder + 1))
                })
                .collect();
            let mode = if update { EmitMode::OnUpdate } else { EmitMode::Final };
            check_against_oracle(size, slide, grace, lag, wm_every, cut, mode, &recs);
        }
    }

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
