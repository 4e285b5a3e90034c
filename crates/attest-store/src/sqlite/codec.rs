//! Conversions between the store's types and SQLite columns, shared by writer and readers.

use std::collections::HashMap;
use std::time::Duration;

use attest_core::{EventId, EventType, Metadata, Position, RecordedEvent, SchemaRef, StreamId};
use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row};

use super::schema::db_err;
use crate::{validate, StoreError, StreamMetadata, StreamState};

/// `u64` → SQLite integer, saturating at `i64::MAX` (versions and positions never get there).
pub(crate) fn to_sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `usize` → SQLite `LIMIT`, saturating.
pub(crate) fn to_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Microseconds since the Unix epoch.
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

const STATE_ACTIVE: i64 = 0;
const STATE_SOFT_DELETED: i64 = 1;
const STATE_TOMBSTONED: i64 = 2;

/// Stored code of a state, for writes.
pub(crate) fn state_column(s: StreamState) -> i64 {
    match s {
        StreamState::Active => STATE_ACTIVE,
        StreamState::SoftDeleted => STATE_SOFT_DELETED,
        StreamState::Tombstoned => STATE_TOMBSTONED,
    }
}

/// One row of `streams`.
#[derive(Debug, Clone)]
pub(crate) struct StreamRow {
    /// Integer key used by `events.stream`.
    pub key: i64,
    /// Version of its last event ever appended.
    pub last_version: Option<u64>,
    /// Lifecycle state.
    pub state: StreamState,
    /// Retention metadata.
    pub metadata: StreamMetadata,
}

impl StreamRow {
    /// The version seen by expected-version checks: soft-deleted streams count as absent.
    pub fn actual_version(&self) -> Option<u64> {
        match self.state {
            StreamState::Active => self.last_version,
            StreamState::SoftDeleted | StreamState::Tombstoned => None,
        }
    }
}

fn bad_stream_row(stream: &str, what: &str) -> StoreError {
    StoreError::backend(
        "sqlite",
        format!("stream record of {stream} is damaged: {what}"),
    )
}

/// Loads the `streams` row of `name`, if any.
pub(crate) fn load_stream(conn: &Connection, name: &str) -> Result<Option<StreamRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, last_version, state, max_count, max_age_ns, truncate_before \
             FROM streams WHERE name = ?1",
        )
        .map_err(db_err)?;
    let raw = stmt
        .query_row([name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })
        .optional()
        .map_err(db_err)?;
    let Some((key, last, state, max_count, max_age_ns, tb)) = raw else {
        return Ok(None);
    };
    let unsigned = |v: Option<i64>, what: &str| {
        v.map(|x| u64::try_from(x).map_err(|_| bad_stream_row(name, what)))
            .transpose()
    };
    let state = match state {
        STATE_ACTIVE => StreamState::Active,
        STATE_SOFT_DELETED => StreamState::SoftDeleted,
        STATE_TOMBSTONED => StreamState::Tombstoned,
        _ => return Err(bad_stream_row(name, "unknown state")),
    };
    Ok(Some(StreamRow {
        key,
        last_version: unsigned(last, "negative last version")?,
        state,
        metadata: StreamMetadata {
            max_count: unsigned(max_count, "negative max count")?,
            max_age: unsigned(max_age_ns, "negative max age")?.map(Duration::from_nanos),
            truncate_before: unsigned(tb, "negative truncate-before")?,
        },
    }))
}

/// Column values of a [`StreamMetadata`]: `(max_count, max_age_ns, truncate_before)`.
/// Ages beyond `i64::MAX` nanoseconds (~292 years) are stored as that maximum.
pub(crate) fn metadata_columns(m: &StreamMetadata) -> (Option<i64>, Option<i64>, Option<i64>) {
    (
        m.max_count.map(to_sql_int),
        m.max_age
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        m.truncate_before.map(to_sql_int),
    )
}

/// Metadata as stored: `None` (SQL NULL) when empty, else compact JSON.
pub(crate) fn encode_metadata(m: &Metadata) -> Result<Option<String>, StoreError> {
    if m.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(m)
        .map(Some)
        .map_err(|e| StoreError::backend("sqlite", e))
}

/// Columns every event query selects, in this order (see [`decode_event`]).
pub(crate) const EVENT_COLUMNS: &str = "position, stream, version, event_id, event_type, \
     schema_id, schema_version, content_type, payload, metadata, recorded_at, checksum";

/// Per-connection caches that spare allocations and look-ups when decoding many rows.
#[derive(Default)]
pub(crate) struct DecodeCache {
    names: HashMap<i64, StreamId>,
    types: HashMap<Box<str>, EventType>,
}

const MAX_CACHED: usize = 65_536;

