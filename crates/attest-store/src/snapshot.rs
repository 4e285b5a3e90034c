//! Aggregate snapshots, stored apart from the log.
//!
//! A snapshot is a serialized aggregate state as of a stream version, tagged with the
//! aggregate's *state version* (the shape of its state type). A repository ignores a snapshot
//! whose state version differs from the code's, so changing the state shape never loads an
//! old, incompatible snapshot; it replays from the log instead.

use async_trait::async_trait;
use attest_core::{StreamId, Version};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// One stored snapshot (the latest per stream is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream: StreamId,
    /// Stream version the state includes (events after it are replayed on load).
    pub version: Version,
    /// Shape tag of the serialized state.
    pub state_version: u32,
    /// The serialized state.
    pub payload: Vec<u8>,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
}

/// Keeps the latest snapshot of each stream.
#[async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// Saves `snapshot`, replacing an older one of the same stream. A snapshot older than the
    /// stored one (lower version) is ignored.
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;

    /// The latest snapshot of `stream`, if any.
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError>;

    /// Removes the snapshot of `stream` (used when a stream is deleted).
    async fn delete_snapshot(&self, stream: &StreamId) -> Result<(), StoreError>;
}
