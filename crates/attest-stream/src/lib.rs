//! Event-time stream processing on the event log: keyed streams, windows (tumbling, hopping,
//! sliding, session), watermarks with bounded out-of-orderness and idleness, late side outputs,
//! stream-stream and stream-table joins, and exactly-once keyed state checkpointed atomically
//! with input positions.
//!
//! The crate is split in two halves that meet at [`Operator`]:
//! - the **operators** (pure, synchronous, allocation-conscious): windows, aggregations, joins;
//!   they see records and watermarks and never do I/O;
//! - the **runtime**: sources (the store's global log, broker subjects), the watermark
//!   tracker, checkpoints (SQLite, PostgreSQL), sinks with deterministic ids, partitions.

pub mod error;
pub mod operator;
pub mod time;

pub use error::StreamError;
pub use operator::{Collector, Operator};
pub use time::{Timestamp, WatermarkTracker};
