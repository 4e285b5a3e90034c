//! Scale-out with two worker processes against real PostgreSQL and NATS JetStream.
//!
//! A partitioner spreads a store's events over 4 broker subjects by key hash. Two
//! `stream-worker` processes share the 4 partitions through leases; one is killed with
//! SIGKILL mid-stream and the survivor takes its partitions over after the lease expires.
//! Every partition's output must equal that of a single process that ran alone: same
//! records in the same order with the same sequence numbers, nothing duplicated, nothing lost.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use attest_bus::nats::NatsBroker;
use attest_bus::{DynBroker, StoredMessage, StreamConfig};
use attest_core::{EventId, ExpectedVersion, NewEvent, StreamId};
use attest_store::sqlite::SqliteStore;
use attest_store::{DynStore, LogFilter, StoreOptions};
use attest_stream::runtime::{
    partition_of, CheckpointStore, Partitioner, SqliteCheckpointStore, SEQ_HEADER,
};

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const NATS: &str = "nats://127.0.0.1:4222";
const PARTITIONS: u32 = 4;
const KEYS: u32 = 24;

struct Names {
    schema: String,
    input: String,
    in_prefix: String,
    out: String,
    out_prefix: String,
    reference: String,
    ref_prefix: String,
}

impl Names {
    fn new() -> Self {
        let s = format!(
            "{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        Names {
            schema: format!("h2scale_{s}"),
            input: format!("H2IN_{s}"),
            in_prefix: format!("h2in{s}"),
            out: format!("H2OUT_{s}"),
            out_prefix: format!("h2out{s}"),
            reference: format!("H2REF_{s}"),
            ref_prefix: format!("h2ref{s}"),
        }
    }
}

