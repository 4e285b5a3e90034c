//! Projections into a SQLite read-model database (a file of its own, apart from the event
//! store).
//!
//! Every read-model transaction runs on the blocking thread pool, never on the async workers,
//! with `BEGIN IMMEDIATE` so concurrent runners (a live one and a rebuild, possibly in other
//! processes) take the write lock before they look at their checkpoint.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use attest_core::{Position, RecordedEvent};
use attest_store::{EventStore, LogFilter};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::driver::{Backend, Commit, Driver};
use super::{
    check_ident, HandlerError, ParkedEvent, Projection, ProjectionError, ProjectionLag,
    ProjectorOptions, RebuildReport, ReplayOutcome, Tables,
};

/// A projection whose read model lives in SQLite.
pub trait SqliteProjection: Projection {
    /// Creates the tables (and indexes) of one generation; `tables` gives their names.
    fn create_tables(
        &mut self,
        tx: &Transaction<'_>,
        tables: &Tables,
    ) -> Result<(), rusqlite::Error>;

    /// Applies one event to the read model. Runs inside the projector's transaction: do not
    /// commit or roll back. Use `tx.prepare_cached` for speed. An error rolls the whole
    /// transaction back; the projector then retries the event alone and finally parks it.
    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        tables: &Tables,
        event: &RecordedEvent,
    ) -> Result<(), HandlerError>;
}

const META: &str = "
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name       TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('active', 'building')),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (name, generation)
);
CREATE TABLE IF NOT EXISTS projection_parked (
    name       TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    event_id   TEXT    NOT NULL,
    stream_id  TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    error      TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    parked_at  INTEGER NOT NULL,
    PRIMARY KEY (name, generation, position)
);
";

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn to_i64(p: Position) -> i64 {
    i64::try_from(p).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

struct Inner<P> {
    conn: Connection,
    projection: P,
    tables: HashMap<u64, Tables>,
}

impl<P: SqliteProjection> Inner<P> {
    fn tables(&mut self, generation: u64) -> Tables {
        let bases = self.projection.tables();
        self.tables
            .entry(generation)
            .or_insert_with(|| Tables::new(bases, generation, None))
            .clone()
    }
}

/// The SQLite side of a projector.
struct SqliteBackend<P> {
    name: String,
    bases: &'static [&'static str],
    filter: LogFilter,
    inner: Arc<Mutex<Inner<P>>>,
}

impl<P: SqliteProjection> SqliteBackend<P> {
    async fn blocking<R, F>(&self, f: F) -> Result<R, ProjectionError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Inner<P>) -> Result<R, ProjectionError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.lock().map_err(|_| {
                ProjectionError::Worker("read-model connection lock poisoned".into())
            })?;
            f(&mut guard)
        })
        .await
        .map_err(|e| ProjectionError::Worker(e.to_string()))?
    }
}

/// Reads the checkpoint row of `generation` and classifies it against `from`.
fn check_checkpoint(
    tx: &Transaction<'_>,
    name: &str,
    generation: u64,
    from: Position,
) -> Result<Option<Commit>, rusqlite::Error> {
    let row: Option<i64> = tx
        .prepare_cached(
            "SELECT position FROM projection_checkpoints WHERE name = ?1 AND generation = ?2",
        )?
        .query_row(params![name, to_i64(generation)], |r| r.get(0))
        .optional()?;
    Ok(match row {
        None => Some(Commit::Retired),
        Some(p) if to_u64(p) != from => Some(Commit::Conflict),
        Some(_) => None,
    })
}

fn set_checkpoint(
    tx: &Transaction<'_>,
    name: &str,
    generation: u64,
    position: Position,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "UPDATE projection_checkpoints SET position = ?3, updated_at = ?4
         WHERE name = ?1 AND generation = ?2",
    )?
    .execute(params![
        name,
        to_i64(generation),
        to_i64(position),
        now_micros()
    ])?;
    Ok(())
}

fn point_views(tx: &Transaction<'_>, tables: &Tables) -> Result<(), rusqlite::Error> {
    for (base, full) in tables.iter() {
        tx.execute_batch(&format!(
            "DROP VIEW IF EXISTS \"{base}\"; CREATE VIEW \"{base}\" AS SELECT * FROM {full};"
        ))?;
    }
    Ok(())
}

