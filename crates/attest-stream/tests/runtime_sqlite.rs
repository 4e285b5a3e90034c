//! The runtime against real SQLite files: store source → operator → store sinks, checkpoints,
//! replay after a failure, late records, dead letters, and the agent API.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use attest_core::{Category, EventId, ExpectedVersion, NewEvent, StreamId};
use attest_store::sqlite::SqliteStore;
use attest_store::{Direction, DynStore, LogFilter, StoreOptions, StreamFrom};
use attest_stream::runtime::{
    agent, json_time_field, output_id, Agent, Channel, CheckpointStore, DeadLetter, Emitted,
    FnSink, Job, JobConfig, Late, RunMode, Sink, SqliteCheckpointStore, StoreSink, StoreSource,
};
use attest_stream::{Collector, Operator, StreamError, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    product: String,
    amount: i64,
    t: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Count {
    product: String,
    start: Timestamp,
    count: u64,
    sum: i64,
}

type OpenWindow = ((Timestamp, String), (u64, i64));

/// A minimal deterministic operator for the runtime tests: a per-product tumbling count and
/// sum over `size` ms; a window fires when the watermark reaches its end - 1; a record whose
/// window already fired is late.
#[derive(Default, Serialize, Deserialize)]
struct TumblingCount {
    size: i64,
    watermark: Option<Timestamp>,
    open: BTreeMap<(Timestamp, String), (u64, i64)>,
}

impl Operator for TumblingCount {
    type In = Order;
    type Out = Count;

    fn on_record(&mut self, o: Order, t: Timestamp, out: &mut Collector<Count, Order>) {
        let start = t.div_euclid(self.size) * self.size;
        if self.watermark.is_some_and(|w| w >= start + self.size - 1) {
            out.late(o, t);
            return;
        }
        let e = self.open.entry((start, o.product)).or_default();
        e.0 += 1;
        e.1 += o.amount;
    }

    fn on_watermark(&mut self, wm: Timestamp, out: &mut Collector<Count, Order>) {
        if self.watermark.is_some_and(|w| wm <= w) {
            return;
        }
        self.watermark = Some(wm);
        let due: Vec<_> = self
            .open
            .keys()
            .take_while(|(s, _)| s + self.size - 1 <= wm)
            .cloned()
            .collect();
        for k in due {
            if let Some((count, sum)) = self.open.remove(&k) {
                out.emit(Count {
                    product: k.1,
                    start: k.0,
                    count,
                    sum,
                });
            }
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StreamError> {
        serde_json::to_vec(&(
            self.size,
            self.watermark,
            self.open.iter().collect::<Vec<_>>(),
        ))
        .map_err(|e| StreamError::State(e.to_string()))
    }

    fn restore(&mut self, s: &[u8]) -> Result<(), StreamError> {
        let (size, wm, open): (i64, Option<Timestamp>, Vec<OpenWindow>) =
            serde_json::from_slice(s).map_err(|e| StreamError::State(e.to_string()))?;
        self.size = size;
        self.watermark = wm;
        self.open = open.into_iter().collect();
        Ok(())
    }
}

fn op() -> TumblingCount {
    TumblingCount {
        size: 1000,
        ..Default::default()
    }
}

fn order_id(i: u32) -> EventId {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&i.to_be_bytes());
    b[4..8].copy_from_slice(b"ORDR");
    EventId::from_bytes(b)
}

/// Seeds `n` orders over products p0..p2, times mostly increasing with disorder below
/// 200 ms, one very late order (index 150) and one undecodable event (index 100).
async fn seed(store: &DynStore, n: u32) -> Vec<Order> {
    let mut orders = Vec::new();
    for i in 0..n {
        let stream = StreamId::new(format!("order-{}", i % 5)).unwrap();
        let ev = if i == 100 {
            NewEvent::new("OrderPlaced", "application/json", b"{not json".to_vec()).unwrap()
        } else {
            let t = if i == 150 {
                100 // far behind: its window closed long ago
            } else {
                i64::from(i) * 37 + if i % 3 == 0 { 150 } else { 0 }
            };
            let o = Order {
                product: format!("p{}", i % 3),
                amount: i64::from(i % 17) * 100,
                t,
            };
            orders.push(o.clone());
            NewEvent::json("OrderPlaced", &o).unwrap()
        };
        store
            .append(stream, ExpectedVersion::Any, vec![ev.with_id(order_id(i))])
            .await
            .unwrap();
    }
    orders
}

/// The hand-computed windows (1 s tumbling, out-of-orderness 200 ms) and late records.
fn expected(orders: &[Order]) -> (Vec<Count>, Vec<Order>) {
    let mut open: BTreeMap<(i64, String), (u64, i64)> = BTreeMap::new();
    let mut out = Vec::new();
    let mut late = Vec::new();
    let mut max_t = i64::MIN;
    let mut wm = i64::MIN;
    for o in orders {
        let start = o.t.div_euclid(1000) * 1000;
        if wm >= start + 999 {
            late.push(o.clone());
        } else {
            let e = open.entry((start, o.product.clone())).or_default();
            e.0 += 1;
            e.1 += o.amount;
        }
        max_t = max_t.max(o.t);
        let new_wm = max_t - 200 - 1;
        if new_wm > wm {
            wm = new_wm;
            let due: Vec<_> = open
                .keys()
                .take_while(|(s, _)| s + 999 <= wm)
                .cloned()
                .collect();
            for k in due {
                let (count, sum) = open.remove(&k).unwrap();
                out.push(Count {
                    product: k.1,
                    start: k.0,
                    count,
                    sum,
                });
            }
        }
    }
    for (k, (count, sum)) in open {
        out.push(Count {
            product: k.1,
            start: k.0,
            count,
            sum,
        });
    }
    (out, late)
}

fn config(name: &str) -> JobConfig {
    JobConfig::new(name)
        .out_of_orderness(Duration::from_millis(200))
        .max_batch(64)
        .poll_wait(Duration::from_millis(20))
        .checkpoint_every(Duration::ZERO)
        .mode(RunMode::UntilCaughtUp { flush: true })
}

fn decode() -> impl FnMut(&attest_core::RecordedEvent) -> Result<(Order, Timestamp), String> + Send
{
    json_time_field(|o: &Order| o.t)
}

async fn read_outputs(store: &DynStore, stream: &str) -> Vec<(EventId, Count)> {
    let events = store
        .read_stream(
            &StreamId::new(stream).unwrap(),
            StreamFrom::Start,
            Direction::Forward,
            100_000,
        )
        .await
        .unwrap();
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            assert_eq!(e.version, i as u64);
            (e.id, e.decode_json().unwrap())
        })
        .collect()
}

