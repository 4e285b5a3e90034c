//! The "moving intent" layer: at-least-once delivery, made exactly-once in effect.
//!
//! - [`Broker`]: publish with de-duplication by message id, durable pull consumers with
//!   explicit ack / nak (with delay) / term, ack wait, backoff and max deliveries, consumer
//!   info for lag. Two implementations pass one conformance suite:
//!   - [`nats::NatsBroker`]: NATS JetStream (scale-out);
//!   - [`embedded::EmbeddedBroker`]: in-process, durable through the event store (embedded
//!     default: no server needed).
//! - [`consumer`]: a runner that turns handler outcomes (ok / retryable / permanent) into acks,
//!   delayed naks and dead letters — never a restart loop.
//! - [`dlq`]: dead letters with provenance, listing and replay.
//! - [`idempotency`]: records (consumer, key) in the same transaction as a handler's effect
//!   (SQLite and PostgreSQL), so redeliveries have one effect.
//! - [`lag`]: lag in messages and seconds, with Burrow-style status (OK, WARN, STALL, STOP).
//! - `conformance` (feature `conformance`): the suite every broker must pass.

pub mod consumer;
pub mod dlq;
pub mod embedded;
pub mod error;
pub mod idempotency;
pub mod lag;
pub mod message;
pub mod nats;
pub mod relay;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use error::{BoxError, BusError, Result};
pub use message::{
    subject_matches, AckKind, Acker, ConsumerConfig, ConsumerInfo, Delivery, DeliveryInfo, Headers,
    Message, OutgoingMessage, PublishAck, StoredMessage, StreamConfig, CORRELATION_ID_HEADER,
    IDEMPOTENCY_KEY_HEADER, MSG_ID_HEADER, TRACEPARENT_HEADER,
};

/// A message broker: streams of subjects, publish with de-duplication, durable pull consumers.
///
/// # Guarantees every implementation gives (checked by the conformance suite)
/// - A publish returns once the message is durably stored; a second publish with the same
///   message id to the same stream within the duplicate window stores nothing and answers
///   `duplicate: true`.
/// - A durable consumer delivers every message matching its filter at least once, in stream
///   order for first deliveries, and resumes where it stopped when re-opened by name.
/// - A delivered message that is not acknowledged within its wait (ack wait, or the backoff
///   entry for that delivery) is delivered again with a higher delivery count; `nak(delay)`
///   redelivers after the delay; `ack` and `term` end its deliveries; after `max_deliver`
///   deliveries it is not delivered again.
/// - Consumer info reports undelivered and unacknowledged counts and the publish time of the
///   oldest unprocessed message.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// `nats` or `embedded`.
    fn kind(&self) -> &'static str;

    /// Creates the stream or updates it to `config` (idempotent).
    async fn ensure_stream(&self, config: &StreamConfig) -> Result<()>;

    /// Deletes a stream, its messages and its consumers.
    async fn delete_stream(&self, name: &str) -> Result<()>;

    /// Publishes one message and waits for the broker to store it.
    async fn publish(&self, message: OutgoingMessage) -> Result<PublishAck>;

    /// Publishes many messages with many acknowledgements in flight; acks in input order.
    async fn publish_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<PublishAck>> {
        let mut acks = Vec::with_capacity(messages.len());
        for m in messages {
            acks.push(self.publish(m).await?);
        }
        Ok(acks)
    }

    /// Creates (or updates) the durable consumer and binds to it.
    async fn consumer(&self, config: &ConsumerConfig) -> Result<Box<dyn PullConsumer>>;

    /// Deletes a durable consumer.
    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<()>;

    /// The durable consumers that exist on `stream`, with their stored configurations, sorted
    /// by name (read-only: nothing is created or bound).
    async fn consumers(&self, stream: &str) -> Result<Vec<ConsumerConfig>>;

    /// The names of every stream, sorted.
    async fn streams(&self) -> Result<Vec<String>>;

    /// Reads up to `max` stored messages of `stream` with sequence >= `from_sequence` whose
    /// subject matches `filter` (wildcards allowed), ascending.
    async fn read_stream(
        &self,
        stream: &str,
        filter: &str,
        from_sequence: u64,
        max: usize,
    ) -> Result<Vec<StoredMessage>>;
}

/// A bound durable pull consumer.
#[async_trait]
pub trait PullConsumer: Send + Sync {
    /// Its configuration.
    fn config(&self) -> &ConsumerConfig;

    /// Up to `max` deliveries (redeliveries first, then new messages); waits up to `wait` for
    /// the first one and returns an empty batch if none came.
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// Current backlog and position.
    async fn info(&self) -> Result<ConsumerInfo>;
}

/// Shared handle to any broker.
pub type DynBroker = Arc<dyn Broker>;
