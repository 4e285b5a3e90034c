//! Crash safety: a child process appends (single and multi-stream, concurrently) and is
//! SIGKILLed at random moments; after each kill the store must reopen without repair, hold
//! every acknowledged append, show no partial multi-stream append, keep positions gap-free and
//! versions contiguous, and accept new appends.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use attest_core::{ExpectedVersion, NewEvent, StreamId};
use attest_store::sqlite::SqliteStore;
use attest_store::{Direction, EventStore, LogFilter, StoreOptions, StreamFrom};
use rand::{Rng, SeedableRng};

const ROUNDS: u32 = 8;

/// One acknowledged append, as printed by the child.
#[derive(Debug, Clone, Copy)]
struct Ack {
    first: u64,
    last: u64,
}

type OpKey = (u32, u16, u32);

fn parse_ack(line: &str) -> Option<(OpKey, Ack)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 6 || f[0] != "ack" {
        return None;
    }
    Some((
        (f[1].parse().ok()?, f[2].parse().ok()?, f[3].parse().ok()?),
        Ack {
            first: f[4].parse().ok()?,
            last: f[5].parse().ok()?,
        },
    ))
}

/// Runs the child for one round and kills it; returns its acknowledged appends.
fn run_child(db: &Path, round: u32, rng: &mut rand::rngs::StdRng) -> Vec<(OpKey, Ack)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-sqlite"))
        .arg(db)
        .arg(round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn crash-sqlite");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    let mut lines = Vec::new();
    // Wait for the first acknowledgement, so the kill lands while appends are in flight.
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("child acknowledged nothing within 60s");
    lines.push(first);
    let delay = Duration::from_millis(rng.gen_range(1..400));
    let deadline = Instant::now() + delay;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("child exited on its own"),
        }
    }
    child.kill().expect("SIGKILL child");
    let status = child.wait().expect("wait child");
    assert!(!status.success(), "child must have been killed");
    // Everything the child flushed before dying is still in the pipe.
    reader.join().expect("reader thread");
    lines.extend(rx.try_iter());
    lines
        .iter()
        .map(|l| parse_ack(l).unwrap_or_else(|| panic!("bad line from child: {l:?}")))
        .collect()
}

async fn check_store(db: &Path, round: u32, acked: &HashMap<OpKey, Ack>) {
    let store =
        SqliteStore::open(db, StoreOptions::default()).expect("store reopens without repair");
    let head = store.head_position().await.unwrap();
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 1000, &LogFilter::All).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        all.extend(page);
    }
    let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=head).collect::<Vec<_>>(),
        "round {round}: positions must be 1..=head without gaps"
    );

    // Group events by the append that wrote them.
    let mut ops: BTreeMap<OpKey, Vec<(u64, u64)>> = BTreeMap::new();
    let mut probes = 0u32;
    for e in &all {
        let v: serde_json::Value = e.decode_json().unwrap();
        if v.get("probe").is_some() {
            probes += 1;
            continue;
        }
        let key = (
            v["round"].as_u64().unwrap() as u32,
            v["task"].as_u64().unwrap() as u16,
            v["seq"].as_u64().unwrap() as u32,
        );
        ops.entry(key)
            .or_default()
            .push((e.position, v["total"].as_u64().unwrap()));
    }
    assert_eq!(probes, round, "every earlier probe append survives");
    for (key, evs) in &ops {
        let total = evs[0].1;
        assert_eq!(
            evs.len() as u64,
            total,
            "append {key:?} is partially visible"
        );
        let (lo, hi) = (evs[0].0, evs[evs.len() - 1].0);
        assert_eq!(
            hi - lo + 1,
            total,
            "append {key:?} is not contiguous in the log"
        );
    }
    for (key, ack) in acked {
        let evs = ops
            .get(key)
            .unwrap_or_else(|| panic!("acknowledged append {key:?} is lost"));
        assert_eq!(
            (evs[0].0, evs[evs.len() - 1].0),
            (ack.first, ack.last),
            "append {key:?} moved"
        );
    }
    // Versions contiguous per stream, and every event is in exactly one stream.
    let mut streams: Vec<StreamId> = all.iter().map(|e| e.stream_id.clone()).collect();
    streams.sort();
    streams.dedup();
    let mut in_streams = 0;
    for s in &streams {
        let evs = store
            .read_stream(s, StreamFrom::Start, Direction::Forward, usize::MAX / 2)
            .await
            .unwrap();
        let versions: Vec<u64> = evs.iter().map(|e| e.version).collect();
        assert_eq!(
            versions,
            (0..evs.len() as u64).collect::<Vec<_>>(),
            "versions of {s}"
        );
        assert!(evs.windows(2).all(|w| w[0].position < w[1].position));
        in_streams += evs.len();
    }
    assert_eq!(in_streams, all.len());
    let unacked = ops.keys().filter(|k| !acked.contains_key(k)).count();
    eprintln!(
        "round {round}: head {head}, {} appends stored ({} acknowledged so far, {unacked} committed but unacknowledged)",
        ops.len(),
        acked.len()
    );
    // The store accepts new appends right away.
    let probe = NewEvent::json("ProbeAppended", &serde_json::json!({ "probe": round })).unwrap();
    let r = store
        .append(
            StreamId::new(format!("probe-{round}")).unwrap(),
            ExpectedVersion::NoStream,
            vec![probe],
        )
        .await
        .unwrap();
    assert_eq!(r.first_position, head + 1);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writer_loses_nothing_acknowledged_and_leaves_no_partial_append() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xC0FFEE);
    let mut acked: HashMap<OpKey, Ack> = HashMap::new();
    let mut total_acks = 0;
    for round in 0..ROUNDS {
        let db2 = db.clone();
        let mut r2 = rand::rngs::StdRng::seed_from_u64(rng.gen());
        let acks = tokio::task::spawn_blocking(move || run_child(&db2, round, &mut r2))
            .await
            .unwrap();
        assert!(!acks.is_empty());
        total_acks += acks.len();
        acked.extend(acks);
        check_store(&db, round, &acked).await;
    }
    assert_eq!(acked.len(), total_acks, "no append acknowledged twice");
}
