//! SQLite-specific behaviour beyond the conformance suite: size limits, id validation,
//! corruption detection, persistence, schema versioning, shutdown, snapshots.

use std::sync::Arc;

use attest_core::{EventId, ExpectedVersion, Metadata, NewEvent, StreamId};
use attest_store::sqlite::{SqliteSetupError, SqliteSnapshotStore, SqliteStore};
use attest_store::{
    DeleteMode, Direction, EventStore, LogFilter, Snapshot, SnapshotStore, StoreError,
    StoreOptions, StreamAppend, StreamFrom, StreamMetadata, StreamState,
};
use proptest::prelude::*;

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

fn ev(n: u64) -> NewEvent {
    NewEvent::json("Happened", &serde_json::json!({ "n": n })).unwrap()
}

fn open(dir: &tempfile::TempDir, options: StoreOptions) -> Arc<SqliteStore> {
    SqliteStore::open_default(dir.path(), options).unwrap()
}

fn raw(dir: &tempfile::TempDir) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.path().join("events.db")).unwrap()
}

#[tokio::test]
async fn default_limit_is_one_mebibyte_and_counts_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    assert_eq!(store.options().max_event_size, 1024 * 1024);
    let s = sid("blob-1");
    let over = NewEvent::new(
        "Blob",
        "application/octet-stream",
        vec![0u8; 1024 * 1024 + 1],
    )
    .unwrap();
    assert!(matches!(
        store
            .append(s.clone(), ExpectedVersion::Any, vec![over])
            .await,
        Err(StoreError::EventTooLarge {
            size: 1_048_577,
            limit: 1_048_576,
            ..
        })
    ));
    // Payload under the limit, but payload + metadata over it.
    let meta = Metadata {
        actor: Some("x".repeat(11)),
        ..Default::default()
    };
    let with_meta = NewEvent::new(
        "Blob",
        "application/octet-stream",
        vec![0u8; 1024 * 1024 - 10],
    )
    .unwrap()
    .with_metadata(meta);
    assert!(matches!(
        store
            .append(s.clone(), ExpectedVersion::Any, vec![with_meta])
            .await,
        Err(StoreError::EventTooLarge {
            size: 1_048_577,
            ..
        })
    ));
    assert_eq!(store.head_position().await.unwrap(), 0);
    assert!(
        store.stream_info(&s).await.unwrap().is_none(),
        "a rejected append leaves nothing"
    );
    let exact = NewEvent::new("Blob", "application/octet-stream", vec![9u8; 1024 * 1024]).unwrap();
    store
        .append(s.clone(), ExpectedVersion::NoStream, vec![exact.clone()])
        .await
        .unwrap();
    let back = store
        .read_stream(&s, StreamFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(back[0].payload, exact.payload);
}

