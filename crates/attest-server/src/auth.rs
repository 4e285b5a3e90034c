//! API keys with scopes, stored hashed.
//!
//! A key reads `atk_<id>_<secret>`: `id` is 16 hex digits (public, shown by `attest keys
//! list`), `secret` is 32 random bytes in hex. Only SHA-256 of the secret is stored; a
//! presented key is looked up by id and its hash compared in constant time
//! ([`subtle::ConstantTimeEq`]). Keys live in the table `api_keys`, either in
//! `<data-dir>/auth.db` (SQLite, embedded default) or in the PostgreSQL schema shared with the
//! event store (scale-out: every `attest serve` process sees the same keys).
//!
//! Clients send the key as `Authorization: Bearer <key>`.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_postgres::NoTls;

use crate::error::ServerError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Submit decisions and record outcomes.
    Decide,
    /// Read decisions, explanations and audit state.
    Read,
    /// Everything, including erasing a subject's protected attributes.
    Admin,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Decide => "decide",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = ServerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "decide" => Ok(Scope::Decide),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(ServerError::InvalidArgument(format!(
                "unknown scope {other:?} (expected decide, read or admin)"
            ))),
        }
    }
}

/// Parses a comma-separated scope list (`decide,read`); empty lists are refused.
pub fn parse_scopes(s: &str) -> Result<BTreeSet<Scope>, ServerError> {
    let scopes = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(Scope::from_str)
        .collect::<Result<BTreeSet<_>, _>>()?;
    if scopes.is_empty() {
        return Err(ServerError::InvalidArgument(
            "at least one scope is needed (decide, read, admin)".into(),
        ));
    }
    Ok(scopes)
}

fn scopes_to_string(scopes: &BTreeSet<Scope>) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    /// Public key id (16 hex digits).
    pub id: String,
    /// Free-form name given at creation.
    pub name: String,
    /// Granted scopes.
    pub scopes: BTreeSet<Scope>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyInfo {
    /// Whether this key grants `scope` (`admin` grants every scope).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// A freshly created key: the only time its secret exists outside the client.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The stored description.
    pub info: ApiKeyInfo,
    /// The full key to hand to the client (`atk_<id>_<secret>`).
    pub key: String,
}

const PREFIX: &str = "atk_";

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Splits `atk_<id>_<secret>` into (id, secret); `None` when malformed.
fn split_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hexy = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexy(id, 16) && hexy(secret, 64)).then_some((id, secret))
}

fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn check_schema(schema: &str) -> Result<(), ServerError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ServerError::InvalidArgument(format!(
            "bad PostgreSQL schema name {schema:?} (lowercase letters, digits, _; at most 63)"
        )))
    }
}

fn ks(e: impl fmt::Display) -> ServerError {
    ServerError::KeyStore(e.to_string())
}

enum Backend {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres { pool: Pool, table: String },
}

/// The table of API keys (SQLite file or PostgreSQL schema). Cheap to clone.
#[derive(Clone)]
pub struct KeyStore {
    backend: Arc<Backend>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &*self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres { .. } => "postgres",
        };
        f.debug_struct("KeyStore").field("backend", &kind).finish()
    }
}

