//! Schema, pragmas and schema versioning of the SQLite event store file.
//!
//! Layout (schema version 1, kept in `PRAGMA user_version`):
//! - `meta(key, value)`: the persisted head position (`head`); never derived from
//!   `max(position)`, so tombstoned events never make the head move backwards;
//! - `streams`: one row per stream ever named (integer key, name, category, last version,
//!   lifecycle state, retention metadata);
//! - `events`: the log, keyed by global position, with the integer stream key, version, event
//!   id (unique), envelope fields, metadata as JSON (NULL when empty), `recorded_at` in
//!   microseconds since the Unix epoch and a CRC-32 checksum;
//! - `snapshots`: the latest snapshot per stream.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use thiserror::Error;

use crate::StoreError;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a connection waits for a lock held by another connection before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Problems opening a SQLite event store file (wrapped in [`StoreError::Backend`]).
#[derive(Debug, Error)]
pub enum SqliteSetupError {
    /// The file was written by a newer build with a schema this one does not know.
    #[error(
        "event store file {path} has schema version {found}, newer than version {supported} \
         supported by this build; upgrade attest to open it"
    )]
    NewerSchema {
        /// The file.
        path: String,
        /// `user_version` found in the file.
        found: i64,
        /// Newest version this build supports.
        supported: i64,
    },
    /// The file has a negative (foreign) `user_version`.
    #[error("{path} is not an attest event store (user_version {found})")]
    ForeignFile {
        /// The file.
        path: String,
        /// `user_version` found in the file.
        found: i64,
    },
}

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta(key, value) VALUES ('head', 0);
CREATE TABLE IF NOT EXISTS streams (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    category        TEXT NOT NULL,
    last_version    INTEGER,
    state           INTEGER NOT NULL DEFAULT 0,
    max_count       INTEGER,
    max_age_ns      INTEGER,
    truncate_before INTEGER
);
CREATE INDEX IF NOT EXISTS streams_category ON streams(category);
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    stream         INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    event_id       BLOB NOT NULL,
    event_type     TEXT NOT NULL,
    schema_id      TEXT,
    schema_version INTEGER,
    content_type   TEXT NOT NULL,
    payload        BLOB NOT NULL,
    metadata       TEXT,
    recorded_at    INTEGER NOT NULL,
    checksum       INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_stream_version ON events(stream, version);
CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events(event_id);
CREATE TABLE IF NOT EXISTS snapshots (
    stream        TEXT PRIMARY KEY,
    version       INTEGER NOT NULL,
    state_version INTEGER NOT NULL,
    payload       BLOB NOT NULL,
    taken_at      TEXT NOT NULL
);
";

/// Maps a rusqlite error to the store's backend error.
pub(crate) fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::backend("sqlite", e)
}

/// Opens a read-write connection, switches the file to WAL and sets the durability level.
pub(crate) fn open_rw(path: &Path, durable: bool) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::backend(
            "sqlite",
            format!(
                "could not switch {} to WAL mode (got {mode})",
                path.display()
            ),
        ));
    }
    conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })
        .map_err(db_err)?;
    conn.pragma_update(None, "cache_size", -32_768i64)
        .map_err(db_err)?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Opens a read-only connection for the reader pool.
pub(crate) fn open_ro(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    conn.pragma_update(None, "cache_size", -16_384i64)
        .map_err(db_err)?;
    conn.pragma_update(None, "mmap_size", 268_435_456i64)
        .map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Creates the schema in an empty file, or checks the version of an existing one.
pub(crate) fn ensure_schema(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::backend(
            "sqlite",
            SqliteSetupError::NewerSchema {
                path: path.display().to_string(),
                found,
                supported: SCHEMA_VERSION,
            },
        ));
    }
    if found < 0 {
        return Err(StoreError::backend(
            "sqlite",
            SqliteSetupError::ForeignFile {
                path: path.display().to_string(),
                found,
            },
        ));
    }
    if found < SCHEMA_VERSION {
        tracing::info!(path = %path.display(), "creating attest event store schema v{SCHEMA_VERSION}");
        tx.execute_batch(SCHEMA_V1).map_err(db_err)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}
