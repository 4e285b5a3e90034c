//! The SQLite backend against the shared conformance suite, plus randomised interleavings.

use std::sync::Arc;

use attest_store::conformance::{concurrency_check, ConcurrencyParams};
use attest_store::sqlite::SqliteStore;
use attest_store::{EventStore, StoreOptions};
use proptest::prelude::*;

/// A fresh store in its own temporary directory; the directory lives until the process ends.
async fn fresh() -> Arc<dyn EventStore> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open_default(dir.path(), StoreOptions::default()).expect("open");
    // Keep the directory for the whole test process (the store may outlive this scope).
    std::mem::forget(dir);
    store
}

attest_store::conformance_tests!(fresh());

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_every_guarantee(
        tasks in 16usize..24,
        ops_per_task in 5usize..30,
        streams in 1usize..6,
        fail_every in 0usize..8,
        seed in any::<u64>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let store = fresh().await;
            concurrency_check(store, ConcurrencyParams { tasks, ops_per_task, streams, fail_every, seed }).await;
        });
    }
}
