//! Interval join and stream-table join, hand-computed cases.

use std::time::Duration;

use attest_stream::join::{Enriched, IntervalJoin, JoinInput, Joined, TableJoin, TableJoinInput};
use attest_stream::{Collector, Operator, StreamError};

type In = JoinInput<String, String, String>;

fn left(k: &str, v: &str) -> In {
    JoinInput::Left(k.to_string(), v.to_string())
}
fn right(k: &str, v: &str) -> In {
    JoinInput::Right(k.to_string(), v.to_string())
}
fn pair(k: &str, l: &str, lt: i64, r: &str, rt: i64) -> Joined<String, String, String> {
    Joined {
        key: k.to_string(),
        left: l.to_string(),
        left_time: lt,
        right: r.to_string(),
        right_time: rt,
    }
}

#[test]
fn decision_joins_outcomes_within_the_bound() {
    // An outcome (right) joins its decision (left) if observed within 10 s after it.
    let mut op = IntervalJoin::bounds_ms(0, 10_000)
        .unwrap()
        .operator::<String, String, String>();
    let mut out = Collector::new();
    op.on_record(left("loan-1", "approve"), 1_000, &mut out);
    op.on_record(right("loan-1", "repaid"), 5_000, &mut out); // 4 s later: match
    op.on_record(right("loan-1", "too-late"), 11_001, &mut out); // 10.001 s later: no
    op.on_record(right("loan-2", "early"), 2_000, &mut out); // arrives before its decision
    op.on_record(left("loan-2", "deny"), 1_500, &mut out); // 0.5 s before the outcome: match
    op.on_record(left("loan-2", "review"), 2_000, &mut out); // same time: match (inclusive)
    op.on_record(left("loan-3", "approve"), 1_000, &mut out); // other key: nothing
    let (got, late) = out.drain();
    assert!(late.is_empty());
    assert_eq!(
        got,
        vec![
            pair("loan-1", "approve", 1_000, "repaid", 5_000),
            pair("loan-2", "deny", 1_500, "early", 2_000),
            pair("loan-2", "review", 2_000, "early", 2_000),
        ]
    );
}

#[test]
fn buffers_are_evicted_by_watermark_and_late_records_go_aside() {
    let mut op = IntervalJoin::between(Duration::from_secs(2), Duration::from_secs(3))
        .unwrap()
        .operator::<String, String, String>();
    let mut out = Collector::new();
    op.on_record(left("k", "L1"), 10_000, &mut out); // matches rights in [8000, 13000]
    op.on_record(right("k", "R1"), 9_000, &mut out); // matches lefts in [6000, 11000]
    assert_eq!(op.buffered(), (1, 1));
    // L1 can still meet rights up to 13000; R1 can meet lefts up to 11000.
    op.on_watermark(10_999, &mut out);
    assert_eq!(op.buffered(), (1, 1));
    op.on_watermark(11_000, &mut out); // R1 evicted (no left after 11000 can match it)
    assert_eq!(op.buffered(), (1, 0));
    op.on_record(right("k", "R2"), 13_000, &mut out); // still joins L1
    op.on_watermark(13_000, &mut out); // L1 evicted
    assert_eq!(op.buffered(), (0, 1));
    op.on_record(left("k", "L-late"), 12_000, &mut out); // behind the watermark: late
    op.on_watermark(20_000, &mut out);
    assert_eq!(op.buffered(), (0, 0));
    let (got, late) = out.drain();
    assert_eq!(
        got,
        vec![
            pair("k", "L1", 10_000, "R1", 9_000),
            pair("k", "L1", 10_000, "R2", 13_000),
        ]
    );
    assert_eq!(late, vec![(left("k", "L-late"), 12_000)]);
}

#[test]
fn interval_join_snapshot_restore_and_bad_bounds() {
    let make = || {
        IntervalJoin::bounds_ms(-1_000, 1_000)
            .unwrap()
            .with_grace(Duration::from_millis(500))
            .operator::<String, String, String>()
    };
    let mut a = make();
    let mut out = Collector::new();
    a.on_record(left("k", "L1"), 5_000, &mut out);
    a.on_watermark(4_000, &mut out);
    let snap = a.snapshot().unwrap();
    let mut b = make();
    b.restore(&snap).unwrap();
    b.on_record(right("k", "R1"), 5_500, &mut out);
    assert_eq!(out.outputs, vec![pair("k", "L1", 5_000, "R1", 5_500)]);
    // Within grace: 4_000 + 500 > 4_000, accepted.
    b.on_record(right("k", "R0"), 4_001, &mut out);
    assert_eq!(out.outputs.len(), 2);
    assert!(out.late.is_empty());
    assert!(matches!(
        IntervalJoin::bounds_ms(5, 1),
        Err(StreamError::Config(_))
    ));
    let mut other = IntervalJoin::bounds_ms(0, 1)
        .unwrap()
        .operator::<String, String, String>();
    assert!(matches!(other.restore(&snap), Err(StreamError::State(_))));
}

#[test]
fn table_join_uses_the_latest_value() {
    type TIn = TableJoinInput<String, u32, String>;
    let mut op = TableJoin::operator::<String, u32, String>();
    let mut out = Collector::new();
    let s = |k: &str, v: u32| TIn::Stream(k.to_string(), v);
    let t = |k: &str, v: &str| TIn::Table(k.to_string(), v.to_string());
    op.on_record(s("alice", 1), 100, &mut out); // no table value yet
    op.on_record(t("alice", "gold"), 150, &mut out);
    op.on_record(s("alice", 2), 200, &mut out);
    op.on_record(t("alice", "platinum"), 300, &mut out);
    op.on_record(t("alice", "stale"), 250, &mut out); // older than what we hold: ignored
    op.on_record(s("alice", 3), 400, &mut out);
    op.on_record(s("bob", 4), 400, &mut out);
    let snap = op.snapshot().unwrap();
    let mut restored = TableJoin::operator::<String, u32, String>();
    restored.restore(&snap).unwrap();
    restored.on_record(s("alice", 5), 500, &mut out);
    let got: Vec<(u32, Option<String>)> = out
        .outputs
        .iter()
        .map(|e: &Enriched<String, u32, String>| (e.record, e.table.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, None),
            (2, Some("gold".to_string())),
            (3, Some("platinum".to_string())),
            (4, None),
            (5, Some("platinum".to_string())),
        ]
    );
    assert!(out.late.is_empty());
}
