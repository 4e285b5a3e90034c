//! Properties of the window operators: batching independence, snapshot/restore transparency,
//! equality with naive oracles, and HyperLogLog accuracy.

use std::collections::BTreeMap;
use std::time::Duration;

use attest_stream::agg::{Aggregator, Count, DistinctApprox, Sum};
use attest_stream::window::{
    EmitMode, HoppingWindows, SessionWindows, SlidingWindows, TumblingWindows, WindowResult,
};
use attest_stream::{Collector, Operator};
use proptest::prelude::*;

/// Disorder bound of the generated inputs, and so the watermark lag.
const DISORDER: i64 = 2_000;

#[derive(Debug, Clone)]
struct Rec {
    key: u64,
    value: i64,
    time: i64,
}

/// Records with times that grow by random steps and are shuffled back by at most DISORDER,
/// so that watermarks `max seen - DISORDER - 1` never make a record late.
fn records() -> impl Strategy<Value = Vec<Rec>> {
    prop::collection::vec((0u64..4, -50i64..50, 0i64..3_000, 0i64..=DISORDER), 1..120).prop_map(
        |raw| {
            let mut base = 1_000_000i64;
            raw.into_iter()
                .map(|(key, value, step, jitter)| {
                    base += step;
                    Rec {
                        key,
                        value,
                        time: base - jitter,
                    }
                })
                .collect()
        },
    )
}

type Res = WindowResult<u64, f64>;

/// Feeds `recs`, with a watermark after record i when `marks[i]`, then a final watermark.
fn drive<Op>(op: &mut Op, recs: &[Rec], marks: &[bool], out: &mut Collector<Res, (u64, i64)>)
where
    Op: Operator<In = (u64, i64), Out = Res>,
{
    let mut max_seen = i64::MIN;
    for (i, r) in recs.iter().enumerate() {
        op.on_record((r.key, r.value), r.time, out);
        max_seen = max_seen.max(r.time);
        if marks.get(i).copied().unwrap_or(false) {
            op.on_watermark(max_seen - DISORDER - 1, out);
        }
    }
}

fn finish<Op>(op: &mut Op, out: &mut Collector<Res, (u64, i64)>)
where
    Op: Operator<In = (u64, i64), Out = Res>,
{
    op.on_watermark(i64::MAX / 2, out);
}

fn finals(out: &Collector<Res, (u64, i64)>) -> Vec<(u64, i64, i64, f64)> {
    let mut v: Vec<_> = out
        .outputs
        .iter()
        .filter(|r| r.is_final)
        .map(|r| (r.key, r.start, r.end, r.value))
        .collect();
    v.sort_by_key(|a| (a.0, a.1, a.2));
    v
}

/// The operators under test, by index (f64 results so that all share one output type).
fn make(which: u8, mode: EmitMode) -> Box<dyn FnMut() -> Box<dyn DynOp>> {
    Box::new(move || -> Box<dyn DynOp> {
        let s = Duration::from_millis;
        match which {
            0 => Box::new(
                TumblingWindows::of(s(10_000))
                    .unwrap()
                    .aggregate::<u64, i64, _>(Sum, mode),
            ),
            1 => Box::new(
                HoppingWindows::of(s(10_000), s(2_000))
                    .unwrap()
                    .aggregate::<u64, i64, _>(Sum, mode),
            ),
            2 => Box::new(
                HoppingWindows::of(s(6_000), s(4_000))
                    .unwrap()
                    .with_grace(s(1_500))
                    .aggregate::<u64, i64, _>(Sum, mode),
            ),
            3 => Box::new(
                SlidingWindows::of_time_difference(s(3_000))
                    .unwrap()
                    .aggregate::<u64, i64, _>(Sum, mode),
            ),
            4 => Box::new(
                SlidingWindows::of_time_difference_and_grace(s(2_500), s(700))
                    .unwrap()
                    .aggregate::<u64, i64, _>(Sum, mode),
            ),
            _ => Box::new(
                SessionWindows::with_gap(s(2_500))
                    .unwrap()
                    .aggregate::<u64, i64, _>(Sum, mode),
            ),
        }
    })
}

/// Object-safe view of the operators above.
trait DynOp: Send {
    fn rec(&mut self, r: &Rec, out: &mut Collector<Res, (u64, i64)>);
    fn wm(&mut self, w: i64, out: &mut Collector<Res, (u64, i64)>);
    fn snap(&self) -> Vec<u8>;
    fn load(&mut self, b: &[u8]);
}

