//! [`Broker`] on NATS JetStream.
//!
//! Streams are created or updated idempotently with their subjects and duplicate window;
//! messages carry their id in the `Nats-Msg-Id` header, which JetStream uses for
//! de-duplication; consumers are durable pull consumers with `AckPolicy::Explicit`, `ack_wait`,
//! `backoff` and `max_deliver`. Acknowledgements use JetStream's "double ack" so that a
//! settled delivery is known to be recorded by the server when [`Delivery::ack`] returns.
//!
//! [`Broker::read_stream`] pages through a stream with an ephemeral, unacknowledged pull
//! consumer positioned at the requested sequence (one fetch returns a whole page), kept while
//! the next read continues where the last one stopped, and dropped by the server after
//! [`READER_IDLE`] without use. A read that cannot use one falls back to a direct get per
//! message ([`NatsBroker::read_stream_by_get`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::header::HeaderMap;
use async_nats::jetstream::{self, consumer, message::PublishMessage as Publish, stream};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use tracing::debug;

use crate::error::{BusError, Result};
use crate::message::{
    validate_subject, AckKind, Acker, ConsumerConfig, ConsumerInfo, Delivery, DeliveryInfo,
    Headers, Message, OutgoingMessage, PublishAck, StoredMessage, StreamConfig, MSG_ID_HEADER,
};
use crate::{Broker, PullConsumer};

/// How long the server keeps an unused read cursor (an ephemeral consumer).
pub const READER_IDLE: Duration = Duration::from_secs(30);

/// Largest page one fetch asks for.
const READER_MAX_BATCH: usize = 10_000;

/// Longest wait for one page. A fetch from a cursor that the server dropped (a restart, an
/// operator deleting it) gets no answer at all; after this the cursor is replaced.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A read cursor over one (stream, filter): an ephemeral pull consumer without acks whose
/// next delivery is `next`, last used at `used`.
struct Reader {
    consumer: consumer::PullConsumer,
    next: u64,
    used: std::time::Instant,
}

type Readers = Arc<Mutex<HashMap<(String, String), Reader>>>;

/// A broker backed by a NATS server with JetStream enabled.
#[derive(Clone)]
pub struct NatsBroker {
    client: async_nats::Client,
    js: jetstream::Context,
    readers: Readers,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker").finish_non_exhaustive()
    }
}

