//! Outbox relay throughput: messages from a SQLite outbox table to NATS JetStream (the local
//! server on 4222), publish acknowledged and rows deleted.
//!
//! - `batched_1000`: the relay as shipped (1000 publishes in flight per batch, one delete per
//!   batch);
//! - `one_by_one_baseline`: batch size 1 (publish, wait for the ack, delete, repeat).
//!
//! `cargo bench -p attest-bus --bench relay -- --warm-up-time 1 --measurement-time 3`

use std::sync::Arc;
use std::time::{Duration, Instant};

use attest_bus::nats::NatsBroker;
use attest_bus::relay::{OutboxRelay, RelayOptions, SqliteOutbox};
use attest_bus::{Broker, DynBroker, StreamConfig};
use attest_store::outbox::{self, OutboxMessage};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rusqlite::Connection;

const MESSAGES: usize = 20_000;
const BASELINE_MESSAGES: usize = 2_000;
const STREAM: &str = "BENCH_OUTBOX_RELAY";
const SUBJECT: &str = "bench_outbox_relay";

fn fill(path: &std::path::Path, n: usize) {
    let mut conn = Connection::open(path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("sync");
    outbox::sqlite::ensure_schema(&conn).expect("schema");
    let tx = conn.transaction().expect("tx");
    let payload = vec![b'x'; 200];
    for i in 0..n {
        let key = format!("k{}", i % 64);
        let m = OutboxMessage::new(key.clone(), format!("{SUBJECT}.{key}"), payload.clone())
            .with_header("n", i.to_string());
        outbox::sqlite::enqueue(&tx, &m).expect("enqueue");
    }
    tx.commit().expect("commit");
}

fn relay(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let broker: DynBroker = rt.block_on(async {
        let b = NatsBroker::connect("nats://127.0.0.1:4222")
            .await
            .expect("nats on 4222");
        let _ = b.delete_stream(STREAM).await;
        b.ensure_stream(&StreamConfig::new(STREAM, vec![format!("{SUBJECT}.>")]))
            .await
            .expect("stream");
        Arc::new(b)
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = 0u64;
    let mut measure = |n: usize, batch_size: usize, iters: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            run += 1;
            let path = dir.path().join(format!("outbox-{run}.db"));
            fill(&path, n);
            let r = rt.block_on(async {
                OutboxRelay::new(
                    SqliteOutbox::open(&path).await.expect("outbox"),
                    broker.clone(),
                    RelayOptions {
                        batch_size,
                        ..Default::default()
                    },
                )
            });
            let t = Instant::now();
            let sent = rt.block_on(r.drain()).expect("drain");
            total += t.elapsed();
            assert_eq!(sent, n);
            drop(r);
            let _ = std::fs::remove_file(&path);
        }
        total
    };
    let mut g = c.benchmark_group("outbox_relay_sqlite_to_nats");
    g.sample_size(10);
    g.throughput(Throughput::Elements(MESSAGES as u64));
    g.bench_function("batched_1000", |b| {
        b.iter_custom(|iters| measure(MESSAGES, 1000, iters))
    });
    g.throughput(Throughput::Elements(BASELINE_MESSAGES as u64));
    g.bench_function("one_by_one_baseline_2k", |b| {
        b.iter_custom(|iters| measure(BASELINE_MESSAGES, 1, iters))
    });
    g.finish();
    rt.block_on(broker.delete_stream(STREAM)).expect("cleanup");
}

criterion_group!(benches, relay);
criterion_main!(benches);
