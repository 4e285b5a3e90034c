//! The conformance suite every [`EventStore`] backend must pass.
//!
//! Each function takes a fresh, empty store and panics (test-style) on the first violation.
//! Backends run all of them with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! attest_store::conformance_tests!(async { my_backend_fresh_store().await });
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use attest_core::{Category, EventId, ExpectedVersion, Metadata, NewEvent, SchemaRef, StreamId};

use crate::{
    DeleteMode, Direction, EventStore, LogFilter, StoreError, StreamAppend, StreamFrom,
    StreamMetadata, StreamState, Subscription,
};

/// Expands to one `#[tokio::test]` per conformance check; `$make` is an expression (usually an
/// `async` block) that evaluates to a future of a fresh `Arc<dyn EventStore>`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            append_and_read_stream, expected_version_rules, multi_stream_append_is_atomic,
            idempotent_retries, global_log_is_gap_free_and_filterable, bad_input_is_rejected,
            subscription_catches_up_then_goes_live, stream_lifecycle, stream_metadata_on_read,
            concurrent_writers_with_a_live_subscriber);
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store: ::std::sync::Arc<dyn $crate::EventStore> = $make.await;
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

/// A JSON event `{"n": n}` of type `type_`.
pub fn ev(type_: &str, n: u64) -> NewEvent {
    NewEvent::json(type_, &serde_json::json!({ "n": n })).unwrap()
}

fn n_of(e: &attest_core::RecordedEvent) -> u64 {
    e.decode_json::<serde_json::Value>().unwrap()["n"]
        .as_u64()
        .unwrap()
}

/// Appends, reads forward/backward/from a version, and round-trips every envelope field.
pub async fn append_and_read_stream(store: Arc<dyn EventStore>) {
    let s = sid("order-1");
    let meta = Metadata {
        correlation_id: Some("corr-1".into()),
        causation_id: Some("cause-1".into()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: Some("vendor=x".into()),
        tenant: Some("acme".into()),
        actor: Some("alice".into()),
        extra: BTreeMap::from([("k".to_string(), "v".to_string())]),
    };
    let first = ev("OrderPlaced", 0)
        .with_metadata(meta.clone())
        .with_schema(SchemaRef {
            id: "OrderPlaced".into(),
            version: 3,
        });
    let mut events = vec![first.clone()];
    events.extend((1..10).map(|n| ev("OrderLineAdded", n)));
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let r = store
        .append(s.clone(), ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    assert_eq!(r.streams.len(), 1);
    assert_eq!(
        (r.streams[0].first_version, r.streams[0].last_version),
        (0, 9)
    );
    assert_eq!((r.first_position, r.last_position), (1, 10));

    let all = store
        .read_stream(&s, StreamFrom::Start, Direction::Forward, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 10);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.version, i as u64);
        assert_eq!(e.position, i as u64 + 1);
        assert_eq!(e.stream_id, s);
        assert_eq!(n_of(e), i as u64);
        assert!(
            e.recorded_at > before
                && e.recorded_at < chrono::Utc::now() + chrono::Duration::seconds(5)
        );
    }
    let e0 = &all[0];
    assert_eq!(e0.id, first.id);
    assert_eq!(e0.event_type, first.event_type);
    assert_eq!(e0.schema, first.schema);
    assert_eq!(e0.content_type, first.content_type);
    assert_eq!(e0.payload, first.payload);
    assert_eq!(e0.metadata, meta);
    assert_eq!(all[1].metadata, Metadata::default());
    assert_eq!(all[1].schema, None);

    let back = store
        .read_stream(&s, StreamFrom::End, Direction::Backward, 3)
        .await
        .unwrap();
    assert_eq!(
        back.iter().map(|e| e.version).collect::<Vec<_>>(),
        [9, 8, 7]
    );
    let mid = store
        .read_stream(&s, StreamFrom::Version(4), Direction::Forward, 2)
        .await
        .unwrap();
    assert_eq!(mid.iter().map(|e| e.version).collect::<Vec<_>>(), [4, 5]);
    let mid_back = store
        .read_stream(&s, StreamFrom::Version(4), Direction::Backward, 100)
        .await
        .unwrap();
    assert_eq!(
        mid_back.iter().map(|e| e.version).collect::<Vec<_>>(),
        [4, 3, 2, 1, 0]
    );
    let past_end = store
        .read_stream(&s, StreamFrom::Version(10), Direction::Forward, 100)
        .await
        .unwrap();
    assert!(past_end.is_empty());

    match store
        .read_stream(&sid("order-404"), StreamFrom::Start, Direction::Forward, 10)
        .await
    {
        Err(StoreError::StreamNotFound { stream }) => assert_eq!(stream.as_str(), "order-404"),
        other => panic!("expected StreamNotFound, got {other:?}"),
    }
    let info = store.stream_info(&s).await.unwrap().unwrap();
    assert_eq!(info.last_version, Some(9));
    assert_eq!(info.state, StreamState::Active);
    assert!(store
        .stream_info(&sid("order-404"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.head_position().await.unwrap(), 10);
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.events, stats.streams, stats.head_position),
        (10, 1, 10)
    );
}

