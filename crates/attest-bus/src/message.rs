//! Messages, deliveries and the configuration of streams and consumers.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{BusError, Result};

/// Header carrying the message id used for de-duplication (the JetStream name).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// Header grouping every message caused by one originating request.
pub const CORRELATION_ID_HEADER: &str = "Correlation-ID";
/// Header naming the logical operation a command performs, for idempotent consumers.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// W3C trace context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// String headers of a message (sorted, one value per name).
pub type Headers = BTreeMap<String, String>;

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Subject, e.g. `attest.events.loan`.
    pub subject: String,
    /// Unique id; a second publish with the same id within the stream's duplicate window is
    /// recognised and not stored again.
    pub message_id: String,
    /// Headers (trace context, correlation id, idempotency key, ...).
    pub headers: Headers,
    /// Payload bytes.
    pub payload: Bytes,
}

impl OutgoingMessage {
    /// A message with no headers.
    pub fn new(
        subject: impl Into<String>,
        message_id: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Self {
        OutgoingMessage {
            subject: subject.into(),
            message_id: message_id.into(),
            headers: Headers::new(),
            payload: payload.into(),
        }
    }

    /// Adds (or replaces) a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the `Idempotency-Key` header: the key idempotent consumers record, so the same
    /// command sent twice (even under two message ids) has one effect.
    pub fn with_idempotency_key(self, key: impl Into<String>) -> Self {
        self.with_header(IDEMPOTENCY_KEY_HEADER, key)
    }

    /// Sets the `Correlation-ID` header.
    pub fn with_correlation_id(self, id: impl Into<String>) -> Self {
        self.with_header(CORRELATION_ID_HEADER, id)
    }

    /// Sets the W3C `traceparent` header.
    pub fn with_traceparent(self, traceparent: impl Into<String>) -> Self {
        self.with_header(TRACEPARENT_HEADER, traceparent)
    }
}

/// A message as the broker stores and delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Subject it was published to.
    pub subject: String,
    /// Its message id (`None` only for messages published without one by foreign producers).
    pub message_id: Option<String>,
    /// Headers as published (the message-id header is not repeated here).
    pub headers: Headers,
    /// Payload bytes.
    pub payload: Bytes,
    /// When the broker stored it.
    pub published: DateTime<Utc>,
}

impl Message {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The key idempotent consumers record: the `Idempotency-Key` header when present (so a
    /// command published twice under different message ids has one effect), else the message
    /// id. `None` when the message carries neither.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.header(IDEMPOTENCY_KEY_HEADER)
            .or(self.message_id.as_deref())
    }
}

/// A message read back from a stream by sequence (dead-letter listing, inspection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its sequence in the stream.
    pub sequence: u64,
    /// The message.
    pub message: Message,
}

/// What the broker answered to a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// Stream that stored the message.
    pub stream: String,
    /// Its sequence in that stream (for a duplicate: the original's, when known).
    pub sequence: u64,
    /// Whether the message id was seen before and nothing new was stored.
    pub duplicate: bool,
}

/// A stream: the durable log of a set of subjects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Name (letters, digits, `_` and `-`).
    pub name: String,
    /// Subjects it captures; `*` matches one token and a final `>` one or more.
    pub subjects: Vec<String>,
    /// How long message ids are remembered for de-duplication.
    #[serde(with = "millis")]
    pub duplicate_window: Duration,
}

impl StreamConfig {
    /// A stream with a two-minute duplicate window (the JetStream default).
    pub fn new(name: impl Into<String>, subjects: Vec<String>) -> Self {
        StreamConfig {
            name: name.into(),
            subjects,
            duplicate_window: Duration::from_secs(120),
        }
    }

    /// Validates the name and subjects.
    pub fn validate(&self) -> Result<()> {
        validate_name("stream", &self.name)?;
        if self.subjects.is_empty() {
            return Err(BusError::InvalidArgument(format!(
                "stream {} needs at least one subject",
                self.name
            )));
        }
        for s in &self.subjects {
            validate_subject(s, true)?;
        }
        Ok(())
    }

    /// Whether the stream captures `subject`.
    pub fn captures(&self, subject: &str) -> bool {
        self.subjects.iter().any(|f| subject_matches(f, subject))
    }
}

/// A durable pull consumer with explicit acknowledgements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerConfig {
    /// Stream it reads.
    pub stream: String,
    /// Durable name (letters, digits, `_` and `-`).
    pub name: String,
    /// Subject filter (wildcards allowed); `None` = every subject of the stream.
    pub filter_subject: Option<String>,
    /// How long a delivered message may stay unacknowledged before it is redelivered.
    #[serde(with = "millis")]
    pub ack_wait: Duration,
    /// Redelivery delays after an ack-wait timeout: the n-th redelivery waits `backoff[n-1]`
    /// (the last entry repeats); empty = `ack_wait` every time.
    #[serde(with = "millis_vec")]
    pub backoff: Vec<Duration>,
    /// Most deliveries of one message (0 = unlimited). After the last one expires or is
    /// nak'ed the message is no longer delivered.
    pub max_deliver: u32,
}

