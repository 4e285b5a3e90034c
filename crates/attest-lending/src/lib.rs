//! Attest's reference domain: loan applications decided by a registered model.
//!
//! - [`service::LendingService`]: validate → score → TreeSHAP top-3 → append
//!   `LoanApplicationSubmitted` + `LoanDecisionMade` atomically, with idempotency keys;
//!   explanations by tree / kernel / lime; outcomes; erasure of protected attributes;
//! - [`domain`]: the `LoanApplication` aggregate;
//! - [`events`]: event payloads, public for the server and the auditor;
//! - [`vault`]: per-subject keys for crypto-shredding (SQLite file or PostgreSQL table);
//! - [`registry`]: versioned models stored as events in stream `model-<name>`;
//! - [`synth`]: a seeded synthetic lending data generator with an injectable bias;
//! - [`default_model`]: the built-in credit model, trained deterministically from [`synth`].

pub mod audit;
pub mod default_model;
pub mod domain;
pub mod error;
pub mod events;
pub mod incident;
pub mod registry;
pub mod schema;
pub mod service;
pub mod synth;
pub mod vault;

pub use error::{FieldError, FieldErrorCode, LendingError};
pub use events::{Decision, FeatureKind, FeatureSpec, ModelFormat, ModelRef, Outcome};
pub use schema::FeatureSchema;
pub use service::{
    ContributionView, DecideOptions, DecisionRequest, DecisionResponse, DecisionView,
    ExplainMethod, ExplanationView, LendingConfig, LendingService, OutcomeView,
    ProtectedAttributes, ProtectedView,
};
