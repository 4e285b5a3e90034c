//! The lending decision service: what the HTTP API calls.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use attest_ai::explain::kernel::{Background, KernelConfig, KernelExplainer};
use attest_ai::explain::lime::{LimeConfig, LimeExplainer};
use attest_ai::{Explanation, Output};
use attest_core::Metadata;
use attest_cqrs::{Aggregate, RepoError, Repository};
use attest_store::StoreError;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::{LoanApplication, LoanCommand, LoanRejection};
use crate::error::{FieldError, FieldErrorCode, LendingError};
pub use crate::events::{Decision, ModelRef, Outcome};
use crate::events::{LoanApplicationSubmitted, LoanDecisionMade, RecordedContribution};
use crate::registry::{LoadedModel, Registry, SharedModel};
use crate::schema::FeatureSchema;
use crate::vault::KeyVault;

/// Where the lending domain keeps its state.
#[derive(Clone)]
pub struct LendingConfig {
    /// The event store (decisions and the model registry live in it).
    pub store: attest_store::DynStore,
    /// Data directory: the embedded key vault file `keys.db` lives here.
    pub data_dir: PathBuf,
    /// When set, the key vault is a table in this PostgreSQL database instead of `keys.db`.
    pub postgres_url: Option<String>,
    /// PostgreSQL schema of the key vault table (default `attest`).
    pub pg_schema: Option<String>,
    /// Registry name of the model that decides (default `credit`).
    pub model_name: String,
}

impl LendingConfig {
    /// Embedded setup: key vault in `<data_dir>/keys.db`, model `credit`.
    pub fn embedded(store: attest_store::DynStore, data_dir: impl Into<PathBuf>) -> Self {
        LendingConfig {
            store,
            data_dir: data_dir.into(),
            postgres_url: None,
            pg_schema: None,
            model_name: crate::default_model::DEFAULT_MODEL_NAME.to_string(),
        }
    }

    /// Scale-out setup: key vault in table `<pg_schema>.subject_keys` at `postgres_url`.
    pub fn postgres(
        store: attest_store::DynStore,
        data_dir: impl Into<PathBuf>,
        postgres_url: impl Into<String>,
        pg_schema: impl Into<String>,
    ) -> Self {
        LendingConfig {
            postgres_url: Some(postgres_url.into()),
            pg_schema: Some(pg_schema.into()),
            ..Self::embedded(store, data_dir)
        }
    }
}

impl std::fmt::Debug for LendingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LendingConfig")
            .field("data_dir", &self.data_dir)
            .field("postgres", &self.postgres_url.is_some())
            .field("pg_schema", &self.pg_schema)
            .field("model_name", &self.model_name)
            .finish_non_exhaustive()
    }
}

/// Sensitive attributes: used for auditing only, never as model input; stored sealed with a
/// per-applicant key so that they can be erased.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectedAttributes {
    /// Sex as declared (free text, at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<String>,
    /// Race / ethnicity as declared (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub race: Option<String>,
    /// Age band, e.g. `18-25` (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_band: Option<String>,
}

impl ProtectedAttributes {
    /// Whether no attribute is set.
    pub fn is_empty(&self) -> bool {
        self.sex.is_none() && self.race.is_none() && self.age_band.is_none()
    }
}

/// A request for a decision (the body of `POST /v1/decisions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// The applicant: 1 to 128 characters of `[A-Za-z0-9_.-]`.
    pub applicant_id: String,
    /// Model input features by name; validated against [`LendingService::feature_schema`].
    pub features: Map<String, Value>,
    /// Sensitive attributes (optional; never model input).
    #[serde(default)]
    pub protected: ProtectedAttributes,
}

/// Longest accepted applicant id.
pub const MAX_APPLICANT_ID_LEN: usize = 128;
/// Longest accepted protected attribute value.
pub const MAX_ATTRIBUTE_LEN: usize = 64;
/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

