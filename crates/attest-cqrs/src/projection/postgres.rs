//! Projections into a PostgreSQL read model, in a schema of its own.
//!
//! The projector holds one connection. Each batch runs in one transaction that first locks the
//! generation's checkpoint row (`SELECT … FOR UPDATE`), so a live runner, a rebuild and the
//! switch between them are serialized by the database, across processes too.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use attest_core::{Position, RecordedEvent};
use attest_store::{EventStore, LogFilter};
use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, Transaction};

use super::driver::{Backend, Commit, Driver};
use super::{
    check_ident, HandlerError, ParkedEvent, Projection, ProjectionError, ProjectionLag,
    ProjectorOptions, RebuildReport, ReplayOutcome, Tables,
};

/// A projection whose read model lives in PostgreSQL.
#[async_trait]
pub trait PostgresProjection: Projection {
    /// Creates the tables (and indexes) of one generation; `tables` gives their
    /// schema-qualified names.
    async fn create_tables(
        &mut self,
        tx: &Transaction<'_>,
        tables: &Tables,
    ) -> Result<(), tokio_postgres::Error>;

    /// Applies one event inside the projector's transaction (do not commit). An error rolls
    /// the batch back; the projector retries the event alone, then parks it.
    async fn handle(
        &mut self,
        tx: &Transaction<'_>,
        tables: &Tables,
        event: &RecordedEvent,
    ) -> Result<(), HandlerError>;
}

fn to_i64(p: u64) -> i64 {
    i64::try_from(p).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

struct Inner<P> {
    client: Client,
    projection: P,
    tables: HashMap<u64, Tables>,
}

impl<P: PostgresProjection> Inner<P> {
    fn tables(&mut self, schema: &str, generation: u64) -> Tables {
        let bases = self.projection.tables();
        self.tables
            .entry(generation)
            .or_insert_with(|| Tables::new(bases, generation, Some(schema)))
            .clone()
    }
}

struct PgBackend<P> {
    name: String,
    schema: String,
    bases: &'static [&'static str],
    filter: LogFilter,
    inner: Mutex<Inner<P>>,
    connection: JoinHandle<()>,
}

impl<P> Drop for PgBackend<P> {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl<P: PostgresProjection> PgBackend<P> {
    fn sql(&self, template: &str) -> String {
        template.replace("{s}", &format!("\"{}\"", self.schema))
    }

    async fn check_checkpoint(
        &self,
        tx: &Transaction<'_>,
        generation: u64,
        from: Position,
    ) -> Result<Option<Commit>, tokio_postgres::Error> {
        let row = tx
            .query_opt(
                &self.sql(
                    "SELECT position FROM {s}.projection_checkpoints
                     WHERE name = $1 AND generation = $2 FOR UPDATE",
                ),
                &[&self.name, &to_i64(generation)],
            )
            .await?;
        Ok(match row {
            None => Some(Commit::Retired),
            Some(r) if to_u64(r.get(0)) != from => Some(Commit::Conflict),
            Some(_) => None,
        })
    }

    async fn set_checkpoint(
        &self,
        tx: &Transaction<'_>,
        generation: u64,
        position: Position,
    ) -> Result<(), tokio_postgres::Error> {
        tx.execute(
            &self.sql(
                "UPDATE {s}.projection_checkpoints SET position = $3, updated_at = now()
                 WHERE name = $1 AND generation = $2",
            ),
            &[&self.name, &to_i64(generation), &to_i64(position)],
        )
        .await?;
        Ok(())
    }

    async fn point_views(
        &self,
        tx: &Transaction<'_>,
        tables: &Tables,
    ) -> Result<(), tokio_postgres::Error> {
        for (base, full) in tables.iter() {
            tx.batch_execute(&format!(
                "DROP VIEW IF EXISTS \"{s}\".\"{base}\"; CREATE VIEW \"{s}\".\"{base}\" AS SELECT * FROM {full};",
                s = self.schema
            ))
            .await?;
        }
        Ok(())
    }

    async fn drop_generation(
        &self,
        tx: &Transaction<'_>,
        generation: u64,
    ) -> Result<(), tokio_postgres::Error> {
        let tables = Tables::new(self.bases, generation, Some(&self.schema));
        for (_, full) in tables.iter() {
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {full} CASCADE;"))
                .await?;
        }
        let g = to_i64(generation);
        tx.execute(
            &self.sql("DELETE FROM {s}.projection_checkpoints WHERE name = $1 AND generation = $2"),
            &[&self.name, &g],
        )
        .await?;
        tx.execute(
            &self.sql("DELETE FROM {s}.projection_parked WHERE name = $1 AND generation = $2"),
            &[&self.name, &g],
        )
        .await?;
        Ok(())
    }

