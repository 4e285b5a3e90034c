//! The asynchronous fairness and drift auditor, on the attest-stream engine — never on the
//! request path.
//!
//! # Dataflow
//! ```text
//! global log ($ce-loanapplication) ─► AuditSource ─► Auditor operator ─► AuditSink
//!   LoanApplicationSubmitted          resolves groups   join decision ⋈     breach events,
//!   LoanDecisionMade                  (key vault) and   outcome (≤ 365 d),  incidents,
//!   LoanOutcomeObserved               drift bins        1 h tumbling +      closed windows
//!                                     (reference)       24 h sliding panes
//! ```
//! Closed windows come from attest-stream's `TumblingWindows` and pane-based `HoppingWindows`
//! (two-stack aggregation); the open windows for the live view from [`window::AuditWindows`].
//! The job runs on `attest_stream::runtime::Job`: operator state and the input position are
//! checkpointed together (SQLite next to the data, or PostgreSQL), outputs are written before
//! the checkpoint that covers them and carry deterministic ids, so a restart or a second
//! process never double counts and never duplicates a breach. With PostgreSQL, one process
//! owns the job through a partition lease (1 partition); the others serve the persisted
//! snapshot.
//!
//! # Conventions
//! - Positive prediction = **approve**; positive label = **repaid**. TPR is the approval rate
//!   of applicants who repaid, FPR the approval rate of applicants who defaulted.
//! - Decisions count in the window of their decision time; labelled decisions in the window
//!   of the time their outcome was observed (outcomes arrive months later).
//! - Protected attributes come from the key vault when a decision or outcome is read; erased
//!   subjects, undeclared attributes and unreadable seals count as group `unknown`, which
//!   takes no part in disparities by default. The operator state never holds an attribute in
//!   clear.
//! - The breach rule is in [`evaluate`]; episodes (one breach and one incident per episode)
//!   in [`operator`].

pub mod evaluate;
pub mod job;
pub mod join;
pub mod metrics;
pub mod operator;
pub mod persist;
pub mod record;
pub mod reference;
pub mod sink;
pub mod source;
pub mod state;
pub mod stats;
pub mod window;

pub use evaluate::{Thresholds, WindowAudit};
pub use job::{spawn_auditor, AuditorConfig, AuditorHandle, Backend};
pub use metrics::AuditMetrics;
pub use operator::{AuditInput, AuditOutput, Auditor, Breach, BreachKind, DecisionRef, LiveView};
pub use reference::{ReferenceProfile, ReferenceSource, StoreReferences};
pub use state::AuditState;
pub use window::{WindowConfig, WindowKind, WindowSpan};

/// Why the auditor failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A configuration value is invalid.
    #[error("invalid audit configuration: {0}")]
    Config(String),
    /// A lending event could not be decoded.
    #[error("cannot decode {event_type} at position {position}: {reason}")]
    Decode {
        /// Global position of the event.
        position: u64,
        /// Its type.
        event_type: String,
        /// Why.
        reason: String,
    },
    /// A model's reference sample is unusable.
    #[error("reference sample: {0}")]
    Reference(String),
    /// The stream engine failed (source, checkpoint, lease).
    #[error(transparent)]
    Stream(#[from] attest_stream::StreamError),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] attest_store::StoreError),
    /// The lending domain (key vault, registry) failed.
    #[error(transparent)]
    Lending(#[from] crate::LendingError),
    /// Reading or writing the persisted audit snapshot failed.
    #[error("audit snapshot: {0}")]
    Snapshot(String),
}

impl AuditError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AuditError::Config(_) => "audit_config",
            AuditError::Decode { .. } => "audit_decode",
            AuditError::Reference(_) => "audit_reference",
            AuditError::Stream(_) => "audit_stream",
            AuditError::Store(e) => e.code(),
            AuditError::Lending(e) => e.code(),
            AuditError::Snapshot(_) => "audit_snapshot",
        }
    }
}