#[tokio::test]
async fn configurable_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        StoreOptions {
            max_event_size: 1000,
            ..Default::default()
        },
    );
    let s = sid("small-1");
    let big = NewEvent::new("B", "application/octet-stream", vec![1u8; 1001]).unwrap();
    let big_id = big.id;
    match store
        .append(s.clone(), ExpectedVersion::Any, vec![ev(0), big])
        .await
    {
        Err(StoreError::EventTooLarge {
            event_id,
            size: 1001,
            limit: 1000,
            stream,
        }) => {
            assert_eq!(event_id, big_id);
            assert_eq!(stream, s);
        }
        other => panic!("expected EventTooLarge, got {other:?}"),
    }
    assert_eq!(store.head_position().await.unwrap(), 0);
    let fits = NewEvent::new("B", "application/octet-stream", vec![1u8; 1000]).unwrap();
    store
        .append(s.clone(), ExpectedVersion::Any, vec![fits])
        .await
        .unwrap();
    // A bad content type is rejected too.
    let mut odd = ev(1);
    odd.content_type = String::new();
    assert!(matches!(
        store.append(s, ExpectedVersion::Any, vec![odd]).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

#[test]
fn invalid_stream_ids_are_rejected_when_parsed() {
    let long = format!("cat-{}", "x".repeat(200));
    for bad in [
        "",
        "nodash",
        "-x",
        "1cat-x",
        "cat-",
        "cat-a b",
        "cat-ü",
        "ca t-1",
        long.as_str(),
    ] {
        let err = bad.parse::<StreamId>().expect_err(bad);
        let store_err = StoreError::from(err);
        assert_eq!(store_err.code(), "invalid_envelope", "{bad:?}");
        assert!(matches!(store_err, StoreError::Validation(_)));
    }
    for good in ["loan-42", "user-7f3a", "a-b-c", "x_1-a.b:c@d~e"] {
        assert!(good.parse::<StreamId>().is_ok(), "{good}");
    }
}

#[tokio::test]
async fn flipped_payload_bytes_are_reported_as_corruption_at_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    let s = sid("audit-1");
    store
        .append(
            s.clone(),
            ExpectedVersion::NoStream,
            (0..4).map(ev).collect(),
        )
        .await
        .unwrap();
    // Flip one payload byte of position 2 behind the store's back.
    let conn = raw(&dir);
    let payload: Vec<u8> = conn
        .query_row("SELECT payload FROM events WHERE position = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    let mut flipped = payload.clone();
    flipped[0] ^= 0x01;
    conn.execute(
        "UPDATE events SET payload = ?1 WHERE position = 2",
        [flipped],
    )
    .unwrap();
    drop(conn);

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
    match store.read_all(0, 10, &LogFilter::All).await {
        Err(e @ StoreError::Corrupted { position: 2, .. }) => {
            assert!(e.to_string().contains("position 2"))
        }
        other => panic!("expected Corrupted at 2, got {other:?}"),
    }
    // Everything else still reads.
    assert_eq!(
        store.read_all(0, 1, &LogFilter::All).await.unwrap()[0].position,
        1
    );
    let rest = store.read_all(2, 10, &LogFilter::All).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.position).collect::<Vec<_>>(), [3, 4]);
    let tail = store
        .read_stream(&s, StreamFrom::Version(2), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(tail.len(), 2);
    // A changed content type breaks the checksum as well.
    raw(&dir)
        .execute(
            "UPDATE events SET content_type = 'text/plain' WHERE position = 4",
            [],
        )
        .unwrap();
    assert!(matches!(
        store
            .read_stream(&s, StreamFrom::Version(3), Direction::Forward, 10)
            .await,
        Err(StoreError::Corrupted { position: 4, .. })
    ));
}

#[tokio::test]
async fn damaged_metadata_json_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    let s = sid("meta-1");
    let meta = Metadata {
        correlation_id: Some("c-1".into()),
        ..Default::default()
    };
    store
        .append(
            s.clone(),
            ExpectedVersion::Any,
            vec![ev(0).with_metadata(meta.clone()), ev(1).with_metadata(meta)],
        )
        .await
        .unwrap();
    raw(&dir)
        .execute(
            "UPDATE events SET metadata = '{\"correlation_id\": ' WHERE position = 1",
            [],
        )
        .unwrap();
    match store.read_all(0, 10, &LogFilter::All).await {
        Err(StoreError::Corrupted {
            position: 1,
            reason,
        }) => assert!(reason.contains("metadata"), "{reason}"),
        other => panic!("expected Corrupted at 1, got {other:?}"),
    }
    let ok = store.read_all(1, 10, &LogFilter::All).await.unwrap();
    assert_eq!(ok[0].metadata.correlation_id.as_deref(), Some("c-1"));
    // A wrong-typed field is a decode failure too.
    raw(&dir)
        .execute(
            "UPDATE events SET metadata = '{\"extra\": 5}' WHERE position = 2",
            [],
        )
        .unwrap();
    assert!(matches!(
        store.read_all(1, 10, &LogFilter::All).await,
        Err(StoreError::Corrupted { position: 2, .. })
    ));
}

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (sid("keep-1"), sid("soft-1"), sid("gone-1"));
    {
        let store = open(
            &dir,
            StoreOptions {
                durable: false,
                ..Default::default()
            },
        );
        store
            .append(a.clone(), ExpectedVersion::NoStream, vec![ev(0), ev(1)])
            .await
            .unwrap();
        store
            .append(b.clone(), ExpectedVersion::NoStream, vec![ev(2)])
            .await
            .unwrap();
        store
            .append(c.clone(), ExpectedVersion::NoStream, vec![ev(3), ev(4)])
            .await
            .unwrap();
        store
            .set_stream_metadata(
                &a,
                StreamMetadata {
                    max_count: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        store
            .delete_stream(&b, ExpectedVersion::Exact(0), DeleteMode::Soft)
            .await
            .unwrap();
        // The last events of the log are tombstoned: the head must not move back on reopen.
        store
            .delete_stream(&c, ExpectedVersion::Any, DeleteMode::Hard)
            .await
            .unwrap();
        store.close().await;
    }
    let store = open(&dir, StoreOptions::default());
    assert_eq!(store.head_position().await.unwrap(), 5);
    assert_eq!(*store.head_watch().borrow(), 5);
    let visible = store
        .read_stream(&a, StreamFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(visible.iter().map(|e| e.version).collect::<Vec<_>>(), [1]);
    let info = store.stream_info(&b).await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.last_version, info.metadata.truncate_before),
        (StreamState::SoftDeleted, Some(0), Some(1))
    );
    assert_eq!(
        store.stream_info(&c).await.unwrap().unwrap().state,
        StreamState::Tombstoned
    );
    let r = store
        .append(sid("new-1"), ExpectedVersion::NoStream, vec![ev(5)])
        .await
        .unwrap();
    assert_eq!(r.first_position, 6);
    let r = store
        .append(b.clone(), ExpectedVersion::NoStream, vec![ev(6)])
        .await
        .unwrap();
    assert_eq!(r.streams[0].first_version, 1);
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (
            stats.backend.as_str(),
            stats.events,
            stats.streams,
            stats.head_position
        ),
        ("sqlite", 5, 4, 7)
    );
    assert!(stats.size_bytes.unwrap() > 0);
}