impl ConsumerConfig {
    /// A consumer of every subject of `stream`, 30 s ack wait, no backoff, unlimited deliveries.
    pub fn new(stream: impl Into<String>, name: impl Into<String>) -> Self {
        ConsumerConfig {
            stream: stream.into(),
            name: name.into(),
            filter_subject: None,
            ack_wait: Duration::from_secs(30),
            backoff: Vec::new(),
            max_deliver: 0,
        }
    }

    /// Sets the subject filter.
    pub fn with_filter(mut self, filter: impl Into<String>) -> Self {
        self.filter_subject = Some(filter.into());
        self
    }

    /// Sets the ack wait.
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Sets the backoff schedule.
    pub fn with_backoff(mut self, backoff: Vec<Duration>) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the most deliveries of one message.
    pub fn with_max_deliver(mut self, max_deliver: u32) -> Self {
        self.max_deliver = max_deliver;
        self
    }

    /// Validates names, filter and settings.
    pub fn validate(&self) -> Result<()> {
        validate_name("stream", &self.stream)?;
        validate_name("consumer", &self.name)?;
        if let Some(f) = &self.filter_subject {
            validate_subject(f, true)?;
        }
        if self.ack_wait.is_zero() {
            return Err(BusError::InvalidArgument(
                "ack_wait must be positive".into(),
            ));
        }
        if self.max_deliver > 0 && self.backoff.len() > self.max_deliver as usize {
            return Err(BusError::InvalidArgument(
                "backoff may not have more entries than max_deliver".into(),
            ));
        }
        Ok(())
    }

    /// How long the `delivery`-th delivery (1-based) may stay unacknowledged.
    pub fn wait_for_delivery(&self, delivery: u32) -> Duration {
        if self.backoff.is_empty() {
            return self.ack_wait;
        }
        let i = (delivery.max(1) as usize - 1).min(self.backoff.len() - 1);
        self.backoff[i]
    }

    /// Whether the consumer wants `subject`.
    pub fn wants(&self, subject: &str) -> bool {
        self.filter_subject
            .as_deref()
            .is_none_or(|f| subject_matches(f, subject))
    }
}

/// Where a delivery came from and how often it was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryInfo {
    /// Stream name.
    pub stream: String,
    /// Consumer name.
    pub consumer: String,
    /// Sequence of the message in the stream.
    pub stream_sequence: u64,
    /// Sequence of this delivery for the consumer (increases with every delivery, including
    /// redeliveries).
    pub consumer_sequence: u64,
    /// How many times the message has been delivered, this one included (1 = first).
    pub delivered: u32,
    /// When the message was published.
    pub published: DateTime<Utc>,
}

/// How a delivery is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// Processed: never deliver again.
    Ack,
    /// Not processed now: deliver again after the delay (immediately when `None`).
    Nak(Option<Duration>),
    /// Never deliver again, without having been processed (dead-lettered elsewhere).
    Term,
    /// Still working: restart the ack-wait clock.
    InProgress,
}

/// Settles one delivery with the broker that made it.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Sends the acknowledgement; returns once the broker has recorded it.
    async fn settle(&self, kind: AckKind) -> Result<()>;
}

/// A message handed to a consumer, with its delivery metadata and acknowledgement handle.
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// Delivery metadata.
    pub info: DeliveryInfo,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Assembles a delivery (used by broker implementations).
    pub fn new(message: Message, info: DeliveryInfo, acker: Box<dyn Acker>) -> Self {
        Delivery {
            message,
            info,
            acker,
        }
    }

    /// Acknowledges: the message is processed.
    pub async fn ack(&self) -> Result<()> {
        self.acker.settle(AckKind::Ack).await
    }

    /// Negative acknowledgement: deliver again after `delay` (at once when `None`).
    pub async fn nak(&self, delay: Option<Duration>) -> Result<()> {
        self.acker.settle(AckKind::Nak(delay)).await
    }

    /// Terminates: never deliver again.
    pub async fn term(&self) -> Result<()> {
        self.acker.settle(AckKind::Term).await
    }

    /// Extends the ack wait while a long handler runs.
    pub async fn in_progress(&self) -> Result<()> {
        self.acker.settle(AckKind::InProgress).await
    }
}

/// A consumer's position and backlog, for lag monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Stream name.
    pub stream: String,
    /// Consumer name.
    pub name: String,
    /// Messages matching the filter not yet delivered.
    pub num_pending: u64,
    /// Messages delivered and not yet settled.
    pub num_ack_pending: u64,
    /// Stream sequence below and at which every message is settled.
    pub ack_floor: u64,
    /// Highest stream sequence delivered so far.
    pub delivered: u64,
    /// Publish time of the oldest unprocessed message (`None` when there is none).
    pub oldest_unprocessed: Option<DateTime<Utc>>,
}

