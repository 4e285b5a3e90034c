//! Outbox and global-log relays against real NATS JetStream: the shared server on 4222, and
//! a server of our own (on a free port) that we stop and restart for the outage test.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attest_bus::embedded::EmbeddedBroker;
use attest_bus::nats::NatsBroker;
use attest_bus::relay::{
    GlobalLogRelay, OutboxRelay, PostgresCheckpointStore, PostgresOutbox, RelayOptions,
    SqliteCheckpointStore, SqliteOutbox, OUTBOX_KEY_HEADER, POSITION_HEADER,
};
use attest_bus::{Broker, DynBroker, StoredMessage, StreamConfig};
use attest_core::{ExpectedVersion, NewEvent, StreamId};
use attest_store::outbox::{self, OutboxMessage};
use attest_store::sqlite::SqliteStore;
use attest_store::{DynStore, LogFilter, StoreOptions};
use common::own_nats::OwnNats;
use rusqlite::Connection;

const SHARED_NATS: &str = "nats://127.0.0.1:4222";
const PG_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

fn opts() -> RelayOptions {
    RelayOptions {
        batch_size: 100,
        idle_poll: Duration::from_millis(5),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
    }
}

fn names(tag: &str) -> (String, String) {
    let id = format!("{tag}_{}", std::process::id());
    (format!("RELAY_{id}"), format!("relay_{id}"))
}

async fn shared_broker(stream: &str, subject: &str) -> DynBroker {
    let b = NatsBroker::connect(SHARED_NATS).await.unwrap();
    let _ = b.delete_stream(stream).await;
    b.ensure_stream(&StreamConfig::new(stream, vec![format!("{subject}.>")]))
        .await
        .unwrap();
    Arc::new(b)
}

/// Bounded wait so a broken test fails instead of hanging.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond().await {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Enqueues `n` messages over `keys` keys from `first`, one transaction each; every fifth
/// transaction is rolled back. Returns the committed messages.
fn enqueue(
    conn: &mut Connection,
    subject: &str,
    keys: usize,
    first: usize,
    n: usize,
) -> Vec<OutboxMessage> {
    let mut committed = Vec::new();
    for i in first..first + n {
        let key = format!("k{}", i % keys);
        let m = OutboxMessage::new(
            key.clone(),
            format!("{subject}.{key}"),
            format!("{i}").into_bytes(),
        )
        .with_header("n", i.to_string());
        let tx = conn.transaction().unwrap();
        outbox::sqlite::enqueue(&tx, &m).unwrap();
        if i % 5 == 4 {
            tx.rollback().unwrap();
        } else {
            tx.commit().unwrap();
            committed.push(m);
        }
    }
    committed
}

async fn read_all_messages(broker: &DynBroker, stream: &str) -> Vec<StoredMessage> {
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let page = broker.read_stream(stream, ">", from, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.sequence + 1;
        out.extend(page);
    }
    out
}

/// Every committed message exactly once, and per key in enqueue order.
fn check_exactly_once_in_key_order(stored: &[StoredMessage], committed: &[OutboxMessage]) {
    let ids: Vec<String> = stored
        .iter()
        .map(|s| s.message.message_id.clone().unwrap())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicates stored downstream");
    let want: HashSet<String> = committed.iter().map(|m| m.id.to_string()).collect();
    assert_eq!(unique.len(), want.len(), "lost or extra messages");
    assert!(ids.iter().all(|i| want.contains(i)));
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for s in stored {
        let key = s.message.header(OUTBOX_KEY_HEADER).unwrap().to_string();
        let n: i64 = s.message.header("n").unwrap().parse().unwrap();
        let prev = last.insert(key.clone(), n);
        assert!(prev.is_none_or(|p| p < n), "key {key}: {n} after {prev:?}");
    }
}

