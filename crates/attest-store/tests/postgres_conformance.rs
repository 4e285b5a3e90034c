//! The PostgreSQL backend against the conformance suite, plus ordering, NOTIFY, corruption and
//! snapshot checks. Needs the local server at 127.0.0.1:5432 (trust auth, user postgres).
//! Every test works in its own schema `pgt_<unix secs>_<pid>_<n>`; schemas left behind by
//! runs more than an hour old are dropped when a test starts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use attest_core::{ExpectedVersion, Metadata, NewEvent, SchemaRef, StreamId};
use attest_store::conformance::{concurrency_check, ev, ConcurrencyParams};
use attest_store::postgres::{PostgresSnapshotStore, PostgresStore};
use attest_store::{
    DeleteMode, Direction, EventStore, LogFilter, Snapshot, SnapshotStore, StoreError,
    StoreOptions, StreamAppend, StreamFrom, StreamMetadata, StreamState, Subscription,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

const URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

static CLEANUP: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn raw_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(URL, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// Drops test schemas of runs that started more than an hour ago.
async fn cleanup_old_schemas() {
    let client = raw_client().await;
    let rows = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'pgt\\_%'",
            &[],
        )
        .await
        .unwrap();
    let cutoff = unix_secs().saturating_sub(3600);
    for r in rows {
        let name: String = r.get(0);
        let secs = name.split('_').nth(1).and_then(|s| s.parse::<u64>().ok());
        if secs.is_some_and(|s| s < cutoff) {
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .await;
        }
    }
}

fn unique_schema() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "pgt_{}_{}_{}",
        unix_secs(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn fresh_in(schema: &str) -> PostgresStore {
    CLEANUP.get_or_init(cleanup_old_schemas).await;
    PostgresStore::connect(URL, schema, StoreOptions::default())
        .await
        .unwrap()
}

async fn fresh() -> PostgresStore {
    fresh_in(&unique_schema()).await
}

attest_store::conformance_tests!(async { Arc::new(fresh().await) });

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_concurrency_keeps_every_guarantee(
        tasks in 16usize..24, ops in 4usize..16, streams in 1usize..6, fail_every in 0usize..6,
        seed in any::<u64>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
        rt.block_on(async {
            let store: Arc<dyn EventStore> = Arc::new(fresh().await);
            concurrency_check(store, ConcurrencyParams { tasks, ops_per_task: ops, streams, fail_every, seed }).await;
        });
    }
}

/// Writers on several pools commit concurrently while a reader polls the whole log: every poll
/// must return exactly positions 1..=k for a k that never shrinks — a position never appears
/// below one already seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positions_become_visible_in_commit_order() {
    let schema = unique_schema();
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(fresh_in(&schema).await);
    }
    let writers: Vec<_> = (0..9u64)
        .map(|t| {
            let store = stores[t as usize % stores.len()].clone();
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                let mut events = 0u64;
                for op in 0..40u64 {
                    let parts = rng.gen_range(1..=3);
                    let mut appends = Vec::new();
                    let first = rng.gen_range(0..5u64);
                    for p in 0..parts {
                        let n = rng.gen_range(1..=4u64);
                        events += n;
                        appends.push(StreamAppend {
                            stream: sid(&format!("ord-{}", (first + p) % 5)),
                            expected: ExpectedVersion::Any,
                            events: (0..n)
                                .map(|i| ev("Tick", t * 100_000 + op * 10 + i))
                                .collect(),
                        });
                    }
                    store.append_many(appends).await.unwrap();
                }
                events
            })
        })
        .collect();
    let reader = {
        let store = stores[0].clone();
        tokio::spawn(async move {
            let mut seen = 0u64;
            let mut polls = 0u64;
            loop {
                let head_before = store.head_position().await.unwrap();
                let log = store.read_all(0, 1_000_000, &LogFilter::All).await.unwrap();
                let k = log.len() as u64;
                for (i, e) in log.iter().enumerate() {
                    assert_eq!(
                        e.position,
                        i as u64 + 1,
                        "visible log must be a gap-free prefix"
                    );
                }
                assert!(k >= seen, "visible prefix shrank from {seen} to {k}");
                assert!(
                    k >= head_before,
                    "committed head {head_before} not visible to a later read"
                );
                seen = k;
                polls += 1;
                // Stop once the writers are done (signalled by a marker stream).
                if store.stream_info(&sid("done-1")).await.unwrap().is_some() {
                    let log = store.read_all(0, 1_000_000, &LogFilter::All).await.unwrap();
                    return (log.len() as u64, polls);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut total = 0;
    for w in writers {
        total += w.await.unwrap();
    }
    stores[1]
        .append(
            sid("done-1"),
            ExpectedVersion::NoStream,
            vec![ev("Done", 0)],
        )
        .await
        .unwrap();
    let (final_seen, polls) = reader.await.unwrap();
    assert!(polls > 1);
    assert_eq!(final_seen, total + 1);
    assert_eq!(stores[2].head_position().await.unwrap(), total + 1);
}

/// A second instance (its own pool and listener) appends; the first instance learns of it
/// only through LISTEN/NOTIFY, both on its head watch and in a live subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscription_wakes_through_notify_from_another_instance() {
    let schema = unique_schema();
    let a = fresh_in(&schema).await;
    let b = fresh_in(&schema).await;
    let mut watch = a.head_watch();
    watch.borrow_and_update();
    b.append(
        sid("note-1"),
        ExpectedVersion::NoStream,
        vec![ev("Noted", 1)],
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), watch.wait_for(|h| *h >= 1))
        .await
        .expect("head watch not woken by NOTIFY")
        .unwrap();

    let a_dyn: Arc<dyn EventStore> = Arc::new(a.clone());
    let mut sub = Subscription::new(a_dyn, 1, LogFilter::All);
    assert!(sub.try_next().await.unwrap().is_none());
    let waiter = tokio::spawn(async move { sub.next().await.map(|e| (e.position, e.stream_id)) });
    b.append(
        sid("note-2"),
        ExpectedVersion::NoStream,
        vec![ev("Noted", 2)],
    )
    .await
    .unwrap();
    let (pos, stream) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("subscription not woken by NOTIFY")
        .unwrap()
        .unwrap();
    assert_eq!((pos, stream.as_str()), (2, "note-2"));
}

/// The listener connection is killed server-side; it reconnects, re-reads the head and keeps
/// delivering wake-ups.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listener_reconnects_after_its_connection_is_killed() {
    let schema = unique_schema();
    let a = fresh_in(&schema).await;
    let b = fresh_in(&schema).await;
    let admin = raw_client().await;
    let app = format!("attest-listener-{schema}");
    let count_listeners = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    // Both instances' listeners are up before we kill them.
    tokio::time::timeout(Duration::from_secs(30), async {
        while count_listeners().await < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("listeners never connected");
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 2);
    let mut watch = a.head_watch();
    watch.borrow_and_update();
    b.append(sid("late-1"), ExpectedVersion::Any, vec![ev("Late", 1)])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), watch.wait_for(|h| *h >= 1))
        .await
        .expect("no wake-up after the listener was killed")
        .unwrap();
    // And live notifications flow again over the new connection.
    tokio::time::timeout(Duration::from_secs(30), async {
        while count_listeners().await < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("listeners never reconnected");
    b.append(
        sid("late-1"),
        ExpectedVersion::Exact(0),
        vec![ev("Late", 2)],
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), watch.wait_for(|h| *h >= 2))
        .await
        .expect("no wake-up over the reconnected listener")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_payload_is_reported_on_read() {
    let store = fresh().await;
    let s = sid("doc-1");
    store
        .append(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![ev("Written", 1), ev("Written", 2)],
        )
        .await
        .unwrap();
    let admin = raw_client().await;
    let changed = admin
        .execute(
            &format!(
                "UPDATE \"{}\".events SET payload = '\\x7b7d'::bytea WHERE position = 2",
                store.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    match store
        .read_stream(&s, StreamFrom::Start, Direction::Forward, 10)
        .await
    {
        Err(StoreError::Corrupted { position, reason }) => {
            assert_eq!(position, 2);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
    assert!(matches!(
        store.read_all(0, 10, &LogFilter::All).await,
        Err(StoreError::Corrupted { position: 2, .. })
    ));
    // The intact event before it still reads.
    let first = store.read_all(0, 1, &LogFilter::All).await.unwrap();
    assert_eq!(first[0].position, 1);
    // Undecodable metadata is corruption too.
    admin
        .execute(
            &format!(
                "UPDATE \"{}\".events SET metadata = '\\x00ff'::bytea WHERE position = 1",
                store.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    assert!(matches!(
        store.read_all(0, 1, &LogFilter::All).await,
        Err(StoreError::Corrupted { position: 1, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_details_beyond_the_suite() {
    let store = fresh().await;
    let s = sid("cart-9");
    store
        .append(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![ev("A", 0), ev("A", 1)],
        )
        .await
        .unwrap();
    store
        .delete_stream(&s, ExpectedVersion::Any, DeleteMode::Soft)
        .await
        .unwrap();
    // Soft-deleted streams count as absent for expectations.
    assert!(matches!(
        store
            .append(s.clone(), ExpectedVersion::Exact(1), vec![ev("A", 2)])
            .await,
        Err(StoreError::WrongExpectedVersion { actual: None, .. })
    ));
    assert!(matches!(
        store
            .append(s.clone(), ExpectedVersion::StreamExists, vec![ev("A", 2)])
            .await,
        Err(StoreError::WrongExpectedVersion { actual: None, .. })
    ));
    let r = store
        .append(s.clone(), ExpectedVersion::Any, vec![ev("A", 2)])
        .await
        .unwrap();
    assert_eq!(r.streams[0].first_version, 2);
    // Replacing the metadata does not reveal events hidden by the soft delete.
    store
        .set_stream_metadata(&s, StreamMetadata::default())
        .await
        .unwrap();
    let visible = store
        .read_stream(&s, StreamFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(visible.iter().map(|e| e.version).collect::<Vec<_>>(), [2]);
    // Backward from the start sees nothing hidden.
    assert!(store
        .read_stream(&s, StreamFrom::Version(1), Direction::Backward, 10)
        .await
        .unwrap()
        .is_empty());
    // Deleting what never existed.
    assert!(matches!(
        store
            .delete_stream(&sid("ghost-1"), ExpectedVersion::Any, DeleteMode::Soft)
            .await,
        Err(StoreError::StreamNotFound { .. })
    ));
    assert!(store.stream_info(&sid("ghost-1")).await.unwrap().is_none());
    store
        .delete_stream(&sid("ghost-2"), ExpectedVersion::NoStream, DeleteMode::Hard)
        .await
        .unwrap();
    assert_eq!(
        store
            .stream_info(&sid("ghost-2"))
            .await
            .unwrap()
            .unwrap()
            .state,
        StreamState::Tombstoned
    );
    assert!(matches!(
        store
            .set_stream_metadata(&sid("ghost-2"), StreamMetadata::default())
            .await,
        Err(StoreError::StreamDeleted { .. })
    ));
    // A metadata-only stream has no events: reads say not found, expectations see no stream.
    let m = sid("meta-1");
    let md = StreamMetadata {
        max_count: Some(2),
        max_age: Some(Duration::new(7, 123)),
        truncate_before: Some(1),
    };
    store.set_stream_metadata(&m, md).await.unwrap();
    assert_eq!(store.stream_info(&m).await.unwrap().unwrap().metadata, md);
    assert!(matches!(
        store
            .read_stream(&m, StreamFrom::Start, Direction::Forward, 10)
            .await,
        Err(StoreError::StreamNotFound { .. })
    ));
    store
        .append(m.clone(), ExpectedVersion::NoStream, vec![ev("M", 0)])
        .await
        .unwrap();
    // The same id twice in one request is refused before anything is written.
    let dup = ev("D", 0);
    assert!(matches!(
        store
            .append(
                sid("dup-1"),
                ExpectedVersion::Any,
                vec![dup.clone(), dup.clone()]
            )
            .await,
        Err(StoreError::IdempotencyConflict { .. })
    ));
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.backend, "postgres");
    assert_eq!(stats.events, 4);
    assert_eq!(stats.streams, 3); // cart-9, ghost-2, meta-1
    assert_eq!(stats.head_position, 4);
    assert!(stats.size_bytes.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_stream_retry_returns_the_original_result() {
    let store = fresh().await;
    store
        .append(sid("pre-1"), ExpectedVersion::Any, vec![ev("P", 0)])
        .await
        .unwrap();
    let req = vec![
        StreamAppend {
            stream: sid("x-1"),
            expected: ExpectedVersion::NoStream,
            events: vec![ev("X", 1), ev("X", 2)],
        },
        StreamAppend {
            stream: sid("y-1"),
            expected: ExpectedVersion::NoStream,
            events: vec![ev("Y", 3)],
        },
    ];
    let first = store.append_many(req.clone()).await.unwrap();
    assert_eq!((first.first_position, first.last_position), (2, 4));
    assert_eq!(store.append_many(req.clone()).await.unwrap(), first);
    // Half a retry is a conflict.
    let half = vec![
        req[0].clone(),
        StreamAppend {
            stream: sid("z-1"),
            expected: ExpectedVersion::Any,
            events: vec![ev("Z", 4)],
        },
    ];
    match store.append_many(half).await {
        Err(StoreError::IdempotencyConflict {
            event_id,
            existing_stream,
        }) => {
            assert_eq!(event_id, req[0].events[0].id);
            assert_eq!(existing_stream, Some(sid("x-1")));
        }
        other => panic!("expected IdempotencyConflict, got {other:?}"),
    }
    assert_eq!(store.head_position().await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_concurrent_connects_agree() {
    let schema = unique_schema();
    let (a, b) = tokio::join!(
        PostgresStore::connect(URL, &schema, StoreOptions::default()),
        PostgresStore::connect(URL, &schema, StoreOptions::default())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    a.append(sid("m-1"), ExpectedVersion::Any, vec![ev("E", 0)])
        .await
        .unwrap();
    let c = fresh_in(&schema).await;
    assert_eq!(c.head_position().await.unwrap(), 1);
    assert_eq!(*c.head_watch().borrow(), 1);
    assert_eq!(b.read_all(0, 10, &LogFilter::All).await.unwrap().len(), 1);
    assert!(matches!(
        PostgresStore::connect(URL, "Bad-Name", StoreOptions::default()).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_round_trip_and_never_move_back() {
    let store = fresh().await;
    let snaps = store.snapshots();
    let s = sid("loan-7");
    assert!(snaps.load_snapshot(&s).await.unwrap().is_none());
    let taken_at = chrono::DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
    let v5 = Snapshot {
        stream: s.clone(),
        version: 5,
        state_version: 2,
        payload: vec![0, 1, 2, 255],
        taken_at,
    };
    snaps.save_snapshot(&v5).await.unwrap();
    assert_eq!(snaps.load_snapshot(&s).await.unwrap(), Some(v5.clone()));
    let older = Snapshot {
        version: 3,
        payload: vec![9],
        ..v5.clone()
    };
    snaps.save_snapshot(&older).await.unwrap();
    assert_eq!(snaps.load_snapshot(&s).await.unwrap(), Some(v5.clone()));
    let newer = Snapshot {
        version: 8,
        state_version: 3,
        payload: vec![],
        ..v5.clone()
    };
    snaps.save_snapshot(&newer).await.unwrap();
    // A separately constructed store on the same schema sees the same table.
    let other = PostgresSnapshotStore::new(store.pool().clone(), store.schema())
        .await
        .unwrap();
    assert_eq!(other.load_snapshot(&s).await.unwrap(), Some(newer));
    other.delete_snapshot(&s).await.unwrap();
    assert!(snaps.load_snapshot(&s).await.unwrap().is_none());
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode except NUL, which PostgreSQL text cannot hold (metadata is stored as JSON
    // bytes, so escapes like \u0001 must survive).
    "[^\u{0}]{0,12}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn envelope_round_trips_exactly(
        corr in proptest::option::of(text()), actor in proptest::option::of(text()),
        tenant in proptest::option::of(text()), extra in proptest::collection::btree_map(text(), text(), 0..4),
        schema in proptest::option::of((text(), any::<u32>())),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = fresh().await;
            let meta = Metadata { correlation_id: corr, actor, tenant, extra: extra.into_iter().collect::<BTreeMap<_, _>>(), ..Metadata::default() };
            let mut e = NewEvent::new("Anything", "application/octet-stream", payload).unwrap().with_metadata(meta);
            if let Some((id, version)) = schema {
                e = e.with_schema(SchemaRef { id, version });
            }
            store.append(sid("rt-1"), ExpectedVersion::NoStream, vec![e.clone()]).await.unwrap();
            let back = store.read_stream(&sid("rt-1"), StreamFrom::End, Direction::Backward, 1).await.unwrap();
            let got = &back[0];
            assert_eq!((&got.id, &got.event_type, &got.schema, &got.content_type, &got.payload, &got.metadata),
                       (&e.id, &e.event_type, &e.schema, &e.content_type, &e.payload, &e.metadata));
            assert_eq!(got.recorded_at.timestamp_subsec_nanos() % 1000, 0, "microsecond precision");
            let admin = raw_client().await;
            admin.batch_execute(&format!("DROP SCHEMA \"{}\" CASCADE", store.schema())).await.unwrap();
        });
    }
}

/// Concurrent appends of one instance are folded into shared transactions; inside a group a
/// failing append neither fails the others nor leaves a stream record behind, and two copies
/// of one request in flight at once commit once and both get the original result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_isolates_requests() {
    let store = fresh().await;
    store
        .append(sid("base-1"), ExpectedVersion::NoStream, vec![ev("B", 0)])
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..60u64 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            if i % 2 == 0 {
                store
                    .append(
                        sid(&format!("good-{i}")),
                        ExpectedVersion::NoStream,
                        vec![ev("G", i)],
                    )
                    .await
                    .map(|_| ())
            } else {
                let r = store
                    .append_many(vec![
                        StreamAppend {
                            stream: sid(&format!("bad-{i}")),
                            expected: ExpectedVersion::NoStream,
                            events: vec![ev("X", i)],
                        },
                        StreamAppend {
                            stream: sid("base-1"),
                            expected: ExpectedVersion::Exact(999),
                            events: vec![ev("X", i)],
                        },
                    ])
                    .await;
                assert!(
                    matches!(
                        r,
                        Err(StoreError::WrongExpectedVersion {
                            actual: Some(0),
                            ..
                        })
                    ),
                    "{r:?}"
                );
                Ok(())
            }
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    for i in (1..60u64).step_by(2) {
        assert!(
            store
                .stream_info(&sid(&format!("bad-{i}")))
                .await
                .unwrap()
                .is_none(),
            "bad-{i} left behind"
        );
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.events, stats.streams, stats.head_position),
        (31, 31, 31)
    );

    // The same request twice at once (a client retrying before the first answer arrived).
    let req = vec![StreamAppend {
        stream: sid("twice-1"),
        expected: ExpectedVersion::NoStream,
        events: vec![ev("T", 1), ev("T", 2)],
    }];
    let mut copies = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let req = req.clone();
        copies.push(tokio::spawn(async move {
            store.append_many(req).await.unwrap()
        }));
    }
    let mut results = Vec::new();
    for c in copies {
        results.push(c.await.unwrap());
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    assert_eq!(
        (results[0].first_position, results[0].last_position),
        (32, 33)
    );
    assert_eq!(store.head_position().await.unwrap(), 33);
}