fn drop_generation(
    tx: &Transaction<'_>,
    name: &str,
    tables: &Tables,
) -> Result<(), rusqlite::Error> {
    for (_, full) in tables.iter() {
        tx.execute_batch(&format!("DROP TABLE IF EXISTS {full};"))?;
    }
    let g = to_i64(tables.generation());
    tx.execute(
        "DELETE FROM projection_checkpoints WHERE name = ?1 AND generation = ?2",
        params![name, g],
    )?;
    tx.execute(
        "DELETE FROM projection_parked WHERE name = ?1 AND generation = ?2",
        params![name, g],
    )?;
    Ok(())
}

fn active_row(conn: &Connection, name: &str) -> Result<Option<(u64, Position)>, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT generation, position FROM projection_checkpoints
         WHERE name = ?1 AND status = 'active'",
    )?
    .query_row(params![name], |r| {
        Ok((to_u64(r.get(0)?), to_u64(r.get(1)?)))
    })
    .optional()
}

fn parked_from_row(r: &rusqlite::Row<'_>) -> Result<ParkedEvent, rusqlite::Error> {
    let conv = |i: usize, e: attest_core::ValidationError| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let event_id: String = r.get(3)?;
    let stream_id: String = r.get(4)?;
    let parked_at: i64 = r.get(8)?;
    Ok(ParkedEvent {
        name: r.get(0)?,
        generation: to_u64(r.get(1)?),
        position: to_u64(r.get(2)?),
        event_id: event_id.parse().map_err(|e| conv(3, e))?,
        stream_id: stream_id.parse().map_err(|e| conv(4, e))?,
        event_type: r.get(5)?,
        error: r.get(6)?,
        attempts: u32::try_from(r.get::<_, i64>(7)?).unwrap_or(u32::MAX),
        parked_at: DateTime::from_timestamp_micros(parked_at).unwrap_or_default(),
    })
}