/// A stored row: (id, name, scopes, hash, created_at, revoked_at).
type Row = (
    String,
    String,
    String,
    Vec<u8>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

fn row_info(r: &Row) -> Result<ApiKeyInfo, ServerError> {
    Ok(ApiKeyInfo {
        id: r.0.clone(),
        name: r.1.clone(),
        scopes: parse_scopes(&r.2)?,
        created_at: r.4,
        revoked_at: r.5,
    })
}

impl KeyStore {
    /// Opens (creating if needed) `<data_dir>/auth.db`.
    pub async fn open_sqlite(data_dir: &Path) -> Result<Self, ServerError> {
        let path = data_dir.join("auth.db");
        let conn = tokio::task::spawn_blocking(move || -> Result<_, ServerError> {
            std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
                .map_err(|e| ks(format!("creating {}: {e}", path.display())))?;
            let conn = rusqlite::Connection::open(&path)
                .map_err(|e| ks(format!("opening {}: {e}", path.display())))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(ks)?;
            conn.execute_batch(
                "PRAGMA journal_mode=WAL;
                 CREATE TABLE IF NOT EXISTS api_keys (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    scopes TEXT NOT NULL,
                    secret_sha256 BLOB NOT NULL,
                    created_at TEXT NOT NULL,
                    revoked_at TEXT
                 );",
            )
            .map_err(ks)?;
            Ok(conn)
        })
        .await
        .map_err(ks)??;
        Ok(KeyStore {
            backend: Arc::new(Backend::Sqlite(Arc::new(Mutex::new(conn)))),
        })
    }

    /// Connects to PostgreSQL and creates `<schema>.api_keys` if absent.
    pub async fn open_postgres(url: &str, schema: &str) -> Result<Self, ServerError> {
        check_schema(schema)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| ServerError::InvalidArgument(format!("postgres url: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name(format!("attest-keys-{schema}"));
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(4).build().map_err(ks)?;
        let table = format!("\"{schema}\".api_keys");
        let client = pool.get().await.map_err(ks)?;
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS {table} (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                scopes TEXT NOT NULL,
                secret_sha256 BYTEA NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                revoked_at TIMESTAMPTZ
             );"
        );
        // Two processes creating the schema or table at once race on the catalog: the loser
        // gets a unique violation. Running the idempotent DDL again then succeeds.
        let mut attempt = 0;
        loop {
            match client.batch_execute(&ddl).await {
                Ok(()) => break,
                Err(e)
                    if attempt < 3
                        && e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(ks(e)),
            }
        }
        drop(client);
        Ok(KeyStore {
            backend: Arc::new(Backend::Postgres { pool, table }),
        })
    }

    /// Creates a key with the given scopes; the returned [`CreatedKey::key`] is never stored.
    pub async fn create(
        &self,
        name: &str,
        scopes: &BTreeSet<Scope>,
    ) -> Result<CreatedKey, ServerError> {
        if scopes.is_empty() {
            return Err(ServerError::InvalidArgument(
                "at least one scope is needed".into(),
            ));
        }
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let id = hex(&id);
        let secret = hex(&secret);
        let key = format!("{PREFIX}{id}_{secret}");
        let info = ApiKeyInfo {
            id: id.clone(),
            name: name.to_string(),
            scopes: scopes.clone(),
            created_at: Utc::now(),
            revoked_at: None,
        };
        let hash = hash_secret(&secret);
        let scopes_s = scopes_to_string(scopes);
        match &*self.backend {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                let (id, name, created) = (id, name.to_string(), info.created_at.to_rfc3339());
                blocking(move || {
                    lock(&conn)?
                        .execute(
                            "INSERT INTO api_keys (id, name, scopes, secret_sha256, created_at)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                            rusqlite::params![id, name, scopes_s, hash, created],
                        )
                        .map_err(ks)
                })
                .await?;
            }
            Backend::Postgres { pool, table } => {
                let client = pool.get().await.map_err(ks)?;
                client
                    .execute(
                        &format!(
                            "INSERT INTO {table} (id, name, scopes, secret_sha256, created_at)
                             VALUES ($1, $2, $3, $4, $5)"
                        ),
                        &[&id, &name, &scopes_s, &hash, &info.created_at],
                    )
                    .await
                    .map_err(ks)?;
            }
        }
        Ok(CreatedKey { info, key })
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn list(&self) -> Result<Vec<ApiKeyInfo>, ServerError> {
        let rows = self.rows(None).await?;
        rows.iter().map(row_info).collect()
    }

    /// Whether at least one key is not revoked.
    pub async fn has_active_keys(&self) -> Result<bool, ServerError> {
        Ok(self.list().await?.iter().any(|k| k.revoked_at.is_none()))
    }

    /// Revokes a key; `false` when no key has that id or it was already revoked.
    pub async fn revoke(&self, id: &str) -> Result<bool, ServerError> {
        let now = Utc::now();
        let n = match &*self.backend {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                let id = id.to_string();
                blocking(move || {
                    lock(&conn)?
                        .execute(
                            "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                            rusqlite::params![id, now.to_rfc3339()],
                        )
                        .map_err(ks)
                })
                .await? as u64
            }
            Backend::Postgres { pool, table } => {
                let client = pool.get().await.map_err(ks)?;
                client
                    .execute(
                        &format!(
                            "UPDATE {table} SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL"
                        ),
                        &[&id, &now],
                    )
                    .await
                    .map_err(ks)?
            }
        };
        Ok(n > 0)
    }

    /// Checks a presented key: `Some(info)` for a valid, unrevoked key, `None` otherwise.
    /// The hash comparison is constant-time.
    pub async fn verify(&self, key: &str) -> Result<Option<ApiKeyInfo>, ServerError> {
        let Some((id, secret)) = split_key(key) else {
            return Ok(None);
        };
        let presented = hash_secret(secret);
        let rows = self.rows(Some(id.to_string())).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let equal: bool = row.3.as_slice().ct_eq(presented.as_slice()).into();
        if !equal || row.5.is_some() {
            return Ok(None);
        }
        row_info(row).map(Some)
    }

    async fn rows(&self, id: Option<String>) -> Result<Vec<Row>, ServerError> {
        match &*self.backend {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                blocking(move || {
                    let conn = lock(&conn)?;
                    let mut stmt = conn
                        .prepare_cached(
                            "SELECT id, name, scopes, secret_sha256, created_at, revoked_at
                             FROM api_keys WHERE (?1 IS NULL OR id = ?1) ORDER BY created_at, id",
                        )
                        .map_err(ks)?;
                    let rows = stmt
                        .query_map([id], |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, Vec<u8>>(3)?,
                                r.get::<_, String>(4)?,
                                r.get::<_, Option<String>>(5)?,
                            ))
                        })
                        .map_err(ks)?;
                    let mut out = Vec::new();
                    for r in rows {
                        let (id, name, scopes, hash, created, revoked) = r.map_err(ks)?;
                        let ts = |s: &str| {
                            DateTime::parse_from_rfc3339(s)
                                .map(|t| t.with_timezone(&Utc))
                                .map_err(|e| ks(format!("bad timestamp {s:?}: {e}")))
                        };
                        let created = ts(&created)?;
                        let revoked = revoked.as_deref().map(ts).transpose()?;
                        out.push((id, name, scopes, hash, created, revoked));
                    }
                    Ok(out)
                })
                .await
            }
            Backend::Postgres { pool, table } => {
                let client = pool.get().await.map_err(ks)?;
                let rows = client
                    .query(
                        &format!(
                            "SELECT id, name, scopes, secret_sha256, created_at, revoked_at
                             FROM {table} WHERE ($1::text IS NULL OR id = $1)
                             ORDER BY created_at, id"
                        ),
                        &[&id],
                    )
                    .await
                    .map_err(ks)?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            r.try_get(0).map_err(ks)?,
                            r.try_get(1).map_err(ks)?,
                            r.try_get(2).map_err(ks)?,
                            r.try_get(3).map_err(ks)?,
                            r.try_get(4).map_err(ks)?,
                            r.try_get(5).map_err(ks)?,
                        ))
                    })
                    .collect()
            }
        }
    }
}

