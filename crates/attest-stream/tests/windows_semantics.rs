//! Window semantics against hand-computed expectations.

use std::time::Duration;

use attest_stream::agg::{Count, Mean, Sum};
use attest_stream::window::{
    EmitMode, HoppingWindows, SessionWindows, SlidingWindows, TumblingWindows, WindowResult,
};
use attest_stream::{Collector, Operator, StreamError};

enum Ev {
    R(&'static str, f64, i64),
    W(i64),
}
use Ev::{R, W};

type Out<O> = Vec<WindowResult<String, O>>;
type Late = Vec<((String, f64), i64)>;

fn lt(k: &str, v: f64, t: i64) -> ((String, f64), i64) {
    ((k.to_string(), v), t)
}

fn run<Op>(op: &mut Op, events: &[Ev]) -> (Vec<Op::Out>, Late)
where
    Op: Operator<In = (String, f64)>,
{
    let mut out = Collector::new();
    for e in events {
        match *e {
            R(k, v, t) => op.on_record((k.to_string(), v), t, &mut out),
            W(w) => op.on_watermark(w, &mut out),
        }
    }
    out.drain()
}

fn fin<O: Clone>(key: &str, start: i64, end: i64, value: O) -> WindowResult<String, O> {
    WindowResult {
        key: key.to_string(),
        start,
        end,
        value,
        is_final: true,
    }
}

fn upd<O: Clone>(key: &str, start: i64, end: i64, value: O) -> WindowResult<String, O> {
    WindowResult {
        is_final: false,
        ..fin(key, start, end, value)
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn tumbling_counts_fire_on_watermark_in_close_order() {
    let mut op = TumblingWindows::of(secs(10))
        .unwrap()
        .aggregate(Count, EmitMode::Final);
    let (out, late): (Out<u64>, _) = run(
        &mut op,
        &[
            R("a", 0.0, 1_000),
            R("a", 0.0, 9_999),
            R("b", 0.0, 3_000),
            R("a", 0.0, 10_000),
            W(9_998), // window [0, 10000) not complete yet
            W(9_999),
            R("a", 0.0, 12_000),
            W(19_999),
        ],
    );
    assert!(late.is_empty());
    assert_eq!(
        out,
        vec![
            fin("a", 0, 10_000, 2),
            fin("b", 0, 10_000, 1),
            fin("a", 10_000, 20_000, 2),
        ]
    );
    assert_eq!(op.open_keys(), 0, "closed windows leave no state");
}

#[test]
fn tumbling_out_of_order_within_bound_is_counted() {
    let mut op = TumblingWindows::of(secs(10))
        .unwrap()
        .aggregate(Sum, EmitMode::Final);
    let (out, late): (Out<f64>, _) = run(
        &mut op,
        &[
            R("a", 1.0, 8_000),
            R("a", 2.0, 12_000),
            R("a", 4.0, 3_000), // out of order, watermark still below 9999
            R("a", 8.0, 11_000),
            W(9_999),
            W(25_000),
        ],
    );
    assert!(late.is_empty());
    assert_eq!(
        out,
        vec![fin("a", 0, 10_000, 5.0), fin("a", 10_000, 20_000, 10.0)]
    );
}

#[test]
fn lateness_within_grace_updates_and_beyond_goes_to_side_output() {
    let mut op = TumblingWindows::of(secs(10))
        .unwrap()
        .with_grace(secs(5))
        .aggregate(Count, EmitMode::OnUpdate);
    let (out, late): (Out<u64>, _) = run(
        &mut op,
        &[
            R("a", 0.0, 1_000),
            W(12_000),          // complete, but open for 5 s of grace (closes at 14999)
            R("a", 0.0, 2_000), // late but within grace: updates
            W(14_999),          // closes
            R("a", 0.0, 3_000), // beyond grace: side output
            R("b", 0.0, 15_000),
            W(24_999),
            W(29_999),
        ],
    );
    assert_eq!(
        out,
        vec![
            upd("a", 0, 10_000, 1),
            upd("a", 0, 10_000, 2),
            fin("a", 0, 10_000, 2),
            upd("b", 10_000, 20_000, 1),
            fin("b", 10_000, 20_000, 1),
        ]
    );
    assert_eq!(late, vec![lt("a", 0.0, 3_000)]);
}

#[test]
fn final_mode_emits_only_at_close_even_with_grace() {
    let mut op = TumblingWindows::of(secs(10))
        .unwrap()
        .with_grace(secs(5))
        .aggregate(Sum, EmitMode::Final);
    let (out, late): (Out<f64>, _) = run(
        &mut op,
        &[
            R("a", 1.0, 1_000),
            W(12_000),
            R("a", 2.0, 2_000),
            W(14_998),
            W(14_999),
        ],
    );
    assert!(late.is_empty());
    assert_eq!(out, vec![fin("a", 0, 10_000, 3.0)]);
}

#[test]
fn hopping_windows_combine_panes() {
    // size 10 s, slide 5 s: every record is in two windows.
    let mut op = HoppingWindows::of(secs(10), secs(5))
        .unwrap()
        .aggregate(Sum, EmitMode::Final);
    let (out, late): (Out<f64>, _) = run(
        &mut op,
        &[
            R("a", 1.0, 1_000),
            R("a", 2.0, 6_000),
            R("a", 4.0, 12_000),
            W(4_999),
            W(30_000),
        ],
    );
    assert!(late.is_empty());
    assert_eq!(
        out,
        vec![
            fin("a", -5_000, 5_000, 1.0),
            fin("a", 0, 10_000, 3.0),
            fin("a", 5_000, 15_000, 6.0),
            fin("a", 10_000, 20_000, 4.0),
        ]
    );
}

#[test]
fn hopping_with_non_dividing_slide_uses_gcd_panes() {
    // size 6 s, slide 4 s → panes of 2 s; windows [4k, 4k + 6).
    let spec = HoppingWindows::of(secs(6), secs(4)).unwrap();
    assert_eq!(spec.panes_per_window(), 3);
    let mut op = spec.aggregate(Sum, EmitMode::Final);
    let (out, _): (Out<f64>, _) = run(
        &mut op,
        &[
            R("a", 1.0, 1_000),
            R("a", 10.0, 5_000),
            R("a", 100.0, 9_000),
            W(100_000),
        ],
    );
    assert_eq!(
        out,
        vec![
            fin("a", -4_000, 2_000, 1.0),
            fin("a", 0, 6_000, 11.0),
            fin("a", 4_000, 10_000, 110.0),
            fin("a", 8_000, 14_000, 100.0),
        ]
    );
}

#[test]
fn hopping_on_update_emits_every_open_window_of_the_record() {
    let mut op = HoppingWindows::of(secs(10), secs(5))
        .unwrap()
        .aggregate(Mean, EmitMode::OnUpdate);
    let (out, _): (Out<f64>, _) = run(&mut op, &[R("a", 2.0, 1_000), R("a", 4.0, 6_000)]);
    assert_eq!(
        out,
        vec![
            upd("a", -5_000, 5_000, 2.0),
            upd("a", 0, 10_000, 2.0),
            upd("a", 0, 10_000, 3.0),
            upd("a", 5_000, 15_000, 4.0),
        ]
    );
    // After [-5000, 5000) closed, a record in pane [0,5000) only updates the open window.
    let (out, _): (Out<f64>, _) = run(&mut op, &[W(4_999), R("a", 6.0, 2_000)]);
    assert_eq!(
        out,
        vec![fin("a", -5_000, 5_000, 2.0), upd("a", 0, 10_000, 4.0)]
    );
}

#[test]
fn empty_windows_produce_nothing() {
    let mut op = HoppingWindows::of(secs(10), secs(5))
        .unwrap()
        .aggregate(Count, EmitMode::Final);
    let (out, _): (Out<u64>, _) = run(
        &mut op,
        &[R("a", 0.0, 1_000), R("a", 0.0, 101_000), W(1_000_000)],
    );
    let bounds: Vec<(i64, i64)> = out.iter().map(|r| (r.start, r.end)).collect();
    assert_eq!(
        bounds,
        vec![
            (-5_000, 5_000),
            (0, 10_000),
            (95_000, 105_000),
            (100_000, 110_000)
        ]
    );
    let mut op = TumblingWindows::of(secs(10))
        .unwrap()
        .aggregate(Count, EmitMode::Final);
    let (out, _): (Out<u64>, _) = run(&mut op, &[W(1_000_000)]);
    assert!(out.is_empty());
}

#[test]
fn quiet_keys_get_final_results_from_the_watermark_alone() {
    let mut op = TumblingWindows::of(secs(10))
        .unwrap()
        .aggregate(Count, EmitMode::Final);
    let mut out = Collector::new();
    op.on_record(("quiet".to_string(), 0.0), 1_000, &mut out);
    for t in (0..100).map(|i| 5_000 + i * 1_000) {
        op.on_record(("busy".to_string(), 0.0), t, &mut out);
        op.on_watermark(t - 1_000, &mut out);
    }
    let quiet: Vec<_> = out.outputs.iter().filter(|r| r.key == "quiet").collect();
    assert_eq!(quiet.len(), 1);
    assert_eq!((quiet[0].start, quiet[0].value), (0, 1));
    // It came out as soon as the watermark passed 9999 (first, as it registered first).
    assert_eq!(out.outputs[0].key, "quiet");
    assert_eq!(out.outputs[1].key, "busy");
    assert_eq!(out.outputs[1].end, 10_000);
}

#[test]
fn sliding_windows_match_kafka_documentation_example() {
    let mut op = SlidingWindows::of_time_difference(secs(5))
        .unwrap()
        .aggregate(Sum, EmitMode::Final);
    let (out, late): (Out<f64>, _) = run(
        &mut op,
        &[
            R("A", 1.0, 8_000),
            R("A", 2.0, 9_200),
            R("A", 3.0, 12_400),
            W(i64::MAX / 2),
        ],
    );
    assert!(late.is_empty());
    // Kafka: [3000;8000]=1, [4200;9200]=1+2, [7400;12400]=1+2+3, [8001;13001]=2+3, [9201;14201]=3
    assert_eq!(
        out,
        vec![
            fin("A", 3_000, 8_001, 1.0),
            fin("A", 4_200, 9_201, 3.0),
            fin("A", 7_400, 12_401, 6.0),
            fin("A", 8_001, 13_002, 5.0),
            fin("A", 9_201, 14_202, 3.0),
        ]
    );
}

#[test]
fn sliding_windows_close_with_grace_and_send_late_records_aside() {
    let mut op = SlidingWindows::of_time_difference_and_grace(secs(5), secs(1))
        .unwrap()
        .aggregate(Count, EmitMode::Final);
    let (out, late): (Out<u64>, _) = run(
        &mut op,
        &[
            R("A", 0.0, 8_000),
            W(8_999), // [3000;8000] closes at 8000 + 1000
            W(9_000),
            R("A", 0.0, 3_000), // its only window [3000;8000] is closed: late
            R("A", 0.0, 4_500), // windows containing it end by 9500 and none is open: late
            R("A", 0.0, 9_500), // on time; its window [4500;9500] still sees 8000
            W(100_000),
        ],
    );
    assert_eq!(late, vec![lt("A", 0.0, 3_000), lt("A", 0.0, 4_500)]);
    assert_eq!(
        out,
        vec![
            fin("A", 3_000, 8_001, 1),
            fin("A", 4_500, 9_501, 2),
            fin("A", 8_001, 13_002, 1),
        ]
    );
}

#[test]
fn sliding_late_record_joining_an_open_window_is_accepted() {
    let mut op = SlidingWindows::of_time_difference(secs(5))
        .unwrap()
        .aggregate(Sum, EmitMode::Final);
    let (out, late): (Out<f64>, _) = run(
        &mut op,
        &[
            R("A", 1.0, 10_000),
            W(9_000),
            R("A", 2.0, 8_000), // behind the watermark, but inside [5000;10000] (open)
            W(100_000),
        ],
    );
    assert!(late.is_empty());
    // [3000;8000] closed before 8000 arrived, so it is never emitted.
    assert_eq!(
        out,
        vec![fin("A", 5_000, 10_001, 3.0), fin("A", 8_001, 13_002, 1.0)]
    );
}

#[test]
fn session_windows_merge_when_a_record_bridges_two_sessions() {
    let mut op = SessionWindows::with_gap(secs(5))
        .unwrap()
        .aggregate(Count, EmitMode::Final);
    let (out, late): (Out<u64>, _) = run(
        &mut op,
        &[
            R("a", 0.0, 1_000),
            R("a", 0.0, 3_000),  // session [1000, 8000)
            R("a", 0.0, 10_000), // separate session [10000, 15000)
            R("b", 0.0, 2_000),
            W(6_999),           // b's session [2000, 7000) closes
            R("a", 0.0, 6_000), // bridges: [1000, 15000) with 4 records
            W(14_998),
            W(14_999),
        ],
    );
    assert!(late.is_empty());
    assert_eq!(
        out,
        vec![fin("b", 2_000, 7_000, 1), fin("a", 1_000, 15_000, 4)]
    );
}

#[test]
fn session_on_update_and_late_records() {
    let mut op = SessionWindows::with_gap(secs(5))
        .unwrap()
        .with_grace(secs(2))
        .aggregate(Sum, EmitMode::OnUpdate);
    let (out, late): (Out<f64>, _) = run(
        &mut op,
        &[
            R("a", 1.0, 1_000),
            R("a", 2.0, 4_000),
            W(9_000),           // session [1000, 9000) closes at 8999 + 2000
            R("a", 4.0, 5_000), // joins the open session (late but within grace)
            W(12_000),          // [1000, 10000) closes at 11999
            R("a", 8.0, 2_000), // its own session [2000, 7000) closed long ago: late
        ],
    );
    assert_eq!(
        out,
        vec![
            upd("a", 1_000, 6_000, 1.0),
            upd("a", 1_000, 9_000, 3.0),
            upd("a", 1_000, 10_000, 7.0),
            fin("a", 1_000, 10_000, 7.0),
        ]
    );
    assert_eq!(late, vec![lt("a", 8.0, 2_000)]);
}

#[test]
fn snapshot_restore_continues_identically_and_checks_definition() {
    let events = [
        R("a", 1.0, 1_000),
        R("b", 2.0, 2_000),
        W(500),
        R("a", 3.0, 7_000),
    ];
    let rest = [R("a", 5.0, 9_000), W(9_999), R("b", 1.0, 12_000), W(30_000)];
    let make = || {
        HoppingWindows::of(secs(10), secs(5))
            .unwrap()
            .aggregate::<String, f64, _>(Sum, EmitMode::OnUpdate)
    };
    let mut whole = make();
    let (mut expected, _) = run(&mut whole, &events);
    expected.extend(run(&mut whole, &rest).0);

    let mut first = make();
    let (mut got, _) = run(&mut first, &events);
    let snap = first.snapshot().unwrap();
    let mut second = make();
    second.restore(&snap).unwrap();
    got.extend(run(&mut second, &rest).0);
    assert_eq!(got, expected);

    let mut other = TumblingWindows::of(secs(10))
        .unwrap()
        .aggregate::<String, f64, _>(Sum, EmitMode::Final);
    assert!(matches!(other.restore(&snap), Err(StreamError::State(_))));
    let mut session = SessionWindows::with_gap(secs(1))
        .unwrap()
        .aggregate::<String, f64, _>(Sum, EmitMode::Final);
    assert!(matches!(session.restore(&snap), Err(StreamError::State(_))));
    assert!(matches!(
        session.restore(b"garbage"),
        Err(StreamError::State(_))
    ));
}

#[test]
fn invalid_definitions_are_typed_errors() {
    assert!(matches!(
        TumblingWindows::of(Duration::ZERO),
        Err(StreamError::Config(_))
    ));
    assert!(matches!(
        HoppingWindows::of(secs(1), secs(2)),
        Err(StreamError::Config(_))
    ));
    assert!(matches!(
        SessionWindows::with_gap(Duration::from_micros(10)),
        Err(StreamError::Config(_))
    ));
}

#[test]
fn extreme_timestamps_do_not_panic() {
    let mut op = HoppingWindows::of(secs(10), secs(5))
        .unwrap()
        .aggregate(Count, EmitMode::OnUpdate);
    let (out, _): (Out<u64>, _) = run(
        &mut op,
        &[R("a", 0.0, i64::MIN), R("a", 0.0, i64::MAX), W(i64::MAX)],
    );
    assert!(!out.is_empty());
    let mut op = SessionWindows::with_gap(secs(5))
        .unwrap()
        .aggregate(Count, EmitMode::Final);
    let _ = run(
        &mut op,
        &[R("a", 0.0, i64::MAX), R("a", 0.0, i64::MIN), W(i64::MAX)],
    );
    let mut op = SlidingWindows::of_time_difference(secs(5))
        .unwrap()
        .aggregate(Count, EmitMode::OnUpdate);
    let _ = run(
        &mut op,
        &[R("a", 0.0, i64::MAX), R("a", 0.0, i64::MIN), W(i64::MAX)],
    );
}
