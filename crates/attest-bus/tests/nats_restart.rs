//! Fault test: a NATS server restarted (SIGKILL, same store directory) in the middle of a
//! publish-and-consume run loses nothing and stores nothing twice.
//!
//! Uses its OWN nats-server (`nats-server -js -sd <tempdir>` on a free port), never the shared
//! one on 4222; the child process is killed by its id when the test ends.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attest_bus::consumer::{Consumer, ConsumerOptions, FnHandler, HandlerError, RetryPolicy};
use attest_bus::dlq::DeadLetterConfig;
use attest_bus::nats::NatsBroker;
use attest_bus::{ConsumerConfig, DynBroker, OutgoingMessage, StreamConfig};
use common::own_nats::OwnNats;

async fn retry<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = attest_bus::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "still failing after 60 s: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_mid_run_loses_nothing_and_stores_nothing_twice() {
    const N: u64 = 200;
    let mut server = OwnNats::start();
    let url = server.url();
    let broker: DynBroker = Arc::new(retry(|| NatsBroker::connect(&url)).await);
    let stream = StreamConfig::new("RESTART", vec!["restart.>".into()]);
    retry(|| broker.ensure_stream(&stream)).await;

    let seen: Arc<Mutex<(HashSet<String>, u64)>> = Arc::default();
    let seen2 = seen.clone();
    let handler = FnHandler(move |m: attest_bus::Message, _info| {
        let seen = seen2.clone();
        async move {
            let mut s = seen.lock().unwrap();
            s.0.insert(m.message_id.unwrap_or_default());
            s.1 += 1;
            Ok::<(), HandlerError>(())
        }
    });
    let consumer = Consumer::new(
        broker.clone(),
        ConsumerConfig::new("RESTART", "survivor").with_ack_wait(Duration::from_secs(2)),
        handler,
        ConsumerOptions {
            batch: 32,
            fetch_wait: Duration::from_millis(500),
            retry: RetryPolicy::default(),
            dead_letters: DeadLetterConfig::new("RESTART_DLQ", "restartdlq"),
            lag_every: Duration::from_secs(60),
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn(consumer.run(async {
        let _ = stop_rx.await;
    }));

    for i in 0..N {
        let m = OutgoingMessage::new(
            format!("restart.k{}", i % 7),
            format!("m-{i}"),
            i.to_string().into_bytes(),
        );
        // A publish that fails during the outage is retried with the same message id.
        retry(|| broker.publish(m.clone())).await;
        if i == N / 2 {
            server.restart();
        }
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().0.len() < N as usize {
        assert!(Instant::now() < deadline, "consumer did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    runner.await.unwrap().unwrap();

    let stored = retry(|| broker.read_stream("RESTART", "restart.>", 0, 10_000)).await;
    assert_eq!(
        stored.len(),
        N as usize,
        "every message stored exactly once"
    );
    let ids: HashSet<_> = stored
        .iter()
        .filter_map(|m| m.message.message_id.clone())
        .collect();
    assert_eq!(ids.len(), N as usize);
    let (distinct, deliveries) = {
        let s = seen.lock().unwrap();
        (s.0.len(), s.1)
    };
    assert_eq!(distinct, N as usize, "no message lost");
    assert!(deliveries >= N, "at least once");
}
