//! The read side: projections that fold the global log into query-friendly read models.
//!
//! A projection is a [`Projection`] (name, tables, event filter) plus a backend-specific
//! handler: [`SqliteProjection`] writes through a `rusqlite::Transaction` into a read-model
//! database file of its own, [`PostgresProjection`] through a `tokio_postgres::Transaction`.
//! A projector ([`SqliteProjector`], [`PostgresProjector`]) feeds it events from an
//! [`attest_store::Subscription`] and guarantees:
//!
//! - **Exactly-once effects.** Many events are applied per read-model transaction and the
//!   projection's checkpoint (name → last position) is written in that same transaction, so a
//!   crash at any point leaves the read model and the checkpoint in agreement: on restart no
//!   event is applied twice and none is skipped. A checkpoint update is also a compare-and-set
//!   on the previous position, so two runners of one projection cannot both apply a batch.
//! - **No silent stops, no endless loops.** An event whose handler fails is retried with
//!   exponential backoff ([`RetryPolicy`]); when the attempts are spent it is *parked*
//!   (recorded with its error and attempt count in `projection_parked`), the checkpoint moves
//!   past it and the projection goes on. Parked events are listed and replayed by API.
//!   Failures of the read-model database itself stop the runner with an error.
//! - **Blue/green rebuilds.** Read-model tables are versioned by *generation*
//!   (`users_by_city_g3`); a view with the plain name (`users_by_city`) points at the active
//!   generation. A rebuild replays the log from position 0 into a new generation while the old
//!   one keeps serving and being updated, then, once it has caught up, switches the views and
//!   drops the old tables in one transaction. A live runner notices the switch on its next
//!   batch and continues with the new generation.
//! - **Lag** per projection, in events (head − checkpoint) and in seconds (age of the oldest
//!   unprocessed event), see [`ProjectionLag`].
//!
//! [`users_by_city`] is a complete example read model ("list all users in London").

mod driver;
pub mod postgres;
pub mod sqlite;
pub mod users_by_city;

use std::time::Duration;

use attest_core::{EventId, Position, RecordedEvent, StreamId};
use attest_store::{LogFilter, StoreError};
use chrono::{DateTime, Utc};
use thiserror::Error;

pub use postgres::{PostgresProjection, PostgresProjector};
pub use sqlite::{SqliteProjection, SqliteProjector};

/// Boxed cause of a handler failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What every projection declares, whatever its backend.
pub trait Projection: Send + 'static {
    /// Stable name; the checkpoint, generations and parked events are kept under it.
    fn name(&self) -> &str;

    /// Base names of the read-model tables this projection owns (ASCII identifiers). Each
    /// generation gets its own copy `{base}_g{generation}`; a view named `{base}` points at the
    /// active generation. The projector creates the views and drops old generations.
    fn tables(&self) -> &'static [&'static str];

    /// Which events the handler wants. Others still advance the checkpoint, so the lag of a
    /// filtered projection is not inflated by events it ignores.
    fn filter(&self) -> LogFilter {
        LogFilter::All
    }
}

/// The concrete table names of one generation of a read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    generation: u64,
    names: Vec<(&'static str, String)>,
}

impl Tables {
    /// Names for `generation` of `bases`, optionally qualified by a (PostgreSQL) schema.
    /// Projectors build these; the constructor is public so that a projection can be
    /// exercised on its own (tests, benches).
    pub fn new(bases: &'static [&'static str], generation: u64, schema: Option<&str>) -> Self {
        let names = bases
            .iter()
            .map(|b| {
                let full = match schema {
                    Some(s) => format!("\"{s}\".\"{b}_g{generation}\""),
                    None => format!("\"{b}_g{generation}\""),
                };
                (*b, full)
            })
            .collect();
        Tables { generation, names }
    }

    /// The generation these tables belong to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The quoted (and, on PostgreSQL, schema-qualified) name of table `base` in this
    /// generation, ready to be put into SQL. Unknown bases get an (invalid) quoted name so that
    /// the statement fails with a clear "no such table" error instead of a panic.
    pub fn get(&self, base: &str) -> &str {
        self.names
            .iter()
            .find(|(b, _)| *b == base)
            .map_or("\"undeclared_table\"", |(_, full)| full.as_str())
    }

    /// Every `(base, qualified name)` pair.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.names.iter().map(|(b, f)| (*b, f.as_str()))
    }
}

/// Why a handler could not apply an event. The projector retries it, then parks the event.
#[derive(Debug, Error)]
#[error(transparent)]
pub struct HandlerError(BoxError);

impl HandlerError {
    /// Wraps any error.
    pub fn new(e: impl Into<BoxError>) -> Self {
        HandlerError(e.into())
    }

    /// An error with just a message.
    pub fn msg(message: impl std::fmt::Display) -> Self {
        HandlerError(message.to_string().into())
    }
}

impl From<rusqlite::Error> for HandlerError {
    fn from(e: rusqlite::Error) -> Self {
        HandlerError::new(e)
    }
}

