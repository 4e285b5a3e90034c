//! Example read model: users by city ("list all users in London").
//!
//! Fed by intent-named events of `user-{id}` streams — [`UserEvent::Registered`]
//! (`UserRegistered`), [`UserEvent::Moved`] (`UserMoved`), [`UserEvent::Deleted`]
//! (`UserDeleted`) — into one table `users_by_city (user_id, name, city)` indexed by city, on
//! SQLite ([`users_in_city`]) or PostgreSQL ([`users_in_city_pg`]).
//!
//! A move or deletion of a user the read model does not know is an error: the event is
//! retried, then parked, and can be replayed once the registration has arrived.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

use async_trait::async_trait;
use attest_core::{Category, NewEvent, RecordedEvent, StreamId, ValidationError};
use attest_store::LogFilter;
use rusqlite::{params, Connection, Transaction};
use serde::{Deserialize, Serialize};
use tokio_postgres::Statement;

use super::{HandlerError, PostgresProjection, Projection, SqliteProjection, Tables};

/// Stream category of users.
pub const CATEGORY: &str = "user";
/// Base name of the read-model table (and of the view readers query).
pub const TABLE: &str = "users_by_city";

/// What happened to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEvent {
    /// `UserRegistered`.
    Registered {
        /// User id (the stream is `user-{user_id}`).
        user_id: String,
        /// Display name.
        name: String,
        /// City of residence.
        city: String,
    },
    /// `UserMoved`.
    Moved {
        /// User id.
        user_id: String,
        /// The new city.
        to_city: String,
    },
    /// `UserDeleted`.
    Deleted {
        /// User id.
        user_id: String,
    },
}

#[derive(Serialize, Deserialize)]
struct RegisteredBody<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    city: Cow<'a, str>,
}

#[derive(Serialize, Deserialize)]
struct MovedBody<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    to_city: Cow<'a, str>,
}

#[derive(Serialize, Deserialize)]
struct DeletedBody<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
}

impl UserEvent {
    /// The event type stored in the envelope.
    pub fn event_type(&self) -> &'static str {
        match self {
            UserEvent::Registered { .. } => "UserRegistered",
            UserEvent::Moved { .. } => "UserMoved",
            UserEvent::Deleted { .. } => "UserDeleted",
        }
    }

    /// The user the event is about.
    pub fn user_id(&self) -> &str {
        match self {
            UserEvent::Registered { user_id, .. }
            | UserEvent::Moved { user_id, .. }
            | UserEvent::Deleted { user_id } => user_id,
        }
    }

    /// The stream the event belongs to: `user-{user_id}`.
    pub fn stream_id(&self) -> Result<StreamId, ValidationError> {
        StreamId::new(format!("{CATEGORY}-{}", self.user_id()))
    }

    /// Encodes the event as a JSON [`NewEvent`] with a fresh id.
    pub fn to_new_event(&self) -> Result<NewEvent, ValidationError> {
        let t = self.event_type();
        match self {
            UserEvent::Registered {
                user_id,
                name,
                city,
            } => NewEvent::json(
                t,
                &RegisteredBody {
                    user_id: user_id.into(),
                    name: name.into(),
                    city: city.into(),
                },
            ),
            UserEvent::Moved { user_id, to_city } => NewEvent::json(
                t,
                &MovedBody {
                    user_id: user_id.into(),
                    to_city: to_city.into(),
                },
            ),
            UserEvent::Deleted { user_id } => NewEvent::json(
                t,
                &DeletedBody {
                    user_id: user_id.into(),
                },
            ),
        }
    }
}

/// One row of the read model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub user_id: String,
    /// Display name.
    pub name: String,
    /// Current city.
    pub city: String,
}

struct SqliteSql {
    register: String,
    moved: String,
    delete: String,
}

struct PgStatements {
    register: Statement,
    moved: Statement,
    delete: Statement,
}