impl DecisionRequest {
    /// Builds a request from any JSON value with field-level errors (`missing`, `wrong_type`,
    /// `unknown_field`, `invalid`) instead of a serde message. Feature values are checked later
    /// against the model schema by [`LendingService::decide`].
    pub fn from_value(value: &Value) -> Result<Self, LendingError> {
        let Value::Object(obj) = value else {
            return Err(LendingError::field(
                "body",
                FieldErrorCode::WrongType,
                format!(
                    "the request body must be a JSON object, got {}",
                    crate::schema::json_type(value)
                ),
            ));
        };
        let mut errors = Vec::new();
        for key in obj.keys() {
            if !matches!(key.as_str(), "applicant_id" | "features" | "protected") {
                errors.push(FieldError::new(
                    key.clone(),
                    FieldErrorCode::UnknownField,
                    format!("unknown field {key:?} (expected applicant_id, features, protected)"),
                ));
            }
        }
        let applicant_id = match obj.get("applicant_id") {
            None | Some(Value::Null) => {
                errors.push(FieldError::new(
                    "applicant_id",
                    FieldErrorCode::Missing,
                    "applicant_id is required",
                ));
                String::new()
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                errors.push(FieldError::new(
                    "applicant_id",
                    FieldErrorCode::WrongType,
                    format!(
                        "applicant_id must be a string, got {}",
                        crate::schema::json_type(other)
                    ),
                ));
                String::new()
            }
        };
        let features = match obj.get("features") {
            None | Some(Value::Null) => {
                errors.push(FieldError::new(
                    "features",
                    FieldErrorCode::Missing,
                    "features is required",
                ));
                Map::new()
            }
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                errors.push(FieldError::new(
                    "features",
                    FieldErrorCode::WrongType,
                    format!(
                        "features must be an object, got {}",
                        crate::schema::json_type(other)
                    ),
                ));
                Map::new()
            }
        };
        let mut protected = ProtectedAttributes::default();
        match obj.get("protected") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (key, v) in m {
                    let slot = match key.as_str() {
                        "sex" => &mut protected.sex,
                        "race" => &mut protected.race,
                        "age_band" => &mut protected.age_band,
                        _ => {
                            errors.push(FieldError::new(
                                format!("protected.{key}"),
                                FieldErrorCode::UnknownField,
                                format!(
                                    "unknown protected attribute {key:?} (expected sex, race, age_band)"
                                ),
                            ));
                            continue;
                        }
                    };
                    match v {
                        Value::Null => {}
                        Value::String(s) => *slot = Some(s.clone()),
                        other => errors.push(FieldError::new(
                            format!("protected.{key}"),
                            FieldErrorCode::WrongType,
                            format!(
                                "protected.{key} must be a string, got {}",
                                crate::schema::json_type(other)
                            ),
                        )),
                    }
                }
            }
            Some(other) => errors.push(FieldError::new(
                "protected",
                FieldErrorCode::WrongType,
                format!(
                    "protected must be an object, got {}",
                    crate::schema::json_type(other)
                ),
            )),
        }
        if errors.is_empty() {
            Ok(DecisionRequest {
                applicant_id,
                features,
                protected,
            })
        } else {
            Err(LendingError::Validation(errors))
        }
    }

    /// Checks the applicant id and protected attributes (not the features).
    pub fn check_envelope(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Err(e) = check_applicant_id(&self.applicant_id) {
            errors.push(e);
        }
        for (name, v) in [
            ("sex", &self.protected.sex),
            ("race", &self.protected.race),
            ("age_band", &self.protected.age_band),
        ] {
            if let Some(v) = v {
                if v.is_empty() || v.chars().count() > MAX_ATTRIBUTE_LEN {
                    errors.push(FieldError::new(
                        format!("protected.{name}"),
                        FieldErrorCode::Invalid,
                        format!("protected.{name} must be 1 to {MAX_ATTRIBUTE_LEN} characters"),
                    ));
                }
            }
        }
        errors
    }
}

