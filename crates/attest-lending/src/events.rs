//! Event payloads of the lending domain, public so that the server and the auditor decode
//! them from the log.
//!
//! Streams and types:
//! - `loanapplication-<decision_id>`: [`LoanApplicationSubmitted`], [`LoanDecisionMade`]
//!   (appended together, atomically), later [`LoanOutcomeObserved`];
//! - `model-<name>`: [`ModelVersionRegistered`], [`ModelVersionActivated`] (the registry);
//! - audit streams (written by the auditor): [`FairnessThresholdBreached`], [`DriftDetected`],
//!   [`IncidentOpened`].
//!
//! Every payload is JSON; the enum [`LoanEvent`] is the aggregate's event type and
//! serializes *untagged*, so each stored payload is exactly the struct's JSON and can be
//! decoded with `RecordedEvent::decode_json::<LoanDecisionMade>()` once the event type is known.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Event type of [`LoanApplicationSubmitted`].
pub const LOAN_APPLICATION_SUBMITTED: &str = "LoanApplicationSubmitted";
/// Event type of [`LoanDecisionMade`].
pub const LOAN_DECISION_MADE: &str = "LoanDecisionMade";
/// Event type of [`LoanOutcomeObserved`].
pub const LOAN_OUTCOME_OBSERVED: &str = "LoanOutcomeObserved";
/// Event type of [`ModelVersionRegistered`].
pub const MODEL_VERSION_REGISTERED: &str = "ModelVersionRegistered";
/// Event type of [`ModelVersionActivated`].
pub const MODEL_VERSION_ACTIVATED: &str = "ModelVersionActivated";
/// Event type of [`FairnessThresholdBreached`].
pub const FAIRNESS_THRESHOLD_BREACHED: &str = "FairnessThresholdBreached";
/// Event type of [`DriftDetected`].
pub const DRIFT_DETECTED: &str = "DriftDetected";
/// Event type of [`IncidentOpened`].
pub const INCIDENT_OPENED: &str = "IncidentOpened";

/// Stream category of loan applications (`loanapplication-<decision_id>`).
pub const LOAN_CATEGORY: &str = "loanapplication";
/// Stream category of registered models (`model-<name>`).
pub const MODEL_CATEGORY: &str = "model";

/// Model id and version, as recorded in every decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelRef {
    /// Registry name of the model (e.g. `credit`).
    pub id: String,
    /// Version within the name, from 1.
    pub version: u32,
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@v{}", self.id, self.version)
    }
}

/// Approve or decline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Predicted probability of default below the threshold.
    Approve,
    /// Predicted probability of default at or above the threshold.
    Decline,
}

/// What happened to a granted (or hypothetical) loan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The loan was repaid (label 0).
    Repaid,
    /// The borrower defaulted (label 1).
    Defaulted,
}

impl Outcome {
    /// The training label: 1 for default, 0 for repaid.
    pub fn label(self) -> u8 {
        match self {
            Outcome::Repaid => 0,
            Outcome::Defaulted => 1,
        }
    }
}

/// A protected attribute sealed with its subject's key (ChaCha20-Poly1305).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedAttributes {
    /// Id of the key used (the applicant id).
    pub key_id: String,
    /// Base64 (standard) of `nonce (12 bytes) || ciphertext+tag`.
    pub ciphertext: String,
}

/// One feature's SHAP contribution as recorded in a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedContribution {
    /// Feature name.
    pub feature: String,
    /// Its value in the application.
    pub value: f64,
    /// SHAP value in log-odds of default.
    pub contribution: f64,
}

/// A loan application arrived (first event of its stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoanApplicationSubmitted {
    /// The decision id (the stream's id part).
    pub decision_id: String,
    /// The applicant (also the key-vault subject).
    pub applicant_id: String,
    /// Model input features, by name, as validated.
    pub features: serde_json::Map<String, serde_json::Value>,
    /// Protected attributes sealed with the applicant's key; `None` when none were given.
    pub protected: Option<SealedAttributes>,
    /// SHA-256 (hex) of the canonical request, to recognise idempotent retries.
    pub request_hash: String,
    /// Idempotency key the client sent, if any.
    pub idempotency_key: Option<String>,
    /// When the service received it.
    pub submitted_at: DateTime<Utc>,
}

/// The model decided (appended atomically with [`LoanApplicationSubmitted`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoanDecisionMade {
    /// The decision id.
    pub decision_id: String,
    /// The applicant.
    pub applicant_id: String,
    /// Model id and version that decided.
    pub model: ModelRef,
    /// Raw score (log-odds of default).
    pub score: f64,
    /// Predicted probability of default.
    pub probability: f64,
    /// Approve or decline.
    pub decision: Decision,
    /// Decline when `probability >= threshold`.
    pub threshold: f64,
    /// The three largest |SHAP| contributions, largest first.
    pub top_contributions: Vec<RecordedContribution>,
    /// W3C trace id (32 hex digits) of the request.
    pub trace_id: String,
    /// When it was decided.
    pub decided_at: DateTime<Utc>,
}