/// The "users by city" projection; implements both [`SqliteProjection`] and
/// [`PostgresProjection`].
pub struct UsersByCity {
    name: String,
    filter: LogFilter,
    sqlite: HashMap<u64, SqliteSql>,
    pg: HashMap<u64, PgStatements>,
}

impl Default for UsersByCity {
    fn default() -> Self {
        Self::new()
    }
}

impl UsersByCity {
    /// The projection under its default name `users_by_city`.
    pub fn new() -> Self {
        Self::named(TABLE)
    }

    /// The projection under another name (e.g. to run two independent copies in one
    /// database for comparison). The table names stay the same, so copies need separate
    /// databases or schemas.
    pub fn named(name: impl Into<String>) -> Self {
        UsersByCity {
            name: name.into(),
            // "user" is a valid category; the fallback is never taken.
            filter: Category::new(CATEGORY)
                .map(LogFilter::Category)
                .unwrap_or_default(),
            sqlite: HashMap::new(),
            pg: HashMap::new(),
        }
    }
}

enum Decoded<'a> {
    Registered(RegisteredBody<'a>),
    Moved(MovedBody<'a>),
    Deleted(DeletedBody<'a>),
    Other,
}

fn decode(event: &RecordedEvent) -> Result<Decoded<'_>, HandlerError> {
    Ok(match event.event_type.as_str() {
        "UserRegistered" => Decoded::Registered(serde_json::from_slice(&event.payload)?),
        "UserMoved" => Decoded::Moved(serde_json::from_slice(&event.payload)?),
        "UserDeleted" => Decoded::Deleted(serde_json::from_slice(&event.payload)?),
        _ => Decoded::Other,
    })
}

fn unknown_user(user_id: &str, event: &RecordedEvent) -> HandlerError {
    HandlerError::msg(format!(
        "{} for unknown user {user_id:?} (position {})",
        event.event_type, event.position
    ))
}

impl Projection for UsersByCity {
    fn name(&self) -> &str {
        &self.name
    }

    fn tables(&self) -> &'static [&'static str] {
        &[TABLE]
    }

    fn filter(&self) -> LogFilter {
        self.filter.clone()
    }
}

impl SqliteProjection for UsersByCity {
    fn create_tables(
        &mut self,
        tx: &Transaction<'_>,
        tables: &Tables,
    ) -> Result<(), rusqlite::Error> {
        let t = tables.get(TABLE);
        let g = tables.generation();
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                 user_id TEXT PRIMARY KEY,
                 name    TEXT NOT NULL,
                 city    TEXT NOT NULL
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS \"{TABLE}_g{g}_city\" ON {t} (city, user_id);"
        ))
    }

    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        tables: &Tables,
        event: &RecordedEvent,
    ) -> Result<(), HandlerError> {
        let sql = self.sqlite.entry(tables.generation()).or_insert_with(|| {
            let t = tables.get(TABLE);
            SqliteSql {
                register: format!(
                    "INSERT INTO {t} (user_id, name, city) VALUES (?1, ?2, ?3)
                     ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, city = excluded.city"
                ),
                moved: format!("UPDATE {t} SET city = ?2 WHERE user_id = ?1"),
                delete: format!("DELETE FROM {t} WHERE user_id = ?1"),
            }
        });
        match decode(event)? {
            Decoded::Registered(b) => {
                tx.prepare_cached(&sql.register)?
                    .execute(params![b.user_id, b.name, b.city])?;
            }
            Decoded::Moved(b) => {
                let n = tx
                    .prepare_cached(&sql.moved)?
                    .execute(params![b.user_id, b.to_city])?;
                if n == 0 {
                    return Err(unknown_user(&b.user_id, event));
                }
            }
            Decoded::Deleted(b) => {
                let n = tx
                    .prepare_cached(&sql.delete)?
                    .execute(params![b.user_id])?;
                if n == 0 {
                    return Err(unknown_user(&b.user_id, event));
                }
            }
            Decoded::Other => {}
        }
        Ok(())
    }
}

