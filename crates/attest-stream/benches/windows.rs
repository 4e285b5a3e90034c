//! Window throughput (events per second on one core).
//!
//! Workload: 1,000,000 events per iteration over 10,000 u64 keys, event time advancing by
//! 10 s per iteration (100,000 events per second of event time) with up to 100 ms of
//! disorder, a watermark (max seen - 200 ms) every 1,000 events. Operators persist across
//! iterations, so after the first 30 iterations the 5-minute windows are in steady state:
//! every iteration fires 10 slides × 10,000 keys of hopping results.
//!
//! - `tumbling_count_1min`: tumbling 1-minute count by key.
//! - `hopping_mean_5min_1s_panes`: 5-minute windows sliding every second (300 panes), mean.
//! - `hopping_mean_5min_1s_naive`: the baseline — the same query adding every event to each
//!   of its 300 windows.
//! - `session_count_gap200ms`: session windows with a 200 ms gap (each key sees an event
//!   every 100 ms on average, so sessions last a few events to a few seconds).

use std::collections::{BTreeMap, VecDeque};
use std::hint::black_box;
use std::time::Duration;

use attest_stream::agg::{Count, Mean, MeanAcc};
use attest_stream::window::{EmitMode, HoppingWindows, SessionWindows, TumblingWindows};
use attest_stream::{Collector, Operator};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rustc_hash::FxHashMap;

const EVENTS: usize = 1_000_000;
const KEYS: u64 = 10_000;
const SPAN_MS: i64 = 10_000;
const WATERMARK_EVERY: usize = 1_000;

struct Ev {
    key: u64,
    value: f64,
    time: i64,
}

fn events() -> Vec<Ev> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..EVENTS)
        .map(|i| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let r = x >> 16;
            Ev {
                key: r % KEYS,
                value: ((r >> 20) % 1_000) as f64,
                time: (i as i64 * SPAN_MS) / EVENTS as i64 - ((r >> 40) % 100) as i64,
            }
        })
        .collect()
}

/// Runs one iteration: all events shifted by `offset`, watermarks every N events.
fn run<Op, V>(
    op: &mut Op,
    evs: &[Ev],
    offset: i64,
    out: &mut Collector<Op::Out, (u64, V)>,
    value: impl Fn(&Ev) -> V,
) -> usize
where
    Op: Operator<In = (u64, V)>,
{
    let mut max_seen = i64::MIN;
    let mut produced = 0;
    for (i, e) in evs.iter().enumerate() {
        let t = e.time + offset;
        max_seen = max_seen.max(t);
        op.on_record((e.key, value(e)), t, out);
        if i % WATERMARK_EVERY == WATERMARK_EVERY - 1 {
            op.on_watermark(max_seen - 200, out);
            produced += out.outputs.len() + out.late.len();
            out.outputs.clear();
            out.late.clear();
        }
    }
    produced
}

fn bench(c: &mut Criterion) {
    let evs = events();
    let mut g = c.benchmark_group("windows");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(10);

    {
        let mut op = TumblingWindows::of(Duration::from_secs(60))
            .expect("valid")
            .aggregate::<u64, (), _>(Count, EmitMode::Final);
        let mut out = Collector::new();
        let mut offset = 0;
        g.bench_function("tumbling_count_1min", |b| {
            b.iter(|| {
                offset += SPAN_MS;
                black_box(run(&mut op, &evs, offset, &mut out, |_| ()))
            })
        });
    }
    {
        let mut op = HoppingWindows::of(Duration::from_secs(300), Duration::from_secs(1))
            .expect("valid")
            .aggregate::<u64, f64, _>(Mean, EmitMode::Final);
        let mut out = Collector::new();
        let mut offset = 0;
        // Reach steady state (windows full) before measuring.
        for _ in 0..31 {
            offset += SPAN_MS;
            run(&mut op, &evs, offset, &mut out, |e| e.value);
        }
        g.bench_function("hopping_mean_5min_1s_panes", |b| {
            b.iter(|| {
                offset += SPAN_MS;
                black_box(run(&mut op, &evs, offset, &mut out, |e| e.value))
            })
        });
    }
    {
        let mut op = NaiveHopping::new(300_000, 1_000);
        let mut out = Collector::new();
        let mut offset = 0;
        for _ in 0..31 {
            offset += SPAN_MS;
            run(&mut op, &evs, offset, &mut out, |e| e.value);
        }
        g.bench_function("hopping_mean_5min_1s_naive", |b| {
            b.iter(|| {
                offset += SPAN_MS;
                black_box(run(&mut op, &evs, offset, &mut out, |e| e.value))
            })
        });
    }
    {
        let mut op = SessionWindows::with_gap(Duration::from_millis(200))
            .expect("valid")
            .aggregate::<u64, (), _>(Count, EmitMode::Final);
        let mut out = Collector::new();
        let mut offset = 0;
        g.bench_function("session_count_gap200ms", |b| {
            b.iter(|| {
                offset += SPAN_MS;
                black_box(run(&mut op, &evs, offset, &mut out, |_| ()))
            })
        });
    }
    g.finish();
}