#[tokio::test]
async fn a_newer_schema_version_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir, StoreOptions::default()));
    raw(&dir).pragma_update(None, "user_version", 99).unwrap();
    let err = SqliteStore::open_default(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
    let StoreError::Backend { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(matches!(
        source.downcast_ref::<SqliteSetupError>(),
        Some(SqliteSetupError::NewerSchema {
            found: 99,
            supported: 1,
            ..
        })
    ));
}

#[tokio::test]
async fn close_and_drop_stop_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    store
        .append(sid("c-1"), ExpectedVersion::Any, vec![ev(0)])
        .await
        .unwrap();
    let mut watch = store.head_watch();
    store.close().await;
    assert!(matches!(
        store
            .append(sid("c-1"), ExpectedVersion::Any, vec![ev(1)])
            .await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        store.read_all(0, 10, &LogFilter::All).await,
        Err(StoreError::Closed)
    ));
    assert!(
        watch.changed().await.is_err(),
        "the head watch ends with the writer"
    );
    store.close().await; // idempotent
    drop(store);

    let store = open(&dir, StoreOptions::default());
    let mut watch = store.head_watch();
    drop(store);
    assert!(
        watch.changed().await.is_err(),
        "dropping the store stops its writer"
    );
    // The file is usable again right away.
    let store = open(&dir, StoreOptions::default());
    assert_eq!(
        store
            .append(sid("c-1"), ExpectedVersion::Exact(0), vec![ev(1)])
            .await
            .unwrap()
            .last_position,
        2
    );
}

