//! Typed errors of the event store.

use attest_core::{EventId, ExpectedVersion, Position, StreamId, ValidationError, Version};
use thiserror::Error;

/// Boxed cause of a backend failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong talking to an event store. Every variant that concerns a
/// request names the stream or event at fault; none of them leaves a partial write behind.
#[derive(Debug, Error)]
pub enum StoreError {
    /// An id, type or other envelope field is invalid.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// An append with no stream, or a stream part with no events.
    #[error("empty append{}", .stream.as_ref().map(|s| format!(" to stream {s}")).unwrap_or_default())]
    EmptyAppend {
        /// The stream with no events, if the request named one.
        stream: Option<StreamId>,
    },
    /// The same stream appears twice in one multi-stream append.
    #[error("stream {stream} appears more than once in one append")]
    DuplicateStreamInAppend {
        /// The repeated stream.
        stream: StreamId,
    },
    /// An event is larger than the configured limit.
    #[error(
        "event {event_id} for stream {stream} is {size} bytes, over the limit of {limit} bytes"
    )]
    EventTooLarge {
        /// Target stream.
        stream: StreamId,
        /// The event.
        event_id: EventId,
        /// Its size (payload + metadata).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Optimistic concurrency check failed.
    #[error("wrong expected version for stream {stream}: expected {expected}, actual {}", .actual.map(|v| format!("version {v}")).unwrap_or_else(|| "no stream".into()))]
    WrongExpectedVersion {
        /// The stream.
        stream: StreamId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's actual last version (`None`: absent or soft-deleted).
        actual: Option<Version>,
    },
    /// The stream was tombstoned (hard-deleted) and can never be used again.
    #[error("stream {stream} is deleted (tombstoned)")]
    StreamDeleted {
        /// The stream.
        stream: StreamId,
    },
    /// The stream does not exist or was soft-deleted.
    #[error("stream {stream} not found")]
    StreamNotFound {
        /// The stream.
        stream: StreamId,
    },
    /// Some, but not all, of the appended event ids already exist, or exist elsewhere.
    #[error("event {event_id} already exists{}; an idempotent retry must repeat the whole original append", .existing_stream.as_ref().map(|s| format!(" in stream {s}")).unwrap_or_default())]
    IdempotencyConflict {
        /// The clashing id.
        event_id: EventId,
        /// Where it already is.
        existing_stream: Option<StreamId>,
    },
    /// A stored event failed its checksum or could not be decoded.
    #[error("corrupted event at position {position}: {reason}")]
    Corrupted {
        /// Global position of the bad record.
        position: Position,
        /// What is wrong.
        reason: String,
    },
    /// An argument outside its domain (e.g. `max_count` of 0 where not allowed).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The store was closed or its writer stopped.
    #[error("event store is closed")]
    Closed,
    /// The underlying database failed.
    #[error("{backend} error: {source}")]
    Backend {
        /// `sqlite`, `postgres` or `redis`.
        backend: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(backend: &'static str, e: impl Into<BoxError>) -> Self {
        StoreError::Backend {
            backend,
            source: e.into(),
        }
    }

    /// Whether retrying the same request later may succeed (conflicts and backend hiccups).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::WrongExpectedVersion { .. } | StoreError::Backend { .. }
        )
    }

    /// A short machine-readable code, stable across versions (used by the CLI and HTTP API).
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Validation(_) => "invalid_envelope",
            StoreError::EmptyAppend { .. } => "empty_append",
            StoreError::DuplicateStreamInAppend { .. } => "duplicate_stream",
            StoreError::EventTooLarge { .. } => "event_too_large",
            StoreError::WrongExpectedVersion { .. } => "wrong_expected_version",
            StoreError::StreamDeleted { .. } => "stream_deleted",
            StoreError::StreamNotFound { .. } => "stream_not_found",
            StoreError::IdempotencyConflict { .. } => "idempotency_conflict",
            StoreError::Corrupted { .. } => "corrupted",
            StoreError::InvalidArgument(_) => "invalid_argument",
            StoreError::Closed => "closed",
            StoreError::Backend { .. } => "backend",
        }
    }
}
