//! The job runner: source → decode → operator → sinks, with watermarks and checkpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::checkpoint::{Checkpoint, CheckpointStore, Fence, Sequences};
use super::decode::{DeadLetter, Decode, Late};
use super::ids::{output_id, Channel};
use super::sink::{Emitted, Sink};
use super::source::{RawRecord, Source};
use crate::time::MIN_TIMESTAMP;
use crate::{Collector, Operator, StreamError, Timestamp, WatermarkTracker};

/// When a job stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Run until stopped (or an error).
    Continuous,
    /// Stop once the source is caught up (a poll waited `poll_wait` and found nothing). With
    /// `flush`, the operator first gets the final watermark (`i64::MAX`) so every open window
    /// fires — for bounded inputs (batch jobs, tests, backfills).
    UntilCaughtUp {
        /// Fire everything still open before stopping.
        flush: bool,
    },
}

/// How a job runs.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Job name: the checkpoint key and part of every output id. Changing it starts over.
    pub name: String,
    /// Shard (partition) of the job this runner processes; part of checkpoint key and ids.
    pub shard: u32,
    /// How often a checkpoint is committed (default 1 s); also on graceful stop.
    pub checkpoint_interval: Duration,
    /// Most records per poll (default 1024).
    pub max_batch: usize,
    /// How long a poll waits for new records (default 100 ms).
    pub poll_wait: Duration,
    /// Bounded out-of-orderness of event times (default 0).
    pub out_of_orderness: Duration,
    /// Idle partitions stop holding the watermark back after this (processing time; default
    /// none). Makes watermarks depend on timing: see the module docs on determinism.
    pub idle_timeout: Option<Duration>,
    /// Watermarks handed to the operator are rounded down to a multiple of this many ms
    /// (default 1: every advance). Larger values call `on_watermark` less often; the sequence
    /// stays a pure function of the input, so determinism is kept.
    pub watermark_granularity: i64,
    /// When to stop.
    pub mode: RunMode,
}

impl JobConfig {
    /// Defaults for job `name`, shard 0.
    pub fn new(name: impl Into<String>) -> Self {
        JobConfig {
            name: name.into(),
            shard: 0,
            checkpoint_interval: Duration::from_secs(1),
            max_batch: 1024,
            poll_wait: Duration::from_millis(100),
            out_of_orderness: Duration::ZERO,
            idle_timeout: None,
            watermark_granularity: 1,
            mode: RunMode::Continuous,
        }
    }

    /// Sets the shard.
    pub fn shard(mut self, shard: u32) -> Self {
        self.shard = shard;
        self
    }

    /// Sets the checkpoint interval.
    pub fn checkpoint_every(mut self, every: Duration) -> Self {
        self.checkpoint_interval = every;
        self
    }

    /// Sets the batch size.
    pub fn max_batch(mut self, max: usize) -> Self {
        self.max_batch = max.max(1);
        self
    }

    /// Sets how long a poll waits.
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait;
        self
    }

    /// Sets the bounded out-of-orderness.
    pub fn out_of_orderness(mut self, d: Duration) -> Self {
        self.out_of_orderness = d;
        self
    }

    /// Sets the idleness timeout.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = Some(d);
        self
    }

    /// Sets the watermark granularity (ms, at least 1).
    pub fn watermark_granularity(mut self, ms: i64) -> Self {
        self.watermark_granularity = ms.max(1);
        self
    }

    /// Sets the run mode.
    pub fn mode(mut self, mode: RunMode) -> Self {
        self.mode = mode;
        self
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Input records read (decoded or dead-lettered) in this run.
    pub records: u64,
    /// Outputs emitted in this run.
    pub outputs: u64,
    /// Late records emitted in this run.
    pub late: u64,
    /// Dead letters emitted in this run.
    pub dead_letters: u64,
    /// Checkpoints committed in this run.
    pub checkpoints: u64,
    /// Positions restored at start (`None`: no checkpoint, started from the beginning).
    pub resumed_from: Option<BTreeMap<u32, u64>>,
    /// Positions at the end.
    pub positions: BTreeMap<u32, u64>,
    /// Sequence counters at the end.
    pub sequences: Sequences,
}

