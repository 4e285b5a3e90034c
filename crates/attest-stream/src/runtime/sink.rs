//! Sinks: where outputs, late records and dead letters go, with deterministic ids.
//!
//! Every emitted record carries `(shard, seq)` and an id derived from `(job, shard, channel,
//! seq)` (see [`super::output_id`]). The runtime writes a batch to its sink *before* it
//! commits the checkpoint covering it; after a crash it replays from the checkpoint and emits
//! the same records with the same ids again, so a sink that drops records it already holds
//! makes the pipeline exactly-once:
//! - [`StoreSink`] appends to one event-store stream per shard, where the record with
//!   sequence `s` is the stream's version `s`; it appends with `ExpectedVersion::Exact` and,
//!   on a conflict, reads back what is already there, checks the ids and appends only the rest;
//! - [`BrokerSink`] publishes with the id as `Nats-Msg-Id`: the broker drops copies within its
//!   duplicate window;
//! - [`FnSink`] and [`ChannelSink`] hand records to the process (at-least-once: a replay
//!   repeats the records after the last checkpoint, with the same ids).

use async_trait::async_trait;
use attest_bus::{DynBroker, OutgoingMessage};
use attest_core::{EventId, ExpectedVersion, NewEvent, StreamId};
use attest_store::{Direction, DynStore, StoreError, StreamFrom};
use serde::Serialize;
use uuid::Uuid;

use crate::StreamError;

/// Header carrying an output's shard on broker sinks.
pub const SHARD_HEADER: &str = "Attest-Stream-Shard";
/// Header carrying an output's sequence number on broker sinks.
pub const SEQ_HEADER: &str = "Attest-Stream-Seq";

/// A record emitted by a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted<T> {
    /// Deterministic id (UUIDv5 of job, shard, channel and sequence).
    pub id: Uuid,
    /// The shard (partition) that produced it.
    pub shard: u32,
    /// Its sequence number in its shard and channel, from 0, without gaps.
    pub seq: u64,
    /// The record.
    pub value: T,
}

/// Where emitted records go. `write` gets batches in sequence order; a batch may repeat
/// records written before (after a crash), which the sink should recognise by id.
#[async_trait]
pub trait Sink<T: Send + 'static>: Send {
    /// Writes a batch; returns once it is durable (or handed over, for in-process sinks).
    async fn write(&mut self, batch: Vec<Emitted<T>>) -> Result<(), StreamError>;
}

/// Encodes a record as JSON bytes.
fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StreamError> {
    serde_json::to_vec(value).map_err(|e| StreamError::State(format!("encode output: {e}")))
}

/// Appends records to the event store, one stream per shard (`{category}-{shard}`), as JSON
/// events of one type with the deterministic ids as event ids.
pub struct StoreSink {
    store: DynStore,
    category: String,
    event_type: String,
}

impl StoreSink {
    /// Appends to streams `{category}-{shard}` with events of type `event_type`.
    pub fn new(
        store: DynStore,
        category: impl Into<String>,
        event_type: impl Into<String>,
    ) -> Self {
        StoreSink {
            store,
            category: category.into(),
            event_type: event_type.into(),
        }
    }

    /// The stream that shard `shard` writes to.
    pub fn stream_of(&self, shard: u32) -> Result<StreamId, StreamError> {
        StreamId::new(format!("{}-{shard}", self.category))
            .map_err(|e| StreamError::Config(format!("store sink stream: {e}")))
    }

