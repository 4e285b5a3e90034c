//! The outbox table in PostgreSQL. The table name is unqualified and resolved through the
//! connection's `search_path`, so a service keeps it next to its own tables.

use std::collections::BTreeMap;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Transaction};

use super::{age_seconds, OutboxError, OutboxMessage, OutboxRecord, OutboxStats};

/// Creates the outbox table if it does not exist (serialized by an advisory lock, since
/// concurrent `CREATE TABLE IF NOT EXISTS` can race in PostgreSQL).
pub async fn ensure_schema(client: &impl GenericClient) -> Result<(), OutboxError> {
    client
        .execute(
            "SELECT pg_advisory_lock(hashtext('attest_outbox_schema'))",
            &[],
        )
        .await?;
    let created = client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS attest_outbox (
                 seq        BIGSERIAL   PRIMARY KEY,
                 id         UUID        NOT NULL UNIQUE,
                 key        TEXT        NOT NULL,
                 subject    TEXT        NOT NULL,
                 headers    JSONB       NOT NULL,
                 payload    BYTEA       NOT NULL,
                 created_at TIMESTAMPTZ NOT NULL
             );",
        )
        .await;
    client
        .execute(
            "SELECT pg_advisory_unlock(hashtext('attest_outbox_schema'))",
            &[],
        )
        .await?;
    created?;
    Ok(())
}

/// Adds `msg` to the outbox inside the caller's transaction: it becomes visible to the relay
/// only if and when `tx` commits. Returns its sequence number.
pub async fn enqueue(tx: &Transaction<'_>, msg: &OutboxMessage) -> Result<i64, OutboxError> {
    msg.validate()?;
    let headers = serde_json::to_value(&msg.headers)
        .map_err(|e| OutboxError::Invalid(format!("headers: {e}")))?;
    let created: SystemTime = msg.created_at.into();
    let row = tx
        .query_one(
            "INSERT INTO attest_outbox (id, key, subject, headers, payload, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
            &[
                &msg.id,
                &msg.key,
                &msg.subject,
                &headers,
                &msg.payload,
                &created,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Up to `limit` waiting (committed) messages, in sequence order.
pub async fn fetch_batch(
    client: &impl GenericClient,
    limit: usize,
) -> Result<Vec<OutboxRecord>, OutboxError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT seq, id, key, subject, headers, payload, created_at
             FROM attest_outbox ORDER BY seq LIMIT $1",
            &[&limit],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let seq: i64 = r.try_get(0)?;
        let headers: serde_json::Value = r.try_get(4)?;
        let headers: BTreeMap<String, String> =
            serde_json::from_value(headers).map_err(|e| OutboxError::Corrupt {
                seq,
                reason: format!("headers: {e}"),
            })?;
        let created: SystemTime = r.try_get(6)?;
        out.push(OutboxRecord {
            seq,
            message: OutboxMessage {
                id: r.try_get(1)?,
                key: r.try_get(2)?,
                subject: r.try_get(3)?,
                headers,
                payload: r.try_get(5)?,
                created_at: DateTime::<Utc>::from(created),
            },
        });
    }
    Ok(out)
}

/// Deletes published messages by sequence number, atomically; returns how many were deleted.
pub async fn delete(client: &impl GenericClient, seqs: &[i64]) -> Result<usize, OutboxError> {
    if seqs.is_empty() {
        return Ok(0);
    }
    let n = client
        .execute("DELETE FROM attest_outbox WHERE seq = ANY($1)", &[&seqs])
        .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Backlog size and oldest-message age.
pub async fn stats(client: &impl GenericClient) -> Result<OutboxStats, OutboxError> {
    let row = client
        .query_one(
            "SELECT COUNT(*), (SELECT created_at FROM attest_outbox ORDER BY seq LIMIT 1)
             FROM attest_outbox",
            &[],
        )
        .await?;
    let backlog: i64 = row.try_get(0)?;
    let oldest: Option<SystemTime> = row.try_get(1)?;
    Ok(OutboxStats {
        backlog: u64::try_from(backlog).unwrap_or(0),
        oldest_age_seconds: oldest.map_or(0.0, |t| age_seconds(DateTime::<Utc>::from(t))),
    })
}
