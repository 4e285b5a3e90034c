//! Typed errors of the bus.

use attest_store::StoreError;
use thiserror::Error;

/// Boxed cause of a backend failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong talking to a broker, running a consumer or keeping its
/// idempotency and dead-letter records.
#[derive(Debug, Error)]
pub enum BusError {
    /// No stream captures the subject a message was published to.
    #[error("no stream captures subject {subject}")]
    NoStreamForSubject {
        /// The subject.
        subject: String,
    },
    /// The named stream does not exist.
    #[error("stream {stream} not found")]
    StreamNotFound {
        /// The stream.
        stream: String,
    },
    /// The named consumer does not exist.
    #[error("consumer {consumer} not found on stream {stream}")]
    ConsumerNotFound {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
    },
    /// The message id was already used for a different message (another subject).
    #[error("message id {message_id} already used for another subject of stream {stream}")]
    MessageIdConflict {
        /// The stream.
        stream: String,
        /// The clashing id.
        message_id: String,
    },
    /// A subject, stream name, consumer name or setting is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The message was already acknowledged, terminated or is no longer pending.
    #[error("message {stream_sequence} is not pending for consumer {consumer}")]
    NotPending {
        /// The consumer.
        consumer: String,
        /// Its stream sequence.
        stream_sequence: u64,
    },
    /// A dead letter could not be found or lacks its provenance headers.
    #[error("dead letter {id}: {reason}")]
    DeadLetter {
        /// Its sequence in the dead-letter stream.
        id: u64,
        /// What is wrong.
        reason: String,
    },
    /// The broker was closed.
    #[error("broker is closed")]
    Closed,
    /// The event store behind the embedded broker failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// NATS / JetStream failed.
    #[error("nats error ({context}): {source}")]
    Nats {
        /// The operation that failed.
        context: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A SQLite database (embedded ack state, idempotency records) failed.
    #[error("sqlite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("postgres error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The PostgreSQL pool could not hand out a connection.
    #[error("postgres pool error: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// Encoding or decoding a bus record failed.
    #[error("encoding error: {0}")]
    Encoding(#[from] serde_json::Error),
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

impl BusError {
    /// Wraps a NATS error with the operation that failed.
    pub fn nats(context: &'static str, e: impl Into<BoxError>) -> Self {
        BusError::Nats {
            context,
            source: e.into(),
        }
    }

    /// A short machine-readable code, stable across versions (used by the CLI).
    pub fn code(&self) -> &'static str {
        match self {
            BusError::NoStreamForSubject { .. } => "no_stream_for_subject",
            BusError::StreamNotFound { .. } => "stream_not_found",
            BusError::ConsumerNotFound { .. } => "consumer_not_found",
            BusError::MessageIdConflict { .. } => "message_id_conflict",
            BusError::InvalidArgument(_) => "invalid_argument",
            BusError::NotPending { .. } => "not_pending",
            BusError::DeadLetter { .. } => "dead_letter",
            BusError::Closed => "closed",
            BusError::Store(_) => "store",
            BusError::Nats { .. } => "nats",
            BusError::Sqlite(_) => "sqlite",
            BusError::Postgres(_) => "postgres",
            BusError::Pool(_) => "postgres_pool",
            BusError::Encoding(_) => "encoding",
            BusError::Task(_) => "task",
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = BusError> = std::result::Result<T, E>;
