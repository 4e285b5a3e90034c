//! Models behind one trait.

pub mod lightgbm;
pub mod linear;
pub mod mlp;
pub mod train;
pub mod tree;
pub mod xgboost;

pub use linear::LinearModel;
pub use mlp::Mlp;
pub use tree::{Link, TreeEnsemble};

use crate::{AiError, Matrix};

/// Reads the column order of an ordinal feature encoding such as
/// `reference/feature_encoding.json` (its `features` list): the names to give a model file
/// that stores none (e.g. [`xgboost::load_with_names`]).
pub fn feature_names_from_encoding(
    path: impl AsRef<std::path::Path>,
) -> Result<Vec<String>, AiError> {
    let path = path.as_ref();
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| AiError::Io {
        path: source.clone(),
        source: e,
    })?;
    #[derive(serde::Deserialize)]
    struct Enc {
        features: Vec<String>,
    }
    let enc: Enc = serde_json::from_str(&text).map_err(|e| AiError::ModelFormat {
        path: source,
        reason: format!("not a feature encoding document (needs a \"features\" list): {e}"),
    })?;
    Ok(enc.features)
}

/// The space a model's output is expressed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// Raw score before the link function (log-odds for binary logistic models).
    Margin,
    /// After the link function (a probability for classifiers; identity for regressors).
    Probability,
}

/// A fitted model that scores rows of features.
pub trait Model: Send + Sync {
    /// Names of the input features, in column order.
    fn feature_names(&self) -> &[String];

    /// Number of input features.
    fn n_features(&self) -> usize {
        self.feature_names().len()
    }

    /// Scores every row of `x` in the requested output space, one value per row.
    /// Fails with [`AiError::FeatureCount`] when `x` has the wrong number of columns.
    fn predict(&self, x: &Matrix, output: Output) -> Result<Vec<f64>, AiError>;

    /// Scores one row.
    fn predict_row(&self, row: &[f64], output: Output) -> Result<f64, AiError> {
        let m = Matrix::new(row.to_vec(), 1, row.len())?;
        Ok(self.predict(&m, output)?[0])
    }

    /// The model as a tree ensemble, when it is one: explainers use it for exact, fast paths
    /// (TreeSHAP, tree-aware KernelSHAP masking).
    fn as_tree_ensemble(&self) -> Option<&TreeEnsemble> {
        None
    }

    /// Checks that `x` has as many columns as the model has features.
    fn check_width(&self, x: &Matrix) -> Result<(), AiError> {
        if x.n_cols() != self.n_features() {
            return Err(AiError::FeatureCount {
                expected: self.n_features(),
                got: x.n_cols(),
            });
        }
        Ok(())
    }
}
