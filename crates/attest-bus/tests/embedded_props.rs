//! Property: whatever the order of acks, terms and naks, and wherever a restart falls, the
//! embedded broker never redelivers a settled message, loses none, and ends with zero lag and
//! the ack floor at the last message. Real SQLite files.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use attest_bus::{Broker, ConsumerConfig, OutgoingMessage, StreamConfig};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Op {
    Ack,
    Term,
    Nak,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![Just(Op::Ack), Just(Op::Term), Just(Op::Nak)]
}

async fn scenario(ops: Vec<Op>, order: Vec<usize>, restart_at: usize) {
    let n = ops.len();
    let e = common::TempEmbedded::new().await;
    let dir = e.dir.clone();
    e.ensure_stream(&StreamConfig::new("P", vec!["p.>".into()]))
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for i in 0..n {
        let ack = e
            .publish(OutgoingMessage::new("p.x", format!("m-{i}"), vec![i as u8]))
            .await
            .unwrap();
        seqs.push(ack.sequence);
    }
    let cfg = ConsumerConfig::new("P", "prop").with_ack_wait(Duration::from_millis(100));
    let mut settled = HashSet::new();
    {
        let pull = e.consumer(&cfg).await.unwrap();
        let mut ds = Vec::new();
        while ds.len() < n {
            ds.extend(
                pull.fetch(n - ds.len(), Duration::from_secs(2))
                    .await
                    .unwrap(),
            );
        }
        let mut last_cseq = 0;
        for d in &ds {
            assert!(d.info.consumer_sequence > last_cseq);
            last_cseq = d.info.consumer_sequence;
        }
        for &i in order.iter().take(restart_at) {
            let d = &ds[i];
            match ops[i] {
                Op::Ack => d.ack().await.unwrap(),
                Op::Term => d.term().await.unwrap(),
                Op::Nak => {
                    d.nak(None).await.unwrap();
                    continue;
                }
            }
            settled.insert(d.info.stream_sequence);
        }
    }
    drop(e);
    let e = common::TempEmbedded::reopen(dir).await;
    e.ensure_stream(&StreamConfig::new("P", vec!["p.>".into()]))
        .await
        .unwrap();
    let pull = e.consumer(&cfg).await.unwrap();
    for _ in 0..100 {
        if settled.len() == n {
            break;
        }
        for d in pull.fetch(n, Duration::from_secs(1)).await.unwrap() {
            assert!(
                !settled.contains(&d.info.stream_sequence),
                "settled message {} delivered again",
                d.info.stream_sequence
            );
            assert!(
                d.info.delivered >= 2,
                "everything left was delivered before"
            );
            d.ack().await.unwrap();
            settled.insert(d.info.stream_sequence);
        }
    }
    assert_eq!(settled.len(), n, "no message lost");
    assert!(pull
        .fetch(n, Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    let info = pull.info().await.unwrap();
    assert_eq!(info.lag_messages(), 0);
    assert_eq!(info.ack_floor, *seqs.last().unwrap());
    assert_eq!(info.oldest_unprocessed, None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn settlements_survive_restarts(
        (ops, order, restart_at) in prop::collection::vec(op(), 1..12).prop_flat_map(|ops| {
            let n = ops.len();
            (Just(ops), Just((0..n).collect::<Vec<_>>()).prop_shuffle(), 0..=n)
        })
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(scenario(ops, order, restart_at));
    }
}
