//! Checkpoints and partition leases in PostgreSQL.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::{
    check_job, decode_positions, encode_positions, to_i64, to_u64, Checkpoint, CheckpointStore,
    Fence, Sequences,
};
use crate::StreamError;

fn pg(e: tokio_postgres::Error) -> StreamError {
    StreamError::Checkpoint(format!("postgres: {e}"))
}

/// A lease on one partition of a job, as held by one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The partition.
    pub partition: u32,
    /// The fencing token to pass with every checkpoint commit.
    pub fence: Fence,
}

/// Checkpoints (table `stream_checkpoints`) and partition leases (`stream_leases`, with
/// `stream_members` for the live workers of a job) in a PostgreSQL schema.
///
/// Lease rules (all times are the database's clock, so workers' clocks do not matter):
/// - [`claim`](Self::claim) takes a partition whose lease is free or expired and bumps its
///   epoch; a live lease of another owner cannot be taken;
/// - [`renew`](Self::renew) extends a lease only while its `(owner, epoch)` is current;
/// - [`commit`](CheckpointStore::commit) with a fence locks the lease row and checks
///   `(owner, epoch)` in the checkpoint's own transaction, so a former owner whose lease was
///   taken over can no longer commit (it is fenced off).
pub struct PostgresCheckpointStore {
    client: Mutex<Client>,
    schema: String,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresCheckpointStore {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl std::fmt::Debug for PostgresCheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCheckpointStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresCheckpointStore {
    /// Connects to `url` (no TLS) and creates `schema` and its tables if needed. `schema` must
    /// be an identifier (ASCII letters, digits and `_`, not starting with a digit).
    pub async fn connect(url: &str, schema: &str) -> Result<Self, StreamError> {
        let ok = !schema.is_empty()
            && schema.len() <= 63
            && schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !schema.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            return Err(StreamError::Config(format!(
                "schema {schema:?} is not an identifier"
            )));
        }
        let (client, conn) = tokio_postgres::connect(url, NoTls).await.map_err(pg)?;
        let connection = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::error!(error = %e, "stream checkpoint postgres connection failed");
            }
        });
        let me = PostgresCheckpointStore {
            client: Mutex::new(client),
            schema: schema.to_string(),
            connection,
        };
        me.migrate().await?;
        Ok(me)
    }

    async fn migrate(&self) -> Result<(), StreamError> {
        let s = &self.schema;
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(pg)?;
        // Serialise concurrent first starts (CREATE ... IF NOT EXISTS races in PostgreSQL).
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('attest_stream_checkpoints'))",
            &[],
        )
        .await
        .map_err(pg)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{s}\";
             CREATE TABLE IF NOT EXISTS \"{s}\".stream_checkpoints (
                 job        TEXT    NOT NULL,
                 shard      BIGINT  NOT NULL,
                 positions  TEXT    NOT NULL,
                 watermark  BIGINT  NOT NULL,
                 out_seq    BIGINT  NOT NULL,
                 late_seq   BIGINT  NOT NULL,
                 dead_seq   BIGINT  NOT NULL,
                 state      BYTEA   NOT NULL,
                 updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                 PRIMARY KEY (job, shard)
             );
             CREATE TABLE IF NOT EXISTS \"{s}\".stream_leases (
                 job        TEXT    NOT NULL,
                 partition  BIGINT  NOT NULL,
                 owner      TEXT    NOT NULL,
                 epoch      BIGINT  NOT NULL,
                 expires_at TIMESTAMPTZ NOT NULL,
                 PRIMARY KEY (job, partition)
             );
             CREATE TABLE IF NOT EXISTS \"{s}\".stream_members (
                 job        TEXT    NOT NULL,
                 owner      TEXT    NOT NULL,
                 expires_at TIMESTAMPTZ NOT NULL,
                 PRIMARY KEY (job, owner)
             );"
        ))
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    /// Claims `partition` of `job` for `owner` for `ttl` if it is free or its lease expired;
    /// `None` if another owner holds a live lease.
    pub async fn claim(
        &self,
        job: &str,
        partition: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StreamError> {
        check_job(job)?;
        let ttl_ms = ttl_ms(ttl);
        let client = self.client.lock().await;
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO \"{s}\".stream_leases AS l (job, partition, owner, epoch, expires_at)
                     VALUES ($1, $2, $3, 1, now() + $4 * interval '1 millisecond')
                     ON CONFLICT (job, partition) DO UPDATE
                         SET owner = excluded.owner, epoch = l.epoch + 1,
                             expires_at = excluded.expires_at
                         WHERE l.expires_at <= now()
                     RETURNING epoch",
                    s = self.schema
                ),
                &[&job, &i64::from(partition), &owner, &ttl_ms],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| Lease {
            partition,
            fence: Fence {
                owner: owner.to_string(),
                epoch: r.get(0),
            },
        }))
    }

    /// Extends `lease` by `ttl`; `false` if it is no longer current (taken over).
    pub async fn renew(
        &self,
        job: &str,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<bool, StreamError> {
        let client = self.client.lock().await;
        let n = client
            .execute(
                &format!(
                    "UPDATE \"{s}\".stream_leases
                     SET expires_at = now() + $5 * interval '1 millisecond'
                     WHERE job = $1 AND partition = $2 AND owner = $3 AND epoch = $4",
                    s = self.schema
                ),
                &[
                    &job,
                    &i64::from(lease.partition),
                    &lease.fence.owner,
                    &lease.fence.epoch,
                    &ttl_ms(ttl),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(n == 1)
    }

    /// Gives `lease` up at once (it becomes claimable); a no-op if it is no longer current.
    pub async fn release(&self, job: &str, lease: &Lease) -> Result<(), StreamError> {
        let client = self.client.lock().await;
        client
            .execute(
                &format!(
                    "UPDATE \"{s}\".stream_leases SET expires_at = now() - interval '1 millisecond'
                     WHERE job = $1 AND partition = $2 AND owner = $3 AND epoch = $4",
                    s = self.schema
                ),
                &[
                    &job,
                    &i64::from(lease.partition),
                    &lease.fence.owner,
                    &lease.fence.epoch,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    /// Records that `owner` is a live worker of `job` for `ttl`, and returns how many live
    /// workers the job has (at least 1: this one).
    pub async fn heartbeat(
        &self,
        job: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<u32, StreamError> {
        check_job(job)?;
        let client = self.client.lock().await;
        client
            .execute(
                &format!(
                    "INSERT INTO \"{s}\".stream_members (job, owner, expires_at)
                     VALUES ($1, $2, now() + $3 * interval '1 millisecond')
                     ON CONFLICT (job, owner) DO UPDATE SET expires_at = excluded.expires_at",
                    s = self.schema
                ),
                &[&job, &owner, &ttl_ms(ttl)],
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM \"{s}\".stream_members
                     WHERE job = $1 AND expires_at > now()",
                    s = self.schema
                ),
                &[&job],
            )
            .await
            .map_err(pg)?;
        let n: i64 = row.get(0);
        Ok(u32::try_from(n).unwrap_or(u32::MAX).max(1))
    }

    /// Removes `owner` from the live workers of `job` (graceful shutdown).
    pub async fn leave(&self, job: &str, owner: &str) -> Result<(), StreamError> {
        let client = self.client.lock().await;
        client
            .execute(
                &format!(
                    "DELETE FROM \"{s}\".stream_members WHERE job = $1 AND owner = $2",
                    s = self.schema
                ),
                &[&job, &owner],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    /// Current leases of `job`: `(partition, owner, epoch, live)`, by partition.
    pub async fn leases(&self, job: &str) -> Result<Vec<(u32, String, i64, bool)>, StreamError> {
        let client = self.client.lock().await;
        let rows = client
            .query(
                &format!(
                    "SELECT partition, owner, epoch, expires_at > now() FROM \"{s}\".stream_leases
                     WHERE job = $1 ORDER BY partition",
                    s = self.schema
                ),
                &[&job],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    u32::try_from(r.get::<_, i64>(0)).unwrap_or(u32::MAX),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                )
            })
            .collect())
    }
}

fn ttl_ms(ttl: Duration) -> f64 {
    ttl.as_secs_f64() * 1000.0
}

#[async_trait]
impl CheckpointStore for PostgresCheckpointStore {
    async fn load(&self, job: &str, shard: u32) -> Result<Option<Checkpoint>, StreamError> {
        check_job(job)?;
        let client = self.client.lock().await;
        let row = client
            .query_opt(
                &format!(
                    "SELECT positions, watermark, out_seq, late_seq, dead_seq, state
                     FROM \"{s}\".stream_checkpoints WHERE job = $1 AND shard = $2",
                    s = self.schema
                ),
                &[&job, &i64::from(shard)],
            )
            .await
            .map_err(pg)?;
        let Some(r) = row else { return Ok(None) };
        let p = decode_positions(r.get::<_, &str>(0))?;
        Ok(Some(Checkpoint {
            positions: p.positions,
            event_times: p.event_times,
            watermark: r.get(1),
            sequences: Sequences {
                outputs: to_u64(r.get(2), "out_seq")?,
                late: to_u64(r.get(3), "late_seq")?,
                dead_letters: to_u64(r.get(4), "dead_seq")?,
            },
            state: r.get(5),
        }))
    }

    async fn commit(
        &self,
        job: &str,
        shard: u32,
        checkpoint: &Checkpoint,
        fence: Option<&Fence>,
    ) -> Result<(), StreamError> {
        check_job(job)?;
        let positions = encode_positions(checkpoint)?;
        let out = to_i64(checkpoint.sequences.outputs, "out_seq")?;
        let late = to_i64(checkpoint.sequences.late, "late_seq")?;
        let dead = to_i64(checkpoint.sequences.dead_letters, "dead_seq")?;
        let shard_i = i64::from(shard);
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(pg)?;
        if let Some(f) = fence {
            // Lock the lease row: a concurrent claim waits for this commit, or this commit
            // sees the claim's new epoch and refuses.
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT owner, epoch FROM \"{s}\".stream_leases
                         WHERE job = $1 AND partition = $2 FOR UPDATE",
                        s = self.schema
                    ),
                    &[&job, &shard_i],
                )
                .await
                .map_err(pg)?;
            let current = row.map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)));
            if current.as_ref() != Some(&(f.owner.clone(), f.epoch)) {
                return Err(StreamError::Checkpoint(format!(
                    "lease lost: job {job} shard {shard} is held by {current:?}, not by {} \
                     epoch {} (fenced)",
                    f.owner, f.epoch
                )));
            }
        }
        tx.execute(
            &format!(
                "INSERT INTO \"{s}\".stream_checkpoints
                     (job, shard, positions, watermark, out_seq, late_seq, dead_seq, state,
                      updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
                 ON CONFLICT (job, shard) DO UPDATE SET
                     positions = excluded.positions, watermark = excluded.watermark,
                     out_seq = excluded.out_seq, late_seq = excluded.late_seq,
                     dead_seq = excluded.dead_seq, state = excluded.state,
                     updated_at = excluded.updated_at",
                s = self.schema
            ),
            &[
                &job,
                &shard_i,
                &positions,
                &checkpoint.watermark,
                &out,
                &late,
                &dead,
                &checkpoint.state,
            ],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }
}
