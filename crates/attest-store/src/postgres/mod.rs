//! PostgreSQL backend (scale-out): many processes append to and read from one log.
//!
//! Every table lives in one schema chosen at [`PostgresStore::connect`] (created if absent):
//! `head` (the single sequencer row holding the last handed-out position), `streams` (one row
//! per stream: last version ever, lifecycle state, retention metadata), `events` and
//! `snapshots`.
//!
//! # Gap-free global order without a gap timeout
//! Concurrent appends of one instance are folded into shared transactions (group commit, up to
//! [`StoreOptions::max_group_commit`] appends each), each append still decided on its own.
//! An append transaction first locks its streams' rows (in a fixed sorted order, so appends
//! never deadlock), checks tombstones, idempotent retries and expected versions, and only then
//! takes its position range with `UPDATE head SET position = position + n`. That row lock is
//! held until commit, so the next append can take its range only after this one is committed
//! *and visible*; a rolled-back append releases its range unused. Positions therefore become
//! visible strictly in order, and `read_all` never sees a hole that fills in later. The full
//! argument, the stall bound and the session timeouts are in `ORDERING.md` beside this file.
//!
//! # Live wake-ups
//! The append transaction runs `pg_notify('<schema>_head', last_position)`; a dedicated
//! connection LISTENs and raises the [`EventStore::head_watch`] value (see the `listener`
//! module), reconnecting with backoff and re-reading the head after each reconnect.

mod append;
mod errors;
mod listener;
mod read;
mod schema;
mod snapshots;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use attest_core::{ExpectedVersion, Position, RecordedEvent, StreamId};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

pub use schema::MAX_SCHEMA_LEN;
pub use snapshots::PostgresSnapshotStore;

use errors::pg;
use read::{age_parts, decode, stream_row, to_i64};
use schema::{Sql, STATE_TOMBSTONED};

use crate::{
    AppendResult, DeleteMode, Direction, EventStore, LogFilter, StoreError, StoreOptions,
    StoreStats, StreamAppend, StreamFrom, StreamInfo, StreamMetadata, StreamState,
};

