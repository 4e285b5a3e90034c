//! Joins of two keyed inputs, as [`Operator`](crate::Operator)s over a two-sided input enum.
//!
//! - [`IntervalJoin`]: stream-stream join by key within a time bound — a left record at `t`
//!   joins the right records of its key with times in `[t + lower, t + upper]` (e.g. a decision
//!   with the outcome observed up to 90 days later). Both sides are buffered until the
//!   watermark shows that no partner can still arrive, so each matching pair is emitted exactly
//!   once, by whichever of the two records arrives second.
//! - [`TableJoin`]: stream-table join — each stream record is enriched with the latest table
//!   value of its key (latest by event time; an out-of-order older update does not replace a
//!   newer one).

mod interval;
mod table;

pub use interval::{IntervalJoin, IntervalJoinOperator, JoinInput, Joined};
pub use table::{Enriched, TableJoin, TableJoinInput, TableJoinOperator};
