//! Sources: where a job's records come from, and the position of each one.
//!
//! A source covers one or more *partitions*; each record carries its partition and its
//! *offset* in it (the store's global position, or the broker stream sequence). A job resumes
//! a source with [`Source::seek`] to the offsets stored in its last checkpoint: the first
//! record delivered after a seek is the first one *after* the stored offset.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use attest_bus::{DynBroker, StoredMessage};
use attest_core::{Position, RecordedEvent};
use attest_store::{DynStore, LogFilter};
use tokio::sync::watch;

use crate::{StreamError, Timestamp};

/// One record read from a source, before decoding.
#[derive(Debug, Clone)]
pub struct SourceRecord<R> {
    /// Index of the partition it was read from (0-based, below [`Source::partitions`]).
    pub partition: u32,
    /// Its offset in that partition (global position or stream sequence); increases.
    pub offset: u64,
    /// The raw event or message.
    pub raw: R,
}

/// What the runtime needs to know about a raw record besides its decoded value.
pub trait RawRecord: Send + Sync + 'static {
    /// The payload bytes (kept in dead letters).
    fn payload(&self) -> &[u8];
    /// The record's own id (event id, message id), for dead-letter provenance.
    fn record_id(&self) -> Option<String>;
    /// When the log stored it, in ms since the epoch (the envelope's `recorded_at`, or the
    /// broker's publish time) — one choice of event time.
    fn recorded_at(&self) -> Option<Timestamp>;
}

impl RawRecord for RecordedEvent {
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn record_id(&self) -> Option<String> {
        Some(self.id.to_string())
    }
    fn recorded_at(&self) -> Option<Timestamp> {
        Some(self.recorded_at.timestamp_millis())
    }
}

impl RawRecord for StoredMessage {
    fn payload(&self) -> &[u8] {
        &self.message.payload
    }
    fn record_id(&self) -> Option<String> {
        self.message.message_id.clone()
    }
    /// The original commit time when the message was relayed from the store (header
    /// `Attest-Recorded-At`), else the broker's publish time.
    fn recorded_at(&self) -> Option<Timestamp> {
        self.message
            .header(attest_bus::relay::RECORDED_AT_HEADER)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis())
            .or(Some(self.message.published.timestamp_millis()))
    }
}

/// A partitioned, replayable input.
#[async_trait]
pub trait Source: Send {
    /// The raw record type.
    type Raw: RawRecord;

    /// A name for logs and dead-letter provenance.
    fn name(&self) -> &str;

    /// How many partitions it covers.
    fn partitions(&self) -> u32;

    /// Resumes after the given offsets (partitions absent from the map start at the
    /// beginning).
    fn seek(&mut self, after: &BTreeMap<u32, u64>);

    /// Up to `max` records, waiting up to `wait` for the first one; an empty batch means the
    /// source is caught up.
    async fn poll(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<SourceRecord<Self::Raw>>, StreamError>;
}

/// The event store's global log (or one category of it) as a single partition whose offsets
/// are global positions.
pub struct StoreSource {
    name: String,
    store: DynStore,
    filter: LogFilter,
    after: Position,
    head: watch::Receiver<Position>,
}

impl StoreSource {
    /// Reads `store`'s global log, keeping the events that match `filter`.
    pub fn new(store: DynStore, filter: LogFilter) -> Self {
        let name = match &filter {
            LogFilter::All => "$all".to_string(),
            LogFilter::Category(c) => format!("$ce-{}", c.as_str()),
        };
        let head = store.head_watch();
        StoreSource {
            name,
            store,
            filter,
            after: 0,
            head,
        }
    }
}

#[async_trait]
impl Source for StoreSource {
    type Raw = RecordedEvent;

    fn name(&self) -> &str {
        &self.name
    }

    fn partitions(&self) -> u32 {
        1
    }

    fn seek(&mut self, after: &BTreeMap<u32, u64>) {
        self.after = after.get(&0).copied().unwrap_or(0);
    }

