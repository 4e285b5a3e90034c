//! The partitioner: spreads the global log over `N` broker subjects by key hash.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use attest_bus::relay::{
    CONTENT_TYPE_HEADER, EVENT_TYPE_HEADER, POSITION_HEADER, RECORDED_AT_HEADER, STREAM_ID_HEADER,
    STREAM_VERSION_HEADER,
};
use attest_bus::{DynBroker, OutgoingMessage, StreamConfig};
use attest_core::RecordedEvent;
use attest_store::{DynStore, LogFilter};
use tokio::sync::watch;

use super::checkpoint::{Checkpoint, CheckpointStore};
use super::ids::partition_of;
use super::source::{Source, StoreSource};
use crate::StreamError;

/// Header carrying the partition key of a partitioned event.
pub const PARTITION_KEY_HEADER: &str = "Attest-Partition-Key";

type KeyFn = Arc<dyn Fn(&RecordedEvent) -> String + Send + Sync>;

/// Reads the store's global log and publishes each event to subject `{prefix}.{p}` where
/// `p = partition_of(key(event), partitions)`, with the event id as message id (so a restart
/// that republishes its last batch stores nothing twice). Its position is checkpointed (job
/// name = its name, shard 0) after each acknowledged batch. Per partition, messages keep
/// the log's order.
pub struct Partitioner {
    name: String,
    store: DynStore,
    filter: LogFilter,
    broker: DynBroker,
    stream: String,
    prefix: String,
    partitions: u32,
    key: KeyFn,
    checkpoints: Arc<dyn CheckpointStore>,
    batch: usize,
}

impl Partitioner {
    /// Partitions the events of `store` matching `filter` into `partitions` subjects
    /// `{prefix}.{p}` of broker stream `stream`, keyed by stream id (so each aggregate's events
    /// stay in order in one partition).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: impl Into<String>,
        store: DynStore,
        filter: LogFilter,
        broker: DynBroker,
        stream: impl Into<String>,
        prefix: impl Into<String>,
        partitions: u32,
        checkpoints: Arc<dyn CheckpointStore>,
    ) -> Self {
        Partitioner {
            name: name.into(),
            store,
            filter,
            broker,
            stream: stream.into(),
            prefix: prefix.into(),
            partitions: partitions.max(1),
            key: Arc::new(|e: &RecordedEvent| e.stream_id.as_str().to_string()),
            checkpoints,
            batch: 512,
        }
    }

    /// Keys events with `key` instead of their stream id (e.g. a payload field).
    pub fn with_key(
        mut self,
        key: impl Fn(&RecordedEvent) -> String + Send + Sync + 'static,
    ) -> Self {
        self.key = Arc::new(key);
        self
    }

    /// The subjects of partition `0..partitions`.
    pub fn subjects(&self) -> Vec<String> {
        (0..self.partitions)
            .map(|p| format!("{}.{p}", self.prefix))
            .collect()
    }

    /// Creates the broker stream (`{prefix}.>`) if needed.
    pub async fn ensure_stream(&self) -> Result<(), StreamError> {
        self.broker
            .ensure_stream(&StreamConfig::new(
                self.stream.clone(),
                vec![format!("{}.>", self.prefix)],
            ))
            .await?;
        Ok(())
    }

    /// Runs until the log is caught up; returns how many events it published.
    pub async fn run_until_caught_up(&self) -> Result<u64, StreamError> {
        self.run_inner(None).await
    }

    /// Runs until `stop` turns true.
    pub async fn run(&self, stop: watch::Receiver<bool>) -> Result<u64, StreamError> {
        self.run_inner(Some(stop)).await
    }

    async fn run_inner(&self, stop: Option<watch::Receiver<bool>>) -> Result<u64, StreamError> {
        self.ensure_stream().await?;
        let mut source = StoreSource::new(self.store.clone(), self.filter.clone());
        let mut positions = self
            .checkpoints
            .load(&self.name, 0)
            .await?
            .map(|c| c.positions)
            .unwrap_or_default();
        source.seek(&positions);
        let mut published = 0u64;
        loop {
            if stop.as_ref().is_some_and(|s| *s.borrow()) {
                return Ok(published);
            }
            let wait = if stop.is_some() {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            };
            let batch = source.poll(self.batch, wait).await?;
            let Some(last) = batch.last().map(|r| r.offset) else {
                if stop.is_none() {
                    return Ok(published);
                }
                continue;
            };
            let messages: Vec<OutgoingMessage> =
                batch.iter().map(|r| self.message(&r.raw)).collect();
            published += messages.len() as u64;
            // `publish_batch` acknowledges in input order; NATS stores a connection's
            // publishes in order, so each partition keeps the log's order.
            self.broker.publish_batch(messages).await?;
            positions = BTreeMap::from([(0, last)]);
            self.checkpoints
                .commit(
                    &self.name,
                    0,
                    &Checkpoint {
                        positions: positions.clone(),
                        ..Default::default()
                    },
                    None,
                )
                .await?;
        }
    }

    fn message(&self, e: &RecordedEvent) -> OutgoingMessage {
        let key = (self.key)(e);
        let p = partition_of(key.as_bytes(), self.partitions);
        OutgoingMessage::new(
            format!("{}.{p}", self.prefix),
            e.id.to_string(),
            e.payload.clone(),
        )
        .with_header(PARTITION_KEY_HEADER, key)
        .with_header(EVENT_TYPE_HEADER, e.event_type.as_str())
        .with_header(STREAM_ID_HEADER, e.stream_id.as_str())
        .with_header(STREAM_VERSION_HEADER, e.version.to_string())
        .with_header(POSITION_HEADER, e.position.to_string())
        .with_header(CONTENT_TYPE_HEADER, e.content_type.clone())
        .with_header(RECORDED_AT_HEADER, e.recorded_at.to_rfc3339())
    }
}
