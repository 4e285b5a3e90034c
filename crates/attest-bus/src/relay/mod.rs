//! Relays: move committed records from a database to the broker, at least once, with a
//! dedupe id so that the broker stores each one once.
//!
//! - [`OutboxRelay`]: drains a transactional outbox table ([`attest_store::outbox`]) in
//!   sequence order (hence in order per key), publishes each message with its outbox id as the
//!   message id, and deletes the rows only after the broker acknowledged them. A broker outage
//!   only makes the backlog grow; the relay retries with backoff and drains it when the
//!   broker returns. Killed mid-batch, it republishes the unacknowledged tail on restart and
//!   the broker's de-duplication drops the copies.
//! - [`GlobalLogRelay`]: publishes the event store's global log, one subject per stream
//!   category (`{prefix}.{category}`), with the event id as message id and a checkpoint stored
//!   after each acknowledged batch.
//!
//! Both pipeline a batch of publishes and never skip a record: a record is deleted /
//! checkpointed only when every record of its batch was acknowledged.
//!
//! **Order per key.** On NATS the publishes of a batch travel in order on one connection and
//! JetStream stores them in that order, so the whole batch is in flight at once. The
//! [`Broker`](crate::Broker) trait does not promise that in general (the embedded broker
//! publishes a batch as concurrent appends), so for other brokers a batch is sent in *waves*:
//! wave `n` holds the `n`-th record of every key, and a wave starts once the previous one is
//! acknowledged. Keys stay in order; distinct keys still share round trips. After a crash the
//! unacknowledged tail is republished: the copies of records that did arrive are dropped by
//! de-duplication, so the first stored copy of each record keeps the order.
//!
//! Exactly-once *storage* relies on the broker's duplicate window (two minutes on JetStream
//! by default): a relay that stays down longer than the window may publish a copy of its last
//! unacknowledged batch; idempotent consumers ([`crate::idempotency`]) absorb those.

mod global_log;
mod outbox;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use thiserror::Error;

pub use global_log::{
    CheckpointStore, GlobalLogRelay, PostgresCheckpointStore, SqliteCheckpointStore,
};
pub use outbox::{OutboxRelay, OutboxSource, PostgresOutbox, SqliteOutbox};

use crate::BusError;

/// Header carrying the outbox ordering key.
pub const OUTBOX_KEY_HEADER: &str = "Attest-Key";
/// Header carrying the event type of a relayed event.
pub const EVENT_TYPE_HEADER: &str = "Attest-Event-Type";
/// Header carrying the stream id of a relayed event.
pub const STREAM_ID_HEADER: &str = "Attest-Stream-Id";
/// Header carrying the per-stream version of a relayed event.
pub const STREAM_VERSION_HEADER: &str = "Attest-Stream-Version";
/// Header carrying the global position of a relayed event.
pub const POSITION_HEADER: &str = "Attest-Position";
/// Header carrying the causation id of a relayed event.
pub const CAUSATION_ID_HEADER: &str = "Attest-Causation-ID";
/// Header carrying the payload content type.
pub const CONTENT_TYPE_HEADER: &str = "Content-Type";
/// Header carrying the commit time of a relayed event (RFC 3339).
pub const RECORDED_AT_HEADER: &str = "Attest-Recorded-At";

/// Splits indexes into waves: wave `n` holds the `n`-th index of every key, ascending.
fn waves(keys: &[&str]) -> Vec<Vec<usize>> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let w = seen.entry(k).or_insert(0);
        if waves.len() <= *w {
            waves.push(Vec::new());
        }
        waves[*w].push(i);
        *w += 1;
    }
    waves
}

