//! Training: a deterministic gradient-boosted trees learner for binary classification.
//!
//! [`train_gbdt`] fits a [`GbdtModel`] (logistic loss, second-order / Newton leaf weights, L2
//! regularisation, depth-wise growth, histogram splits over at most
//! [`GbdtParams::max_bins`] cut points per feature) and produces the same [`TreeEnsemble`] the
//! XGBoost loader builds. [`GbdtModel::to_xgboost_json`] writes an XGBoost JSON model
//! (`binary:logistic`) that [`crate::model::xgboost::parse`] reads back to an identical
//! ensemble — and that XGBoost itself can load: thresholds, leaf values, weights and covers are
//! rounded to `f32` as XGBoost stores them.
//!
//! # Determinism
//! Everything runs on one thread, sums are taken in row order, ties between equally good splits
//! go to the lowest feature index and then the lowest cut, and nothing is random: the same
//! data and parameters give the same model bit for bit, on every run and platform with IEEE
//! `f64`.

mod export;
mod gbdt;

pub use gbdt::{train_gbdt, GbdtModel, GbdtParams};

/// Area under the ROC curve of `scores` for binary `labels` (1 = positive), with ties counted
/// half (the Mann–Whitney U statistic). Fails on a length mismatch, a non-finite score or when
/// one class is absent.
pub fn roc_auc(scores: &[f64], labels: &[f64]) -> Result<f64, crate::AiError> {
    if scores.len() != labels.len() {
        return Err(crate::AiError::LengthMismatch {
            column: "labels".to_string(),
            expected: scores.len(),
            got: labels.len(),
        });
    }
    if let Some((row, &value)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(crate::AiError::NonFinite {
            column: "scores".to_string(),
            row,
            value,
        });
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let n_pos = labels.iter().filter(|&&y| y == 1.0).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return Err(crate::AiError::InvalidArgument(
            "AUC needs both classes among the labels".to_string(),
        ));
    }
    // Sum of (average) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] == 1.0 {
                rank_sum += avg_rank;
            }
        }
        i = j + 1;
    }
    Ok((rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_orderings() {
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.3, 0.4], &[0.0, 0.0, 1.0, 1.0]).unwrap(),
            1.0
        );
        assert_eq!(
            roc_auc(&[0.4, 0.3, 0.2, 0.1], &[0.0, 0.0, 1.0, 1.0]).unwrap(),
            0.0
        );
        assert_eq!(roc_auc(&[0.5, 0.5], &[0.0, 1.0]).unwrap(), 0.5);
        // sklearn.metrics.roc_auc_score([0,0,1,1],[0.1,0.4,0.35,0.8]) == 0.75
        assert_eq!(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]).unwrap(),
            0.75
        );
        assert!(roc_auc(&[0.1], &[1.0]).is_err());
        assert!(roc_auc(&[0.1, 0.2], &[1.0]).is_err());
    }
}