impl NatsBroker {
    /// Connects to `url` (e.g. `nats://127.0.0.1:4222`).
    pub async fn connect(url: &str) -> Result<Self> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| BusError::nats("connect", e))?;
        Ok(Self::from_client(client))
    }

    /// Wraps an existing connection.
    pub fn from_client(client: async_nats::Client) -> Self {
        let js = jetstream::ContextBuilder::new()
            .max_ack_inflight(10_000)
            .build(client.clone());
        NatsBroker {
            client,
            js,
            readers: Readers::default(),
        }
    }

    /// The underlying NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    fn outgoing(&self, m: &OutgoingMessage) -> Result<Publish> {
        validate_subject(&m.subject, false)?;
        let mut headers = HeaderMap::new();
        for (k, v) in &m.headers {
            headers.insert(k.as_str(), v.as_str());
        }
        Ok(Publish::build()
            .payload(m.payload.clone())
            .headers(headers)
            .message_id(&m.message_id))
    }

    /// [`Broker::read_stream`] with one direct-get request per message: no server-side state,
    /// one round trip each. The fallback of the paged read, and its benchmark baseline.
    pub async fn read_stream_by_get(
        &self,
        stream: &str,
        filter: &str,
        from_sequence: u64,
        max: usize,
    ) -> Result<Vec<StoredMessage>> {
        validate_subject(filter, true)?;
        let s = self.stream(stream).await?;
        let mut out = Vec::new();
        let mut seq = from_sequence.max(1);
        while out.len() < max {
            match next_stored(&s, seq, filter).await? {
                Some(m) => {
                    seq = m.sequence + 1;
                    out.push(m);
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// A new read cursor at `from`, or `None` when the server refuses one (the caller then
    /// reads message by message).
    async fn open_reader(&self, s: &stream::Stream, filter: &str, from: u64) -> Option<Reader> {
        let cfg = consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ack_policy: consumer::AckPolicy::None,
            replay_policy: consumer::ReplayPolicy::Instant,
            filter_subject: if filter == ">" {
                String::new()
            } else {
                filter.to_string()
            },
            inactive_threshold: READER_IDLE,
            memory_storage: true,
            ..Default::default()
        };
        match s.create_consumer(cfg).await {
            Ok(consumer) => Some(Reader {
                consumer,
                next: from,
                used: std::time::Instant::now(),
            }),
            Err(e) => {
                debug!(error = %e, filter, "no read cursor; reading message by message");
                None
            }
        }
    }

    /// One page from `reader`. On error the cursor's position is unknown: it must be dropped.
    async fn fetch_page(reader: &Reader, max: usize) -> Result<Vec<StoredMessage>> {
        tokio::time::timeout(FETCH_TIMEOUT, Self::fetch_page_inner(reader, max))
            .await
            .map_err(|_| BusError::nats("fetch page", "no answer from the read cursor"))?
    }

    async fn fetch_page_inner(reader: &Reader, max: usize) -> Result<Vec<StoredMessage>> {
        let mut page = reader
            .consumer
            .fetch()
            .max_messages(max.min(READER_MAX_BATCH))
            .messages()
            .await
            .map_err(|e| BusError::nats("fetch page", e))?;
        let mut out = Vec::new();
        while let Some(m) = page.next().await {
            let m = m.map_err(|e| BusError::nats("fetch page", e))?;
            let info = m.info().map_err(|e| BusError::nats("message info", e))?;
            let sequence = info.stream_sequence;
            let published = info.published;
            let (headers, message_id) = headers_of(m.headers.as_ref());
            out.push(StoredMessage {
                sequence,
                message: Message {
                    subject: m.subject.to_string(),
                    message_id,
                    headers,
                    payload: m.payload.clone(),
                    published,
                },
            });
        }
        Ok(out)
    }

    fn take_reader(&self, key: &(String, String), from: u64) -> Option<Reader> {
        let mut readers = self.readers.lock().ok()?;
        // A cursor idle for half its server-side lifetime may be gone already: a new one.
        readers
            .remove(key)
            .filter(|r| r.next == from && r.used.elapsed() < READER_IDLE / 2)
    }

    fn keep_reader(&self, key: (String, String), reader: Reader) {
        if let Ok(mut readers) = self.readers.lock() {
            readers.insert(key, reader);
        }
    }

    async fn stream(&self, name: &str) -> Result<stream::Stream> {
        self.js.get_stream(name).await.map_err(|e| {
            if is_not_found(&e.to_string()) {
                BusError::StreamNotFound {
                    stream: name.to_string(),
                }
            } else {
                BusError::nats("get stream", e)
            }
        })
    }
}

fn is_not_found(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("not found") || t.contains("10059") || t.contains("10014")
}

fn headers_of(map: Option<&HeaderMap>) -> (Headers, Option<String>) {
    let mut headers = Headers::new();
    let mut id = None;
    if let Some(map) = map {
        for (name, values) in map.iter() {
            let Some(v) = values.last() else { continue };
            let name: &str = name.as_ref();
            if name == MSG_ID_HEADER {
                id = Some(v.as_str().to_string());
            } else {
                headers.insert(name.to_string(), v.as_str().to_string());
            }
        }
    }
    (headers, id)
}

#[async_trait]
impl Broker for NatsBroker {
    fn kind(&self) -> &'static str {
        "nats"
    }

    async fn ensure_stream(&self, config: &StreamConfig) -> Result<()> {
        config.validate()?;
        let cfg = stream::Config {
            name: config.name.clone(),
            subjects: config.subjects.clone(),
            duplicate_window: config.duplicate_window,
            storage: stream::StorageType::File,
            allow_direct: true,
            ..Default::default()
        };
        self.js
            .create_or_update_stream(cfg)
            .await
            .map_err(|e| BusError::nats("create or update stream", e))?;
        debug!(stream = %config.name, "stream ensured");
        Ok(())
    }

    async fn delete_stream(&self, name: &str) -> Result<()> {
        self.js.delete_stream(name).await.map_err(|e| {
            if is_not_found(&e.to_string()) {
                BusError::StreamNotFound {
                    stream: name.to_string(),
                }
            } else {
                BusError::nats("delete stream", e)
            }
        })?;
        Ok(())
    }

    async fn publish(&self, message: OutgoingMessage) -> Result<PublishAck> {
        let publish = self.outgoing(&message)?;
        let ack = self
            .js
            .send_publish(message.subject.clone(), publish)
            .await
            .map_err(|e| publish_error(&message.subject, e))?
            .await
            .map_err(|e| publish_error(&message.subject, e))?;
        Ok(PublishAck {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    async fn publish_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<PublishAck>> {
        let mut pending = Vec::with_capacity(messages.len());
        for m in &messages {
            let publish = self.outgoing(m)?;
            let fut = self
                .js
                .send_publish(m.subject.clone(), publish)
                .await
                .map_err(|e| publish_error(&m.subject, e))?;
            pending.push(fut);
        }
        let mut acks = Vec::with_capacity(pending.len());
        for (fut, m) in pending.into_iter().zip(&messages) {
            let ack = fut.await.map_err(|e| publish_error(&m.subject, e))?;
            acks.push(PublishAck {
                stream: ack.stream,
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            });
        }
        Ok(acks)
    }

    async fn consumer(&self, config: &ConsumerConfig) -> Result<Box<dyn PullConsumer>> {
        config.validate()?;
        let stream = self.stream(&config.stream).await?;
        let cfg = consumer::pull::Config {
            durable_name: Some(config.name.clone()),
            name: Some(config.name.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::All,
            ack_wait: config.ack_wait,
            backoff: config.backoff.clone(),
            max_deliver: if config.max_deliver == 0 {
                -1
            } else {
                i64::from(config.max_deliver)
            },
            filter_subject: config.filter_subject.clone().unwrap_or_default(),
            ..Default::default()
        };
        let inner: consumer::PullConsumer = stream
            .create_consumer(cfg)
            .await
            .map_err(|e| BusError::nats("create consumer", e))?;
        Ok(Box::new(NatsConsumer {
            config: config.clone(),
            inner,
            stream,
        }))
    }

    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<()> {
        let s = self.stream(stream).await?;
        s.delete_consumer(name).await.map_err(|e| {
            if is_not_found(&e.to_string()) {
                BusError::ConsumerNotFound {
                    stream: stream.to_string(),
                    consumer: name.to_string(),
                }
            } else {
                BusError::nats("delete consumer", e)
            }
        })?;
        Ok(())
    }

    async fn consumers(&self, stream: &str) -> Result<Vec<ConsumerConfig>> {
        let s = self.stream(stream).await?;
        let infos: Vec<consumer::Info> = s
            .consumers()
            .try_collect()
            .await
            .map_err(|e| BusError::nats("list consumers", e))?;
        let mut out: Vec<ConsumerConfig> = infos
            .into_iter()
            // Only durable consumers are part of the contract; ephemeral ones come and go. With a
            // backoff, the server stores `ack_wait = backoff[0]`, which is what is reported.
            .filter_map(|info| {
                let name = info.config.durable_name.clone()?;
                let c = info.config;
                let filter_subject = if !c.filter_subject.is_empty() {
                    Some(c.filter_subject)
                } else {
                    c.filter_subjects.into_iter().next()
                };
                Some(ConsumerConfig {
                    stream: stream.to_string(),
                    name,
                    filter_subject,
                    ack_wait: c.ack_wait,
                    backoff: c.backoff,
                    max_deliver: u32::try_from(c.max_deliver).unwrap_or(0),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn streams(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .js
            .stream_names()
            .try_collect()
            .await
            .map_err(|e| BusError::nats("list streams", e))?;
        names.sort();
        Ok(names)
    }

    async fn read_stream(
        &self,
        stream: &str,
        filter: &str,
        from_sequence: u64,
        max: usize,
    ) -> Result<Vec<StoredMessage>> {
        validate_subject(filter, true)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let from = from_sequence.max(1);
        let key = (stream.to_string(), filter.to_string());
        let mut reader = match self.take_reader(&key, from) {
            Some(r) => r,
            None => {
                let s = self.stream(stream).await?;
                match self.open_reader(&s, filter, from).await {
                    Some(r) => r,
                    None => return self.read_stream_by_get(stream, filter, from, max).await,
                }
            }
        };
        let page = match Self::fetch_page(&reader, max).await {
            Ok(page) => page,
            Err(e) => {
                // The cursor may be gone (idle past READER_IDLE, server restart): one fresh
                // cursor, then the error.
                debug!(error = %e, "read cursor failed; opening a new one");
                let s = self.stream(stream).await?;
                reader = match self.open_reader(&s, filter, from).await {
                    Some(r) => r,
                    None => return self.read_stream_by_get(stream, filter, from, max).await,
                };
                Self::fetch_page(&reader, max).await?
            }
        };
        match page.last() {
            Some(last) => reader.next = last.sequence + 1,
            None => {
                // An empty page is also what a vanished cursor could look like: keep it only
                // if the server still has it (one round trip, as the direct get would take).
                if let Err(e) = reader.consumer.get_info().await {
                    debug!(error = %e, "read cursor gone; reading message by message");
                    return self.read_stream_by_get(stream, filter, from, max).await;
                }
            }
        }
        reader.used = std::time::Instant::now();
        self.keep_reader(key, reader);
        Ok(page)
    }
}

fn publish_error(subject: &str, e: jetstream::context::PublishError) -> BusError {
    match e.kind() {
        jetstream::context::PublishErrorKind::StreamNotFound => BusError::NoStreamForSubject {
            subject: subject.to_string(),
        },
        _ => BusError::nats("publish", e),
    }
}

/// First message of `stream` with sequence >= `seq` matching `filter`, if any.
async fn next_stored(s: &stream::Stream, seq: u64, filter: &str) -> Result<Option<StoredMessage>> {
    match s
        .raw_message_builder()
        .sequence(seq)
        .next_by_subject(filter.to_string())
        .send()
        .await
    {
        Ok(m) => {
            let (headers, message_id) = headers_of(Some(&m.headers));
            Ok(Some(StoredMessage {
                sequence: m.sequence,
                message: Message {
                    subject: m.subject.to_string(),
                    message_id,
                    headers,
                    payload: m.payload,
                    published: m.time,
                },
            }))
        }
        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) if is_not_found(&e.to_string()) => Ok(None),
        Err(e) => Err(BusError::nats("get message", e)),
    }
}

struct NatsConsumer {
    config: ConsumerConfig,
    inner: consumer::PullConsumer,
    stream: stream::Stream,
}

struct NatsAcker {
    message: jetstream::Message,
}

#[async_trait]
impl Acker for NatsAcker {
    async fn settle(&self, kind: AckKind) -> Result<()> {
        let kind = match kind {
            AckKind::Ack => jetstream::AckKind::Ack,
            AckKind::Nak(d) => jetstream::AckKind::Nak(d),
            AckKind::Term => jetstream::AckKind::Term,
            AckKind::InProgress => jetstream::AckKind::Progress,
        };
        self.message
            .double_ack_with(kind)
            .await
            .map_err(|e| BusError::nats("ack", e))
    }
}

#[async_trait]
impl PullConsumer for NatsConsumer {
    fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let batch = self
            .inner
            .fetch()
            .max_messages(max.max(1))
            .expires(wait.max(Duration::from_millis(10)))
            .messages()
            .await
            .map_err(|e| BusError::nats("fetch", e))?;
        let messages: Vec<jetstream::Message> = batch
            .try_collect()
            .await
            .map_err(|e| BusError::nats("fetch", e))?;
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            let info = m.info().map_err(|e| BusError::nats("delivery info", e))?;
            let info = DeliveryInfo {
                stream: info.stream.to_string(),
                consumer: info.consumer.to_string(),
                stream_sequence: info.stream_sequence,
                consumer_sequence: info.consumer_sequence,
                delivered: u32::try_from(info.delivered).unwrap_or(u32::MAX),
                published: info.published,
            };
            let (headers, message_id) = headers_of(m.headers.as_ref());
            let message = Message {
                subject: m.subject.to_string(),
                message_id,
                headers,
                payload: m.payload.clone(),
                published: info.published,
            };
            out.push(Delivery::new(
                message,
                info,
                Box::new(NatsAcker { message: m }),
            ));
        }
        Ok(out)
    }

    async fn info(&self) -> Result<ConsumerInfo> {
        let info = self
            .inner
            .get_info()
            .await
            .map_err(|e| BusError::nats("consumer info", e))?;
        let num_ack_pending = info.num_ack_pending as u64;
        let lag = info.num_pending + num_ack_pending;
        let oldest_unprocessed = if lag == 0 {
            None
        } else {
            let filter = self.config.filter_subject.as_deref().unwrap_or(">");
            next_stored(&self.stream, info.ack_floor.stream_sequence + 1, filter)
                .await?
                .map(|m| m.message.published)
        };
        Ok(ConsumerInfo {
            stream: self.config.stream.clone(),
            name: self.config.name.clone(),
            num_pending: info.num_pending,
            num_ack_pending,
            ack_floor: info.ack_floor.stream_sequence,
            delivered: info.delivered.stream_sequence,
            oldest_unprocessed,
        })
    }
}
