//! Crypto-shredding key vault: one random 256-bit key per subject (applicant).
//!
//! Protected attributes are sealed with ChaCha20-Poly1305 under the subject's key before they
//! enter the event log; the log itself is never rewritten. Erasing a subject deletes its key:
//! every sealed copy, in every event and every backup of the log, becomes unreadable, and
//! [`KeyVault::open`] returns `None` ("erased") for it. Keys live either in a SQLite file
//! (`<data_dir>/keys.db`, embedded) or in a PostgreSQL table (`<schema>.subject_keys`,
//! scale-out: every process sharing the database sees the same keys and erasures).
//!
//! A subject erased and then seen again gets a *new* key: older sealed data stays unreadable.
//! The associated data of each seal is the subject id, so a ciphertext cannot be replayed under
//! another subject's key.

use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

use crate::error::LendingError;
use crate::events::SealedAttributes;
use crate::service::ProtectedAttributes;

const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;

/// Where a vault keeps its keys.
#[derive(Clone)]
enum Backend {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres {
        pool: deadpool_postgres::Pool,
        table: String,
    },
}

/// Per-subject keys with seal / open / erase.
#[derive(Clone)]
pub struct KeyVault {
    backend: Backend,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.backend {
            Backend::Sqlite(_) => "sqlite".to_string(),
            Backend::Postgres { table, .. } => format!("postgres {table}"),
        };
        f.debug_struct("KeyVault").field("backend", &kind).finish()
    }
}

fn vault_err(e: impl std::fmt::Display) -> LendingError {
    LendingError::Vault(e.to_string())
}

fn check_schema_name(schema: &str) -> Result<(), LendingError> {
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
        Err(LendingError::InvalidArgument(format!(
            "PostgreSQL schema name {schema:?} must match [a-z_][a-z0-9_]{{0,62}}"
        )))
    }
}

impl KeyVault {
    /// Opens (creating if needed) the SQLite vault at `path` (WAL mode, `synchronous=NORMAL`:
    /// a key survives a process crash as soon as `seal` returns, and an operating-system crash
    /// may lose the keys of the last moments, whose attributes then read as erased — the
    /// decisions themselves are in the event store, durable as it is configured. This keeps a
    /// new applicant from costing an fsync on the decision path).
    pub fn open_sqlite(path: impl AsRef<Path>) -> Result<Self, LendingError> {
        let conn = rusqlite::Connection::open(path.as_ref()).map_err(vault_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS subject_keys (
                 subject TEXT PRIMARY KEY,
                 key BLOB NOT NULL,
                 created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
             );",
        )
        .map_err(vault_err)?;
        Ok(KeyVault {
            backend: Backend::Sqlite(Arc::new(Mutex::new(conn))),
        })
    }