#[async_trait]
impl PostgresProjection for UsersByCity {
    async fn create_tables(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        tables: &Tables,
    ) -> Result<(), tokio_postgres::Error> {
        let t = tables.get(TABLE);
        let g = tables.generation();
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                 user_id TEXT PRIMARY KEY,
                 name    TEXT NOT NULL,
                 city    TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS \"{TABLE}_g{g}_city\" ON {t} (city, user_id);"
        ))
        .await
    }

    async fn handle(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        tables: &Tables,
        event: &RecordedEvent,
    ) -> Result<(), HandlerError> {
        let decoded = decode(event)?;
        if matches!(decoded, Decoded::Other) {
            return Ok(());
        }
        let g = tables.generation();
        let st = match self.pg.entry(g) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let t = tables.get(TABLE);
                v.insert(PgStatements {
                    register: tx
                        .prepare(&format!(
                            "INSERT INTO {t} (user_id, name, city) VALUES ($1, $2, $3)
                             ON CONFLICT (user_id) DO UPDATE SET name = EXCLUDED.name, city = EXCLUDED.city"
                        ))
                        .await?,
                    moved: tx
                        .prepare(&format!("UPDATE {t} SET city = $2 WHERE user_id = $1"))
                        .await?,
                    delete: tx
                        .prepare(&format!("DELETE FROM {t} WHERE user_id = $1"))
                        .await?,
                })
            }
        };
        match decoded {
            Decoded::Registered(b) => {
                tx.execute(
                    &st.register,
                    &[&b.user_id.as_ref(), &b.name.as_ref(), &b.city.as_ref()],
                )
                .await?;
            }
            Decoded::Moved(b) => {
                let n = tx
                    .execute(&st.moved, &[&b.user_id.as_ref(), &b.to_city.as_ref()])
                    .await?;
                if n == 0 {
                    return Err(unknown_user(&b.user_id, event));
                }
            }
            Decoded::Deleted(b) => {
                let n = tx.execute(&st.delete, &[&b.user_id.as_ref()]).await?;
                if n == 0 {
                    return Err(unknown_user(&b.user_id, event));
                }
            }
            Decoded::Other => {}
        }
        Ok(())
    }
}

/// Users living in `city`, by id, read through the `users_by_city` view of a SQLite read-model
/// database (open your own connection on [`super::SqliteProjector::path`]).
pub fn users_in_city(conn: &Connection, city: &str) -> Result<Vec<User>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT user_id, name, city FROM \"{TABLE}\" WHERE city = ?1 ORDER BY user_id"
    ))?;
    let rows = stmt.query_map(params![city], |r| {
        Ok(User {
            user_id: r.get(0)?,
            name: r.get(1)?,
            city: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// Every user, by id (SQLite).
pub fn all_users(conn: &Connection) -> Result<Vec<User>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT user_id, name, city FROM \"{TABLE}\" ORDER BY user_id"
    ))?;
    let rows = stmt.query_map([], |r| {
        Ok(User {
            user_id: r.get(0)?,
            name: r.get(1)?,
            city: r.get(2)?,
        })
    })?;
    rows.collect()
}

fn pg_rows(rows: Vec<tokio_postgres::Row>) -> Vec<User> {
    rows.into_iter()
        .map(|r| User {
            user_id: r.get(0),
            name: r.get(1),
            city: r.get(2),
        })
        .collect()
}

/// Users living in `city`, by id, read through the `users_by_city` view in `schema`
/// (PostgreSQL). `schema` must be a plain identifier.
pub async fn users_in_city_pg(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
    city: &str,
) -> Result<Vec<User>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT user_id, name, city FROM \"{schema}\".\"{TABLE}\" WHERE city = $1 ORDER BY user_id"
            ),
            &[&city],
        )
        .await?;
    Ok(pg_rows(rows))
}

/// Every user, by id (PostgreSQL).
pub async fn all_users_pg(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
) -> Result<Vec<User>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!("SELECT user_id, name, city FROM \"{schema}\".\"{TABLE}\" ORDER BY user_id"),
            &[],
        )
        .await?;
    Ok(pg_rows(rows))
}
