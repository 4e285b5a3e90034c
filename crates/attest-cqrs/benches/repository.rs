//! Loading an aggregate whose stream holds 50,000 events: from a snapshot, and by full replay.
//!
//! `cargo bench -p attest-cqrs --bench repository`

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use attest_core::Metadata;
use attest_cqrs::Repository;
use attest_store::sqlite::{SqliteSnapshotStore, SqliteStore};
use attest_store::StoreOptions;
use common::{Ledger, LedgerCommand};
use criterion::{criterion_group, criterion_main, Criterion};

fn load_50k(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.db");
    let store = SqliteStore::open(&path, StoreOptions::default()).expect("open");
    let snaps = Arc::new(SqliteSnapshotStore::open(&path).expect("snapshots"));
    let repo = Repository::<Ledger>::new(store).with_snapshots(snaps);
    rt.block_on(async {
        for b in 0..50 {
            let amounts: Vec<i64> = (0..1000).map(|i| (b * 1000 + i) % 97 + 1).collect();
            repo.execute(
                "bench",
                LedgerCommand::DepositMany(amounts),
                Metadata::default(),
            )
            .await
            .expect("seed");
        }
    });
    let mut g = c.benchmark_group("aggregate_load_50k_events");
    g.sample_size(20);
    g.bench_function("from_snapshot", |b| {
        b.to_async(&rt).iter(|| async {
            let l = repo.load("bench").await.expect("load");
            assert_eq!(l.from_snapshot, Some(49_999));
            l
        })
    });
    g.bench_function("full_replay", |b| {
        b.to_async(&rt).iter(|| async {
            let l = repo.load_without_snapshot("bench").await.expect("load");
            assert_eq!(l.state.entries, 50_000);
            l
        })
    });
    g.finish();
}

criterion_group!(benches, load_50k);
criterion_main!(benches);