impl ConsumerInfo {
    /// Lag in messages: everything not yet processed (undelivered + unacknowledged).
    pub fn lag_messages(&self) -> u64 {
        self.num_pending + self.num_ack_pending
    }

    /// Lag in seconds at `now`: age of the oldest unprocessed message (0 when none).
    pub fn lag_seconds(&self, now: DateTime<Utc>) -> f64 {
        self.oldest_unprocessed
            .map(|t| ((now - t).num_milliseconds().max(0) as f64) / 1000.0)
            .unwrap_or(0.0)
    }
}

/// Whether `subject` matches the filter `filter` (NATS rules: tokens separated by `.`, `*`
/// matches exactly one token, a final `>` matches one or more tokens).
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Checks a subject (`wildcards`: whether `*` and a final `>` are allowed).
pub fn validate_subject(subject: &str, wildcards: bool) -> Result<()> {
    let bad = |why: &str| {
        Err(BusError::InvalidArgument(format!(
            "subject {subject:?}: {why}"
        )))
    };
    if subject.is_empty() {
        return bad("must not be empty");
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return bad("has an empty token");
        }
        if *t == "*" || *t == ">" {
            if !wildcards {
                return bad("wildcards are not allowed here");
            }
            if *t == ">" && i + 1 != tokens.len() {
                return bad("'>' must be the last token");
            }
            continue;
        }
        if !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '@' | '~'))
        {
            return bad("tokens hold ASCII letters, digits and '_', '-', ':', '@', '~'");
        }
    }
    Ok(())
}

/// Checks a stream or consumer name: 1 to 64 ASCII letters, digits, `_` or `-`.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(BusError::InvalidArgument(format!(
            "{what} name {name:?} must be 1-64 ASCII letters, digits, '_' or '-'"
        )));
    }
    Ok(())
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod millis_vec {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            d.iter()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Ok(Vec::<u64>::deserialize(d)?
            .into_iter()
            .map(Duration::from_millis)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wildcard_matching() {
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(subject_matches("a.*", "a.b"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(subject_matches("*.b.>", "x.b.c"));
    }

    #[test]
    fn subject_and_name_validation() {
        assert!(validate_subject("attest.events.loan", false).is_ok());
        assert!(validate_subject("attest.*", false).is_err());
        assert!(validate_subject("attest.>.x", true).is_err());
        assert!(validate_subject("a..b", true).is_err());
        assert!(validate_name("stream", "EVENTS_1-a").is_ok());
        assert!(validate_name("stream", "a.b").is_err());
    }

    #[test]
    fn idempotency_key_prefers_the_header_over_the_message_id() {
        let out = OutgoingMessage::new("a.b", "m-1", b"x".to_vec())
            .with_idempotency_key("cmd-7")
            .with_correlation_id("corr");
        assert_eq!(out.headers[IDEMPOTENCY_KEY_HEADER], "cmd-7");
        assert_eq!(out.headers[CORRELATION_ID_HEADER], "corr");
        let mut m = Message {
            subject: out.subject.clone(),
            message_id: Some(out.message_id.clone()),
            headers: out.headers.clone(),
            payload: out.payload.clone(),
            published: Utc::now(),
        };
        assert_eq!(m.idempotency_key(), Some("cmd-7"));
        m.headers.remove(IDEMPOTENCY_KEY_HEADER);
        assert_eq!(m.idempotency_key(), Some("m-1"));
        m.message_id = None;
        assert_eq!(m.idempotency_key(), None);
    }

    #[test]
    fn backoff_schedule_repeats_its_last_entry() {
        let c = ConsumerConfig::new("S", "c")
            .with_backoff(vec![Duration::from_millis(10), Duration::from_millis(20)]);
        assert_eq!(c.wait_for_delivery(1), Duration::from_millis(10));
        assert_eq!(c.wait_for_delivery(2), Duration::from_millis(20));
        assert_eq!(c.wait_for_delivery(7), Duration::from_millis(20));
        let plain = ConsumerConfig::new("S", "c").with_ack_wait(Duration::from_secs(3));
        assert_eq!(plain.wait_for_delivery(4), Duration::from_secs(3));
    }

    proptest! {
        #[test]
        fn a_subject_matches_itself_and_full_wildcard(tokens in prop::collection::vec("[a-z0-9]{1,5}", 1..6)) {
            let subject = tokens.join(".");
            prop_assert!(subject_matches(&subject, &subject));
            prop_assert!(subject_matches(">", &subject));
            let stars = vec!["*"; tokens.len()].join(".");
            prop_assert!(subject_matches(&stars, &subject));
            let longer = format!("{subject}.x");
            prop_assert!(!subject_matches(&subject, &longer));
        }
    }
}