/// `Any | NoStream | StreamExists | Exact(v)`, and conflicts carrying the actual version.
pub async fn expected_version_rules(store: Arc<dyn EventStore>) {
    let s = sid("acct-1");
    let conflict = |r: Result<crate::AppendResult, StoreError>, want: Option<u64>| match r {
        Err(StoreError::WrongExpectedVersion { stream, actual, .. }) => {
            assert_eq!(stream.as_str(), "acct-1");
            assert_eq!(actual, want);
        }
        other => panic!("expected conflict with actual {want:?}, got {other:?}"),
    };
    conflict(
        store
            .append(
                s.clone(),
                ExpectedVersion::StreamExists,
                vec![ev("Opened", 0)],
            )
            .await,
        None,
    );
    conflict(
        store
            .append(s.clone(), ExpectedVersion::Exact(0), vec![ev("Opened", 0)])
            .await,
        None,
    );
    store
        .append(s.clone(), ExpectedVersion::NoStream, vec![ev("Opened", 0)])
        .await
        .unwrap();
    conflict(
        store
            .append(s.clone(), ExpectedVersion::NoStream, vec![ev("Opened", 0)])
            .await,
        Some(0),
    );
    conflict(
        store
            .append(
                s.clone(),
                ExpectedVersion::Exact(5),
                vec![ev("Deposited", 1)],
            )
            .await,
        Some(0),
    );
    let r = store
        .append(
            s.clone(),
            ExpectedVersion::Exact(0),
            vec![ev("Deposited", 1)],
        )
        .await
        .unwrap();
    assert_eq!(r.streams[0].last_version, 1);
    let r = store
        .append(
            s.clone(),
            ExpectedVersion::StreamExists,
            vec![ev("Deposited", 2)],
        )
        .await
        .unwrap();
    assert_eq!(r.streams[0].last_version, 2);
    let r = store
        .append(
            s.clone(),
            ExpectedVersion::Any,
            vec![ev("Deposited", 3), ev("Deposited", 4)],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.streams[0].first_version, r.streams[0].last_version),
        (3, 4)
    );
    let err = store
        .append(
            s.clone(),
            ExpectedVersion::Exact(1),
            vec![ev("Deposited", 9)],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("acct-1") && err.to_string().contains("version 4"));
    let events = store
        .read_stream(&s, StreamFrom::Start, Direction::Forward, 100)
        .await
        .unwrap();
    assert_eq!(events.iter().map(n_of).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
}

