//! The built-in default credit model: gradient-boosted trees trained deterministically on
//! [`crate::synth`] data (bias 0), exported as XGBoost JSON.
//!
//! `attest demo train` writes it to a file; [`crate::LendingService::open`] registers it as
//! `credit` v1 on a registry that has no active `credit` model, so `attest serve` works on a
//! fresh machine. Same seed and rows → the same bytes, on every run.

use attest_ai::model::train::{roc_auc, train_gbdt, GbdtModel, GbdtParams};
use attest_ai::{Matrix, Model, Output};

use crate::error::LendingError;
use crate::events::ModelFormat;
use crate::registry::RegisterModel;
use crate::synth::{self, Generator};

/// Registry name of the built-in model.
pub const DEFAULT_MODEL_NAME: &str = "credit";
/// Seed of the built-in model's training data.
pub const DEFAULT_SEED: u64 = 42;
/// Rows generated for the built-in model (80 % train, 20 % held out).
pub const DEFAULT_ROWS: usize = 20_000;
/// Decline when the predicted probability of default is at least this.
pub const DEFAULT_THRESHOLD: f64 = 0.35;

/// Hyper-parameters of the built-in model.
pub fn default_params() -> GbdtParams {
    GbdtParams {
        n_trees: 80,
        max_depth: 4,
        learning_rate: 0.1,
        lambda: 1.0,
        gamma: 0.0,
        min_child_weight: 5.0,
        max_bins: 64,
    }
}

/// A trained default model with its provenance and quality numbers.
#[derive(Debug, Clone)]
pub struct TrainedDefault {
    /// The model.
    pub model: GbdtModel,
    /// Its XGBoost JSON export (the registered artifact).
    pub xgboost_json: String,
    /// Reference sample: training rows, evenly spaced, at most
    /// [`crate::registry::MAX_REFERENCE_ROWS`].
    pub reference: Vec<Vec<f64>>,
    /// AUC on the held-out 20 %.
    pub holdout_auc: f64,
    /// AUC on the held-out 20 % of the trivial baseline that ranks by debt-to-income alone.
    pub baseline_auc: f64,
    /// Seed and rows used.
    pub seed: u64,
    /// Rows generated.
    pub rows: usize,
}

impl TrainedDefault {
    /// What to register for this model.
    pub fn register_request(&self, name: &str, activate: bool) -> RegisterModel {
        RegisterModel {
            name: name.to_string(),
            format: ModelFormat::Xgboost,
            artifact: self.xgboost_json.clone(),
            features: Some(synth::feature_specs()),
            threshold: DEFAULT_THRESHOLD,
            reference: self.reference.clone(),
            description: format!(
                "built-in credit model: attest gradient-boosted trees on synthetic data \
                 (seed {}, {} rows, bias 0; held-out AUC {:.4})",
                self.seed, self.rows, self.holdout_auc
            ),
            activate,
        }
    }
}

/// Generates `rows` applicants with `seed` (bias 0), trains on the first 80 % and evaluates on
/// the rest. Deterministic. Fails when `rows < 50`.
pub fn train_default(seed: u64, rows: usize) -> Result<TrainedDefault, LendingError> {
    if rows < 50 {
        return Err(LendingError::InvalidArgument(format!(
            "training needs at least 50 rows, got {rows}"
        )));
    }
    let data = Generator::new(seed, 0.0).dataset(rows);
    let n_train = rows * 4 / 5;
    let p = data.n_cols;
    let x_train = Matrix::new(data.x[..n_train * p].to_vec(), n_train, p)?;
    let y_train = &data.y[..n_train];
    let x_test = Matrix::new(data.x[n_train * p..].to_vec(), rows - n_train, p)?;
    let y_test = &data.y[n_train..];
    let model = train_gbdt(
        &x_train,
        y_train,
        &synth::feature_names(),
        &default_params(),
    )?;
    let scores = model.ensemble.predict(&x_test, Output::Probability)?;
    let holdout_auc = roc_auc(&scores, y_test)?;
    let dti: Vec<f64> = x_test.rows().map(|r| r[2]).collect();
    let baseline_auc = roc_auc(&dti, y_test)?;
    let max = crate::registry::MAX_REFERENCE_ROWS;
    let reference: Vec<Vec<f64>> = (0..max.min(n_train))
        .map(|k| x_train.row(k * n_train / max.min(n_train)).to_vec())
        .collect();
    let xgboost_json = model.to_xgboost_json()?;
    tracing::info!(
        seed,
        rows,
        holdout_auc,
        baseline_auc,
        trees = model.ensemble.trees.len(),
        "trained the default credit model"
    );
    Ok(TrainedDefault {
        model,
        xgboost_json,
        reference,
        holdout_auc,
        baseline_auc,
        seed,
        rows,
    })
}
