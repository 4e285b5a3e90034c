//! The conformance suite every [`Broker`] must pass.
//!
//! Each check takes a broker and a unique namespace (used in stream names and subjects so that
//! runs against a shared server do not collide), creates what it needs, deletes its stream at
//! the end and panics (test-style) on the first violation. Brokers run all of them with
//! [`broker_conformance_tests!`](crate::broker_conformance_tests):
//!
//! ```ignore
//! attest_bus::broker_conformance_tests!(async { my_broker().await });
//! ```
//!
//! No check asserts on elapsed time; waits are generous upper bounds, and "nothing arrives"
//! checks only use waits much shorter than the delay that would make a message legitimately due.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use crate::{
    Broker, BusError, ConsumerConfig, Delivery, OutgoingMessage, PullConsumer, StreamConfig,
};

/// Expands to one `#[tokio::test]` per conformance check; `$make` is an expression (usually an
/// `async` block) that evaluates to a future of an `Arc<dyn Broker>`.
#[macro_export]
macro_rules! broker_conformance_tests {
    ($make:expr) => {
        $crate::broker_conformance_tests!(@each $make;
            publish_dedupes_by_message_id, consumer_delivers_in_order_and_resumes,
            nak_with_delay_redelivers_later, ack_wait_backoff_and_max_deliver,
            term_ends_deliveries, filter_subject_selects_messages, consumer_info_reports_lag,
            consumers_lists_durable_consumers);
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let broker: ::std::sync::Arc<dyn $crate::Broker> = $make.await;
                let ns = $crate::conformance::unique_namespace();
                $crate::conformance::$name(broker, &ns).await;
            }
        )*
    };
}

/// A fresh namespace token (letters and digits).
pub fn unique_namespace() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t{:x}{}", nanos & 0xffff_ffff, &id[..8])
}

/// Creates the namespace's stream `CT_<ns>` on subjects `ct.<ns>.>`; returns its name.
async fn stream(broker: &Arc<dyn Broker>, ns: &str) -> String {
    let cfg = StreamConfig::new(format!("CT_{ns}"), vec![format!("ct.{ns}.>")]);
    broker.ensure_stream(&cfg).await.unwrap();
    // Idempotent.
    broker.ensure_stream(&cfg).await.unwrap();
    cfg.name
}

fn msg(ns: &str, sub: &str, id: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage::new(format!("ct.{ns}.{sub}"), id, body.as_bytes().to_vec())
}

async fn fetch_n(c: &dyn PullConsumer, n: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    for _ in 0..50 {
        if out.len() >= n {
            break;
        }
        out.extend(
            c.fetch(n - out.len(), Duration::from_secs(2))
                .await
                .unwrap(),
        );
    }
    assert_eq!(out.len(), n, "expected {n} deliveries");
    out
}

fn body(d: &Delivery) -> String {
    String::from_utf8(d.message.payload.to_vec()).unwrap()
}

