use thiserror::Error;

/// A value that cannot be part of an event envelope.
///
/// Every variant names the offending value so that a client can fix its request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    /// The stream id is not of the form `category-id`.
    #[error("invalid stream id {id:?}: {reason}")]
    InvalidStreamId {
        /// The rejected value (truncated to 300 characters).
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The category is not an identifier.
    #[error("invalid category {category:?}: {reason}")]
    InvalidCategory {
        /// The rejected value.
        category: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The event type is empty, too long or not an identifier.
    #[error("invalid event type {event_type:?}: {reason}")]
    InvalidEventType {
        /// The rejected value (truncated to 300 characters).
        event_type: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The payload could not be encoded.
    #[error("payload could not be encoded as JSON: {0}")]
    Encode(String),
    /// An event id is not a UUID.
    #[error("invalid event id {0:?}: not a UUID")]
    InvalidEventId(String),
}

pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}
