//! The outbox table in a SQLite database (the service's own database file).

use std::collections::BTreeMap;

use chrono::DateTime;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use uuid::Uuid;

use super::{age_seconds, OutboxError, OutboxMessage, OutboxRecord, OutboxStats};

/// Creates the outbox table if it does not exist.
pub fn ensure_schema(conn: &Connection) -> Result<(), OutboxError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS attest_outbox (
             seq        INTEGER PRIMARY KEY AUTOINCREMENT,
             id         TEXT    NOT NULL UNIQUE,
             key        TEXT    NOT NULL,
             subject    TEXT    NOT NULL,
             headers    TEXT    NOT NULL,
             payload    BLOB    NOT NULL,
             created_at INTEGER NOT NULL
         );",
    )?;
    Ok(())
}

/// Adds `msg` to the outbox inside the caller's transaction: it becomes visible to the relay
/// only if and when `tx` commits. Returns its sequence number.
pub fn enqueue(tx: &Transaction<'_>, msg: &OutboxMessage) -> Result<i64, OutboxError> {
    msg.validate()?;
    let headers = serde_json::to_string(&msg.headers)
        .map_err(|e| OutboxError::Invalid(format!("headers: {e}")))?;
    tx.prepare_cached(
        "INSERT INTO attest_outbox (id, key, subject, headers, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        msg.id.to_string(),
        msg.key,
        msg.subject,
        headers,
        msg.payload,
        msg.created_at.timestamp_micros()
    ])?;
    Ok(tx.last_insert_rowid())
}

fn decode(r: &rusqlite::Row<'_>) -> Result<Result<OutboxRecord, OutboxError>, rusqlite::Error> {
    let seq: i64 = r.get(0)?;
    let id: String = r.get(1)?;
    let headers: String = r.get(4)?;
    let created: i64 = r.get(6)?;
    let corrupt = |reason: String| OutboxError::Corrupt { seq, reason };
    let id = match Uuid::parse_str(&id) {
        Ok(id) => id,
        Err(e) => return Ok(Err(corrupt(format!("id: {e}")))),
    };
    let headers: BTreeMap<String, String> = match serde_json::from_str(&headers) {
        Ok(h) => h,
        Err(e) => return Ok(Err(corrupt(format!("headers: {e}")))),
    };
    let Some(created_at) = DateTime::from_timestamp_micros(created) else {
        return Ok(Err(corrupt(format!("created_at {created} out of range"))));
    };
    Ok(Ok(OutboxRecord {
        seq,
        message: OutboxMessage {
            id,
            key: r.get(2)?,
            subject: r.get(3)?,
            headers,
            payload: r.get(5)?,
            created_at,
        },
    }))
}

/// Up to `limit` waiting messages, in sequence order (hence in order per key).
pub fn fetch_batch(conn: &Connection, limit: usize) -> Result<Vec<OutboxRecord>, OutboxError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, id, key, subject, headers, payload, created_at
         FROM attest_outbox ORDER BY seq LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit], decode)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

/// Deletes published messages by sequence number, atomically; returns how many were deleted.
pub fn delete(conn: &Connection, seqs: &[i64]) -> Result<usize, OutboxError> {
    if seqs.is_empty() {
        return Ok(0);
    }
    let list = serde_json::to_string(seqs).map_err(|e| OutboxError::Invalid(e.to_string()))?;
    let n = conn
        .prepare_cached("DELETE FROM attest_outbox WHERE seq IN (SELECT value FROM json_each(?1))")?
        .execute(params![list])?;
    Ok(n)
}

/// Backlog size and oldest-message age.
pub fn stats(conn: &Connection) -> Result<OutboxStats, OutboxError> {
    let backlog: i64 = conn.query_row("SELECT COUNT(*) FROM attest_outbox", [], |r| r.get(0))?;
    let oldest: Option<i64> = conn
        .query_row(
            "SELECT created_at FROM attest_outbox ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(OutboxStats {
        backlog: u64::try_from(backlog).unwrap_or(0),
        oldest_age_seconds: oldest
            .and_then(DateTime::from_timestamp_micros)
            .map_or(0.0, age_seconds),
    })
}
