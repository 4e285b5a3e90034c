//! `Broker::read_stream` on NATS pages through a stream with a reusable read cursor; these
//! check it against the one-request-per-message reader on the same messages: sequential
//! pages, pages interleaved with publishes, seeks backwards and forwards, several filters at
//! once, and a cursor deleted behind the broker's back.

use std::time::{SystemTime, UNIX_EPOCH};

use attest_bus::nats::NatsBroker;
use attest_bus::{Broker, OutgoingMessage, StoredMessage, StreamConfig};

fn suffix() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}", n & 0xffff_ffff_ffff)
}

fn ids(page: &[StoredMessage]) -> Vec<(u64, String, Option<String>)> {
    page.iter()
        .map(|m| {
            (
                m.sequence,
                m.message.subject.clone(),
                m.message.message_id.clone(),
            )
        })
        .collect()
}

async fn publish(b: &NatsBroker, prefix: &str, from: usize, to: usize) {
    let msgs = (from..to)
        .map(|i| {
            let kind = ["a", "b", "c"][i % 3];
            OutgoingMessage::new(
                format!("{prefix}.{kind}"),
                format!("m{i}"),
                vec![i as u8; 16],
            )
            .with_header("n", i.to_string())
        })
        .collect();
    b.publish_batch(msgs).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_reads_equal_reads_by_get() {
    let b = NatsBroker::connect("nats://127.0.0.1:4222").await.unwrap();
    let sx = suffix();
    let (stream, prefix) = (format!("READ_{sx}"), format!("rd{sx}"));
    b.ensure_stream(&StreamConfig::new(&stream, vec![format!("{prefix}.>")]))
        .await
        .unwrap();
    publish(&b, &prefix, 0, 300).await;

    // Whole-stream and per-subject filters, read in pages of several sizes, interleaved.
    let filters = [
        format!("{prefix}.>"),
        format!("{prefix}.a"),
        format!("{prefix}.b"),
    ];
    for page_size in [1usize, 7, 64, 1000] {
        let mut next = vec![1u64; filters.len()];
        let mut done = vec![false; filters.len()];
        let mut round = 0;
        while !done.iter().all(|d| *d) {
            for (i, f) in filters.iter().enumerate() {
                if done[i] {
                    continue;
                }
                let got = b.read_stream(&stream, f, next[i], page_size).await.unwrap();
                let want = b
                    .read_stream_by_get(&stream, f, next[i], page_size)
                    .await
                    .unwrap();
                assert_eq!(ids(&got), ids(&want), "filter {f} from {}", next[i]);
                assert_eq!(
                    got.iter().map(|m| &m.message.headers).collect::<Vec<_>>(),
                    want.iter().map(|m| &m.message.headers).collect::<Vec<_>>()
                );
                match got.last() {
                    Some(last) => next[i] = last.sequence + 1,
                    None => done[i] = true,
                }
            }
            // New messages between pages show up in later pages.
            round += 1;
            if round == 3 && page_size == 7 {
                publish(&b, &prefix, 300, 330).await;
            }
        }
    }

    // Seeks: backwards, forwards past a gap, beyond the end, and sequence 0.
    for (from, max) in [(200u64, 10usize), (5, 3), (250, 100), (10_000, 5), (0, 4)] {
        let got = b
            .read_stream(&stream, &filters[0], from, max)
            .await
            .unwrap();
        let want = b
            .read_stream_by_get(&stream, &filters[0], from, max)
            .await
            .unwrap();
        assert_eq!(ids(&got), ids(&want), "seek to {from}");
    }
    assert!(b
        .read_stream(&stream, &filters[0], 1, 0)
        .await
        .unwrap()
        .is_empty());
    // A filter that matches nothing in the stream, and a missing stream.
    let none = format!("{prefix}.nothing");
    assert!(b
        .read_stream(&stream, &none, 1, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(b
        .read_stream(&format!("NOPE_{sx}"), ">", 1, 10)
        .await
        .is_err());

    b.delete_stream(&stream).await.unwrap();
}

/// Deletes every consumer of `s` behind the broker's back; returns how many there were.
async fn delete_consumers(s: &async_nats::jetstream::stream::Stream) -> usize {
    use futures::TryStreamExt;
    let names: Vec<String> = s.consumer_names().try_collect().await.unwrap();
    for n in &names {
        s.delete_consumer(n).await.unwrap();
    }
    names.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_deleted_behind_the_broker_is_replaced() {
    let b = NatsBroker::connect("nats://127.0.0.1:4222").await.unwrap();
    let sx = suffix();
    let (stream, prefix) = (format!("READGONE_{sx}"), format!("rg{sx}"));
    b.ensure_stream(&StreamConfig::new(&stream, vec![format!("{prefix}.>")]))
        .await
        .unwrap();
    publish(&b, &prefix, 0, 50).await;
    let filter = format!("{prefix}.>");
    let first = b.read_stream(&stream, &filter, 1, 20).await.unwrap();
    assert_eq!(first.len(), 20);

    // Delete every consumer of the stream (the cursor is an ephemeral one).
    let js = async_nats::jetstream::new(b.client().clone());
    let s = js.get_stream(&stream).await.unwrap();
    assert!(
        delete_consumers(&s).await > 0,
        "the read cursor is a consumer"
    );

    // The next page continues where the first stopped, and so does the one after.
    let second = b.read_stream(&stream, &filter, 21, 20).await.unwrap();
    let want = b
        .read_stream_by_get(&stream, &filter, 21, 20)
        .await
        .unwrap();
    assert_eq!(ids(&second), ids(&want));
    let third = b.read_stream(&stream, &filter, 41, 20).await.unwrap();
    assert_eq!(third.len(), 10);
    assert_eq!(third[0].sequence, 41);
    // An idle cursor deleted: an empty read notices and the next publish is still seen.
    delete_consumers(&s).await;
    assert!(b
        .read_stream(&stream, &filter, 51, 20)
        .await
        .unwrap()
        .is_empty());
    publish(&b, &prefix, 50, 55).await;
    let after = b.read_stream(&stream, &filter, 51, 20).await.unwrap();
    assert_eq!(after.len(), 5);

    b.delete_stream(&stream).await.unwrap();
}
