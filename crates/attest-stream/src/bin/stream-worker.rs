//! A scale-out worker process (driven by `tests/scaleout_two_workers.rs`; also a template for
//! running a partitioned job).
//!
//! Usage: `stream-worker <postgres-url> <schema> <nats-url> <in-stream> <in-prefix>
//! <partitions> <job> <owner> <out-stream> <out-prefix> <lease-ttl-ms>`.
//!
//! Joins job `<job>` as worker `<owner>`: takes its share of the `<partitions>` partitions
//! through leases in PostgreSQL, and for each owned partition `p` runs a job reading broker
//! subject `<in-prefix>.p` of stream `<in-stream>` (JSON `{key, amount}` messages, event time
//! = publish time of the original event), counting records per key (a running count, one
//! output per record) and publishing `{key, count, total}` to `<out-prefix>.p` with
//! deterministic message ids. Checkpoints go to PostgreSQL, fenced by the partition's lease.
//! Prints `claimed <p> <epoch>`, `released <p>`, `lost <p>` and `ended <p> <error>` lines.
//! Stops gracefully (final checkpoints, leases released) when stdin closes.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use attest_bus::nats::NatsBroker;
use attest_bus::{DynBroker, StreamConfig};
use attest_stream::runtime::{
    json_recorded_at, BrokerSink, BrokerSource, Job, JobConfig, PostgresCheckpointStore, Worker,
    WorkerConfig, WorkerEvent,
};
use attest_stream::{Collector, Operator, StreamError, Timestamp};
use serde::{Deserialize, Serialize};

/// An input message.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Input {
    key: String,
    amount: i64,
}

/// An output: the running count and total of a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Running {
    key: String,
    count: u64,
    total: i64,
}

/// Running count and total per key (deterministic; state is the map).
#[derive(Default)]
struct RunningCount {
    keys: BTreeMap<String, (u64, i64)>,
}

impl Operator for RunningCount {
    type In = Input;
    type Out = Running;

    fn on_record(&mut self, r: Input, _t: Timestamp, out: &mut Collector<Running, Input>) {
        let e = self.keys.entry(r.key.clone()).or_default();
        e.0 += 1;
        e.1 += r.amount;
        out.emit(Running {
            key: r.key,
            count: e.0,
            total: e.1,
        });
    }

    fn on_watermark(&mut self, _w: Timestamp, _out: &mut Collector<Running, Input>) {}

    fn snapshot(&self) -> Result<Vec<u8>, StreamError> {
        serde_json::to_vec(&self.keys).map_err(|e| StreamError::State(e.to_string()))
    }

    fn restore(&mut self, s: &[u8]) -> Result<(), StreamError> {
        self.keys = serde_json::from_slice(s).map_err(|e| StreamError::State(e.to_string()))?;
        Ok(())
    }
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

async fn run(a: &[String]) -> anyhow::Result<()> {
    let arg = |i: usize, what: &str| a.get(i).cloned().context(what.to_string());
    let (url, schema, nats) = (arg(1, "url")?, arg(2, "schema")?, arg(3, "nats")?);
    let (in_stream, in_prefix) = (arg(4, "in-stream")?, arg(5, "in-prefix")?);
    let partitions: u32 = arg(6, "partitions")?.parse()?;
    let (job, owner) = (arg(7, "job")?, arg(8, "owner")?);
    let (out_stream, out_prefix) = (arg(9, "out-stream")?, arg(10, "out-prefix")?);
    let ttl = Duration::from_millis(arg(11, "lease-ttl-ms")?.parse()?);

    let coordinator = Arc::new(PostgresCheckpointStore::connect(&url, &schema).await?);
    let broker: DynBroker = Arc::new(NatsBroker::connect(&nats).await?);
    broker
        .ensure_stream(&StreamConfig::new(
            out_stream.clone(),
            vec![format!("{out_prefix}.>")],
        ))
        .await?;

    // Stop when stdin closes (the parent went away or asked us to stop).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            sink.clear();
        }
        let _ = stop_tx.send(true);
    });

    let worker = Worker::new(
        coordinator.clone(),
        WorkerConfig::new(job.clone(), owner, partitions).lease_ttl(ttl),
    );
    let start = |task: attest_stream::runtime::PartitionTask| {
        let config = JobConfig::new(job.clone())
            .shard(task.partition)
            .checkpoint_every(Duration::from_millis(200));
        let source = BrokerSource::new(
            broker.clone(),
            in_stream.clone(),
            vec![format!("{in_prefix}.{}", task.partition)],
        );
        let job = Job::new(
            config,
            source,
            json_recorded_at::<_, Input>(),
            RunningCount::default(),
            coordinator.clone(),
            BrokerSink::new(broker.clone(), out_prefix.clone()),
        )
        .with_fence(task.fence)
        .with_stop(task.stop);
        job.run()
    };
    worker
        .run(
            start,
            |e| match e {
                WorkerEvent::Claimed { partition, epoch } => {
                    say(format!("claimed {partition} {epoch}"))
                }
                WorkerEvent::Released { partition } => say(format!("released {partition}")),
                WorkerEvent::Lost { partition } => say(format!("lost {partition}")),
                WorkerEvent::Ended { partition, error } => say(format!(
                    "ended {partition} {}",
                    error.as_deref().unwrap_or("ok")
                )),
            },
            stop_rx,
        )
        .await?;
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args: Vec<String> = std::env::args().collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stream-worker: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stream-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
