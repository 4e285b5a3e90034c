//! Dead letters: messages a consumer gave up on, kept with their provenance, listable and
//! replayable.
//!
//! A dead letter is the original payload and headers, published to
//! `{subject_prefix}.{consumer}` in the dead-letter stream, plus provenance headers
//! (`Attest-DLQ-*`): original subject, stream, sequence and message id, consumer, failure
//! kind, error text, attempts, first and last failure time. Its message id is
//! `dlq-{stream}-{sequence}-{consumer}`, so a consumer that crashes between dead-lettering and
//! settling the original does not store it twice. Its id for listing and replay is its
//! sequence in the dead-letter stream.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{BusError, Result};
use crate::message::{Delivery, Headers, OutgoingMessage, PublishAck, StoredMessage, StreamConfig};
use crate::Broker;

/// Original subject of a dead letter.
pub const DLQ_ORIGINAL_SUBJECT: &str = "Attest-DLQ-Original-Subject";
/// Original stream.
pub const DLQ_ORIGINAL_STREAM: &str = "Attest-DLQ-Original-Stream";
/// Original stream sequence.
pub const DLQ_ORIGINAL_SEQUENCE: &str = "Attest-DLQ-Original-Sequence";
/// Original message id.
pub const DLQ_ORIGINAL_MESSAGE_ID: &str = "Attest-DLQ-Original-Message-Id";
/// Consumer that gave up.
pub const DLQ_CONSUMER: &str = "Attest-DLQ-Consumer";
/// Failure kind ([`FailureKind`]).
pub const DLQ_KIND: &str = "Attest-DLQ-Kind";
/// Error text of the last failure.
pub const DLQ_ERROR: &str = "Attest-DLQ-Error";
/// Attempts made.
pub const DLQ_ATTEMPTS: &str = "Attest-DLQ-Attempts";
/// First failure time (RFC 3339).
pub const DLQ_FIRST_FAILURE: &str = "Attest-DLQ-First-Failure";
/// Last failure time (RFC 3339).
pub const DLQ_LAST_FAILURE: &str = "Attest-DLQ-Last-Failure";
/// Set on a replayed message: the dead letter it came from.
pub const REPLAYED_FROM_HEADER: &str = "Attest-Replayed-From";

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The handler said the message can never succeed.
    Permanent,
    /// The message could not be decoded (poison pill).
    Undecodable,
    /// A retryable error persisted through every attempt.
    RetriesExhausted,
    /// The message was delivered more times than allowed without a verdict (handler crashes).
    MaxDeliveries,
}

impl FailureKind {
    /// The header value.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::Permanent => "permanent",
            FailureKind::Undecodable => "undecodable",
            FailureKind::RetriesExhausted => "retries_exhausted",
            FailureKind::MaxDeliveries => "max_deliveries",
        }
    }
}

impl FromStr for FailureKind {
    type Err = BusError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "permanent" => FailureKind::Permanent,
            "undecodable" => FailureKind::Undecodable,
            "retries_exhausted" => FailureKind::RetriesExhausted,
            "max_deliveries" => FailureKind::MaxDeliveries,
            other => {
                return Err(BusError::InvalidArgument(format!(
                    "unknown failure kind {other:?}"
                )))
            }
        })
    }
}

/// Where dead letters go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterConfig {
    /// Dead-letter stream name. Default `DLQ`.
    pub stream: String,
    /// Subject prefix; a consumer's dead letters go to `{prefix}.{consumer}`. Default
    /// `attest.dlq`.
    pub subject_prefix: String,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            stream: "DLQ".into(),
            subject_prefix: "attest.dlq".into(),
        }
    }
}

impl DeadLetterConfig {
    /// A dead-letter stream `stream` on subjects `{subject_prefix}.>`.
    pub fn new(stream: impl Into<String>, subject_prefix: impl Into<String>) -> Self {
        DeadLetterConfig {
            stream: stream.into(),
            subject_prefix: subject_prefix.into(),
        }
    }

    /// The stream to ensure.
    pub fn stream_config(&self) -> StreamConfig {
        StreamConfig::new(&self.stream, vec![format!("{}.>", self.subject_prefix)])
    }

    /// Subject of `consumer`'s dead letters.
    pub fn subject_for(&self, consumer: &str) -> String {
        format!("{}.{}", self.subject_prefix, consumer)
    }

    /// Creates or updates the dead-letter stream.
    pub async fn ensure(&self, broker: &dyn Broker) -> Result<()> {
        broker.ensure_stream(&self.stream_config()).await
    }
}

/// The failure being recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Why.
    pub kind: FailureKind,
    /// Error text.
    pub error: String,
    /// Attempts made (deliveries that reached the handler).
    pub attempts: u32,
    /// When the first attempt failed.
    pub first_failure: DateTime<Utc>,
    /// When the last attempt failed.
    pub last_failure: DateTime<Utc>,
}

/// A dead letter as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream (the id for [`replay_dead_letter`]).
    pub id: u64,
    /// Subject the original was published to.
    pub original_subject: String,
    /// Stream the original was read from.
    pub original_stream: String,
    /// The original's sequence in that stream.
    pub original_sequence: u64,
    /// The original's message id.
    pub original_message_id: Option<String>,
    /// Consumer that gave up.
    pub consumer: String,
    /// Why.
    pub kind: FailureKind,
    /// Error text of the last failure.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// First failure.
    pub first_failure: DateTime<Utc>,
    /// Last failure.
    pub last_failure: DateTime<Utc>,
    /// When it was dead-lettered.
    pub dead_lettered_at: DateTime<Utc>,
    /// The original's headers (provenance headers removed).
    pub headers: Headers,
    /// The original payload.
    #[serde(skip)]
    pub payload: bytes::Bytes,
}