fn lock(
    m: &Mutex<rusqlite::Connection>,
) -> Result<std::sync::MutexGuard<'_, rusqlite::Connection>, ServerError> {
    m.lock()
        .map_err(|_| ks("key store connection poisoned by an earlier panic"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f).await.map_err(ks)?
}

/// Name of the dashboard's sign-in cookie. It holds the API key (HttpOnly, SameSite=Strict)
/// and is accepted for GET and HEAD requests only, so it never authorizes a state change.
pub const SESSION_COOKIE: &str = "attest_key";

/// The API key in the request's sign-in cookie, if any.
pub fn session_key(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE)
        .map(|c| c.value().to_string())
        .filter(|k| !k.is_empty())
}

/// Whether requests must carry an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPolicy {
    /// Every `/v1` request needs a key with the route's scope.
    Required,
    /// Keys are optional: requests without one are allowed; a presented key is still checked
    /// (a bad key is 401, a key lacking the scope is 403). Only allowed on loopback addresses.
    Optional,
}

impl AuthPolicy {
    /// Decides the policy for a bind address: `Required` on any non-loopback address or when
    /// `require_auth` is set, and then at least one active key must exist
    /// ([`ServerError::NoApiKeys`] otherwise).
    pub async fn for_bind(
        bind: SocketAddr,
        require_auth: bool,
        keys: &KeyStore,
    ) -> Result<AuthPolicy, ServerError> {
        let why = if !bind.ip().is_loopback() {
            "because the address is not loopback"
        } else if require_auth {
            "by --require-auth"
        } else {
            return Ok(AuthPolicy::Optional);
        };
        if !keys.has_active_keys().await? {
            return Err(ServerError::NoApiKeys {
                bind: bind.to_string(),
                why,
            });
        }
        Ok(AuthPolicy::Required)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_reject() {
        let s = parse_scopes("decide, read").unwrap();
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            [Scope::Decide, Scope::Read]
        );
        assert!(parse_scopes("").is_err());
        assert!(parse_scopes("write").is_err());
    }

