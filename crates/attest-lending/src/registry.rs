//! The model registry: versioned models per name, kept **in the event store** (stream
//! `model-<name>`, events `ModelVersionRegistered` and `ModelVersionActivated`) so that every
//! process sharing a store sees the same models and the same active version.
//!
//! A registered version holds the artifact text (XGBoost JSON, LightGBM text or attest-ai's
//! linear JSON — all three are text, stored verbatim), its SHA-256, the ordered feature schema
//! with ranges, the decision threshold and a reference sample (at most
//! [`MAX_REFERENCE_ROWS`] rows) used as drift reference and explanation background. The
//! whole version is one event, so it must fit the store's event size limit (1 MiB by default).
//!
//! Registering the same artifact, schema and threshold again is recognised and returns the
//! existing version; concurrent registrations are serialised by the stream's expected version.

use std::sync::Arc;

use attest_ai::explain::tree::TreeExplainer;
use attest_ai::model::{lightgbm, xgboost, LinearModel, TreeEnsemble};
use attest_ai::{Matrix, Model, Output};
use attest_core::{ExpectedVersion, NewEvent, StreamId};
use attest_store::{Direction, DynStore, LogFilter, StoreError, StreamFrom};
use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::error::LendingError;
use crate::events::{
    FeatureSpec, ModelFormat, ModelRef, ModelVersionActivated, ModelVersionRegistered,
    MODEL_CATEGORY, MODEL_VERSION_ACTIVATED, MODEL_VERSION_REGISTERED,
};
use crate::schema::FeatureSchema;

/// Most reference rows kept with a model version (evenly spaced over the given sample).
pub const MAX_REFERENCE_ROWS: usize = 500;

/// Attempts of a registry write against concurrent writers.
const MAX_ATTEMPTS: usize = 8;

/// What to register.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterModel {
    /// Registry name: 1 to 64 characters of `[A-Za-z0-9_.]`.
    pub name: String,
    /// Artifact format.
    pub format: ModelFormat,
    /// Artifact text.
    pub artifact: String,
    /// Ordered feature specs; `None` derives them from `reference`
    /// ([`crate::schema::derive_specs`]) with the model's feature names.
    pub features: Option<Vec<FeatureSpec>>,
    /// Decline when the probability of default is at least this (in `(0, 1)`).
    pub threshold: f64,
    /// Reference rows in feature order (may be empty for tree models; required for linear
    /// models, whose SHAP values need a baseline). Thinned to [`MAX_REFERENCE_ROWS`].
    pub reference: Vec<Vec<f64>>,
    /// Provenance text.
    pub description: String,
    /// Make it the active version right away.
    pub activate: bool,
}

/// One version as listed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelVersionInfo {
    /// Name and version.
    pub model: ModelRef,
    /// Artifact format.
    pub format: ModelFormat,
    /// SHA-256 of the artifact.
    pub sha256: String,
    /// Decision threshold.
    pub threshold: f64,
    /// Number of input features.
    pub n_features: usize,
    /// Rows in the reference sample.
    pub reference_rows: usize,
    /// Whether it is the active version of its name.
    pub active: bool,
    /// Provenance.
    pub description: String,
    /// When registered.
    pub registered_at: chrono::DateTime<Utc>,
}

/// The registry over an event store.
#[derive(Clone)]
pub struct Registry {
    store: DynStore,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Checks a registry name.
pub fn check_name(name: &str) -> Result<(), LendingError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(LendingError::InvalidArgument(format!(
            "model name {name:?} must be 1 to 64 characters of [A-Za-z0-9_.]"
        )));
    }
    Ok(())
}

fn stream_of(name: &str) -> Result<StreamId, LendingError> {
    check_name(name)?;
    StreamId::new(format!("{MODEL_CATEGORY}-{name}"))
        .map_err(|e| LendingError::InvalidArgument(e.to_string()))
}