    async fn active_row(
        &self,
        client: &impl tokio_postgres::GenericClient,
        lock: bool,
    ) -> Result<Option<(u64, Position)>, tokio_postgres::Error> {
        let sql = self.sql(if lock {
            "SELECT generation, position FROM {s}.projection_checkpoints
             WHERE name = $1 AND status = 'active' FOR UPDATE"
        } else {
            "SELECT generation, position FROM {s}.projection_checkpoints
             WHERE name = $1 AND status = 'active'"
        });
        Ok(client
            .query_opt(&sql, &[&self.name])
            .await?
            .map(|r| (to_u64(r.get(0)), to_u64(r.get(1)))))
    }
}

#[async_trait]
impl<P: PostgresProjection> Backend for PgBackend<P> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn active(&self) -> Result<(u64, Position), ProjectionError> {
        let mut guard = self.inner.lock().await;
        if let Some(a) = self.active_row(&guard.client, false).await? {
            return Ok(a);
        }
        let tables = guard.tables(&self.schema, 1);
        let Inner {
            client, projection, ..
        } = &mut *guard;
        let tx = client.transaction().await?;
        // Serialize first-time creation between processes.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("{}.{}", self.schema, self.name)],
        )
        .await?;
        if let Some(a) = self.active_row(&tx, false).await? {
            return Ok(a);
        }
        projection.create_tables(&tx, &tables).await?;
        tx.execute(
            &self.sql(
                "INSERT INTO {s}.projection_checkpoints (name, generation, position, status)
                 VALUES ($1, 1, 0, 'active')",
            ),
            &[&self.name],
        )
        .await?;
        self.point_views(&tx, &tables).await?;
        tx.commit().await?;
        Ok((1, 0))
    }

    async fn commit(
        &self,
        generation: u64,
        from: Position,
        events: Arc<Vec<RecordedEvent>>,
        range: Range<usize>,
    ) -> Result<Commit, ProjectionError> {
        let mut guard = self.inner.lock().await;
        let tables = guard.tables(&self.schema, generation);
        let Inner {
            client, projection, ..
        } = &mut *guard;
        let tx = client.transaction().await?;
        if let Some(c) = self.check_checkpoint(&tx, generation, from).await? {
            return Ok(c);
        }
        let slice = &events[range];
        for (index, event) in slice.iter().enumerate() {
            if !self.filter.matches(event) {
                continue;
            }
            if let Err(error) = projection.handle(&tx, &tables, event).await {
                tx.rollback().await?;
                return Ok(Commit::Failed { index, error });
            }
        }
        if let Some(last) = slice.last() {
            self.set_checkpoint(&tx, generation, last.position).await?;
        }
        tx.commit().await?;
        Ok(Commit::Done)
    }

    async fn park(
        &self,
        generation: u64,
        from: Position,
        event: &RecordedEvent,
        error: String,
        attempts: u32,
    ) -> Result<Commit, ProjectionError> {
        let mut guard = self.inner.lock().await;
        let tx = guard.client.transaction().await?;
        if let Some(c) = self.check_checkpoint(&tx, generation, from).await? {
            return Ok(c);
        }
        tx.execute(
            &self.sql(
                "INSERT INTO {s}.projection_parked
                 (name, generation, position, event_id, stream_id, event_type, error, attempts, parked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
                 ON CONFLICT (name, generation, position)
                 DO UPDATE SET error = EXCLUDED.error, attempts = EXCLUDED.attempts, parked_at = now()",
            ),
            &[
                &self.name,
                &to_i64(generation),
                &to_i64(event.position),
                &event.id.to_string(),
                &event.stream_id.as_str(),
                &event.event_type.as_str(),
                &error,
                &i64::from(attempts),
            ],
        )
        .await?;
        self.set_checkpoint(&tx, generation, event.position).await?;
        tx.commit().await?;
        Ok(Commit::Done)
    }

    async fn create_generation(&self) -> Result<u64, ProjectionError> {
        self.active().await?;
        let mut guard = self.inner.lock().await;
        let Inner {
            client, projection, ..
        } = &mut *guard;
        let tx = client.transaction().await?;
        // Lock the active row: no switch can happen meanwhile.
        self.active_row(&tx, true).await?;
        let stale = tx
            .query(
                &self.sql(
                    "SELECT generation FROM {s}.projection_checkpoints
                     WHERE name = $1 AND status = 'building' FOR UPDATE",
                ),
                &[&self.name],
            )
            .await?;
        for row in stale {
            self.drop_generation(&tx, to_u64(row.get(0))).await?;
        }
        let max: i64 = tx
            .query_one(
                &self.sql(
                    "SELECT COALESCE(MAX(generation), 0)::BIGINT FROM {s}.projection_checkpoints WHERE name = $1",
                ),
                &[&self.name],
            )
            .await?
            .get(0);
        let generation = to_u64(max) + 1;
        let tables = Tables::new(self.bases, generation, Some(&self.schema));
        projection.create_tables(&tx, &tables).await?;
        tx.execute(
            &self.sql(
                "INSERT INTO {s}.projection_checkpoints (name, generation, position, status)
                 VALUES ($1, $2, 0, 'building')",
            ),
            &[&self.name, &to_i64(generation)],
        )
        .await?;
        tx.commit().await?;
        Ok(generation)
    }

    async fn try_switch(
        &self,
        generation: u64,
        at: Position,
    ) -> Result<Option<u64>, ProjectionError> {
        let mut guard = self.inner.lock().await;
        let tx = guard.client.transaction().await?;
        // Lock order: active row first (lower generation), then ours.
        let Some((old, old_pos)) = self.active_row(&tx, true).await? else {
            return Err(ProjectionError::GenerationRetired {
                name: self.name.clone(),
                generation,
            });
        };
        let mine = tx
            .query_opt(
                &self.sql(
                    "SELECT position FROM {s}.projection_checkpoints
                     WHERE name = $1 AND generation = $2 AND status = 'building' FOR UPDATE",
                ),
                &[&self.name, &to_i64(generation)],
            )
            .await?
            .map(|r| to_u64(r.get(0)));
        if mine != Some(at) {
            return Err(ProjectionError::GenerationRetired {
                name: self.name.clone(),
                generation,
            });
        }
        if old_pos > at {
            return Ok(None);
        }
        // Views first: they depend on the old tables.
        self.point_views(
            &tx,
            &Tables::new(self.bases, generation, Some(&self.schema)),
        )
        .await?;
        self.drop_generation(&tx, old).await?;
        tx.execute(
            &self.sql(
                "UPDATE {s}.projection_checkpoints SET status = 'active', updated_at = now()
                 WHERE name = $1 AND generation = $2",
            ),
            &[&self.name, &to_i64(generation)],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(old))
    }

    async fn parked(&self) -> Result<Vec<ParkedEvent>, ProjectionError> {
        let guard = self.inner.lock().await;
        let rows = guard
            .client
            .query(
                &self.sql(
                    "SELECT p.name, p.generation, p.position, p.event_id, p.stream_id, p.event_type,
                            p.error, p.attempts, p.parked_at
                     FROM {s}.projection_parked p JOIN {s}.projection_checkpoints c
                       ON c.name = p.name AND c.generation = p.generation AND c.status = 'active'
                     WHERE p.name = $1 ORDER BY p.position",
                ),
                &[&self.name],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let event_id: String = r.get(3);
            let stream_id: String = r.get(4);
            let at: SystemTime = r.get(8);
            out.push(ParkedEvent {
                name: r.get(0),
                generation: to_u64(r.get(1)),
                position: to_u64(r.get(2)),
                event_id: event_id
                    .parse()
                    .map_err(|e| ProjectionError::Worker(format!("bad parked event id: {e}")))?,
                stream_id: stream_id
                    .parse()
                    .map_err(|e| ProjectionError::Worker(format!("bad parked stream id: {e}")))?,
                event_type: r.get(5),
                error: r.get(6),
                attempts: u32::try_from(r.get::<_, i64>(7)).unwrap_or(u32::MAX),
                parked_at: DateTime::<Utc>::from(at),
            });
        }
        Ok(out)
    }

    async fn replay(
        &self,
        parked: ParkedEvent,
        event: RecordedEvent,
    ) -> Result<ReplayOutcome, ProjectionError> {
        let mut guard = self.inner.lock().await;
        let tables = guard.tables(&self.schema, parked.generation);
        let Inner {
            client, projection, ..
        } = &mut *guard;
        let (g, pos) = (to_i64(parked.generation), to_i64(parked.position));
        let tx = client.transaction().await?;
        let still = tx
            .query_opt(
                &self.sql(
                    "SELECT 1 FROM {s}.projection_parked
                     WHERE name = $1 AND generation = $2 AND position = $3 FOR UPDATE",
                ),
                &[&self.name, &g, &pos],
            )
            .await?
            .is_some();
        if !still {
            return Err(ProjectionError::NotParked {
                name: parked.name,
                position: parked.position,
            });
        }
        match projection.handle(&tx, &tables, &event).await {
            Ok(()) => {
                tx.execute(
                    &self.sql(
                        "DELETE FROM {s}.projection_parked
                         WHERE name = $1 AND generation = $2 AND position = $3",
                    ),
                    &[&self.name, &g, &pos],
                )
                .await?;
                tx.commit().await?;
                Ok(ReplayOutcome::Applied)
            }
            Err(e) => {
                tx.rollback().await?;
                let msg = e.to_string();
                client
                    .execute(
                        &self.sql(
                            "UPDATE {s}.projection_parked
                             SET attempts = attempts + 1, error = $4, parked_at = now()
                             WHERE name = $1 AND generation = $2 AND position = $3",
                        ),
                        &[&self.name, &g, &pos, &msg],
                    )
                    .await?;
                Ok(ReplayOutcome::StillFailing(msg))
            }
        }
    }
}