fn filter() -> LogFilter {
    LogFilter::Category(Category::new("order").unwrap())
}

#[tokio::test]
async fn windowed_job_writes_outputs_late_records_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore =
        SqliteStore::open(dir.path().join("events.db"), StoreOptions::default()).unwrap();
    let orders = seed(&store, 400).await;
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(
        SqliteCheckpointStore::open(dir.path().join("cp.db"))
            .await
            .unwrap(),
    );
    let late = Arc::new(Mutex::new(Vec::new()));
    let late2 = late.clone();
    let report = Job::new(
        config("counts"),
        StoreSource::new(store.clone(), filter()),
        decode(),
        op(),
        checkpoints.clone(),
        StoreSink::new(store.clone(), "ordercount", "OrderCountComputed"),
    )
    .with_late_sink(FnSink(move |b: Vec<Emitted<Late<Order>>>| {
        late2.lock().unwrap().extend(b);
        Ok(())
    }))
    .with_dead_letter_sink(StoreSink::new(
        store.clone(),
        "orderdlq",
        "OrderUndecodable",
    ))
    .run()
    .await
    .unwrap();
    assert_eq!(report.records, 400);
    assert_eq!(report.dead_letters, 1);

    let (want, want_late) = expected(&orders);
    assert_eq!(want_late.len(), 1, "the seed has one late order");
    let got = read_outputs(&store, "ordercount-0").await;
    let values: Vec<Count> = got.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(values, want);
    for (i, (id, _)) in got.iter().enumerate() {
        assert_eq!(
            *id.as_uuid(),
            output_id("counts", 0, Channel::Output, i as u64)
        );
    }
    let late: Vec<Late<Order>> = late
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.value.clone())
        .collect();
    assert_eq!(
        late,
        vec![Late {
            record: want_late[0].clone(),
            time: 100
        }]
    );
    let dlq = store
        .read_stream(
            &StreamId::new("orderdlq-0").unwrap(),
            StreamFrom::Start,
            Direction::Forward,
            10,
        )
        .await
        .unwrap();
    assert_eq!(dlq.len(), 1);
    let letter: DeadLetter = dlq[0].decode_json().unwrap();
    assert_eq!(letter.payload, b"{not json".to_vec());
    assert_eq!(letter.record_id, Some(order_id(100).to_string()));
    assert_eq!(letter.source, "$ce-order");

    // The checkpoint covers everything: a second run reads nothing and emits nothing.
    let cp = checkpoints.load("counts", 0).await.unwrap().unwrap();
    assert_eq!(cp.sequences.outputs, want.len() as u64);
    assert_eq!(cp.sequences.dead_letters, 1);
    assert_eq!(cp.watermark, Timestamp::MAX);
    let again = Job::new(
        config("counts"),
        StoreSource::new(store.clone(), filter()),
        decode(),
        op(),
        checkpoints,
        StoreSink::new(store.clone(), "ordercount", "OrderCountComputed"),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(again.records, 0);
    assert_eq!(again.outputs, 0);
    assert_eq!(read_outputs(&store, "ordercount-0").await.len(), want.len());
}