/// A multi-stream append commits all parts or none.
pub async fn multi_stream_append_is_atomic(store: Arc<dyn EventStore>) {
    let (a, b) = (sid("from-1"), sid("to-1"));
    store
        .append(b.clone(), ExpectedVersion::NoStream, vec![ev("Opened", 0)])
        .await
        .unwrap();
    let bad = store
        .append_many(vec![
            StreamAppend {
                stream: a.clone(),
                expected: ExpectedVersion::NoStream,
                events: vec![ev("Debited", 1), ev("Debited", 2)],
            },
            StreamAppend {
                stream: b.clone(),
                expected: ExpectedVersion::NoStream, // wrong: b exists
                events: vec![ev("Credited", 1)],
            },
        ])
        .await;
    assert!(
        matches!(bad, Err(StoreError::WrongExpectedVersion { ref stream, actual: Some(0), .. }) if stream == &b),
        "{bad:?}"
    );
    assert!(store
        .stream_info(&a)
        .await
        .unwrap()
        .is_none_or(|i| i.last_version.is_none()));
    assert_eq!(store.head_position().await.unwrap(), 1);

    let ok = store
        .append_many(vec![
            StreamAppend {
                stream: a.clone(),
                expected: ExpectedVersion::NoStream,
                events: vec![ev("Debited", 1), ev("Debited", 2)],
            },
            StreamAppend {
                stream: b.clone(),
                expected: ExpectedVersion::Exact(0),
                events: vec![ev("Credited", 3)],
            },
        ])
        .await
        .unwrap();
    assert_eq!(ok.streams.len(), 2);
    assert_eq!(ok.streams[0].stream, a);
    assert_eq!(
        (ok.streams[0].first_version, ok.streams[0].last_version),
        (0, 1)
    );
    assert_eq!(
        (ok.streams[1].first_version, ok.streams[1].last_version),
        (1, 1)
    );
    assert_eq!((ok.first_position, ok.last_position), (2, 4));
    let log = store.read_all(0, 100, &LogFilter::All).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(log.iter().map(n_of).collect::<Vec<_>>(), [0, 1, 2, 3]);
}