/// Publishes `messages` so that, per key, they are stored in input order (see the module
/// docs); returns the acknowledgements in input order.
pub(crate) async fn publish_in_key_order(
    broker: &crate::DynBroker,
    messages: Vec<crate::OutgoingMessage>,
    keys: &[&str],
) -> Result<Vec<crate::PublishAck>, BusError> {
    if broker.kind() == "nats" || messages.len() <= 1 {
        return broker.publish_batch(messages).await;
    }
    let waves = waves(keys);
    let mut slots: Vec<Option<crate::OutgoingMessage>> = messages.into_iter().map(Some).collect();
    let mut acks: Vec<Option<crate::PublishAck>> = vec![None; slots.len()];
    for wave in waves {
        let batch: Vec<crate::OutgoingMessage> =
            wave.iter().filter_map(|&i| slots[i].take()).collect();
        let got = broker.publish_batch(batch).await?;
        for (&i, ack) in wave.iter().zip(got) {
            acks[i] = Some(ack);
        }
    }
    Ok(acks.into_iter().flatten().collect())
}

/// Failures that stop a relay (broker failures do not: they are retried).
#[derive(Debug, Error)]
pub enum RelayError {
    /// The broker refused the configuration or a message for good.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The outbox table failed.
    #[error(transparent)]
    Outbox(#[from] attest_store::outbox::OutboxError),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] attest_store::StoreError),
    /// The checkpoint database failed.
    #[error("relay checkpoint (sqlite): {0}")]
    Checkpoint(#[from] rusqlite::Error),
    /// A blocking task panicked or was cancelled.
    #[error("relay background task failed: {0}")]
    Task(String),
}

/// Tuning of a relay.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayOptions {
    /// Most records published per batch (all in flight at once).
    pub batch_size: usize,
    /// Wait between polls of an empty outbox.
    pub idle_poll: Duration,
    /// First wait after a failed publish.
    pub retry_initial: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            batch_size: 1000,
            idle_poll: Duration::from_millis(50),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }
}

impl RelayOptions {
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 2f64.powi(i32::try_from(failures.saturating_sub(1).min(30)).unwrap_or(30));
        Duration::try_from_secs_f64(self.retry_initial.as_secs_f64() * factor)
            .unwrap_or(self.retry_max)
            .min(self.retry_max)
    }
}

/// Counters of a relay, for metrics.
#[derive(Debug, Default)]
pub struct RelayCounters {
    published: AtomicU64,
    duplicates: AtomicU64,
    failures: AtomicU64,
}

impl RelayCounters {
    /// Records acknowledged by the broker (duplicates included).
    pub fn published_total(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Acknowledgements that said "duplicate": copies the broker dropped.
    pub fn duplicates_total(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Failed publish batches (each was retried).
    pub fn failures_total(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn acked(&self, acks: &[crate::PublishAck]) {
        self.published
            .fetch_add(acks.len() as u64, Ordering::Relaxed);
        let dups = acks.iter().filter(|a| a.duplicate).count() as u64;
        self.duplicates.fetch_add(dups, Ordering::Relaxed);
    }

    fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every index is in exactly one wave, a wave holds each key at most once, and a key's
        /// indexes come in increasing waves.
        #[test]
        fn waves_keep_key_order(keys in prop::collection::vec(0u8..6, 0..200)) {
            let names: Vec<String> = keys.iter().map(|k| format!("k{k}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let w = waves(&refs);
            let mut wave_of = vec![usize::MAX; refs.len()];
            for (n, wave) in w.iter().enumerate() {
                let mut in_wave = std::collections::HashSet::new();
                for &i in wave {
                    prop_assert_eq!(wave_of[i], usize::MAX);
                    wave_of[i] = n;
                    prop_assert!(in_wave.insert(refs[i]));
                }
            }
            prop_assert!(wave_of.iter().all(|&n| n != usize::MAX));
            for i in 0..refs.len() {
                for j in i + 1..refs.len() {
                    if refs[i] == refs[j] {
                        prop_assert!(wave_of[i] < wave_of[j]);
                    }
                }
            }
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let o = RelayOptions {
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(70),
            ..Default::default()
        };
        assert_eq!(o.backoff(1), Duration::from_millis(10));
        assert_eq!(o.backoff(2), Duration::from_millis(20));
        assert_eq!(o.backoff(3), Duration::from_millis(40));
        assert_eq!(o.backoff(4), Duration::from_millis(70));
        assert_eq!(o.backoff(u32::MAX), Duration::from_millis(70));
    }
}
