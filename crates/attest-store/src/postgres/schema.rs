//! Schema name checks, idempotent migrations and the SQL text of every statement, built once
//! per store with the schema name quoted in.

use std::time::Duration;

use tokio_postgres::Client;

use super::errors::pg;
use crate::StoreError;

/// Longest accepted schema name (the NOTIFY channel `<schema>_head` must fit PostgreSQL's
/// 63-byte identifier limit).
pub const MAX_SCHEMA_LEN: usize = 48;

/// Stream states as stored in `streams.state`.
pub(crate) const STATE_ACTIVE: i16 = 0;
pub(crate) const STATE_SOFT_DELETED: i16 = 1;
pub(crate) const STATE_TOMBSTONED: i16 = 2;

/// Rejects schema names that are not lower-case ASCII identifiers of at most
/// [`MAX_SCHEMA_LEN`] bytes (so they never need escaping and the channel name fits).
pub(crate) fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= MAX_SCHEMA_LEN
        && !schema.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument(format!(
            "schema name {schema:?} must be a lower-case ASCII identifier of at most \
             {MAX_SCHEMA_LEN} bytes, not starting with pg_"
        )))
    }
}

/// The NOTIFY channel of a schema.
pub(crate) fn channel(schema: &str) -> String {
    format!("{schema}_head")
}

/// Microseconds since the Unix epoch of `clock_timestamp()`.
const CLOCK_US: &str = "(extract(epoch from clock_timestamp()) * 1000000)::int8";
/// Microseconds since the Unix epoch of `statement_timestamp()`.
const STATEMENT_US: &str = "(extract(epoch from statement_timestamp()) * 1000000)::int8";

/// Columns of an event row, in the order [`super::read::decode`] expects.
pub(crate) const EVENT_COLUMNS: &str = "e.position, e.event_id, e.stream_id, e.version, \
    e.event_type, e.schema_id, e.schema_version, e.content_type, e.payload, e.metadata, \
    e.checksum, e.recorded_us";

/// Every statement the store runs, with the schema quoted in.
#[derive(Debug)]
pub(crate) struct Sql {
    pub lock_streams: String,
    pub lookup_ids: String,
    pub drop_unused: String,
    pub write: String,
    pub notify: String,
    pub head: String,
    pub stream_row: String,
    pub read_forward: String,
    pub read_backward: String,
    pub read_all: String,
    pub read_all_category: String,
    pub set_metadata: String,
    pub lock_one_stream: String,
    pub soft_delete: String,
    pub hard_delete_events: String,
    pub tombstone: String,
    pub stats: String,
}

