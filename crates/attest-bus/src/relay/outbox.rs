//! The outbox relay.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use attest_store::outbox::{self, OutboxError, OutboxRecord, OutboxStats};
use bytes::Bytes;
use rusqlite::Connection;
use tokio::task::JoinHandle;

use super::{publish_in_key_order, RelayCounters, RelayError, RelayOptions, OUTBOX_KEY_HEADER};
use crate::{DynBroker, OutgoingMessage};

/// Where an outbox relay reads from.
#[async_trait]
pub trait OutboxSource: Send + Sync + 'static {
    /// Up to `limit` waiting messages in sequence order.
    async fn fetch(&self, limit: usize) -> Result<Vec<OutboxRecord>, OutboxError>;
    /// Deletes published messages.
    async fn delete(&self, seqs: Vec<i64>) -> Result<usize, OutboxError>;
    /// Backlog and oldest-message age.
    async fn stats(&self) -> Result<OutboxStats, OutboxError>;
}

/// An outbox table in a SQLite database file (the service's own). Queries run on the blocking
/// pool.
pub struct SqliteOutbox {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteOutbox {
    /// Opens the database at `path` (WAL mode) and creates the outbox table if needed.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, OutboxError> {
        let path = path.as_ref().to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, OutboxError> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            // This connection only reads and deletes published rows: a delete lost to a power
            // failure just republishes those rows, which the broker de-duplicates. No fsync
            // per delete, then (the pragma is per connection; writers keep their own).
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            outbox::sqlite::ensure_schema(&conn)?;
            Ok(conn)
        })
        .await
        .map_err(|e| OutboxError::Invalid(format!("blocking task failed: {e}")))??;
        Ok(SqliteOutbox {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, OutboxError> + Send + 'static,
    ) -> Result<R, OutboxError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| OutboxError::Invalid("outbox connection lock poisoned".into()))?;
            f(&guard)
        })
        .await
        .map_err(|e| OutboxError::Invalid(format!("blocking task failed: {e}")))?
    }
}

#[async_trait]
impl OutboxSource for SqliteOutbox {
    async fn fetch(&self, limit: usize) -> Result<Vec<OutboxRecord>, OutboxError> {
        self.with(move |c| outbox::sqlite::fetch_batch(c, limit))
            .await
    }
    async fn delete(&self, seqs: Vec<i64>) -> Result<usize, OutboxError> {
        self.with(move |c| outbox::sqlite::delete(c, &seqs)).await
    }
    async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        self.with(outbox::sqlite::stats).await
    }
}

/// An outbox table in PostgreSQL, reached through its own connection.
pub struct PostgresOutbox {
    client: tokio_postgres::Client,
    connection: JoinHandle<()>,
}

impl Drop for PostgresOutbox {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl PostgresOutbox {
    /// Connects to `url` (no TLS). When `schema` is given the connection's `search_path` is
    /// set to it, so the unqualified outbox table of that schema is used. Creates the table if
    /// needed.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self, OutboxError> {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::error!(error = %e, "outbox relay postgres connection failed");
            }
        });
        let me = PostgresOutbox { client, connection };
        if let Some(s) = schema {
            if s.is_empty()
                || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || s.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(OutboxError::Invalid(format!(
                    "schema {s:?} is not an identifier"
                )));
            }
            me.client
                .batch_execute(&format!("SET search_path TO \"{s}\""))
                .await?;
        }
        outbox::postgres::ensure_schema(&me.client).await?;
        Ok(me)
    }
}

#[async_trait]
impl OutboxSource for PostgresOutbox {
    async fn fetch(&self, limit: usize) -> Result<Vec<OutboxRecord>, OutboxError> {
        outbox::postgres::fetch_batch(&self.client, limit).await
    }
    async fn delete(&self, seqs: Vec<i64>) -> Result<usize, OutboxError> {
        outbox::postgres::delete(&self.client, &seqs).await
    }
    async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        outbox::postgres::stats(&self.client).await
    }
}

