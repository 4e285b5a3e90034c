//! Repository behaviour on the real SQLite store (and Redis for snapshots).

mod common;

use std::sync::Arc;

use attest_core::{ExpectedVersion, Metadata, NewEvent};
use attest_cqrs::{RepoError, Repository};
use attest_store::sqlite::{SqliteSnapshotStore, SqliteStore};
use attest_store::{EventStore, SnapshotStore, StoreOptions};
use common::{Ledger, LedgerCommand, LedgerError, LedgerEvent, LedgerV2};
use proptest::prelude::*;

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<dyn EventStore>,
    snaps: Arc<dyn SnapshotStore>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    // Tests need no fsync; durability has its own crash tests in attest-store.
    let opts = StoreOptions {
        durable: false,
        ..Default::default()
    };
    let store = SqliteStore::open(&path, opts).unwrap();
    let snaps = Arc::new(SqliteSnapshotStore::open(&path).unwrap());
    Env {
        _dir: dir,
        store,
        snaps,
    }
}

#[tokio::test]
async fn commands_decide_on_current_state() {
    let e = env();
    let repo = Repository::<Ledger>::new(e.store.clone());
    let out = repo
        .execute("1", LedgerCommand::Deposit(50), Metadata::default())
        .await
        .unwrap();
    assert_eq!(out.state.balance, 50);
    assert_eq!(out.append.as_ref().unwrap().streams[0].last_version, 0);
    match repo
        .execute("1", LedgerCommand::Withdraw(80), Metadata::default())
        .await
    {
        Err(RepoError::Rejected(LedgerError::InsufficientFunds {
            balance: 50,
            asked: 80,
        })) => {}
        other => panic!("expected a business rejection, got {other:?}"),
    }
    repo.execute("1", LedgerCommand::Withdraw(20), Metadata::default())
        .await
        .unwrap();
    let loaded = repo.load("1").await.unwrap();
    assert_eq!(loaded.state.balance, 30);
    assert_eq!(loaded.version, Some(1));
    let empty = repo.load("nobody").await.unwrap();
    assert_eq!(empty.version, None);
    assert_eq!(empty.state, Ledger::default());
    // The stored events are intent-named and carry the caller's metadata.
    let meta = Metadata {
        correlation_id: Some("req-7".into()),
        ..Default::default()
    };
    repo.execute("1", LedgerCommand::Close, meta).await.unwrap();
    let recs = e
        .store
        .read_stream(
            &Repository::<Ledger>::stream_id("1").unwrap(),
            attest_store::StreamFrom::Start,
            attest_store::Direction::Forward,
            10,
        )
        .await
        .unwrap();
    let types: Vec<&str> = recs.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(types, ["FundsDeposited", "FundsWithdrawn", "LedgerClosed"]);
    assert_eq!(recs[2].metadata.correlation_id.as_deref(), Some("req-7"));
    assert!(matches!(
        repo.execute("1", LedgerCommand::Deposit(1), Metadata::default())
            .await,
        Err(RepoError::Rejected(LedgerError::Closed))
    ));
    assert!(matches!(
        repo.load("bad id").await,
        Err(RepoError::InvalidId(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_retry_on_conflict_and_lose_nothing() {
    let e = env();
    let repo = Repository::<Ledger>::new(e.store.clone()).max_attempts(1000);
    let mut tasks = Vec::new();
    for t in 0..16 {
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            let mut retries = 0;
            for i in 0..20 {
                let out = repo
                    .execute(
                        "shared",
                        LedgerCommand::Deposit(t * 100 + i + 1),
                        Metadata::default(),
                    )
                    .await
                    .unwrap();
                retries += out.attempts - 1;
            }
            retries
        }));
    }
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap();
    }
    let loaded = repo.load("shared").await.unwrap();
    let want: i64 = (0..16)
        .flat_map(|t| (0..20).map(move |i| t * 100 + i + 1))
        .sum();
    assert_eq!(loaded.state.balance, want);
    assert_eq!(loaded.state.entries, 320);
    assert_eq!(loaded.version, Some(319));
    // With 16 writers on one stream, conflicts must have happened and been retried.
    assert!(retries > 0, "expected some conflicts to be retried");
}

#[tokio::test]
async fn conflict_is_reported_when_retries_run_out() {
    let e = env();
    let repo = Repository::<Ledger>::new(e.store.clone());
    repo.execute("9", LedgerCommand::Deposit(5), Metadata::default())
        .await
        .unwrap();
    // A save with a stale expectation is a typed conflict carrying the actual version.
    let stale = repo
        .save(
            "9",
            None,
            &[LedgerEvent::Deposited { amount: 1 }],
            &Metadata::default(),
        )
        .await;
    match stale {
        Err(RepoError::Store(attest_store::StoreError::WrongExpectedVersion {
            actual, ..
        })) => {
            assert_eq!(actual, Some(0))
        }
        other => panic!("expected conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn snapshot_plus_tail_equals_full_replay_on_50k_events() {
    let e = env();
    let repo = Repository::<Ledger>::new(e.store.clone()).with_snapshots(e.snaps.clone());
    // 50,000 events in commands of 1,000 events, then a tail of 37 single events.
    for c in 0..50 {
        let amounts: Vec<i64> = (0..1000).map(|i| (c * 1000 + i) % 97 + 1).collect();
        repo.execute(
            "big",
            LedgerCommand::DepositMany(amounts),
            Metadata::default(),
        )
        .await
        .unwrap();
    }
    for i in 0..37 {
        repo.execute("big", LedgerCommand::Withdraw(i + 1), Metadata::default())
            .await
            .unwrap();
    }
    let with = repo.load("big").await.unwrap();
    let without = repo.load_without_snapshot("big").await.unwrap();
    assert_eq!(with.state, without.state);
    assert_eq!(with.version, Some(50_036));
    assert_eq!(with.version, without.version);
    // The snapshot was taken at the last crossing of a multiple of 100 events.
    assert_eq!(with.from_snapshot, Some(49_999));
    assert_eq!(without.state.entries, 50_037);
}

#[tokio::test]
async fn a_changed_state_shape_never_loads_an_old_snapshot() {
    let e = env();
    let repo = Repository::<Ledger>::new(e.store.clone())
        .with_snapshots(e.snaps.clone())
        .snapshot_every(10);
    for i in 0..25 {
        repo.execute("s", LedgerCommand::Deposit(i + 1), Metadata::default())
            .await
            .unwrap();
    }
    assert_eq!(repo.load("s").await.unwrap().from_snapshot, Some(19));
    let v2 = Repository::<LedgerV2>::new(e.store.clone()).with_snapshots(e.snaps.clone());
    let loaded = v2.load("s").await.unwrap();
    assert_eq!(
        loaded.from_snapshot, None,
        "snapshot of state version 1 must be ignored"
    );
    assert_eq!(loaded.state.balance, (1..=25).sum::<i64>() * 100);
}

#[tokio::test]
async fn an_undecodable_event_is_a_typed_error_naming_it() {
    let e = env();
    let repo = Repository::<Ledger>::new(e.store.clone());
    repo.execute("x", LedgerCommand::Deposit(1), Metadata::default())
        .await
        .unwrap();
    let alien = NewEvent::json(
        "FundsDeposited",
        &serde_json::json!({"type": "Deposited", "amount": "lots"}),
    )
    .unwrap();
    e.store
        .append(
            Repository::<Ledger>::stream_id("x").unwrap(),
            ExpectedVersion::Exact(0),
            vec![alien],
        )
        .await
        .unwrap();
    match repo.load("x").await {
        Err(RepoError::Decode {
            version,
            event_type,
            ..
        }) => {
            assert_eq!(version, 1);
            assert_eq!(event_type, "FundsDeposited");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test]
async fn redis_snapshot_store_gives_the_same_state() {
    let e = env();
    let prefix = format!("attest-test-{}", uuid_like());
    let redis = Arc::new(
        attest_store::redis_snapshots::RedisSnapshotStore::connect(
            "redis://127.0.0.1:6379",
            prefix,
        )
        .await
        .expect("Redis must be running on 127.0.0.1:6379 (.ci/run starts it)"),
    );
    let repo = Repository::<Ledger>::new(e.store.clone())
        .with_snapshots(redis.clone())
        .snapshot_every(50);
    for i in 0..7 {
        let amounts: Vec<i64> = (0..33).map(|j| i * 33 + j + 1).collect();
        repo.execute(
            "r",
            LedgerCommand::DepositMany(amounts),
            Metadata::default(),
        )
        .await
        .unwrap();
    }
    let with = repo.load("r").await.unwrap();
    assert_eq!(with.from_snapshot, Some(230));
    assert_eq!(
        with.state,
        repo.load_without_snapshot("r").await.unwrap().state
    );
    // An older snapshot never replaces a newer one.
    let stream = Repository::<Ledger>::stream_id("r").unwrap();
    let mut old = redis.load_snapshot(&stream).await.unwrap().unwrap();
    old.version = 10;
    old.payload = b"{}".to_vec();
    redis.save_snapshot(&old).await.unwrap();
    assert_eq!(
        redis.load_snapshot(&stream).await.unwrap().unwrap().version,
        230
    );
    redis.delete_snapshot(&stream).await.unwrap();
    assert!(redis.load_snapshot(&stream).await.unwrap().is_none());
}

fn uuid_like() -> String {
    format!("{}", attest_core::EventId::new())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// For any command history and snapshot interval: snapshot + tail replay == full replay.
    #[test]
    fn snapshot_and_tail_replay_equals_full_replay(
        batches in proptest::collection::vec(proptest::collection::vec(1i64..1000, 1..40), 1..30),
        withdrawals in proptest::collection::vec(1i64..500, 0..20),
        every in 1u64..60,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let e = env();
            let repo = Repository::<Ledger>::new(e.store.clone())
                .with_snapshots(e.snaps.clone())
                .snapshot_every(every);
            let mut w = withdrawals.iter();
            for b in batches {
                repo.execute("p", LedgerCommand::DepositMany(b), Metadata::default()).await.unwrap();
                if let Some(&a) = w.next() {
                    // May be rejected for insufficient funds; either way nothing is corrupted.
                    let _ = repo.execute("p", LedgerCommand::Withdraw(a), Metadata::default()).await;
                }
            }
            let with = repo.load("p").await.unwrap();
            let without = repo.load_without_snapshot("p").await.unwrap();
            prop_assert_eq!(&with.state, &without.state);
            prop_assert_eq!(with.version, without.version);
            if without.version.unwrap() + 1 >= every {
                prop_assert!(with.from_snapshot.is_some());
            }
            Ok(())
        })?;
    }
}
