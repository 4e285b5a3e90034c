//! Faust-style agents: an async function over a typed stream, with a checkpointed position.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{watch, Mutex};

use super::checkpoint::{Checkpoint, CheckpointStore};
use super::decode::{DeadLetter, Decode};
use super::ids::{output_id, Channel};
use super::sink::{Emitted, Sink};
use super::source::{RawRecord, Source, SourceRecord};
use crate::time::MIN_TIMESTAMP;
use crate::StreamError;

/// What an agent run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentReport {
    /// Values handed to the agent body.
    pub delivered: u64,
    /// Undecodable records sent to the dead-letter sink (or logged, without one).
    pub dead_letters: u64,
    /// Checkpoints committed.
    pub checkpoints: u64,
    /// Positions at the end (the last record the body finished with).
    pub positions: BTreeMap<u32, u64>,
}

/// The typed stream an agent body reads with `stream.next().await`.
///
/// Asking for the next value marks the previous one as processed; processed positions are
/// committed every `commit_every` and when the body returns. `next` returns `None` when the
/// agent is stopped, when the source is caught up (with [`Agent::until_caught_up`]), or on an
/// error (which [`Agent::run`] then returns).
pub struct AgentStream<T> {
    inner: Arc<Mutex<dyn Pull<T>>>,
}

impl<T: Send + 'static> AgentStream<T> {
    /// The next value, once the previous one is done.
    pub async fn next(&mut self) -> Option<T> {
        self.inner.lock().await.next().await
    }
}

#[async_trait]
trait Pull<T>: Send {
    async fn next(&mut self) -> Option<T>;
    async fn finish(&mut self) -> Result<AgentReport, StreamError>;
}

/// A Faust-style agent: `Agent::new(name, source, decode, checkpoints).run(|mut stream| async
/// move { while let Some(x) = stream.next().await { … } })`.
///
/// **Guarantee: at-least-once.** The position of a value is committed only after the body
/// asked for the value after it (or returned), so a crash never skips a value; values handed
/// out after the last commit are handed out again on restart. Make the body's effects
/// idempotent (e.g. `attest_bus::idempotency`, keyed by [`AgentStream`]'s record ids) for
/// exactly-once effects. Undecodable records go to the dead-letter sink and never reach the
/// body.
pub struct Agent<S, D, T> {
    name: String,
    shard: u32,
    source: S,
    decode: D,
    checkpoints: Arc<dyn CheckpointStore>,
    commit_every: Duration,
    max_batch: usize,
    poll_wait: Duration,
    until_caught_up: bool,
    dead_sink: Option<Box<dyn Sink<DeadLetter>>>,
    stop: Option<watch::Receiver<bool>>,
    _t: PhantomData<fn() -> T>,
}

/// Runs `body` as agent `name` over `source` (see [`Agent`]), until the body returns.
pub async fn agent<S, D, T, F, Fut>(
    name: impl Into<String>,
    source: S,
    decode: D,
    checkpoints: Arc<dyn CheckpointStore>,
    body: F,
) -> Result<AgentReport, StreamError>
where
    S: Source + 'static,
    D: Decode<S::Raw, T> + 'static,
    T: Send + 'static,
    F: FnOnce(AgentStream<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    Agent::new(name, source, decode, checkpoints)
        .run(body)
        .await
}