    async fn append_from(
        &self,
        stream: &StreamId,
        events: &[NewEvent],
        first_seq: u64,
    ) -> Result<(), StreamError> {
        let mut skip = 0usize;
        loop {
            if skip >= events.len() {
                return Ok(());
            }
            let seq = first_seq + skip as u64;
            let expected = if seq == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(seq - 1)
            };
            match self
                .store
                .append(stream.clone(), expected, events[skip..].to_vec())
                .await
            {
                Ok(_) => return Ok(()),
                Err(
                    e @ (StoreError::WrongExpectedVersion { .. }
                    | StoreError::IdempotencyConflict { .. }),
                ) => {
                    // Someone (our previous life, or a zombie owner) already wrote part of
                    // this batch (the store reports a partial retry as an id conflict).
                    let actual = match &e {
                        StoreError::WrongExpectedVersion { actual, .. } => *actual,
                        _ => self
                            .store
                            .stream_info(stream)
                            .await?
                            .and_then(|i| i.last_version),
                    };
                    let have_next = actual.map_or(0, |v| v + 1);
                    if have_next <= seq {
                        return Err(StreamError::Checkpoint(format!(
                            "sink stream {stream} ends before version {seq} but refused the \
                             append ({e}): outputs were lost or the stream is shared"
                        )));
                    }
                    let upto = (have_next - first_seq).min(events.len() as u64) as usize;
                    self.verify(stream, &events[skip..upto], seq).await?;
                    skip = upto;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Checks that `events` are already in `stream` from version `from`, by id.
    async fn verify(
        &self,
        stream: &StreamId,
        events: &[NewEvent],
        from: u64,
    ) -> Result<(), StreamError> {
        let mut at = 0usize;
        while at < events.len() {
            let stored = self
                .store
                .read_stream(
                    stream,
                    StreamFrom::Version(from + at as u64),
                    Direction::Forward,
                    events.len() - at,
                )
                .await?;
            if stored.is_empty() {
                return Err(StreamError::Checkpoint(format!(
                    "sink stream {stream} shrank while checking version {}",
                    from + at as u64
                )));
            }
            for s in stored {
                let Some(e) = events.get(at) else { break };
                if s.id != e.id {
                    return Err(StreamError::Checkpoint(format!(
                        "sink stream {stream} version {} holds event {} but the job emits {} \
                         there: another writer uses this stream",
                        s.version, s.id, e.id
                    )));
                }
                at += 1;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl<T: Serialize + Send + Sync + 'static> Sink<T> for StoreSink {
    async fn write(&mut self, batch: Vec<Emitted<T>>) -> Result<(), StreamError> {
        // A batch may span shards only in theory (a runner has one); group consecutive runs.
        let mut i = 0;
        while i < batch.len() {
            let shard = batch[i].shard;
            let first_seq = batch[i].seq;
            let mut events = Vec::new();
            while i < batch.len() && batch[i].shard == shard {
                let e = &batch[i];
                let ev = NewEvent::new(
                    &self.event_type,
                    attest_core::CONTENT_TYPE_JSON,
                    to_json(&e.value)?,
                )
                .map_err(|e| StreamError::Config(format!("store sink event: {e}")))?
                .with_id(EventId::from_uuid(e.id));
                events.push(ev);
                i += 1;
            }
            let stream = self.stream_of(shard)?;
            self.append_from(&stream, &events, first_seq).await?;
        }
        Ok(())
    }
}

/// Publishes records as JSON to a broker, subject `{prefix}.{shard}`, with the deterministic
/// id as message id (`Nats-Msg-Id` on NATS) and headers naming shard and sequence.
pub struct BrokerSink {
    broker: DynBroker,
    prefix: String,
}

impl BrokerSink {
    /// Publishes to subjects `{prefix}.{shard}` (a broker stream must capture them).
    pub fn new(broker: DynBroker, prefix: impl Into<String>) -> Self {
        BrokerSink {
            broker,
            prefix: prefix.into(),
        }
    }
}

#[async_trait]
impl<T: Serialize + Send + Sync + 'static> Sink<T> for BrokerSink {
    async fn write(&mut self, batch: Vec<Emitted<T>>) -> Result<(), StreamError> {
        let mut messages = Vec::with_capacity(batch.len());
        for e in &batch {
            messages.push(
                OutgoingMessage::new(
                    format!("{}.{}", self.prefix, e.shard),
                    e.id.to_string(),
                    to_json(&e.value)?,
                )
                .with_header(SHARD_HEADER, e.shard.to_string())
                .with_header(SEQ_HEADER, e.seq.to_string()),
            );
        }
        self.broker.publish_batch(messages).await?;
        Ok(())
    }
}

/// A sink that calls a closure with each batch.
pub struct FnSink<F>(pub F);

#[async_trait]
impl<T, F> Sink<T> for FnSink<F>
where
    T: Send + 'static,
    F: FnMut(Vec<Emitted<T>>) -> Result<(), StreamError> + Send,
{
    async fn write(&mut self, batch: Vec<Emitted<T>>) -> Result<(), StreamError> {
        (self.0)(batch)
    }
}

/// A sink that sends each record into a Tokio channel (waiting when it is full).
pub struct ChannelSink<T>(pub tokio::sync::mpsc::Sender<Emitted<T>>);

#[async_trait]
impl<T: Send + 'static> Sink<T> for ChannelSink<T> {
    async fn write(&mut self, batch: Vec<Emitted<T>>) -> Result<(), StreamError> {
        for e in batch {
            self.0
                .send(e)
                .await
                .map_err(|_| StreamError::Config("channel sink: receiver dropped".into()))?;
        }
        Ok(())
    }
}