/// A worker child and the lines it prints (read on a thread).
struct WorkerProc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl WorkerProc {
    fn spawn(n: &Names, job: &str, owner: &str, out: &str, out_prefix: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stream-worker"))
            .args([
                PG,
                &n.schema,
                NATS,
                &n.input,
                &n.in_prefix,
                &PARTITIONS.to_string(),
                job,
                owner,
                out,
                out_prefix,
                "2000",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn stream-worker");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        WorkerProc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    /// Partitions currently held according to its own claimed/released/lost lines.
    fn held(&mut self) -> BTreeSet<u32> {
        self.drain();
        let mut held = BTreeSet::new();
        for l in &self.seen {
            let f: Vec<&str> = l.split_whitespace().collect();
            let p: u32 = f[1].parse().unwrap();
            match f[0] {
                "claimed" => {
                    held.insert(p);
                }
                _ => {
                    held.remove(&p);
                }
            }
        }
        held
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    fn stop(mut self) {
        // Closing stdin asks for a graceful stop.
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "worker exited with {status}");
    }
}

fn event_id(i: u32) -> EventId {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&i.to_be_bytes());
    b[4..8].copy_from_slice(b"SCAL");
    EventId::from_bytes(b)
}

async fn append_inputs(store: &DynStore, range: std::ops::Range<u32>) {
    for i in range {
        let key = format!("k{}", i % KEYS);
        let ev = NewEvent::json(
            "AmountRecorded",
            &serde_json::json!({"key": key, "amount": i}),
        )
        .unwrap()
        .with_id(event_id(i));
        store
            .append(
                StreamId::new(format!("acct-{key}")).unwrap(),
                ExpectedVersion::Any,
                vec![ev],
            )
            .await
            .unwrap();
    }
}

/// Reads every message of `stream` (subjects `{prefix}.*`) from sequence 1.
async fn read_all(broker: &DynBroker, stream: &str, prefix: &str) -> Vec<StoredMessage> {
    let mut out = Vec::new();
    let mut next = 1;
    loop {
        let page = broker
            .read_stream(stream, &format!("{prefix}.>"), next, 500)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        next = last.sequence + 1;
        out.extend(page);
    }
    out
}

/// Per partition: (seq, payload) in stream order.
fn by_partition(msgs: &[StoredMessage]) -> BTreeMap<u32, Vec<(u64, serde_json::Value)>> {
    let mut m: BTreeMap<u32, Vec<(u64, serde_json::Value)>> = BTreeMap::new();
    for s in msgs {
        let p: u32 = s
            .message
            .subject
            .rsplit('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let seq: u64 = s.message.header(SEQ_HEADER).unwrap().parse().unwrap();
        m.entry(p)
            .or_default()
            .push((seq, serde_json::from_slice(&s.message.payload).unwrap()));
    }
    m
}

async fn count(broker: &DynBroker, stream: &str, prefix: &str, next: &mut u64, n: &mut usize) {
    loop {
        let page = broker
            .read_stream(stream, &format!("{prefix}.>"), *next, 500)
            .await
            .unwrap();
        let Some(last) = page.last() else { return };
        *next = last.sequence + 1;
        *n += page.len();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_partitions_and_take_over_after_a_kill() {
    let n = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore =
        SqliteStore::open(dir.path().join("events.db"), StoreOptions::default()).unwrap();
    let broker: DynBroker = Arc::new(NatsBroker::connect(NATS).await.unwrap());
    let cp: Arc<dyn CheckpointStore> = Arc::new(
        SqliteCheckpointStore::open(dir.path().join("cp.db"))
            .await
            .unwrap(),
    );
    let partitioner = Partitioner::new(
        "partitioner",
        store.clone(),
        LogFilter::All,
        broker.clone(),
        n.input.clone(),
        n.in_prefix.clone(),
        PARTITIONS,
        cp,
    )
    .with_key(|e| e.stream_id.id_part().to_string());

    for (stream, prefix) in [(&n.out, &n.out_prefix), (&n.reference, &n.ref_prefix)] {
        broker
            .ensure_stream(&StreamConfig::new(
                stream.clone(),
                vec![format!("{prefix}.>")],
            ))
            .await
            .unwrap();
    }

    // Phase 1: half the input, two workers.
    append_inputs(&store, 0..600).await;
    assert_eq!(partitioner.run_until_caught_up().await.unwrap(), 600);
    let mut a = WorkerProc::spawn(&n, "job", "worker-a", &n.out, &n.out_prefix);
    let mut b = WorkerProc::spawn(&n, "job", "worker-b", &n.out, &n.out_prefix);
    let (mut next, mut outputs) = (1u64, 0usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        count(&broker, &n.out, &n.out_prefix, &mut next, &mut outputs).await;
        let (ha, hb) = (a.held(), b.held());
        assert!(
            ha.is_disjoint(&hb),
            "a partition has two owners: {ha:?} {hb:?}"
        );
        if outputs == 600 && ha.len() == 2 && hb.len() == 2 {
            break;
        }
        assert!(outputs <= 600, "{outputs} outputs for 600 inputs");
        assert!(
            Instant::now() < deadline,
            "phase 1: {outputs} outputs, a {ha:?}, b {hb:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let taken = a.held();

    // Phase 2: kill a; the rest of the input arrives; b takes a's partitions over.
    a.kill();
    append_inputs(&store, 600..1200).await;
    assert_eq!(partitioner.run_until_caught_up().await.unwrap(), 600);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        count(&broker, &n.out, &n.out_prefix, &mut next, &mut outputs).await;
        if outputs == 1200 && b.held().len() == PARTITIONS as usize {
            break;
        }
        assert!(outputs <= 1200, "{outputs} outputs for 1200 inputs");
        assert!(
            Instant::now() < deadline,
            "phase 2: {outputs} outputs, b holds {:?}",
            b.held()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.drain();
    let b_claims: Vec<&String> = b.seen.iter().filter(|l| l.starts_with("claimed")).collect();
    for p in &taken {
        assert!(
            b_claims
                .iter()
                .any(|l| l.starts_with(&format!("claimed {p} "))),
            "b never claimed {p}: {:?}",
            b.seen
        );
    }
    b.stop();

    // Reference: one worker alone over the same input.
    let solo = WorkerProc::spawn(&n, "solo", "worker-solo", &n.reference, &n.ref_prefix);
    let (mut rnext, mut routputs) = (1u64, 0usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    while routputs < 1200 {
        assert!(
            Instant::now() < deadline,
            "single worker: {routputs} outputs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        count(
            &broker,
            &n.reference,
            &n.ref_prefix,
            &mut rnext,
            &mut routputs,
        )
        .await;
    }
    solo.stop();

    let got = by_partition(&read_all(&broker, &n.out, &n.out_prefix).await);
    let want = by_partition(&read_all(&broker, &n.reference, &n.ref_prefix).await);
    assert_eq!(got.len(), PARTITIONS as usize);
    assert_eq!(got, want, "two workers with a kill differ from one worker");
    // And the oracle: per partition, the running count of each key in input order.
    for (p, outs) in &got {
        for (i, (seq, _)) in outs.iter().enumerate() {
            assert_eq!(*seq, i as u64);
        }
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for (_, v) in outs {
            let key = v["key"].as_str().unwrap().to_string();
            assert_eq!(partition_of(key.as_bytes(), PARTITIONS), *p);
            let c = counts.entry(key).or_default();
            *c += 1;
            assert_eq!(v["count"].as_u64().unwrap(), *c);
        }
    }

    for s in [&n.input, &n.out, &n.reference] {
        broker.delete_stream(s).await.unwrap();
    }
    let (client, conn) = tokio_postgres::connect(PG, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA \"{}\" CASCADE", n.schema))
        .await
        .unwrap();
}
