//! Projection catch-up into a SQLite read model: 100,000 user events from a SQLite event store
//! into `users_by_city`, from position 0 into a fresh read-model file per iteration.
//!
//! - `batched`: the projector as shipped (2048 events per read-model transaction, prepared
//!   statements, reads overlapped with applies);
//! - `one_event_per_tx` (baseline): the same projector with one event per transaction, the
//!   naive design;
//! - `read_log_only` (reference): just paging the log out of the store, no projection.
//!
//! `cargo bench -p attest-cqrs --bench projection -- --warm-up-time 1 --measurement-time 3`

#[path = "../tests/projections_support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use attest_cqrs::projection::users_by_city::UsersByCity;
use attest_cqrs::projection::{ProjectorOptions, SqliteProjector};
use attest_store::{EventStore, LogFilter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const EVENTS: usize = 100_000;
const BASELINE_EVENTS: usize = 10_000;

fn catch_up(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = |name: &str, n: usize| -> Arc<dyn EventStore> {
        let store = support::open_store(&dir.path().join(name));
        rt.block_on(support::append_all(
            &store,
            &support::workload(7, n, "u"),
            1000,
        ));
        store
    };
    let store = seed("events.db", EVENTS);
    let small = seed("small.db", BASELINE_EVENTS);
    let head = rt.block_on(store.head_position()).expect("head");
    let small_head = rt.block_on(small.head_position()).expect("head");
    let mut run = 0u64;
    let mut measure = |store: &Arc<dyn EventStore>, opts: &ProjectorOptions, iters: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            run += 1;
            let path = dir.path().join(format!("read-{run}.db"));
            let p = rt
                .block_on(SqliteProjector::open(
                    &path,
                    store.clone(),
                    UsersByCity::new(),
                    opts.clone(),
                ))
                .expect("open");
            let t = Instant::now();
            rt.block_on(p.catch_up()).expect("catch up");
            total += t.elapsed();
            drop(p);
            let _ = std::fs::remove_file(&path);
        }
        total
    };
    let batched = ProjectorOptions {
        durable: false,
        ..Default::default()
    };
    let naive = ProjectorOptions {
        batch_size: 1,
        durable: false,
        ..Default::default()
    };

    let mut g = c.benchmark_group("projection_catch_up_sqlite");
    g.sample_size(10);
    g.throughput(Throughput::Elements(head));
    g.bench_function("batched", |b| {
        b.iter_custom(|n| measure(&store, &batched, n))
    });
    g.bench_function("read_log_only", |b| {
        b.iter_custom(|n| {
            let t = Instant::now();
            for _ in 0..n {
                rt.block_on(async {
                    let mut after = 0;
                    loop {
                        let page = store
                            .read_all(after, 2048, &LogFilter::All)
                            .await
                            .expect("read");
                        match page.last() {
                            Some(e) => after = e.position,
                            None => break,
                        }
                    }
                });
            }
            t.elapsed()
        })
    });
    g.throughput(Throughput::Elements(small_head));
    g.bench_function("one_event_per_tx_baseline_10k", |b| {
        b.iter_custom(|n| measure(&small, &naive, n))
    });
    g.finish();
}

criterion_group!(benches, catch_up);
criterion_main!(benches);
