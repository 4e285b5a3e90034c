//! The write side of Attest: a small [`Aggregate`] trait and a [`Repository`] that loads an
//! aggregate from its latest snapshot plus later events, saves new events with the expected
//! version, and retries a command when another writer got there first.
//!
//! ```ignore
//! #[derive(Default, Serialize, Deserialize)]
//! struct Account { balance: i64 }
//!
//! impl Aggregate for Account {
//!     const CATEGORY: &'static str = "account";
//!     type Command = AccountCommand;
//!     type Event = AccountEvent;
//!     type Error = AccountError;
//!     fn handle(&self, cmd: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> { ... }
//!     fn apply(&mut self, event: &AccountEvent) { ... }
//! }
//!
//! let repo = Repository::<Account>::new(store).with_snapshots(snapshots);
//! repo.execute("42", AccountCommand::Deposit(10), Metadata::default()).await?;
//! ```

mod aggregate;
pub mod projection;
mod repository;

pub use aggregate::{Aggregate, DomainEvent};
pub use repository::{CommandOutcome, Loaded, RepoError, Repository};