/// Checks an applicant id: 1 to 128 characters of `[A-Za-z0-9_.-]`.
pub fn check_applicant_id(id: &str) -> Result<(), FieldError> {
    if id.is_empty() || id.len() > MAX_APPLICANT_ID_LEN {
        return Err(FieldError::new(
            "applicant_id",
            FieldErrorCode::Invalid,
            format!("applicant_id must be 1 to {MAX_APPLICANT_ID_LEN} characters"),
        ));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(FieldError::new(
            "applicant_id",
            FieldErrorCode::Invalid,
            "applicant_id may hold only ASCII letters, digits and '_', '.', '-'",
        ));
    }
    Ok(())
}

/// Per-call options of [`LendingService::decide`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecideOptions {
    /// `Idempotency-Key` header: the same key returns the same decision (one event).
    pub idempotency_key: Option<String>,
    /// W3C `traceparent` header; a new trace is started when absent or malformed.
    pub traceparent: Option<String>,
}

/// One feature's contribution in a response.
///
/// `contribution` is a SHAP value in **log-odds of default** (margin space) for `tree` and
/// `kernel`, and a LIME surrogate weight on the **probability of default** for `lime`.
/// `direction` is `"increases"` when the feature pushed the probability of default up (towards
/// decline) and `"decreases"` when it pushed it down (towards approval).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContributionView {
    /// Feature name.
    pub feature: String,
    /// The feature's value in the application.
    pub value: f64,
    /// Its attribution.
    pub contribution: f64,
    /// `increases` or `decreases` (the probability of default).
    pub direction: String,
}

impl ContributionView {
    /// A view with the direction derived from the sign of `contribution`.
    pub fn new(feature: impl Into<String>, value: f64, contribution: f64) -> Self {
        ContributionView {
            feature: feature.into(),
            value,
            contribution,
            direction: if contribution >= 0.0 {
                "increases".to_string()
            } else {
                "decreases".to_string()
            },
        }
    }
}

/// The response to a decision request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionResponse {
    /// Id of the decision (UUID; derived from the idempotency key when one was given).
    pub decision_id: String,
    /// Approve or decline.
    pub decision: Decision,
    /// Predicted probability of default.
    pub probability: f64,
    /// Decline when `probability >= threshold`.
    pub threshold: f64,
    /// Model id and version that decided.
    pub model: ModelRef,
    /// The three largest |SHAP| contributions (log-odds of default), largest first.
    pub top_contributions: Vec<ContributionView>,
    /// W3C trace id of the request (32 hex digits).
    pub trace_id: String,
}

/// Protected attributes as a read shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ProtectedView {
    /// None were given.
    NotProvided,
    /// They were given and the subject has since been erased (key deleted).
    Erased,
    /// Decrypted values.
    Present(ProtectedAttributes),
}

/// A stored outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeView {
    /// The decision.
    pub decision_id: String,
    /// Repaid or defaulted.
    pub outcome: Outcome,
    /// When it was recorded.
    pub observed_at: DateTime<Utc>,
}

/// A stored decision (`GET /v1/decisions/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionView {
    /// The decision as it was returned.
    #[serde(flatten)]
    pub response: DecisionResponse,
    /// The applicant.
    pub applicant_id: String,
    /// Features as submitted.
    pub features: Map<String, Value>,
    /// Protected attributes (decrypted, erased or not provided).
    pub protected: ProtectedView,
    /// Raw score (log-odds of default).
    pub score: f64,
    /// When it was submitted.
    pub submitted_at: DateTime<Utc>,
    /// The outcome, once recorded.
    pub outcome: Option<OutcomeView>,
}

/// Explanation method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplainMethod {
    /// Exact path-dependent TreeSHAP (linear SHAP for linear models); log-odds.
    Tree,
    /// KernelSHAP over the model's reference sample; log-odds.
    Kernel,
    /// LIME over the model's reference sample; probability of default.
    Lime,
}

impl std::str::FromStr for ExplainMethod {
    type Err = LendingError;
    fn from_str(s: &str) -> Result<Self, LendingError> {
        match s {
            "tree" => Ok(ExplainMethod::Tree),
            "kernel" => Ok(ExplainMethod::Kernel),
            "lime" => Ok(ExplainMethod::Lime),
            other => Err(LendingError::field(
                "method",
                FieldErrorCode::Invalid,
                format!("unknown explanation method {other:?} (expected tree, kernel or lime)"),
            )),
        }
    }
}

