//! Snapshots in Redis: a key-value option for deployments that keep hot state there.
//!
//! Each stream's latest snapshot is one hash at `{prefix}:snap:{stream}` with fields
//! `version`, `state_version`, `payload` and `taken_at` (RFC 3339). A Lua script replaces it
//! only when the new version is not older, so concurrent savers never move a snapshot back.

use async_trait::async_trait;
use attest_core::StreamId;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::Script;

use crate::{Snapshot, SnapshotStore, StoreError};

const SAVE_IF_NEWER: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'version')
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'state_version', ARGV[2], 'payload', ARGV[3], 'taken_at', ARGV[4])
return 1
"#;

/// A [`SnapshotStore`] backed by Redis.
#[derive(Clone)]
pub struct RedisSnapshotStore {
    conn: ConnectionManager,
    prefix: String,
    script: Script,
}

fn err(e: redis::RedisError) -> StoreError {
    StoreError::backend("redis", e)
}

impl RedisSnapshotStore {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`); keys start with `prefix`.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(err)?;
        let conn = ConnectionManager::new(client).await.map_err(err)?;
        Ok(RedisSnapshotStore {
            conn,
            prefix: prefix.into(),
            script: Script::new(SAVE_IF_NEWER),
        })
    }

    fn key(&self, stream: &StreamId) -> String {
        format!("{}:snap:{}", self.prefix, stream)
    }
}

#[async_trait]
impl SnapshotStore for RedisSnapshotStore {
    async fn save_snapshot(&self, s: &Snapshot) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .script
            .key(self.key(&s.stream))
            .arg(s.version)
            .arg(s.state_version)
            .arg(s.payload.as_slice())
            .arg(s.taken_at.to_rfc3339())
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let mut conn = self.conn.clone();
        let (version, state_version, payload, taken_at): (
            Option<u64>,
            Option<u32>,
            Option<Vec<u8>>,
            Option<String>,
        ) = redis::cmd("HMGET")
            .arg(self.key(stream))
            .arg("version")
            .arg("state_version")
            .arg("payload")
            .arg("taken_at")
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        let (Some(version), Some(state_version), Some(payload), Some(taken_at)) =
            (version, state_version, payload, taken_at)
        else {
            return Ok(None);
        };
        let taken_at = DateTime::parse_from_rfc3339(&taken_at)
            .map_err(|e| StoreError::Corrupted {
                position: 0,
                reason: format!("snapshot of {stream}: bad taken_at: {e}"),
            })?
            .with_timezone(&Utc);
        Ok(Some(Snapshot {
            stream: stream.clone(),
            version,
            state_version,
            payload,
            taken_at,
        }))
    }

    async fn delete_snapshot(&self, stream: &StreamId) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.key(stream))
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(())
    }
}