impl Sql {
    pub(crate) fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        let visible = "e.version >= GREATEST(st.hidden_before, COALESCE(st.truncate_before, 0), \
             COALESCE(st.last_version + 1 - st.max_count, 0)) \
             AND (st.max_age_secs IS NULL OR e.recorded_us::numeric >= "
            .to_string()
            + STATEMENT_US
            + " - (st.max_age_secs::numeric * 1000000 + st.max_age_nanos / 1000))";
        Sql {
            // Locks (creating if needed) every target stream row, in a fixed order, and returns
            // its state as of the latest committed version.
            lock_streams: format!(
                "INSERT INTO {s}.streams AS st (stream_id) \
                 SELECT x FROM unnest($1::text[]) AS x ORDER BY x COLLATE \"C\" \
                 ON CONFLICT (stream_id) DO UPDATE SET stream_id = EXCLUDED.stream_id \
                 RETURNING st.stream_id, st.last_version, st.state, (st.xmax = 0) AS created"
            ),
            drop_unused: format!(
                "DELETE FROM {s}.streams WHERE stream_id = ANY($1::text[]) AND last_version IS NULL"
            ),
            lookup_ids: format!(
                "SELECT event_id, stream_id, version, position FROM {s}.events \
                 WHERE event_id = ANY($1::uuid[])"
            ),
            // Takes the position range (row lock on `head` held until commit), inserts the
            // events and moves the streams' versions, in one statement.
            write: format!(
                "WITH h AS ( \
                   UPDATE {s}.head SET position = position + $1 \
                   RETURNING position - $1 AS base, {CLOCK_US} AS now_us \
                 ), ins AS ( \
                   INSERT INTO {s}.events (position, event_id, stream_id, category, version, \
                     event_type, schema_id, schema_version, content_type, payload, metadata, \
                     checksum, recorded_us) \
                   SELECT h.base + u.ord, u.event_id, u.stream_id, u.category, u.version, \
                     u.event_type, u.schema_id, u.schema_version, u.content_type, u.payload, \
                     u.metadata, u.checksum, h.now_us \
                   FROM h, unnest($2::uuid[], $3::text[], $4::text[], $5::int8[], $6::text[], \
                     $7::text[], $8::int8[], $9::text[], $10::bytea[], $11::bytea[], $12::int8[]) \
                     WITH ORDINALITY AS u(event_id, stream_id, category, version, event_type, \
                       schema_id, schema_version, content_type, payload, metadata, checksum, ord) \
                 ), upd AS ( \
                   UPDATE {s}.streams st SET last_version = v.last, state = {STATE_ACTIVE} \
                   FROM unnest($13::text[], $14::int8[]) AS v(stream_id, last) \
                   WHERE st.stream_id = v.stream_id \
                 ) \
                 SELECT h.base, h.now_us FROM h"
            ),
            // Queued in the append transaction, after `write` (which it reads back through the
            // head row it has updated); delivered by the server at commit. A separate statement
            // because pg_notify inside the write statement's CTE made it markedly slower.
            notify: format!("SELECT pg_notify($1, position::text) FROM {s}.head"),
            head: format!("SELECT position FROM {s}.head"),
            stream_row: format!(
                "SELECT last_version, state, max_count, max_age_secs, max_age_nanos, \
                 truncate_before FROM {s}.streams WHERE stream_id = $1"
            ),
            read_forward: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.streams st \
                 JOIN {s}.events e ON e.stream_id = st.stream_id \
                 WHERE st.stream_id = $1 AND st.state = {STATE_ACTIVE} \
                   AND e.version >= COALESCE($2::int8, st.last_version) AND {visible} \
                 ORDER BY e.version ASC LIMIT $3"
            ),
            read_backward: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.streams st \
                 JOIN {s}.events e ON e.stream_id = st.stream_id \
                 WHERE st.stream_id = $1 AND st.state = {STATE_ACTIVE} \
                   AND e.version <= COALESCE($2::int8, st.last_version) AND {visible} \
                 ORDER BY e.version DESC LIMIT $3"
            ),
            read_all: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events e WHERE e.position > $1 \
                 ORDER BY e.position LIMIT $2"
            ),
            read_all_category: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events e \
                 WHERE e.category = $3 AND e.position > $1 ORDER BY e.position LIMIT $2"
            ),
            set_metadata: format!(
                "INSERT INTO {s}.streams AS st (stream_id, max_count, max_age_secs, \
                   max_age_nanos, truncate_before) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (stream_id) DO UPDATE SET max_count = EXCLUDED.max_count, \
                   max_age_secs = EXCLUDED.max_age_secs, max_age_nanos = EXCLUDED.max_age_nanos, \
                   truncate_before = EXCLUDED.truncate_before \
                 WHERE st.state <> {STATE_TOMBSTONED} \
                 RETURNING st.state"
            ),
            lock_one_stream: format!(
                "INSERT INTO {s}.streams AS st (stream_id) VALUES ($1) \
                 ON CONFLICT (stream_id) DO UPDATE SET stream_id = EXCLUDED.stream_id \
                 RETURNING st.last_version, st.state, (st.xmax = 0) AS created"
            ),
            soft_delete: format!(
                "UPDATE {s}.streams SET state = {STATE_SOFT_DELETED}, \
                 hidden_before = COALESCE(last_version + 1, 0) WHERE stream_id = $1"
            ),
            hard_delete_events: format!("DELETE FROM {s}.events WHERE stream_id = $1"),
            tombstone: format!(
                "UPDATE {s}.streams SET state = {STATE_TOMBSTONED} WHERE stream_id = $1"
            ),
            stats: format!(
                "SELECT (SELECT count(*) FROM {s}.events), (SELECT count(*) FROM {s}.streams), \
                   (SELECT position FROM {s}.head), \
                   (SELECT sum(pg_total_relation_size(c.oid))::int8 FROM pg_class c \
                    JOIN pg_namespace n ON n.oid = c.relnamespace \
                    WHERE n.nspname = $1 AND c.relkind = 'r')"
            ),
        }
    }
}

