//! Two-stack sliding aggregation over positioned accumulators (panes or timestamps).
//!
//! Items are `(position, accumulator)` sorted by position. A query asks for the merge of the
//! items in `[lo, hi)` where both `lo` and `hi` only move forward. The items are split in
//! three regions:
//!
//! ```text
//!   [ front | back | pending ]
//!     front: suffix aggregates precomputed (the "front stack"); evicting pops one
//!     back:    merged incrementally into back_agg as items or records enter
//!     pending: positions >= hi, not yet part of any query
//! ```
//!
//! A query moves pending items below `hi` into `back`, evicts items below `lo` from the front
//! (when the front is empty, the back is "flipped" into it, computing suffix aggregates once)
//! and answers `suffix(front) ⊕ back_agg`: amortised O(1) merges per item and per query,
//! independent of the window/slide ratio. A record that lands in the front region (only
//! possible for records behind the watermark but within the allowed lateness) marks the
//! suffix aggregates dirty; they are recomputed on the next query.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::agg::Aggregator;
use crate::Timestamp;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TwoStack<Acc> {
    items: VecDeque<(i64, Acc)>,
    front_len: usize,
    back_len: usize,
    /// `suffix[front_len - 1 - j]` = merge of `items[j..front_len]`; the last entry is the
    /// whole front.
    suffix: Vec<Acc>,
    back_agg: Option<Acc>,
    front_dirty: bool,
    lo: i64,
    hi: i64,
}

impl<Acc> Default for TwoStack<Acc> {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            front_len: 0,
            back_len: 0,
            suffix: Vec::new(),
            back_agg: None,
            front_dirty: false,
            lo: Timestamp::MIN,
            hi: Timestamp::MIN,
        }
    }
}

