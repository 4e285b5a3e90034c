//! The fluent DSL: stateless steps in front of windows and joins, late records as they came in.

use std::time::Duration;

use attest_stream::agg::{Count, Mean};
use attest_stream::dsl::{Forward, Pipeline};
use attest_stream::join::{IntervalJoin, JoinInput};
use attest_stream::window::{EmitMode, HoppingWindows, SessionWindows, TumblingWindows};
use attest_stream::{Collector, Operator};

#[derive(Debug, Clone, PartialEq)]
struct Order {
    product: String,
    amount: f64,
    items: Vec<String>,
}

fn order(product: &str, amount: f64) -> Order {
    Order {
        product: product.to_string(),
        amount,
        items: vec![format!("{product}-1"), format!("{product}-2")],
    }
}

#[test]
fn filter_key_by_map_window_mean() {
    let mut job = Pipeline::<Order>::new()
        .filter(|o| o.amount > 0.0)
        .key_by(|o| o.product.clone())
        .map(|o| o.amount)
        .window(HoppingWindows::of(Duration::from_secs(10), Duration::from_secs(5)).unwrap())
        .aggregate(Mean)
        .emit(EmitMode::Final);
    let mut out = Collector::new();
    job.on_record(order("tea", 4.0), 1_000, &mut out);
    job.on_record(order("tea", -3.0), 2_000, &mut out); // filtered out
    job.on_record(order("cocoa", 10.0), 3_000, &mut out);
    job.on_record(order("tea", 8.0), 6_000, &mut out);
    job.on_watermark(9_999, &mut out);
    let got: Vec<(String, i64, f64)> = out
        .outputs
        .iter()
        .map(|r| (r.key.clone(), r.start, r.value))
        .collect();
    assert_eq!(
        got,
        vec![
            ("tea".to_string(), -5_000, 4.0),
            ("cocoa".to_string(), -5_000, 10.0),
            ("tea".to_string(), 0, 6.0),
            ("cocoa".to_string(), 0, 10.0),
        ]
    );
}

#[test]
fn late_side_output_carries_the_original_record() {
    let mut job = Pipeline::<Order>::new()
        .key_by(|o| o.product.clone())
        .flat_map(|o| o.items)
        .window(TumblingWindows::of(Duration::from_secs(10)).unwrap())
        .aggregate(Count)
        .emit(EmitMode::Final);
    let mut out = Collector::new();
    job.on_record(order("tea", 1.0), 1_000, &mut out);
    job.on_watermark(10_500, &mut out);
    job.on_record(order("tea", 2.0), 2_000, &mut out); // window closed
    job.on_record(order("tea", 3.0), 12_000, &mut out);
    job.on_watermark(20_000, &mut out);
    let counts: Vec<(i64, u64)> = out.outputs.iter().map(|r| (r.start, r.value)).collect();
    assert_eq!(counts, vec![(0, 2), (10_000, 2)], "two items per order");
    assert_eq!(out.late, vec![(order("tea", 2.0), 2_000)]);
}

#[test]
fn sessions_and_unkeyed_steps_and_forward() {
    let mut job = Pipeline::<(u64, u32)>::new()
        .flat_map(|(k, n)| (0..n).map(move |_| k))
        .key_by(|k| *k)
        .window(SessionWindows::with_gap(Duration::from_secs(1)).unwrap())
        .aggregate(Count)
        .emit(EmitMode::OnUpdate);
    let mut out = Collector::new();
    job.on_record((7, 2), 100, &mut out);
    job.on_record((7, 1), 600, &mut out);
    job.on_watermark(10_000, &mut out);
    let got: Vec<(u64, bool)> = out.outputs.iter().map(|r| (r.value, r.is_final)).collect();
    assert_eq!(got, vec![(1, false), (2, false), (3, false), (3, true)]);

    let mut alarms = Pipeline::<Order>::new()
        .filter(|o| o.amount > 10_000.0)
        .map(|o| o.product)
        .then(Forward::new());
    let mut out = Collector::new();
    alarms.on_record(order("gold", 20_000.0), 1, &mut out);
    alarms.on_record(order("tea", 3.0), 2, &mut out);
    assert_eq!(out.outputs, vec!["gold".to_string()]);
    assert!(alarms.snapshot().unwrap().is_empty());
}

#[test]
fn pipeline_in_front_of_an_interval_join() {
    #[derive(Debug, Clone)]
    enum Ev {
        Decision(u64, bool),
        Outcome(u64, bool),
    }
    let mut job = Pipeline::<Ev>::new()
        .map(|e| match e {
            Ev::Decision(id, approved) => JoinInput::Left(id, approved),
            Ev::Outcome(id, repaid) => JoinInput::Right(id, repaid),
        })
        .then(
            IntervalJoin::bounds_ms(0, 60_000)
                .unwrap()
                .operator::<u64, bool, bool>(),
        );
    let mut out = Collector::new();
    job.on_record(Ev::Decision(1, true), 1_000, &mut out);
    job.on_record(Ev::Outcome(1, false), 30_000, &mut out);
    job.on_watermark(100_000, &mut out);
    job.on_record(Ev::Outcome(1, true), 50_000, &mut out); // late
    assert_eq!(out.outputs.len(), 1);
    assert!(out.outputs[0].left && !out.outputs[0].right);
    assert_eq!(out.late.len(), 1);
    assert!(matches!(out.late[0], (Ev::Outcome(1, true), 50_000)));
}
