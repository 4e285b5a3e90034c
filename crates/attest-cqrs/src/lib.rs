//! The write and read sides of Attest.
//!
//! Write side: a small [`Aggregate`] trait and a [`Repository`] that loads an aggregate from
//! its latest snapshot plus later events, saves new events with the expected version, and
//! retries a command when another writer got there first. Read side: [`projection`], which
//! folds the global log into read models with exactly-once checkpoints.
//!
//! ```
//! use attest_core::Metadata;
//! use attest_cqrs::{Aggregate, DomainEvent, Repository};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Account { balance: i64 }
//!
//! #[derive(Clone)]
//! enum AccountCommand { Deposit(i64) }
//!
//! #[derive(Serialize, Deserialize)]
//! enum AccountEvent { Deposited { amount: i64 } }
//!
//! impl DomainEvent for AccountEvent {
//!     fn event_type(&self) -> &'static str { "FundsDeposited" }
//! }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("amount must be positive")]
//! struct NonPositive;
//!
//! impl Aggregate for Account {
//!     const CATEGORY: &'static str = "account";
//!     type Command = AccountCommand;
//!     type Event = AccountEvent;
//!     type Error = NonPositive;
//!     fn handle(&self, cmd: AccountCommand) -> Result<Vec<AccountEvent>, NonPositive> {
//!         match cmd {
//!             AccountCommand::Deposit(a) if a > 0 => Ok(vec![AccountEvent::Deposited { amount: a }]),
//!             AccountCommand::Deposit(_) => Err(NonPositive),
//!         }
//!     }
//!     fn apply(&mut self, event: &AccountEvent) {
//!         match event { AccountEvent::Deposited { amount } => self.balance += amount }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("events.db");
//! let store = attest_store::sqlite::SqliteStore::open(&path, Default::default())?;
//! let snapshots = std::sync::Arc::new(attest_store::sqlite::SqliteSnapshotStore::open(&path)?);
//! let repo = Repository::<Account>::new(store).with_snapshots(snapshots);
//! repo.execute("42", AccountCommand::Deposit(10), Metadata::default()).await?;
//! assert_eq!(repo.load("42").await?.state.balance, 10);
//! # Ok(()) }
//! ```

mod aggregate;
pub mod projection;
mod repository;

pub use aggregate::{Aggregate, DomainEvent};
pub use repository::{CommandOutcome, Loaded, RepoError, Repository};