#[tokio::test]
async fn idempotency_edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    let (a, b) = (sid("a-1"), sid("b-1"));
    let parts = vec![
        StreamAppend {
            stream: a.clone(),
            expected: ExpectedVersion::NoStream,
            events: vec![ev(0), ev(1)],
        },
        StreamAppend {
            stream: b.clone(),
            expected: ExpectedVersion::NoStream,
            events: vec![ev(2)],
        },
    ];
    let first = store.append_many(parts.clone()).await.unwrap();
    assert_eq!(
        store.append_many(parts.clone()).await.unwrap(),
        first,
        "whole multi-stream retry"
    );
    // One part repeated with a new part: not a retry.
    let mixed = vec![
        parts[0].clone(),
        StreamAppend {
            stream: sid("c-1"),
            expected: ExpectedVersion::Any,
            events: vec![ev(3)],
        },
    ];
    match store.append_many(mixed).await {
        Err(StoreError::IdempotencyConflict {
            event_id,
            existing_stream,
        }) => {
            assert_eq!(event_id, parts[0].events[0].id);
            assert_eq!(existing_stream, Some(a.clone()));
        }
        other => panic!("expected IdempotencyConflict, got {other:?}"),
    }
    // The same id twice in one request.
    let dup = ev(4);
    let twice = vec![dup.clone(), dup.clone().with_id(dup.id)];
    assert!(matches!(
        store.append(sid("d-1"), ExpectedVersion::Any, twice).await,
        Err(StoreError::IdempotencyConflict { .. })
    ));
    // Same ids in a different order: a conflict, not a retry.
    let reordered = vec![parts[0].events[1].clone(), parts[0].events[0].clone()];
    assert!(matches!(
        store
            .append(a.clone(), ExpectedVersion::Any, reordered)
            .await,
        Err(StoreError::IdempotencyConflict { .. })
    ));
    // A new first id and a taken later id: fails while inserting, and must leave nothing.
    match store
        .append(
            sid("e-1"),
            ExpectedVersion::NoStream,
            vec![ev(7), ev(8), parts[1].events[0].clone()],
        )
        .await
    {
        Err(StoreError::IdempotencyConflict {
            event_id,
            existing_stream,
        }) => {
            assert_eq!(event_id, parts[1].events[0].id);
            assert_eq!(existing_stream, Some(b.clone()));
        }
        other => panic!("expected IdempotencyConflict, got {other:?}"),
    }
    assert!(store.stream_info(&sid("e-1")).await.unwrap().is_none());
    assert_eq!(store.head_position().await.unwrap(), 3);
    assert!(store.stream_info(&sid("d-1")).await.unwrap().is_none());
    // A retry into a tombstoned stream is refused.
    store
        .delete_stream(&b, ExpectedVersion::Any, DeleteMode::Hard)
        .await
        .unwrap();
    assert!(matches!(
        store
            .append(b.clone(), ExpectedVersion::Any, parts[1].events.clone())
            .await,
        Err(StoreError::StreamDeleted { .. })
    ));
    let r = store
        .append(
            a.clone(),
            ExpectedVersion::Exact(1),
            vec![ev(5).with_id(EventId::new())],
        )
        .await
        .unwrap();
    assert_eq!(r.first_position, 4);
}

#[tokio::test]
async fn lifecycle_details() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    assert!(matches!(
        store
            .delete_stream(&sid("never-1"), ExpectedVersion::Any, DeleteMode::Soft)
            .await,
        Err(StoreError::StreamNotFound { .. })
    ));
    // Tombstoning a name that was never used reserves it.
    store
        .delete_stream(&sid("never-2"), ExpectedVersion::NoStream, DeleteMode::Hard)
        .await
        .unwrap();
    assert_eq!(
        store
            .stream_info(&sid("never-2"))
            .await
            .unwrap()
            .unwrap()
            .state,
        StreamState::Tombstoned
    );
    assert!(matches!(
        store
            .set_stream_metadata(&sid("never-2"), StreamMetadata::default())
            .await,
        Err(StoreError::StreamDeleted { .. })
    ));
    // Soft-deleted: StreamExists/Exact are refused, NoStream revives.
    let s = sid("soft-2");
    store
        .append(s.clone(), ExpectedVersion::NoStream, vec![ev(0), ev(1)])
        .await
        .unwrap();
    store
        .delete_stream(&s, ExpectedVersion::StreamExists, DeleteMode::Soft)
        .await
        .unwrap();
    assert!(matches!(
        store
            .append(s.clone(), ExpectedVersion::Exact(1), vec![ev(2)])
            .await,
        Err(StoreError::WrongExpectedVersion { actual: None, .. })
    ));
    assert!(matches!(
        store
            .append(s.clone(), ExpectedVersion::StreamExists, vec![ev(2)])
            .await,
        Err(StoreError::WrongExpectedVersion { actual: None, .. })
    ));
    // The global log still holds soft-deleted events.
    assert_eq!(
        store.read_all(0, 10, &LogFilter::All).await.unwrap().len(),
        2
    );
    store
        .append(s.clone(), ExpectedVersion::NoStream, vec![ev(2), ev(3)])
        .await
        .unwrap();
    let back = store
        .read_stream(&s, StreamFrom::End, Direction::Backward, 10)
        .await
        .unwrap();
    assert_eq!(back.iter().map(|e| e.version).collect::<Vec<_>>(), [3, 2]);
    // recorded_at has microsecond precision.
    assert!(back
        .iter()
        .all(|e| e.recorded_at.timestamp_subsec_nanos() % 1000 == 0));
    assert_eq!(store.stats().await.unwrap().streams, 2);
}

