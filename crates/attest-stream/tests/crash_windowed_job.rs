//! Exactly-once under SIGKILL: a windowed job (SQLite store source, SQLite or PostgreSQL
//! checkpoints, store sinks) is killed at random moments and restarted until it finishes;
//! its output, late and dead-letter streams must equal those of an uninterrupted run — same
//! events, same ids, same order, nothing twice, nothing missing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use attest_core::{EventId, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use attest_store::sqlite::SqliteStore;
use attest_store::{Direction, EventStore, StoreError, StoreOptions, StreamFrom};
use rand::{Rng, SeedableRng};

const ORDERS: u32 = 4000;

fn order_id(i: u32) -> EventId {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&i.to_be_bytes());
    b[4..8].copy_from_slice(b"CRSO");
    EventId::from_bytes(b)
}

/// Seeds the same orders (same ids and payloads) into a fresh store: 3 products, 20 ms apart
/// with up to 250 ms of disorder, every 199th order 6 s behind (late beyond the grace), and
/// two undecodable events.
async fn seed(path: &Path) {
    let store = SqliteStore::open(path, StoreOptions::default()).unwrap();
    let mut batch = Vec::new();
    for i in 0..ORDERS {
        let ev = if i == 777 || i == 2500 {
            NewEvent::new("OrderPlaced", "application/json", b"\x00garbage".to_vec()).unwrap()
        } else {
            let base = i64::from(i) * 20;
            let jitter = i64::from((i * 7919) % 250);
            let t = if i % 199 == 198 {
                base - 6000
            } else {
                base + jitter
            };
            let body = serde_json::json!({
                "product": format!("p{}", i % 3),
                "amount": f64::from(i % 101) * 12.5,
                "t": t,
            });
            NewEvent::json("OrderPlaced", &body).unwrap()
        };
        batch.push(ev.with_id(order_id(i)));
        if batch.len() == 100 {
            store
                .append(
                    StreamId::new(format!("order-{}", i / 100)).unwrap(),
                    ExpectedVersion::NoStream,
                    std::mem::take(&mut batch),
                )
                .await
                .unwrap();
        }
    }
    store.close().await;
}

async fn read(path: &Path, stream: &str) -> Vec<RecordedEvent> {
    let store = SqliteStore::open(path, StoreOptions::default()).unwrap();
    let events = match store
        .read_stream(
            &StreamId::new(stream).unwrap(),
            StreamFrom::Start,
            Direction::Forward,
            1_000_000,
        )
        .await
    {
        Ok(e) => e,
        Err(StoreError::StreamNotFound { .. }) => Vec::new(),
        Err(e) => panic!("read {stream}: {e}"),
    };
    store.close().await;
    events
}

fn worker(store: &Path, job: &str, checkpoints: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stream-crash-worker"));
    c.arg(store)
        .arg(job)
        .args(checkpoints)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c
}

/// Runs the worker to completion, killing it at random moments first (after a random number
/// of durable output batches, plus a random delay of up to 3 ms, so kills land between output
/// writes and checkpoint commits); returns the kills.
fn run_with_kills(store: &Path, job: &str, checkpoints: &[String], seed: u64) -> u32 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut kills = 0;
    for life in 0.. {
        assert!(life < 200, "the job never finished");
        let mut child = worker(store, job, checkpoints)
            .spawn()
            .expect("spawn worker");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(l) = line else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        // After 12 kills, let it finish.
        let mut kill_after = if kills < 12 {
            Some(rng.gen_range(1..12))
        } else {
            None
        };
        let mut killed = false;
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(_) => {
                    if let Some(n) = kill_after.as_mut() {
                        *n -= 1;
                        if *n == 0 {
                            std::thread::sleep(Duration::from_micros(rng.gen_range(0..3000)));
                            child.kill().expect("SIGKILL");
                            killed = true;
                            break;
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("worker silent for 120 s"),
            }
        }
        let status = child.wait().expect("reap");
        reader.join().expect("reader thread");
        if killed {
            kills += 1;
        } else {
            assert!(status.success(), "worker failed: {status}");
            return kills;
        }
    }
    unreachable!()
}

fn summary(events: &[RecordedEvent]) -> Vec<(EventId, u64, String, Vec<u8>)> {
    events
        .iter()
        .map(|e| {
            (
                e.id,
                e.version,
                e.event_type.as_str().to_string(),
                e.payload.clone(),
            )
        })
        .collect()
}

async fn check_same(reference: &Path, crashed: &Path) {
    for stream in ["orderwin-0", "orderlate-0", "orderdlq-0"] {
        let want = read(reference, stream).await;
        let got = read(crashed, stream).await;
        let ids: std::collections::HashSet<_> = got.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), got.len(), "{stream}: duplicate ids");
        assert_eq!(
            summary(&got),
            summary(&want),
            "{stream}: differs from the uninterrupted run"
        );
    }
    let outputs = read(reference, "orderwin-0").await;
    let late = read(reference, "orderlate-0").await;
    let dlq = read(reference, "orderdlq-0").await;
    // 80 s of event time, 3 products, one 4 s window starting every second: about 250.
    assert!(
        outputs.len() >= 240,
        "only {} window results",
        outputs.len()
    );
    assert_eq!(late.len(), (ORDERS / 199) as usize, "late orders");
    assert_eq!(dlq.len(), 2, "dead letters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.db");
    let crashed = dir.path().join("crashed.db");
    seed(&reference).await;
    seed(&crashed).await;
    let ref_cp = vec![
        "sqlite".to_string(),
        dir.path().join("ref-cp.db").display().to_string(),
    ];
    let cp = vec![
        "sqlite".to_string(),
        dir.path().join("cp.db").display().to_string(),
    ];
    let status = worker(&reference, "crashjob", &ref_cp)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let kills = tokio::task::spawn_blocking({
        let crashed = crashed.clone();
        move || run_with_kills(&crashed, "crashjob", &cp, 0x5eed)
    })
    .await
    .unwrap();
    assert!(kills >= 3, "only {kills} kills landed before the end");
    eprintln!("sqlite checkpoints: {kills} kills");
    check_same(&reference, &crashed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_checkpoints_survive_sigkill() {
    let url = "postgres://postgres@127.0.0.1:5432/test";
    let schema = format!(
        "h2crash_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.db");
    let crashed = dir.path().join("crashed.db");
    seed(&reference).await;
    seed(&crashed).await;
    let ref_cp = vec![
        "sqlite".to_string(),
        dir.path().join("ref-cp.db").display().to_string(),
    ];
    let cp = vec!["postgres".to_string(), url.to_string(), schema.clone()];
    assert!(worker(&reference, "crashjob", &ref_cp)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    let kills = tokio::task::spawn_blocking({
        let crashed = crashed.clone();
        move || run_with_kills(&crashed, "crashjob", &cp, 0xfeed)
    })
    .await
    .unwrap();
    assert!(kills >= 3, "only {kills} kills landed before the end");
    check_same(&reference, &crashed).await;

    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}
