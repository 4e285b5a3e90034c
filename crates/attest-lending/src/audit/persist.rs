//! The latest audit snapshot, persisted by the owner of the auditor so that a process that
//! does not run it (scale-out) can serve it, and so that a restart shows state at once.
//!
//! Embedded: a JSON file written atomically (temporary file + rename) in the data
//! directory. PostgreSQL: one row per job in `<schema>.audit_snapshots`.

use std::path::{Path, PathBuf};

use super::state::AuditState;
use super::AuditError;

fn err(e: impl std::fmt::Display) -> AuditError {
    AuditError::Snapshot(e.to_string())
}

/// Where snapshots go.
#[derive(Clone)]
pub enum SnapshotStore {
    /// A JSON file.
    File(PathBuf),
    /// A PostgreSQL table, keyed by job name.
    Postgres {
        /// Connection pool.
        pool: deadpool_postgres::Pool,
        /// Qualified table name.
        table: String,
        /// Row key.
        job: String,
    },
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotStore::File(p) => f.debug_tuple("File").field(p).finish(),
            SnapshotStore::Postgres { table, job, .. } => f
                .debug_struct("Postgres")
                .field("table", table)
                .field("job", job)
                .finish_non_exhaustive(),
        }
    }
}

fn check_schema(schema: &str) -> Result<(), AuditError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(AuditError::Config(format!(
            "PostgreSQL schema name {schema:?} must match [a-z_][a-z0-9_]{{0,62}}"
        )))
    }
}

impl SnapshotStore {
    /// `<dir>/audit-state.json`.
    pub fn file_in(dir: &Path) -> Self {
        SnapshotStore::File(dir.join("audit-state.json"))
    }

    /// Table `<schema>.audit_snapshots` at `url` (created if needed), row `job`.
    pub async fn postgres(url: &str, schema: &str, job: &str) -> Result<Self, AuditError> {
        check_schema(schema)?;
        let pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| AuditError::Config(format!("postgres url: {e}")))?;
        let manager = deadpool_postgres::Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(2)
            .build()
            .map_err(err)?;
        let table = format!("\"{schema}\".audit_snapshots");
        let client = pool.get().await.map_err(err)?;
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS {table} (
                 job TEXT PRIMARY KEY,
                 state TEXT NOT NULL,
                 updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );"
        );
        // Concurrent first starts may race on CREATE SCHEMA / TABLE; once more settles it.
        if client.batch_execute(&ddl).await.is_err() {
            client.batch_execute(&ddl).await.map_err(err)?;
        }
        Ok(SnapshotStore::Postgres {
            pool,
            table,
            job: job.to_owned(),
        })
    }

    /// Writes `state`.
    pub async fn save(&self, state: &AuditState) -> Result<(), AuditError> {
        let json = serde_json::to_string(state).map_err(err)?;
        match self {
            SnapshotStore::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> Result<(), AuditError> {
                    let tmp = path.with_extension("json.tmp");
                    std::fs::write(&tmp, json.as_bytes()).map_err(err)?;
                    std::fs::rename(&tmp, &path).map_err(err)
                })
                .await
                .map_err(err)?
            }
            SnapshotStore::Postgres { pool, table, job } => {
                let client = pool.get().await.map_err(err)?;
                client
                    .execute(
                        &format!(
                            "INSERT INTO {table} (job, state, updated_at) VALUES ($1, $2, now())
                             ON CONFLICT (job) DO UPDATE SET state = EXCLUDED.state, updated_at = now()"
                        ),
                        &[job, &json],
                    )
                    .await
                    .map_err(err)?;
                Ok(())
            }
        }
    }

    /// The last saved state, if any.
    pub async fn load(&self) -> Result<Option<AuditState>, AuditError> {
        let text: Option<String> = match self {
            SnapshotStore::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || match std::fs::read_to_string(&path) {
                    Ok(t) => Ok(Some(t)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(err(e)),
                })
                .await
                .map_err(err)??
            }
            SnapshotStore::Postgres { pool, table, job } => {
                let client = pool.get().await.map_err(err)?;
                client
                    .query_opt(&format!("SELECT state FROM {table} WHERE job = $1"), &[job])
                    .await
                    .map_err(err)?
                    .map(|r| r.try_get::<_, String>(0))
                    .transpose()
                    .map_err(err)?
            }
        };
        match text {
            None => Ok(None),
            Some(t) => match serde_json::from_str(&t) {
                Ok(s) => Ok(Some(s)),
                Err(e) => {
                    // An older shape after an upgrade: start empty rather than fail.
                    tracing::warn!(error = %e, "persisted audit snapshot unreadable; ignoring it");
                    Ok(None)
                }
            },
        }
    }
}