/// Connection settings of a [`PostgresStore`] beyond the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// Most pooled connections. Default 16.
    pub pool_size: usize,
    /// `statement_timeout` of every store session: bounds how long one statement (including a
    /// wait for a stream or head lock) may run. Default 10 s.
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout` of every store session: a writer that stalls
    /// between statements while holding the head row is cut off after this. Default 5 s.
    pub idle_in_transaction_timeout: Duration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            pool_size: 16,
            statement_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(5),
        }
    }
}

/// An [`EventStore`] on PostgreSQL. Cheap to clone; clones share the pool and the listener.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pool: Pool,
    sql: Arc<Sql>,
    queue: tokio::sync::mpsc::Sender<append::Pending>,
    writer: JoinHandle<()>,
    schema: String,
    options: StoreOptions,
    head: Arc<watch::Sender<Position>>,
    listener: JoinHandle<()>,
}

impl Inner {
    fn bump_head(&self, position: Position) {
        listener::bump(&self.head, position);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
        self.writer.abort();
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db` or `host=... user=...`; pooled
    /// sessions are named `attest-store-<schema>` unless the URL sets `application_name`,
    /// the listener is `attest-listener-<schema>`), creates
    /// `schema` and its tables if absent, and starts the head listener. Must be called inside
    /// a Tokio runtime. With `options.durable == false` sessions use
    /// `synchronous_commit=off` (a crash may lose the last acknowledged commits, never a
    /// middle one).
    pub async fn connect(
        url: &str,
        schema: &str,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        Self::connect_with(url, schema, options, PostgresConfig::default()).await
    }

    /// [`PostgresStore::connect`] with explicit pool size and session timeouts.
    pub async fn connect_with(
        url: &str,
        schema: &str,
        options: StoreOptions,
        config: PostgresConfig,
    ) -> Result<Self, StoreError> {
        schema::check_schema_name(schema)?;
        if config.pool_size == 0 {
            return Err(StoreError::InvalidArgument(
                "pool size must be at least 1".into(),
            ));
        }
        let mut pg_config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::InvalidArgument(format!("postgres url: {e}")))?;
        pg_config.options(schema::session_options(
            config.statement_timeout,
            config.idle_in_transaction_timeout,
            options.durable,
        ));
        let mut listen_config = pg_config.clone();
        listen_config.application_name(format!("attest-listener-{schema}"));
        if pg_config.get_application_name().is_none() {
            pg_config.application_name(format!("attest-store-{schema}"));
        }

        let manager = Manager::from_config(
            pg_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .build()
            .map_err(|e| StoreError::backend(errors::BACKEND, e))?;

        let sql = Arc::new(Sql::new(schema));
        let head_position = {
            let mut client = pool.get().await.map_err(errors::pool)?;
            schema::migrate(&mut client, schema).await?;
            let row = client.query_one(&sql.head, &[]).await.map_err(pg)?;
            u64::try_from(row.try_get::<_, i64>(0).map_err(pg)?).unwrap_or(0)
        };
        let (tx, _) = watch::channel(head_position);
        let head = Arc::new(tx);
        let channel = schema::channel(schema);
        let listener = listener::spawn(
            listen_config,
            channel.clone(),
            sql.head.clone(),
            head.clone(),
        );
        let (queue, pending) = tokio::sync::mpsc::channel(append::QUEUE);
        let writer = tokio::spawn(
            append::Writer {
                pool: pool.clone(),
                sql: sql.clone(),
                channel: channel.clone(),
                head: head.clone(),
                max_group: options.max_group_commit.max(1),
            }
            .run(pending),
        );
        tracing::info!(schema, head_position, "postgres event store ready");
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                sql,
                queue,
                writer,
                schema: schema.to_string(),
                options,
                head,
                listener,
            }),
        })
    }

    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The connection pool (for callers that keep their own tables beside the log).
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// A snapshot store on the same pool and schema.
    pub fn snapshots(&self) -> PostgresSnapshotStore {
        PostgresSnapshotStore::with_existing_table(self.inner.pool.clone(), &self.inner.schema)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.inner.pool.get().await.map_err(errors::pool)
    }

    async fn row_of(&self, stream: &StreamId) -> Result<Option<read::StreamRow>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.inner.sql.stream_row)
            .await
            .map_err(pg)?;
        client
            .query_opt(&stmt, &[&stream.as_str()])
            .await
            .map_err(pg)?
            .map(|r| stream_row(&r))
            .transpose()
    }
}

