//! The global-log relay.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use attest_core::{Position, RecordedEvent};
use attest_store::{DynStore, LogFilter, StoreError, Subscription};
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    publish_in_key_order, RelayCounters, RelayError, RelayOptions, CAUSATION_ID_HEADER,
    CONTENT_TYPE_HEADER, EVENT_TYPE_HEADER, POSITION_HEADER, RECORDED_AT_HEADER, STREAM_ID_HEADER,
    STREAM_VERSION_HEADER,
};
use crate::{DynBroker, OutgoingMessage, StreamConfig, CORRELATION_ID_HEADER, TRACEPARENT_HEADER};

/// Where a relay keeps its checkpoint (name → last published position).
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// The stored position (0 when none).
    async fn load(&self, name: &str) -> Result<Position, RelayError>;
    /// Stores a position.
    async fn save(&self, name: &str, position: Position) -> Result<(), RelayError>;
}

/// Checkpoints in a SQLite file (table `relay_checkpoints`).
pub struct SqliteCheckpointStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteCheckpointStore {
    /// Opens (creating) the checkpoint table in the SQLite file at `path`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, RelayError> {
        let path = path.as_ref().to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, rusqlite::Error> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS relay_checkpoints (
                     name     TEXT    PRIMARY KEY,
                     position INTEGER NOT NULL
                 );",
            )?;
            Ok(conn)
        })
        .await
        .map_err(|e| RelayError::Task(e.to_string()))??;
        Ok(SqliteCheckpointStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    ) -> Result<R, RelayError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| RelayError::Task("checkpoint connection lock poisoned".into()))?;
            Ok(f(&guard)?)
        })
        .await
        .map_err(|e| RelayError::Task(e.to_string()))?
    }
}

#[async_trait]
impl CheckpointStore for SqliteCheckpointStore {
    async fn load(&self, name: &str) -> Result<Position, RelayError> {
        let name = name.to_string();
        self.with(move |c| {
            let p: Option<i64> = c
                .query_row(
                    "SELECT position FROM relay_checkpoints WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(p.map_or(0, |p| u64::try_from(p).unwrap_or(0)))
        })
        .await
    }

    async fn save(&self, name: &str, position: Position) -> Result<(), RelayError> {
        let name = name.to_string();
        let pos = i64::try_from(position).unwrap_or(i64::MAX);
        self.with(move |c| {
            c.prepare_cached(
                "INSERT INTO relay_checkpoints (name, position) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            )?
            .execute(params![name, pos])?;
            Ok(())
        })
        .await
    }
}

/// Checkpoints in PostgreSQL (table `relay_checkpoints` in a schema of your choice).
pub struct PostgresCheckpointStore {
    client: tokio_postgres::Client,
    table: String,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresCheckpointStore {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl PostgresCheckpointStore {
    /// Connects to `url` (no TLS) and creates `schema.relay_checkpoints` if needed. `schema`
    /// must be an identifier (ASCII letters, digits, `_`).
    pub async fn connect(url: &str, schema: &str) -> Result<Self, RelayError> {
        let ok = !schema.is_empty()
            && schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !schema.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            return Err(RelayError::Bus(crate::BusError::InvalidArgument(format!(
                "schema {schema:?} is not an identifier"
            ))));
        }
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(crate::BusError::from)?;
        let connection = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::error!(error = %e, "relay checkpoint postgres connection failed");
            }
        });
        let table = format!("\"{schema}\".relay_checkpoints");
        let me = PostgresCheckpointStore {
            client,
            table,
            connection,
        };
        me.client
            .execute(
                "SELECT pg_advisory_lock(hashtext('attest_relay_checkpoints'))",
                &[],
            )
            .await
            .map_err(crate::BusError::from)?;
        let created = me
            .client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
                 CREATE TABLE IF NOT EXISTS {} (name TEXT PRIMARY KEY, position BIGINT NOT NULL);",
                me.table
            ))
            .await;
        me.client
            .execute(
                "SELECT pg_advisory_unlock(hashtext('attest_relay_checkpoints'))",
                &[],
            )
            .await
            .map_err(crate::BusError::from)?;
        created.map_err(crate::BusError::from)?;
        Ok(me)
    }
}