#[tokio::test]
async fn snapshots_keep_the_latest_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    let snaps = SqliteSnapshotStore::for_store(&store).unwrap();
    let s = sid("loan-1");
    assert!(snaps.load_snapshot(&s).await.unwrap().is_none());
    let taken_at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456789Z")
        .unwrap()
        .to_utc();
    let snap = |version, byte| Snapshot {
        stream: s.clone(),
        version,
        state_version: 2,
        payload: vec![byte; 3],
        taken_at,
    };
    snaps.save_snapshot(&snap(10, 1)).await.unwrap();
    assert_eq!(
        snaps.load_snapshot(&s).await.unwrap(),
        Some(snap(10, 1)),
        "exact round trip, nanoseconds included"
    );
    snaps.save_snapshot(&snap(7, 2)).await.unwrap();
    assert_eq!(
        snaps.load_snapshot(&s).await.unwrap(),
        Some(snap(10, 1)),
        "older snapshot ignored"
    );
    snaps.save_snapshot(&snap(12, 3)).await.unwrap();
    assert_eq!(snaps.load_snapshot(&s).await.unwrap(), Some(snap(12, 3)));
    // Snapshots live in the same file and survive a reopen; the event store is unaffected.
    drop(snaps);
    let reopened = SqliteSnapshotStore::open(dir.path().join("events.db")).unwrap();
    assert_eq!(reopened.load_snapshot(&s).await.unwrap(), Some(snap(12, 3)));
    assert!(reopened
        .load_snapshot(&sid("loan-2"))
        .await
        .unwrap()
        .is_none());
    reopened.delete_snapshot(&s).await.unwrap();
    assert!(reopened.load_snapshot(&s).await.unwrap().is_none());
    assert_eq!(store.stats().await.unwrap().events, 0);
    store
        .append(s.clone(), ExpectedVersion::Any, vec![ev(0)])
        .await
        .unwrap();
}

/// Model of stream visibility: which versions a read returns.
fn model_read(
    n: u64,
    tb: Option<u64>,
    max_count: Option<u64>,
    from: StreamFrom,
    dir: Direction,
    limit: usize,
) -> Vec<u64> {
    let last = n - 1;
    let visible = |v: u64| v >= tb.unwrap_or(0) && max_count.is_none_or(|c| v + c > last);
    let mut out: Vec<u64> = match dir {
        Direction::Forward => {
            let start = match from {
                StreamFrom::Start => 0,
                StreamFrom::End => last,
                StreamFrom::Version(v) => v,
            };
            (start..n).filter(|v| visible(*v)).collect()
        }
        Direction::Backward => {
            let start = match from {
                StreamFrom::Start => 0,
                StreamFrom::End => last,
                StreamFrom::Version(v) => v.min(last),
            };
            (0..=start).rev().filter(|v| visible(*v)).collect()
        }
    };
    out.truncate(limit);
    out
}

