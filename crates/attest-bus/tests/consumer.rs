//! The consumer runner against both brokers: poison pills, retries with backoff, dead letters
//! and their replay. Real NATS at 127.0.0.1:4222 and real SQLite files.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use attest_bus::consumer::{
    Consumer, ConsumerOptions, FnHandler, HandlerError, JsonHandler, RetryPolicy,
};
use attest_bus::dlq::{
    list_dead_letters, replay_dead_letter, DeadLetterConfig, FailureKind, REPLAYED_FROM_HEADER,
};
use attest_bus::{ConsumerConfig, DynBroker, OutgoingMessage, StreamConfig};
use serde::Deserialize;

struct Setup {
    broker: DynBroker,
    ns: String,
    stream: String,
    dlq: DeadLetterConfig,
}

impl Setup {
    async fn new(broker: DynBroker) -> Self {
        let ns = common::unique("c");
        let stream = format!("CS_{ns}");
        broker
            .ensure_stream(&StreamConfig::new(&stream, vec![format!("cs.{ns}.>")]))
            .await
            .unwrap();
        let dlq = DeadLetterConfig::new(format!("DLQ_{ns}"), format!("dlq.{ns}"));
        Setup {
            broker,
            ns,
            stream,
            dlq,
        }
    }

    fn subject(&self) -> String {
        format!("cs.{}.loan", self.ns)
    }

    fn options(&self, retry: RetryPolicy) -> ConsumerOptions {
        ConsumerOptions {
            batch: 16,
            fetch_wait: Duration::from_millis(800),
            retry,
            dead_letters: self.dlq.clone(),
            lag_every: Duration::ZERO,
        }
    }

    async fn cleanup(&self) {
        self.broker.delete_stream(&self.stream).await.unwrap();
        self.broker.delete_stream(&self.dlq.stream).await.unwrap();
    }
}

#[derive(Debug, Deserialize)]
struct Cmd {
    n: u64,
}

async fn poison_pill_is_dead_lettered_once(broker: DynBroker) {
    let s = Setup::new(broker).await;
    for i in 0..10u64 {
        let body = if i == 4 {
            b"{not json".to_vec()
        } else {
            serde_json::to_vec(&serde_json::json!({ "n": i })).unwrap()
        };
        s.broker
            .publish(
                OutgoingMessage::new(s.subject(), format!("m-{i}"), body).with_header(
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
            )
            .await
            .unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let handler = JsonHandler::new(move |cmd: Cmd, _m| {
        let seen = seen2.clone();
        async move {
            seen.lock().unwrap().push(cmd.n);
            Ok::<(), HandlerError>(())
        }
    });
    let monitor = Arc::new(attest_bus::lag::LagMonitor::default());
    let mut c = Consumer::new(
        s.broker.clone(),
        ConsumerConfig::new(&s.stream, "pill").with_ack_wait(Duration::from_secs(5)),
        handler,
        s.options(RetryPolicy::default()),
    )
    .with_lag_monitor(monitor.clone());
    let handled = c.drain().await.unwrap();
    assert_eq!(handled, 10, "one delivery each: the pill is not retried");
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3, 5, 6, 7, 8, 9]);
    assert_eq!(c.stats().snapshot(), (9, 0, 1));

    let dls = list_dead_letters(s.broker.as_ref(), &s.dlq, None, 0, 100)
        .await
        .unwrap();
    assert_eq!(dls.len(), 1);
    let dl = &dls[0];
    assert_eq!(dl.kind, FailureKind::Undecodable);
    assert_eq!(dl.attempts, 1);
    assert_eq!(dl.consumer, "pill");
    assert_eq!(dl.original_subject, s.subject());
    assert_eq!(dl.original_stream, s.stream);
    assert_eq!(dl.original_message_id.as_deref(), Some("m-4"));
    assert_eq!(&dl.payload[..], b"{not json");
    assert!(dl.error.contains("undecodable"), "{}", dl.error);
    assert_eq!(
        dl.headers.get("traceparent").map(String::as_str),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    let stored = s
        .broker
        .read_stream(&s.stream, &s.subject(), dl.original_sequence, 1)
        .await
        .unwrap();
    assert_eq!(stored[0].message.message_id.as_deref(), Some("m-4"));

    // Nothing left, nothing looping.
    c.report_lag(true).await.unwrap();
    let rows = monitor.snapshot();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].lag_messages, 0);
    assert_eq!(c.drain().await.unwrap(), 0);
    s.cleanup().await;
}

