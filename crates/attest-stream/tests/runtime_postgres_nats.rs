//! The runtime against real PostgreSQL (checkpoints, leases, fencing) and NATS JetStream
//! (broker source, broker sink de-duplicating replays by message id).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use attest_bus::nats::NatsBroker;
use attest_bus::{DynBroker, OutgoingMessage, StreamConfig};
use attest_stream::runtime::{
    json_recorded_at, BrokerSink, BrokerSource, Checkpoint, CheckpointStore, Job, JobConfig,
    PostgresCheckpointStore, RunMode, Sequences, SqliteCheckpointStore,
};
use attest_stream::{Collector, Operator, StreamError, Timestamp};
use serde::{Deserialize, Serialize};

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const NATS: &str = "nats://127.0.0.1:4222";

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

async fn drop_schema(schema: &str) {
    let (client, conn) = tokio_postgres::connect(PG, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

fn checkpoint(offset: u64, state: &[u8]) -> Checkpoint {
    Checkpoint {
        positions: BTreeMap::from([(0, offset), (3, offset * 2)]),
        event_times: BTreeMap::from([(0, -5)]),
        watermark: 12_345,
        sequences: Sequences {
            outputs: offset + 1,
            late: 2,
            dead_letters: 3,
        },
        state: state.to_vec(),
    }
}

#[tokio::test]
async fn postgres_checkpoints_round_trip_and_leases_fence_a_zombie() {
    let schema = unique("h2lease_");
    let store = PostgresCheckpointStore::connect(PG, &schema).await.unwrap();
    assert_eq!(store.load("job", 1).await.unwrap(), None);
    let ttl = Duration::from_millis(300);

    let a = store
        .claim("job", 1, "a", ttl)
        .await
        .unwrap()
        .expect("free partition");
    assert_eq!(a.fence.epoch, 1);
    assert!(
        store.claim("job", 1, "b", ttl).await.unwrap().is_none(),
        "live lease taken"
    );
    store
        .commit("job", 1, &checkpoint(10, b"a-state"), Some(&a.fence))
        .await
        .unwrap();
    assert_eq!(
        store.load("job", 1).await.unwrap(),
        Some(checkpoint(10, b"a-state"))
    );

    // a stops renewing (a pause, a partition); b takes over after expiry.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = store
        .claim("job", 1, "b", ttl)
        .await
        .unwrap()
        .expect("expired lease");
    assert_eq!(b.fence.epoch, 2);
    // The zombie can neither renew nor commit.
    assert!(!store.renew("job", &a, ttl).await.unwrap());
    let err = store
        .commit("job", 1, &checkpoint(11, b"zombie"), Some(&a.fence))
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::Checkpoint(_)), "{err}");
    assert_eq!(
        store.load("job", 1).await.unwrap(),
        Some(checkpoint(10, b"a-state"))
    );
    store
        .commit("job", 1, &checkpoint(20, b"b-state"), Some(&b.fence))
        .await
        .unwrap();
    assert!(store.renew("job", &b, ttl).await.unwrap());
    // Released leases are claimable at once; membership counts live workers.
    store.release("job", &b).await.unwrap();
    let c = store
        .claim("job", 1, "c", ttl)
        .await
        .unwrap()
        .expect("released lease");
    assert_eq!(c.fence.epoch, 3);
    assert_eq!(store.heartbeat("job", "c", ttl).await.unwrap(), 1);
    assert_eq!(store.heartbeat("job", "d", ttl).await.unwrap(), 2);
    store.leave("job", "d").await.unwrap();
    assert_eq!(store.heartbeat("job", "c", ttl).await.unwrap(), 1);
    // Another shard and another job are independent.
    assert_eq!(store.load("job", 2).await.unwrap(), None);
    assert_eq!(store.load("other", 1).await.unwrap(), None);
    // Bad names are typed errors.
    assert!(matches!(
        PostgresCheckpointStore::connect(PG, "bad-schema;").await,
        Err(StreamError::Config(_))
    ));
    assert!(matches!(
        store.load("", 0).await,
        Err(StreamError::Config(_))
    ));
    drop(store);
    drop_schema(&schema).await;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Input {
    key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Counted {
    key: String,
    count: u64,
}

#[derive(Default)]
struct RunningCount(BTreeMap<String, u64>);

impl Operator for RunningCount {
    type In = Input;
    type Out = Counted;
    fn on_record(&mut self, r: Input, _t: Timestamp, out: &mut Collector<Counted, Input>) {
        let c = self.0.entry(r.key.clone()).or_default();
        *c += 1;
        out.emit(Counted {
            key: r.key,
            count: *c,
        });
    }
    fn on_watermark(&mut self, _w: Timestamp, _out: &mut Collector<Counted, Input>) {}
    fn snapshot(&self) -> Result<Vec<u8>, StreamError> {
        serde_json::to_vec(&self.0).map_err(|e| StreamError::State(e.to_string()))
    }
    fn restore(&mut self, s: &[u8]) -> Result<(), StreamError> {
        self.0 = serde_json::from_slice(s).map_err(|e| StreamError::State(e.to_string()))?;
        Ok(())
    }
}

#[tokio::test]
async fn broker_source_and_sink_deduplicate_a_full_replay() {
    let broker: DynBroker = Arc::new(NatsBroker::connect(NATS).await.unwrap());
    let input = unique("H2RIN_");
    let output = unique("H2ROUT_");
    let (in_prefix, out_prefix) = (unique("h2rin"), unique("h2rout"));
    broker
        .ensure_stream(&StreamConfig::new(
            input.clone(),
            vec![format!("{in_prefix}.>")],
        ))
        .await
        .unwrap();
    broker
        .ensure_stream(&StreamConfig::new(
            output.clone(),
            vec![format!("{out_prefix}.>")],
        ))
        .await
        .unwrap();
    let mut messages = Vec::new();
    for i in 0..60 {
        let body = if i == 30 {
            b"nope".to_vec()
        } else {
            serde_json::to_vec(&serde_json::json!({"key": format!("k{}", i % 4)})).unwrap()
        };
        messages.push(OutgoingMessage::new(
            format!("{in_prefix}.0"),
            format!("in-{i}"),
            body,
        ));
    }
    broker.publish_batch(messages).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let run = |cp: Arc<dyn CheckpointStore>| {
        Job::new(
            JobConfig::new("nats-job")
                .max_batch(7)
                .poll_wait(Duration::from_millis(200))
                .mode(RunMode::UntilCaughtUp { flush: true }),
            BrokerSource::new(
                broker.clone(),
                input.clone(),
                vec![format!("{in_prefix}.0")],
            ),
            json_recorded_at::<_, Input>(),
            RunningCount::default(),
            cp,
            BrokerSink::new(broker.clone(), out_prefix.clone()),
        )
        .run()
    };
    let cp1: Arc<dyn CheckpointStore> = Arc::new(
        SqliteCheckpointStore::open(dir.path().join("cp1.db"))
            .await
            .unwrap(),
    );
    let first = run(cp1.clone()).await.unwrap();
    assert_eq!(
        (first.records, first.outputs, first.dead_letters),
        (60, 59, 1)
    );
    assert_eq!(first.positions, BTreeMap::from([(0, 60)]));

    // The checkpoint is lost: a full replay publishes every output again, with the same ids.
    let cp2: Arc<dyn CheckpointStore> = Arc::new(
        SqliteCheckpointStore::open(dir.path().join("cp2.db"))
            .await
            .unwrap(),
    );
    let second = run(cp2).await.unwrap();
    assert_eq!(second.outputs, 59);
    let stored = broker
        .read_stream(&output, &format!("{out_prefix}.>"), 1, 1000)
        .await
        .unwrap();
    assert_eq!(stored.len(), 59, "the broker dropped the replayed copies");
    let counts: Vec<Counted> = stored
        .iter()
        .map(|m| serde_json::from_slice(&m.message.payload).unwrap())
        .collect();
    assert_eq!(
        counts
            .iter()
            .filter(|c| c.key == "k1")
            .map(|c| c.count)
            .max(),
        Some(15)
    );

    // The first checkpoint resumes after the end: nothing new.
    let third = run(cp1).await.unwrap();
    assert_eq!((third.records, third.outputs), (0, 0));

    broker.delete_stream(&input).await.unwrap();
    broker.delete_stream(&output).await.unwrap();
}