impl<Acc: Clone> TwoStack<Acc> {
    /// Empties the structure, keeping capacity.
    pub fn reset(&mut self) {
        self.items.clear();
        self.suffix.clear();
        self.front_len = 0;
        self.back_len = 0;
        self.back_agg = None;
        self.front_dirty = false;
        self.lo = Timestamp::MIN;
        self.hi = Timestamp::MIN;
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Position of item `i`.
    #[inline]
    pub fn pos(&self, i: usize) -> i64 {
        self.items[i].0
    }

    /// Index of the first item with position `>= pos`.
    #[inline]
    pub fn first_at_or_after(&self, pos: i64) -> usize {
        self.items.partition_point(|(p, _)| *p < pos)
    }

    /// Folds `value` into the item at `pos`. Returns `false` (and changes nothing) when `pos`
    /// is below the evicted horizon.
    #[inline]
    pub fn add<V, A: Aggregator<V, Acc = Acc>>(&mut self, agg: &A, pos: i64, value: &V) -> bool {
        if pos < self.lo {
            return false;
        }
        let len = self.items.len();
        let idx = match self.items.back() {
            Some((p, _)) if *p == pos => len - 1,
            Some((p, _)) if *p < pos => len,
            None => 0,
            _ => self.first_at_or_after(pos),
        };
        if idx < len && self.items[idx].0 == pos {
            agg.add(&mut self.items[idx].1, value);
            if idx < self.front_len {
                self.front_dirty = true;
            } else if idx < self.front_len + self.back_len {
                if let Some(b) = self.back_agg.as_mut() {
                    agg.add(b, value);
                }
            }
        } else {
            let mut acc = agg.init();
            agg.add(&mut acc, value);
            self.items.insert(idx, (pos, acc));
            if idx < self.front_len {
                self.front_len += 1;
                self.front_dirty = true;
            } else if idx <= self.front_len + self.back_len && pos < self.hi {
                self.back_len += 1;
                match self.back_agg.as_mut() {
                    Some(b) => agg.add(b, value),
                    None => {
                        let mut b = agg.init();
                        agg.add(&mut b, value);
                        self.back_agg = Some(b);
                    }
                }
            }
        }
        true
    }

    fn rebuild_suffix<V, A: Aggregator<V, Acc = Acc>>(&mut self, agg: &A) {
        self.suffix.clear();
        for j in (0..self.front_len).rev() {
            let mut acc = self.items[j].1.clone();
            if let Some(prev) = self.suffix.last() {
                agg.merge(&mut acc, prev);
            }
            self.suffix.push(acc);
        }
        self.front_dirty = false;
    }

    /// The merge of the items in `[lo, hi)`, or `None` if there are none. `lo` and `hi` must
    /// not decrease between calls (smaller values are clamped); items below `lo` are evicted.
    pub fn range<V, A: Aggregator<V, Acc = Acc>>(
        &mut self,
        agg: &A,
        lo: i64,
        hi: i64,
    ) -> Option<Acc> {
        let hi = hi.max(self.hi);
        self.hi = hi;
        // Pending items entering the window join the back.
        while self.front_len + self.back_len < self.items.len() {
            let (p, acc) = &self.items[self.front_len + self.back_len];
            if *p >= hi {
                break;
            }
            match self.back_agg.as_mut() {
                Some(b) => agg.merge(b, acc),
                None => self.back_agg = Some(acc.clone()),
            }
            self.back_len += 1;
        }
        let lo = lo.max(self.lo);
        self.lo = lo;
        while let Some((p, _)) = self.items.front() {
            if *p >= lo {
                break;
            }
            if self.front_len == 0 {
                if self.back_len == 0 {
                    // Only pending items (lo > hi was asked): drop them.
                    self.items.pop_front();
                    continue;
                }
                // Flip: the back becomes the front.
                self.front_len = self.back_len;
                self.back_len = 0;
                self.back_agg = None;
                self.rebuild_suffix(agg);
            } else if self.front_dirty {
                self.rebuild_suffix(agg);
            }
            self.items.pop_front();
            self.suffix.pop();
            self.front_len -= 1;
        }
        if self.front_dirty {
            self.rebuild_suffix(agg);
        }
        if self.front_len == 0 && self.back_len == 0 {
            return None;
        }
        let mut acc = match self.suffix.last() {
            Some(s) if self.front_len > 0 => s.clone(),
            _ => agg.init(),
        };
        if let Some(b) = &self.back_agg {
            agg.merge(&mut acc, b);
        }
        Some(acc)
    }

    /// For the item at `pos` and `windows` (each `[lo, hi)` containing `pos`, sorted by `lo`
    /// and by `hi`), calls `f(lo, hi, merge of items in [lo, hi))` for each, without changing
    /// the structure. O(items in the windows' union + windows) merges. `left`/`right` are
    /// scratch buffers.
    pub fn ranges_containing<V, A: Aggregator<V, Acc = Acc>>(
        &self,
        agg: &A,
        pos: i64,
        windows: &[(i64, i64)],
        left: &mut Vec<Acc>,
        right: &mut Vec<Acc>,
        f: impl FnMut(i64, i64, Acc),
    ) {
        let items = &self.items;
        ranges_containing_in(
            agg,
            items.len(),
            |j| (items[j].0, &items[j].1),
            pos,
            windows,
            left,
            right,
            f,
        );
    }
}

/// Index of the first of `n` items (sorted by position, `item(j)` is the j-th) whose position
/// is `>= pos`.
#[inline]
fn lower_bound<'a, Acc: 'a>(n: usize, item: &impl Fn(usize) -> (i64, &'a Acc), pos: i64) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if item(mid).0 < pos {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// [`TwoStack::ranges_containing`] over any `n` items sorted by position, `item(j)` giving
/// the j-th: for the item at `pos` and `windows` (each `[lo, hi)` containing `pos`, sorted by
/// `lo` and by `hi`), calls `f(lo, hi, merge of items in [lo, hi))` for each, with
/// O(items in the windows' union + windows) merges (prefix merges to the left of `pos`,
/// suffix merges to its right). Nothing is called when no item is at `pos`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ranges_containing_in<'a, V, A, I>(
    agg: &A,
    n: usize,
    item: I,
    pos: i64,
    windows: &[(i64, i64)],
    left: &mut Vec<A::Acc>,
    right: &mut Vec<A::Acc>,
    mut f: impl FnMut(i64, i64, A::Acc),
) where
    A: Aggregator<V>,
    A::Acc: 'a,
    I: Fn(usize) -> (i64, &'a A::Acc),
{
    let (Some(first), Some(last)) = (windows.first(), windows.last()) else {
        return;
    };
    let p = lower_bound(n, &item, pos);
    if p >= n || item(p).0 != pos {
        return;
    }
    let a = lower_bound(n, &item, first.0);
    let b = lower_bound(n, &item, last.1);
    left.clear();
    for j in (a..p).rev() {
        let mut acc = item(j).1.clone();
        if let Some(prev) = left.last() {
            agg.merge(&mut acc, prev);
        }
        left.push(acc);
    }
    right.clear();
    for j in (p + 1)..b {
        let acc = match right.last() {
            Some(prev) => {
                let mut acc = prev.clone();
                agg.merge(&mut acc, item(j).1);
                acc
            }
            None => item(j).1.clone(),
        };
        right.push(acc);
    }
    for &(lo, hi) in windows {
        let l = lower_bound(n, &item, lo);
        let r = lower_bound(n, &item, hi);
        let mut acc = item(p).1.clone();
        if l < p {
            agg.merge(&mut acc, &left[p - 1 - l]);
        }
        if r > p + 1 {
            agg.merge(&mut acc, &right[r - p - 2]);
        }
        f(lo, hi, acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg::Sum;

    #[test]
    fn sliding_queries_match_naive_sums() {
        let mut ts = TwoStack::default();
        let mut data: Vec<(i64, f64)> = (0..40).map(|i| ((i * 7) % 23, i as f64)).collect();
        for (p, v) in &data {
            ts.add(&Sum, *p, v);
        }
        let naive = |data: &[(i64, f64)], lo: i64, hi: i64| -> Option<f64> {
            let xs: Vec<f64> = data
                .iter()
                .filter(|(p, _)| *p >= lo && *p < hi)
                .map(|(_, v)| *v)
                .collect();
            (!xs.is_empty()).then(|| xs.iter().sum())
        };
        for lo in 0..30 {
            let hi = lo + 5;
            assert_eq!(
                ts.range::<f64, _>(&Sum, lo, hi),
                naive(&data, lo, hi),
                "[{lo},{hi})"
            );
            // Additions inside the current window (front or back region) and ahead of it.
            for (p, v) in [(hi - 1, 1.0), (lo, 2.0), (hi + 3, 4.0)] {
                assert!(ts.add(&Sum, p, &v));
                data.push((p, v));
            }
            assert_eq!(
                ts.range::<f64, _>(&Sum, lo, hi),
                naive(&data, lo, hi),
                "again [{lo},{hi})"
            );
            assert!(!ts.add(&Sum, lo - 1, &1.0), "below the horizon");
        }
    }

    #[test]
    fn ranges_containing_matches_range_scan() {
        let mut ts = TwoStack::default();
        for p in [1i64, 2, 4, 5, 7, 8, 9] {
            ts.add(&Sum, p, &(p as f64));
        }
        let windows = [(0i64, 6i64), (2, 8), (4, 10), (5, 11)];
        let mut got = Vec::new();
        let (mut l, mut r) = (Vec::new(), Vec::new());
        ts.ranges_containing::<f64, _>(&Sum, 5, &windows, &mut l, &mut r, |lo, hi, acc| {
            got.push((lo, hi, acc))
        });
        assert_eq!(
            got,
            vec![(0, 6, 12.0), (2, 8, 18.0), (4, 10, 33.0), (5, 11, 29.0)]
        );
    }
}
