//! Shared helpers of the projection tests and bench (included with `#[path]`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use attest_core::{ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use attest_cqrs::projection::users_by_city::{User, UserEvent, UsersByCity};
use attest_cqrs::projection::{
    HandlerError, PostgresProjection, Projection, ProjectorOptions, RetryPolicy, SqliteProjection,
    Tables,
};
use attest_store::sqlite::SqliteStore;
use attest_store::{EventStore, LogFilter, StoreOptions, StreamAppend};
use rusqlite::Transaction;

pub const CITIES: [&str; 6] = ["London", "Paris", "Berlin", "Madrid", "Rome", "Oslo"];
pub const PG_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

pub fn open_store(path: &Path) -> Arc<dyn EventStore> {
    SqliteStore::open(
        path,
        StoreOptions {
            durable: false,
            ..Default::default()
        },
    )
    .unwrap()
}

pub fn fast_options() -> ProjectorOptions {
    ProjectorOptions {
        batch_size: 256,
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            multiplier: 2.0,
            max_backoff: Duration::from_millis(5),
        },
        durable: false,
    }
}

/// Small deterministic generator (SplitMix64).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A valid history: moves and deletions only concern registered, living users. `prefix` keeps
/// user ids of different workloads apart.
pub fn workload(seed: u64, ops: usize, prefix: &str) -> Vec<UserEvent> {
    let mut rng = Rng::new(seed);
    let mut alive: Vec<String> = Vec::new();
    let mut next_id = 0usize;
    let mut out = Vec::with_capacity(ops);
    for _ in 0..ops {
        let roll = rng.below(10);
        if alive.is_empty() || roll < 4 {
            let id = format!("{prefix}{next_id}");
            next_id += 1;
            out.push(UserEvent::Registered {
                user_id: id.clone(),
                name: format!("Name {id}"),
                city: CITIES[rng.below(CITIES.len())].to_string(),
            });
            alive.push(id);
        } else if roll < 9 {
            let id = alive[rng.below(alive.len())].clone();
            out.push(UserEvent::Moved {
                user_id: id,
                to_city: CITIES[rng.below(CITIES.len())].to_string(),
            });
        } else {
            let id = alive.swap_remove(rng.below(alive.len()));
            out.push(UserEvent::Deleted { user_id: id });
        }
    }
    out
}

/// The read model the events should produce.
pub fn model(events: &[UserEvent]) -> Vec<User> {
    let mut m: BTreeMap<String, User> = BTreeMap::new();
    for e in events {
        match e {
            UserEvent::Registered {
                user_id,
                name,
                city,
            } => {
                m.insert(
                    user_id.clone(),
                    User {
                        user_id: user_id.clone(),
                        name: name.clone(),
                        city: city.clone(),
                    },
                );
            }
            UserEvent::Moved { user_id, to_city } => {
                if let Some(u) = m.get_mut(user_id) {
                    u.city = to_city.clone();
                }
            }
            UserEvent::Deleted { user_id } => {
                m.remove(user_id);
            }
        }
    }
    m.into_values().collect()
}

/// Appends `events` in chunks; each chunk is one atomic multi-stream append, per-user order
/// kept. Every `noise_every` events an unrelated `ledger` event is added too.
pub async fn append_all(store: &Arc<dyn EventStore>, events: &[UserEvent], chunk: usize) {
    for part in events.chunks(chunk.max(1)) {
        let mut by_stream: Vec<(StreamId, Vec<NewEvent>)> = Vec::new();
        for e in part {
            let s = e.stream_id().unwrap();
            let ne = e.to_new_event().unwrap();
            match by_stream.iter_mut().find(|(id, _)| *id == s) {
                Some((_, v)) => v.push(ne),
                None => by_stream.push((s, vec![ne])),
            }
        }
        by_stream.push((
            StreamId::new("ledger-noise").unwrap(),
            vec![NewEvent::json("FundsDeposited", &serde_json::json!({"amount": 1})).unwrap()],
        ));
        let appends = by_stream
            .into_iter()
            .map(|(stream, events)| StreamAppend {
                stream,
                expected: ExpectedVersion::Any,
                events,
            })
            .collect();
        store.append_many(appends).await.unwrap();
    }
}

pub async fn append_one(store: &Arc<dyn EventStore>, e: &UserEvent) -> u64 {
    store
        .append(
            e.stream_id().unwrap(),
            ExpectedVersion::Any,
            vec![e.to_new_event().unwrap()],
        )
        .await
        .unwrap()
        .last_position
}

/// Users-by-city plus a counter of applied events in the same transaction: any event applied
/// twice (or lost) shows up in the count.
pub struct Counting {
    pub inner: UsersByCity,
}

impl Default for Counting {
    fn default() -> Self {
        Self::new()
    }
}

impl Counting {
    pub fn new() -> Self {
        Counting {
            inner: UsersByCity::new(),
        }
    }
}

impl Projection for Counting {
    fn name(&self) -> &str {
        "users_counted"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["users_by_city", "applied_events"]
    }
    fn filter(&self) -> LogFilter {
        self.inner.filter()
    }
}

impl SqliteProjection for Counting {
    fn create_tables(
        &mut self,
        tx: &Transaction<'_>,
        tables: &Tables,
    ) -> Result<(), rusqlite::Error> {
        SqliteProjection::create_tables(&mut self.inner, tx, tables)?;
        let t = tables.get("applied_events");
        tx.execute_batch(&format!(
            "CREATE TABLE {t} (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
             INSERT INTO {t} VALUES (1, 0);"
        ))
    }
    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        tables: &Tables,
        event: &RecordedEvent,
    ) -> Result<(), HandlerError> {
        SqliteProjection::handle(&mut self.inner, tx, tables, event)?;
        let t = tables.get("applied_events");
        tx.prepare_cached(&format!("UPDATE {t} SET n = n + 1"))?
            .execute([])?;
        Ok(())
    }
}

#[async_trait]
impl PostgresProjection for Counting {
    async fn create_tables(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        tables: &Tables,
    ) -> Result<(), tokio_postgres::Error> {
        PostgresProjection::create_tables(&mut self.inner, tx, tables).await?;
        let t = tables.get("applied_events");
        tx.batch_execute(&format!(
            "CREATE TABLE {t} (id INTEGER PRIMARY KEY CHECK (id = 1), n BIGINT NOT NULL);
             INSERT INTO {t} VALUES (1, 0);"
        ))
        .await
    }
    async fn handle(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        tables: &Tables,
        event: &RecordedEvent,
    ) -> Result<(), HandlerError> {
        PostgresProjection::handle(&mut self.inner, tx, tables, event).await?;
        let t = tables.get("applied_events");
        tx.execute(&format!("UPDATE {t} SET n = n + 1"), &[])
            .await?;
        Ok(())
    }
}

pub fn applied_count(conn: &rusqlite::Connection) -> i64 {
    conn.query_row("SELECT n FROM applied_events", [], |r| r.get(0))
        .unwrap()
}
