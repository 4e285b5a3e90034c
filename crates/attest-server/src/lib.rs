//! Attest's HTTP API (axum): lending decisions, explanations and outcomes, audit state,
//! Prometheus metrics, health, and the OpenAPI document, behind scoped API keys.
//!
//! | route | scope |
//! |---|---|
//! | `POST /v1/decisions` (`Idempotency-Key`, `traceparent` headers) | decide |
//! | `GET /v1/decisions/{id}` | read |
//! | `GET /v1/decisions/{id}/explanation?method=tree\|kernel\|lime` | read |
//! | `POST /v1/decisions/{id}/outcome` (`{"outcome": "repaid"\|"defaulted"}`) | decide |
//! | `DELETE /v1/applicants/{applicant_id}/protected` (crypto-shredding) | admin |
//! | `GET /v1/audit/fairness`, `GET /v1/audit/drift` | read |
//! | `GET /metrics`, `/healthz`, `/readyz`, `/openapi.json` | none |
//!
//! `admin` grants every scope. Errors are `{"error": {"code", "message", "fields"}}` with a
//! stable code; validation problems are 422 with one entry per field; malformed JSON 400, a body
//! over the limit (64 KiB by default) 413, a non-JSON content type 415, unknown routes 404.
//!
//! # Extending
//! [`AppState`] carries a shared Prometheus [`prometheus_client::registry::Registry`]
//! ([`AppState::registry`]) and an [`audit::AuditHandle`] where an auditor installs itself.
//! [`ApiBuilder::merge`] adds routers (e.g. dashboard pages), which get the same trace,
//! metrics and body-limit layers; [`AppState::protect`] puts them behind a scope.
//!
//! ```no_run
//! # async fn run(state: attest_server::AppState) -> Result<(), attest_server::ServerError> {
//! use attest_server::{ApiBuilder, Server};
//! let router = ApiBuilder::new(state.clone()).build();
//! let server = Server::bind("127.0.0.1:7878".parse().unwrap(), state.policy(), router).await?;
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod app;
pub mod audit;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
mod routes;
pub mod trace;

pub use app::{ApiBuilder, AppState, AppStateBuilder, Principal, Server};
pub use auth::{ApiKeyInfo, AuthPolicy, CreatedKey, KeyStore, Scope};
pub use error::{ApiError, ServerError};
