//! Broker benchmarks (NATS JetStream at 127.0.0.1:4222 and the embedded broker over SQLite).
//!
//! - `publish/nats_batched_1000`: 1000 publishes with all acks in flight (`publish_batch`);
//! - `publish/nats_sequential_1000` (baseline): 1000 publishes, each waiting for its ack;
//! - `publish/embedded_batched_1000`: the same batch on the embedded broker (SQLite group
//!   commit, `durable: false`).
//!
//! - `read_stream/nats_paged_10000`: reading 10,000 stored messages with
//!   `Broker::read_stream` in pages of 1,000 (an ephemeral read cursor);
//! - `read_stream/nats_by_get_10000` (baseline): the same with one direct get per message.
//!
//! Before criterion runs, a paced run measures commit-to-consumer latency at ~1,000 msg/s for
//! both brokers (publisher ack → consumer fetch; the consumer acks every message) and prints
//! p50/p99/max. `BUS_LATENCY_SECS` sets its length (default 3).
//!
//! `cargo bench -p attest-bus --bench bus -- --warm-up-time 1 --measurement-time 3 --sample-size 10`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attest_bus::embedded::EmbeddedBroker;
use attest_bus::nats::NatsBroker;
use attest_bus::{ConsumerConfig, DynBroker, OutgoingMessage, StreamConfig};
use attest_store::sqlite::SqliteStore;
use attest_store::StoreOptions;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BATCH: usize = 1000;

fn suffix() -> String {
    uuid_like()
}

fn uuid_like() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}", n & 0xffff_ffff_ffff)
}

fn batch(subject: &str, tag: &str, round: u64) -> Vec<OutgoingMessage> {
    (0..BATCH)
        .map(|i| OutgoingMessage::new(subject, format!("{tag}-{round}-{i}"), vec![b'x'; 128]))
        .collect()
}

