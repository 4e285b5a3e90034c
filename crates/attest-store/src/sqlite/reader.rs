//! Read-only connections and the queries they run.
//!
//! Readers never block the writer: in WAL mode each read sees the last committed state as of
//! its start, and since the single writer assigns positions in commit order, every read of the
//! global log sees a gap-free prefix of it (minus tombstoned events).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use attest_core::{Position, RecordedEvent, StreamId};
use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension};

use super::codec::{
    decode_event, load_stream, micros, to_limit, to_sql_int, DecodeCache, EVENT_COLUMNS,
};
use super::schema::{db_err, open_ro};
use crate::{Direction, LogFilter, StoreError, StreamFrom, StreamInfo, StreamState};

/// A read-only connection with its decode caches.
pub(crate) struct ReadConn {
    conn: Connection,
    cache: DecodeCache,
}

/// A small pool of read-only connections, opened on demand and kept for reuse.
pub(crate) struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<ReadConn>>,
    max_idle: usize,
}

impl ReaderPool {
    /// A pool over the database at `path`, keeping at most `max_idle` idle connections.
    pub fn new(path: PathBuf, max_idle: usize) -> Self {
        ReaderPool {
            path,
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// Runs `f` on a pooled connection (blocking: call from a blocking thread).
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut ReadConn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
        let mut rc = match pooled {
            Some(c) => c,
            None => ReadConn {
                conn: open_ro(&self.path)?,
                cache: DecodeCache::default(),
            },
        };
        let r = f(&mut rc);
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(rc);
            }
        }
        r
    }

    /// Drops every idle connection.
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

/// Total size of the database file and its WAL and shared-memory files.
pub(crate) fn size_on_disk(path: &Path) -> Option<u64> {
    let main = std::fs::metadata(path).ok()?.len();
    let side = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::fs::metadata(PathBuf::from(p)).map_or(0, |m| m.len())
    };
    Some(main + side("-wal") + side("-shm"))
}

impl ReadConn {
    /// Events of `stream`, honouring lifecycle and retention metadata.
    pub fn read_stream(
        &mut self,
        stream: &StreamId,
        from: StreamFrom,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // One read transaction: the stream record and its events come from the same snapshot.
        let tx = self.conn.unchecked_transaction().map_err(db_err)?;
        let row = load_stream(&tx, stream.as_str())?;
        let row = match row {
            None => {
                return Err(StoreError::StreamNotFound {
                    stream: stream.clone(),
                })
            }
            Some(r) => r,
        };
        match row.state {
            StreamState::Tombstoned => {
                return Err(StoreError::StreamDeleted {
                    stream: stream.clone(),
                })
            }
            StreamState::SoftDeleted => {
                return Err(StoreError::StreamNotFound {
                    stream: stream.clone(),
                })
            }
            StreamState::Active => {}
        }
        let Some(last) = row.last_version else {
            return Ok(Vec::new());
        };
        if max_count == 0 {
            return Ok(Vec::new());
        }
        self.cache.remember(row.key, stream);
        let m = &row.metadata;
        let lowest = m
            .truncate_before
            .unwrap_or(0)
            .max(m.max_count.map_or(0, |c| (last + 1).saturating_sub(c)));
        let min_recorded = m.max_age.map_or(i64::MIN, |age| {
            let age = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
            micros(Utc::now()).saturating_sub(age)
        });
        let sql = match direction {
            Direction::Forward => format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE stream = ?1 AND version >= ?2 \
                 AND version <= ?3 AND recorded_at >= ?4 ORDER BY version ASC LIMIT ?5"
            ),
            Direction::Backward => format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE stream = ?1 AND version >= ?2 \
                 AND version <= ?3 AND recorded_at >= ?4 ORDER BY version DESC LIMIT ?5"
            ),
        };
        let (lo, hi) = match (direction, from) {
            (Direction::Forward, StreamFrom::Start) => (lowest, last),
            (Direction::Forward, StreamFrom::End) => (lowest.max(last), last),
            (Direction::Forward, StreamFrom::Version(v)) => (lowest.max(v), last),
            (Direction::Backward, StreamFrom::Start) => (lowest, 0),
            (Direction::Backward, StreamFrom::End) => (lowest, last),
            (Direction::Backward, StreamFrom::Version(v)) => (lowest, v.min(last)),
        };
        if lo > hi {
            return Ok(Vec::new());
        }
        let mut stmt = tx.prepare_cached(&sql).map_err(db_err)?;
        let mut rows = stmt
            .query(params![
                row.key,
                to_sql_int(lo),
                to_sql_int(hi),
                min_recorded,
                to_limit(max_count)
            ])
            .map_err(db_err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(db_err)? {
            out.push(decode_event(r, &mut self.cache, |_, _, _| {
                Ok(stream.clone())
            })?);
        }
        Ok(out)
    }

    /// Up to `max_count` events after `after` matching `filter`, by position.
    pub fn read_all(
        &mut self,
        after: Position,
        max_count: usize,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if max_count == 0 {
            return Ok(Vec::new());
        }
        let ReadConn { conn, cache } = self;
        let mut out = Vec::with_capacity(max_count.min(4096));
        let mut push_rows = |rows: &mut rusqlite::Rows<'_>| -> Result<(), StoreError> {
            while let Some(r) = rows.next().map_err(db_err)? {
                out.push(decode_event(r, cache, |cache, key, pos| {
                    cache.stream_name(conn, key, pos)
                })?);
            }
            Ok(())
        };
        match filter {
            LogFilter::All => {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM events WHERE position > ?1 \
                         ORDER BY position ASC LIMIT ?2"
                    ))
                    .map_err(db_err)?;
                let mut rows = stmt
                    .query(params![to_sql_int(after), to_limit(max_count)])
                    .map_err(db_err)?;
                push_rows(&mut rows)?;
            }
            LogFilter::Category(c) => {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM events WHERE position > ?1 AND stream IN \
                         (SELECT id FROM streams WHERE category = ?3) \
                         ORDER BY position ASC LIMIT ?2"
                    ))
                    .map_err(db_err)?;
                let mut rows = stmt
                    .query(params![to_sql_int(after), to_limit(max_count), c.as_str()])
                    .map_err(db_err)?;
                push_rows(&mut rows)?;
            }
        }
        Ok(out)
    }

    /// What the store knows about `stream`.
    pub fn stream_info(&mut self, stream: &StreamId) -> Result<Option<StreamInfo>, StoreError> {
        Ok(
            load_stream(&self.conn, stream.as_str())?.map(|r| StreamInfo {
                stream: stream.clone(),
                last_version: r.last_version,
                state: r.state,
                metadata: r.metadata,
            }),
        )
    }

    /// The persisted head position.
    pub fn head(&mut self) -> Result<Position, StoreError> {
        let h: Option<i64> = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'head'")
            .map_err(db_err)?
            .query_row([], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        Ok(h.map_or(0, |h| u64::try_from(h).unwrap_or(0)))
    }

    /// `(events, streams, head)` from one snapshot.
    pub fn counts(&mut self) -> Result<(u64, u64, Position), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(db_err)?;
        let count = |sql: &str| -> Result<u64, StoreError> {
            let n: i64 = tx.query_row(sql, [], |r| r.get(0)).map_err(db_err)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        let events = count("SELECT count(*) FROM events")?;
        let streams = count("SELECT count(*) FROM streams")?;
        let head = count("SELECT value FROM meta WHERE key = 'head'")?;
        Ok((events, streams, head))
    }
}
