//! Crash-test child for the stream runtime (driven by `tests/crash_windowed_job.rs`).
//!
//! Usage: `stream-crash-worker <store.db> <job> sqlite <checkpoints.db>` or
//! `stream-crash-worker <store.db> <job> postgres <url> <schema>`.
//!
//! Runs a windowed job over the orders already in the SQLite store at `store.db` (category
//! `order`, JSON `{product, amount, t}`): 4-second windows hopping every second, mean amount per
//! product, final results only, 300 ms out-of-orderness, 500 ms grace. Outputs go to the store
//! stream `orderwin-0`, late orders to `orderlate-0`, undecodable events to `orderdlq-0`.
//! It checkpoints every 20 ms in small batches so that a SIGKILL lands between output writes
//! and checkpoint commits, prints `out <seq>` after each durable output batch, and exits 0
//! once the input is processed and the last windows fired.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use attest_core::Category;
use attest_store::sqlite::SqliteStore;
use attest_store::{DynStore, LogFilter, StoreOptions};
use attest_stream::agg::Mean;
use attest_stream::dsl::Pipeline;
use attest_stream::runtime::{
    json_time_field, CheckpointStore, Emitted, Job, JobConfig, PostgresCheckpointStore, RunMode,
    Sink, SqliteCheckpointStore, StoreSink, StoreSource,
};
use attest_stream::window::{EmitMode, HoppingWindows};
use attest_stream::StreamError;
use attest_stream::Timestamp;
use serde::{Deserialize, Serialize};

/// One order, as seeded by the test.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    product: String,
    amount: f64,
    t: Timestamp,
}

/// The output sink, printing `out <last seq>` after each durable batch so the test can time
/// its kills.
struct Progress(StoreSink);

#[async_trait::async_trait]
impl<T: Serialize + Send + Sync + 'static> Sink<T> for Progress {
    async fn write(&mut self, batch: Vec<Emitted<T>>) -> Result<(), StreamError> {
        let last = batch.last().map(|e| e.seq);
        self.0.write(batch).await?;
        if let Some(seq) = last {
            let mut out = std::io::stdout().lock();
            // A closed stdout only means nobody watches.
            let _ = writeln!(out, "out {seq}").and_then(|_| out.flush());
        }
        Ok(())
    }
}

async fn run(args: &[String]) -> anyhow::Result<()> {
    let (Some(store_path), Some(job), Some(kind)) = (args.get(1), args.get(2), args.get(3)) else {
        anyhow::bail!(
            "usage: stream-crash-worker <store.db> <job> sqlite <cp.db> | postgres <url> <schema>"
        );
    };
    let checkpoints: Arc<dyn CheckpointStore> = match kind.as_str() {
        "sqlite" => {
            Arc::new(SqliteCheckpointStore::open(args.get(4).context("checkpoint path")?).await?)
        }
        "postgres" => Arc::new(
            PostgresCheckpointStore::connect(
                args.get(4).context("postgres url")?,
                args.get(5).context("postgres schema")?,
            )
            .await?,
        ),
        other => anyhow::bail!("unknown checkpoint store {other}"),
    };
    let store: DynStore = SqliteStore::open(store_path, StoreOptions::default())?;
    let operator = Pipeline::<Order>::new()
        .key_by(|o: &Order| o.product.clone())
        .map(|o: Order| o.amount)
        .window(
            HoppingWindows::of(Duration::from_secs(4), Duration::from_secs(1))?
                .with_grace(Duration::from_millis(500)),
        )
        .aggregate(Mean)
        .emit(EmitMode::Final);
    let config = JobConfig::new(job.as_str())
        .out_of_orderness(Duration::from_millis(300))
        .max_batch(32)
        .poll_wait(Duration::from_millis(50))
        .checkpoint_every(Duration::from_millis(20))
        .mode(RunMode::UntilCaughtUp { flush: true });
    let report = Job::new(
        config,
        StoreSource::new(store.clone(), LogFilter::Category(Category::new("order")?)),
        json_time_field(|o: &Order| o.t),
        operator,
        checkpoints,
        Progress(StoreSink::new(
            store.clone(),
            "orderwin",
            "OrderWindowComputed",
        )),
    )
    .with_late_sink(StoreSink::new(
        store.clone(),
        "orderlate",
        "OrderArrivedLate",
    ))
    .with_dead_letter_sink(StoreSink::new(
        store.clone(),
        "orderdlq",
        "OrderUndecodable",
    ))
    .run()
    .await?;
    println!(
        "done records={} outputs={} resumed={}",
        report.records,
        report.outputs,
        report.resumed_from.is_some()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stream-crash-worker: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stream-crash-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