    /// Connects to PostgreSQL at `url` and uses table `<schema>.subject_keys` (created if
    /// needed, with the schema).
    pub async fn open_postgres(url: &str, schema: &str) -> Result<Self, LendingError> {
        check_schema_name(schema)?;
        let pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| LendingError::InvalidArgument(format!("postgres url: {e}")))?;
        let manager = deadpool_postgres::Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(8)
            .build()
            .map_err(vault_err)?;
        Self::with_pool(pool, schema).await
    }

    /// Uses an existing pool (e.g. the event store's) and table `<schema>.subject_keys`.
    pub async fn with_pool(
        pool: deadpool_postgres::Pool,
        schema: &str,
    ) -> Result<Self, LendingError> {
        check_schema_name(schema)?;
        let table = format!("\"{schema}\".subject_keys");
        let client = pool.get().await.map_err(vault_err)?;
        // Concurrent first starts may race on CREATE SCHEMA; retry once on a unique violation.
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS {table} (
                 subject TEXT PRIMARY KEY,
                 key BYTEA NOT NULL,
                 created_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );"
        );
        if client.batch_execute(&ddl).await.is_err() {
            client.batch_execute(&ddl).await.map_err(vault_err)?;
        }
        Ok(KeyVault {
            backend: Backend::Postgres { pool, table },
        })
    }

    /// The subject's key, created when absent.
    async fn key_for(&self, subject: &str) -> Result<[u8; KEY_LEN], LendingError> {
        let mut fresh = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        let bytes: Vec<u8> = match &self.backend {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                let subject = subject.to_string();
                tokio::task::spawn_blocking(move || -> Result<Vec<u8>, LendingError> {
                    let conn = conn.lock().map_err(|_| vault_err("vault lock poisoned"))?;
                    if let Some(k) = sqlite_get(&conn, &subject)? {
                        return Ok(k);
                    }
                    conn.execute(
                        "INSERT INTO subject_keys(subject, key) VALUES (?1, ?2)
                         ON CONFLICT(subject) DO NOTHING",
                        rusqlite::params![subject, fresh.as_slice()],
                    )
                    .map_err(vault_err)?;
                    sqlite_get(&conn, &subject)?
                        .ok_or_else(|| vault_err("key vanished right after insertion"))
                })
                .await
                .map_err(vault_err)??
            }
            Backend::Postgres { pool, table } => {
                let client = pool.get().await.map_err(vault_err)?;
                // Insert-or-read in one statement: the CTE yields the new row, the UNION the
                // existing one when another writer got there first.
                let sql = format!(
                    "WITH ins AS (
                         INSERT INTO {table}(subject, key) VALUES ($1, $2)
                         ON CONFLICT (subject) DO NOTHING RETURNING key)
                     SELECT key FROM ins UNION ALL SELECT key FROM {table} WHERE subject = $1
                     LIMIT 1"
                );
                let rows = client
                    .query(&sql, &[&subject, &fresh.as_slice()])
                    .await
                    .map_err(vault_err)?;
                match rows.first() {
                    Some(r) => r.try_get::<_, Vec<u8>>(0).map_err(vault_err)?,
                    None => {
                        // The ON CONFLICT branch's row was not visible to this snapshot: read it.
                        let r = client
                            .query_opt(
                                &format!("SELECT key FROM {table} WHERE subject = $1"),
                                &[&subject],
                            )
                            .await
                            .map_err(vault_err)?
                            .ok_or_else(|| vault_err("key vanished right after insertion"))?;
                        r.try_get::<_, Vec<u8>>(0).map_err(vault_err)?
                    }
                }
            }
        };
        to_key(&bytes)
    }

    /// The subject's key if it exists (not erased).
    async fn existing_key(&self, subject: &str) -> Result<Option<[u8; KEY_LEN]>, LendingError> {
        let bytes = match &self.backend {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                let subject = subject.to_string();
                tokio::task::spawn_blocking(move || {
                    let conn = conn.lock().map_err(|_| vault_err("vault lock poisoned"))?;
                    sqlite_get(&conn, &subject)
                })
                .await
                .map_err(vault_err)??
            }
            Backend::Postgres { pool, table } => {
                let client = pool.get().await.map_err(vault_err)?;
                client
                    .query_opt(
                        &format!("SELECT key FROM {table} WHERE subject = $1"),
                        &[&subject],
                    )
                    .await
                    .map_err(vault_err)?
                    .map(|r| r.try_get::<_, Vec<u8>>(0))
                    .transpose()
                    .map_err(vault_err)?
            }
        };
        bytes.map(|b| to_key(&b)).transpose()
    }

    /// Seals `attrs` for `subject` (creating its key if needed).
    pub async fn seal(
        &self,
        subject: &str,
        attrs: &ProtectedAttributes,
    ) -> Result<SealedAttributes, LendingError> {
        let key = self.key_for(subject).await?;
        let plain = serde_json::to_vec(attrs).map_err(|e| LendingError::Crypto(e.to_string()))?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: subject.as_bytes(),
                },
            )
            .map_err(|_| LendingError::Crypto("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(SealedAttributes {
            key_id: subject.to_string(),
            ciphertext: B64.encode(out),
        })
    }

    /// Opens sealed attributes: `Ok(None)` when the subject was erased (no key, or a key
    /// created after the erasure that cannot open older data).
    pub async fn decrypt(
        &self,
        subject: &str,
        sealed: &SealedAttributes,
    ) -> Result<Option<ProtectedAttributes>, LendingError> {
        if sealed.key_id != subject {
            return Err(LendingError::Crypto(format!(
                "sealed attributes belong to {:?}, not {subject:?}",
                sealed.key_id
            )));
        }
        let Some(key) = self.existing_key(subject).await? else {
            return Ok(None);
        };
        let raw = B64
            .decode(&sealed.ciphertext)
            .map_err(|e| LendingError::Crypto(format!("ciphertext is not base64: {e}")))?;
        if raw.len() < NONCE_LEN {
            return Err(LendingError::Crypto("ciphertext too short".into()));
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
        match cipher.decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: subject.as_bytes(),
            },
        ) {
            Ok(plain) => serde_json::from_slice(&plain)
                .map(Some)
                .map_err(|e| LendingError::Crypto(format!("decrypted attributes: {e}"))),
            // The subject was erased and has a new key since: the old data stays shredded.
            Err(_) => Ok(None),
        }
    }

    /// Deletes the subject's key; returns whether one existed. Idempotent.
    pub async fn erase(&self, subject: &str) -> Result<bool, LendingError> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                let subject = subject.to_string();
                tokio::task::spawn_blocking(move || {
                    let conn = conn.lock().map_err(|_| vault_err("vault lock poisoned"))?;
                    conn.execute("DELETE FROM subject_keys WHERE subject = ?1", [&subject])
                        .map(|n| n > 0)
                        .map_err(vault_err)
                })
                .await
                .map_err(vault_err)?
            }
            Backend::Postgres { pool, table } => {
                let client = pool.get().await.map_err(vault_err)?;
                client
                    .execute(
                        &format!("DELETE FROM {table} WHERE subject = $1"),
                        &[&subject],
                    )
                    .await
                    .map(|n| n > 0)
                    .map_err(vault_err)
            }
        }
    }
}

fn sqlite_get(conn: &rusqlite::Connection, subject: &str) -> Result<Option<Vec<u8>>, LendingError> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached("SELECT key FROM subject_keys WHERE subject = ?1")
        .map_err(vault_err)?
        .query_row([subject], |r| r.get::<_, Vec<u8>>(0))
        .optional()
        .map_err(vault_err)
}

fn to_key(bytes: &[u8]) -> Result<[u8; KEY_LEN], LendingError> {
    bytes
        .try_into()
        .map_err(|_| LendingError::Crypto(format!("stored key has {} bytes", bytes.len())))
}