/// Re-appending the same event ids is recognised and not duplicated.
pub async fn idempotent_retries(store: Arc<dyn EventStore>) {
    let s = sid("pay-1");
    let batch = vec![ev("PaymentRequested", 0), ev("PaymentAuthorised", 1)];
    let r1 = store
        .append(s.clone(), ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    // The retry of a request whose acknowledgement was lost: same ids, same expectation.
    let r2 = store
        .append(s.clone(), ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!(r1, r2);
    let r3 = store
        .append(s.clone(), ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    assert_eq!(r1, r3);
    assert_eq!(store.head_position().await.unwrap(), 2);
    // Partial overlap is not a retry.
    let partial = vec![batch[1].clone(), ev("PaymentCaptured", 2)];
    match store.append(s.clone(), ExpectedVersion::Any, partial).await {
        Err(StoreError::IdempotencyConflict { event_id, .. }) => assert_eq!(event_id, batch[1].id),
        other => panic!("expected IdempotencyConflict, got {other:?}"),
    }
    // The same id in another stream is a conflict too.
    let elsewhere = vec![batch[0].clone()];
    assert!(matches!(
        store
            .append(sid("pay-2"), ExpectedVersion::Any, elsewhere)
            .await,
        Err(StoreError::IdempotencyConflict { .. })
    ));
    assert_eq!(store.head_position().await.unwrap(), 2);
    let later = store
        .append(
            s.clone(),
            ExpectedVersion::Exact(1),
            vec![ev("PaymentCaptured", 2)],
        )
        .await
        .unwrap();
    assert_eq!(later.streams[0].last_version, 2);
}

/// Positions 1..=n without gaps; reads after a position; category filter.
pub async fn global_log_is_gap_free_and_filterable(store: Arc<dyn EventStore>) {
    for i in 0..30u64 {
        let s = if i % 3 == 0 {
            sid(&format!("user-{i}"))
        } else {
            sid(&format!("order-{}", i % 4))
        };
        store
            .append(s, ExpectedVersion::Any, vec![ev("Happened", i)])
            .await
            .unwrap();
    }
    let all = store.read_all(0, 1000, &LogFilter::All).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    assert_eq!(
        all.iter().map(n_of).collect::<Vec<_>>(),
        (0..30).collect::<Vec<_>>()
    );
    let page = store.read_all(10, 5, &LogFilter::All).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        [11, 12, 13, 14, 15]
    );
    assert!(store
        .read_all(30, 10, &LogFilter::All)
        .await
        .unwrap()
        .is_empty());
    let users = store
        .read_all(
            0,
            1000,
            &LogFilter::Category(Category::new("user").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(users.len(), 10);
    assert!(users.iter().all(|e| e.stream_id.category() == "user"));
    assert!(users.windows(2).all(|w| w[0].position < w[1].position));
    let after = store
        .read_all(
            users[4].position,
            2,
            &LogFilter::Category(Category::new("user").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].position, users[5].position);
}

/// Empty appends, a repeated stream, an over-size event: typed errors, nothing written.
pub async fn bad_input_is_rejected(store: Arc<dyn EventStore>) {
    let s = sid("doc-1");
    store
        .append(s.clone(), ExpectedVersion::Any, vec![ev("Created", 0)])
        .await
        .unwrap();
    assert!(matches!(
        store.append_many(vec![]).await,
        Err(StoreError::EmptyAppend { stream: None })
    ));
    assert!(matches!(
        store.append(s.clone(), ExpectedVersion::Any, vec![]).await,
        Err(StoreError::EmptyAppend { stream: Some(_) })
    ));
    let twice = store
        .append_many(vec![
            StreamAppend {
                stream: s.clone(),
                expected: ExpectedVersion::Any,
                events: vec![ev("A", 1)],
            },
            StreamAppend {
                stream: s.clone(),
                expected: ExpectedVersion::Any,
                events: vec![ev("B", 2)],
            },
        ])
        .await;
    assert!(matches!(
        twice,
        Err(StoreError::DuplicateStreamInAppend { .. })
    ));
    let limit = store.options().max_event_size;
    let big = NewEvent::new("Huge", "application/octet-stream", vec![7u8; limit + 1]).unwrap();
    let big_id = big.id;
    match store
        .append(s.clone(), ExpectedVersion::Any, vec![ev("Fine", 1), big])
        .await
    {
        Err(StoreError::EventTooLarge {
            event_id,
            size,
            limit: l,
            ..
        }) => {
            assert_eq!(event_id, big_id);
            assert_eq!(l, limit);
            assert!(size > limit);
        }
        other => panic!("expected EventTooLarge, got {other:?}"),
    }
    // Exactly at the limit is accepted.
    let at_limit = NewEvent::new("Big", "application/octet-stream", vec![1u8; limit]).unwrap();
    store
        .append(s.clone(), ExpectedVersion::Exact(0), vec![at_limit.clone()])
        .await
        .unwrap();
    let back = store
        .read_stream(&s, StreamFrom::Version(1), Direction::Forward, 1)
        .await
        .unwrap();
    assert_eq!(back[0].payload.len(), limit);
    assert_eq!(back[0].payload, at_limit.payload);
    // Empty payloads are legal.
    store
        .append(
            s.clone(),
            ExpectedVersion::Exact(1),
            vec![NewEvent::new("Empty", "application/json", vec![]).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(store.head_position().await.unwrap(), 3);
    assert_eq!(
        store.read_all(0, 100, &LogFilter::All).await.unwrap().len(),
        3
    );
}

/// Catch-up from a checkpoint, hand-over to live, category subscriptions.
pub async fn subscription_catches_up_then_goes_live(store: Arc<dyn EventStore>) {
    for i in 0..50u64 {
        store
            .append(
                sid(&format!("item-{}", i % 5)),
                ExpectedVersion::Any,
                vec![ev("Seen", i)],
            )
            .await
            .unwrap();
    }
    let mut sub = Subscription::new(store.clone(), 0, LogFilter::All).with_page_size(7);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 50..120u64 {
                let s = if i % 2 == 0 {
                    sid(&format!("item-{}", i % 5))
                } else {
                    sid("other-1")
                };
                store
                    .append(s, ExpectedVersion::Any, vec![ev("Seen", i)])
                    .await
                    .unwrap();
                if i % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    for want in 1..=120u64 {
        let e = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("subscription stalled")
            .unwrap();
        assert_eq!(e.position, want);
        assert_eq!(n_of(&e), want - 1);
        assert_eq!(sub.checkpoint(), want);
    }
    writer.await.unwrap();
    // Resume from a checkpoint.
    let mut resumed = Subscription::new(store.clone(), 25, LogFilter::All);
    assert_eq!(resumed.next().await.unwrap().position, 26);
    // A category subscription sees only its category, live included.
    let cat = LogFilter::Category(Category::new("other").unwrap());
    let mut others = Subscription::new(store.clone(), 0, cat);
    let mut seen = 0;
    while let Some(e) = others.try_next().await.unwrap() {
        assert_eq!(e.stream_id.as_str(), "other-1");
        seen += 1;
    }
    assert_eq!(seen, 35);
    let waiter = tokio::spawn(async move { others.next().await.map(|e| n_of(&e)) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    store
        .append(sid("item-1"), ExpectedVersion::Any, vec![ev("Seen", 500)])
        .await
        .unwrap();
    store
        .append(sid("other-1"), ExpectedVersion::Any, vec![ev("Seen", 501)])
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("live category event not delivered")
        .unwrap()
        .unwrap();
    assert_eq!(got, 501);
}

/// Soft delete, revival, tombstone.
pub async fn stream_lifecycle(store: Arc<dyn EventStore>) {
    let s = sid("cart-1");
    store
        .append(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![ev("Added", 0), ev("Added", 1)],
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .delete_stream(&s, ExpectedVersion::Exact(0), DeleteMode::Soft)
            .await,
        Err(StoreError::WrongExpectedVersion {
            actual: Some(1),
            ..
        })
    ));
    store
        .delete_stream(&s, ExpectedVersion::Exact(1), DeleteMode::Soft)
        .await
        .unwrap();
    assert!(matches!(
        store
            .read_stream(&s, StreamFrom::Start, Direction::Forward, 10)
            .await,
        Err(StoreError::StreamNotFound { .. })
    ));
    assert_eq!(
        store.stream_info(&s).await.unwrap().unwrap().state,
        StreamState::SoftDeleted
    );
    // Revival: versions continue, old events stay hidden.
    let r = store
        .append(s.clone(), ExpectedVersion::NoStream, vec![ev("Added", 2)])
        .await
        .unwrap();
    assert_eq!(r.streams[0].first_version, 2);
    let visible = store
        .read_stream(&s, StreamFrom::Start, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(visible.iter().map(|e| e.version).collect::<Vec<_>>(), [2]);
    assert_eq!(
        store.stream_info(&s).await.unwrap().unwrap().state,
        StreamState::Active
    );

    let t = sid("cart-2");
    store
        .append(
            t.clone(),
            ExpectedVersion::NoStream,
            vec![ev("Added", 10), ev("Added", 11)],
        )
        .await
        .unwrap();
    store
        .delete_stream(&t, ExpectedVersion::Any, DeleteMode::Hard)
        .await
        .unwrap();
    assert!(matches!(
        store
            .read_stream(&t, StreamFrom::Start, Direction::Forward, 10)
            .await,
        Err(StoreError::StreamDeleted { .. })
    ));
    assert!(matches!(
        store
            .append(t.clone(), ExpectedVersion::Any, vec![ev("Added", 12)])
            .await,
        Err(StoreError::StreamDeleted { .. })
    ));
    assert!(matches!(
        store
            .delete_stream(&t, ExpectedVersion::Any, DeleteMode::Soft)
            .await,
        Err(StoreError::StreamDeleted { .. })
    ));
    assert_eq!(
        store.stream_info(&t).await.unwrap().unwrap().state,
        StreamState::Tombstoned
    );
    let log = store.read_all(0, 100, &LogFilter::All).await.unwrap();
    assert!(
        log.iter().all(|e| e.stream_id != t),
        "tombstoned events must be gone from the log"
    );
    assert_eq!(log.len(), 3);
    // The head never moves backwards, and new appends get fresh positions.
    let head = store.head_position().await.unwrap();
    assert_eq!(head, 5);
    let r = store
        .append(sid("cart-3"), ExpectedVersion::Any, vec![ev("Added", 20)])
        .await
        .unwrap();
    assert_eq!(r.first_position, 6);
}

/// truncate-before, max-count and max-age hide events on stream reads.
pub async fn stream_metadata_on_read(store: Arc<dyn EventStore>) {
    let s = sid("log-1");
    store
        .append(
            s.clone(),
            ExpectedVersion::Any,
            (0..10).map(|i| ev("Line", i)).collect(),
        )
        .await
        .unwrap();
    let versions =
        |v: Vec<attest_core::RecordedEvent>| v.iter().map(|e| e.version).collect::<Vec<_>>();
    store
        .set_stream_metadata(
            &s,
            StreamMetadata {
                truncate_before: Some(4),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        versions(
            store
                .read_stream(&s, StreamFrom::Start, Direction::Forward, 100)
                .await
                .unwrap()
        ),
        (4..10).collect::<Vec<_>>()
    );
    assert_eq!(
        versions(
            store
                .read_stream(&s, StreamFrom::End, Direction::Backward, 100)
                .await
                .unwrap()
        ),
        (4..10).rev().collect::<Vec<_>>()
    );
    store
        .set_stream_metadata(
            &s,
            StreamMetadata {
                max_count: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        versions(
            store
                .read_stream(&s, StreamFrom::Start, Direction::Forward, 100)
                .await
                .unwrap()
        ),
        [7, 8, 9]
    );
    let info = store.stream_info(&s).await.unwrap().unwrap();
    assert_eq!(info.metadata.max_count, Some(3));
    assert_eq!(info.metadata.truncate_before, None);
    store
        .set_stream_metadata(
            &s,
            StreamMetadata {
                max_age: Some(Duration::from_secs(3600)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .read_stream(&s, StreamFrom::Start, Direction::Forward, 100)
            .await
            .unwrap()
            .len(),
        10
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    store
        .set_stream_metadata(
            &s,
            StreamMetadata {
                max_age: Some(Duration::from_millis(10)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(store
        .read_stream(&s, StreamFrom::Start, Direction::Forward, 100)
        .await
        .unwrap()
        .is_empty());
    // Metadata never changes the global log or the version sequence.
    assert_eq!(
        store.read_all(0, 100, &LogFilter::All).await.unwrap().len(),
        10
    );
    let r = store
        .append(s.clone(), ExpectedVersion::Exact(9), vec![ev("Line", 10)])
        .await
        .unwrap();
    assert_eq!(r.streams[0].last_version, 10);
    // Metadata on a stream with no events creates no events.
    store
        .set_stream_metadata(
            &sid("log-2"),
            StreamMetadata {
                max_count: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.head_position().await.unwrap(), 11);
}

/// Parameters of [`concurrency_check`].
#[derive(Debug, Clone, Copy)]
pub struct ConcurrencyParams {
    /// Writer tasks.
    pub tasks: usize,
    /// Appends attempted per task.
    pub ops_per_task: usize,
    /// Distinct streams the tasks share.
    pub streams: usize,
    /// Every n-th operation of a task is a multi-stream append that must fail mid-way (a stale
    /// expected version on its last part) and roll back whole.
    pub fail_every: usize,
    /// Seed for the tasks' choices.
    pub seed: u64,
}

/// Many writers with expected versions on overlapping streams, some appends failing mid-way,
/// and a subscriber running throughout: no lost update, no duplicate version, and the
/// subscriber sees every committed event exactly once in position order.
pub async fn concurrency_check(store: Arc<dyn EventStore>, p: ConcurrencyParams) {
    let streams: Vec<StreamId> = (0..p.streams)
        .map(|i| sid(&format!("shared-{i}")))
        .collect();
    let mut sub = Subscription::new(store.clone(), 0, LogFilter::All).with_page_size(64);
    let mut handles = Vec::new();
    for t in 0..p.tasks {
        let store = store.clone();
        let streams = streams.clone();
        handles.push(tokio::spawn(async move {
            let mut acked: Vec<EventId> = Vec::new();
            let mut x = p.seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut rnd = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            for op in 0..p.ops_per_task {
                let s = streams[(rnd() as usize) % streams.len()].clone();
                let payload = (t * 1_000_000 + op) as u64;
                if p.fail_every > 0 && op % p.fail_every == p.fail_every - 1 {
                    // Fails on its second part: nothing of it may become visible.
                    let other = sid(&format!("private-{t}-{op}"));
                    let r = store
                        .append_many(vec![
                            StreamAppend {
                                stream: other,
                                expected: ExpectedVersion::NoStream,
                                events: vec![ev("Doomed", payload)],
                            },
                            StreamAppend {
                                stream: s,
                                expected: ExpectedVersion::Exact(u64::MAX - 1),
                                events: vec![ev("Doomed", payload)],
                            },
                        ])
                        .await;
                    assert!(
                        matches!(r, Err(StoreError::WrongExpectedVersion { .. })),
                        "{r:?}"
                    );
                    continue;
                }
                // Optimistic read-modify-write with retry on conflict.
                loop {
                    let current = store
                        .stream_info(&s)
                        .await
                        .unwrap()
                        .and_then(|i| i.last_version);
                    let expected = match current {
                        None => ExpectedVersion::NoStream,
                        Some(v) => ExpectedVersion::Exact(v),
                    };
                    let e = ev("Incremented", payload);
                    let id = e.id;
                    match store.append(s.clone(), expected, vec![e]).await {
                        Ok(r) => {
                            assert_eq!(r.streams[0].last_version, current.map_or(0, |v| v + 1));
                            acked.push(id);
                            break;
                        }
                        Err(StoreError::WrongExpectedVersion { .. }) => {
                            tokio::task::yield_now().await;
                            continue;
                        }
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
            }
            acked
        }));
    }
    let mut acked = HashSet::new();
    for h in handles {
        for id in h.await.unwrap() {
            assert!(acked.insert(id));
        }
    }
    let total = acked.len() as u64;
    assert_eq!(
        store.head_position().await.unwrap(),
        total,
        "every committed event has one position, no gaps, no doomed event"
    );
    let mut seen = HashSet::new();
    let mut last = 0;
    for _ in 0..total {
        let e = tokio::time::timeout(Duration::from_secs(60), sub.next())
            .await
            .expect("subscriber stalled")
            .unwrap();
        assert_eq!(
            e.position,
            last + 1,
            "subscriber must see positions in order without gaps"
        );
        last = e.position;
        assert!(
            acked.contains(&e.id),
            "subscriber saw an event that was not acknowledged"
        );
        assert!(seen.insert(e.id), "subscriber saw an event twice");
        assert_ne!(e.event_type.as_str(), "Doomed");
    }
    assert!(sub.try_next().await.unwrap().is_none());
    let mut sum = 0u64;
    for s in &streams {
        if let Ok(events) = store
            .read_stream(s, StreamFrom::Start, Direction::Forward, usize::MAX / 2)
            .await
        {
            let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
            assert_eq!(
                versions,
                (0..events.len() as u64).collect::<Vec<_>>(),
                "versions of {s} must be contiguous"
            );
            sum += events.len() as u64;
        }
    }
    assert_eq!(sum, total, "no lost update");
}

/// 16 writers, 4 shared streams, failing multi-stream appends, a live subscriber.
pub async fn concurrent_writers_with_a_live_subscriber(store: Arc<dyn EventStore>) {
    concurrency_check(
        store,
        ConcurrencyParams {
            tasks: 16,
            ops_per_task: 40,
            streams: 4,
            fail_every: 7,
            seed: 42,
        },
    )
    .await;
}