impl<S, D, T> Agent<S, D, T>
where
    S: Source + 'static,
    D: Decode<S::Raw, T> + 'static,
    T: Send + 'static,
{
    /// An agent named `name` (its checkpoint key) over `source`.
    pub fn new(
        name: impl Into<String>,
        source: S,
        decode: D,
        checkpoints: Arc<dyn CheckpointStore>,
    ) -> Self {
        Agent {
            name: name.into(),
            shard: 0,
            source,
            decode,
            checkpoints,
            commit_every: Duration::from_secs(1),
            max_batch: 256,
            poll_wait: Duration::from_millis(100),
            until_caught_up: false,
            dead_sink: None,
            stop: None,
            _t: PhantomData,
        }
    }

    /// Checkpoint key shard (default 0; one per partition in scale-out).
    pub fn shard(mut self, shard: u32) -> Self {
        self.shard = shard;
        self
    }

    /// How often processed positions are committed (default 1 s).
    pub fn commit_every(mut self, every: Duration) -> Self {
        self.commit_every = every;
        self
    }

    /// End the stream once the source is caught up (bounded inputs, tests).
    pub fn until_caught_up(mut self) -> Self {
        self.until_caught_up = true;
        self
    }

    /// Where undecodable records go (without one they are logged at `error` and skipped).
    pub fn dead_letters(mut self, sink: impl Sink<DeadLetter> + 'static) -> Self {
        self.dead_sink = Some(Box::new(sink));
        self
    }

    /// Ends the stream once `stop` turns `true`.
    pub fn stop_on(mut self, stop: watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Restores the agent's position and runs `body` over the stream; commits the final
    /// position when the body returns.
    pub async fn run<F, Fut>(self, body: F) -> Result<AgentReport, StreamError>
    where
        F: FnOnce(AgentStream<T>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut puller = Puller {
            name: self.name,
            shard: self.shard,
            source: self.source,
            decode: self.decode,
            checkpoints: self.checkpoints,
            commit_every: self.commit_every,
            max_batch: self.max_batch,
            poll_wait: self.poll_wait,
            until_caught_up: self.until_caught_up,
            dead_sink: self.dead_sink,
            stop: self.stop,
            buffer: VecDeque::new(),
            positions: BTreeMap::new(),
            delivered: None,
            dead_seq: 0,
            dirty: false,
            last_commit: Instant::now(),
            error: None,
            report: AgentReport::default(),
            _t: PhantomData,
        };
        puller.restore().await?;
        let inner: Arc<Mutex<dyn Pull<T>>> = Arc::new(Mutex::new(puller));
        body(AgentStream {
            inner: inner.clone(),
        })
        .await;
        let mut guard = inner.lock().await;
        guard.finish().await
    }
}

struct Puller<S: Source, D, T> {
    name: String,
    shard: u32,
    source: S,
    decode: D,
    checkpoints: Arc<dyn CheckpointStore>,
    commit_every: Duration,
    max_batch: usize,
    poll_wait: Duration,
    until_caught_up: bool,
    dead_sink: Option<Box<dyn Sink<DeadLetter>>>,
    stop: Option<watch::Receiver<bool>>,
    buffer: VecDeque<SourceRecord<S::Raw>>,
    positions: BTreeMap<u32, u64>,
    delivered: Option<(u32, u64)>,
    dead_seq: u64,
    dirty: bool,
    last_commit: Instant,
    error: Option<StreamError>,
    report: AgentReport,
    _t: PhantomData<fn() -> T>,
}

impl<S: Source, D: Decode<S::Raw, T>, T: Send> Puller<S, D, T> {
    async fn restore(&mut self) -> Result<(), StreamError> {
        if let Some(cp) = self.checkpoints.load(&self.name, self.shard).await? {
            self.dead_seq = cp.sequences.dead_letters;
            self.positions = cp.positions;
        }
        self.source.seek(&self.positions);
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), StreamError> {
        let cp = Checkpoint {
            positions: self.positions.clone(),
            watermark: MIN_TIMESTAMP,
            sequences: super::checkpoint::Sequences {
                dead_letters: self.dead_seq,
                ..Default::default()
            },
            ..Default::default()
        };
        self.checkpoints
            .commit(&self.name, self.shard, &cp, None)
            .await?;
        self.report.checkpoints += 1;
        self.dirty = false;
        self.last_commit = Instant::now();
        Ok(())
    }

    async fn step(&mut self) -> Result<Option<T>, StreamError> {
        if let Some((p, o)) = self.delivered.take() {
            self.positions.insert(p, o);
            self.dirty = true;
        }
        if self.dirty && self.last_commit.elapsed() >= self.commit_every {
            self.commit().await?;
        }
        loop {
            if self.stop.as_ref().is_some_and(|s| *s.borrow()) {
                return Ok(None);
            }
            let Some(rec) = self.buffer.pop_front() else {
                let batch = self.source.poll(self.max_batch, self.poll_wait).await?;
                if batch.is_empty() && self.until_caught_up {
                    return Ok(None);
                }
                self.buffer.extend(batch);
                continue;
            };
            match self.decode.decode(&rec.raw) {
                Ok((value, _time)) => {
                    self.delivered = Some((rec.partition, rec.offset));
                    self.report.delivered += 1;
                    return Ok(Some(value));
                }
                Err(reason) => {
                    let letter = DeadLetter {
                        source: self.source.name().to_string(),
                        partition: rec.partition,
                        offset: rec.offset,
                        record_id: rec.raw.record_id(),
                        reason,
                        payload: rec.raw.payload().to_vec(),
                    };
                    let seq = self.dead_seq;
                    self.dead_seq += 1;
                    self.report.dead_letters += 1;
                    match &mut self.dead_sink {
                        Some(sink) => {
                            sink.write(vec![Emitted {
                                id: output_id(&self.name, self.shard, Channel::DeadLetter, seq),
                                shard: self.shard,
                                seq,
                                value: letter,
                            }])
                            .await?
                        }
                        None => tracing::error!(agent = %self.name, offset = letter.offset,
                            reason = %letter.reason, "undecodable record (no dead-letter sink)"),
                    }
                    self.positions.insert(rec.partition, rec.offset);
                    self.dirty = true;
                }
            }
        }
    }
}

#[async_trait]
impl<S, D, T> Pull<T> for Puller<S, D, T>
where
    S: Source,
    D: Decode<S::Raw, T>,
    T: Send,
{
    async fn next(&mut self) -> Option<T> {
        if self.error.is_some() {
            return None;
        }
        match self.step().await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(agent = %self.name, error = %e, "agent stream failed");
                self.error = Some(e);
                None
            }
        }
    }

    async fn finish(&mut self) -> Result<AgentReport, StreamError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if let Some((p, o)) = self.delivered.take() {
            self.positions.insert(p, o);
            self.dirty = true;
        }
        if self.dirty {
            self.commit().await?;
        }
        self.report.positions = self.positions.clone();
        Ok(self.report.clone())
    }
}