impl From<tokio_postgres::Error> for HandlerError {
    fn from(e: tokio_postgres::Error) -> Self {
        HandlerError::new(e)
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(e: serde_json::Error) -> Self {
        HandlerError::new(e)
    }
}

/// Failures of a projector itself (not of one event's handler).
#[derive(Debug, Error)]
pub enum ProjectionError {
    /// The SQLite read-model database failed.
    #[error("read-model database (sqlite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL read-model database failed.
    #[error("read-model database (postgres): {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A projection or schema name is not a plain identifier.
    #[error("invalid identifier {0:?}: use ASCII letters, digits and '_', starting with a letter or '_'")]
    InvalidIdentifier(String),
    /// The generation being rebuilt was retired or dropped by someone else.
    #[error("generation {generation} of projection {name} is no longer current")]
    GenerationRetired {
        /// Projection.
        name: String,
        /// The generation.
        generation: u64,
    },
    /// No parked event at this position.
    #[error("no parked event at position {position} for projection {name}")]
    NotParked {
        /// Projection.
        name: String,
        /// Position asked for.
        position: Position,
    },
    /// A parked event is no longer in the store (e.g. its stream was tombstoned).
    #[error("parked event at position {0} is no longer in the event store")]
    ParkedEventGone(Position),
    /// The blocking worker that owns the SQLite connection panicked or was cancelled.
    #[error("read-model worker failed: {0}")]
    Worker(String),
}

/// How often and how patiently a failing event is retried before it is parked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_backoff: Duration,
    /// Factor applied to the wait after each failed attempt.
    pub multiplier: f64,
    /// Upper bound of a single wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial_backoff.as_secs_f64() * self.multiplier.max(1.0).powi(exp);
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// Tuning of a projector.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectorOptions {
    /// Most events applied in one read-model transaction (pages already read are merged up
    /// to this size; a live projection that keeps up commits smaller batches at once).
    pub batch_size: usize,
    /// Retries of a failing event before it is parked.
    pub retry: RetryPolicy,
    /// SQLite only: whether a read-model commit waits for the disk (`synchronous=FULL`) or not
    /// (`NORMAL`; a power loss may lose the last commits, but never splits a batch from its
    /// checkpoint).
    pub durable: bool,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        ProjectorOptions {
            batch_size: 16384,
            retry: RetryPolicy::default(),
            durable: true,
        }
    }
}

/// How far a projection is behind the head of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionLag {
    /// Projection.
    pub name: String,
    /// Its active generation.
    pub generation: u64,
    /// Last position it applied (or skipped).
    pub checkpoint: Position,
    /// Head of the log when measured.
    pub head: Position,
    /// `head − checkpoint`.
    pub events: u64,
    /// Age of the oldest unprocessed event (now − its `recorded_at`), 0 when caught up.
    pub seconds: f64,
}

/// An event a projection gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    /// Projection.
    pub name: String,
    /// Generation it was parked in.
    pub generation: u64,
    /// Position of the event in the global log.
    pub position: Position,
    /// Its id.
    pub event_id: EventId,
    /// Its stream.
    pub stream_id: StreamId,
    /// Its type.
    pub event_type: String,
    /// The last error.
    pub error: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was (last) parked or retried.
    pub parked_at: DateTime<Utc>,
}

/// Outcome of replaying a parked event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// It applied; it is no longer parked.
    Applied,
    /// It failed again; it stays parked with this error and one more attempt counted.
    StillFailing(String),
}

/// Outcome of a blue/green rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// The generation that now serves reads.
    pub generation: u64,
    /// The generation it replaced (its tables are dropped).
    pub replaced: u64,
    /// Checkpoint of the new generation at the switch.
    pub position: Position,
}

/// Checks that `s` can be spliced into SQL as an identifier.
pub(crate) fn check_ident(s: &str) -> Result<(), ProjectionError> {
    let mut chars = s.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 48;
    if ok {
        Ok(())
    } else {
        Err(ProjectionError::InvalidIdentifier(s.to_string()))
    }
}

/// Seconds between `recorded_at` and now, never negative.
pub(crate) fn age_seconds(e: &RecordedEvent) -> f64 {
    let ms = (Utc::now() - e.recorded_at)
        .num_microseconds()
        .unwrap_or(i64::MAX);
    (ms.max(0) as f64) / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(10),
            multiplier: 2.0,
            max_backoff: Duration::from_millis(50),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(10));
        assert_eq!(p.backoff(2), Duration::from_millis(20));
        assert_eq!(p.backoff(3), Duration::from_millis(40));
        assert_eq!(p.backoff(4), Duration::from_millis(50));
        assert_eq!(p.backoff(u32::MAX), Duration::from_millis(50));
    }

    #[test]
    fn identifiers() {
        assert!(check_ident("users_by_city").is_ok());
        assert!(check_ident("_x1").is_ok());
        for bad in ["", "1a", "a-b", "a\"b", "a b", "ä"] {
            assert!(check_ident(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tables_are_versioned_and_quoted() {
        let t = Tables::new(&["a", "b"], 3, None);
        assert_eq!(t.get("a"), "\"a_g3\"");
        assert_eq!(t.generation(), 3);
        let p = Tables::new(&["a"], 2, Some("rm"));
        assert_eq!(p.get("a"), "\"rm\".\"a_g2\"");
        assert_eq!(p.get("zzz"), "\"undeclared_table\"");
    }
}
