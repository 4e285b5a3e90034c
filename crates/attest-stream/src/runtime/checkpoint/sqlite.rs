//! Checkpoints in a SQLite file.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    check_job, decode_positions, encode_positions, to_i64, to_u64, Checkpoint, CheckpointStore,
    Fence, Sequences,
};
use crate::StreamError;

/// Checkpoints in a SQLite file of their own (table `stream_checkpoints`), one row per
/// (job, shard), replaced in one transaction. WAL mode, `synchronous=FULL`: a committed
/// checkpoint survives a crash of the process or the machine. Work runs on Tokio's blocking
/// pool, never on the async workers. Leases are not supported (one machine, one owner): a
/// commit with a fence is refused.
#[derive(Clone)]
pub struct SqliteCheckpointStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteCheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteCheckpointStore")
            .finish_non_exhaustive()
    }
}

fn db(e: rusqlite::Error) -> StreamError {
    StreamError::Checkpoint(format!("sqlite: {e}"))
}

impl SqliteCheckpointStore {
    /// Opens (creating) the checkpoint file at `path`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StreamError> {
        let path = path.as_ref().to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, rusqlite::Error> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS stream_checkpoints (
                     job        TEXT    NOT NULL,
                     shard      INTEGER NOT NULL,
                     positions  TEXT    NOT NULL,
                     watermark  INTEGER NOT NULL,
                     out_seq    INTEGER NOT NULL,
                     late_seq   INTEGER NOT NULL,
                     dead_seq   INTEGER NOT NULL,
                     state      BLOB    NOT NULL,
                     PRIMARY KEY (job, shard)
                 );",
            )?;
            Ok(conn)
        })
        .await
        .map_err(|e| StreamError::Checkpoint(format!("sqlite task: {e}")))?
        .map_err(db)?;
        Ok(SqliteCheckpointStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StreamError> + Send + 'static,
    ) -> Result<R, StreamError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StreamError::Checkpoint("sqlite connection lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StreamError::Checkpoint(format!("sqlite task: {e}")))?
    }
}

#[async_trait]
impl CheckpointStore for SqliteCheckpointStore {
    async fn load(&self, job: &str, shard: u32) -> Result<Option<Checkpoint>, StreamError> {
        check_job(job)?;
        let job = job.to_string();
        self.with(move |c| {
            let row = c
                .query_row(
                    "SELECT positions, watermark, out_seq, late_seq, dead_seq, state
                     FROM stream_checkpoints WHERE job = ?1 AND shard = ?2",
                    params![job, shard],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, Vec<u8>>(5)?,
                        ))
                    },
                )
                .optional()
                .map_err(db)?;
            let Some((pos, watermark, out, late, dead, state)) = row else {
                return Ok(None);
            };
            let p = decode_positions(&pos)?;
            Ok(Some(Checkpoint {
                positions: p.positions,
                event_times: p.event_times,
                watermark,
                sequences: Sequences {
                    outputs: to_u64(out, "out_seq")?,
                    late: to_u64(late, "late_seq")?,
                    dead_letters: to_u64(dead, "dead_seq")?,
                },
                state,
            }))
        })
        .await
    }

    async fn commit(
        &self,
        job: &str,
        shard: u32,
        checkpoint: &Checkpoint,
        fence: Option<&Fence>,
    ) -> Result<(), StreamError> {
        check_job(job)?;
        if fence.is_some() {
            return Err(StreamError::Config(
                "the SQLite checkpoint store keeps no leases; use PostgreSQL for scale-out".into(),
            ));
        }
        let job = job.to_string();
        let positions = encode_positions(checkpoint)?;
        let watermark = checkpoint.watermark;
        let out = to_i64(checkpoint.sequences.outputs, "out_seq")?;
        let late = to_i64(checkpoint.sequences.late, "late_seq")?;
        let dead = to_i64(checkpoint.sequences.dead_letters, "dead_seq")?;
        let state = checkpoint.state.clone();
        self.with(move |c| {
            let tx = c.transaction().map_err(db)?;
            tx.prepare_cached(
                "INSERT INTO stream_checkpoints
                     (job, shard, positions, watermark, out_seq, late_seq, dead_seq, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (job, shard) DO UPDATE SET
                     positions = excluded.positions, watermark = excluded.watermark,
                     out_seq = excluded.out_seq, late_seq = excluded.late_seq,
                     dead_seq = excluded.dead_seq, state = excluded.state",
            )
            .map_err(db)?
            .execute(params![
                job, shard, positions, watermark, out, late, dead, state
            ])
            .map_err(db)?;
            tx.commit().map_err(db)
        })
        .await
    }
}
