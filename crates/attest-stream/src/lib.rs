//! Event-time stream processing on the event log: keyed streams, windows (tumbling, hopping,
//! sliding, session), watermarks with bounded out-of-orderness and idleness, late side outputs,
//! stream-stream and stream-table joins, and exactly-once keyed state checkpointed atomically
//! with input positions.
//!
//! The crate is split in two halves that meet at [`Operator`]:
//! - the **operators** (pure, synchronous, allocation-conscious): [`window`]s,
//!   aggregations ([`agg`]), [`join`]s and the fluent [`dsl`] that puts stateless steps
//!   (`map`, `filter`, `key_by`, `flat_map`) in front of them; they see records and
//!   watermarks and never do I/O;
//! - the **runtime**: sources (the store's global log, broker subjects), the watermark
//!   tracker, checkpoints (SQLite, PostgreSQL), sinks with deterministic ids, partitions.

pub mod agg;
pub mod codec;
pub mod dsl;
pub mod error;
pub mod join;
pub mod operator;
pub mod runtime;
pub mod time;
pub mod window;

pub use error::StreamError;
pub use operator::{Collector, LateHint, Operator};
pub use time::{Timestamp, WatermarkTracker};