/// A sink that writes through to a store sink but fails (after writing) on its `fail_at`-th
/// batch: outputs are durable, the checkpoint covering them is not — the crash window.
struct FailAfterWrite {
    inner: StoreSink,
    batches: usize,
    fail_at: usize,
}

#[async_trait]
impl Sink<Count> for FailAfterWrite {
    async fn write(&mut self, batch: Vec<Emitted<Count>>) -> Result<(), StreamError> {
        self.inner.write(batch).await?;
        self.batches += 1;
        if self.batches == self.fail_at {
            return Err(StreamError::Checkpoint("injected failure".into()));
        }
        Ok(())
    }
}

#[tokio::test]
async fn replay_after_failures_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    // Reference run.
    let ref_store: DynStore =
        SqliteStore::open(dir.path().join("ref.db"), StoreOptions::default()).unwrap();
    seed(&ref_store, 600).await;
    Job::new(
        config("replay"),
        StoreSource::new(ref_store.clone(), filter()),
        decode(),
        op(),
        Arc::new(
            SqliteCheckpointStore::open(dir.path().join("ref-cp.db"))
                .await
                .unwrap(),
        ),
        StoreSink::new(ref_store.clone(), "ordercount", "OrderCountComputed"),
    )
    .run()
    .await
    .unwrap();
    let want = read_outputs(&ref_store, "ordercount-0").await;
    assert!(want.len() > 20);

    // Failing runs: checkpoints only every 3rd batch, a failure after writing outputs.
    let store: DynStore =
        SqliteStore::open(dir.path().join("events.db"), StoreOptions::default()).unwrap();
    seed(&store, 600).await;
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(
        SqliteCheckpointStore::open(dir.path().join("cp.db"))
            .await
            .unwrap(),
    );
    let mut failures = 0;
    for attempt in 0..7 {
        let result = Job::new(
            config("replay").checkpoint_every(Duration::from_millis(5)),
            StoreSource::new(store.clone(), filter()),
            decode(),
            op(),
            checkpoints.clone(),
            FailAfterWrite {
                inner: StoreSink::new(store.clone(), "ordercount", "OrderCountComputed"),
                batches: 0,
                // Six failing lives, then one that runs to the end.
                fail_at: if attempt < 6 {
                    2 + attempt % 3
                } else {
                    usize::MAX
                },
            },
        )
        .run()
        .await;
        match result {
            Ok(_) => break,
            Err(StreamError::Checkpoint(m)) if m == "injected failure" => failures += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(failures, 6);
    let got = read_outputs(&store, "ordercount-0").await;
    assert_eq!(got, want, "same outputs, same ids, no duplicates");
}

#[tokio::test]
async fn store_sink_skips_what_is_already_there_and_detects_foreign_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore =
        SqliteStore::open(dir.path().join("events.db"), StoreOptions::default()).unwrap();
    let mut sink = StoreSink::new(store.clone(), "out", "Out");
    let em = |seq: u64| Emitted {
        id: output_id("j", 3, Channel::Output, seq),
        shard: 3,
        seq,
        value: seq * 10,
    };
    Sink::<u64>::write(&mut sink, (0..4).map(em).collect())
        .await
        .unwrap();
    // A replay overlapping the end, and one entirely inside.
    Sink::<u64>::write(&mut sink, (2..7).map(em).collect())
        .await
        .unwrap();
    Sink::<u64>::write(&mut sink, (1..3).map(em).collect())
        .await
        .unwrap();
    let events = store
        .read_stream(
            &StreamId::new("out-3").unwrap(),
            StreamFrom::Start,
            Direction::Forward,
            100,
        )
        .await
        .unwrap();
    let values: Vec<u64> = events.iter().map(|e| e.decode_json().unwrap()).collect();
    assert_eq!(values, vec![0, 10, 20, 30, 40, 50, 60]);
    // A different job writing to the same stream is refused, not silently skipped.
    let foreign = Emitted {
        id: output_id("other", 3, Channel::Output, 5),
        shard: 3,
        seq: 5,
        value: 1u64,
    };
    let err = Sink::<u64>::write(&mut sink, vec![foreign])
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::Checkpoint(_)), "{err}");
    // A gap (outputs lost) is refused too.
    let gap = em(9);
    assert!(Sink::<u64>::write(&mut sink, vec![gap]).await.is_err());
}

