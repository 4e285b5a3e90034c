//! The runtime: sources, checkpoints, sinks, the job runner, agents and scale-out.
//!
//! A [`Job`] drives one [`Operator`](crate::Operator) over one [`Source`]: it polls a batch,
//! decodes each record ([`Decode`]; failures become [`DeadLetter`]s), feeds
//! `on_record`, advances the [`WatermarkTracker`](crate::WatermarkTracker) and calls
//! `on_watermark`, hands results to a [`Sink`] and late records to a late sink, and commits a
//! [`Checkpoint`] every `checkpoint_interval` (default 1 s) and on a graceful stop.
//!
//! ```no_run
//! # use std::sync::Arc; use std::time::Duration;
//! # use attest_stream::runtime::*; use attest_stream::{agg::Count, dsl::Pipeline, window::*};
//! # async fn demo(store: attest_store::DynStore) -> Result<(), attest_stream::StreamError> {
//! #[derive(Clone, serde::Deserialize, serde::Serialize)]
//! struct Order { product: String, amount: f64, t: i64 }
//! let counts = Pipeline::<Order>::new()
//!     .key_by(|o: &Order| o.product.clone())
//!     .window(TumblingWindows::of(Duration::from_secs(60))?)
//!     .aggregate(Count)
//!     .emit(EmitMode::Final);
//! Job::new(
//!     JobConfig::new("order-counts").out_of_orderness(Duration::from_secs(2)),
//!     StoreSource::new(store.clone(), attest_store::LogFilter::All),
//!     json_time_field(|o: &Order| o.t),
//!     counts,
//!     Arc::new(SqliteCheckpointStore::open("checkpoints.db").await?),
//!     StoreSink::new(store, "ordercounts", "OrderCountComputed"),
//! )
//! .run()
//! .await?;
//! # Ok(()) }
//! ```
//!
//! # Positions
//! A source has partitions; every record carries `(partition, offset)`. For
//! [`StoreSource`] there is one partition and the offset is the global log position; for
//! [`BrokerSource`] each subject filter is a partition and the offset is the broker stream
//! sequence. A checkpoint stores, per partition, the offset of the last record processed
//! (and its largest event time, so the watermark tracker resumes with the same view).
//!
//! # Checkpoints
//! One row per `(job, shard)` in SQLite ([`SqliteCheckpointStore`], its own file) or
//! PostgreSQL ([`PostgresCheckpointStore`]), replaced in **one transaction**: positions, the
//! operator snapshot, the watermark and the output sequence counters ([`Sequences`]: outputs,
//! late records, dead letters). Nothing else carries state.
//!
//! # Exactly-once
//! 1. Operators are deterministic, and the runner makes their *input* deterministic too: it
//!    processes records one at a time in source order and computes the watermark after each
//!    record from event times only (bounded out-of-orderness; optionally rounded down to a
//!    `watermark_granularity`), so the sequence of `on_record` / `on_watermark` calls — hence
//!    the outputs — does not depend on batch boundaries or on where a previous life stopped.
//! 2. Each output gets the next sequence number of its channel, and its id is a UUIDv5 of
//!    `(job, shard, channel, seq)` ([`output_id`]).
//! 3. Outputs are written to the sink **before** the checkpoint that covers them commits.
//!    A crash between the two replays from the previous checkpoint: the restored state and
//!    sequence counters regenerate the same outputs with the same ids, and the sinks drop
//!    what they already hold ([`StoreSink`]: stream version = output sequence, appended with
//!    `ExpectedVersion::Exact`, conflicts resolved by reading back and comparing ids;
//!    [`BrokerSink`]: the id is the `Nats-Msg-Id`, JetStream drops copies within its duplicate
//!    window — so a job must not stay down longer than that window with outputs in flight).
//!    Nothing is lost (the checkpoint never runs ahead of the sink) and nothing is duplicated.
//!    `tests/crash_windowed_job.rs` kills a job with SIGKILL at random points and compares
//!    the output streams, ids included, with an uninterrupted run.
//! 4. [`FnSink`] / [`ChannelSink`] hand records to the process: at-least-once, with stable ids
//!    the receiver can de-duplicate on.
//!
//! **What breaks determinism:** an idleness timeout (processing time decides when an idle
//! partition stops holding the watermark back) and sources with several partitions (their
//! interleaving depends on timing). Both still give at-least-once with stable ids per
//! sequence number, but a replay may compute different results for the same ids. For
//! exactly-once, run one partition per job shard — which is what scale-out does.
//!
//! # Idleness
//! `JobConfig::idle_timeout` excludes partitions that produced nothing for that long from the
//! watermark (Flink's `withIdleness`); when every partition is idle the watermark stays
//! where it is. A bounded input ends with [`RunMode::UntilCaughtUp`]`{ flush: true }`: the
//! final watermark (`i64::MAX`) fires every open window, so keys that went quiet get their
//! final results.
//!
//! # Late output and dead letters
//! Records the operator routes to its late side output go to the late sink as [`Late`]
//! (record + event time) with their own sequence and ids; undecodable records go to the
//! dead-letter sink as [`DeadLetter`] (source, partition, offset, record id, reason, raw
//! payload). Neither stalls the job. Without those sinks they are counted in the
//! [`RunReport`] and logged (`warn` / `error`) — never dropped silently.
//!
//! # Agents
//! [`agent`] / [`Agent`] run a Faust-style async body over a typed stream with a
//! checkpointed position: **at-least-once** (a position is committed only after the body
//! asked for the next value or returned).
//!
//! # Scale-out
//! - A [`Partitioner`] reads the global log and publishes each event to `{prefix}.{p}`, with
//!   `p = partition_of(key, N)` (a stable FNV-1a hash; the key is the stream id by default)
//!   and the event id as message id; it checkpoints its log position.
//! - [`Worker`]s share the N partitions through leases in PostgreSQL
//!   (`stream_leases(job, partition, owner, epoch, expires_at)` plus `stream_members` for
//!   live workers, all times on the database clock). Every tick a worker heartbeats, renews
//!   its leases, and keeps `ceil(N / live workers)` partitions: it gives extras back after a
//!   graceful stop of their jobs, or claims free / expired ones (`claim` bumps the epoch).
//!   Each owned partition runs its own [`Job`] (shard = partition) over `{prefix}.{p}`.
//! - **Fencing:** a job commits with its lease as [`Fence`]; the PostgreSQL commit locks the
//!   lease row and checks `(owner, epoch)` in the checkpoint's own transaction, so a zombie
//!   whose partition was taken over cannot commit. Its sink writes are harmless: they carry
//!   the same deterministic ids as the new owner's and are de-duplicated.
//! - A killed worker stops renewing; after the lease TTL the survivors claim its partitions
//!   and resume from their last checkpoints.
//!
//! ## Running two workers
//! ```text
//! # once: the partitioner (here from a program using Partitioner::run), then on each machine:
//! cargo run -p attest-stream --bin stream-worker -- \
//!     postgres://postgres@127.0.0.1:5432/test streams nats://127.0.0.1:4222 \
//!     ORDERS orders 8 order-job worker-$(hostname)-$$ ORDER_OUT orderout 10000
//! ```
//! Start it twice (different owner ids): each takes 4 of the 8 partitions; kill one and the
//! other takes all 8 within the lease TTL (10 s here). `tests/scaleout_two_workers.rs` does
//! exactly this with SIGKILL and checks the outputs against a single worker's.

mod agent;
pub mod checkpoint;
mod decode;
mod ids;
mod partitioner;
mod runner;
mod sink;
mod source;
mod worker;

pub use agent::{agent, Agent, AgentReport, AgentStream};
pub use checkpoint::{
    Checkpoint, CheckpointStore, Fence, Lease, PostgresCheckpointStore, Sequences,
    SqliteCheckpointStore,
};
pub use decode::{json_recorded_at, json_time_field, DeadLetter, Decode, Late};
pub use ids::{output_id, partition_of, stable_hash, Channel};
pub use partitioner::{Partitioner, PARTITION_KEY_HEADER};
pub use runner::{Job, JobConfig, RunMode, RunReport};
pub use sink::{
    BrokerSink, ChannelSink, Emitted, FnSink, Sink, StoreSink, SEQ_HEADER, SHARD_HEADER,
};
pub use source::{BrokerSource, MemorySource, RawRecord, Source, SourceRecord, StoreSource};
pub use worker::{PartitionTask, Worker, WorkerConfig, WorkerEvent};