impl DecodeCache {
    /// The stream id of key `key` (stream names never change once committed).
    pub fn stream_name(
        &mut self,
        conn: &Connection,
        key: i64,
        position: Position,
    ) -> Result<StreamId, StoreError> {
        if let Some(s) = self.names.get(&key) {
            return Ok(s.clone());
        }
        let mut stmt = conn
            .prepare_cached("SELECT name FROM streams WHERE id = ?1")
            .map_err(db_err)?;
        let name: Option<String> = stmt
            .query_row([key], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        let name = name.ok_or_else(|| corrupted(position, format!("unknown stream key {key}")))?;
        let id =
            StreamId::new(&name).map_err(|e| corrupted(position, format!("bad stream id: {e}")))?;
        if self.names.len() >= MAX_CACHED {
            self.names.clear();
        }
        self.names.insert(key, id.clone());
        Ok(id)
    }

    /// Remembers `id` as the name of `key` (when the caller already knows it).
    pub fn remember(&mut self, key: i64, id: &StreamId) {
        if !self.names.contains_key(&key) {
            if self.names.len() >= MAX_CACHED {
                self.names.clear();
            }
            self.names.insert(key, id.clone());
        }
    }

    fn event_type(&mut self, t: &str, position: Position) -> Result<EventType, StoreError> {
        if let Some(et) = self.types.get(t) {
            return Ok(et.clone());
        }
        let et =
            EventType::new(t).map_err(|e| corrupted(position, format!("bad event type: {e}")))?;
        if self.types.len() >= MAX_CACHED {
            self.types.clear();
        }
        self.types.insert(t.into(), et.clone());
        Ok(et)
    }
}

fn corrupted(position: Position, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupted {
        position,
        reason: reason.into(),
    }
}

fn col<'r>(
    row: &'r Row<'_>,
    i: usize,
    position: Position,
    name: &str,
) -> Result<ValueRef<'r>, StoreError> {
    row.get_ref(i)
        .map_err(|e| corrupted(position, format!("column {name}: {e}")))
}

/// Decodes one row selected with [`EVENT_COLUMNS`], verifying its checksum. `stream` resolves
/// the stream key (column 1) to its id.
pub(crate) fn decode_event(
    row: &Row<'_>,
    cache: &mut DecodeCache,
    stream: impl FnOnce(&mut DecodeCache, i64, Position) -> Result<StreamId, StoreError>,
) -> Result<RecordedEvent, StoreError> {
    let raw_pos: i64 = row.get(0).map_err(db_err)?;
    let position = u64::try_from(raw_pos)
        .map_err(|_| StoreError::backend("sqlite", format!("negative position {raw_pos}")))?;
    let int = |i: usize, name: &str| -> Result<i64, StoreError> {
        col(row, i, position, name)?
            .as_i64()
            .map_err(|e| corrupted(position, format!("column {name}: {e}")))
    };
    let text = |i: usize, name: &str| -> Result<&str, StoreError> {
        let v = col(row, i, position, name)?;
        v.as_str()
            .map_err(|e| corrupted(position, format!("column {name}: {e}")))
    };
    let key = int(1, "stream")?;
    let version =
        u64::try_from(int(2, "version")?).map_err(|_| corrupted(position, "negative version"))?;
    let id_bytes = col(row, 3, position, "event_id")?
        .as_blob()
        .map_err(|e| corrupted(position, format!("column event_id: {e}")))?;
    let id_arr: [u8; 16] = id_bytes
        .try_into()
        .map_err(|_| corrupted(position, format!("event id of {} bytes", id_bytes.len())))?;
    let event_type = cache.event_type(text(4, "event_type")?, position)?;
    let schema = match col(row, 5, position, "schema_id")? {
        ValueRef::Null => None,
        v => {
            let id = v
                .as_str()
                .map_err(|e| corrupted(position, format!("column schema_id: {e}")))?;
            let version = u32::try_from(int(6, "schema_version")?)
                .map_err(|_| corrupted(position, "schema version out of range"))?;
            Some(SchemaRef {
                id: id.to_owned(),
                version,
            })
        }
    };
    let content_type = text(7, "content_type")?;
    let payload = col(row, 8, position, "payload")?
        .as_bytes()
        .map_err(|e| corrupted(position, format!("column payload: {e}")))?;
    let stored_sum = int(11, "checksum")?;
    let sum = validate::checksum(content_type, payload);
    if stored_sum != i64::from(sum) {
        return Err(corrupted(
            position,
            format!("checksum mismatch (stored {stored_sum:#x}, computed {sum:#x})"),
        ));
    }
    let metadata = match col(row, 9, position, "metadata")? {
        ValueRef::Null => Metadata::default(),
        v => {
            let bytes = v
                .as_bytes()
                .map_err(|e| corrupted(position, format!("column metadata: {e}")))?;
            serde_json::from_slice(bytes)
                .map_err(|e| corrupted(position, format!("metadata is not valid JSON: {e}")))?
        }
    };
    let recorded_micros = int(10, "recorded_at")?;
    let recorded_at = DateTime::<Utc>::from_timestamp_micros(recorded_micros).ok_or_else(|| {
        corrupted(
            position,
            format!("recorded_at {recorded_micros} out of range"),
        )
    })?;
    let stream_id = stream(cache, key, position)?;
    Ok(RecordedEvent {
        id: EventId::from_bytes(id_arr),
        stream_id,
        version,
        position,
        event_type,
        schema,
        content_type: content_type.to_owned(),
        payload: payload.to_vec(),
        metadata,
        recorded_at,
    })
}