/// Runs one [`PostgresProjection`] against an event store. Cheap to clone; clones share the
/// read-model connection.
pub struct PostgresProjector<P: PostgresProjection> {
    driver: Driver<PgBackend<P>>,
}

impl<P: PostgresProjection> Clone for PostgresProjector<P> {
    fn clone(&self) -> Self {
        PostgresProjector {
            driver: self.driver.clone(),
        }
    }
}

impl<P: PostgresProjection> PostgresProjector<P> {
    /// Connects to `url` (a libpq-style connection string or URL, no TLS) and prepares
    /// `schema` (created if needed) to hold the read model and its bookkeeping tables.
    pub async fn connect(
        url: &str,
        schema: &str,
        store: Arc<dyn EventStore>,
        projection: P,
        options: ProjectorOptions,
    ) -> Result<Self, ProjectionError> {
        check_ident(schema)?;
        let name = projection.name().to_string();
        check_ident(&name)?;
        let bases = projection.tables();
        for b in bases {
            check_ident(b)?;
        }
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!(error = %e, "read-model postgres connection failed");
            }
        });
        let meta = format!(
            "CREATE SCHEMA IF NOT EXISTS \"{s}\";
             CREATE TABLE IF NOT EXISTS \"{s}\".projection_checkpoints (
                 name       TEXT        NOT NULL,
                 generation BIGINT      NOT NULL,
                 position   BIGINT      NOT NULL,
                 status     TEXT        NOT NULL CHECK (status IN ('active', 'building')),
                 updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                 PRIMARY KEY (name, generation)
             );
             CREATE TABLE IF NOT EXISTS \"{s}\".projection_parked (
                 name       TEXT        NOT NULL,
                 generation BIGINT      NOT NULL,
                 position   BIGINT      NOT NULL,
                 event_id   TEXT        NOT NULL,
                 stream_id  TEXT        NOT NULL,
                 event_type TEXT        NOT NULL,
                 error      TEXT        NOT NULL,
                 attempts   BIGINT      NOT NULL,
                 parked_at  TIMESTAMPTZ NOT NULL,
                 PRIMARY KEY (name, generation, position)
             );",
            s = schema
        );
        // Concurrent `CREATE … IF NOT EXISTS` can race in PostgreSQL; serialize it.
        client
            .execute(
                "SELECT pg_advisory_lock(hashtext('attest_projection_meta'))",
                &[],
            )
            .await?;
        let created = client.batch_execute(&meta).await;
        client
            .execute(
                "SELECT pg_advisory_unlock(hashtext('attest_projection_meta'))",
                &[],
            )
            .await?;
        created?;
        let backend = PgBackend {
            name,
            schema: schema.to_string(),
            bases,
            filter: projection.filter(),
            inner: Mutex::new(Inner {
                client,
                projection,
                tables: HashMap::new(),
            }),
            connection,
        };
        let projector = PostgresProjector {
            driver: Driver {
                backend: Arc::new(backend),
                store,
                options,
            },
        };
        projector.driver.backend.active().await?;
        Ok(projector)
    }

    /// The projection's name.
    pub fn name(&self) -> &str {
        self.driver.backend.name()
    }

    /// The active generation and its checkpoint.
    pub async fn checkpoint(&self) -> Result<(u64, Position), ProjectionError> {
        self.driver.backend.active().await
    }

    /// Applies every event committed so far, then returns the checkpoint.
    pub async fn catch_up(&self) -> Result<Position, ProjectionError> {
        self.driver.catch_up().await
    }

    /// Catches up, then follows the log live; see [`super::SqliteProjector::run`].
    pub async fn run(&self) -> Result<(), ProjectionError> {
        self.driver.run().await
    }

    /// Blue/green rebuild into a new generation, then an atomic switch.
    pub async fn rebuild(&self) -> Result<RebuildReport, ProjectionError> {
        self.driver.rebuild().await
    }

    /// Lag behind the head of the log.
    pub async fn lag(&self) -> Result<ProjectionLag, ProjectionError> {
        self.driver.lag().await
    }

    /// Events parked in the active generation, by position.
    pub async fn parked(&self) -> Result<Vec<ParkedEvent>, ProjectionError> {
        self.driver.backend.parked().await
    }

    /// Applies a parked event again; on success it leaves the parked list.
    pub async fn replay_parked(
        &self,
        position: Position,
    ) -> Result<ReplayOutcome, ProjectionError> {
        self.driver.replay_parked(position).await
    }
}
