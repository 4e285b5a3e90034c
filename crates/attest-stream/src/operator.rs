//! The contract between stateful operators and the runtime that drives and checkpoints them.

use crate::{StreamError, Timestamp};

/// Where an operator puts what it produces: results, and input records that arrived after
/// their window closed (allowed lateness included). Late records are never dropped silently:
/// the runtime routes them to a late side output.
#[derive(Debug)]
pub struct Collector<O, L> {
    /// Results, in the order they were produced.
    pub outputs: Vec<O>,
    /// Records too late for any open window, with their event time.
    pub late: Vec<(L, Timestamp)>,
}

impl<O, L> Default for Collector<O, L> {
    fn default() -> Self {
        Self {
            outputs: Vec::new(),
            late: Vec::new(),
        }
    }
}

impl<O, L> Collector<O, L> {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a result.
    #[inline]
    pub fn emit(&mut self, output: O) {
        self.outputs.push(output);
    }

    /// Routes a late record to the side output.
    #[inline]
    pub fn late(&mut self, record: L, time: Timestamp) {
        self.late.push((record, time));
    }

    /// Removes and returns everything collected so far.
    pub fn drain(&mut self) -> (Vec<O>, Vec<(L, Timestamp)>) {
        (
            std::mem::take(&mut self.outputs),
            std::mem::take(&mut self.late),
        )
    }
}

/// A deterministic, stateful stream operator.
///
/// Determinism is what makes exactly-once possible: given the same state, the same records
/// and the same watermarks in the same order, an operator produces the same outputs in the
/// same order. The runtime restores the last checkpoint after a crash and replays the inputs
/// after it; deterministic outputs get the same ids and are de-duplicated by the sinks.
pub trait Operator: Send {
    /// Input record type.
    type In;
    /// Output record type.
    type Out;

    /// Processes one record with its event time.
    fn on_record(
        &mut self,
        record: Self::In,
        time: Timestamp,
        out: &mut Collector<Self::Out, Self::In>,
    );

    /// Advances event time to `watermark` (no record with a smaller time is expected any more,
    /// beyond the allowed lateness): fires and evicts what is due. Watermarks never go back;
    /// a smaller value than the last one is ignored.
    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<Self::Out, Self::In>);

    /// Encodes the complete state (open windows, buffers, last watermark) for a checkpoint.
    fn snapshot(&self) -> Result<Vec<u8>, StreamError>;

    /// Replaces the state with a snapshot produced by [`Operator::snapshot`].
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StreamError>;
}

/// A cheap, time-only test of whether a record could be routed to the late side output.
///
/// Stateless front ends (the [`dsl`](crate::dsl) chains) transform records before the
/// stateful operator sees them; when the operator says a record *may* be late they keep a
/// copy of the original so that the late side output receives the record as it came in.
/// Implementations must be conservative: if `may_be_late(t)` is `false`, a record at `t`
/// passed to [`Operator::on_record`] before the next watermark is never reported late.
pub trait LateHint {
    /// Whether a record with event time `time` could be late at the current watermark.
    fn may_be_late(&self, time: Timestamp) -> bool;
}
