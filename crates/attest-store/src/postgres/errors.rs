//! Mapping of driver and pool errors to [`StoreError`].

use attest_core::EventId;
use tokio_postgres::error::SqlState;

use crate::StoreError;

/// Backend name used in [`StoreError::Backend`].
pub(crate) const BACKEND: &str = "postgres";

/// Name of the unique constraint on event ids.
pub(crate) const EVENT_ID_CONSTRAINT: &str = "events_event_id_unique";

/// Wraps a driver error.
pub(crate) fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::backend(BACKEND, e)
}

/// Wraps a connection-pool error.
pub(crate) fn pool(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::backend(BACKEND, e)
}

/// Maps an error of the append's write statement: a unique violation on the event id (an id
/// committed concurrently by another append) becomes [`StoreError::IdempotencyConflict`].
pub(crate) fn append_write(e: tokio_postgres::Error, fallback: EventId) -> StoreError {
    match e.as_db_error() {
        Some(db)
            if db.code() == &SqlState::UNIQUE_VIOLATION
                && db.constraint() == Some(EVENT_ID_CONSTRAINT) =>
        {
            let event_id = db.detail().and_then(id_from_detail).unwrap_or(fallback);
            StoreError::IdempotencyConflict {
                event_id,
                existing_stream: None,
            }
        }
        _ => pg(e),
    }
}

/// Extracts the id from `Key (event_id)=(<uuid>) already exists.`.
fn id_from_detail(detail: &str) -> Option<EventId> {
    let start = detail.find(")=(")? + 3;
    let rest = &detail[start..];
    let end = rest.find(')')?;
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unique_violation_detail() {
        let id = EventId::new();
        let detail = format!("Key (event_id)=({id}) already exists.");
        assert_eq!(id_from_detail(&detail), Some(id));
        assert_eq!(
            id_from_detail("Key (event_id)=(nope) already exists."),
            None
        );
        assert_eq!(id_from_detail("garbage"), None);
    }
}
