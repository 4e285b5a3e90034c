//! Attest's vocabulary: the event envelope and the identifiers every other crate speaks.
//!
//! This crate does no I/O. It defines
//! - [`StreamId`] (`category-id`), [`EventId`] (UUIDv7) and [`EventType`] (named for intent),
//!   each validated on construction so an invalid value cannot travel further;
//! - [`ExpectedVersion`], the optimistic-concurrency guard of every append;
//! - [`NewEvent`] (what a producer appends) and [`RecordedEvent`] (what the log hands back,
//!   with its per-stream version and global position);
//! - [`Metadata`]: correlation and causation ids, W3C trace context, tenant, actor, time.
//!
//! ```
//! use attest_core::{NewEvent, StreamId};
//! let stream: StreamId = "loan-42".parse().unwrap();
//! assert_eq!(stream.category(), "loan");
//! let ev = NewEvent::json("LoanApplicationSubmitted", &serde_json::json!({"amount": 1000})).unwrap();
//! assert_eq!(ev.event_type.as_str(), "LoanApplicationSubmitted");
//! ```

mod envelope;
mod error;
mod ids;
mod version;

pub use envelope::{Metadata, NewEvent, RecordedEvent, SchemaRef, CONTENT_TYPE_JSON};
pub use error::ValidationError;
pub use ids::{Category, EventId, EventType, StreamId, MAX_EVENT_TYPE_LEN, MAX_STREAM_ID_LEN};
pub use version::ExpectedVersion;

/// Position of an event in the global log: gap-free, starting at 1, strictly increasing in
/// commit order.
pub type Position = u64;

/// Version of an event inside its stream: the first event of a stream has version 0.
pub type Version = u64;
