//! The embedded broker's own small SQLite tables: stream configs and consumer ack state.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{BusError, Result};
use crate::message::{ConsumerConfig, StreamConfig};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bus_streams (
    name   TEXT PRIMARY KEY,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_consumers (
    stream       TEXT NOT NULL,
    name         TEXT NOT NULL,
    config       TEXT NOT NULL,
    read_pos     INTEGER NOT NULL,
    ack_floor    INTEGER NOT NULL,
    consumer_seq INTEGER NOT NULL,
    PRIMARY KEY (stream, name)
);
CREATE TABLE IF NOT EXISTS bus_pending (
    stream       TEXT NOT NULL,
    consumer     TEXT NOT NULL,
    position     INTEGER NOT NULL,
    deliveries   INTEGER NOT NULL,
    deadline_ms  INTEGER NOT NULL,
    published_ms INTEGER NOT NULL,
    PRIMARY KEY (stream, consumer, position)
) WITHOUT ROWID;
";

/// One delivered-but-unsettled message as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingRow {
    pub position: u64,
    pub deliveries: u32,
    pub deadline_ms: i64,
    pub published_ms: i64,
}

/// A consumer's persisted cursor (the ack floor is derived from the pending rows on load).
#[derive(Debug, Clone)]
pub(crate) struct ConsumerRow {
    pub read_pos: u64,
    pub consumer_seq: u64,
    pub pending: Vec<PendingRow>,
}

/// What one state change writes, in one transaction.
#[derive(Debug, Default)]
pub(crate) struct Change {
    pub upsert: Vec<PendingRow>,
    pub remove: Vec<u64>,
    pub cursor: Option<(u64, u64, u64)>,
}

/// Handle to the state database (blocking work runs on tokio's blocking pool).
#[derive(Clone)]
pub(crate) struct StateDb {
    conn: Arc<Mutex<Connection>>,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl StateDb {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode survives a process crash; losing the last acks to a power cut
        // only causes redeliveries, which consumers absorb idempotently.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(StateDb {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| BusError::Task("state database mutex poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| BusError::Task(e.to_string()))?
    }

    pub(crate) async fn load_streams(&self) -> Result<Vec<StreamConfig>> {
        self.call(|c| {
            let mut st = c.prepare("SELECT config FROM bus_streams ORDER BY name")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for r in rows {
                out.push(serde_json::from_str(&r?)?);
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn load_consumers(&self, stream: &str) -> Result<Vec<ConsumerConfig>> {
        let stream = stream.to_string();
        self.call(move |c| {
            let mut st =
                c.prepare("SELECT config FROM bus_consumers WHERE stream = ?1 ORDER BY name")?;
            let rows = st.query_map(params![stream], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for r in rows {
                out.push(serde_json::from_str(&r?)?);
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn save_stream(&self, config: &StreamConfig) -> Result<()> {
        let name = config.name.clone();
        let json = serde_json::to_string(config)?;
        self.call(move |c| {
            c.execute(
                "INSERT INTO bus_streams(name, config) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET config = excluded.config",
                params![name, json],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn delete_stream(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM bus_streams WHERE name = ?1", params![name])?;
            tx.execute("DELETE FROM bus_consumers WHERE stream = ?1", params![name])?;
            tx.execute("DELETE FROM bus_pending WHERE stream = ?1", params![name])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Loads a consumer, or creates its row with `config` when it does not exist; an existing
    /// consumer gets `config` as its new configuration.
    pub(crate) async fn load_or_create_consumer(
        &self,
        config: &ConsumerConfig,
    ) -> Result<ConsumerRow> {
        let config = config.clone();
        self.call(move |c| {
            let tx = c.transaction()?;
            let json = serde_json::to_string(&config)?;
            let existing: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT read_pos, consumer_seq FROM bus_consumers
                     WHERE stream = ?1 AND name = ?2",
                    params![config.stream, config.name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let row = match existing {
                Some((read_pos, seq)) => {
                    tx.execute(
                        "UPDATE bus_consumers SET config = ?3 WHERE stream = ?1 AND name = ?2",
                        params![config.stream, config.name, json],
                    )?;
                    let mut pending = Vec::new();
                    {
                        let mut st = tx.prepare(
                            "SELECT position, deliveries, deadline_ms, published_ms FROM bus_pending
                             WHERE stream = ?1 AND consumer = ?2 ORDER BY position",
                        )?;
                        let rows = st.query_map(params![config.stream, config.name], |r| {
                            Ok(PendingRow {
                                position: to_u64(r.get(0)?),
                                deliveries: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(u32::MAX),
                                deadline_ms: r.get(2)?,
                                published_ms: r.get(3)?,
                            })
                        })?;
                        for r in rows {
                            pending.push(r?);
                        }
                    }
                    ConsumerRow {
                        read_pos: to_u64(read_pos),
                        consumer_seq: to_u64(seq),
                        pending,
                    }
                }
                None => {
                    tx.execute(
                        "INSERT INTO bus_consumers(stream, name, config, read_pos, ack_floor, consumer_seq)
                         VALUES (?1, ?2, ?3, 0, 0, 0)",
                        params![config.stream, config.name, json],
                    )?;
                    ConsumerRow {
                        read_pos: 0,
                        consumer_seq: 0,
                        pending: Vec::new(),
                    }
                }
            };
            tx.commit()?;
            Ok(row)
        })
        .await
    }

    pub(crate) async fn delete_consumer(&self, stream: &str, name: &str) -> Result<bool> {
        let (stream, name) = (stream.to_string(), name.to_string());
        self.call(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "DELETE FROM bus_consumers WHERE stream = ?1 AND name = ?2",
                params![stream, name],
            )?;
            tx.execute(
                "DELETE FROM bus_pending WHERE stream = ?1 AND consumer = ?2",
                params![stream, name],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    pub(crate) async fn apply(&self, stream: &str, consumer: &str, change: Change) -> Result<()> {
        if change.upsert.is_empty() && change.remove.is_empty() && change.cursor.is_none() {
            return Ok(());
        }
        let (stream, consumer) = (stream.to_string(), consumer.to_string());
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut up = tx.prepare_cached(
                    "INSERT INTO bus_pending(stream, consumer, position, deliveries, deadline_ms, published_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(stream, consumer, position) DO UPDATE SET
                        deliveries = excluded.deliveries, deadline_ms = excluded.deadline_ms",
                )?;
                for p in &change.upsert {
                    up.execute(params![
                        stream,
                        consumer,
                        to_i64(p.position),
                        i64::from(p.deliveries),
                        p.deadline_ms,
                        p.published_ms
                    ])?;
                }
                let mut del = tx.prepare_cached(
                    "DELETE FROM bus_pending WHERE stream = ?1 AND consumer = ?2 AND position = ?3",
                )?;
                for pos in &change.remove {
                    del.execute(params![stream, consumer, to_i64(*pos)])?;
                }
                if let Some((read_pos, floor, seq)) = change.cursor {
                    tx.execute(
                        "UPDATE bus_consumers SET read_pos = ?3, ack_floor = ?4, consumer_seq = ?5
                         WHERE stream = ?1 AND name = ?2",
                        params![stream, consumer, to_i64(read_pos), to_i64(floor), to_i64(seq)],
                    )?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}