/// Creates the schema and its tables if absent. Idempotent, and safe to run from several
/// processes at once (serialised by a transaction-scoped advisory lock).
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<(), StoreError> {
    let s = format!("\"{schema}\"");
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1)::int8)",
        &[&format!("attest:{schema}")],
    )
    .await
    .map_err(pg)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.head (
           id boolean PRIMARY KEY DEFAULT true CHECK (id),
           position bigint NOT NULL CHECK (position >= 0)
         );
         INSERT INTO {s}.head (id, position) VALUES (true, 0) ON CONFLICT (id) DO NOTHING;
         CREATE TABLE IF NOT EXISTS {s}.streams (
           stream_id text PRIMARY KEY,
           last_version bigint,
           state smallint NOT NULL DEFAULT {STATE_ACTIVE},
           hidden_before bigint NOT NULL DEFAULT 0,
           max_count bigint,
           max_age_secs bigint,
           max_age_nanos integer,
           truncate_before bigint
         );
         CREATE TABLE IF NOT EXISTS {s}.events (
           position bigint PRIMARY KEY,
           event_id uuid NOT NULL,
           stream_id text NOT NULL,
           category text NOT NULL,
           version bigint NOT NULL,
           event_type text NOT NULL,
           schema_id text,
           schema_version bigint,
           content_type text NOT NULL,
           payload bytea NOT NULL,
           metadata bytea,
           checksum bigint NOT NULL,
           recorded_us bigint NOT NULL,
           CONSTRAINT events_event_id_unique UNIQUE (event_id),
           CONSTRAINT events_stream_version_unique UNIQUE (stream_id, version)
         );
         CREATE INDEX IF NOT EXISTS events_category_position ON {s}.events (category, position);
         {}",
        snapshot_table_ddl(schema)
    ))
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)
}

/// DDL of the snapshots table.
pub(crate) fn snapshot_table_ddl(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS \"{schema}\".snapshots (
           stream_id text PRIMARY KEY,
           version bigint NOT NULL,
           state_version bigint NOT NULL,
           payload bytea NOT NULL,
           taken_secs bigint NOT NULL,
           taken_nanos integer NOT NULL
         );"
    )
}

/// Startup options of every store session: the stall bounds and, for non-durable stores,
/// asynchronous commit.
pub(crate) fn session_options(
    statement_timeout: Duration,
    idle_in_transaction_timeout: Duration,
    durable: bool,
) -> String {
    // Custom plans: a generic plan cached while a table was tiny (sequential scan) would stay
    // in use after the table has grown, until autovacuum's ANALYZE happens to invalidate it.
    let mut o = format!(
        "-c plan_cache_mode=force_custom_plan -c statement_timeout={} \
         -c idle_in_transaction_session_timeout={}",
        statement_timeout.as_millis().max(1),
        idle_in_transaction_timeout.as_millis().max(1)
    );
    if !durable {
        o.push_str(" -c synchronous_commit=off");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        assert!(check_schema_name("attest").is_ok());
        assert!(check_schema_name("_t_1").is_ok());
        for bad in ["", "Attest", "1abc", "a-b", "a\"b", "pg_x", &"a".repeat(49)] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
        assert!(channel(&"a".repeat(MAX_SCHEMA_LEN)).len() <= 63);
    }
}