impl<T: Operator<In = (u64, i64), Out = Res>> DynOp for T {
    fn rec(&mut self, r: &Rec, out: &mut Collector<Res, (u64, i64)>) {
        self.on_record((r.key, r.value), r.time, out)
    }
    fn wm(&mut self, w: i64, out: &mut Collector<Res, (u64, i64)>) {
        self.on_watermark(w, out)
    }
    fn snap(&self) -> Vec<u8> {
        self.snapshot().unwrap()
    }
    fn load(&mut self, b: &[u8]) {
        self.restore(b).unwrap()
    }
}

impl Operator for Box<dyn DynOp> {
    type In = (u64, i64);
    type Out = Res;
    fn on_record(&mut self, r: (u64, i64), time: i64, out: &mut Collector<Res, (u64, i64)>) {
        (**self).rec(
            &Rec {
                key: r.0,
                value: r.1,
                time,
            },
            out,
        )
    }
    fn on_watermark(&mut self, w: i64, out: &mut Collector<Res, (u64, i64)>) {
        (**self).wm(w, out)
    }
    fn snapshot(&self) -> Result<Vec<u8>, attest_stream::StreamError> {
        Ok((**self).snap())
    }
    fn restore(&mut self, b: &[u8]) -> Result<(), attest_stream::StreamError> {
        (**self).load(b);
        Ok(())
    }
}