impl std::fmt::Display for ExplainMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExplainMethod::Tree => "tree",
            ExplainMethod::Kernel => "kernel",
            ExplainMethod::Lime => "lime",
        })
    }
}

/// A full explanation (`GET /v1/decisions/{id}/explanation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplanationView {
    /// The decision.
    pub decision_id: String,
    /// How it was computed.
    pub method: ExplainMethod,
    /// The model that decided.
    pub model: ModelRef,
    /// `margin` (log-odds of default) or `probability` (of default).
    pub output: attest_ai::Output,
    /// Expected output (SHAP) or surrogate intercept (LIME).
    pub base_value: f64,
    /// Model output explained, in `output` space.
    pub prediction: f64,
    /// Whether `base_value + Σ contributions == prediction` holds by construction (SHAP) or
    /// not (LIME).
    pub additive: bool,
    /// Every feature's contribution, largest |contribution| first.
    pub contributions: Vec<ContributionView>,
    /// LIME's weighted R² of the surrogate (LIME only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// The lending decision service (cheap to clone: an `Arc` inside).
#[derive(Clone)]
pub struct LendingService {
    inner: Arc<Inner>,
}

struct Inner {
    store: attest_store::DynStore,
    repo: Repository<LoanApplication>,
    vault: KeyVault,
    registry: Registry,
    model_name: String,
    /// The model that decides; swapped by [`LendingService::reload_active_model`].
    active: RwLock<SharedModel>,
    /// Every version loaded so far (explanations use the version that decided).
    loaded: Mutex<HashMap<ModelRef, SharedModel>>,
}

impl std::fmt::Debug for LendingService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LendingService")
            .field("model", &self.active_model())
            .field("vault", &self.inner.vault)
            .finish_non_exhaustive()
    }
}

/// UUIDv5 namespace of decision ids derived from idempotency keys.
const IDEMPOTENCY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6a1e_5d0c_83a4_4f5e_9b0e_2f8c_1d7a_4b39);

/// Background rows KernelSHAP draws from the reference sample.
const KERNEL_BACKGROUND_ROWS: usize = 100;

fn lock_err<T>(_: T) -> LendingError {
    LendingError::Unavailable("an internal lock was poisoned by a panic".into())
}

fn repo_err(e: RepoError<LoanRejection>) -> LendingError {
    match e {
        RepoError::Rejected(LoanRejection::NotSubmitted) => {
            LendingError::NotFound("no decision with this id".into())
        }
        RepoError::Rejected(LoanRejection::OutcomeAlreadyRecorded(id)) => {
            LendingError::Conflict(format!("the outcome of decision {id} was already recorded"))
        }
        RepoError::Rejected(LoanRejection::AlreadySubmitted(id)) => {
            LendingError::Conflict(format!("decision {id} exists already"))
        }
        RepoError::Rejected(r @ LoanRejection::Inconsistent(_)) => {
            LendingError::Codec(r.to_string())
        }
        RepoError::Store(e) => LendingError::Store(e),
        RepoError::InvalidId(e) => LendingError::NotFound(e.to_string()),
        RepoError::Decode { .. } | RepoError::Encode(_) => LendingError::Codec(e.to_string()),
    }
}

/// `(trace_id, traceparent)`: the incoming W3C header when valid, else a new trace.
fn trace_context(traceparent: Option<&str>) -> (String, String) {
    if let Some(tp) = traceparent {
        let parts: Vec<&str> = tp.trim().split('-').collect();
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if parts.len() >= 4
            && hex(parts[0], 2)
            && parts[0] != "ff"
            && hex(parts[1], 32)
            && parts[1].bytes().any(|b| b != b'0')
            && hex(parts[2], 16)
            && parts[2].bytes().any(|b| b != b'0')
            && hex(parts[3], 2)
        {
            return (parts[1].to_string(), tp.trim().to_string());
        }
    }
    let mut rng = rand::thread_rng();
    let trace: u128 = rng.gen::<u128>() | 1;
    let span: u64 = rng.gen::<u64>() | 1;
    let trace_id = format!("{trace:032x}");
    (trace_id.clone(), format!("00-{trace_id}-{span:016x}-01"))
}

