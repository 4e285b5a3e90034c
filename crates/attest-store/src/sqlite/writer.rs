//! The single writer thread: group commit of appends, deletes and metadata changes.
//!
//! Requests arrive over a channel. The writer takes the first pending request, drains up to
//! `max_group_commit - 1` more that are already queued, and runs them in ONE transaction, each
//! inside its own `SAVEPOINT`: a request that fails (conflict, idempotency conflict, deleted
//! stream) is rolled back alone, with the in-memory head restored. The transaction commits
//! once (one fsync when durable), the head watch is updated, and then every request is
//! answered. If the commit itself fails, every request of the group gets the error.
//!
//! Savepoints are not free (SQLite copies every page a savepoint touches to its statement
//! journal; for single-event appends that doubled the writer's cost), so two cases skip them
//! without weakening the isolation: a request alone in its group (its transaction is its
//! savepoint: on failure the transaction is rolled back), and a request whose writes cannot
//! fail for a logical reason because everything was checked before its first write (see
//! `Request::needs_savepoint`). If such a request still hits a backend error mid-write, the
//! whole group fails rather than commit a partial request.

use std::collections::{HashMap, HashSet};

use attest_core::{ExpectedVersion, Position, StreamId};
use chrono::Utc;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use tokio::sync::{mpsc, oneshot, watch};

use super::codec::{
    encode_metadata, load_stream, metadata_columns, micros, state_column, to_sql_int, StreamRow,
};
use super::schema::db_err;
use crate::{
    validate, AppendResult, DeleteMode, StoreError, StreamAppend, StreamAppendResult,
    StreamMetadata, StreamState,
};

/// A message to the writer thread.
pub(crate) enum Command {
    /// A request to run in the next group.
    Request(Request),
    /// Finish what is queued before this and stop.
    Shutdown,
}

