//! A small ledger aggregate used by the repository tests and benches.
#![allow(dead_code)]

use attest_cqrs::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub balance: i64,
    pub entries: u64,
    /// Order-sensitive digest of every entry: replaying in another order gives another value.
    pub digest: u64,
    pub closed: bool,
}

#[derive(Debug, Clone)]
pub enum LedgerCommand {
    Deposit(i64),
    Withdraw(i64),
    /// Many deposits at once (one event each).
    DepositMany(Vec<i64>),
    Close,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LedgerEvent {
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
    Closed,
}

impl DomainEvent for LedgerEvent {
    fn event_type(&self) -> &'static str {
        match self {
            LedgerEvent::Deposited { .. } => "FundsDeposited",
            LedgerEvent::Withdrawn { .. } => "FundsWithdrawn",
            LedgerEvent::Closed => "LedgerClosed",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LedgerError {
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds { balance: i64, asked: i64 },
    #[error("ledger is closed")]
    Closed,
    #[error("amount must be positive, got {0}")]
    NonPositive(i64),
}

impl Aggregate for Ledger {
    const CATEGORY: &'static str = "ledger";
    type Command = LedgerCommand;
    type Event = LedgerEvent;
    type Error = LedgerError;

    fn handle(&self, command: LedgerCommand) -> Result<Vec<LedgerEvent>, LedgerError> {
        if self.closed {
            return Err(LedgerError::Closed);
        }
        match command {
            LedgerCommand::Deposit(a) if a <= 0 => Err(LedgerError::NonPositive(a)),
            LedgerCommand::Deposit(a) => Ok(vec![LedgerEvent::Deposited { amount: a }]),
            LedgerCommand::Withdraw(a) if a <= 0 => Err(LedgerError::NonPositive(a)),
            LedgerCommand::Withdraw(a) if a > self.balance => Err(LedgerError::InsufficientFunds {
                balance: self.balance,
                asked: a,
            }),
            LedgerCommand::Withdraw(a) => Ok(vec![LedgerEvent::Withdrawn { amount: a }]),
            LedgerCommand::DepositMany(v) => {
                if let Some(&bad) = v.iter().find(|&&a| a <= 0) {
                    return Err(LedgerError::NonPositive(bad));
                }
                Ok(v.into_iter()
                    .map(|amount| LedgerEvent::Deposited { amount })
                    .collect())
            }
            LedgerCommand::Close => Ok(vec![LedgerEvent::Closed]),
        }
    }

    fn apply(&mut self, event: &LedgerEvent) {
        let (delta, tag) = match event {
            LedgerEvent::Deposited { amount } => (*amount, 1u64),
            LedgerEvent::Withdrawn { amount } => (-*amount, 2),
            LedgerEvent::Closed => {
                self.closed = true;
                (0, 3)
            }
        };
        self.balance += delta;
        self.entries += 1;
        self.digest = self
            .digest
            .wrapping_mul(0x100_0000_01B3)
            .wrapping_add((delta as u64) ^ (tag << 60));
    }
}

/// The same ledger with a changed state meaning (balance in cents) but the same field names:
/// an old snapshot would deserialize fine and be wrong, so only the state-version tag can
/// keep it out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerV2 {
    pub balance: i64,
    pub entries: u64,
    pub digest: u64,
    pub closed: bool,
}

impl Aggregate for LedgerV2 {
    const CATEGORY: &'static str = "ledger";
    const STATE_VERSION: u32 = 2;
    type Command = LedgerCommand;
    type Event = LedgerEvent;
    type Error = LedgerError;
    fn handle(&self, _command: LedgerCommand) -> Result<Vec<LedgerEvent>, LedgerError> {
        Ok(vec![])
    }
    fn apply(&mut self, event: &LedgerEvent) {
        match event {
            LedgerEvent::Deposited { amount } => self.balance += amount * 100,
            LedgerEvent::Withdrawn { amount } => self.balance -= amount * 100,
            LedgerEvent::Closed => self.closed = true,
        }
        self.entries += 1;
    }
}