    async fn poll(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<SourceRecord<RecordedEvent>>, StreamError> {
        let max = max.max(1);
        for attempt in 0..2 {
            // Mark the head seen before reading, so a commit landing after the read wakes us.
            self.head.borrow_and_update();
            let page = self.store.read_all(self.after, max, &self.filter).await?;
            if let Some(last) = page.last() {
                self.after = last.position;
                return Ok(page
                    .into_iter()
                    .map(|e| SourceRecord {
                        partition: 0,
                        offset: e.position,
                        raw: e,
                    })
                    .collect());
            }
            if attempt == 0 && !wait.is_zero() {
                // A closed watch means the store is shutting down; the next read tells.
                let _ = tokio::time::timeout(wait, self.head.changed()).await;
            }
        }
        Ok(Vec::new())
    }
}

/// Subjects of one broker stream, one partition per subject filter, with stream sequences as
/// offsets (e.g. the `orders.0` … `orders.7` subjects a [`super::Partitioner`] fills).
pub struct BrokerSource {
    name: String,
    broker: DynBroker,
    stream: String,
    subjects: Vec<String>,
    next: Vec<u64>,
    poll_interval: Duration,
    rr: usize,
}

impl BrokerSource {
    /// Reads `subjects` (filters, wildcards allowed) of broker stream `stream`; partition `i`
    /// is `subjects[i]`.
    pub fn new(broker: DynBroker, stream: impl Into<String>, subjects: Vec<String>) -> Self {
        let stream = stream.into();
        let n = subjects.len().max(1);
        BrokerSource {
            name: format!("{stream}:{}", subjects.join(",")),
            broker,
            stream,
            subjects,
            next: vec![1; n],
            poll_interval: Duration::from_millis(50),
            rr: 0,
        }
    }

    /// How often an idle source asks the broker again (default 50 ms).
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every.max(Duration::from_millis(1));
        self
    }
}

#[async_trait]
impl Source for BrokerSource {
    type Raw = StoredMessage;

    fn name(&self) -> &str {
        &self.name
    }

    fn partitions(&self) -> u32 {
        u32::try_from(self.subjects.len()).unwrap_or(u32::MAX)
    }

    fn seek(&mut self, after: &BTreeMap<u32, u64>) {
        for (i, next) in self.next.iter_mut().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            *next = after.get(&i).map_or(1, |s| s + 1);
        }
    }

    async fn poll(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<SourceRecord<StoredMessage>>, StreamError> {
        if self.subjects.is_empty() {
            return Err(StreamError::Config(
                "a broker source needs at least one subject".into(),
            ));
        }
        let max = max.max(1);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Round-robin over partitions so one busy subject does not starve the others.
            let n = self.subjects.len();
            let mut out = Vec::new();
            for k in 0..n {
                let p = (self.rr + k) % n;
                let page = self
                    .broker
                    .read_stream(&self.stream, &self.subjects[p], self.next[p], max)
                    .await?;
                if let Some(last) = page.last() {
                    self.next[p] = last.sequence + 1;
                    let partition = u32::try_from(p).unwrap_or(u32::MAX);
                    out.extend(page.into_iter().map(|m| SourceRecord {
                        partition,
                        offset: m.sequence,
                        raw: m,
                    }));
                    self.rr = (p + 1) % n;
                    return Ok(out);
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(out);
            }
            tokio::time::sleep(self.poll_interval.min(deadline - now)).await;
        }
    }
}

/// An in-memory, single-partition source over a vector (offsets are 1-based indexes): for
/// tests, benchmarks and replaying a captured input.
pub struct MemorySource<R> {
    records: std::sync::Arc<Vec<R>>,
    next: usize,
}

impl<R> MemorySource<R> {
    /// A source over `records`.
    pub fn new(records: std::sync::Arc<Vec<R>>) -> Self {
        MemorySource { records, next: 0 }
    }
}

#[async_trait]
impl<R: RawRecord + Clone> Source for MemorySource<R> {
    type Raw = R;

    fn name(&self) -> &str {
        "memory"
    }

    fn partitions(&self) -> u32 {
        1
    }

    fn seek(&mut self, after: &BTreeMap<u32, u64>) {
        self.next = after
            .get(&0)
            .map_or(0, |&o| usize::try_from(o).unwrap_or(usize::MAX));
    }

    async fn poll(
        &mut self,
        max: usize,
        _wait: Duration,
    ) -> Result<Vec<SourceRecord<R>>, StreamError> {
        let start = self.next.min(self.records.len());
        let end = start.saturating_add(max.max(1)).min(self.records.len());
        self.next = end;
        Ok(self.records[start..end]
            .iter()
            .enumerate()
            .map(|(i, r)| SourceRecord {
                partition: 0,
                offset: (start + i + 1) as u64,
                raw: r.clone(),
            })
            .collect())
    }
}
