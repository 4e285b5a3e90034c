//! Global importance: mean |SHAP| per feature over a model version's reference sample,
//! computed once per model version and cached.
//!
//! The version is loaded through the lending service's registry (the same parsed model and
//! explainer tables that decide), so every process sharing the store computes the same
//! figures. SHAP values are exact (TreeSHAP for tree ensembles, linear SHAP for linear
//! models) in log-odds of default.

use std::collections::HashMap;
use std::sync::Arc;

use attest_lending::{LendingError, LendingService, ModelRef};
use chrono::Utc;
use thiserror::Error;
use tokio::sync::Mutex;

use super::view::ImportanceView;

/// Why global importance could not be computed.
#[derive(Debug, Error)]
pub enum ImportanceError {
    /// Loading the model version or scoring a reference row failed.
    #[error("model {model}: {source}")]
    Lending {
        /// The model concerned.
        model: String,
        /// The domain's error.
        source: LendingError,
    },
    /// The version has no reference sample to average over.
    #[error("model {0} has no reference sample")]
    NoReference(String),
    /// The background computation panicked or was cancelled.
    #[error("importance computation did not finish: {0}")]
    Join(String),
}

/// Cache of global importance per model version. Concurrent requests compute a version once;
/// failures are not cached.
#[derive(Debug, Default)]
pub struct ImportanceCache {
    cache: Mutex<HashMap<ModelRef, Arc<ImportanceView>>>,
}

impl ImportanceCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The importance of `model`, computing it on first use.
    pub async fn get(
        &self,
        lending: &LendingService,
        model: &ModelRef,
    ) -> Result<Arc<ImportanceView>, ImportanceError> {
        // Held across the computation so concurrent page loads compute it once.
        let mut cache = self.cache.lock().await;
        if let Some(v) = cache.get(model) {
            return Ok(v.clone());
        }
        let loaded = lending
            .model(model)
            .await
            .map_err(|source| ImportanceError::Lending {
                model: model.to_string(),
                source,
            })?;
        let model_ref = model.clone();
        let view = tokio::task::spawn_blocking(move || {
            let name = model_ref.to_string();
            let reference = loaded
                .reference
                .as_ref()
                .filter(|m| m.n_rows() > 0)
                .ok_or_else(|| ImportanceError::NoReference(name.clone()))?;
            let names = loaded.schema.names();
            let rows = reference
                .rows()
                .map(|row| loaded.score(row).map(|s| s.shap))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| ImportanceError::Lending {
                    model: name.clone(),
                    source,
                })?;
            Ok(mean_abs(model_ref, &names, &rows))
        })
        .await
        .map_err(|e| ImportanceError::Join(e.to_string()))??;
        let view = Arc::new(view);
        cache.insert(model.clone(), view.clone());
        Ok(view)
    }
}

/// Mean |value| per feature over `rows` (each in `names` order), largest first (ties by
/// name).
pub fn mean_abs(model: ModelRef, names: &[String], rows: &[Vec<f64>]) -> ImportanceView {
    let mut sums = vec![0.0; names.len()];
    for r in rows {
        for (s, v) in sums.iter_mut().zip(r) {
            *s += v.abs();
        }
    }
    let n = rows.len().max(1) as f64;
    let mut features: Vec<(String, f64)> = names
        .iter()
        .cloned()
        .zip(sums.into_iter().map(|s| s / n))
        .collect();
    features.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ImportanceView {
        model,
        rows: rows.len(),
        features,
        computed_at: Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_abs_averages_magnitudes_and_sorts() {
        let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let rows = vec![vec![1.0, -4.0, 0.5], vec![-3.0, 2.0, 0.5]];
        let v = mean_abs(
            ModelRef {
                id: "m".into(),
                version: 1,
            },
            &names,
            &rows,
        );
        assert_eq!(v.rows, 2);
        assert_eq!(
            v.features,
            vec![
                ("b".to_string(), 3.0),
                ("a".to_string(), 2.0),
                ("c".to_string(), 0.5)
            ]
        );
    }
}
