//! Errors of the stream engine.

/// Everything that can go wrong in a stream job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A window, join or job definition is invalid (zero size, slide larger than size, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Operator state could not be encoded or decoded for a checkpoint.
    #[error("state codec: {0}")]
    State(String),
    /// An input record could not be decoded.
    #[error("decode input at {source_name} offset {offset}: {reason}")]
    Decode {
        /// Source (partition) name.
        source_name: String,
        /// Offset of the record in that source.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// The checkpoint store failed or refused the commit (e.g. lost partition lease).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] attest_store::StoreError),
    /// The broker failed.
    #[error(transparent)]
    Bus(#[from] attest_bus::BusError),
}
