//! The audit state behind `GET /v1/audit/fairness` and `GET /v1/audit/drift`.
//!
//! The HTTP layer does not compute audits: an auditor running beside it implements
//! [`AuditSource`] and is installed in the [`AuditHandle`] of the [`crate::AppState`] (it may be
//! installed after the server started). Until then both routes answer 503 `audit_unavailable`.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use thiserror::Error;

/// Why audit state cannot be served.
#[derive(Debug, Clone, Error)]
pub enum AuditError {
    /// No auditor is running, or it has no state yet (HTTP 503 `audit_unavailable`).
    #[error("audit unavailable: {0}")]
    Unavailable(String),
    /// The auditor failed (HTTP 500).
    #[error("audit failed: {0}")]
    Failed(String),
}

/// A source of current audit state, as JSON documents (per model and group).
#[async_trait]
pub trait AuditSource: Send + Sync + 'static {
    /// Current fairness metrics.
    async fn fairness(&self) -> Result<serde_json::Value, AuditError>;
    /// Current drift metrics.
    async fn drift(&self) -> Result<serde_json::Value, AuditError>;
}

/// A slot holding the installed [`AuditSource`], if any. Cheap to clone; all clones share it.
#[derive(Clone, Default)]
pub struct AuditHandle {
    slot: Arc<RwLock<Option<Arc<dyn AuditSource>>>>,
}

impl std::fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditHandle")
            .field("installed", &self.get().is_some())
            .finish()
    }
}

impl AuditHandle {
    /// Installs (or replaces) the audit source.
    pub fn install(&self, source: Arc<dyn AuditSource>) {
        *self.slot.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// The installed source, if any.
    pub fn get(&self) -> Option<Arc<dyn AuditSource>> {
        self.slot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Current fairness state, or [`AuditError::Unavailable`] when nothing is installed.
    pub async fn fairness(&self) -> Result<serde_json::Value, AuditError> {
        match self.get() {
            Some(s) => s.fairness().await,
            None => Err(AuditError::Unavailable("no auditor is running".into())),
        }
    }

    /// Current drift state, or [`AuditError::Unavailable`] when nothing is installed.
    pub async fn drift(&self) -> Result<serde_json::Value, AuditError> {
        match self.get() {
            Some(s) => s.drift().await,
            None => Err(AuditError::Unavailable("no auditor is running".into())),
        }
    }
}