/// A job: one shard of a dataflow from a source through an operator into sinks, checkpointed.
pub struct Job<S, D, O>
where
    S: Source,
    O: Operator,
    O::In: Send + 'static,
    O::Out: Send + 'static,
{
    config: JobConfig,
    source: S,
    decode: D,
    operator: O,
    checkpoints: Arc<dyn CheckpointStore>,
    sink: Box<dyn Sink<O::Out>>,
    late_sink: Option<Box<dyn Sink<Late<O::In>>>>,
    dead_sink: Option<Box<dyn Sink<DeadLetter>>>,
    fence: Option<Fence>,
    stop: Option<watch::Receiver<bool>>,
}

impl<S, D, O> Job<S, D, O>
where
    S: Source,
    D: Decode<S::Raw, O::In>,
    O: Operator,
    O::In: Send + 'static,
    O::Out: Send + 'static,
{
    /// A job reading `source`, decoding with `decode`, processing with `operator`, writing
    /// results to `sink` and checkpoints to `checkpoints`.
    pub fn new(
        config: JobConfig,
        source: S,
        decode: D,
        operator: O,
        checkpoints: Arc<dyn CheckpointStore>,
        sink: impl Sink<O::Out> + 'static,
    ) -> Self {
        Job {
            config,
            source,
            decode,
            operator,
            checkpoints,
            sink: Box::new(sink),
            late_sink: None,
            dead_sink: None,
            fence: None,
            stop: None,
        }
    }

    /// Routes late records here (without one they are counted and logged at `warn`).
    pub fn with_late_sink(mut self, sink: impl Sink<Late<O::In>> + 'static) -> Self {
        self.late_sink = Some(Box::new(sink));
        self
    }

    /// Routes undecodable records here (without one they are counted and logged at `error`).
    pub fn with_dead_letter_sink(mut self, sink: impl Sink<DeadLetter> + 'static) -> Self {
        self.dead_sink = Some(Box::new(sink));
        self
    }

    /// Commits only while holding this lease (scale-out).
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Stops gracefully (flush, checkpoint) once `stop` turns `true`.
    pub fn with_stop(mut self, stop: watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Restores the last checkpoint and runs until the mode says stop, the stop signal fires
    /// or an error occurs. On error nothing after the last checkpoint is assumed done: run it
    /// again and it replays from there (same outputs, same ids).
    pub async fn run(self) -> Result<RunReport, StreamError> {
        let Job {
            config,
            mut source,
            mut decode,
            mut operator,
            checkpoints,
            mut sink,
            mut late_sink,
            mut dead_sink,
            fence,
            stop,
        } = self;
        let job = config.name.as_str();
        let shard = config.shard;
        let partitions = source.partitions().max(1) as usize;
        let mut tracker = WatermarkTracker::new(partitions, config.out_of_orderness);
        if let Some(t) = config.idle_timeout {
            tracker = tracker.with_idle_timeout(t);
        }
        let mut st = State {
            positions: vec![None; partitions],
            event_times: vec![None; partitions],
            watermark: MIN_TIMESTAMP,
            seq: Sequences::default(),
        };
        let mut report = RunReport::default();

        let restored = checkpoints.load(job, shard).await?;
        if let Some(cp) = restored {
            operator.restore(&cp.state)?;
            let now = Instant::now();
            for (&p, &t) in &cp.event_times {
                let i = p as usize;
                if i < partitions {
                    st.event_times[i] = Some(t);
                    tracker.observe(i, t, now);
                }
            }
            for (&p, &o) in &cp.positions {
                if let Some(slot) = st.positions.get_mut(p as usize) {
                    *slot = Some(o);
                }
            }
            tracker.restore(cp.watermark);
            st.watermark = cp.watermark;
            st.seq = cp.sequences;
            source.seek(&cp.positions);
            tracing::info!(job, shard, positions = ?cp.positions, watermark = cp.watermark,
                "job resumed from checkpoint");
            report.resumed_from = Some(cp.positions);
        } else {
            source.seek(&BTreeMap::new());
            tracing::info!(job, shard, "job starts from the beginning (no checkpoint)");
        }

        let gran = config.watermark_granularity.max(1);
        let mut collector: Collector<O::Out, O::In> = Collector::new();
        let mut last_commit = Instant::now();
        let mut dirty = false;
        let mut pending_dead: Vec<DeadLetter> = Vec::new();
        let source_name = source.name().to_string();

        loop {
            let stopping = stop.as_ref().is_some_and(|s| *s.borrow());
            if stopping {
                tracing::info!(job, shard, "job stopping on request");
                break;
            }
            let batch = source.poll(config.max_batch, config.poll_wait).await?;
            let caught_up = batch.is_empty();
            let now = Instant::now();
            for rec in batch {
                report.records += 1;
                dirty = true;
                let p = rec.partition as usize;
                if p >= partitions {
                    return Err(StreamError::Config(format!(
                        "source {source_name} returned partition {p} of {partitions}"
                    )));
                }
                st.positions[p] = Some(rec.offset);
                match decode.decode(&rec.raw) {
                    Ok((value, time)) => {
                        let slot = &mut st.event_times[p];
                        *slot = Some(slot.map_or(time, |m| m.max(time)));
                        tracker.observe(p, time, now);
                        operator.on_record(value, time, &mut collector);
                        let wm = quantize(tracker.current(now), gran);
                        if wm > st.watermark {
                            st.watermark = wm;
                            operator.on_watermark(wm, &mut collector);
                        }
                    }
                    Err(reason) => pending_dead.push(DeadLetter {
                        source: source_name.clone(),
                        partition: rec.partition,
                        offset: rec.offset,
                        record_id: rec.raw.record_id(),
                        reason,
                        payload: rec.raw.payload().to_vec(),
                    }),
                }
            }
            if caught_up {
                // Idle partitions may let time advance without records.
                let wm = quantize(tracker.current(now), gran);
                if wm > st.watermark {
                    st.watermark = wm;
                    dirty = true;
                    operator.on_watermark(wm, &mut collector);
                }
            }
            let finish = caught_up && matches!(config.mode, RunMode::UntilCaughtUp { .. });
            if finish
                && matches!(config.mode, RunMode::UntilCaughtUp { flush: true })
                && st.watermark < Timestamp::MAX
            {
                st.watermark = Timestamp::MAX;
                dirty = true;
                operator.on_watermark(Timestamp::MAX, &mut collector);
            }
            // Outputs first, then the checkpoint that covers them.
            flush(
                job,
                shard,
                &mut st.seq,
                &mut collector,
                &mut pending_dead,
                sink.as_mut(),
                &mut late_sink,
                &mut dead_sink,
                &mut report,
            )
            .await?;
            if finish {
                break;
            }
            if dirty && last_commit.elapsed() >= config.checkpoint_interval {
                commit(
                    checkpoints.as_ref(),
                    job,
                    shard,
                    &st,
                    &operator,
                    fence.as_ref(),
                )
                .await?;
                report.checkpoints += 1;
                dirty = false;
                last_commit = Instant::now();
            }
        }
        if dirty {
            commit(
                checkpoints.as_ref(),
                job,
                shard,
                &st,
                &operator,
                fence.as_ref(),
            )
            .await?;
            report.checkpoints += 1;
        }
        report.positions = st.positions_map();
        report.sequences = st.seq;
        tracing::info!(
            job,
            shard,
            records = report.records,
            outputs = report.outputs,
            checkpoints = report.checkpoints,
            "job stopped"
        );
        Ok(report)
    }
}

struct State {
    positions: Vec<Option<u64>>,
    event_times: Vec<Option<Timestamp>>,
    watermark: Timestamp,
    seq: Sequences,
}

impl State {
    fn positions_map(&self) -> BTreeMap<u32, u64> {
        self.positions
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.map(|o| (i as u32, o)))
            .collect()
    }
}

