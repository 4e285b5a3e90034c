//! `attest dlq …` and `attest lag` end to end: the real binary on a temp data directory with the
//! embedded broker (SQLite store plus its `events.db.bus` state file). State is set up through
//! the library first, then the library lets go of the files before the binary runs.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use attest_bus::dlq::{dead_letter, DeadLetterConfig, Failure, FailureKind, REPLAYED_FROM_HEADER};
use attest_bus::embedded::EmbeddedBroker;
use attest_bus::{Broker, ConsumerConfig, OutgoingMessage, StreamConfig};
use attest_core::ExpectedVersion;
use attest_cqrs::projection::users_by_city::{UserEvent, UsersByCity};
use attest_cqrs::projection::{ProjectorOptions, SqliteProjector};
use attest_store::sqlite::SqliteStore;
use attest_store::{EventStore, StoreOptions};
use serde_json::Value;

fn attest(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attest"))
        .args(args)
        .env("ATTEST_DATA_DIR", dir)
        .env_remove("ATTEST_POSTGRES_URL")
        .env_remove("ATTEST_NATS_URL")
        .output()
        .expect("run attest")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn open_store(dir: &Path) -> Arc<SqliteStore> {
    SqliteStore::open(dir.join("events.db"), StoreOptions::default()).unwrap()
}

/// Stream `ORDERS` (subjects `orders.>`) with three messages; consumer `billing` dead-letters
/// the first (permanent failure) and leaves the other two unprocessed. Returns the original
/// sequence of the dead-lettered message.
fn setup_dead_letter(dir: &Path) -> u64 {
    runtime().block_on(async {
        let store = open_store(dir);
        let broker = EmbeddedBroker::open_beside(store.clone(), dir.join("events.db"))
            .await
            .unwrap();
        broker
            .ensure_stream(&StreamConfig::new("ORDERS", vec!["orders.>".into()]))
            .await
            .unwrap();
        for i in 0..3 {
            broker
                .publish(
                    OutgoingMessage::new(
                        "orders.created",
                        format!("order-{i}"),
                        format!(r#"{{"order":{i}}}"#).into_bytes(),
                    )
                    .with_idempotency_key(format!("create-order-{i}")),
                )
                .await
                .unwrap();
        }
        let dlq = DeadLetterConfig::default();
        dlq.ensure(&broker).await.unwrap();
        let c = broker
            .consumer(&ConsumerConfig::new("ORDERS", "billing"))
            .await
            .unwrap();
        let d = c
            .fetch(1, Duration::from_secs(5))
            .await
            .unwrap()
            .pop()
            .expect("one delivery");
        let now = chrono::Utc::now();
        dead_letter(
            &broker,
            &dlq,
            &d,
            &Failure {
                kind: FailureKind::Permanent,
                error: "card declined".into(),
                attempts: 1,
                first_failure: now,
                last_failure: now,
            },
        )
        .await
        .unwrap();
        d.term().await.unwrap();
        let seq = d.info.stream_sequence;
        drop(c);
        drop(broker);
        store.close().await;
        seq
    })
}

fn orders_messages(dir: &Path) -> Vec<attest_bus::StoredMessage> {
    runtime().block_on(async {
        let store = open_store(dir);
        let broker = EmbeddedBroker::open_beside(store.clone(), dir.join("events.db"))
            .await
            .unwrap();
        let m = broker
            .read_stream("ORDERS", "orders.>", 1, 100)
            .await
            .unwrap();
        drop(broker);
        store.close().await;
        m
    })
}

#[test]
fn dlq_list_shows_provenance_and_replay_republishes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let original_seq = setup_dead_letter(d);

    let o = attest(d, &["dlq", "list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&o);
    assert_eq!(rows.len(), 1, "{}", stdout(&o));
    let dl = &rows[0];
    assert_eq!(dl["consumer"], "billing");
    assert_eq!(dl["kind"], "permanent");
    assert_eq!(dl["error"], "card declined");
    assert_eq!(dl["attempts"], 1);
    assert_eq!(dl["original_stream"], "ORDERS");
    assert_eq!(dl["original_subject"], "orders.created");
    assert_eq!(dl["original_sequence"], original_seq);
    assert_eq!(dl["original_message_id"], "order-0");
    assert_eq!(dl["headers"]["Idempotency-Key"], "create-order-0");
    let id = dl["id"].as_u64().unwrap();

    // Filtering by another consumer finds nothing; the table lists the same letter.
    let o = attest(d, &["dlq", "list", "--json", "--consumer", "shipping"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(json_lines(&o).is_empty());
    let o = attest(d, &["dlq", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(
        table.contains("billing") && table.contains("card declined"),
        "{table}"
    );
    assert!(
        table.contains(&format!("ORDERS orders.created #{original_seq}")),
        "{table}"
    );

    let before = orders_messages(d);
    assert_eq!(before.len(), 3);
    let o = attest(d, &["dlq", "replay", &id.to_string(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ack: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(ack["stream"], "ORDERS");
    assert_eq!(ack["duplicate"], false);
    let after = orders_messages(d);
    assert_eq!(after.len(), 4);
    let replayed = after.last().unwrap();
    assert_eq!(ack["sequence"], replayed.sequence);
    assert_eq!(replayed.message.subject, "orders.created");
    assert_eq!(&replayed.message.payload[..], br#"{"order":0}"#);
    assert_eq!(
        replayed.message.header(REPLAYED_FROM_HEADER),
        Some(format!("DLQ:{id}").as_str())
    );
    assert_eq!(
        replayed.message.header("Idempotency-Key"),
        Some("create-order-0")
    );

    // Replaying again stores nothing new.
    let o = attest(d, &["dlq", "replay", &id.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("already replayed"), "{}", stdout(&o));
    assert_eq!(orders_messages(d).len(), 4);
}

#[test]
fn dlq_replay_of_unknown_id_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup_dead_letter(d);
    let o = attest(d, &["dlq", "replay", "999999"]);
    assert!(!o.status.success());
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("dead letter 999999"), "{err}");
    assert!(err.contains("not found"), "{err}");
    let o = attest(d, &["dlq", "replay", "999999", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(stderr(&o).trim()).unwrap();
    assert_eq!(v["error"]["code"], "dead_letter");
}

#[test]
fn lag_reports_unprocessed_messages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup_dead_letter(d);
    let o = attest(
        d,
        &["lag", "--json", "--samples", "2", "--interval-ms", "10"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["broker"], "embedded");
    let rows = v["consumers"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    let r = &rows[0];
    assert_eq!(r["consumer"], "ORDERS/billing");
    // The first message was dead-lettered and terminated; two are still unprocessed.
    assert_eq!(r["lag_messages"], 2);
    assert!(r["lag_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(r["observations"], 2);
    assert!(["OK", "WARN", "STALL", "STOP"].contains(&r["status"].as_str().unwrap()));

    // --stream selects; an unknown stream is an error.
    let o = attest(d, &["lag", "--json", "--samples", "1", "--stream", "DLQ"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(v["consumers"].as_array().unwrap().is_empty());
    let o = attest(d, &["lag", "--samples", "1", "--stream", "NOPE"]);
    assert_eq!(o.status.code(), Some(1));

    // Three samples of a consumer that does not move: lag stays, position stays (STALL).
    let o = attest(d, &["lag", "--samples", "3", "--interval-ms", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(
        table.contains("ORDERS/billing") && table.contains("STALL"),
        "{table}"
    );
}

#[test]
fn lag_reports_projection_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rm = d.join("read-model.db");
    runtime().block_on(async {
        let store = open_store(d);
        let dyn_store: Arc<dyn EventStore> = store.clone();
        let register = |i: usize| UserEvent::Registered {
            user_id: format!("u{i}"),
            name: format!("User {i}"),
            city: "Lyon".into(),
        };
        for i in 0..2 {
            let e = register(i);
            store
                .append(
                    e.stream_id().unwrap(),
                    ExpectedVersion::Any,
                    vec![e.to_new_event().unwrap()],
                )
                .await
                .unwrap();
        }
        let p = SqliteProjector::open(
            &rm,
            dyn_store,
            UsersByCity::new(),
            ProjectorOptions::default(),
        )
        .await
        .unwrap();
        p.catch_up().await.unwrap();
        for i in 2..5 {
            let e = register(i);
            store
                .append(
                    e.stream_id().unwrap(),
                    ExpectedVersion::Any,
                    vec![e.to_new_event().unwrap()],
                )
                .await
                .unwrap();
        }
        drop(p);
        store.close().await;
    });
    let rm_arg = rm.to_string_lossy().into_owned();
    let o = attest(
        d,
        &["lag", "--json", "--samples", "1", "--read-model", &rm_arg],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let ps = v["projections"].as_array().unwrap();
    assert_eq!(ps.len(), 1, "{v}");
    assert_eq!(ps[0]["projection"], "users_by_city");
    assert_eq!(ps[0]["checkpoint"], 2);
    assert_eq!(ps[0]["lag_events"], 3);
    assert!(ps[0]["lag_seconds"].as_f64().unwrap() >= 0.0);

    let o = attest(d, &["lag", "--samples", "1", "--read-model", &rm_arg]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("users_by_city"), "{}", stdout(&o));

    let missing = d.join("nope.db").to_string_lossy().into_owned();
    let o = attest(d, &["lag", "--samples", "1", "--read-model", &missing]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
}

/// `attest --nats … lag` against NATS JetStream, on a stream of its own: reports the lag and
/// leaves the consumer's stored configuration as it was.
#[test]
fn nats_lag_reattaches_without_changing_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let ns = format!("t{}x{nanos}", std::process::id());
    let stream = format!("CLI_{ns}");
    let rt = runtime();
    let broker = rt.block_on(async {
        let broker = attest_bus::nats::NatsBroker::connect("nats://127.0.0.1:4222")
            .await
            .expect("NATS at 127.0.0.1:4222");
        broker
            .ensure_stream(&StreamConfig::new(&stream, vec![format!("cli.{ns}.>")]))
            .await
            .unwrap();
        for i in 0..4 {
            broker
                .publish(OutgoingMessage::new(
                    format!("cli.{ns}.ev"),
                    format!("m-{i}"),
                    b"x".to_vec(),
                ))
                .await
                .unwrap();
        }
        broker
            .consumer(&ConsumerConfig::new(&stream, "reader").with_max_deliver(5))
            .await
            .unwrap();
        broker
    });
    let o = Command::new(env!("CARGO_BIN_EXE_attest"))
        .args(["--nats", "nats://127.0.0.1:4222", "lag", "--json"])
        .args(["--samples", "1", "--stream", &stream])
        .env("ATTEST_DATA_DIR", d)
        .output()
        .unwrap();
    let result = || {
        assert!(o.status.success(), "{}", stderr(&o));
        let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(v["broker"], "nats");
        let rows = v["consumers"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{v}");
        assert_eq!(rows[0]["consumer"], format!("{stream}/reader"));
        assert_eq!(rows[0]["lag_messages"], 4);
    };
    let outcome = std::panic::catch_unwind(result);
    rt.block_on(async {
        // The stored config was not changed by the re-attach.
        let listed = broker.consumers(&stream).await.unwrap();
        assert_eq!(
            listed,
            vec![ConsumerConfig::new(&stream, "reader").with_max_deliver(5)]
        );
        broker.delete_stream(&stream).await.unwrap();
    });
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}