/// Publishes `delivery` as a dead letter of its consumer.
pub async fn dead_letter(
    broker: &dyn Broker,
    config: &DeadLetterConfig,
    delivery: &Delivery,
    failure: &Failure,
) -> Result<PublishAck> {
    let info = &delivery.info;
    let m = &delivery.message;
    let mut out = OutgoingMessage::new(
        config.subject_for(&info.consumer),
        format!(
            "dlq-{}-{}-{}",
            info.stream, info.stream_sequence, info.consumer
        ),
        m.payload.clone(),
    );
    out.headers = m.headers.clone();
    out.headers
        .insert(DLQ_ORIGINAL_SUBJECT.into(), m.subject.clone());
    out.headers
        .insert(DLQ_ORIGINAL_STREAM.into(), info.stream.clone());
    out.headers.insert(
        DLQ_ORIGINAL_SEQUENCE.into(),
        info.stream_sequence.to_string(),
    );
    if let Some(id) = &m.message_id {
        out.headers
            .insert(DLQ_ORIGINAL_MESSAGE_ID.into(), id.clone());
    }
    out.headers
        .insert(DLQ_CONSUMER.into(), info.consumer.clone());
    out.headers
        .insert(DLQ_KIND.into(), failure.kind.as_str().to_string());
    // Header values are single-line.
    out.headers
        .insert(DLQ_ERROR.into(), failure.error.replace(['\r', '\n'], " "));
    out.headers
        .insert(DLQ_ATTEMPTS.into(), failure.attempts.to_string());
    out.headers
        .insert(DLQ_FIRST_FAILURE.into(), failure.first_failure.to_rfc3339());
    out.headers
        .insert(DLQ_LAST_FAILURE.into(), failure.last_failure.to_rfc3339());
    broker.publish(out).await
}

fn parse(stored: StoredMessage) -> Result<DeadLetter> {
    let id = stored.sequence;
    let mut h = stored.message.headers;
    let mut take = |name: &str| {
        h.remove(name).ok_or_else(|| BusError::DeadLetter {
            id,
            reason: format!("missing header {name}"),
        })
    };
    let bad = |what: &str| BusError::DeadLetter {
        id,
        reason: format!("invalid {what}"),
    };
    let time = |s: String, what: &str| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| bad(what))
    };
    let original_subject = take(DLQ_ORIGINAL_SUBJECT)?;
    let original_stream = take(DLQ_ORIGINAL_STREAM)?;
    let original_sequence = take(DLQ_ORIGINAL_SEQUENCE)?
        .parse()
        .map_err(|_| bad("sequence"))?;
    let consumer = take(DLQ_CONSUMER)?;
    let kind = take(DLQ_KIND)?.parse()?;
    let error = take(DLQ_ERROR)?;
    let attempts = take(DLQ_ATTEMPTS)?.parse().map_err(|_| bad("attempts"))?;
    let first_failure = time(take(DLQ_FIRST_FAILURE)?, "first failure time")?;
    let last_failure = time(take(DLQ_LAST_FAILURE)?, "last failure time")?;
    let original_message_id = h.remove(DLQ_ORIGINAL_MESSAGE_ID);
    Ok(DeadLetter {
        id,
        original_subject,
        original_stream,
        original_sequence,
        original_message_id,
        consumer,
        kind,
        error,
        attempts,
        first_failure,
        last_failure,
        dead_lettered_at: stored.message.published,
        headers: h,
        payload: stored.message.payload,
    })
}

/// Lists up to `max` dead letters with id >= `from_id`, of one consumer or (when `None`) of all.
pub async fn list_dead_letters(
    broker: &dyn Broker,
    config: &DeadLetterConfig,
    consumer: Option<&str>,
    from_id: u64,
    max: usize,
) -> Result<Vec<DeadLetter>> {
    let filter = match consumer {
        Some(c) => config.subject_for(c),
        None => format!("{}.>", config.subject_prefix),
    };
    broker
        .read_stream(&config.stream, &filter, from_id, max)
        .await?
        .into_iter()
        .map(parse)
        .collect()
}

/// The dead letter with this id.
pub async fn get_dead_letter(
    broker: &dyn Broker,
    config: &DeadLetterConfig,
    id: u64,
) -> Result<DeadLetter> {
    let filter = format!("{}.>", config.subject_prefix);
    let found = broker.read_stream(&config.stream, &filter, id, 1).await?;
    match found.into_iter().next() {
        Some(m) if m.sequence == id => parse(m),
        _ => Err(BusError::DeadLetter {
            id,
            reason: "not found".into(),
        }),
    }
}

/// Publishes the dead letter `id` again to its original subject, with its original headers
/// plus [`REPLAYED_FROM_HEADER`], under the message id `replay-{dlq stream}-{id}` (so replaying
/// twice within the duplicate window stores it once). Consumers see it as a new message; an
/// `Idempotency-Key` header, if the original had one, still guards the effect.
pub async fn replay_dead_letter(
    broker: &dyn Broker,
    config: &DeadLetterConfig,
    id: u64,
) -> Result<PublishAck> {
    let dl = get_dead_letter(broker, config, id).await?;
    let mut out = OutgoingMessage::new(
        dl.original_subject.clone(),
        format!("replay-{}-{}", config.stream, id),
        dl.payload.clone(),
    );
    out.headers = dl.headers.clone();
    out.headers.insert(
        REPLAYED_FROM_HEADER.into(),
        format!("{}:{}", config.stream, id),
    );
    tracing::info!(dead_letter = id, subject = %dl.original_subject, "replaying dead letter");
    broker.publish(out).await
}
