//! Crash safety of the PostgreSQL backend: a child process appends (single and 2-3-stream
//! atomic appends, four concurrent tasks) and is killed with SIGKILL at random moments, several
//! rounds in a row. Afterwards every acknowledged append is present where it was acknowledged,
//! no append is partially visible, positions are gap-free, every stream's versions are
//! contiguous, and the store still takes appends (the killed sessions' head-row locks were
//! released by the server's rollback).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use attest_core::{ExpectedVersion, NewEvent, StreamId};
use attest_store::postgres::PostgresStore;
use attest_store::{Direction, EventStore, LogFilter, StoreOptions, StreamFrom};
use rand::Rng;

const URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const ROUNDS: u64 = 5;

#[derive(Debug)]
struct Ack {
    round: u64,
    task: u64,
    op: u64,
    first_position: u64,
    last_position: u64,
    streams: Vec<(String, u64, u64)>,
}

fn parse_ack(line: &str) -> Ack {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[0], "ack", "unexpected child output {line:?}");
    let n = |i: usize| f[i].parse::<u64>().unwrap();
    Ack {
        round: n(1),
        task: n(2),
        op: n(3),
        first_position: n(4),
        last_position: n(5),
        streams: f[6..]
            .iter()
            .map(|s| {
                let mut p = s.rsplitn(3, ':');
                let last = p.next().unwrap().parse().unwrap();
                let first = p.next().unwrap().parse().unwrap();
                (p.next().unwrap().to_string(), first, last)
            })
            .collect(),
    }
}

/// Runs one child until at least `min_acks` appends were acknowledged plus a random extra
/// delay, kills it with SIGKILL and returns every line it printed.
fn run_and_kill(schema: &str, round: u64, min_acks: usize, extra: Duration) -> Vec<Ack> {
    let url = format!("{URL}?application_name={}", child_app(schema));
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-postgres"))
        .args([url.as_str(), schema, &round.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while lines.len() < min_acks {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => lines.push(l),
            Err(e) => panic!("child produced no acknowledgement in round {round}: {e}"),
        }
    }
    std::thread::sleep(extra);
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "child should have been killed, exited with {status}"
    );
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    lines.iter().map(|l| parse_ack(l)).collect()
}

fn child_app(schema: &str) -> String {
    format!("crash-child-{schema}")
}

/// Waits until the server has finished with every session of the killed children: a session
/// whose client died may still be executing (or committing) what it had received.
async fn wait_for_child_sessions_to_end(schema: &str) {
    let (client, conn) = tokio_postgres::connect(URL, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let app = child_app(schema);
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&app],
                )
                .await
                .unwrap()
                .get(0);
            if n == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("sessions of the killed child never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill_and_nothing_is_partial() {
    let schema = format!(
        "pgt_{}_{}_crash",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        std::process::id()
    );
    // Create the schema up front so the children only connect.
    let store = PostgresStore::connect(URL, &schema, StoreOptions::default())
        .await
        .unwrap();
    let mut rng = rand::thread_rng();
    let mut acks = Vec::new();
    for round in 0..ROUNDS {
        let min_acks = rng.gen_range(1..40);
        let extra = Duration::from_millis(rng.gen_range(0..300));
        let schema = schema.clone();
        let got =
            tokio::task::spawn_blocking(move || run_and_kill(&schema, round, min_acks, extra))
                .await
                .unwrap();
        assert!(got.len() >= min_acks);
        acks.extend(got);
    }
    wait_for_child_sessions_to_end(&schema).await;

    let head = store.head_position().await.unwrap();
    let log = store
        .read_all(0, usize::MAX / 2, &LogFilter::All)
        .await
        .unwrap();
    // Gap-free positions.
    assert_eq!(log.len() as u64, head);
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "gap in the log");
    }
    // Group the log by append; each must be whole, contiguous, and split over streams with
    // contiguous versions.
    type Key = (u64, u64, u64);
    let mut groups: BTreeMap<Key, Vec<&attest_core::RecordedEvent>> = BTreeMap::new();
    for e in &log {
        let v: serde_json::Value = e.decode_json().unwrap();
        let key = (
            v["round"].as_u64().unwrap(),
            v["task"].as_u64().unwrap(),
            v["op"].as_u64().unwrap(),
        );
        groups.entry(key).or_default().push(e);
    }
    for (key, events) in &groups {
        let total = events[0].decode_json::<serde_json::Value>().unwrap()["total"]
            .as_u64()
            .unwrap();
        assert_eq!(
            events.len() as u64,
            total,
            "append {key:?} is partially visible"
        );
        for w in events.windows(2) {
            assert_eq!(
                w[1].position,
                w[0].position + 1,
                "append {key:?} is not contiguous"
            );
        }
        let indexes: Vec<u64> = events
            .iter()
            .map(|e| {
                e.decode_json::<serde_json::Value>().unwrap()["index"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            indexes,
            (0..total).collect::<Vec<_>>(),
            "append {key:?} out of order"
        );
    }
    // Every acknowledged append is there, exactly where it was acknowledged.
    let mut acked_keys = HashSet::new();
    for a in &acks {
        let key = (a.round, a.task, a.op);
        assert!(acked_keys.insert(key), "acknowledged twice: {key:?}");
        let events = groups
            .get(&key)
            .unwrap_or_else(|| panic!("acknowledged append {key:?} lost"));
        assert_eq!(events[0].position, a.first_position);
        assert_eq!(events.last().unwrap().position, a.last_position);
        let mut per_stream: HashMap<&str, (u64, u64)> = HashMap::new();
        for e in events {
            let entry = per_stream
                .entry(e.stream_id.as_str())
                .or_insert((e.version, e.version));
            entry.1 = e.version;
        }
        for (stream, first, last) in &a.streams {
            assert_eq!(
                per_stream.get(stream.as_str()),
                Some(&(*first, *last)),
                "{key:?} on {stream}"
            );
        }
    }
    // Versions are contiguous in every stream.
    let mut streams: Vec<&str> = log.iter().map(|e| e.stream_id.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let mut counted = 0;
    for s in &streams {
        let sid = StreamId::new(*s).unwrap();
        let events = store
            .read_stream(&sid, StreamFrom::Start, Direction::Forward, usize::MAX / 2)
            .await
            .unwrap();
        let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
        assert_eq!(
            versions,
            (0..events.len() as u64).collect::<Vec<_>>(),
            "versions of {s}"
        );
        counted += events.len();
    }
    assert_eq!(counted, log.len());
    assert!(acks.len() >= ROUNDS as usize);
    // The store keeps working after the crashes.
    let r = store
        .append(
            StreamId::new("crash-after").unwrap(),
            ExpectedVersion::NoStream,
            vec![NewEvent::json("After", &1).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(r.first_position, head + 1);
    assert_eq!(store.head_position().await.unwrap(), head + 1);
}
