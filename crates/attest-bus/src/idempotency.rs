//! Idempotent consumers: record (consumer, key) in the same transaction as the effect.
//!
//! Delivery is at least once, so a handler may see a message again (redelivery after a crash
//! between effect and ack, a producer retry under a new message id, a replay). An idempotent
//! handler opens a transaction, *claims* the message's key for its consumer
//! (`INSERT ... ON CONFLICT DO NOTHING`), applies its effect in that same transaction and
//! commits. A second delivery finds the claim, skips the effect and is acknowledged. Because
//! the claim and the effect commit or roll back together, there is no window in which one is
//! visible without the other.
//!
//! The key is [`Message::idempotency_key`]: the `Idempotency-Key` header when present (a
//! command sent twice under two message ids has one effect), else the message id.
//!
//! Two backends: SQLite ([`SqliteIdempotentHandler`], the effect gets a
//! `rusqlite::Transaction`) and PostgreSQL ([`PgIdempotentHandler`], the effect gets a
//! `tokio_postgres::Transaction`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, Transaction};

use crate::consumer::{Handler, HandlerError};
use crate::error::{BusError, Result};
use crate::message::{DeliveryInfo, Message};

/// Name of the table holding claims (SQLite; in PostgreSQL it lives in the chosen schema).
pub const PROCESSED_TABLE: &str = "bus_processed";

fn key_of(message: &Message) -> Result<&str, HandlerError> {
    message.idempotency_key().ok_or_else(|| {
        HandlerError::permanent("message has neither an Idempotency-Key header nor a message id")
    })
}

/// SQLite claims.
pub mod sqlite {
    use super::*;

    /// Creates the claims table if missing.
    pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS bus_processed (
                consumer     TEXT NOT NULL,
                key          TEXT NOT NULL,
                processed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                PRIMARY KEY (consumer, key)
            ) WITHOUT ROWID;",
        )
    }

    /// Claims `key` for `consumer` inside `tx`; `true` if this is the first claim (apply the
    /// effect), `false` if it was already processed (skip it).
    pub fn try_claim(tx: &Transaction<'_>, consumer: &str, key: &str) -> rusqlite::Result<bool> {
        let n = tx.execute(
            "INSERT INTO bus_processed(consumer, key) VALUES (?1, ?2)
             ON CONFLICT(consumer, key) DO NOTHING",
            params![consumer, key],
        )?;
        Ok(n == 1)
    }

    /// Whether `key` was processed by `consumer`.
    pub fn is_processed(conn: &Connection, consumer: &str, key: &str) -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM bus_processed WHERE consumer = ?1 AND key = ?2)",
            params![consumer, key],
            |r| r.get(0),
        )
    }
}

/// PostgreSQL claims.
pub mod postgres {
    use super::*;

    fn table(schema: &str) -> Result<String> {
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(BusError::InvalidArgument(format!(
                "schema name {schema:?} must be ASCII letters, digits or '_'"
            )));
        }
        Ok(format!("\"{schema}\".{PROCESSED_TABLE}"))
    }

    /// Creates the schema and claims table if missing.
    pub async fn migrate(client: &tokio_postgres::Client, schema: &str) -> Result<()> {
        let t = table(schema)?;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
                 CREATE TABLE IF NOT EXISTS {t} (
                    consumer     TEXT NOT NULL,
                    key          TEXT NOT NULL,
                    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                    PRIMARY KEY (consumer, key)
                 );"
            ))
            .await?;
        Ok(())
    }

    /// Claims `key` for `consumer` inside `tx`; `true` if this is the first claim.
    pub async fn try_claim(
        tx: &tokio_postgres::Transaction<'_>,
        schema: &str,
        consumer: &str,
        key: &str,
    ) -> Result<bool> {
        let t = table(schema)?;
        let n = tx
            .execute(
                &format!(
                    "INSERT INTO {t}(consumer, key) VALUES ($1, $2)
                     ON CONFLICT (consumer, key) DO NOTHING"
                ),
                &[&consumer, &key],
            )
            .await?;
        Ok(n == 1)
    }
}

/// An effect applied inside a SQLite transaction.
pub trait SqliteEffect: Send + Sync + 'static {
    /// Applies the effect of `message`; an error rolls back the effect and the claim.
    fn apply(&self, tx: &Transaction<'_>, message: &Message) -> Result<(), HandlerError>;
}

impl<F> SqliteEffect for F
where
    F: Fn(&Transaction<'_>, &Message) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    fn apply(&self, tx: &Transaction<'_>, message: &Message) -> Result<(), HandlerError> {
        self(tx, message)
    }
}