async fn retryable_errors_back_off_then_dead_letter_and_replay(broker: DynBroker) {
    let s = Setup::new(broker).await;
    for (i, body) in ["ok-1", "flaky", "ok-2"].iter().enumerate() {
        s.broker
            .publish(
                OutgoingMessage::new(s.subject(), format!("r-{i}"), body.as_bytes().to_vec())
                    .with_header("Idempotency-Key", format!("key-{body}")),
            )
            .await
            .unwrap();
    }
    let healthy = Arc::new(Mutex::new(false));
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let (h2, a2) = (healthy.clone(), attempts.clone());
    let handler = FnHandler(
        move |m: attest_bus::Message, info: attest_bus::DeliveryInfo| {
            let (healthy, attempts) = (h2.clone(), a2.clone());
            async move {
                let body = String::from_utf8(m.payload.to_vec()).unwrap();
                attempts
                    .lock()
                    .unwrap()
                    .push((body.clone(), info.delivered));
                if body == "flaky" && !*healthy.lock().unwrap() {
                    return Err(HandlerError::retryable("downstream unavailable"));
                }
                Ok(())
            }
        },
    );
    let retry = RetryPolicy {
        backoff: vec![Duration::from_millis(50), Duration::from_millis(100)],
        max_attempts: 3,
    };
    let mut c = Consumer::new(
        s.broker.clone(),
        ConsumerConfig::new(&s.stream, "retrier").with_ack_wait(Duration::from_secs(5)),
        handler,
        s.options(retry),
    );
    c.drain().await.unwrap();
    let flaky: Vec<u32> = attempts
        .lock()
        .unwrap()
        .iter()
        .filter(|(b, _)| b == "flaky")
        .map(|(_, d)| *d)
        .collect();
    assert_eq!(flaky, vec![1, 2, 3], "three attempts, then no more");
    assert_eq!(c.stats().snapshot(), (2, 2, 1));

    let dls = list_dead_letters(s.broker.as_ref(), &s.dlq, Some("retrier"), 0, 100)
        .await
        .unwrap();
    assert_eq!(dls.len(), 1);
    let dl = &dls[0];
    assert_eq!(dl.kind, FailureKind::RetriesExhausted);
    assert_eq!(dl.attempts, 3);
    assert!(dl.error.contains("downstream unavailable"));
    assert!(dl.first_failure <= dl.last_failure);
    assert_eq!(
        dl.headers.get("Idempotency-Key").map(String::as_str),
        Some("key-flaky")
    );

    // Fix the dependency, replay the dead letter: it flows through.
    *healthy.lock().unwrap() = true;
    let ack = replay_dead_letter(s.broker.as_ref(), &s.dlq, dl.id)
        .await
        .unwrap();
    assert!(!ack.duplicate);
    let again = replay_dead_letter(s.broker.as_ref(), &s.dlq, dl.id)
        .await
        .unwrap();
    assert!(again.duplicate, "replaying twice stores one copy");
    c.drain().await.unwrap();
    assert_eq!(c.stats().snapshot(), (3, 2, 1));
    let replayed = s
        .broker
        .read_stream(&s.stream, &s.subject(), ack.sequence, 1)
        .await
        .unwrap();
    assert_eq!(
        replayed[0].message.header(REPLAYED_FROM_HEADER),
        Some(format!("{}:{}", s.dlq.stream, dl.id).as_str())
    );
    assert!(attempts
        .lock()
        .unwrap()
        .iter()
        .any(|(b, d)| b == "flaky" && *d == 1 && *healthy.lock().unwrap()));
    s.cleanup().await;
}

async fn crashing_handler_is_dead_lettered_not_looped(broker: DynBroker) {
    let s = Setup::new(broker).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let calls2 = calls.clone();
    let handler = FnHandler(move |m: attest_bus::Message, _info| {
        let calls = calls2.clone();
        async move {
            calls
                .lock()
                .unwrap()
                .push(String::from_utf8(m.payload.to_vec()).unwrap());
            Ok::<(), HandlerError>(())
        }
    });
    let retry = RetryPolicy {
        backoff: vec![Duration::from_millis(50)],
        max_attempts: 2,
    };
    let mut c = Consumer::new(
        s.broker.clone(),
        ConsumerConfig::new(&s.stream, "crashy").with_ack_wait(Duration::from_millis(200)),
        handler,
        s.options(retry),
    );
    assert_eq!(c.config().max_deliver, 3, "max_attempts + 1");
    s.broker
        .publish(OutgoingMessage::new(s.subject(), "boom", b"boom".to_vec()))
        .await
        .unwrap();
    {
        // Two processes take the message and die before giving a verdict.
        let pull = s.broker.consumer(c.config()).await.unwrap();
        for expected in 1..=2u32 {
            let ds = pull.fetch(1, Duration::from_secs(5)).await.unwrap();
            assert_eq!(ds.len(), 1);
            assert_eq!(ds[0].info.delivered, expected);
        }
    }
    s.broker
        .publish(OutgoingMessage::new(s.subject(), "fine", b"fine".to_vec()))
        .await
        .unwrap();
    c.drain().await.unwrap();
    assert_eq!(*calls.lock().unwrap(), vec!["fine".to_string()]);
    let dls = list_dead_letters(s.broker.as_ref(), &s.dlq, Some("crashy"), 0, 10)
        .await
        .unwrap();
    assert_eq!(dls.len(), 1);
    assert_eq!(dls[0].kind, FailureKind::MaxDeliveries);
    assert_eq!(dls[0].attempts, 2);
    assert_eq!(dls[0].original_message_id.as_deref(), Some("boom"));
    assert_eq!(c.drain().await.unwrap(), 0, "nothing comes back");
    s.cleanup().await;
}

async fn nats() -> DynBroker {
    Arc::new(common::nats().await)
}

async fn embedded() -> (DynBroker, common::TempEmbedded) {
    let e = common::TempEmbedded::new().await;
    (Arc::new(e.broker.clone()), e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_poison_pill_is_dead_lettered_once() {
    poison_pill_is_dead_lettered_once(nats().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_poison_pill_is_dead_lettered_once() {
    let (b, _keep) = embedded().await;
    poison_pill_is_dead_lettered_once(b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_retryable_errors_back_off_then_dead_letter_and_replay() {
    retryable_errors_back_off_then_dead_letter_and_replay(nats().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_retryable_errors_back_off_then_dead_letter_and_replay() {
    let (b, _keep) = embedded().await;
    retryable_errors_back_off_then_dead_letter_and_replay(b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_crashing_handler_is_dead_lettered_not_looped() {
    crashing_handler_is_dead_lettered_not_looped(nats().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_crashing_handler_is_dead_lettered_not_looped() {
    let (b, _keep) = embedded().await;
    crashing_handler_is_dead_lettered_not_looped(b).await;
}