/// Publish is de-duplicated by message id; headers, subject and payload round-trip; a subject
/// no stream captures is refused.
pub async fn publish_dedupes_by_message_id(broker: Arc<dyn Broker>, ns: &str) {
    let s = stream(&broker, ns).await;
    let first = broker
        .publish(
            msg(ns, "loan", "m-1", "one")
                .with_header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .with_header("Correlation-ID", "corr-1"),
        )
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.stream, s);
    let again = broker.publish(msg(ns, "loan", "m-1", "one")).await.unwrap();
    assert!(again.duplicate, "same message id must be recognised");
    assert_eq!(again.sequence, first.sequence);
    let second = broker.publish(msg(ns, "loan", "m-2", "two")).await.unwrap();
    assert!(!second.duplicate);
    assert!(second.sequence > first.sequence);

    let batch: Vec<_> = (0..20)
        .map(|i| msg(ns, "batch", &format!("b-{i}"), &i.to_string()))
        .collect();
    let acks = broker.publish_batch(batch).await.unwrap();
    assert_eq!(acks.len(), 20);
    assert!(acks.iter().all(|a| !a.duplicate));

    let stored = broker
        .read_stream(&s, &format!("ct.{ns}.loan"), 0, 100)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2, "the duplicate was not stored");
    assert_eq!(stored[0].sequence, first.sequence);
    assert_eq!(stored[0].message.message_id.as_deref(), Some("m-1"));
    assert_eq!(stored[0].message.header("Correlation-ID"), Some("corr-1"));
    assert_eq!(
        stored[0].message.header("traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(&stored[1].message.payload[..], b"two");
    let from_second = broker
        .read_stream(&s, &format!("ct.{ns}.>"), second.sequence, 100)
        .await
        .unwrap();
    assert_eq!(from_second.len(), 21);
    assert_eq!(from_second[0].sequence, second.sequence);

    let err = broker
        .publish(OutgoingMessage::new(
            format!("nowhere.{ns}"),
            "x",
            b"x".to_vec(),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BusError::NoStreamForSubject { .. }),
        "{err:?}"
    );
    broker.delete_stream(&s).await.unwrap();
}

/// First deliveries come in stream order with delivery metadata; a re-bound durable consumer
/// resumes after what was acknowledged.
pub async fn consumer_delivers_in_order_and_resumes(broker: Arc<dyn Broker>, ns: &str) {
    let s = stream(&broker, ns).await;
    let mut seqs = Vec::new();
    for i in 0..10 {
        let ack = broker
            .publish(
                msg(ns, "ev", &format!("id-{i}"), &i.to_string()).with_header("n", i.to_string()),
            )
            .await
            .unwrap();
        seqs.push(ack.sequence);
    }
    let cfg = ConsumerConfig::new(&s, "worker");
    {
        let c = broker.consumer(&cfg).await.unwrap();
        let ds = fetch_n(c.as_ref(), 4).await;
        for (i, d) in ds.iter().enumerate() {
            assert_eq!(body(d), i.to_string());
            assert_eq!(d.info.stream_sequence, seqs[i]);
            assert_eq!(d.info.delivered, 1);
            assert_eq!(d.info.consumer, "worker");
            assert_eq!(d.message.header("n"), Some(i.to_string().as_str()));
            assert_eq!(
                d.message.message_id.as_deref(),
                Some(format!("id-{i}").as_str())
            );
            assert!(d.info.published <= chrono::Utc::now());
            d.ack().await.unwrap();
        }
        let seqs_seen: Vec<u64> = ds.iter().map(|d| d.info.consumer_sequence).collect();
        assert!(seqs_seen.windows(2).all(|w| w[0] < w[1]));
    }
    let c = broker.consumer(&cfg).await.unwrap();
    let ds = fetch_n(c.as_ref(), 6).await;
    let bodies: Vec<String> = ds.iter().map(body).collect();
    assert_eq!(bodies, (4..10).map(|i| i.to_string()).collect::<Vec<_>>());
    for d in &ds {
        assert_eq!(d.info.delivered, 1);
        d.ack().await.unwrap();
    }
    assert!(c
        .fetch(10, Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty());
    broker.delete_consumer(&s, "worker").await.unwrap();
    broker.delete_stream(&s).await.unwrap();
}

/// `nak(delay)` redelivers after the delay with a higher delivery count; a long delay keeps the
/// message away.
pub async fn nak_with_delay_redelivers_later(broker: Arc<dyn Broker>, ns: &str) {
    let s = stream(&broker, ns).await;
    broker.publish(msg(ns, "ev", "slow", "slow")).await.unwrap();
    broker.publish(msg(ns, "ev", "fast", "fast")).await.unwrap();
    let c = broker
        .consumer(&ConsumerConfig::new(&s, "nakker").with_ack_wait(Duration::from_secs(30)))
        .await
        .unwrap();
    let ds = fetch_n(c.as_ref(), 2).await;
    ds[0].nak(Some(Duration::from_secs(30))).await.unwrap();
    ds[1].nak(Some(Duration::from_millis(50))).await.unwrap();
    let again = fetch_n(c.as_ref(), 1).await;
    assert_eq!(body(&again[0]), "fast");
    assert_eq!(again[0].info.delivered, 2);
    again[0].ack().await.unwrap();
    assert!(
        c.fetch(5, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty(),
        "a message nak'ed for 30 s must not come back at once"
    );
    broker.delete_stream(&s).await.unwrap();
}

/// Unacknowledged deliveries come back after the backoff entries; after `max_deliver`
/// deliveries the message is no longer delivered.
pub async fn ack_wait_backoff_and_max_deliver(broker: Arc<dyn Broker>, ns: &str) {
    let s = stream(&broker, ns).await;
    broker
        .publish(msg(ns, "ev", "flaky", "flaky"))
        .await
        .unwrap();
    let c = broker
        .consumer(
            &ConsumerConfig::new(&s, "backoff")
                .with_ack_wait(Duration::from_secs(1))
                .with_backoff(vec![Duration::from_millis(200), Duration::from_millis(300)])
                .with_max_deliver(3),
        )
        .await
        .unwrap();
    for expected in 1..=3u32 {
        let ds = fetch_n(c.as_ref(), 1).await;
        assert_eq!(ds[0].info.delivered, expected);
        // Not acknowledged: the ack wait (backoff entry) expires.
    }
    assert!(
        c.fetch(1, Duration::from_secs(2)).await.unwrap().is_empty(),
        "no delivery beyond max_deliver"
    );
    broker.delete_stream(&s).await.unwrap();
}

/// `term` ends deliveries at once, `ack` too; neither comes back after the ack wait.
pub async fn term_ends_deliveries(broker: Arc<dyn Broker>, ns: &str) {
    let s = stream(&broker, ns).await;
    broker.publish(msg(ns, "ev", "a", "a")).await.unwrap();
    broker.publish(msg(ns, "ev", "b", "b")).await.unwrap();
    let c = broker
        .consumer(&ConsumerConfig::new(&s, "term").with_ack_wait(Duration::from_millis(300)))
        .await
        .unwrap();
    let ds = fetch_n(c.as_ref(), 2).await;
    ds[0].term().await.unwrap();
    ds[1].ack().await.unwrap();
    assert!(c
        .fetch(5, Duration::from_millis(1200))
        .await
        .unwrap()
        .is_empty());
    let info = c.info().await.unwrap();
    assert_eq!(info.lag_messages(), 0);
    assert_eq!(info.oldest_unprocessed, None);
    broker.delete_stream(&s).await.unwrap();
}

/// A filtered consumer sees only matching subjects.
pub async fn filter_subject_selects_messages(broker: Arc<dyn Broker>, ns: &str) {
    let s = stream(&broker, ns).await;
    for i in 0..6 {
        let sub = if i % 2 == 0 {
            "loan.created"
        } else {
            "user.created"
        };
        broker
            .publish(msg(ns, sub, &format!("f-{i}"), &i.to_string()))
            .await
            .unwrap();
    }
    let c = broker
        .consumer(&ConsumerConfig::new(&s, "loans").with_filter(format!("ct.{ns}.loan.*")))
        .await
        .unwrap();
    let ds = fetch_n(c.as_ref(), 3).await;
    assert_eq!(ds.iter().map(body).collect::<Vec<_>>(), ["0", "2", "4"]);
    for d in &ds {
        assert!(d.message.subject.ends_with("loan.created"));
        d.ack().await.unwrap();
    }
    assert!(c
        .fetch(5, Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty());
    broker.delete_stream(&s).await.unwrap();
}

/// Consumer info: undelivered and unacknowledged counts, ack floor, oldest unprocessed time.
pub async fn consumer_info_reports_lag(broker: Arc<dyn Broker>, ns: &str) {
    let s = stream(&broker, ns).await;
    let mut acks = Vec::new();
    for i in 0..5 {
        acks.push(
            broker
                .publish(msg(ns, "ev", &format!("l-{i}"), "x"))
                .await
                .unwrap(),
        );
    }
    let stored = broker.read_stream(&s, ">", 0, 10).await.unwrap();
    let c = broker
        .consumer(&ConsumerConfig::new(&s, "lagging"))
        .await
        .unwrap();
    let info = c.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (5, 0));
    assert_eq!(info.lag_messages(), 5);
    assert_eq!(info.oldest_unprocessed, Some(stored[0].message.published));
    assert!(info.lag_seconds(chrono::Utc::now() + chrono::Duration::seconds(10)) >= 10.0);

    let ds = fetch_n(c.as_ref(), 2).await;
    let info = c.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (3, 2));
    assert_eq!(info.oldest_unprocessed, Some(stored[0].message.published));
    ds[1].ack().await.unwrap();
    ds[0].ack().await.unwrap();
    let info = c.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (3, 0));
    assert_eq!(info.ack_floor, acks[1].sequence);
    assert_eq!(info.oldest_unprocessed, Some(stored[2].message.published));
    broker.delete_stream(&s).await.unwrap();
}

/// `consumers` lists the stream's durable consumers with their stored configurations, and
/// `streams` lists the stream; neither creates anything.
pub async fn consumers_lists_durable_consumers(broker: Arc<dyn Broker>, ns: &str) {
    let s = stream(&broker, ns).await;
    assert!(broker.consumers(&s).await.unwrap().is_empty());
    let a = ConsumerConfig::new(&s, "alpha")
        .with_filter(format!("ct.{ns}.loan.*"))
        .with_ack_wait(Duration::from_secs(7))
        .with_max_deliver(4);
    let b = ConsumerConfig::new(&s, "beta")
        .with_backoff(vec![Duration::from_secs(1), Duration::from_secs(5)])
        // JetStream stores ack_wait = backoff[0] when a backoff is set; keep them equal so the
        // stored config round-trips on every broker.
        .with_ack_wait(Duration::from_secs(1))
        .with_max_deliver(3);
    broker.consumer(&b).await.unwrap();
    broker.consumer(&a).await.unwrap();
    let listed = broker.consumers(&s).await.unwrap();
    assert_eq!(listed, vec![a, b]);
    assert!(broker.streams().await.unwrap().contains(&s));
    // Listing is read-only.
    assert_eq!(broker.consumers(&s).await.unwrap().len(), 2);
    broker.delete_consumer(&s, "beta").await.unwrap();
    let listed = broker.consumers(&s).await.unwrap();
    assert_eq!(
        listed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["alpha"]
    );
    broker.delete_stream(&s).await.unwrap();
    assert!(!broker.streams().await.unwrap().contains(&s));
}