/// A write request.
pub(crate) enum Request {
    /// Append to one or several streams.
    Append {
        appends: Vec<StreamAppend>,
        reply: oneshot::Sender<Result<AppendResult, StoreError>>,
    },
    /// Replace a stream's metadata.
    SetMetadata {
        stream: StreamId,
        metadata: StreamMetadata,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Soft-delete or tombstone a stream.
    Delete {
        stream: StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

impl Request {
    /// Whether the request needs its own savepoint. Every request checks everything it can
    /// (idempotency, lifecycle, expected versions, duplicate ids) before its first write, so
    /// a request whose writes cannot fail for a logical reason runs without one (savepoints
    /// cost about as much as the rest of a single-event append). The exception: a stream part
    /// of several events, whose later ids are only checked by the unique index while inserting
    /// (one look-up per event would cost more than the savepoint), and tombstones, which write
    /// several rows.
    fn needs_savepoint(&self) -> bool {
        match self {
            Request::Append { appends, .. } => appends.iter().any(|p| p.events.len() > 1),
            Request::SetMetadata { .. } => false,
            Request::Delete { mode, .. } => *mode == DeleteMode::Hard,
        }
    }
}

/// A request processed inside the group transaction, waiting for the commit to answer.
enum Done {
    Append(
        oneshot::Sender<Result<AppendResult, StoreError>>,
        Result<AppendResult, StoreError>,
    ),
    Unit(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
}

impl Done {
    fn error(&self) -> Option<&StoreError> {
        match self {
            Done::Append(_, r) => r.as_ref().err(),
            Done::Unit(_, r) => r.as_ref().err(),
        }
    }

    fn reply(self) {
        // A caller that gave up waiting (dropped future) no longer needs the answer.
        match self {
            Done::Append(tx, r) => {
                let _ = tx.send(r);
            }
            Done::Unit(tx, r) => {
                let _ = tx.send(r);
            }
        }
    }

    fn fail(self, why: &str) {
        let err = || StoreError::backend("sqlite", why.to_owned());
        match self {
            Done::Append(tx, _) => {
                let _ = tx.send(Err(err()));
            }
            Done::Unit(tx, _) => {
                let _ = tx.send(Err(err()));
            }
        }
    }
}

/// What the writer remembers of a stream between requests.
#[derive(Debug, Clone, Copy)]
struct Cached {
    key: i64,
    last_version: Option<u64>,
    state: StreamState,
}

impl Cached {
    /// The version seen by expected-version checks: soft-deleted streams count as absent.
    fn actual_version(&self) -> Option<u64> {
        match self.state {
            StreamState::Active => self.last_version,
            StreamState::SoftDeleted | StreamState::Tombstoned => None,
        }
    }
}

impl From<&StreamRow> for Cached {
    fn from(r: &StreamRow) -> Self {
        Cached {
            key: r.key,
            last_version: r.last_version,
            state: r.state,
        }
    }
}

/// Most streams the writer keeps in its cache before starting afresh.
const MAX_CACHED_STREAMS: usize = 100_000;

/// Owns the write connection; runs on its own OS thread.
pub(crate) struct Writer {
    conn: Connection,
    head_tx: std::sync::Arc<watch::Sender<Position>>,
    max_group: usize,
    last_recorded: i64,
    /// Stream keys, versions and states as committed (or written by the current request).
    /// Cleared whenever a rollback or another connection's commit could make it stale.
    streams: HashMap<StreamId, Cached>,
    /// Whether the current request changed `streams`.
    touched: bool,
    /// `PRAGMA data_version` at the last group: changes when another connection commits.
    data_version: Option<i64>,
}

/// Where an existing event id lives.
struct Found {
    stream_key: i64,
    stream_name: String,
    version: u64,
    position: u64,
}

impl Writer {
    /// A writer over `conn` (schema already ensured), publishing heads on `head_tx`.
    pub fn new(
        conn: Connection,
        head_tx: std::sync::Arc<watch::Sender<Position>>,
        max_group: usize,
    ) -> Self {
        Writer {
            conn,
            head_tx,
            max_group: max_group.max(1),
            last_recorded: i64::MIN,
            streams: HashMap::new(),
            touched: false,
            data_version: None,
        }
    }

    /// The stream's key, last version and state, from the cache or the database.
    fn stream(&mut self, stream: &StreamId) -> Result<Option<Cached>, StoreError> {
        if let Some(c) = self.streams.get(stream) {
            return Ok(Some(*c));
        }
        let row = load_stream(&self.conn, stream.as_str())?;
        Ok(row.map(|r| {
            let c = Cached::from(&r);
            self.cache(stream, c);
            c
        }))
    }

    fn cache(&mut self, stream: &StreamId, c: Cached) {
        if self.streams.len() >= MAX_CACHED_STREAMS && !self.streams.contains_key(stream) {
            self.streams.clear();
        }
        self.streams.insert(stream.clone(), c);
    }

    /// Records a write of the current request to the cache.
    fn wrote(&mut self, stream: &StreamId, c: Cached) {
        self.touched = true;
        self.cache(stream, c);
    }

    /// Serves requests until `Shutdown` or until every sender is gone.
    pub fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        tracing::debug!("sqlite writer started");
        let mut group = Vec::with_capacity(self.max_group);
        let mut stop = false;
        while !stop {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            match first {
                Command::Shutdown => break,
                Command::Request(r) => group.push(r),
            }
            while group.len() < self.max_group {
                match rx.try_recv() {
                    Ok(Command::Shutdown) => {
                        stop = true;
                        break;
                    }
                    Ok(Command::Request(r)) => group.push(r),
                    Err(_) => break,
                }
            }
            self.run_group(&mut group);
        }
        // Requests queued after the shutdown are dropped: their callers see `Closed`.
        rx.close();
        tracing::debug!("sqlite writer stopped");
    }

    fn exec(&self, sql: &str) -> Result<(), rusqlite::Error> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    fn run_group(&mut self, group: &mut Vec<Request>) {
        let size = group.len();
        let mut done = Vec::with_capacity(size);
        let started = match self.begin() {
            Ok(head) => Some(head),
            Err(e) => {
                tracing::error!(error = %e, "sqlite writer could not begin a transaction");
                let why = format!("could not begin transaction: {e}");
                for r in group.drain(..) {
                    Self::unprocessed(r).fail(&why);
                }
                None
            }
        };
        let Some(start_head) = started else { return };
        let mut head = start_head;
        let mut fatal: Option<String> = None;
        let alone = size == 1;
        let mut rollback_all = false;
        for cmd in group.drain(..) {
            if let Some(why) = &fatal {
                Self::unprocessed(cmd).fail(why);
                continue;
            }
            // A request alone in its group needs no savepoint: the transaction is its savepoint.
            let savepoint = !alone && cmd.needs_savepoint();
            if savepoint {
                if let Err(e) = self.exec("SAVEPOINT req") {
                    let why = format!("savepoint failed: {e}");
                    Self::unprocessed(cmd).fail(&why);
                    fatal = Some(why);
                    continue;
                }
            }
            let saved = head;
            self.touched = false;
            let d = match cmd {
                Request::Append { appends, reply } => {
                    Done::Append(reply, self.append(&appends, &mut head))
                }
                Request::SetMetadata {
                    stream,
                    metadata,
                    reply,
                } => Done::Unit(reply, self.set_metadata(&stream, &metadata)),
                Request::Delete {
                    stream,
                    expected,
                    mode,
                    reply,
                } => Done::Unit(reply, self.delete(&stream, expected, mode)),
            };
            let end = match (d.error(), savepoint) {
                (None, true) => self.exec("RELEASE req").map_err(|e| e.to_string()),
                (None, false) => Ok(()),
                (Some(_), true) => {
                    head = saved;
                    if self.touched {
                        self.streams.clear();
                    }
                    self.exec("ROLLBACK TO req")
                        .and_then(|_| self.exec("RELEASE req"))
                        .map_err(|e| e.to_string())
                }
                // Alone in the group: roll the whole transaction back, answer its own error.
                (Some(_), false) if alone => {
                    head = saved;
                    rollback_all = true;
                    Ok(())
                }
                // Without a savepoint only checks that run before any write may fail; a
                // backend error may have come from a write, so the whole group is abandoned.
                (Some(StoreError::Backend { source, .. }), false) => Err(source.to_string()),
                (Some(_), false) => {
                    head = saved;
                    Ok(())
                }
            };
            if let Err(e) = end {
                fatal = Some(format!("request could not be isolated: {e}"));
            }
            done.push(d);
        }
        if rollback_all && fatal.is_none() {
            if let Err(e) = self.exec("ROLLBACK") {
                tracing::warn!(error = %e, "rollback of a failed request");
            }
            if self.touched {
                self.streams.clear();
            }
            for d in done {
                d.reply();
            }
            return;
        }
        let commit = match fatal {
            Some(why) => Err(why),
            None => self.commit(start_head, head).map_err(|e| e.to_string()),
        };
        match commit {
            Ok(()) => {
                if head != start_head {
                    super::watcher::raise(&self.head_tx, head);
                }
                tracing::trace!(requests = size, head, "group committed");
                for d in done {
                    d.reply();
                }
            }
            Err(why) => {
                self.streams.clear();
                tracing::error!(error = %why, requests = size, "sqlite group commit failed");
                if let Err(e) = self.exec("ROLLBACK") {
                    tracing::debug!(error = %e, "rollback after failed commit");
                }
                let why = format!("group commit failed: {why}");
                for d in done {
                    d.fail(&why);
                }
            }
        }
    }

    /// Wraps an unprocessed command's reply channel so it can be failed.
    fn unprocessed(req: Request) -> Done {
        match req {
            Request::Append { reply, .. } => Done::Append(reply, Err(StoreError::Closed)),
            Request::SetMetadata { reply, .. } | Request::Delete { reply, .. } => {
                Done::Unit(reply, Err(StoreError::Closed))
            }
        }
    }

    /// Starts the group transaction and reads the persisted head.
    fn begin(&mut self) -> Result<Position, rusqlite::Error> {
        self.exec("BEGIN IMMEDIATE")?;
        let read = |conn: &Connection| -> Result<(i64, i64), rusqlite::Error> {
            let dv: i64 = conn
                .prepare_cached("PRAGMA data_version")?
                .query_row([], |r| r.get(0))?;
            let head: i64 = conn
                .prepare_cached("SELECT value FROM meta WHERE key = 'head'")?
                .query_row([], |r| r.get(0))?;
            Ok((dv, head))
        };
        match read(&self.conn) {
            Ok((dv, h)) => {
                if self.data_version != Some(dv) {
                    // Another connection committed (e.g. snapshots, or another process):
                    // what we cached may be stale.
                    self.streams.clear();
                    self.data_version = Some(dv);
                }
                Ok(u64::try_from(h).unwrap_or(0))
            }
            Err(e) => {
                let _ = self.exec("ROLLBACK");
                Err(e)
            }
        }
    }

    fn commit(&mut self, start: Position, head: Position) -> Result<(), rusqlite::Error> {
        if head != start {
            self.conn
                .prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'head'")?
                .execute([to_sql_int(head)])?;
        }
        self.exec("COMMIT")
    }

    fn find_event(&self, id: &attest_core::EventId) -> Result<Option<Found>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT e.stream, s.name, e.version, e.position FROM events e \
                 JOIN streams s ON s.id = e.stream WHERE e.event_id = ?1",
            )
            .map_err(db_err)?;
        stmt.query_row([id.as_uuid().as_bytes().as_slice()], |r| {
            Ok(Found {
                stream_key: r.get(0)?,
                stream_name: r.get(1)?,
                version: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                position: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
            })
        })
        .optional()
        .map_err(db_err)
    }

    fn conflict(id: attest_core::EventId, stream_name: &str) -> StoreError {
        StoreError::IdempotencyConflict {
            event_id: id,
            existing_stream: StreamId::new(stream_name).ok(),
        }
    }

    /// If the part's first event id already exists, checks that the whole part is a retry of
    /// an earlier append and returns where it landed (with its positions), else `None`.
    fn retry_of(
        &self,
        part: &StreamAppend,
    ) -> Result<Option<(StreamAppendResult, Position, Position)>, StoreError> {
        let Some(first) = part.events.first() else {
            return Ok(None);
        };
        let Some(f0) = self.find_event(&first.id)? else {
            return Ok(None);
        };
        if f0.stream_name != part.stream.as_str() {
            return Err(Self::conflict(first.id, &f0.stream_name));
        }
        let (mut min_pos, mut max_pos) = (f0.position, f0.position);
        for (i, e) in part.events.iter().enumerate().skip(1) {
            let same = self
                .find_event(&e.id)?
                .filter(|f| f.stream_key == f0.stream_key && f.version == f0.version + i as u64);
            match same {
                Some(f) => {
                    min_pos = min_pos.min(f.position);
                    max_pos = max_pos.max(f.position);
                }
                None => return Err(Self::conflict(first.id, &f0.stream_name)),
            }
        }
        Ok(Some((
            StreamAppendResult {
                stream: part.stream.clone(),
                first_version: f0.version,
                last_version: f0.version + part.events.len() as u64 - 1,
            },
            min_pos,
            max_pos,
        )))
    }

    fn recorded_now(&mut self) -> i64 {
        // Never earlier than an already recorded event, even if the wall clock steps back.
        let now = micros(Utc::now()).max(self.last_recorded);
        self.last_recorded = now;
        now
    }

    fn append(
        &mut self,
        appends: &[StreamAppend],
        head: &mut Position,
    ) -> Result<AppendResult, StoreError> {
        // Idempotency first: a retry must be recognised before its (now stale) expectation.
        let mut retries = Vec::with_capacity(appends.len());
        let mut first_new: Option<usize> = None;
        for (i, part) in appends.iter().enumerate() {
            match self.retry_of(part)? {
                Some(r) => retries.push(r),
                None => {
                    first_new.get_or_insert(i);
                }
            }
        }
        if let Some((r, _, _)) = retries.first() {
            if first_new.is_some() {
                // Some parts were appended before, others not: not a retry of one append.
                if let Some(e) = appends
                    .iter()
                    .find(|p| p.stream == r.stream)
                    .and_then(|p| p.events.first())
                {
                    return Err(Self::conflict(e.id, r.stream.as_str()));
                }
            }
            let first_position = retries.iter().map(|r| r.1).min().unwrap_or(0);
            let last_position = retries.iter().map(|r| r.2).max().unwrap_or(0);
            return Ok(AppendResult {
                streams: retries.into_iter().map(|r| r.0).collect(),
                first_position,
                last_position,
            });
        }

        // The same id twice in one request can never be appended.
        let total: usize = appends.iter().map(|p| p.events.len()).sum();
        if total > 1 {
            let mut ids = HashSet::with_capacity(total);
            for part in appends {
                if let Some(e) = part.events.iter().find(|e| !ids.insert(e.id)) {
                    return Err(StoreError::IdempotencyConflict {
                        event_id: e.id,
                        existing_stream: Some(part.stream.clone()),
                    });
                }
            }
        }
        let recorded_at = self.recorded_now();
        let mut results = Vec::with_capacity(appends.len());
        let mut rows: Vec<Option<Cached>> = Vec::with_capacity(appends.len());
        // Check every expectation before writing anything.
        for part in appends {
            let row = self.stream(&part.stream)?;
            if let Some(r) = &row {
                if r.state == StreamState::Tombstoned {
                    return Err(StoreError::StreamDeleted {
                        stream: part.stream.clone(),
                    });
                }
            }
            let actual = row.as_ref().and_then(Cached::actual_version);
            if !part.expected.accepts(actual) {
                return Err(StoreError::WrongExpectedVersion {
                    stream: part.stream.clone(),
                    expected: part.expected,
                    actual,
                });
            }
            rows.push(row);
        }
        let first_position = *head + 1;
        for (part, row) in appends.iter().zip(rows) {
            let (key, last) = match row {
                Some(r) => (r.key, r.last_version),
                None => (self.create_stream(&part.stream, None)?, None),
            };
            let first_version = last.map_or(0, |v| v + 1);
            let mut version = first_version;
            for e in &part.events {
                *head += 1;
                self.insert_event(key, version, *head, recorded_at, e, &part.stream)?;
                version += 1;
            }
            let last_version = version - 1;
            self.conn
                .prepare_cached("UPDATE streams SET last_version = ?2, state = ?3 WHERE id = ?1")
                .map_err(db_err)?
                .execute(params![
                    key,
                    to_sql_int(last_version),
                    state_column(StreamState::Active)
                ])
                .map_err(db_err)?;
            self.wrote(
                &part.stream,
                Cached {
                    key,
                    last_version: Some(last_version),
                    state: StreamState::Active,
                },
            );
            results.push(StreamAppendResult {
                stream: part.stream.clone(),
                first_version,
                last_version,
            });
        }
        Ok(AppendResult {
            streams: results,
            first_position,
            last_position: *head,
        })
    }

    fn create_stream(
        &self,
        stream: &StreamId,
        metadata: Option<&StreamMetadata>,
    ) -> Result<i64, StoreError> {
        let (mc, ma, tb) = metadata.map(metadata_columns).unwrap_or((None, None, None));
        self.conn
            .prepare_cached(
                "INSERT INTO streams(name, category, last_version, state, max_count, max_age_ns, \
                 truncate_before) VALUES (?1, ?2, NULL, ?3, ?4, ?5, ?6)",
            )
            .map_err(db_err)?
            .execute(params![
                stream.as_str(),
                stream.category(),
                state_column(StreamState::Active),
                mc,
                ma,
                tb
            ])
            .map_err(db_err)?;
        Ok(self.conn.last_insert_rowid())
    }

    fn insert_event(
        &self,
        key: i64,
        version: u64,
        position: Position,
        recorded_at: i64,
        e: &attest_core::NewEvent,
        stream: &StreamId,
    ) -> Result<(), StoreError> {
        let metadata = encode_metadata(&e.metadata)?;
        let sum = validate::checksum(&e.content_type, &e.payload);
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO events(position, stream, version, event_id, event_type, schema_id, \
                 schema_version, content_type, payload, metadata, recorded_at, checksum) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .map_err(db_err)?;
        let r = stmt.execute(params![
            to_sql_int(position),
            key,
            to_sql_int(version),
            e.id.as_uuid().as_bytes().as_slice(),
            e.event_type.as_str(),
            e.schema.as_ref().map(|s| s.id.as_str()),
            e.schema.as_ref().map(|s| s.version),
            e.content_type,
            e.payload,
            metadata,
            recorded_at,
            i64::from(sum),
        ]);
        match r {
            Ok(_) => Ok(()),
            Err(err) if err.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                // The id exists already: elsewhere, or earlier in this very request.
                match self.find_event(&e.id)? {
                    Some(f) => Err(Self::conflict(e.id, &f.stream_name)),
                    None => {
                        tracing::warn!(stream = %stream, "constraint violation on append");
                        Err(db_err(err))
                    }
                }
            }
            Err(err) => Err(db_err(err)),
        }
    }

