//! Snapshots in the `snapshots` table of the event store file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use attest_core::StreamId;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::schema::{db_err, ensure_schema, open_rw};
use super::SqliteStore;
use crate::{Snapshot, SnapshotStore, StoreError};

/// A [`SnapshotStore`] keeping the latest snapshot per stream in the SQLite event store file.
///
/// It uses its own connection; SQLite serialises its writes with the event writer's.
#[derive(Clone)]
pub struct SqliteSnapshotStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteSnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSnapshotStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteSnapshotStore {
    /// Opens (creating if needed) the store file at `path` for snapshots.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = open_rw(&path, true)?;
        ensure_schema(&mut conn, &path)?;
        Ok(SqliteSnapshotStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// Snapshots kept in the same file as `store`.
    pub fn for_store(store: &SqliteStore) -> Result<Self, StoreError> {
        Self::open(store.path())
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| StoreError::backend("sqlite", "snapshot connection poisoned"))?;
            f(&guard)
        })
        .await
        .map_err(|e| StoreError::backend("sqlite", e))?
    }
}

#[async_trait]
impl SnapshotStore for SqliteSnapshotStore {
    async fn save_snapshot(&self, s: &Snapshot) -> Result<(), StoreError> {
        let s = s.clone();
        self.run(move |conn| {
            let version = i64::try_from(s.version)
                .map_err(|_| StoreError::InvalidArgument("snapshot version too large".into()))?;
            conn.prepare_cached(
                "INSERT INTO snapshots(stream, version, state_version, payload, taken_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(stream) DO UPDATE SET version = excluded.version, \
                 state_version = excluded.state_version, payload = excluded.payload, \
                 taken_at = excluded.taken_at WHERE excluded.version >= snapshots.version",
            )
            .map_err(db_err)?
            .execute(params![
                s.stream.as_str(),
                version,
                s.state_version,
                s.payload,
                s.taken_at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            ])
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let stream = stream.clone();
        self.run(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT version, state_version, payload, taken_at FROM snapshots \
                     WHERE stream = ?1",
                )
                .map_err(db_err)?
                .query_row([stream.as_str()], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .optional()
                .map_err(db_err)?;
            let Some((version, state_version, payload, taken_at)) = row else {
                return Ok(None);
            };
            let bad = |what: String| {
                StoreError::backend("sqlite", format!("snapshot of {stream} is damaged: {what}"))
            };
            let version = u64::try_from(version).map_err(|_| bad("negative version".into()))?;
            let taken_at = DateTime::parse_from_rfc3339(&taken_at)
                .map_err(|e| bad(format!("taken_at: {e}")))?
                .with_timezone(&Utc);
            Ok(Some(Snapshot {
                stream,
                version,
                state_version,
                payload,
                taken_at,
            }))
        })
        .await
    }

    async fn delete_snapshot(&self, stream: &StreamId) -> Result<(), StoreError> {
        let stream = stream.clone();
        self.run(move |conn| {
            conn.prepare_cached("DELETE FROM snapshots WHERE stream = ?1")
                .map_err(db_err)?
                .execute([stream.as_str()])
                .map_err(db_err)?;
            Ok(())
        })
        .await
    }
}
