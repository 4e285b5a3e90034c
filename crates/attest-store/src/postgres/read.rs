//! Row decoding (with checksum verification) and the conversions between the API's unsigned
//! numbers and PostgreSQL's `bigint`.

use std::time::Duration;

use attest_core::{EventId, EventType, Metadata, RecordedEvent, SchemaRef, StreamId};
use chrono::DateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::schema::{STATE_ACTIVE, STATE_SOFT_DELETED, STATE_TOMBSTONED};
use crate::validate::checksum;
use crate::{StoreError, StreamInfo, StreamMetadata, StreamState};

/// A `u64` as `bigint`, saturating at `i64::MAX` (versions, counts and limits never get there
/// in practice; saturation keeps "larger than anything stored" meaning the same).
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored `bigint` that must be non-negative.
fn to_u64(v: i64, position: u64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupted {
        position,
        reason: format!("negative {what} {v}"),
    })
}

fn corrupted(position: u64, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupted {
        position,
        reason: reason.into(),
    }
}

/// Decodes an event row selected with [`super::schema::EVENT_COLUMNS`], verifying its checksum.
pub(crate) fn decode(row: &Row) -> Result<RecordedEvent, StoreError> {
    let raw_position: i64 = row.try_get(0).map_err(|e| corrupted(0, e.to_string()))?;
    let position = to_u64(raw_position, 0, "position")?;
    let bad = |e: tokio_postgres::Error| corrupted(position, e.to_string());
    let id: Uuid = row.try_get(1).map_err(bad)?;
    let stream: String = row.try_get(2).map_err(bad)?;
    let version: i64 = row.try_get(3).map_err(bad)?;
    let event_type: String = row.try_get(4).map_err(bad)?;
    let schema_id: Option<String> = row.try_get(5).map_err(bad)?;
    let schema_version: Option<i64> = row.try_get(6).map_err(bad)?;
    let content_type: String = row.try_get(7).map_err(bad)?;
    let payload: Vec<u8> = row.try_get(8).map_err(bad)?;
    let metadata: Option<Vec<u8>> = row.try_get(9).map_err(bad)?;
    let stored_sum: i64 = row.try_get(10).map_err(bad)?;
    let recorded_us: i64 = row.try_get(11).map_err(bad)?;

    let actual = checksum(&content_type, &payload);
    if i64::from(actual) != stored_sum {
        return Err(corrupted(
            position,
            format!("checksum mismatch: stored {stored_sum:#x}, computed {actual:#x}"),
        ));
    }
    let schema = match (schema_id, schema_version) {
        (None, None) => None,
        (Some(id), Some(v)) => Some(SchemaRef {
            id,
            version: u32::try_from(v)
                .map_err(|_| corrupted(position, format!("schema version {v} out of range")))?,
        }),
        _ => {
            return Err(corrupted(
                position,
                "schema id and version must both be set",
            ))
        }
    };
    let metadata = match metadata {
        None => Metadata::default(),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| corrupted(position, format!("metadata: {e}")))?,
    };
    Ok(RecordedEvent {
        id: EventId::from_uuid(id),
        stream_id: StreamId::new(&stream).map_err(|e| corrupted(position, e.to_string()))?,
        version: to_u64(version, position, "version")?,
        position,
        event_type: EventType::new(&event_type).map_err(|e| corrupted(position, e.to_string()))?,
        schema,
        content_type,
        payload,
        metadata,
        recorded_at: DateTime::from_timestamp_micros(recorded_us)
            .ok_or_else(|| corrupted(position, format!("timestamp {recorded_us} out of range")))?,
    })
}

/// The parts of a `streams` row a store needs, selected with `Sql::stream_row`.
#[derive(Debug, Clone)]
pub(crate) struct StreamRow {
    pub last_version: Option<u64>,
    pub state: StreamState,
    pub metadata: StreamMetadata,
}

/// Maps the stored state code.
pub(crate) fn state_of(code: i16) -> Result<StreamState, StoreError> {
    match code {
        STATE_ACTIVE => Ok(StreamState::Active),
        STATE_SOFT_DELETED => Ok(StreamState::SoftDeleted),
        STATE_TOMBSTONED => Ok(StreamState::Tombstoned),
        other => Err(StoreError::backend(
            super::errors::BACKEND,
            format!("unknown stream state code {other}"),
        )),
    }
}

/// Decodes a row of `Sql::stream_row`.
pub(crate) fn stream_row(row: &Row) -> Result<StreamRow, StoreError> {
    let g = |e: tokio_postgres::Error| super::errors::pg(e);
    let last: Option<i64> = row.try_get(0).map_err(g)?;
    let state: i16 = row.try_get(1).map_err(g)?;
    let max_count: Option<i64> = row.try_get(2).map_err(g)?;
    let age_secs: Option<i64> = row.try_get(3).map_err(g)?;
    let age_nanos: Option<i32> = row.try_get(4).map_err(g)?;
    let tb: Option<i64> = row.try_get(5).map_err(g)?;
    let nonneg = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(StreamRow {
        last_version: last.map(nonneg),
        state: state_of(state)?,
        metadata: StreamMetadata {
            max_count: max_count.map(nonneg),
            max_age: age_secs.map(|s| {
                Duration::new(
                    nonneg(s),
                    u32::try_from(age_nanos.unwrap_or(0)).unwrap_or(0),
                )
            }),
            truncate_before: tb.map(nonneg),
        },
    })
}

impl StreamRow {
    /// As the API reports it.
    pub(crate) fn into_info(self, stream: StreamId) -> StreamInfo {
        StreamInfo {
            stream,
            last_version: self.last_version,
            state: self.state,
            metadata: self.metadata,
        }
    }
}

/// `max_age` as stored: whole seconds (saturated) and the nanosecond remainder.
pub(crate) fn age_parts(age: Option<Duration>) -> (Option<i64>, Option<i32>) {
    match age {
        None => (None, None),
        Some(d) => (
            Some(to_i64(d.as_secs())),
            // subsec_nanos() < 1e9 always fits an i32.
            Some(i32::try_from(d.subsec_nanos()).unwrap_or(i32::MAX)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(to_i64(5), 5);
        assert_eq!(to_i64(u64::MAX), i64::MAX);
        assert_eq!(age_parts(None), (None, None));
        assert_eq!(age_parts(Some(Duration::new(3, 250))), (Some(3), Some(250)));
        assert!(state_of(7).is_err());
        assert_eq!(state_of(STATE_TOMBSTONED).unwrap(), StreamState::Tombstoned);
    }
}