#[tokio::test]
async fn agent_delivers_at_least_once_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore =
        SqliteStore::open(dir.path().join("events.db"), StoreOptions::default()).unwrap();
    let orders = seed(&store, 120).await;
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(
        SqliteCheckpointStore::open(dir.path().join("cp.db"))
            .await
            .unwrap(),
    );

    // First life: handles 50 orders, then returns (its position is committed).
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s1 = seen.clone();
    let report = Agent::new(
        "orders-agent",
        StoreSource::new(store.clone(), filter()),
        decode(),
        checkpoints.clone(),
    )
    .until_caught_up()
    .run(|mut stream| async move {
        while let Some(o) = stream.next().await {
            let mut s = s1.lock().unwrap();
            s.push(o);
            if s.len() == 50 {
                break;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(report.delivered, 50);

    // Second life, through the free function: resumes right after the 50th.
    let s2 = seen.clone();
    let total = orders.len();
    let report = agent(
        "orders-agent",
        StoreSource::new(store.clone(), filter()),
        decode(),
        checkpoints.clone(),
        |mut stream| async move {
            while let Some(o) = stream.next().await {
                s2.lock().unwrap().push(o);
                if s2.lock().unwrap().len() == total {
                    break;
                }
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(report.delivered as usize, orders.len() - 50);
    let seen = seen.lock().unwrap().clone();
    let mut want = orders.clone();
    // The agent sees records in log order (the late one included: agents have no windows).
    assert_eq!(seen.len(), want.len());
    want.sort_by_key(|o| (o.t, o.amount, o.product.clone()));
    let mut got = seen.clone();
    got.sort_by_key(|o| (o.t, o.amount, o.product.clone()));
    assert_eq!(got, want);
    // The dead letter (index 100) was counted, not delivered.
    assert_eq!(report.dead_letters, 1);
}

#[tokio::test]
async fn outputs_do_not_depend_on_batch_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for (i, batch) in [1usize, 7, 64, 5000].into_iter().enumerate() {
        let store: DynStore =
            SqliteStore::open(dir.path().join(format!("e{i}.db")), StoreOptions::default())
                .unwrap();
        seed(&store, 300).await;
        let cp: Arc<dyn CheckpointStore> = Arc::new(
            SqliteCheckpointStore::open(dir.path().join(format!("cp{i}.db")))
                .await
                .unwrap(),
        );
        Job::new(
            config("batches").max_batch(batch),
            StoreSource::new(store.clone(), filter()),
            decode(),
            op(),
            cp,
            StoreSink::new(store.clone(), "ordercount", "OrderCountComputed"),
        )
        .run()
        .await
        .unwrap();
        results.push(read_outputs(&store, "ordercount-0").await);
    }
    assert!(!results[0].is_empty());
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
}
