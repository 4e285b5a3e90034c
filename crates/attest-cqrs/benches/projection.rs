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

#[path = "../tests/projections_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use attest_core::RecordedEvent;
use attest_cqrs::projection::users_by_city::UsersByCity;
use attest_cqrs::projection::{
    Projection, ProjectorOptions, SqliteProjection, SqliteProjector, Tables,
};
use attest_store::{EventStore, LogFilter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rusqlite::Connection;

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
    // Reference: the handler alone on events already in memory, default batch per transaction.
    let events: Vec<RecordedEvent> = rt
        .block_on(store.read_all(0, usize::MAX, &LogFilter::All))
        .expect("read");
    g.bench_function("handler_only_in_memory", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for i in 0..n {
                let path = dir.path().join(format!("handler-{i}.db"));
                let mut conn = Connection::open(&path).expect("open");
                conn.pragma_update(None, "journal_mode", "WAL")
                    .expect("wal");
                conn.pragma_update(None, "synchronous", "NORMAL")
                    .expect("sync");
                let mut p = UsersByCity::new();
                let tables = Tables::new(p.tables(), 1, None);
                let tx = conn.transaction().expect("tx");
                SqliteProjection::create_tables(&mut p, &tx, &tables).expect("create");
                tx.commit().expect("commit");
                let filter = p.filter();
                let t = Instant::now();
                for chunk in events.chunks(ProjectorOptions::default().batch_size) {
                    let tx = conn.transaction().expect("tx");
                    for e in chunk.iter().filter(|e| filter.matches(e)) {
                        SqliteProjection::handle(&mut p, &tx, &tables, e).expect("handle");
                    }
                    tx.commit().expect("commit");
                }
                total += t.elapsed();
                drop(conn);
                let _ = std::fs::remove_file(&path);
            }
            total
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