fn from_strategy() -> impl Strategy<Value = StreamFrom> {
    prop_oneof![
        Just(StreamFrom::Start),
        Just(StreamFrom::End),
        (0u64..40).prop_map(StreamFrom::Version)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Stream reads return exactly the versions the retention model says, in order.
    #[test]
    fn stream_reads_match_the_retention_model(
        n in 1u64..30,
        tb in proptest::option::of(0u64..35),
        max_count in proptest::option::of(0u64..35),
        reads in proptest::collection::vec((from_strategy(), any::<bool>(), 0usize..40), 1..8),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = open(&dir, StoreOptions { durable: false, ..Default::default() });
            let s = sid("model-1");
            store.append(s.clone(), ExpectedVersion::NoStream, (0..n).map(ev).collect()).await.unwrap();
            store.set_stream_metadata(&s, StreamMetadata { truncate_before: tb, max_count, max_age: None }).await.unwrap();
            for (from, forward, limit) in reads {
                let dir_ = if forward { Direction::Forward } else { Direction::Backward };
                let got: Vec<u64> = store.read_stream(&s, from, dir_, limit).await.unwrap().iter().map(|e| e.version).collect();
                prop_assert_eq!(got, model_read(n, tb, max_count, from, dir_, limit), "{:?} {:?} {}", from, dir_, limit);
            }
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_stay_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let one = open(
        &dir,
        StoreOptions {
            durable: false,
            ..Default::default()
        },
    );
    let two = open(
        &dir,
        StoreOptions {
            durable: false,
            ..Default::default()
        },
    );
    let s = sid("shared-1");
    for i in 0..20u64 {
        let (w, other) = if i % 2 == 0 {
            (&one, &two)
        } else {
            (&two, &one)
        };
        let expected = if i == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(i - 1)
        };
        let r = w.append(s.clone(), expected, vec![ev(i)]).await.unwrap();
        assert_eq!((r.streams[0].last_version, r.last_position), (i, i + 1));
        // The other writer's cached version is stale now; it must notice.
        assert!(matches!(
            other.append(s.clone(), expected, vec![ev(100 + i)]).await,
            Err(StoreError::WrongExpectedVersion { actual: Some(v), .. }) if v == i
        ));
    }
    two.delete_stream(&s, ExpectedVersion::Exact(19), DeleteMode::Soft)
        .await
        .unwrap();
    assert!(matches!(
        one.append(s.clone(), ExpectedVersion::Exact(19), vec![ev(50)])
            .await,
        Err(StoreError::WrongExpectedVersion { actual: None, .. })
    ));
    assert_eq!(one.head_position().await.unwrap(), 20);
    assert_eq!(
        two.read_all(0, 100, &LogFilter::All).await.unwrap().len(),
        20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_request_rolls_back_alone_inside_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    let taken = ev(0);
    store
        .append(
            sid("owner-1"),
            ExpectedVersion::NoStream,
            vec![taken.clone()],
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..60u64 {
        let store = store.clone();
        let taken = taken.clone();
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                // Fails on its second insert (the id exists elsewhere): must leave nothing.
                0 => {
                    let r = store
                        .append(
                            sid(&format!("bad-{i}")),
                            ExpectedVersion::Any,
                            vec![ev(i), ev(i + 1), taken],
                        )
                        .await;
                    assert!(
                        matches!(r, Err(StoreError::IdempotencyConflict { .. })),
                        "{r:?}"
                    );
                    0
                }
                1 => {
                    store
                        .append(
                            sid(&format!("good-{i}")),
                            ExpectedVersion::NoStream,
                            vec![ev(i), ev(i + 1)],
                        )
                        .await
                        .unwrap();
                    2
                }
                _ => {
                    store
                        .append(sid("good-shared"), ExpectedVersion::Any, vec![ev(i)])
                        .await
                        .unwrap();
                    1
                }
            }
        }));
    }
    let mut committed = 1u64;
    for t in tasks {
        committed += t.await.unwrap();
    }
    assert_eq!(store.head_position().await.unwrap(), committed);
    let log = store.read_all(0, 1000, &LogFilter::All).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=committed).collect::<Vec<_>>()
    );
    assert!(log
        .iter()
        .all(|e| !e.stream_id.as_str().starts_with("bad-")));
    for i in (0..60).step_by(3) {
        assert!(store
            .stream_info(&sid(&format!("bad-{i}")))
            .await
            .unwrap()
            .is_none());
    }
    let shared = store
        .read_stream(
            &sid("good-shared"),
            StreamFrom::Start,
            Direction::Forward,
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        shared.iter().map(|e| e.version).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
}
