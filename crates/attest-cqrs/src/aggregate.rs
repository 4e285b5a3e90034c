use serde::de::DeserializeOwned;
use serde::Serialize;

/// An event of a domain, named for what happened (`LoanApplicationSubmitted`, not
/// `LoanUpdated`). Payloads are stored as JSON.
pub trait DomainEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The event type stored in the envelope.
    fn event_type(&self) -> &'static str;
}

/// A consistency boundary: decides on commands, evolves by events.
///
/// `handle` must be pure (no I/O, no clock) so that a command retried after a conflict decides
/// again on the fresh state. `apply` must be total: every event that `handle` can emit must be
/// applicable, because the log is replayed forever.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Stream category; an aggregate with id `42` lives in stream `{CATEGORY}-42`.
    const CATEGORY: &'static str;
    /// Shape version of the serialized state. Bump it when the state type changes: snapshots
    /// tagged with another version are ignored and the state is rebuilt from the log.
    const STATE_VERSION: u32 = 1;
    /// Take a snapshot every this many events (0 disables). Repositories may override it.
    const SNAPSHOT_EVERY: u64 = 100;

    /// What callers ask for.
    type Command: Send;
    /// What happened.
    type Event: DomainEvent;
    /// Why a command was refused (a business rule, not an infrastructure failure).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides: the events a command produces on the current state, or a refusal.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Evolves the state by one event.
    fn apply(&mut self, event: &Self::Event);
}
