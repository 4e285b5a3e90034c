//! The ledger of truth: an append-only event log with per-stream optimistic concurrency and a
//! gap-free global order.
//!
//! - [`EventStore`]: the trait every backend implements (append, read, lifecycle, head watch);
//! - [`Subscription`]: catch-up-then-live reading of the global log from a checkpoint, built on
//!   any backend's `read_all` plus its head watch — no gap at the hand-over, no skipped event;
//! - [`SnapshotStore`]: aggregate snapshots kept apart from the log;
//! - backends: [`sqlite`] (embedded default) and [`postgres`] (scale-out);
//! - `conformance` (feature `conformance`): the one test suite every backend must pass.

pub mod error;
pub mod outbox;
pub mod postgres;
pub mod redis_snapshots;
pub mod snapshot;
pub mod sqlite;
pub mod subscription;
mod types;
pub mod validate;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use attest_core::{ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use tokio::sync::watch;

pub use error::StoreError;
pub use snapshot::{Snapshot, SnapshotStore};
pub use subscription::Subscription;
pub use types::{
    AppendResult, DeleteMode, Direction, LogFilter, StoreOptions, StoreStats, StreamAppend,
    StreamAppendResult, StreamFrom, StreamInfo, StreamMetadata, StreamState,
};

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An append-only event log.
///
/// # Guarantees every backend gives (checked by the conformance suite)
/// - An append to one or several streams is atomic: all its events are committed or none.
/// - Each stream's versions are contiguous from 0; the expected version is checked atomically
///   with the append, and a mismatch fails with [`StoreError::WrongExpectedVersion`] carrying
///   the actual version.
/// - Global positions start at 1, are gap-free and increase in commit order: once
///   [`EventStore::read_all`] has returned position `p`, no event with a position below `p`
///   can appear later. This is what makes [`Subscription`] skip nothing.
/// - Appending events whose ids were already appended, to the same stream in the same order, is
///   recognised as a retry: the original result is returned and nothing is duplicated.
/// - Soft-deleted streams read as not found and accept new appends (versions continue);
///   tombstoned streams are gone for good: their events are removed and every later append or
///   read fails with [`StoreError::StreamDeleted`].
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends atomically to one or several streams, each with its own expected version.
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<AppendResult>;

    /// Appends to one stream.
    async fn append(
        &self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.append_many(vec![StreamAppend {
            stream,
            expected,
            events,
        }])
        .await
    }

    /// Reads up to `max_count` events of a stream, forward (versions >= from, ascending) or
    /// backward (versions <= from, descending), honouring truncate-before, max-count and max-age.
    /// A stream that never existed or is soft-deleted fails with [`StoreError::StreamNotFound`].
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamFrom,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// Reads up to `max_count` committed events of the global log with positions strictly
    /// greater than `after` (0 = from the start), ascending, that match `filter`.
    async fn read_all(
        &self,
        after: Position,
        max_count: usize,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>>;

    /// State, last version and metadata of a stream; `None` if it never existed.
    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>>;

    /// Sets a stream's metadata (max-count, max-age, truncate-before), creating the stream
    /// record if needed. Metadata is honoured by [`EventStore::read_stream`].
    async fn set_stream_metadata(&self, stream: &StreamId, metadata: StreamMetadata) -> Result<()>;

    /// Soft-deletes or tombstones a stream, checking `expected` first.
    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<()>;

    /// Position of the last committed event (0 when the log is empty).
    async fn head_position(&self) -> Result<Position>;

    /// A watch that changes whenever new events are committed (by this process or, for shared
    /// backends, another one); its value is a committed head position. Subscriptions wait on it
    /// instead of polling.
    fn head_watch(&self) -> watch::Receiver<Position>;

    /// Counts and sizes.
    async fn stats(&self) -> Result<StoreStats>;

    /// The options this store enforces.
    fn options(&self) -> &StoreOptions;
}

/// Shared handle to any event store.
pub type DynStore = Arc<dyn EventStore>;