/// `LIMIT` value of a `usize` count.
fn limit(n: usize) -> i64 {
    to_i64(u64::try_from(n).unwrap_or(u64::MAX))
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<AppendResult, StoreError> {
        append::append_many(&self.inner.queue, &self.inner.options, appends).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamFrom,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let from: Option<i64> = match from {
            StreamFrom::Start => Some(0),
            StreamFrom::End => None,
            StreamFrom::Version(v) => Some(to_i64(v)),
        };
        let events = if max_count == 0 {
            Vec::new()
        } else {
            let sql = match direction {
                Direction::Forward => &self.inner.sql.read_forward,
                Direction::Backward => &self.inner.sql.read_backward,
            };
            let client = self.client().await?;
            let stmt = client.prepare_cached(sql).await.map_err(pg)?;
            let rows = client
                .query(&stmt, &[&stream.as_str(), &from, &limit(max_count)])
                .await
                .map_err(pg)?;
            rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?
        };
        if !events.is_empty() {
            return Ok(events);
        }
        // Nothing visible: tell an empty (or fully hidden) stream from a missing one.
        match self.row_of(stream).await? {
            Some(r) if r.state == StreamState::Tombstoned => Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            }),
            Some(r) if r.state == StreamState::Active && r.last_version.is_some() => Ok(events),
            _ => Err(StoreError::StreamNotFound {
                stream: stream.clone(),
            }),
        }
    }

    async fn read_all(
        &self,
        after: Position,
        max_count: usize,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if max_count == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let after = to_i64(after);
        let n = limit(max_count);
        let rows = match filter {
            LogFilter::All => {
                let stmt = client
                    .prepare_cached(&self.inner.sql.read_all)
                    .await
                    .map_err(pg)?;
                client.query(&stmt, &[&after, &n]).await
            }
            LogFilter::Category(c) => {
                let stmt = client
                    .prepare_cached(&self.inner.sql.read_all_category)
                    .await
                    .map_err(pg)?;
                client.query(&stmt, &[&after, &n, &c.as_str()]).await
            }
        }
        .map_err(pg)?;
        rows.iter().map(decode).collect()
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>, StoreError> {
        Ok(self
            .row_of(stream)
            .await?
            .map(|r| r.into_info(stream.clone())))
    }

    async fn set_stream_metadata(
        &self,
        stream: &StreamId,
        metadata: StreamMetadata,
    ) -> Result<(), StoreError> {
        let (age_secs, age_nanos) = age_parts(metadata.max_age);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.inner.sql.set_metadata)
            .await
            .map_err(pg)?;
        let updated = client
            .query_opt(
                &stmt,
                &[
                    &stream.as_str(),
                    &metadata.max_count.map(to_i64),
                    &age_secs,
                    &age_nanos,
                    &metadata.truncate_before.map(to_i64),
                ],
            )
            .await
            .map_err(pg)?;
        match updated {
            Some(_) => Ok(()),
            None => Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            }),
        }
    }

    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<(), StoreError> {
        let sql = &self.inner.sql;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let row = tx
            .query_one(&sql.lock_one_stream, &[&stream.as_str()])
            .await
            .map_err(pg)?;
        let last: Option<i64> = row.try_get(0).map_err(pg)?;
        let state: i16 = row.try_get(1).map_err(pg)?;
        let created: bool = row.try_get(2).map_err(pg)?;
        if state == STATE_TOMBSTONED {
            return Err(StoreError::StreamDeleted {
                stream: stream.clone(),
            });
        }
        let state = read::state_of(state)?;
        let actual = match state {
            StreamState::Active => last.map(|v| u64::try_from(v).unwrap_or(0)),
            _ => None,
        };
        if !expected.accepts(actual) {
            return Err(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        match mode {
            DeleteMode::Soft if created => {
                return Err(StoreError::StreamNotFound {
                    stream: stream.clone(),
                })
            }
            DeleteMode::Soft => {
                tx.execute(&sql.soft_delete, &[&stream.as_str()])
                    .await
                    .map_err(pg)?;
            }
            DeleteMode::Hard => {
                let removed = tx
                    .execute(&sql.hard_delete_events, &[&stream.as_str()])
                    .await
                    .map_err(pg)?;
                tx.execute(&sql.tombstone, &[&stream.as_str()])
                    .await
                    .map_err(pg)?;
                tracing::info!(%stream, removed, "stream tombstoned");
            }
        }
        tx.commit().await.map_err(pg)
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.inner.sql.head)
            .await
            .map_err(pg)?;
        let row = client.query_one(&stmt, &[]).await.map_err(pg)?;
        let head = u64::try_from(row.try_get::<_, i64>(0).map_err(pg)?).unwrap_or(0);
        self.inner.bump_head(head);
        Ok(head)
    }

    fn head_watch(&self) -> watch::Receiver<Position> {
        self.inner.head.subscribe()
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(&self.inner.sql.stats, &[&self.inner.schema])
            .await
            .map_err(pg)?;
        let events: i64 = row.try_get(0).map_err(pg)?;
        let streams: i64 = row.try_get(1).map_err(pg)?;
        let head: i64 = row.try_get(2).map_err(pg)?;
        let size: Option<i64> = row.try_get(3).map_err(pg)?;
        Ok(StoreStats {
            backend: errors::BACKEND.to_string(),
            events: u64::try_from(events).unwrap_or(0),
            streams: u64::try_from(streams).unwrap_or(0),
            head_position: u64::try_from(head).unwrap_or(0),
            size_bytes: size.and_then(|s| u64::try_from(s).ok()),
        })
    }

    fn options(&self) -> &StoreOptions {
        &self.inner.options
    }
}
