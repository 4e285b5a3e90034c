//! Checkpoint overhead: the same windowed query over an in-memory source, with checkpoints
//! every second into SQLite versus no checkpoints (a store that keeps nothing), so only the
//! checkpoint cost differs. Target: at most 20% slower with checkpoints.
//!
//! `cargo bench -p attest-stream --bench checkpoint`

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use attest_stream::agg::{Count, Mean};
use attest_stream::dsl::Pipeline;
use attest_stream::runtime::{
    Checkpoint, CheckpointStore, Emitted, Fence, FnSink, Job, JobConfig, MemorySource, RawRecord,
    RunMode, SqliteCheckpointStore,
};
use attest_stream::window::{EmitMode, HoppingWindows, TumblingWindows, WindowResult};
use attest_stream::{Operator, StreamError, Timestamp};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const EVENTS: usize = 4_000_000;
const KEYS: u32 = 1_000;

#[derive(Debug, Clone, Copy)]
struct Ev {
    key: u32,
    amount: f64,
    t: Timestamp,
}

impl RawRecord for Ev {
    fn payload(&self) -> &[u8] {
        &[]
    }
    fn record_id(&self) -> Option<String> {
        None
    }
    fn recorded_at(&self) -> Option<Timestamp> {
        Some(self.t)
    }
}

/// Keeps nothing: the "no checkpoint" baseline.
struct NoCheckpoints;

#[async_trait]
impl CheckpointStore for NoCheckpoints {
    async fn load(&self, _job: &str, _shard: u32) -> Result<Option<Checkpoint>, StreamError> {
        Ok(None)
    }
    async fn commit(
        &self,
        _job: &str,
        _shard: u32,
        _c: &Checkpoint,
        _f: Option<&Fence>,
    ) -> Result<(), StreamError> {
        Ok(())
    }
}

fn events() -> Arc<Vec<Ev>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    Arc::new(
        (0..EVENTS)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                Ev {
                    key: (x % u64::from(KEYS)) as u32,
                    amount: (x % 10_000) as f64 / 10.0,
                    // One event per ms of event time, up to 50 ms out of order.
                    t: i as i64 - (x % 50) as i64,
                }
            })
            .collect(),
    )
}

async fn run<O>(
    data: Arc<Vec<Ev>>,
    operator: O,
    checkpoints: Arc<dyn CheckpointStore>,
    name: &str,
) -> u64
where
    O: Operator<In = (u32, f64)> + 'static,
    O::Out: Send + 'static,
{
    let config = JobConfig::new(name)
        .out_of_orderness(Duration::from_millis(50))
        .max_batch(4096)
        .checkpoint_every(Duration::from_secs(1))
        .mode(RunMode::UntilCaughtUp { flush: true });
    let report = Job::new(
        config,
        MemorySource::new(data),
        |e: &Ev| Ok(((e.key, e.amount), e.t)),
        operator,
        checkpoints,
        // Outputs are consumed (dropped) in the sink, as a fast downstream would.
        FnSink(|b: Vec<Emitted<O::Out>>| {
            criterion::black_box(b);
            Ok(())
        }),
    )
    .run()
    .await
    .expect("job runs");
    report.checkpoints
}

fn hopping() -> impl Operator<In = (u32, f64), Out = WindowResult<u32, f64>> {
    Pipeline::<(u32, f64)>::new()
        .key_by(|r: &(u32, f64)| r.0)
        .map(|r: (u32, f64)| r.1)
        .window(
            HoppingWindows::of(Duration::from_secs(300), Duration::from_secs(1)).expect("valid"),
        )
        .aggregate(Mean)
        .emit(EmitMode::Final)
}

fn tumbling() -> impl Operator<In = (u32, f64), Out = WindowResult<u32, u64>> {
    Pipeline::<(u32, f64)>::new()
        .key_by(|r: &(u32, f64)| r.0)
        .map(|r: (u32, f64)| r.1)
        .window(TumblingWindows::of(Duration::from_secs(60)).expect("valid"))
        .aggregate(Count)
        .emit(EmitMode::Final)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let data = events();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite: Arc<dyn CheckpointStore> = Arc::new(
        rt.block_on(SqliteCheckpointStore::open(dir.path().join("cp.db")))
            .expect("checkpoint store"),
    );
    let none: Arc<dyn CheckpointStore> = Arc::new(NoCheckpoints);
    let mut g = c.benchmark_group("checkpoint");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.warm_up_time(Duration::from_secs(1));
    let mut run_id = 0u64;
    for (query, with) in [
        ("hopping_5m_1s_mean", false),
        ("hopping_5m_1s_mean", true),
        ("tumbling_1m_count", false),
        ("tumbling_1m_count", true),
    ] {
        let label = format!("{query}/{}", if with { "sqlite_every_1s" } else { "none" });
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    run_id += 1;
                    // A fresh job name: every run starts from scratch.
                    let name = format!("bench-{run_id}");
                    let store = if with { sqlite.clone() } else { none.clone() };
                    let data = data.clone();
                    let t0 = Instant::now();
                    rt.block_on(async {
                        if query.starts_with("hopping") {
                            run(data, hopping(), store, &name).await
                        } else {
                            run(data, tumbling(), store, &name).await
                        }
                    });
                    total += t0.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
