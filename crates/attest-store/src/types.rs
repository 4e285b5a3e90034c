use std::time::Duration;

use attest_core::{
    Category, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId, Version,
};
use serde::{Deserialize, Serialize};

/// One stream's part of an append.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    /// Target stream.
    pub stream: StreamId,
    /// The writer's belief about the stream.
    pub expected: ExpectedVersion,
    /// Events to append, in order; at least one.
    pub events: Vec<NewEvent>,
}

/// Where one stream's part of an append landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamAppendResult {
    /// The stream.
    pub stream: StreamId,
    /// Version of its first appended event.
    pub first_version: Version,
    /// Version of its last appended event (the stream's new version).
    pub last_version: Version,
}

/// Outcome of a committed append (or of a recognised retry of one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// Per stream, in request order.
    pub streams: Vec<StreamAppendResult>,
    /// Global position of the first event appended.
    pub first_position: Position,
    /// Global position of the last event appended.
    pub last_position: Position,
}

/// Start of a stream read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFrom {
    /// The first (forward) event.
    Start,
    /// The last event (for backward reads).
    End,
    /// A given version.
    Version(Version),
}

/// Direction of a stream read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ascending versions.
    Forward,
    /// Descending versions.
    Backward,
}

/// Which events of the global log a read or subscription wants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LogFilter {
    /// Every event.
    #[default]
    All,
    /// Events of streams in one category (`loan` matches `loan-1`, `loan-2`, ...).
    Category(Category),
}

impl LogFilter {
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        match self {
            LogFilter::All => true,
            LogFilter::Category(c) => event.stream_id.category() == c.as_str(),
        }
    }
}

/// Per-stream retention settings, honoured on read (EventStoreDB's `$maxCount`, `$maxAge`,
/// `$tb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StreamMetadata {
    /// Only the last `max_count` events are visible.
    pub max_count: Option<u64>,
    /// Only events recorded within this age are visible.
    #[serde(with = "opt_secs", default)]
    pub max_age: Option<Duration>,
    /// Events with versions below this are invisible.
    pub truncate_before: Option<Version>,
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v: Option<f64> = Option::deserialize(d)?;
        v.map(|s| {
            Duration::try_from_secs_f64(s).map_err(|e| serde::de::Error::custom(e.to_string()))
        })
        .transpose()
    }
}

/// Lifecycle state of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// Readable and writable.
    Active,
    /// Reads say not found; a new append revives it with continuing versions.
    SoftDeleted,
    /// Gone for good.
    Tombstoned,
}

/// What a store knows about one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The stream.
    pub stream: StreamId,
    /// Version of its last event ever appended (`None` if it has none).
    pub last_version: Option<Version>,
    /// Lifecycle state.
    pub state: StreamState,
    /// Retention settings.
    pub metadata: StreamMetadata,
}

/// How to delete a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// Hide the stream's events; it may be appended to again.
    Soft,
    /// Remove its events and forbid the stream forever.
    Hard,
}

/// Limits and durability settings shared by backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Largest accepted event (payload + metadata), in bytes. Default 1 MiB.
    pub max_event_size: usize,
    /// Whether a commit waits for the disk (fsync) before it is acknowledged. Default true.
    /// The SQLite backend maps it to `synchronous=FULL` (true) or `NORMAL` (false).
    pub durable: bool,
    /// Most appends the SQLite writer folds into one transaction. Default 256.
    pub max_group_commit: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_event_size: 1024 * 1024,
            durable: true,
            max_group_commit: 256,
        }
    }
}

/// Counts reported by `attest store stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Events currently stored.
    pub events: u64,
    /// Streams known (any state).
    pub streams: u64,
    /// Last committed position.
    pub head_position: Position,
    /// Bytes used on disk, if the backend can tell.
    pub size_bytes: Option<u64>,
}