/// Rounds `wm` down to a multiple of `gran` (`MIN_TIMESTAMP` stays as is).
fn quantize(wm: Timestamp, gran: i64) -> Timestamp {
    if gran <= 1 || wm == MIN_TIMESTAMP || wm == Timestamp::MAX {
        return wm;
    }
    wm.div_euclid(gran).checked_mul(gran).unwrap_or(wm)
}

#[allow(clippy::too_many_arguments)]
async fn flush<I: Send + 'static, Out: Send + 'static>(
    job: &str,
    shard: u32,
    seq: &mut Sequences,
    collector: &mut Collector<Out, I>,
    dead: &mut Vec<DeadLetter>,
    sink: &mut dyn Sink<Out>,
    late_sink: &mut Option<Box<dyn Sink<Late<I>>>>,
    dead_sink: &mut Option<Box<dyn Sink<DeadLetter>>>,
    report: &mut RunReport,
) -> Result<(), StreamError> {
    let (outputs, late) = collector.drain();
    if !outputs.is_empty() {
        report.outputs += outputs.len() as u64;
        let batch = number(job, shard, Channel::Output, &mut seq.outputs, outputs);
        sink.write(batch).await?;
    }
    if !late.is_empty() {
        report.late += late.len() as u64;
        let late: Vec<Late<I>> = late
            .into_iter()
            .map(|(record, time)| Late { record, time })
            .collect();
        match late_sink {
            Some(s) => {
                let batch = number(job, shard, Channel::Late, &mut seq.late, late);
                s.write(batch).await?;
            }
            None => {
                let times: Vec<Timestamp> = late.iter().map(|l| l.time).collect();
                tracing::warn!(
                    job,
                    shard,
                    count = times.len(),
                    ?times,
                    "late records (no late sink configured)"
                );
                seq.late += late.len() as u64;
            }
        }
    }
    if !dead.is_empty() {
        let letters = std::mem::take(dead);
        report.dead_letters += letters.len() as u64;
        match dead_sink {
            Some(s) => {
                let batch = number(
                    job,
                    shard,
                    Channel::DeadLetter,
                    &mut seq.dead_letters,
                    letters,
                );
                s.write(batch).await?;
            }
            None => {
                for d in &letters {
                    tracing::error!(job, shard, source = %d.source, partition = d.partition,
                        offset = d.offset, reason = %d.reason,
                        "undecodable record (no dead-letter sink configured)");
                }
                seq.dead_letters += letters.len() as u64;
            }
        }
    }
    Ok(())
}

fn number<T>(
    job: &str,
    shard: u32,
    channel: Channel,
    next: &mut u64,
    values: Vec<T>,
) -> Vec<Emitted<T>> {
    values
        .into_iter()
        .map(|value| {
            let seq = *next;
            *next += 1;
            Emitted {
                id: output_id(job, shard, channel, seq),
                shard,
                seq,
                value,
            }
        })
        .collect()
}

async fn commit<O: Operator>(
    store: &dyn CheckpointStore,
    job: &str,
    shard: u32,
    st: &State,
    operator: &O,
    fence: Option<&Fence>,
) -> Result<(), StreamError> {
    let cp = Checkpoint {
        positions: st.positions_map(),
        event_times: st
            .event_times
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.map(|t| (i as u32, t)))
            .collect(),
        watermark: st.watermark,
        sequences: st.seq,
        state: operator.snapshot()?,
    };
    store.commit(job, shard, &cp, fence).await?;
    tracing::debug!(job, shard, positions = ?cp.positions, "checkpoint committed");
    Ok(())
}