#[async_trait]
impl CheckpointStore for PostgresCheckpointStore {
    async fn load(&self, name: &str) -> Result<Position, RelayError> {
        let row = self
            .client
            .query_opt(
                &format!("SELECT position FROM {} WHERE name = $1", self.table),
                &[&name],
            )
            .await
            .map_err(crate::BusError::from)?;
        Ok(row.map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
    }

    async fn save(&self, name: &str, position: Position) -> Result<(), RelayError> {
        let pos = i64::try_from(position).unwrap_or(i64::MAX);
        self.client
            .execute(
                &format!(
                    "INSERT INTO {} (name, position) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
                    self.table
                ),
                &[&name, &pos],
            )
            .await
            .map_err(crate::BusError::from)?;
        Ok(())
    }
}

/// Publishes the event store's global log to a broker; see the [module docs](super).
pub struct GlobalLogRelay {
    name: String,
    prefix: String,
    store: DynStore,
    broker: DynBroker,
    checkpoints: Arc<dyn CheckpointStore>,
    options: RelayOptions,
    counters: Arc<RelayCounters>,
}

impl GlobalLogRelay {
    /// A relay called `name` (its checkpoint key) publishing every event of `store` to
    /// `{subject_prefix}.{category}`.
    pub fn new(
        name: impl Into<String>,
        subject_prefix: impl Into<String>,
        store: DynStore,
        broker: DynBroker,
        checkpoints: Arc<dyn CheckpointStore>,
        options: RelayOptions,
    ) -> Self {
        GlobalLogRelay {
            name: name.into(),
            prefix: subject_prefix.into(),
            store,
            broker,
            checkpoints,
            options,
            counters: Arc::new(RelayCounters::default()),
        }
    }

    /// A broker stream capturing every subject this relay publishes to.
    pub fn stream_config(&self, stream_name: impl Into<String>) -> StreamConfig {
        StreamConfig::new(stream_name, vec![format!("{}.>", self.prefix)])
    }

    /// Publish counters.
    pub fn counters(&self) -> &RelayCounters {
        &self.counters
    }

    /// The stored checkpoint.
    pub async fn checkpoint(&self) -> Result<Position, RelayError> {
        self.checkpoints.load(&self.name).await
    }

    /// The broker message for an event: event id as message id, envelope in headers.
    pub fn to_message(&self, e: &RecordedEvent) -> OutgoingMessage {
        let mut m = OutgoingMessage::new(
            format!("{}.{}", self.prefix, e.stream_id.category()),
            e.id.to_string(),
            Bytes::from(e.payload.clone()),
        )
        .with_header(EVENT_TYPE_HEADER, e.event_type.as_str())
        .with_header(STREAM_ID_HEADER, e.stream_id.as_str())
        .with_header(STREAM_VERSION_HEADER, e.version.to_string())
        .with_header(POSITION_HEADER, e.position.to_string())
        .with_header(CONTENT_TYPE_HEADER, e.content_type.as_str())
        .with_header(RECORDED_AT_HEADER, e.recorded_at.to_rfc3339());
        let md = &e.metadata;
        let optional = [
            (CORRELATION_ID_HEADER, &md.correlation_id),
            (CAUSATION_ID_HEADER, &md.causation_id),
            (TRACEPARENT_HEADER, &md.traceparent),
            ("tracestate", &md.tracestate),
            ("Attest-Tenant", &md.tenant),
            ("Attest-Actor", &md.actor),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                m.headers.insert(k.to_string(), v.clone());
            }
        }
        m
    }

    /// Publishes `batch` (retrying broker failures with backoff until it succeeds), then
    /// stores the checkpoint.
    async fn publish(&self, batch: &[RecordedEvent]) -> Result<(), RelayError> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let mut failures = 0u32;
        loop {
            let messages = batch.iter().map(|e| self.to_message(e)).collect();
            let keys: Vec<&str> = batch.iter().map(|e| e.stream_id.as_str()).collect();
            match publish_in_key_order(&self.broker, messages, &keys).await {
                Ok(acks) => {
                    self.counters.acked(&acks);
                    break;
                }
                Err(e) => {
                    self.counters.failed();
                    failures = failures.saturating_add(1);
                    let wait = self.options.backoff(failures);
                    tracing::warn!(relay = %self.name, error = %e, attempt = failures, "global-log relay: publish failed; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        self.checkpoints.save(&self.name, last.position).await
    }

    /// Publishes every event committed so far; returns the checkpoint.
    pub async fn catch_up(&self) -> Result<Position, RelayError> {
        let mut after = self.checkpoints.load(&self.name).await?;
        loop {
            let page = self
                .store
                .read_all(after, self.options.batch_size.max(1), &LogFilter::All)
                .await?;
            let Some(last) = page.last() else {
                return Ok(after);
            };
            let last = last.position;
            self.publish(&page).await?;
            after = last;
        }
    }

    /// Catches up, then relays new events as they are committed. Returns `Ok(())` when the
    /// store closes; store or checkpoint failures stop it with an error.
    pub async fn run(&self) -> Result<(), RelayError> {
        let from = self.checkpoints.load(&self.name).await?;
        let batch = self.options.batch_size.max(1);
        let mut sub =
            Subscription::new(self.store.clone(), from, LogFilter::All).with_page_size(batch);
        loop {
            let first = match sub.next().await {
                Ok(e) => e,
                Err(StoreError::Closed) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let mut page = vec![first];
            while page.len() < batch {
                match sub.try_next().await? {
                    Some(e) => page.push(e),
                    None => break,
                }
            }
            self.publish(&page).await?;
        }
    }
}