/// SHA-256 of the canonical request: applicant, features sorted by name, protected attributes.
fn request_hash(req: &DecisionRequest) -> Result<String, LendingError> {
    #[derive(Serialize)]
    struct Canonical<'a> {
        applicant_id: &'a str,
        features: BTreeMap<&'a String, &'a Value>,
        protected: &'a ProtectedAttributes,
    }
    let bytes = serde_json::to_vec(&Canonical {
        applicant_id: &req.applicant_id,
        features: req.features.iter().collect(),
        protected: &req.protected,
    })
    .map_err(|e| LendingError::Codec(e.to_string()))?;
    Ok(crate::registry::sha256_hex(&bytes))
}

fn check_idempotency_key(key: &str) -> Result<(), FieldError> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(FieldError::new(
            "idempotency_key",
            FieldErrorCode::Invalid,
            format!("the idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(())
}

/// The response a stored decision stands for (used for fresh and replayed decisions alike, so
/// an idempotent retry returns exactly the same body).
fn response_from(d: &LoanDecisionMade) -> DecisionResponse {
    DecisionResponse {
        decision_id: d.decision_id.clone(),
        decision: d.decision,
        probability: d.probability,
        threshold: d.threshold,
        model: d.model.clone(),
        top_contributions: d
            .top_contributions
            .iter()
            .map(|c| ContributionView::new(c.feature.clone(), c.value, c.contribution))
            .collect(),
        trace_id: d.trace_id.clone(),
    }
}

/// Column indices ordered by |value| descending, ties by column.
fn order_by_magnitude(values: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].abs().total_cmp(&values[a].abs()).then(a.cmp(&b)));
    idx
}

impl LendingService {
    /// Opens the domain on a store + key vault + model registry; installs the built-in default
    /// model (trained deterministically, see [`crate::default_model`]) when the registry has no
    /// active version of `config.model_name` and that name is the default one.
    pub async fn open(config: LendingConfig) -> Result<Self, LendingError> {
        let vault = match &config.postgres_url {
            Some(url) => {
                KeyVault::open_postgres(url, config.pg_schema.as_deref().unwrap_or("attest"))
                    .await?
            }
            None => {
                std::fs::create_dir_all(&config.data_dir).map_err(|e| {
                    LendingError::Vault(format!(
                        "creating data directory {}: {e}",
                        config.data_dir.display()
                    ))
                })?;
                KeyVault::open_sqlite(config.data_dir.join("keys.db"))?
            }
        };
        let registry = Registry::new(config.store.clone());
        let name = config.model_name.clone();
        let active = match registry.active(&name).await? {
            Some(r) => r,
            None if name == crate::default_model::DEFAULT_MODEL_NAME => {
                tracing::info!("no active {name} model: training and installing the built-in one");
                let trained = tokio::task::spawn_blocking(|| {
                    crate::default_model::train_default(
                        crate::default_model::DEFAULT_SEED,
                        crate::default_model::DEFAULT_ROWS,
                    )
                })
                .await
                .map_err(|e| LendingError::Unavailable(format!("training task failed: {e}")))??;
                registry.register(trained.register_request(&name, true)).await?;
                registry.active(&name).await?.ok_or_else(|| {
                    LendingError::Registry(format!("model {name} has no active version"))
                })?
            }
            None => {
                return Err(LendingError::Registry(format!(
                    "model {name} has no active version; add one with `attest models add --name {name} ... --activate`"
                )))
            }
        };
        let model: SharedModel = Arc::new(registry.load(&active.id, active.version).await?);
        tracing::info!(model = %active, "lending service ready");
        let mut loaded = HashMap::new();
        loaded.insert(active.clone(), model.clone());
        Ok(LendingService {
            inner: Arc::new(Inner {
                repo: Repository::new(config.store.clone()),
                store: config.store,
                vault,
                registry,
                model_name: name,
                active: RwLock::new(model),
                loaded: Mutex::new(loaded),
            }),
        })
    }