#[async_trait]
impl<P: SqliteProjection> Backend for SqliteBackend<P> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn active(&self) -> Result<(u64, Position), ProjectionError> {
        let name = self.name.clone();
        self.blocking(move |inner| {
            if let Some(a) = active_row(&inner.conn, &name)? {
                return Ok(a);
            }
            // First use: generation 1 becomes active at position 0.
            let tables = inner.tables(1);
            let Inner {
                conn, projection, ..
            } = inner;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(a) = active_row(&tx, &name)? {
                return Ok(a);
            }
            projection.create_tables(&tx, &tables)?;
            tx.execute(
                "INSERT INTO projection_checkpoints (name, generation, position, status, updated_at)
                 VALUES (?1, 1, 0, 'active', ?2)",
                params![name, now_micros()],
            )?;
            point_views(&tx, &tables)?;
            tx.commit()?;
            Ok((1, 0))
        })
        .await
    }

    async fn commit(
        &self,
        generation: u64,
        from: Position,
        events: Arc<Vec<RecordedEvent>>,
        range: Range<usize>,
    ) -> Result<Commit, ProjectionError> {
        let name = self.name.clone();
        let filter = self.filter.clone();
        self.blocking(move |inner| {
            let tables = inner.tables(generation);
            let Inner {
                conn, projection, ..
            } = inner;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(c) = check_checkpoint(&tx, &name, generation, from)? {
                return Ok(c);
            }
            let slice = &events[range];
            for (index, event) in slice.iter().enumerate() {
                if !filter.matches(event) {
                    continue;
                }
                if let Err(error) = projection.handle(&tx, &tables, event) {
                    // Dropping `tx` rolls back everything this batch wrote.
                    return Ok(Commit::Failed { index, error });
                }
            }
            if let Some(last) = slice.last() {
                set_checkpoint(&tx, &name, generation, last.position)?;
            }
            tx.commit()?;
            Ok(Commit::Done)
        })
        .await
    }

    async fn park(
        &self,
        generation: u64,
        from: Position,
        event: &RecordedEvent,
        error: String,
        attempts: u32,
    ) -> Result<Commit, ProjectionError> {
        let name = self.name.clone();
        let (position, id, stream, etype) = (
            event.position,
            event.id.to_string(),
            event.stream_id.to_string(),
            event.event_type.to_string(),
        );
        self.blocking(move |inner| {
            let tx = inner
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(c) = check_checkpoint(&tx, &name, generation, from)? {
                return Ok(c);
            }
            tx.execute(
                "INSERT OR REPLACE INTO projection_parked
                 (name, generation, position, event_id, stream_id, event_type, error, attempts, parked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    name,
                    to_i64(generation),
                    to_i64(position),
                    id,
                    stream,
                    etype,
                    error,
                    i64::from(attempts),
                    now_micros()
                ],
            )?;
            set_checkpoint(&tx, &name, generation, position)?;
            tx.commit()?;
            Ok(Commit::Done)
        })
        .await
    }

    async fn create_generation(&self) -> Result<u64, ProjectionError> {
        // Make sure an active generation exists first.
        self.active().await?;
        let name = self.name.clone();
        let bases = self.bases;
        self.blocking(move |inner| {
            let tx = inner
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            // A new rebuild supersedes an unfinished one (e.g. one that crashed).
            let stale: Vec<i64> = tx
                .prepare(
                    "SELECT generation FROM projection_checkpoints
                     WHERE name = ?1 AND status = 'building'",
                )?
                .query_map(params![name], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for g in stale {
                drop_generation(&tx, &name, &Tables::new(bases, to_u64(g), None))?;
            }
            let max: i64 = tx.query_row(
                "SELECT COALESCE(MAX(generation), 0) FROM projection_checkpoints WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )?;
            let generation = to_u64(max) + 1;
            let tables = Tables::new(bases, generation, None);
            inner.projection.create_tables(&tx, &tables)?;
            tx.execute(
                "INSERT INTO projection_checkpoints (name, generation, position, status, updated_at)
                 VALUES (?1, ?2, 0, 'building', ?3)",
                params![name, to_i64(generation), now_micros()],
            )?;
            tx.commit()?;
            Ok(generation)
        })
        .await
    }

    async fn try_switch(
        &self,
        generation: u64,
        at: Position,
    ) -> Result<Option<u64>, ProjectionError> {
        let name = self.name.clone();
        let bases = self.bases;
        self.blocking(move |inner| {
            let tx = inner
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mine: Option<i64> = tx
                .query_row(
                    "SELECT position FROM projection_checkpoints
                     WHERE name = ?1 AND generation = ?2 AND status = 'building'",
                    params![name, to_i64(generation)],
                    |r| r.get(0),
                )
                .optional()?;
            if mine.map(to_u64) != Some(at) {
                return Err(ProjectionError::GenerationRetired { name, generation });
            }
            let Some((old, old_pos)) = active_row(&tx, &name)? else {
                return Err(ProjectionError::GenerationRetired { name, generation });
            };
            if old_pos > at {
                return Ok(None);
            }
            drop_generation(&tx, &name, &Tables::new(bases, old, None))?;
            tx.execute(
                "UPDATE projection_checkpoints SET status = 'active', updated_at = ?3
                 WHERE name = ?1 AND generation = ?2",
                params![name, to_i64(generation), now_micros()],
            )?;
            point_views(&tx, &Tables::new(bases, generation, None))?;
            tx.commit()?;
            Ok(Some(old))
        })
        .await
    }

    async fn parked(&self) -> Result<Vec<ParkedEvent>, ProjectionError> {
        let name = self.name.clone();
        self.blocking(move |inner| {
            let mut stmt = inner.conn.prepare_cached(
                "SELECT p.name, p.generation, p.position, p.event_id, p.stream_id, p.event_type,
                        p.error, p.attempts, p.parked_at
                 FROM projection_parked p JOIN projection_checkpoints c
                   ON c.name = p.name AND c.generation = p.generation AND c.status = 'active'
                 WHERE p.name = ?1 ORDER BY p.position",
            )?;
            let rows = stmt
                .query_map(params![name], parked_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn replay(
        &self,
        parked: ParkedEvent,
        event: RecordedEvent,
    ) -> Result<ReplayOutcome, ProjectionError> {
        self.blocking(move |inner| {
            let tables = inner.tables(parked.generation);
            let Inner { conn, projection, .. } = inner;
            let key = params![parked.name, to_i64(parked.generation), to_i64(parked.position)];
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let still: bool = tx
                .query_row(
                    "SELECT 1 FROM projection_parked WHERE name = ?1 AND generation = ?2 AND position = ?3",
                    key,
                    |_| Ok(true),
                )
                .optional()?
                .unwrap_or(false);
            if !still {
                return Err(ProjectionError::NotParked {
                    name: parked.name,
                    position: parked.position,
                });
            }
            // On failure `tx` is dropped (rolled back) before the attempt is recorded.
            let result = projection.handle(&tx, &tables, &event);
            Ok(match result {
                Ok(()) => {
                    tx.execute(
                        "DELETE FROM projection_parked WHERE name = ?1 AND generation = ?2 AND position = ?3",
                        key,
                    )?;
                    tx.commit()?;
                    ReplayOutcome::Applied
                }
                Err(e) => {
                    let msg = e.to_string();
                    drop(tx);
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    tx.execute(
                        "UPDATE projection_parked SET attempts = attempts + 1, error = ?4, parked_at = ?5
                         WHERE name = ?1 AND generation = ?2 AND position = ?3",
                        params![
                            parked.name,
                            to_i64(parked.generation),
                            to_i64(parked.position),
                            msg,
                            now_micros()
                        ],
                    )?;
                    tx.commit()?;
                    ReplayOutcome::StillFailing(msg)
                }
            })
        })
        .await
    }
}

/// Runs one [`SqliteProjection`] against an event store. Cheap to clone; all clones share the
/// read-model connection.
pub struct SqliteProjector<P: SqliteProjection> {
    driver: Driver<SqliteBackend<P>>,
    path: PathBuf,
}

impl<P: SqliteProjection> Clone for SqliteProjector<P> {
    fn clone(&self) -> Self {
        SqliteProjector {
            driver: self.driver.clone(),
            path: self.path.clone(),
        }
    }
}

impl<P: SqliteProjection> SqliteProjector<P> {
    /// Opens (creating if needed) the read-model database at `path` for `projection`, fed from
    /// `store`. Creates the bookkeeping tables and, on first use, generation 1 of the read
    /// model with its views.
    pub async fn open(
        path: impl AsRef<Path>,
        store: Arc<dyn EventStore>,
        projection: P,
        options: ProjectorOptions,
    ) -> Result<Self, ProjectionError> {
        let name = projection.name().to_string();
        check_ident(&name)?;
        let bases = projection.tables();
        for b in bases {
            check_ident(b)?;
        }
        let filter = projection.filter();
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let durable = options.durable;
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, rusqlite::Error> {
            let conn = Connection::open(&p)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })?;
            // A large page cache keeps a catch-up from re-reading index pages.
            conn.pragma_update(None, "cache_size", -65536)?;
            conn.pragma_update(None, "temp_store", "MEMORY")?;
            conn.set_prepared_statement_cache_capacity(64);
            conn.execute_batch(META)?;
            Ok(conn)
        })
        .await
        .map_err(|e| ProjectionError::Worker(e.to_string()))??;
        let backend = SqliteBackend {
            name,
            bases,
            filter,
            inner: Arc::new(Mutex::new(Inner {
                conn,
                projection,
                tables: HashMap::new(),
            })),
        };
        let projector = SqliteProjector {
            driver: Driver {
                backend: Arc::new(backend),
                store,
                options,
            },
            path,
        };
        projector.driver.backend.active().await?;
        Ok(projector)
    }

    /// The read-model database file. Readers open their own connection to it and query the
    /// views named after the projection's tables.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The projection's name.
    pub fn name(&self) -> &str {
        self.driver.backend.name()
    }

    /// The active generation and its checkpoint.
    pub async fn checkpoint(&self) -> Result<(u64, Position), ProjectionError> {
        self.driver.backend.active().await
    }

    /// Applies every event committed so far, then returns the checkpoint.
    pub async fn catch_up(&self) -> Result<Position, ProjectionError> {
        self.driver.catch_up().await
    }

    /// Catches up, then follows the log live. Returns `Ok(())` only when the store closes; a
    /// read-model or store failure stops it with an error (logged). Cancel it by dropping the
    /// future / aborting its task: committed work is never split from its checkpoint.
    pub async fn run(&self) -> Result<(), ProjectionError> {
        self.driver.run().await
    }

    /// Blue/green rebuild: replays the log from position 0 into a new generation while the
    /// current one keeps serving, then switches the views to it and drops the old tables.
    pub async fn rebuild(&self) -> Result<RebuildReport, ProjectionError> {
        self.driver.rebuild().await
    }

    /// Lag behind the head of the log.
    pub async fn lag(&self) -> Result<ProjectionLag, ProjectionError> {
        self.driver.lag().await
    }

    /// Events parked in the active generation, by position.
    pub async fn parked(&self) -> Result<Vec<ParkedEvent>, ProjectionError> {
        self.driver.backend.parked().await
    }

    /// Applies a parked event again (e.g. after a fix). On success it leaves the parked list.
    /// Note that it is applied after events that came later in the log.
    pub async fn replay_parked(
        &self,
        position: Position,
    ) -> Result<ReplayOutcome, ProjectionError> {
        self.driver.replay_parked(position).await
    }
}