async fn embedded(dir: &std::path::Path, durable: bool, separate_state: bool) -> EmbeddedBroker {
    let path = dir.join("attest.db");
    let state = if separate_state {
        dir.join("bus-state.db")
    } else {
        path.clone()
    };
    let store = SqliteStore::open(
        &path,
        StoreOptions {
            durable,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    EmbeddedBroker::open(store, &state).await.unwrap()
}

/// Publishes ~`rate` msg/s for `secs` and returns commit→consume latencies in microseconds.
async fn paced_latency(
    broker: DynBroker,
    name: &str,
    rate: u64,
    secs: u64,
) -> (Vec<f64>, Vec<f64>) {
    let stream = format!("LAT_{name}_{}", suffix());
    let subject = format!("lat.{name}.{}", suffix());
    broker
        .ensure_stream(&StreamConfig::new(&stream, vec![subject.clone()]))
        .await
        .unwrap();
    let commits: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let sends: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let received: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let total = rate * secs;
    let pull = broker
        .consumer(&ConsumerConfig::new(&stream, "lat"))
        .await
        .unwrap();
    let rx = received.clone();
    let consumer = tokio::spawn(async move {
        let mut got = 0u64;
        while got < total {
            let ds = pull.fetch(256, Duration::from_millis(200)).await.unwrap();
            let now = Instant::now();
            for d in &ds {
                let n: u64 = std::str::from_utf8(&d.message.payload)
                    .unwrap()
                    .parse()
                    .unwrap();
                rx.lock().unwrap().insert(n, now);
            }
            for d in &ds {
                d.ack().await.unwrap();
            }
            got += ds.len() as u64;
        }
    });
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for n in 0..total {
        tick.tick().await;
        let b = broker.clone();
        let c = commits.clone();
        sends.lock().unwrap().insert(n, Instant::now());
        let subject = subject.clone();
        // Publishes overlap like independent producers; each records its own commit time.
        tokio::spawn(async move {
            b.publish(OutgoingMessage::new(
                subject,
                format!("l-{n}"),
                n.to_string().into_bytes(),
            ))
            .await
            .unwrap();
            c.lock().unwrap().insert(n, Instant::now());
        });
    }
    tokio::time::timeout(Duration::from_secs(60), consumer)
        .await
        .expect("consumer finished")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker.delete_stream(&stream).await.unwrap();
    let received = received.lock().unwrap();
    let between = |from: &HashMap<u64, Instant>| {
        let mut lat: Vec<f64> = from
            .iter()
            .filter_map(|(n, c)| {
                received
                    .get(n)
                    .map(|r| r.saturating_duration_since(*c).as_secs_f64() * 1e6)
            })
            .collect();
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        lat
    };
    let commit = between(&commits.lock().unwrap());
    let e2e = between(&sends.lock().unwrap());
    (commit, e2e)
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn report(name: &str, (commit, e2e): &(Vec<f64>, Vec<f64>)) {
    for (what, lat) in [("commit->consumer", commit), ("publish->consumer", e2e)] {
        println!(
            "latency {name} {what}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
            lat.len(),
            pct(lat, 0.50) / 1000.0,
            pct(lat, 0.99) / 1000.0,
            lat.last().copied().unwrap_or(f64::NAN) / 1000.0
        );
    }
}

fn latency(rt: &tokio::runtime::Runtime) {
    let secs: u64 = std::env::var("BUS_LATENCY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    rt.block_on(async {
        let nats: DynBroker = Arc::new(NatsBroker::connect("nats://127.0.0.1:4222").await.unwrap());
        let lat = paced_latency(nats, "nats", 1000, secs).await;
        report("nats (1000 msg/s)", &lat);
        for (durable, separate) in [(false, false), (false, true), (true, false), (true, true)] {
            let dir = tempfile::tempdir().unwrap();
            let emb: DynBroker = Arc::new(embedded(dir.path(), durable, separate).await);
            let lat = paced_latency(emb, "emb", 1000, secs).await;
            let state = if separate {
                "separate state file"
            } else {
                "state in store file"
            };
            report(
                &format!("embedded durable={durable}, {state} (1000 msg/s)"),
                &lat,
            );
        }
    });
}

fn publish(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    latency(&rt);

    let nats: DynBroker = rt
        .block_on(async { Arc::new(NatsBroker::connect("nats://127.0.0.1:4222").await.unwrap()) });
    let stream = format!("BENCH_PUB_{}", suffix());
    let subject = format!("benchpub.{}", suffix());
    rt.block_on(nats.ensure_stream(&StreamConfig::new(&stream, vec![subject.clone()])))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let emb: DynBroker = rt.block_on(async { Arc::new(embedded(dir.path(), false, true).await) });
    rt.block_on(emb.ensure_stream(&StreamConfig::new("BENCH", vec!["bench.>".into()])))
        .unwrap();

    let mut g = c.benchmark_group("publish");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut round = 0u64;
    g.bench_function("nats_batched_1000", |b| {
        b.to_async(&rt).iter(|| {
            round += 1;
            let msgs = batch(&subject, "b", round);
            let nats = nats.clone();
            async move { nats.publish_batch(msgs).await.unwrap() }
        })
    });
    g.bench_function("nats_sequential_1000", |b| {
        b.to_async(&rt).iter(|| {
            round += 1;
            let msgs = batch(&subject, "s", round);
            let nats = nats.clone();
            async move {
                for m in msgs {
                    nats.publish(m).await.unwrap();
                }
            }
        })
    });
    g.bench_function("embedded_batched_1000", |b| {
        b.to_async(&rt).iter(|| {
            round += 1;
            let msgs = batch("bench.x", "e", round);
            let emb = emb.clone();
            async move { emb.publish_batch(msgs).await.unwrap() }
        })
    });
    g.finish();
    rt.block_on(nats.delete_stream(&stream)).unwrap();
}

/// Reading a stream back: paged cursor vs one request per message, same messages, same run.
fn read(c: &mut Criterion) {
    const STORED: usize = 10_000;
    const PAGE: usize = 1_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let nats = rt.block_on(async { NatsBroker::connect("nats://127.0.0.1:4222").await.unwrap() });
    let stream = format!("BENCH_READ_{}", suffix());
    let subject = format!("benchread.{}", suffix());
    rt.block_on(async {
        use attest_bus::Broker;
        nats.ensure_stream(&StreamConfig::new(&stream, vec![subject.clone()]))
            .await
            .unwrap();
        for round in 0..(STORED / BATCH) as u64 {
            nats.publish_batch(batch(&subject, "r", round))
                .await
                .unwrap();
        }
    });
    let mut g = c.benchmark_group("read_stream");
    g.throughput(Throughput::Elements(STORED as u64));
    // Reads everything in pages, with the cursor or by direct get; returns the count.
    let drain = |by_get: bool| {
        let (nats, stream, subject) = (&nats, &stream, &subject);
        async move {
            use attest_bus::Broker;
            let (mut from, mut n) = (1u64, 0usize);
            loop {
                let page = if by_get {
                    nats.read_stream_by_get(stream, subject, from, PAGE).await
                } else {
                    nats.read_stream(stream, subject, from, PAGE).await
                };
                let page = page.unwrap();
                let Some(last) = page.last() else { break };
                from = last.sequence + 1;
                n += page.len();
            }
            assert_eq!(n, STORED);
        }
    };
    g.bench_function("nats_paged_10000", |b| {
        b.to_async(&rt).iter(|| drain(false))
    });
    g.bench_function("nats_by_get_10000", |b| {
        b.to_async(&rt).iter(|| drain(true))
    });
    g.finish();
    rt.block_on(async {
        use attest_bus::Broker;
        nats.delete_stream(&stream).await.unwrap();
    });
}

criterion_group!(benches, publish, read);
criterion_main!(benches);