/// A [`Handler`] that applies a SQLite effect at most once per (consumer, key).
pub struct SqliteIdempotentHandler<E> {
    conn: Arc<Mutex<Connection>>,
    consumer: String,
    effect: Arc<E>,
    skipped: Arc<AtomicU64>,
}

impl<E: SqliteEffect> SqliteIdempotentHandler<E> {
    /// Opens (or creates) the database at `path` and its claims table.
    pub fn open(path: impl AsRef<Path>, consumer: impl Into<String>, effect: E) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        Self::with_connection(conn, consumer, effect)
    }

    /// Uses an open connection (the claims table is created if missing).
    pub fn with_connection(
        conn: Connection,
        consumer: impl Into<String>,
        effect: E,
    ) -> Result<Self> {
        sqlite::migrate(&conn)?;
        Ok(SqliteIdempotentHandler {
            conn: Arc::new(Mutex::new(conn)),
            consumer: consumer.into(),
            effect: Arc::new(effect),
            skipped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The shared connection (for reading the effects).
    pub fn connection(&self) -> Arc<Mutex<Connection>> {
        self.conn.clone()
    }

    /// How many deliveries were recognised as duplicates and skipped.
    pub fn skipped(&self) -> Arc<AtomicU64> {
        self.skipped.clone()
    }
}

#[async_trait]
impl<E: SqliteEffect> Handler for SqliteIdempotentHandler<E> {
    async fn handle(&self, message: &Message, _info: &DeliveryInfo) -> Result<(), HandlerError> {
        let key = key_of(message)?.to_string();
        let (conn, effect, skipped) =
            (self.conn.clone(), self.effect.clone(), self.skipped.clone());
        let consumer = self.consumer.clone();
        let message = message.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| HandlerError::retryable("idempotency connection mutex poisoned"))?;
            let tx = guard.transaction().map_err(HandlerError::retryable)?;
            if !sqlite::try_claim(&tx, &consumer, &key).map_err(HandlerError::retryable)? {
                skipped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(consumer = %consumer, key = %key, "duplicate delivery skipped");
                return Ok(());
            }
            effect.apply(&tx, &message)?;
            tx.commit().map_err(HandlerError::retryable)
        })
        .await
        .map_err(|e| HandlerError::retryable(e.to_string()))?
    }
}

/// An effect applied inside a PostgreSQL transaction.
#[async_trait]
pub trait PgEffect: Send + Sync + 'static {
    /// Applies the effect of `message`; an error rolls back the effect and the claim.
    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        message: &Message,
    ) -> Result<(), HandlerError>;
}

/// A [`Handler`] that applies a PostgreSQL effect at most once per (consumer, key).
pub struct PgIdempotentHandler<E> {
    pool: deadpool_postgres::Pool,
    schema: String,
    consumer: String,
    effect: E,
    skipped: Arc<AtomicU64>,
}

impl<E: PgEffect> PgIdempotentHandler<E> {
    /// Creates the claims table in `schema` (if missing) and wraps `effect`.
    pub async fn new(
        pool: deadpool_postgres::Pool,
        schema: impl Into<String>,
        consumer: impl Into<String>,
        effect: E,
    ) -> Result<Self> {
        let schema = schema.into();
        let client = pool.get().await?;
        postgres::migrate(&client, &schema).await?;
        Ok(PgIdempotentHandler {
            pool,
            schema,
            consumer: consumer.into(),
            effect,
            skipped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// How many deliveries were recognised as duplicates and skipped.
    pub fn skipped(&self) -> Arc<AtomicU64> {
        self.skipped.clone()
    }
}

#[async_trait]
impl<E: PgEffect> Handler for PgIdempotentHandler<E> {
    async fn handle(&self, message: &Message, _info: &DeliveryInfo) -> Result<(), HandlerError> {
        let key = key_of(message)?;
        let mut client = self.pool.get().await.map_err(HandlerError::retryable)?;
        let tx = client
            .transaction()
            .await
            .map_err(HandlerError::retryable)?;
        let first = postgres::try_claim(&tx, &self.schema, &self.consumer, key)
            .await
            .map_err(HandlerError::retryable)?;
        if !first {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(consumer = %self.consumer, key, "duplicate delivery skipped");
            return Ok(());
        }
        self.effect.apply(&tx, message).await?;
        tx.commit().await.map_err(HandlerError::retryable)
    }
}