/// Publishes an outbox to a broker; see the [module docs](super).
pub struct OutboxRelay<S: OutboxSource> {
    source: Arc<S>,
    broker: DynBroker,
    options: RelayOptions,
    counters: Arc<RelayCounters>,
}

impl<S: OutboxSource> Clone for OutboxRelay<S> {
    fn clone(&self) -> Self {
        OutboxRelay {
            source: self.source.clone(),
            broker: self.broker.clone(),
            options: self.options.clone(),
            counters: self.counters.clone(),
        }
    }
}

/// The broker message for an outbox record: outbox id as message id, key as a header.
pub(crate) fn to_outgoing(r: &OutboxRecord) -> OutgoingMessage {
    let m = &r.message;
    let mut out = OutgoingMessage::new(
        m.subject.clone(),
        m.id.to_string(),
        Bytes::from(m.payload.clone()),
    );
    out.headers = m.headers.clone();
    out.headers
        .insert(OUTBOX_KEY_HEADER.to_string(), m.key.clone());
    out
}

impl<S: OutboxSource> OutboxRelay<S> {
    /// A relay from `source` to `broker`. The subjects of the messages must be captured by a
    /// stream of the broker.
    pub fn new(source: S, broker: DynBroker, options: RelayOptions) -> Self {
        OutboxRelay {
            source: Arc::new(source),
            broker,
            options,
            counters: Arc::new(RelayCounters::default()),
        }
    }

    /// The source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Publish counters.
    pub fn counters(&self) -> &RelayCounters {
        &self.counters
    }

    /// Backlog and oldest-message age of the outbox.
    pub async fn stats(&self) -> Result<OutboxStats, RelayError> {
        Ok(self.source.stats().await?)
    }

    /// Publishes one batch and deletes it once the broker acknowledged every message of it.
    /// Returns how many messages it published (0: the outbox was empty). A broker error is
    /// returned as is and nothing is deleted.
    pub async fn relay_batch(&self) -> Result<usize, RelayError> {
        let batch = self.source.fetch(self.options.batch_size.max(1)).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let messages = batch.iter().map(to_outgoing).collect();
        let keys: Vec<&str> = batch.iter().map(|r| r.message.key.as_str()).collect();
        let acks = match publish_in_key_order(&self.broker, messages, &keys).await {
            Ok(acks) => acks,
            Err(e) => {
                self.counters.failed();
                return Err(e.into());
            }
        };
        self.counters.acked(&acks);
        let seqs: Vec<i64> = batch.iter().map(|r| r.seq).collect();
        self.source.delete(seqs).await?;
        Ok(batch.len())
    }

    /// Relays batches until the outbox is empty; returns how many messages were published.
    /// Broker errors are returned (see [`OutboxRelay::run`] for the retrying loop).
    pub async fn drain(&self) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            let n = self.relay_batch().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Relays forever: polls the outbox, publishes, deletes. Broker failures are logged and
    /// retried with backoff (the backlog grows meanwhile, nothing is lost or deleted);
    /// outbox database failures stop the relay with an error. Cancel by dropping the future.
    pub async fn run(&self) -> Result<(), RelayError> {
        let mut failures = 0u32;
        loop {
            match self.relay_batch().await {
                Ok(0) => {
                    failures = 0;
                    tokio::time::sleep(self.options.idle_poll).await;
                }
                Ok(_) => failures = 0,
                Err(RelayError::Bus(e)) => {
                    failures = failures.saturating_add(1);
                    let wait = self.options.backoff(failures);
                    let backlog = self.source.stats().await.map(|s| s.backlog).unwrap_or(0);
                    tracing::warn!(error = %e, backlog, attempt = failures, "outbox relay: broker unavailable; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "outbox relay stopped");
                    return Err(e);
                }
            }
        }
    }
}