fn mode_of(update: bool) -> EmitMode {
    if update {
        EmitMode::OnUpdate
    } else {
        EmitMode::Final
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn final_results_do_not_depend_on_batching(
        recs in records(),
        marks in prop::collection::vec(any::<bool>(), 120),
        which in 0u8..6,
        update in any::<bool>(),
    ) {
        let mut new = make(which, mode_of(update));
        let mut batched = new();
        let mut out_b = Collector::new();
        drive(&mut batched, &recs, &marks, &mut out_b);
        finish(&mut batched, &mut out_b);
        let mut whole = new();
        let mut out_w = Collector::new();
        drive(&mut whole, &recs, &[], &mut out_w);
        finish(&mut whole, &mut out_w);
        prop_assert!(out_b.late.is_empty() && out_w.late.is_empty());
        prop_assert_eq!(finals(&out_b), finals(&out_w));
    }

    #[test]
    fn snapshot_restore_at_any_point_is_invisible(
        recs in records(),
        marks in prop::collection::vec(any::<bool>(), 120),
        cut in 0usize..120,
        which in 0u8..6,
        update in any::<bool>(),
    ) {
        let cut = cut.min(recs.len());
        let mut new = make(which, mode_of(update));
        let mut whole = new();
        let mut expected = Collector::new();
        drive(&mut whole, &recs, &marks, &mut expected);
        finish(&mut whole, &mut expected);

        let mut first = new();
        let mut got = Collector::new();
        drive(&mut first, &recs[..cut], &marks[..cut], &mut got);
        let snap = first.snapshot().unwrap();
        drop(first);
        let mut second = new();
        second.restore(&snap).unwrap();
        // Continue exactly where the first one stopped (same watermark schedule).
        let max_before = recs[..cut].iter().map(|r| r.time).max().unwrap_or(i64::MIN);
        let mut max_seen = max_before;
        for (i, r) in recs.iter().enumerate().skip(cut) {
            second.on_record((r.key, r.value), r.time, &mut got);
            max_seen = max_seen.max(r.time);
            if marks[i] {
                second.on_watermark(max_seen - DISORDER - 1, &mut got);
            }
        }
        finish(&mut second, &mut got);
        prop_assert_eq!(&got.outputs, &expected.outputs);
        prop_assert_eq!(got.late.len(), expected.late.len());
    }

    #[test]
    fn windows_equal_naive_oracles(
        recs in records(),
        marks in prop::collection::vec(any::<bool>(), 120),
        which in 0u8..6,
    ) {
        let mut op = make(which, EmitMode::Final)();
        let mut out = Collector::new();
        drive(&mut op, &recs, &marks, &mut out);
        finish(&mut op, &mut out);
        let expected = match which {
            0 => aligned_oracle(&recs, 10_000, 10_000),
            1 => aligned_oracle(&recs, 10_000, 2_000),
            2 => aligned_oracle(&recs, 6_000, 4_000),
            3 => sliding_oracle(&recs, 3_000),
            4 => sliding_oracle(&recs, 2_500),
            _ => session_oracle(&recs, 2_500),
        };
        prop_assert_eq!(finals(&out), expected);
    }

    #[test]
    fn hyperloglog_stays_within_error_bounds(n in 1u64..40_000, offset in 0u64..1_000_000_000) {
        let agg = DistinctApprox::new(12).unwrap();
        let mut a = Aggregator::<u64>::init(&agg);
        let mut b = Aggregator::<u64>::init(&agg);
        for v in offset..offset + n {
            // Half the values into each sketch, with duplicates: the merge counts each once.
            agg.add(if v % 2 == 0 { &mut a } else { &mut b }, &v);
            agg.add(&mut b, &v);
        }
        Aggregator::<u64>::merge(&agg, &mut a, &b);
        let est = Aggregator::<u64>::result(&agg, &a) as f64;
        let sigma = 1.04 / (4096f64).sqrt();
        let rel = (est - n as f64).abs() / n as f64;
        prop_assert!(rel <= 5.0 * sigma, "n={} est={} rel={}", n, est, rel);
    }
}

fn aligned_oracle(recs: &[Rec], size: i64, slide: i64) -> Vec<(u64, i64, i64, f64)> {
    let mut m: BTreeMap<(u64, i64), f64> = BTreeMap::new();
    for r in recs {
        let mut start = r.time.div_euclid(slide) * slide;
        while start > r.time - size {
            *m.entry((r.key, start)).or_default() += r.value as f64;
            start -= slide;
        }
    }
    m.into_iter()
        .map(|((k, s), v)| (k, s, s + size, v))
        .collect()
}

fn by_key(recs: &[Rec]) -> BTreeMap<u64, Vec<(i64, i64)>> {
    let mut m: BTreeMap<u64, Vec<(i64, i64)>> = BTreeMap::new();
    for r in recs {
        m.entry(r.key).or_default().push((r.time, r.value));
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

/// Kafka Streams sliding windows from their definition.
fn sliding_oracle(recs: &[Rec], d: i64) -> Vec<(u64, i64, i64, f64)> {
    let mut res = Vec::new();
    for (k, rs) in by_key(recs) {
        let mut ends: Vec<i64> = Vec::new();
        for &(t, _) in &rs {
            ends.push(t);
            if rs.iter().any(|&(t2, _)| t2 > t && t2 <= t + d + 1) {
                ends.push(t + d + 1);
            }
        }
        ends.sort();
        ends.dedup();
        for e in ends {
            let sum: i64 = rs
                .iter()
                .filter(|&&(t, _)| t >= e - d && t <= e)
                .map(|&(_, v)| v)
                .sum();
            res.push((k, e - d, e + 1, sum as f64));
        }
    }
    res.sort_by_key(|a| (a.0, a.1, a.2));
    res
}

fn session_oracle(recs: &[Rec], gap: i64) -> Vec<(u64, i64, i64, f64)> {
    let mut res = Vec::new();
    for (k, rs) in by_key(recs) {
        let (mut start, mut last, mut sum) = (rs[0].0, rs[0].0, 0i64);
        for &(t, v) in &rs {
            if t >= last + gap {
                res.push((k, start, last + gap, sum as f64));
                start = t;
                sum = 0;
            }
            last = t;
            sum += v;
        }
        res.push((k, start, last + gap, sum as f64));
    }
    res.sort_by_key(|a| (a.0, a.1, a.2));
    res
}

#[test]
fn count_is_exact_under_heavy_overlap() {
    // 5-minute windows sliding every second: 300 panes per window.
    let mut op = HoppingWindows::of(Duration::from_secs(300), Duration::from_secs(1))
        .unwrap()
        .aggregate::<u64, (), _>(Count, EmitMode::Final);
    let mut out = Collector::new();
    for i in 0..2_000i64 {
        op.on_record((i as u64 % 3, ()), i * 250, &mut out);
        if i % 10 == 0 {
            op.on_watermark(i * 250 - 1_000, &mut out);
        }
    }
    op.on_watermark(i64::MAX / 2, &mut out);
    // Key 0 has a record every 750 ms; a full window (300 s) holds exactly 400 of them.
    let full: Vec<_> = out
        .outputs
        .iter()
        .filter(|r| r.key == 0 && r.start >= 0 && r.end <= 499_750)
        .collect();
    assert!(!full.is_empty());
    assert!(full.iter().all(|r| r.value == 400), "{:?}", &full[..3]);
}
