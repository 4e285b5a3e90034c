//! Errors: [`ApiError`] is what a handler returns (rendered as the JSON error body), and
//! [`ServerError`] is what starting the server or managing keys can fail with.

use attest_lending::{FieldError, FieldErrorCode, LendingError};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

/// An HTTP error response: `{"error": {"code", "message", "fields": [...]}}`.
///
/// `code` is stable and machine-readable; `fields` lists field-level problems (only non-empty
/// for 422 validation errors).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable machine code, e.g. `validation_failed`, `not_found`, `unauthorized`.
    pub code: String,
    /// A sentence for humans.
    pub message: String,
    /// Field-level errors (422 only).
    pub fields: Vec<FieldError>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    fields: &'a [FieldError],
}

impl ApiError {
    /// An error with a status, code and message and no field errors.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// 422 `validation_failed` with field-level errors.
    pub fn validation(fields: Vec<FieldError>) -> Self {
        let message = if fields.len() == 1 {
            format!("invalid request: {}", fields[0].message)
        } else {
            format!("invalid request: {} field errors", fields.len())
        };
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed".into(),
            message,
            fields,
        }
    }

    /// 422 with one field error.
    pub fn field(field: &str, code: FieldErrorCode, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, code, message)])
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 400 with a code.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 500 `internal`; the cause is logged, not returned.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (see the server log)",
        )
    }

    /// The JSON body of this error.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(Body {
            error: Inner {
                code: &self.code,
                message: &self.message,
                fields: &self.fields,
            },
        })
        // Serializing strings and a derived struct cannot fail.
        .unwrap_or(serde_json::Value::Null)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<LendingError> for ApiError {
    fn from(e: LendingError) -> Self {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %e, code = e.code(), "lending service failed");
        }
        match e {
            LendingError::Validation(fields) => ApiError::validation(fields),
            other => ApiError::new(status, other.code(), other.to_string()),
        }
    }
}

/// Why the server could not start, or an API-key operation failed.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Binding or serving the socket failed.
    #[error("io on {addr}: {source}")]
    Io {
        /// The address involved.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Authentication is required (non-loopback bind or `--require-auth`) but no active API key
    /// exists.
    #[error("refusing to serve on {bind} without API keys: authentication is required {why}; create one with `attest keys create --scopes decide,read`")]
    NoApiKeys {
        /// The bind address.
        bind: String,
        /// Why auth is required.
        why: &'static str,
    },
    /// The server was asked to bind a non-loopback address with authentication off.
    #[error("refusing to serve on non-loopback address {0} without authentication")]
    AuthDisabledOnPublicAddress(String),
    /// The API-key table could not be opened, read or written.
    #[error("api key store: {0}")]
    KeyStore(String),
    /// A bad argument (unknown scope, empty scope list, bad schema name, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The lending service failed.
    #[error("lending: {0}")]
    Lending(#[from] LendingError),
}

impl ServerError {
    /// A stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            ServerError::Io { .. } => "io",
            ServerError::NoApiKeys { .. } => "no_api_keys",
            ServerError::AuthDisabledOnPublicAddress(_) => "auth_required",
            ServerError::KeyStore(_) => "key_store",
            ServerError::InvalidArgument(_) => "invalid_argument",
            ServerError::Lending(e) => e.code(),
        }
    }
}