/// The real outcome became known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoanOutcomeObserved {
    /// The decision id.
    pub decision_id: String,
    /// What happened.
    pub outcome: Outcome,
    /// When it was recorded.
    pub observed_at: DateTime<Utc>,
}

/// Format of a model artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFormat {
    /// XGBoost JSON (`save_model("m.json")`).
    Xgboost,
    /// LightGBM text model.
    Lightgbm,
    /// attest-ai's linear/logistic JSON.
    Linear,
}

impl std::str::FromStr for ModelFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "xgboost" => Ok(ModelFormat::Xgboost),
            "lightgbm" => Ok(ModelFormat::Lightgbm),
            "linear" => Ok(ModelFormat::Linear),
            other => Err(format!(
                "unknown model format {other:?} (expected xgboost, lightgbm or linear)"
            )),
        }
    }
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelFormat::Xgboost => "xgboost",
            ModelFormat::Lightgbm => "lightgbm",
            ModelFormat::Linear => "linear",
        })
    }
}

/// Kind of value a feature takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// Any finite number in range.
    Number,
    /// A whole number in range (codes of categories included).
    Integer,
}

/// One model input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// Name (the JSON key in requests).
    pub name: String,
    /// Number or integer.
    pub kind: FeatureKind,
    /// Smallest accepted value (inclusive).
    pub min: f64,
    /// Largest accepted value (inclusive).
    pub max: f64,
    /// What it means.
    pub description: String,
}

/// A version of a model was added to the registry (stream `model-<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersionRegistered {
    /// Registry name.
    pub name: String,
    /// Version (1 + the number of earlier versions).
    pub version: u32,
    /// Artifact format.
    pub format: ModelFormat,
    /// The artifact, base64 (standard).
    pub artifact: String,
    /// SHA-256 (hex) of the artifact bytes.
    pub sha256: String,
    /// Ordered input features with ranges.
    pub features: Vec<FeatureSpec>,
    /// Decline when the predicted probability of default is at least this.
    pub threshold: f64,
    /// Reference sample (rows in feature order) for drift and explanation backgrounds.
    pub reference: Vec<Vec<f64>>,
    /// Free-form provenance (e.g. "attest demo train --seed 42 --rows 20000").
    pub description: String,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
}

/// A version became the one that decides (stream `model-<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersionActivated {
    /// Registry name.
    pub name: String,
    /// The version now active.
    pub version: u32,
    /// When.
    pub activated_at: DateTime<Utc>,
}

/// A fairness metric crossed its threshold with enough evidence (written by the auditor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FairnessThresholdBreached {
    /// The model audited.
    pub model: ModelRef,
    /// Sensitive attribute (`sex`, `race`, `age_band`).
    pub attribute: String,
    /// Metric name (e.g. `demographic_parity_difference`).
    pub metric: String,
    /// Observed value.
    pub value: f64,
    /// Confidence interval (lower, upper).
    pub interval: (f64, f64),
    /// Configured threshold.
    pub threshold: f64,
    /// Window description (e.g. `1h tumbling ending 2026-01-01T10:00:00Z`).
    pub window: String,
    /// Samples in the window.
    pub samples: u64,
    /// When detected.
    pub detected_at: DateTime<Utc>,
}

/// Input or prediction drift crossed its threshold (written by the auditor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftDetected {
    /// The model audited.
    pub model: ModelRef,
    /// Feature name, or `prediction`.
    pub feature: String,
    /// Statistic (`psi`, `ks`).
    pub statistic: String,
    /// Observed value.
    pub value: f64,
    /// Configured threshold.
    pub threshold: f64,
    /// Samples compared.
    pub samples: u64,
    /// When detected.
    pub detected_at: DateTime<Utc>,
}

/// An incident was opened for a breach (written by the auditor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentOpened {
    /// Incident id.
    pub incident_id: String,
    /// The model concerned.
    pub model: ModelRef,
    /// Why (human text).
    pub reason: String,
    /// Event type that triggered it.
    pub trigger: String,
    /// When.
    pub opened_at: DateTime<Utc>,
}

/// Events of the `LoanApplication` aggregate (stored untagged: each payload is its struct).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LoanEvent {
    /// See [`LoanDecisionMade`] (listed first: it has the most required fields, so untagged
    /// decoding tries it before the others).
    DecisionMade(LoanDecisionMade),
    /// See [`LoanApplicationSubmitted`].
    Submitted(LoanApplicationSubmitted),
    /// See [`LoanOutcomeObserved`].
    OutcomeObserved(LoanOutcomeObserved),
}

impl attest_cqrs::DomainEvent for LoanEvent {
    fn event_type(&self) -> &'static str {
        match self {
            LoanEvent::Submitted(_) => LOAN_APPLICATION_SUBMITTED,
            LoanEvent::DecisionMade(_) => LOAN_DECISION_MADE,
            LoanEvent::OutcomeObserved(_) => LOAN_OUTCOME_OBSERVED,
        }
    }
}
