//! Errors of the lending domain, each with a stable machine code and an HTTP status.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why one field of a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldErrorCode {
    /// A required field is absent (or `null`).
    Missing,
    /// The field has the wrong JSON type (e.g. a string where a number is expected).
    WrongType,
    /// A number outside the feature's documented range, or not an integer where one is needed.
    OutOfRange,
    /// A field the schema does not know.
    UnknownField,
    /// Present and well-typed but otherwise malformed (bad characters, too long, ...).
    Invalid,
}

impl FieldErrorCode {
    /// The code as written in responses.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldErrorCode::Missing => "missing",
            FieldErrorCode::WrongType => "wrong_type",
            FieldErrorCode::OutOfRange => "out_of_range",
            FieldErrorCode::UnknownField => "unknown_field",
            FieldErrorCode::Invalid => "invalid",
        }
    }
}

/// One field-level validation error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `features.annual_income` or `applicant_id`.
    pub field: String,
    /// What is wrong.
    pub code: FieldErrorCode,
    /// A sentence for humans.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, code: FieldErrorCode, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            code,
            message: message.into(),
        }
    }
}

/// Why a lending operation failed.
#[derive(Debug, Error)]
pub enum LendingError {
    /// The request is invalid; one entry per offending field (HTTP 422).
    #[error("invalid request: {}", summarize(.0))]
    Validation(Vec<FieldError>),
    /// The decision, model or subject does not exist (HTTP 404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The idempotency key was already used with a different request body (HTTP 409).
    #[error("idempotency key reused with a different request: {0}")]
    IdempotencyConflict(String),
    /// The command contradicts the current state, e.g. an outcome recorded twice (HTTP 409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A caller-supplied argument outside a request body is invalid (HTTP 400).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The event store failed (HTTP 503 when transient, else 500).
    #[error("event store: {0}")]
    Store(#[from] attest_store::StoreError),
    /// A model could not be loaded, trained or evaluated (HTTP 500).
    #[error("model: {0}")]
    Model(#[from] attest_ai::AiError),
    /// The model registry holds something unusable (HTTP 500).
    #[error("model registry: {0}")]
    Registry(String),
    /// Sealing or opening protected attributes failed (HTTP 500).
    #[error("crypto: {0}")]
    Crypto(String),
    /// The key vault's database failed (HTTP 503).
    #[error("key vault: {0}")]
    Vault(String),
    /// A stored event could not be decoded or encoded (HTTP 500).
    #[error("event codec: {0}")]
    Codec(String),
    /// Not available in this build or configuration (HTTP 503).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

fn summarize(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{} ({}): {}", e.field, e.code.as_str(), e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl LendingError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            LendingError::Validation(_) => "validation_failed",
            LendingError::NotFound(_) => "not_found",
            LendingError::IdempotencyConflict(_) => "idempotency_conflict",
            LendingError::Conflict(_) => "conflict",
            LendingError::InvalidArgument(_) => "invalid_argument",
            LendingError::Store(e) => e.code(),
            LendingError::Model(e) => e.code(),
            LendingError::Registry(_) => "model_registry",
            LendingError::Crypto(_) => "crypto",
            LendingError::Vault(_) => "key_vault_unavailable",
            LendingError::Codec(_) => "event_codec",
            LendingError::Unavailable(_) => "unavailable",
        }
    }

    /// The HTTP status this error maps to.
    pub fn http_status(&self) -> u16 {
        match self {
            LendingError::Validation(_) => 422,
            LendingError::NotFound(_) => 404,
            LendingError::IdempotencyConflict(_) | LendingError::Conflict(_) => 409,
            LendingError::InvalidArgument(_) => 400,
            LendingError::Store(e) if e.is_transient() => 503,
            LendingError::Vault(_) | LendingError::Unavailable(_) => 503,
            LendingError::Store(_)
            | LendingError::Model(_)
            | LendingError::Registry(_)
            | LendingError::Crypto(_)
            | LendingError::Codec(_) => 500,
        }
    }

    /// The field errors of a [`LendingError::Validation`], else empty.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            LendingError::Validation(f) => f,
            _ => &[],
        }
    }

    /// One validation error.
    pub fn field(
        field: impl Into<String>,
        code: FieldErrorCode,
        message: impl Into<String>,
    ) -> Self {
        LendingError::Validation(vec![FieldError::new(field, code, message)])
    }
}