    fn set_metadata(&self, stream: &StreamId, m: &StreamMetadata) -> Result<(), StoreError> {
        match load_stream(&self.conn, stream.as_str())? {
            None => {
                self.create_stream(stream, Some(m))?;
            }
            Some(r) if r.state == StreamState::Tombstoned => {
                return Err(StoreError::StreamDeleted {
                    stream: stream.clone(),
                })
            }
            Some(r) => {
                let (mc, ma, tb) = metadata_columns(m);
                self.conn
                    .prepare_cached(
                        "UPDATE streams SET max_count = ?2, max_age_ns = ?3, truncate_before = ?4 \
                         WHERE id = ?1",
                    )
                    .map_err(db_err)?
                    .execute(params![r.key, mc, ma, tb])
                    .map_err(db_err)?;
            }
        }
        Ok(())
    }

    fn delete(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<(), StoreError> {
        let row = load_stream(&self.conn, stream.as_str())?;
        if let Some(r) = &row {
            if r.state == StreamState::Tombstoned {
                return Err(StoreError::StreamDeleted {
                    stream: stream.clone(),
                });
            }
        }
        let actual = row.as_ref().and_then(StreamRow::actual_version);
        if !expected.accepts(actual) {
            return Err(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        match (mode, row) {
            (DeleteMode::Soft, None) => Err(StoreError::StreamNotFound {
                stream: stream.clone(),
            }),
            (DeleteMode::Soft, Some(r)) => {
                // Hide every event up to the deletion; a revived stream shows only newer ones.
                let tb = match (r.metadata.truncate_before, r.last_version) {
                    (tb, Some(last)) => Some(tb.unwrap_or(0).max(last + 1)),
                    (tb, None) => tb,
                };
                self.conn
                    .prepare_cached(
                        "UPDATE streams SET state = ?2, truncate_before = ?3 WHERE id = ?1",
                    )
                    .map_err(db_err)?
                    .execute(params![
                        r.key,
                        state_column(StreamState::SoftDeleted),
                        tb.map(to_sql_int)
                    ])
                    .map_err(db_err)?;
                self.wrote(
                    stream,
                    Cached {
                        state: StreamState::SoftDeleted,
                        ..Cached::from(&r)
                    },
                );
                Ok(())
            }
            (DeleteMode::Hard, row) => {
                let last_version = row.as_ref().and_then(|r| r.last_version);
                let key = match row {
                    Some(r) => r.key,
                    None => self.create_stream(stream, None)?,
                };
                let removed = self
                    .conn
                    .prepare_cached("DELETE FROM events WHERE stream = ?1")
                    .map_err(db_err)?
                    .execute([key])
                    .map_err(db_err)?;
                self.conn
                    .prepare_cached("UPDATE streams SET state = ?2 WHERE id = ?1")
                    .map_err(db_err)?
                    .execute(params![key, state_column(StreamState::Tombstoned)])
                    .map_err(db_err)?;
                self.wrote(
                    stream,
                    Cached {
                        key,
                        last_version,
                        state: StreamState::Tombstoned,
                    },
                );
                tracing::info!(stream = %stream, removed, "stream tombstoned");
                Ok(())
            }
        }
    }
}
