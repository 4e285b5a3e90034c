//! The transactional outbox: messages written in the caller's own database transaction, next
//! to its business writes, and published later by a relay.
//!
//! A CRUD service that must both change a row and tell the world about it cannot do the two
//! atomically against two systems. It writes the row and an [`OutboxMessage`] in one local
//! transaction ([`sqlite::enqueue`], [`postgres::enqueue`]); a relay then reads the table in
//! order ([`sqlite::fetch_batch`]), publishes each message to the broker with the message id
//! as dedupe id, and deletes the rows the broker acknowledged ([`sqlite::delete`]), so the
//! table stays bounded. A rolled-back business transaction leaves no message; a committed one
//! is published at least once, and exactly once downstream thanks to the dedupe id.
//!
//! **Order.** Rows carry a sequence number; a batch is returned in sequence order, so
//! messages of one key are published in the order their transactions committed as long as
//! a single relay drains a table (on SQLite the writer is serialized, so sequence order is
//! commit order; on PostgreSQL two *concurrent* transactions may commit in the opposite order
//! of their sequence numbers — each row is still published once, after the rows of its key
//! that were visible before it).
//!
//! Backlog size and the age of the oldest message are available as numbers
//! ([`OutboxStats`]) for metrics.

pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// Name of the outbox table (unqualified: PostgreSQL resolves it through the `search_path`).
pub const TABLE: &str = "attest_outbox";

/// One message waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// Unique id; the broker's dedupe id.
    pub id: Uuid,
    /// Ordering key: messages with one key are published in order.
    pub key: String,
    /// Broker subject to publish on.
    pub subject: String,
    /// String headers.
    pub headers: BTreeMap<String, String>,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// When it was enqueued (microsecond precision once stored).
    pub created_at: DateTime<Utc>,
}

impl OutboxMessage {
    /// A message with a fresh UUIDv7 id, no headers, created now.
    pub fn new(key: impl Into<String>, subject: impl Into<String>, payload: Vec<u8>) -> Self {
        let now = Utc::now();
        OutboxMessage {
            id: Uuid::now_v7(),
            key: key.into(),
            subject: subject.into(),
            headers: BTreeMap::new(),
            payload,
            // Stored with microsecond precision; truncate now so a round trip is exact.
            created_at: DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now),
        }
    }

    /// Replaces the id (e.g. one derived from the business operation, for idempotent
    /// retries).
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    fn validate(&self) -> Result<(), OutboxError> {
        if self.subject.is_empty() {
            return Err(OutboxError::Invalid(format!(
                "message {}: subject must not be empty",
                self.id
            )));
        }
        Ok(())
    }
}

/// A stored message with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Sequence number (increasing in insertion order); what [`sqlite::delete`] and
    /// [`postgres::delete`] take.
    pub seq: i64,
    /// The message.
    pub message: OutboxMessage,
}

/// Size of the backlog.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct OutboxStats {
    /// Messages not yet published (deleted).
    pub backlog: u64,
    /// Age of the oldest waiting message in seconds (0 when empty).
    pub oldest_age_seconds: f64,
}

/// Outbox failures.
#[derive(Debug, Error)]
pub enum OutboxError {
    /// SQLite failed (including a duplicate message id).
    #[error("outbox (sqlite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed (including a duplicate message id).
    #[error("outbox (postgres): {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A message is not acceptable.
    #[error("invalid outbox message: {0}")]
    Invalid(String),
    /// A stored row cannot be decoded.
    #[error("outbox row {seq} is corrupt: {reason}")]
    Corrupt {
        /// Its sequence number.
        seq: i64,
        /// What is wrong.
        reason: String,
    },
}

fn age_seconds(created: DateTime<Utc>) -> f64 {
    let us = (Utc::now() - created)
        .num_microseconds()
        .unwrap_or(i64::MAX);
    us.max(0) as f64 / 1e6
}
