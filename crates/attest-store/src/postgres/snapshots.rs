//! [`SnapshotStore`] on PostgreSQL: table `snapshots` in the store's schema.

use async_trait::async_trait;
use attest_core::StreamId;
use chrono::DateTime;
use deadpool_postgres::Pool;

use super::errors::{pg, pool};
use super::schema::{check_schema_name, snapshot_table_ddl};
use crate::{Snapshot, SnapshotStore, StoreError};

/// Keeps the latest snapshot of each stream in `<schema>.snapshots`. Cheap to clone.
#[derive(Clone)]
pub struct PostgresSnapshotStore {
    pool: Pool,
    save_sql: String,
    load_sql: String,
    delete_sql: String,
}

impl std::fmt::Debug for PostgresSnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSnapshotStore")
            .finish_non_exhaustive()
    }
}

impl PostgresSnapshotStore {
    /// Uses `pool` and the `snapshots` table of `schema`, creating it if absent.
    pub async fn new(pool: Pool, schema: &str) -> Result<Self, StoreError> {
        check_schema_name(schema)?;
        let client = pool.get().await.map_err(pool_err)?;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; {}",
                snapshot_table_ddl(schema)
            ))
            .await
            .map_err(pg)?;
        drop(client);
        Ok(Self::with_existing_table(pool, schema))
    }

    /// Uses a table the caller knows exists (the event store's migrations create it).
    pub(crate) fn with_existing_table(pool: Pool, schema: &str) -> Self {
        let t = format!("\"{schema}\".snapshots");
        PostgresSnapshotStore {
            pool,
            save_sql: format!(
                "INSERT INTO {t} AS s (stream_id, version, state_version, payload, taken_secs, \
                   taken_nanos) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, \
                   state_version = EXCLUDED.state_version, payload = EXCLUDED.payload, \
                   taken_secs = EXCLUDED.taken_secs, taken_nanos = EXCLUDED.taken_nanos \
                 WHERE s.version <= EXCLUDED.version"
            ),
            load_sql: format!(
                "SELECT version, state_version, payload, taken_secs, taken_nanos FROM {t} \
                 WHERE stream_id = $1"
            ),
            delete_sql: format!("DELETE FROM {t} WHERE stream_id = $1"),
        }
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    pool(e)
}

fn out_of_range(what: &str) -> StoreError {
    StoreError::InvalidArgument(format!(
        "snapshot {what} out of range for PostgreSQL bigint"
    ))
}

#[async_trait]
impl SnapshotStore for PostgresSnapshotStore {
    async fn save_snapshot(&self, s: &Snapshot) -> Result<(), StoreError> {
        let version = i64::try_from(s.version).map_err(|_| out_of_range("version"))?;
        let secs = s.taken_at.timestamp();
        // Below 2e9, always fits an i32.
        let nanos = i32::try_from(s.taken_at.timestamp_subsec_nanos())
            .map_err(|_| out_of_range("timestamp"))?;
        let client = self.pool.get().await.map_err(pool_err)?;
        let stmt = client.prepare_cached(&self.save_sql).await.map_err(pg)?;
        client
            .execute(
                &stmt,
                &[
                    &s.stream.as_str(),
                    &version,
                    &i64::from(s.state_version),
                    &s.payload,
                    &secs,
                    &nanos,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let stmt = client.prepare_cached(&self.load_sql).await.map_err(pg)?;
        let Some(row) = client
            .query_opt(&stmt, &[&stream.as_str()])
            .await
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let bad = |what: &str| {
            StoreError::backend(
                super::errors::BACKEND,
                format!("snapshot of {stream}: stored {what} out of range"),
            )
        };
        let version: i64 = row.try_get(0).map_err(pg)?;
        let state_version: i64 = row.try_get(1).map_err(pg)?;
        let secs: i64 = row.try_get(3).map_err(pg)?;
        let nanos: i32 = row.try_get(4).map_err(pg)?;
        let taken_at = u32::try_from(nanos)
            .ok()
            .and_then(|n| DateTime::from_timestamp(secs, n))
            .ok_or_else(|| bad("timestamp"))?;
        Ok(Some(Snapshot {
            stream: stream.clone(),
            version: u64::try_from(version).map_err(|_| bad("version"))?,
            state_version: u32::try_from(state_version).map_err(|_| bad("state version"))?,
            payload: row.try_get(2).map_err(pg)?,
            taken_at,
        }))
    }

    async fn delete_snapshot(&self, stream: &StreamId) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let stmt = client.prepare_cached(&self.delete_sql).await.map_err(pg)?;
        client
            .execute(&stmt, &[&stream.as_str()])
            .await
            .map_err(pg)?;
        Ok(())
    }
}
