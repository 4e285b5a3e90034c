//! Checkpoints: everything a job needs to resume exactly where it was, written in one
//! transaction.

mod postgres;
mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{StreamError, Timestamp};

pub use postgres::{Lease, PostgresCheckpointStore};
pub use sqlite::SqliteCheckpointStore;

/// Sequence counters of a shard's output channels: the next sequence number of each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequences {
    /// Next operator output.
    pub outputs: u64,
    /// Next late record.
    pub late: u64,
    /// Next dead letter.
    pub dead_letters: u64,
}

/// The resumable state of one shard of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Per source partition, the offset of the last record processed.
    pub positions: BTreeMap<u32, u64>,
    /// Per source partition, the largest event time seen (so the watermark tracker resumes
    /// with the same view of every partition).
    pub event_times: BTreeMap<u32, Timestamp>,
    /// The last watermark handed to the operator.
    pub watermark: Timestamp,
    /// Output sequence counters.
    pub sequences: Sequences,
    /// The operator's snapshot ([`crate::Operator::snapshot`]).
    pub state: Vec<u8>,
}

/// The lease a commit must still hold: a fencing token. A checkpoint store that keeps leases
/// refuses a commit whose `(owner, epoch)` is no longer the partition's current lease, in the
/// same transaction as the write — so a zombie (a paused or partitioned former owner) cannot
/// overwrite the checkpoint of the process that took its partition over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// Owner id of the lease.
    pub owner: String,
    /// Epoch of the lease (increases on every change of owner).
    pub epoch: i64,
}

/// Durable storage of checkpoints, keyed by (job, shard).
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// The last committed checkpoint of `(job, shard)`, if any.
    async fn load(&self, job: &str, shard: u32) -> Result<Option<Checkpoint>, StreamError>;

    /// Replaces the checkpoint of `(job, shard)` atomically (positions, watermark, sequences
    /// and state in one transaction). With a `fence`, the commit fails with
    /// [`StreamError::Checkpoint`] unless the fence is still the current lease of that shard
    /// (checked in the same transaction).
    async fn commit(
        &self,
        job: &str,
        shard: u32,
        checkpoint: &Checkpoint,
        fence: Option<&Fence>,
    ) -> Result<(), StreamError>;
}

/// Encoding of the non-state columns (positions and event times) as JSON text.
#[derive(Serialize, Deserialize)]
struct Positions {
    positions: BTreeMap<u32, u64>,
    event_times: BTreeMap<u32, Timestamp>,
}

fn encode_positions(c: &Checkpoint) -> Result<String, StreamError> {
    serde_json::to_string(&Positions {
        positions: c.positions.clone(),
        event_times: c.event_times.clone(),
    })
    .map_err(|e| StreamError::Checkpoint(format!("encode positions: {e}")))
}

fn decode_positions(text: &str) -> Result<Positions, StreamError> {
    serde_json::from_str(text)
        .map_err(|e| StreamError::Checkpoint(format!("decode positions: {e}")))
}

fn to_i64(v: u64, what: &str) -> Result<i64, StreamError> {
    i64::try_from(v).map_err(|_| StreamError::Checkpoint(format!("{what} {v} out of range")))
}

fn to_u64(v: i64, what: &str) -> Result<u64, StreamError> {
    u64::try_from(v).map_err(|_| StreamError::Checkpoint(format!("stored {what} {v} is negative")))
}

/// Validates a job name used as a key (any non-empty text of at most 200 bytes).
fn check_job(job: &str) -> Result<(), StreamError> {
    if job.is_empty() || job.len() > 200 {
        return Err(StreamError::Config(format!(
            "job name must be 1 to 200 bytes, got {} bytes",
            job.len()
        )));
    }
    Ok(())
}