    #[test]
    fn key_format_is_checked() {
        let id = "0123456789abcdef";
        let secret = "ab".repeat(32);
        assert_eq!(
            split_key(&format!("atk_{id}_{secret}")),
            Some((id, secret.as_str()))
        );
        assert_eq!(split_key(&format!("atk_{id}_{}", &secret[1..])), None);
        assert_eq!(split_key(&format!("xx_{id}_{secret}")), None);
        assert_eq!(split_key("atk_"), None);
    }

    #[tokio::test]
    async fn sqlite_keys_create_verify_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open_sqlite(dir.path()).await.unwrap();
        assert!(!store.has_active_keys().await.unwrap());
        let created = store
            .create("ci", &parse_scopes("read").unwrap())
            .await
            .unwrap();
        let info = store.verify(&created.key).await.unwrap().unwrap();
        assert_eq!(info.id, created.info.id);
        assert!(info.allows(Scope::Read) && !info.allows(Scope::Decide));
        // A wrong secret for an existing id is refused.
        let mut forged = created.key.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        assert!(store.verify(&forged).await.unwrap().is_none());
        assert!(store.revoke(&created.info.id).await.unwrap());
        assert!(!store.revoke(&created.info.id).await.unwrap());
        assert!(store.verify(&created.key).await.unwrap().is_none());
        assert!(!store.has_active_keys().await.unwrap());
        assert_eq!(store.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn non_loopback_requires_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open_sqlite(dir.path()).await.unwrap();
        let public: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(matches!(
            AuthPolicy::for_bind(public, false, &store).await,
            Err(ServerError::NoApiKeys { .. })
        ));
        assert_eq!(
            AuthPolicy::for_bind(local, false, &store).await.unwrap(),
            AuthPolicy::Optional
        );
        assert!(AuthPolicy::for_bind(local, true, &store).await.is_err());
        store
            .create("", &parse_scopes("admin").unwrap())
            .await
            .unwrap();
        assert_eq!(
            AuthPolicy::for_bind(public, false, &store).await.unwrap(),
            AuthPolicy::Required
        );
    }
}