fn codec(e: impl std::fmt::Display) -> LendingError {
    LendingError::Codec(e.to_string())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The registry stream of one name, decoded.
#[derive(Debug, Default)]
struct NameState {
    versions: Vec<ModelVersionRegistered>,
    active: Option<u32>,
    last_version: Option<u64>,
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: DynStore) -> Self {
        Registry { store }
    }

    async fn read(&self, name: &str) -> Result<NameState, LendingError> {
        let stream = stream_of(name)?;
        let mut state = NameState::default();
        let mut from = 0;
        loop {
            let page = match self
                .store
                .read_stream(&stream, StreamFrom::Version(from), Direction::Forward, 256)
                .await
            {
                Ok(p) => p,
                Err(StoreError::StreamNotFound { .. }) => return Ok(state),
                Err(e) => return Err(e.into()),
            };
            let n = page.len();
            for rec in page {
                match rec.event_type.as_str() {
                    MODEL_VERSION_REGISTERED => state
                        .versions
                        .push(rec.decode_json::<ModelVersionRegistered>().map_err(codec)?),
                    MODEL_VERSION_ACTIVATED => {
                        state.active = Some(
                            rec.decode_json::<ModelVersionActivated>()
                                .map_err(codec)?
                                .version,
                        )
                    }
                    other => tracing::warn!(event_type = other, %stream, "unknown registry event"),
                }
                state.last_version = Some(rec.version);
                from = rec.version + 1;
            }
            if n < 256 {
                return Ok(state);
            }
        }
    }

    async fn append(
        &self,
        name: &str,
        expected: Option<u64>,
        events: Vec<NewEvent>,
    ) -> Result<bool, LendingError> {
        let expected = expected.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        match self.store.append(stream_of(name)?, expected, events).await {
            Ok(_) => Ok(true),
            Err(StoreError::WrongExpectedVersion { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Registers a version (validating that the artifact loads and fits the schema) and
    /// optionally activates it. Returns the (possibly pre-existing) version.
    pub async fn register(&self, req: RegisterModel) -> Result<ModelRef, LendingError> {
        check_name(&req.name)?;
        if !(req.threshold > 0.0 && req.threshold < 1.0) {
            return Err(LendingError::InvalidArgument(format!(
                "threshold must be in (0, 1), got {}",
                req.threshold
            )));
        }
        // Parse once to learn the feature names and to refuse broken artifacts early.
        let names = match &req.features {
            Some(specs) => specs.iter().map(|f| f.name.clone()).collect(),
            None => artifact_feature_names(req.format, &req.artifact)?,
        };
        let model = parse_artifact(req.format, &req.artifact, &names)?;
        let width = model.n_features();
        if let Some((i, r)) = req
            .reference
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != width)
        {
            return Err(LendingError::InvalidArgument(format!(
                "reference row {i} has {} values, the model has {width} features",
                r.len()
            )));
        }
        if req.format == ModelFormat::Linear && req.reference.is_empty() {
            return Err(LendingError::InvalidArgument(
                "linear models need a reference sample (their SHAP baseline)".into(),
            ));
        }
        let features = match req.features.clone() {
            Some(f) => f,
            None if req.reference.is_empty() => names
                .iter()
                .map(|n| FeatureSpec {
                    name: n.clone(),
                    kind: crate::events::FeatureKind::Number,
                    min: f64::MIN,
                    max: f64::MAX,
                    description: format!("{n} (no reference sample: any finite number)"),
                })
                .collect(),
            None => crate::schema::derive_specs(&names, &req.reference),
        };
        if features.len() != width {
            return Err(LendingError::InvalidArgument(format!(
                "{} feature specs for a model with {width} features",
                features.len()
            )));
        }
        let reference = thin(&req.reference, MAX_REFERENCE_ROWS);
        let sha = sha256_hex(req.artifact.as_bytes());
        for _ in 0..MAX_ATTEMPTS {
            let state = self.read(&req.name).await?;
            if let Some(existing) = state
                .versions
                .iter()
                .find(|v| v.sha256 == sha && v.features == features && v.threshold == req.threshold)
            {
                let r = ModelRef {
                    id: req.name.clone(),
                    version: existing.version,
                };
                if req.activate && state.active != Some(existing.version) {
                    self.activate(&req.name, existing.version).await?;
                }
                return Ok(r);
            }
            let version = state.versions.len() as u32 + 1;
            let now = Utc::now();
            let registered = ModelVersionRegistered {
                name: req.name.clone(),
                version,
                format: req.format,
                artifact: req.artifact.clone(),
                sha256: sha.clone(),
                features: features.clone(),
                threshold: req.threshold,
                reference: reference.clone(),
                description: req.description.clone(),
                registered_at: now,
            };
            let mut events = vec![NewEvent::json(MODEL_VERSION_REGISTERED, &registered)
                .map_err(|e| LendingError::Codec(e.to_string()))?];
            if req.activate {
                events.push(
                    NewEvent::json(
                        MODEL_VERSION_ACTIVATED,
                        &ModelVersionActivated {
                            name: req.name.clone(),
                            version,
                            activated_at: now,
                        },
                    )
                    .map_err(|e| LendingError::Codec(e.to_string()))?,
                );
            }
            if self.append(&req.name, state.last_version, events).await? {
                tracing::info!(name = %req.name, version, sha256 = %sha, "registered model version");
                return Ok(ModelRef {
                    id: req.name.clone(),
                    version,
                });
            }
        }
        Err(LendingError::Conflict(format!(
            "model {} is being changed concurrently; try again",
            req.name
        )))
    }

    /// Makes `version` of `name` the active one.
    pub async fn activate(&self, name: &str, version: u32) -> Result<(), LendingError> {
        for _ in 0..MAX_ATTEMPTS {
            let state = self.read(name).await?;
            if !state.versions.iter().any(|v| v.version == version) {
                return Err(LendingError::NotFound(format!(
                    "model {name} version {version}"
                )));
            }
            if state.active == Some(version) {
                return Ok(());
            }
            let ev = NewEvent::json(
                MODEL_VERSION_ACTIVATED,
                &ModelVersionActivated {
                    name: name.to_string(),
                    version,
                    activated_at: Utc::now(),
                },
            )
            .map_err(|e| LendingError::Codec(e.to_string()))?;
            if self.append(name, state.last_version, vec![ev]).await? {
                tracing::info!(name, version, "activated model version");
                return Ok(());
            }
        }
        Err(LendingError::Conflict(format!(
            "model {name} is being changed concurrently; try again"
        )))
    }

    /// The active version of `name`, if any.
    pub async fn active(&self, name: &str) -> Result<Option<ModelRef>, LendingError> {
        Ok(self.read(name).await?.active.map(|version| ModelRef {
            id: name.to_string(),
            version,
        }))
    }

    /// Every version of `name`, oldest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<ModelVersionInfo>, LendingError> {
        let state = self.read(name).await?;
        Ok(state
            .versions
            .iter()
            .map(|v| ModelVersionInfo {
                model: ModelRef {
                    id: v.name.clone(),
                    version: v.version,
                },
                format: v.format,
                sha256: v.sha256.clone(),
                threshold: v.threshold,
                n_features: v.features.len(),
                reference_rows: v.reference.len(),
                active: state.active == Some(v.version),
                description: v.description.clone(),
                registered_at: v.registered_at,
            })
            .collect())
    }

    /// Names that have a registry stream, sorted.
    pub async fn names(&self) -> Result<Vec<String>, LendingError> {
        let category = attest_core::Category::new(MODEL_CATEGORY)
            .map_err(|e| LendingError::InvalidArgument(e.to_string()))?;
        let filter = LogFilter::Category(category);
        let mut names = std::collections::BTreeSet::new();
        let mut after = 0;
        loop {
            let page = self.store.read_all(after, 256, &filter).await?;
            let n = page.len();
            for rec in &page {
                names.insert(rec.stream_id.id_part().to_string());
                after = rec.position;
            }
            if n < 256 {
                break;
            }
        }
        Ok(names.into_iter().collect())
    }

    /// The registered version `version` of `name`, whole.
    pub async fn get(
        &self,
        name: &str,
        version: u32,
    ) -> Result<ModelVersionRegistered, LendingError> {
        self.read(name)
            .await?
            .versions
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| LendingError::NotFound(format!("model {name} version {version}")))
    }

    /// Loads version `version` of `name` ready to score and explain.
    pub async fn load(&self, name: &str, version: u32) -> Result<LoadedModel, LendingError> {
        LoadedModel::from_registered(&self.get(name, version).await?)
    }
}

/// Evenly spaced rows, at most `max`.
fn thin(rows: &[Vec<f64>], max: usize) -> Vec<Vec<f64>> {
    if rows.len() <= max {
        return rows.to_vec();
    }
    (0..max)
        .map(|k| rows[k * rows.len() / max].clone())
        .collect()
}

/// Feature names an artifact declares (XGBoost `feature_names`, LightGBM `feature_names=`,
/// linear `feature_names`).
pub fn artifact_feature_names(
    format: ModelFormat,
    text: &str,
) -> Result<Vec<String>, LendingError> {
    let model = parse_artifact(format, text, &[])?;
    Ok(model.feature_names().to_vec())
}

/// A parsed artifact.
#[derive(Debug, Clone)]
pub enum ParsedModel {
    /// XGBoost or LightGBM.
    Trees(TreeEnsemble),
    /// Linear / logistic.
    Linear(LinearModel),
}

impl ParsedModel {
    fn feature_names(&self) -> &[String] {
        match self {
            ParsedModel::Trees(t) => &t.feature_names,
            ParsedModel::Linear(l) => &l.feature_names,
        }
    }

    fn n_features(&self) -> usize {
        self.feature_names().len()
    }
}

/// Parses an artifact; `names` (when non-empty) must match the names the artifact stores, or
/// name its columns when it stores none.
pub fn parse_artifact(
    format: ModelFormat,
    text: &str,
    names: &[String],
) -> Result<ParsedModel, LendingError> {
    let given = (!names.is_empty()).then_some(names);
    let model = match format {
        ModelFormat::Xgboost => {
            ParsedModel::Trees(xgboost::parse(text, "registry artifact", given)?)
        }
        ModelFormat::Lightgbm => ParsedModel::Trees(lightgbm::parse(text, "registry artifact")?),
        ModelFormat::Linear => {
            ParsedModel::Linear(LinearModel::from_json_str(text, "registry artifact")?)
        }
    };
    if let Some(given) = given {
        if model.feature_names() != given {
            return Err(LendingError::InvalidArgument(format!(
                "the model's features ({}) differ from the schema's ({})",
                model.feature_names().join(","),
                given.join(",")
            )));
        }
    }
    Ok(model)
}

self_cell::self_cell!(
    struct TreeCell {
        owner: TreeEnsemble,
        #[covariant]
        dependent: TreeExplainer,
    }
);

/// A tree ensemble with its TreeSHAP tables built once.
struct TreeScorer(TreeCell);

/// How a loaded model scores and attributes.
enum Scorer {
    Trees(TreeScorer),
    Linear {
        model: LinearModel,
        /// Mean of each term over the reference sample (linear SHAP baseline).
        term_means: Vec<f64>,
        base_value: f64,
    },
}

/// A registered version ready to decide: parsed once, explainer tables built once.
pub struct LoadedModel {
    /// Name and version.
    pub model_ref: ModelRef,
    /// Input schema.
    pub schema: FeatureSchema,
    /// Decision threshold.
    pub threshold: f64,
    /// Artifact format.
    pub format: ModelFormat,
    /// Reference sample (`None` when the version has none).
    pub reference: Option<Matrix>,
    scorer: Scorer,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("model", &self.model_ref)
            .field("format", &self.format)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

/// Margin, probability and SHAP values of one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Log-odds of default.
    pub margin: f64,
    /// Probability of default.
    pub probability: f64,
    /// SHAP value per feature (log-odds), column order.
    pub shap: Vec<f64>,
    /// Expected margin (SHAP base value).
    pub base_value: f64,
}

impl LoadedModel {
    /// Parses a registered version and prepares its explainer.
    pub fn from_registered(v: &ModelVersionRegistered) -> Result<Self, LendingError> {
        let names: Vec<String> = v.features.iter().map(|f| f.name.clone()).collect();
        let parsed = parse_artifact(v.format, &v.artifact, &names)?;
        let reference = if v.reference.is_empty() {
            None
        } else {
            Some(Matrix::from_rows(&v.reference)?)
        };
        let scorer = match parsed {
            ParsedModel::Trees(ens) => {
                if ens.link != attest_ai::model::Link::Logistic {
                    return Err(LendingError::Registry(format!(
                        "model {} v{} does not output a probability (identity link)",
                        v.name, v.version
                    )));
                }
                let cell = TreeCell::try_new(ens, |e| TreeExplainer::new(e))?;
                Scorer::Trees(TreeScorer(cell))
            }
            ParsedModel::Linear(model) => {
                if model.link != attest_ai::model::Link::Logistic {
                    return Err(LendingError::Registry(format!(
                        "linear model {} v{} is not logistic",
                        v.name, v.version
                    )));
                }
                let bg = reference.as_ref().ok_or_else(|| {
                    LendingError::Registry(format!(
                        "linear model {} v{} has no reference sample",
                        v.name, v.version
                    ))
                })?;
                let ex = attest_ai::explain::linear::LinearExplainer::new(&model, bg)?;
                let term_means = ex.term_means().to_vec();
                let base_value = ex.base_value();
                Scorer::Linear {
                    model,
                    term_means,
                    base_value,
                }
            }
        };
        Ok(LoadedModel {
            model_ref: ModelRef {
                id: v.name.clone(),
                version: v.version,
            },
            schema: FeatureSchema {
                model: ModelRef {
                    id: v.name.clone(),
                    version: v.version,
                },
                features: v.features.clone(),
            },
            threshold: v.threshold,
            format: v.format,
            reference,
            scorer,
        })
    }

    /// The model behind the [`Model`] trait (for KernelSHAP / LIME).
    pub fn model(&self) -> &dyn Model {
        match &self.scorer {
            Scorer::Trees(t) => t.0.borrow_owner(),
            Scorer::Linear { model, .. } => model,
        }
    }

    /// Scores one validated row and computes its exact SHAP values (TreeSHAP for trees,
    /// linear SHAP against the reference means for linear models).
    pub fn score(&self, row: &[f64]) -> Result<Scored, LendingError> {
        match &self.scorer {
            Scorer::Trees(t) => {
                let ex = t.0.borrow_dependent();
                let mut shap = vec![0.0; row.len()];
                let margin = ex.shap_values_into(row, &mut shap)?;
                Ok(Scored {
                    margin,
                    probability: attest_ai::model::Link::Logistic.apply(margin),
                    shap,
                    base_value: ex.base_value(),
                })
            }
            Scorer::Linear {
                model,
                term_means,
                base_value,
            } => {
                let margin = model.predict_row(row, Output::Margin)?;
                let mut shap = Vec::with_capacity(row.len());
                for (j, (term, mean)) in model.terms.iter().zip(term_means).enumerate() {
                    shap.push(term.eval(row[j], &model.feature_names[j], 0)? - mean);
                }
                Ok(Scored {
                    margin,
                    probability: attest_ai::model::Link::Logistic.apply(margin),
                    shap,
                    base_value: *base_value,
                })
            }
        }
    }
}

/// A shared loaded model.
pub type SharedModel = Arc<LoadedModel>;