fn service_db(dir: &Path) -> Connection {
    let conn = Connection::open(dir.join("service.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    outbox::sqlite::ensure_schema(&conn).unwrap();
    conn
}

#[tokio::test]
async fn outbox_relay_publishes_committed_messages_once_in_key_order() {
    let (stream, subject) = names("order");
    let broker = shared_broker(&stream, &subject).await;
    let dir = tempfile::tempdir().unwrap();
    let mut conn = service_db(dir.path());
    let committed = enqueue(&mut conn, &subject, 6, 0, 600);
    let relay = OutboxRelay::new(
        SqliteOutbox::open(dir.path().join("service.db"))
            .await
            .unwrap(),
        broker.clone(),
        opts(),
    );
    assert_eq!(relay.stats().await.unwrap().backlog, committed.len() as u64);
    assert_eq!(relay.drain().await.unwrap(), committed.len());
    assert_eq!(relay.drain().await.unwrap(), 0);
    let s = relay.stats().await.unwrap();
    assert_eq!((s.backlog, s.oldest_age_seconds), (0, 0.0));
    let stored = read_all_messages(&broker, &stream).await;
    check_exactly_once_in_key_order(&stored, &committed);
    // Headers and payload travel unchanged.
    let first = &stored[0].message;
    assert_eq!(first.payload.as_ref(), committed[0].payload.as_slice());
    assert_eq!(first.subject, committed[0].subject);
    broker.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn relay_killed_mid_batch_restarts_without_loss_or_duplicates() {
    let (stream, subject) = names("kill");
    let broker = shared_broker(&stream, &subject).await;
    kill_and_restart(&broker, &stream, &subject).await;
    broker.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn relay_to_embedded_broker_killed_mid_batch_restarts_without_loss_or_duplicates() {
    let (stream, subject) = names("emb");
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = SqliteStore::open(
        dir.path().join("bus.db"),
        StoreOptions {
            durable: false,
            ..Default::default()
        },
    )
    .unwrap();
    let broker: DynBroker = Arc::new(
        EmbeddedBroker::open(store, dir.path().join("bus-state.db"))
            .await
            .unwrap(),
    );
    broker
        .ensure_stream(&StreamConfig::new(&stream, vec![format!("{subject}.>")]))
        .await
        .unwrap();
    kill_and_restart(&broker, &stream, &subject).await;
}

/// Enqueues 5000 messages, runs a relay and aborts it four times at arbitrary points, then
/// drains with a fresh relay: everything arrives once, in key order.
async fn kill_and_restart(broker: &DynBroker, stream: &str, subject: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = service_db(dir.path());
    let committed = enqueue(&mut conn, subject, 8, 0, 5000);
    let mut aborted = 0;
    for round in 1..=4u64 {
        let relay = OutboxRelay::new(
            SqliteOutbox::open(dir.path().join("service.db"))
                .await
                .unwrap(),
            broker.clone(),
            opts(),
        );
        let task = tokio::spawn({
            let relay = relay.clone();
            async move { relay.run().await }
        });
        // Abort at an arbitrary point after some acknowledgements: usually between a
        // publish and the delete of its batch.
        let target = 150 * round + 7;
        eventually("relay progress", || async {
            relay.counters().published_total() >= target || task.is_finished()
        })
        .await;
        if !task.is_finished() {
            aborted += 1;
        }
        task.abort();
        let _ = task.await;
    }
    assert!(aborted > 0);
    let relay = OutboxRelay::new(
        SqliteOutbox::open(dir.path().join("service.db"))
            .await
            .unwrap(),
        broker.clone(),
        opts(),
    );
    relay.drain().await.unwrap();
    assert_eq!(relay.stats().await.unwrap().backlog, 0);
    let stored = read_all_messages(broker, stream).await;
    check_exactly_once_in_key_order(&stored, &committed);
}

#[tokio::test]
async fn broker_outage_grows_the_backlog_then_drains_it() {
    let mut nats = OwnNats::start();
    let (stream, subject) = names("outage");
    let broker: DynBroker = Arc::new(NatsBroker::connect(&nats.url()).await.unwrap());
    broker
        .ensure_stream(&StreamConfig::new(&stream, vec![format!("{subject}.>")]))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut conn = service_db(dir.path());
    let relay = OutboxRelay::new(
        SqliteOutbox::open(dir.path().join("service.db"))
            .await
            .unwrap(),
        broker.clone(),
        opts(),
    );
    let task = tokio::spawn({
        let relay = relay.clone();
        async move { relay.run().await }
    });
    let mut committed = enqueue(&mut conn, &subject, 4, 0, 200);
    eventually("first messages relayed", || async {
        relay.stats().await.unwrap().backlog == 0
    })
    .await;

    nats.stop();
    let during = enqueue(&mut conn, &subject, 4, 200, 300);
    committed.extend(during.iter().cloned());
    eventually("relay notices the outage", || async {
        relay.counters().failures_total() >= 2
    })
    .await;
    // Nothing was deleted while the broker was down.
    let s = relay.stats().await.unwrap();
    assert_eq!(s.backlog, during.len() as u64);
    assert!(s.oldest_age_seconds > 0.0);

    nats.restart();
    eventually("backlog drained after the broker returned", || async {
        relay.stats().await.unwrap().backlog == 0
    })
    .await;
    task.abort();
    let _ = task.await;
    let stored = read_all_messages(&broker, &stream).await;
    check_exactly_once_in_key_order(&stored, &committed);
}

#[tokio::test]
async fn postgres_outbox_relays_to_nats() {
    let (stream, subject) = names("pg");
    let broker = shared_broker(&stream, &subject).await;
    let schema = format!("relay_pg_{}", std::process::id());
    let (mut client, c) = tokio_postgres::connect(PG_URL, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(c);
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; SET search_path TO {schema}"
        ))
        .await
        .unwrap();
    outbox::postgres::ensure_schema(&client).await.unwrap();
    let mut committed = Vec::new();
    for i in 0..300usize {
        let key = format!("k{}", i % 3);
        let m = OutboxMessage::new(key.clone(), format!("{subject}.{key}"), vec![1, 2, 3])
            .with_header("n", i.to_string());
        let tx = client.transaction().await.unwrap();
        outbox::postgres::enqueue(&tx, &m).await.unwrap();
        if i % 7 == 3 {
            tx.rollback().await.unwrap();
        } else {
            tx.commit().await.unwrap();
            committed.push(m);
        }
    }
    let relay = OutboxRelay::new(
        PostgresOutbox::connect(PG_URL, Some(&schema))
            .await
            .unwrap(),
        broker.clone(),
        opts(),
    );
    assert_eq!(relay.drain().await.unwrap(), committed.len());
    assert_eq!(relay.stats().await.unwrap().backlog, 0);
    let stored = read_all_messages(&broker, &stream).await;
    check_exactly_once_in_key_order(&stored, &committed);
    broker.delete_stream(&stream).await.unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

async fn append_events(store: &DynStore, first: usize, n: usize) {
    for i in first..first + n {
        let cat = ["user", "loan", "decision"][i % 3];
        let stream = StreamId::new(format!("{cat}-{}", i % 17)).unwrap();
        let e = NewEvent::json("SomethingHappened", &serde_json::json!({ "i": i })).unwrap();
        store
            .append(stream, ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn global_log_relay_publishes_each_event_once_per_category_subject() {
    let (stream, subject) = names("log");
    let broker = shared_broker(&stream, &subject).await;
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = SqliteStore::open(
        dir.path().join("events.db"),
        StoreOptions {
            durable: false,
            ..Default::default()
        },
    )
    .unwrap();
    append_events(&store, 0, 900).await;
    let checkpoints = Arc::new(
        SqliteCheckpointStore::open(dir.path().join("relay.db"))
            .await
            .unwrap(),
    );
    let make = || {
        GlobalLogRelay::new(
            "log-relay",
            subject.clone(),
            store.clone(),
            broker.clone(),
            checkpoints.clone(),
            RelayOptions {
                batch_size: 64,
                ..opts()
            },
        )
    };
    // Live runner, aborted twice at arbitrary points while events keep coming.
    for round in 1..=2u64 {
        let relay = Arc::new(make());
        let task = tokio::spawn({
            let relay = relay.clone();
            async move { relay.run().await }
        });
        append_events(&store, 900 * round as usize, 300).await;
        // Each round's relay is new (its counters start at 0) and has at least the 300 events
        // appended this round still to publish.
        eventually("relay progress", || async {
            relay.counters().published_total() >= 200 || task.is_finished()
        })
        .await;
        task.abort();
        let _ = task.await;
    }
    let relay = make();
    let head = store.head_position().await.unwrap();
    assert_eq!(relay.catch_up().await.unwrap(), head);
    assert_eq!(relay.checkpoint().await.unwrap(), head);

    let stored = read_all_messages(&broker, &stream).await;
    let events = store.read_all(0, 100_000, &LogFilter::All).await.unwrap();
    assert_eq!(stored.len(), events.len(), "lost or duplicated events");
    for (s, e) in stored.iter().zip(&events) {
        assert_eq!(
            s.message.message_id.as_deref(),
            Some(e.id.to_string().as_str())
        );
        assert_eq!(
            s.message.subject,
            format!("{subject}.{}", e.stream_id.category())
        );
        assert_eq!(
            s.message.header(POSITION_HEADER),
            Some(e.position.to_string().as_str())
        );
        assert_eq!(s.message.payload.as_ref(), e.payload.as_slice());
    }
    broker.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn global_log_relay_resumes_from_a_postgres_checkpoint() {
    let (stream, subject) = names("pgckpt");
    let broker = shared_broker(&stream, &subject).await;
    let schema = format!("relay_ckpt_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = SqliteStore::open(
        dir.path().join("events.db"),
        StoreOptions {
            durable: false,
            ..Default::default()
        },
    )
    .unwrap();
    append_events(&store, 0, 120).await;
    let relay = |cp: Arc<PostgresCheckpointStore>| {
        GlobalLogRelay::new(
            "pg-relay",
            subject.clone(),
            store.clone(),
            broker.clone(),
            cp,
            opts(),
        )
    };
    let cp = Arc::new(
        PostgresCheckpointStore::connect(PG_URL, &schema)
            .await
            .unwrap(),
    );
    assert_eq!(relay(cp.clone()).catch_up().await.unwrap(), 120);
    drop(cp);
    append_events(&store, 120, 30).await;
    // A new relay (new connection) resumes at 120: only the 30 new events are published.
    let cp = Arc::new(
        PostgresCheckpointStore::connect(PG_URL, &schema)
            .await
            .unwrap(),
    );
    let r = relay(cp);
    assert_eq!(r.checkpoint().await.unwrap(), 120);
    assert_eq!(r.catch_up().await.unwrap(), 150);
    assert_eq!(r.counters().published_total(), 30);
    assert_eq!(r.counters().duplicates_total(), 0);
    assert_eq!(read_all_messages(&broker, &stream).await.len(), 150);
    broker.delete_stream(&stream).await.unwrap();
    let (c, conn) = tokio_postgres::connect(PG_URL, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