/// Baseline: hopping windows without panes. Each key keeps one accumulator per open window
/// (a ring indexed by window start) and every event is added to each of its `size / slide`
/// windows; closing is timer-driven like the real operator.
struct NaiveHopping {
    size: i64,
    slide: i64,
    keys: FxHashMap<u64, NaiveKey>,
    timers: BTreeMap<i64, Vec<u64>>,
    watermark: i64,
}

struct NaiveKey {
    first_start: i64,
    accs: VecDeque<MeanAcc>,
    timer: i64,
}

impl NaiveHopping {
    fn new(size: i64, slide: i64) -> Self {
        Self {
            size,
            slide,
            keys: FxHashMap::default(),
            timers: BTreeMap::new(),
            watermark: i64::MIN,
        }
    }
}

type NaiveOut = (u64, i64, f64);

impl Operator for NaiveHopping {
    type In = (u64, f64);
    type Out = NaiveOut;

    fn on_record(
        &mut self,
        (key, v): (u64, f64),
        t: i64,
        out: &mut Collector<NaiveOut, (u64, f64)>,
    ) {
        let last_start = t.div_euclid(self.slide) * self.slide;
        if last_start + self.size - 1 <= self.watermark {
            out.late((key, v), t);
            return;
        }
        let first_start = last_start - self.size + self.slide;
        let k = self.keys.entry(key).or_insert_with(|| NaiveKey {
            first_start,
            accs: VecDeque::new(),
            timer: i64::MAX,
        });
        if k.accs.is_empty() {
            k.first_start = first_start;
        }
        while k.first_start > first_start {
            k.first_start -= self.slide;
            k.accs.push_front(MeanAcc::default());
        }
        let need = ((last_start - k.first_start) / self.slide + 1) as usize;
        while k.accs.len() < need {
            k.accs.push_back(MeanAcc::default());
        }
        let wm = self.watermark;
        for (i, acc) in k.accs.iter_mut().enumerate() {
            let start = k.first_start + i as i64 * self.slide;
            if start >= first_start && start <= last_start && start + self.size - 1 > wm {
                acc.sum += v;
                acc.count += 1;
            }
        }
        let close = k.first_start + self.size - 1;
        if close < k.timer {
            k.timer = close;
            self.timers.entry(close).or_default().push(key);
        }
    }

    fn on_watermark(&mut self, w: i64, out: &mut Collector<NaiveOut, (u64, f64)>) {
        self.watermark = self.watermark.max(w);
        while let Some((&at, _)) = self.timers.first_key_value() {
            if at > w {
                break;
            }
            let Some((_, keys)) = self.timers.pop_first() else {
                break;
            };
            for key in keys {
                let Some(k) = self.keys.get_mut(&key) else {
                    continue;
                };
                if k.timer != at {
                    continue;
                }
                while k.first_start + self.size - 1 <= w {
                    let Some(acc) = k.accs.pop_front() else { break };
                    if acc.count > 0 {
                        out.emit((key, k.first_start, acc.sum / acc.count as f64));
                    }
                    k.first_start += self.slide;
                }
                if k.accs.is_empty() {
                    self.keys.remove(&key);
                } else {
                    k.timer = k.first_start + self.size - 1;
                    self.timers.entry(k.timer).or_default().push(key);
                }
            }
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, attest_stream::StreamError> {
        Ok(Vec::new())
    }

    fn restore(&mut self, _: &[u8]) -> Result<(), attest_stream::StreamError> {
        Ok(())
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