    /// The active model's input schema.
    pub fn feature_schema(&self) -> FeatureSchema {
        self.active().schema.clone()
    }

    /// Active model id + version.
    pub fn active_model(&self) -> ModelRef {
        self.active().model_ref.clone()
    }

    /// The active loaded model (schema, threshold, reference sample, scorer).
    pub fn active(&self) -> SharedModel {
        match self.inner.active.read() {
            Ok(g) => g.clone(),
            // A panic while swapping cannot leave a half-written Arc: use it.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The key vault (the auditor decrypts protected attributes with it).
    pub fn vault(&self) -> &KeyVault {
        &self.inner.vault
    }

    /// The model registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The event store.
    pub fn store(&self) -> &attest_store::DynStore {
        &self.inner.store
    }

    /// Re-reads the registry and switches to its active version if it changed (another process
    /// may have activated one). Returns the active model.
    pub async fn reload_active_model(&self) -> Result<ModelRef, LendingError> {
        let name = &self.inner.model_name;
        let Some(active) = self.inner.registry.active(name).await? else {
            return Ok(self.active_model());
        };
        if active != self.active_model() {
            let model = self.model(&active).await?;
            *self.inner.active.write().map_err(lock_err)? = model;
            tracing::info!(model = %active, "switched the active model");
        }
        Ok(active)
    }

    /// A loaded version (cached).
    pub async fn model(&self, r: &ModelRef) -> Result<SharedModel, LendingError> {
        if let Some(m) = self.inner.loaded.lock().map_err(lock_err)?.get(r) {
            return Ok(m.clone());
        }
        let m: SharedModel = Arc::new(self.inner.registry.load(&r.id, r.version).await?);
        self.inner
            .loaded
            .lock()
            .map_err(lock_err)?
            .insert(r.clone(), m.clone());
        Ok(m)
    }

    /// Validates, scores, explains (TreeSHAP top-3) and durably records a decision.
    ///
    /// With an idempotency key the decision id is the UUIDv5 of the key and the stream is
    /// created with "no stream" as expectation: a retry (in this process or another one sharing
    /// the store) finds the stored decision and gets the same response, a different body under
    /// the same key is [`LendingError::IdempotencyConflict`].
    pub async fn decide(
        &self,
        req: DecisionRequest,
        opts: DecideOptions,
    ) -> Result<DecisionResponse, LendingError> {
        let model = self.active();
        let mut errors = req.check_envelope();
        if let Some(k) = &opts.idempotency_key {
            if let Err(e) = check_idempotency_key(k) {
                errors.push(e);
            }
        }
        let row = match model.schema.validate(&req.features) {
            Ok(row) => row,
            Err(e) => {
                errors.extend(e);
                Vec::new()
            }
        };
        if !errors.is_empty() {
            return Err(LendingError::Validation(errors));
        }
        let hash = request_hash(&req)?;
        let decision_id = match &opts.idempotency_key {
            Some(k) => uuid::Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, k.as_bytes()),
            None => uuid::Uuid::now_v7(),
        }
        .to_string();
        if opts.idempotency_key.is_some() {
            // Cheap check first: a retry does not need scoring or a new vault key.
            if let Some(existing) = self.replay(&decision_id, &hash).await? {
                return Ok(existing);
            }
        }
        let scored = model.score(&row)?;
        let names = &model.schema.features;
        let top: Vec<RecordedContribution> = order_by_magnitude(&scored.shap)
            .into_iter()
            .take(3)
            .map(|j| RecordedContribution {
                feature: names[j].name.clone(),
                value: row[j],
                contribution: scored.shap[j],
            })
            .collect();
        let (trace_id, traceparent) = trace_context(opts.traceparent.as_deref());
        let sealed = if req.protected.is_empty() {
            None
        } else {
            Some(
                self.inner
                    .vault
                    .seal(&req.applicant_id, &req.protected)
                    .await?,
            )
        };
        let now = Utc::now();
        let decision = LoanDecisionMade {
            decision_id: decision_id.clone(),
            applicant_id: req.applicant_id.clone(),
            model: model.model_ref.clone(),
            score: scored.margin,
            probability: scored.probability,
            decision: if scored.probability >= model.threshold {
                Decision::Decline
            } else {
                Decision::Approve
            },
            threshold: model.threshold,
            top_contributions: top,
            trace_id,
            decided_at: now,
        };
        let response = response_from(&decision);
        let command = LoanCommand::SubmitAndDecide {
            submitted: Box::new(LoanApplicationSubmitted {
                decision_id: decision_id.clone(),
                applicant_id: req.applicant_id,
                features: req.features,
                protected: sealed,
                request_hash: hash.clone(),
                idempotency_key: opts.idempotency_key.clone(),
                submitted_at: now,
            }),
            decision: Box::new(decision),
        };
        let events = LoanApplication::default()
            .handle(command)
            .map_err(|e| repo_err(RepoError::Rejected(e)))?;
        let metadata = Metadata {
            correlation_id: Some(decision_id.clone()),
            traceparent: Some(traceparent),
            ..Metadata::default()
        };
        match self
            .inner
            .repo
            .save(&decision_id, None, &events, &metadata)
            .await
        {
            Ok(_) => Ok(response),
            Err(RepoError::Store(StoreError::WrongExpectedVersion { .. }))
                if opts.idempotency_key.is_some() =>
            {
                // A concurrent request with the same key won the race.
                self.replay(&decision_id, &hash).await?.ok_or_else(|| {
                    LendingError::Conflict(format!(
                        "decision {decision_id} exists but has no decision event"
                    ))
                })
            }
            Err(e) => Err(repo_err(e)),
        }
    }

    /// The stored response of `decision_id` if it exists and was made for the same request.
    async fn replay(
        &self,
        decision_id: &str,
        hash: &str,
    ) -> Result<Option<DecisionResponse>, LendingError> {
        let state = self
            .inner
            .repo
            .load(decision_id)
            .await
            .map_err(repo_err)?
            .state;
        let (Some(s), Some(d)) = (&state.submitted, &state.decision) else {
            return Ok(None);
        };
        if s.request_hash != hash {
            return Err(LendingError::IdempotencyConflict(format!(
                "decision {decision_id} was made for a different request under this idempotency key"
            )));
        }
        Ok(Some(response_from(d)))
    }

    async fn load(&self, id: &str) -> Result<LoanApplication, LendingError> {
        if id.is_empty() || id.len() > 64 {
            return Err(LendingError::NotFound(format!("decision {id:?}")));
        }
        let state = match self.inner.repo.load(id).await {
            Ok(l) => l.state,
            Err(RepoError::InvalidId(_)) => {
                return Err(LendingError::NotFound(format!("decision {id:?}")))
            }
            Err(e) => return Err(repo_err(e)),
        };
        if state.submitted.is_none() || state.decision.is_none() {
            return Err(LendingError::NotFound(format!("decision {id:?}")));
        }
        Ok(state)
    }

    /// Reads a stored decision, with protected attributes decrypted (or shown as erased).
    pub async fn decision(&self, id: &str) -> Result<DecisionView, LendingError> {
        let state = self.load(id).await?;
        let (Some(s), Some(d)) = (state.submitted, state.decision) else {
            return Err(LendingError::NotFound(format!("decision {id:?}")));
        };
        let protected = match &s.protected {
            None => ProtectedView::NotProvided,
            Some(sealed) => match self.inner.vault.decrypt(&s.applicant_id, sealed).await? {
                Some(p) => ProtectedView::Present(p),
                None => ProtectedView::Erased,
            },
        };
        Ok(DecisionView {
            response: response_from(&d),
            applicant_id: s.applicant_id,
            features: s.features,
            protected,
            score: d.score,
            submitted_at: s.submitted_at,
            outcome: state.outcome.map(|o| OutcomeView {
                decision_id: o.decision_id,
                outcome: o.outcome,
                observed_at: o.observed_at,
            }),
        })
    }

    /// Explains a stored decision with the model version that made it.
    pub async fn explanation(
        &self,
        id: &str,
        method: ExplainMethod,
    ) -> Result<ExplanationView, LendingError> {
        let state = self.load(id).await?;
        let (Some(s), Some(d)) = (state.submitted, state.decision) else {
            return Err(LendingError::NotFound(format!("decision {id:?}")));
        };
        let model = self.model(&d.model).await?;
        let row = model.schema.validate(&s.features).map_err(|e| {
            LendingError::Codec(format!(
                "stored features of {id} no longer fit model {}: {}",
                d.model,
                LendingError::Validation(e)
            ))
        })?;
        let decision_id = d.decision_id.clone();
        let model_ref = d.model.clone();
        tokio::task::spawn_blocking(move || explain(&model, &row, method, decision_id, model_ref))
            .await
            .map_err(|e| LendingError::Unavailable(format!("explanation task failed: {e}")))?
    }

    /// Records the observed outcome of a decision (once; a second time is a conflict).
    pub async fn record_outcome(
        &self,
        id: &str,
        outcome: Outcome,
    ) -> Result<OutcomeView, LendingError> {
        self.load(id).await?;
        let observed_at = Utc::now();
        let done = self
            .inner
            .repo
            .execute(
                id,
                LoanCommand::RecordOutcome {
                    outcome,
                    observed_at,
                },
                Metadata {
                    correlation_id: Some(id.to_string()),
                    ..Metadata::default()
                },
            )
            .await
            .map_err(repo_err)?;
        let o = done
            .state
            .outcome
            .ok_or_else(|| LendingError::Codec("outcome missing after recording".into()))?;
        Ok(OutcomeView {
            decision_id: o.decision_id,
            outcome: o.outcome,
            observed_at: o.observed_at,
        })
    }

    /// Erases an applicant's protected attributes everywhere by deleting their key. Idempotent:
    /// erasing an unknown or already erased applicant succeeds.
    pub async fn erase_subject(&self, applicant_id: &str) -> Result<(), LendingError> {
        check_applicant_id(applicant_id).map_err(|e| LendingError::Validation(vec![e]))?;
        let existed = self.inner.vault.erase(applicant_id).await?;
        tracing::info!(applicant_id, existed, "erased subject key");
        Ok(())
    }
}

fn explain(
    model: &LoadedModel,
    row: &[f64],
    method: ExplainMethod,
    decision_id: String,
    model_ref: ModelRef,
) -> Result<ExplanationView, LendingError> {
    let names = &model.schema.features;
    let need_reference = || {
        model.reference.as_ref().ok_or_else(|| {
            LendingError::Unavailable(format!(
                "model {} has no reference sample, which {method} explanations need",
                model.model_ref
            ))
        })
    };
    let (e, additive, score) = match method {
        ExplainMethod::Tree => {
            let s = model.score(row)?;
            (
                Explanation {
                    base_value: s.base_value,
                    values: s.shap,
                    prediction: s.margin,
                    output: Output::Margin,
                },
                true,
                None,
            )
        }
        ExplainMethod::Kernel => {
            let bg = Background::sample(need_reference()?, KERNEL_BACKGROUND_ROWS, 0)?;
            let ex = KernelExplainer::new(
                model.model(),
                bg,
                KernelConfig {
                    output: Output::Margin,
                    seed: 0,
                    ..KernelConfig::default()
                },
            )?;
            (ex.explain_row(row)?, true, None)
        }
        ExplainMethod::Lime => {
            let ex = LimeExplainer::new(
                model.model(),
                need_reference()?,
                LimeConfig {
                    num_features: names.len().max(1),
                    output: Output::Probability,
                    seed: 0,
                    ..LimeConfig::default()
                },
            )?;
            let l = ex.explain_row(row)?;
            (l.to_explanation(names.len()), false, Some(l.score))
        }
    };
    let contributions = order_by_magnitude(&e.values)
        .into_iter()
        .map(|j| ContributionView::new(names[j].name.clone(), row[j], e.values[j]))
        .collect();
    Ok(ExplanationView {
        decision_id,
        method,
        model: model_ref,
        output: e.output,
        base_value: e.base_value,
        prediction: e.prediction,
        additive,
        contributions,
        score,
    })
}
