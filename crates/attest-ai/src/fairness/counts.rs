//! Confusion counts per group: a mergeable monoid, so chunked or streamed data give the same
//! result as one pass.

use std::collections::BTreeMap;

use serde::Serialize;

use super::groups::{encode_groups, GroupKey, SensitiveFeature};
use super::label::BinaryLabel;
use super::metric::Metric;
use crate::AiError;

/// Weighted and unweighted confusion counts of one group (or of everything).
///
/// `Default` is the identity of [`merge`](ConfusionCounts::merge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ConfusionCounts {
    /// Weighted true positives (y_true = 1, y_pred = 1).
    pub tp: f64,
    /// Weighted false positives (y_true = 0, y_pred = 1).
    pub fp: f64,
    /// Weighted true negatives (y_true = 0, y_pred = 0).
    pub tn: f64,
    /// Weighted false negatives (y_true = 1, y_pred = 0).
    pub fn_: f64,
    /// Rows that are true positives.
    pub n_tp: u64,
    /// Rows that are false positives.
    pub n_fp: u64,
    /// Rows that are true negatives.
    pub n_tn: u64,
    /// Rows that are false negatives.
    pub n_fn: u64,
    /// Weighted sum of scores (0 when no score was given).
    pub score_sum: f64,
}

impl ConfusionCounts {
    /// Adds one row.
    #[inline]
    pub fn add(&mut self, y_true: bool, y_pred: bool, weight: f64) {
        match (y_true, y_pred) {
            (true, true) => {
                self.tp += weight;
                self.n_tp += 1;
            }
            (false, true) => {
                self.fp += weight;
                self.n_fp += 1;
            }
            (false, false) => {
                self.tn += weight;
                self.n_tn += 1;
            }
            (true, false) => {
                self.fn_ += weight;
                self.n_fn += 1;
            }
        }
    }

    /// Adds `other` into `self` (the monoid operation).
    pub fn merge(&mut self, other: &ConfusionCounts) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.tn += other.tn;
        self.fn_ += other.fn_;
        self.n_tp += other.n_tp;
        self.n_fp += other.n_fp;
        self.n_tn += other.n_tn;
        self.n_fn += other.n_fn;
        self.score_sum += other.score_sum;
    }

    /// Number of rows.
    pub fn count(&self) -> u64 {
        self.n_tp + self.n_fp + self.n_tn + self.n_fn
    }

    /// Total weight.
    pub fn weight(&self) -> f64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// P(y_pred = 1).
    pub fn selection_rate(&self) -> Metric {
        Metric::rate(
            self.tp + self.fp,
            self.weight(),
            self.n_tp + self.n_fp,
            self.count(),
            || "selection rate".into(),
        )
    }

    /// TP / (TP + FN), recall.
    pub fn tpr(&self) -> Metric {
        Metric::rate(
            self.tp,
            self.tp + self.fn_,
            self.n_tp,
            self.n_tp + self.n_fn,
            || "true positive rate (no actual positives)".into(),
        )
    }

    /// FP / (FP + TN).
    pub fn fpr(&self) -> Metric {
        Metric::rate(
            self.fp,
            self.fp + self.tn,
            self.n_fp,
            self.n_fp + self.n_tn,
            || "false positive rate (no actual negatives)".into(),
        )
    }

    /// FN / (TP + FN).
    pub fn fnr(&self) -> Metric {
        Metric::rate(
            self.fn_,
            self.tp + self.fn_,
            self.n_fn,
            self.n_tp + self.n_fn,
            || "false negative rate (no actual positives)".into(),
        )
    }

    /// TN / (FP + TN).
    pub fn tnr(&self) -> Metric {
        Metric::rate(
            self.tn,
            self.fp + self.tn,
            self.n_tn,
            self.n_fp + self.n_tn,
            || "true negative rate (no actual negatives)".into(),
        )
    }

    /// TP / (TP + FP).
    pub fn precision(&self) -> Metric {
        Metric::rate(
            self.tp,
            self.tp + self.fp,
            self.n_tp,
            self.n_tp + self.n_fp,
            || "precision (no predicted positives)".into(),
        )
    }

    /// (TP + TN) / all.
    pub fn accuracy(&self) -> Metric {
        Metric::rate(
            self.tp + self.tn,
            self.weight(),
            self.n_tp + self.n_tn,
            self.count(),
            || "accuracy".into(),
        )
    }

    /// Weighted mean score.
    pub fn mean_score(&self) -> Metric {
        Metric::rate(
            self.score_sum,
            self.weight(),
            self.count(),
            self.count(),
            || "mean score".into(),
        )
    }
}

/// The inputs of a fairness computation, borrowed.
///
/// `L` is the label type (see [`BinaryLabel`]), `S` the sensitive value type (`&str`,
/// `String`, ...).
#[derive(Debug, Clone)]
pub struct FairnessInput<'a, L, S> {
    /// Actual labels, 0/1.
    pub y_true: &'a [L],
    /// Predicted labels, 0/1.
    pub y_pred: &'a [L],
    /// Optional model scores (only their per-group weighted mean is reported).
    pub score: Option<&'a [f64]>,
    /// One or more sensitive features; several mean intersectional groups.
    pub sensitive: Vec<SensitiveFeature<'a, S>>,
    /// Optional non-negative, finite sample weights.
    pub sample_weight: Option<&'a [f64]>,
}

impl<'a, L: BinaryLabel, S: AsRef<str>> FairnessInput<'a, L, S> {
    /// Labels and predictions, no sensitive feature yet.
    pub fn new(y_true: &'a [L], y_pred: &'a [L]) -> Self {
        FairnessInput {
            y_true,
            y_pred,
            score: None,
            sensitive: Vec::new(),
            sample_weight: None,
        }
    }

    /// Adds a sensitive feature column.
    pub fn sensitive(mut self, name: &'a str, values: &'a [S]) -> Self {
        self.sensitive.push(SensitiveFeature::new(name, values));
        self
    }

    /// Sets the scores.
    pub fn score(mut self, score: &'a [f64]) -> Self {
        self.score = Some(score);
        self
    }

    /// Sets the sample weights.
    pub fn weights(mut self, weights: &'a [f64]) -> Self {
        self.sample_weight = Some(weights);
        self
    }

    /// Validates and encodes: every row becomes a cell `group * 4 + y_true * 2 + y_pred`.
    pub fn encode(&self) -> Result<EncodedInput, AiError> {
        let n = self.y_true.len();
        if n == 0 {
            return Err(AiError::InvalidArgument("no rows: y_true is empty".into()));
        }
        let check_len = |column: &str, got: usize| {
            if got == n {
                Ok(())
            } else {
                Err(AiError::LengthMismatch {
                    column: column.to_owned(),
                    expected: n,
                    got,
                })
            }
        };
        check_len("y_pred", self.y_pred.len())?;
        if let Some(s) = self.score {
            check_len("score", s.len())?;
            if let Some((row, v)) = s.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(AiError::NonFinite {
                    column: "score".into(),
                    row,
                    value: *v,
                });
            }
        }
        if let Some(w) = self.sample_weight {
            check_len("sample_weight", w.len())?;
            for (row, v) in w.iter().enumerate() {
                if !v.is_finite() {
                    return Err(AiError::NonFinite {
                        column: "sample_weight".into(),
                        row,
                        value: *v,
                    });
                }
                if *v < 0.0 {
                    return Err(AiError::InvalidValue {
                        column: "sample_weight".into(),
                        row,
                        value: v.to_string(),
                        reason: "sample weights must be non-negative".into(),
                    });
                }
            }
        }
        let groups = encode_groups(&self.sensitive, n)?;
        let mut cells = groups.codes;
        for (row, ((cell, t), p)) in cells
            .iter_mut()
            .zip(self.y_true)
            .zip(self.y_pred)
            .enumerate()
        {
            let t = label(*t, "y_true", row)?;
            let p = label(*p, "y_pred", row)?;
            *cell = (*cell << 2) | (u32::from(t) << 1) | u32::from(p);
        }
        Ok(EncodedInput {
            feature_names: groups.feature_names,
            keys: groups.keys,
            cells,
            weights: self.sample_weight.map(<[f64]>::to_vec),
            scores: self.score.map(<[f64]>::to_vec),
        })
    }
}

fn label<L: BinaryLabel>(v: L, column: &str, row: usize) -> Result<bool, AiError> {
    v.as_binary().ok_or_else(|| AiError::InvalidValue {
        column: column.to_owned(),
        row,
        value: v.describe(),
        reason: "binary labels must be 0 or 1".into(),
    })
}

/// Validated rows as dense cells `group * 4 + y_true * 2 + y_pred` (what the single counting
/// pass and the bootstrap resamples read).
#[derive(Debug, Clone)]
pub struct EncodedInput {
    /// Sensitive feature names.
    pub feature_names: Vec<String>,
    /// Group keys by code, sorted.
    pub keys: Vec<GroupKey>,
    /// Cell of every row.
    pub cells: Vec<u32>,
    /// Sample weights, if any.
    pub weights: Option<Vec<f64>>,
    /// Scores, if any.
    pub scores: Option<Vec<f64>>,
}

impl EncodedInput {
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.cells.len()
    }

    /// Per-group counts in one pass.
    pub fn counts(&self) -> GroupCounts {
        let mut acc = vec![ConfusionCounts::default(); self.keys.len()];
        match &self.weights {
            None => {
                for &c in &self.cells {
                    acc[(c >> 2) as usize].add(c & 2 != 0, c & 1 != 0, 1.0);
                }
            }
            Some(w) => {
                for (&c, &w) in self.cells.iter().zip(w) {
                    acc[(c >> 2) as usize].add(c & 2 != 0, c & 1 != 0, w);
                }
            }
        }
        if let Some(s) = &self.scores {
            for (i, (&c, &s)) in self.cells.iter().zip(s).enumerate() {
                let w = self.weights.as_ref().map_or(1.0, |w| w[i]);
                acc[(c >> 2) as usize].score_sum += w * s;
            }
        }
        self.counts_from(acc)
    }

    /// Wraps per-code counts into keyed [`GroupCounts`].
    pub(crate) fn counts_from(&self, acc: Vec<ConfusionCounts>) -> GroupCounts {
        GroupCounts {
            feature_names: self.feature_names.clone(),
            groups: self.keys.iter().cloned().zip(acc).collect(),
        }
    }
}

/// Confusion counts keyed by group: a monoid under [`merge`](GroupCounts::merge) with
/// `Default` as identity, so chunks (or a stream) can be counted separately and combined.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GroupCounts {
    feature_names: Vec<String>,
    groups: BTreeMap<GroupKey, ConfusionCounts>,
}

impl GroupCounts {
    /// Validates, encodes and counts `input` in one pass.
    pub fn from_input<L: BinaryLabel, S: AsRef<str>>(
        input: &FairnessInput<'_, L, S>,
    ) -> Result<Self, AiError> {
        Ok(input.encode()?.counts())
    }

    /// Builds counts from explicit parts (e.g. restored from storage).
    pub fn from_parts(
        feature_names: Vec<String>,
        groups: BTreeMap<GroupKey, ConfusionCounts>,
    ) -> Result<Self, AiError> {
        if let Some(k) = groups.keys().find(|k| k.0.len() != feature_names.len()) {
            return Err(AiError::InvalidArgument(format!(
                "group {k} has {} values but there are {} sensitive features",
                k.0.len(),
                feature_names.len()
            )));
        }
        Ok(GroupCounts {
            feature_names,
            groups,
        })
    }

    /// Adds `other` into `self`. Fails if both are non-empty with different sensitive features.
    pub fn merge(&mut self, other: &GroupCounts) -> Result<(), AiError> {
        if other.feature_names.is_empty() && other.groups.is_empty() {
            return Ok(());
        }
        if self.feature_names.is_empty() && self.groups.is_empty() {
            self.feature_names = other.feature_names.clone();
        } else if self.feature_names != other.feature_names {
            return Err(AiError::InvalidArgument(format!(
                "cannot merge counts over sensitive features [{}] with counts over [{}]",
                self.feature_names.join(", "),
                other.feature_names.join(", ")
            )));
        }
        for (k, c) in &other.groups {
            self.groups.entry(k.clone()).or_default().merge(c);
        }
        Ok(())
    }

    /// Sensitive feature names.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Groups in key order with their counts.
    pub fn groups(&self) -> impl ExactSizeIterator<Item = (&GroupKey, &ConfusionCounts)> {
        self.groups.iter()
    }

    /// Counts of one group.
    pub fn get(&self, key: &GroupKey) -> Option<&ConfusionCounts> {
        self.groups.get(key)
    }

    /// Counts over all groups.
    pub fn overall(&self) -> ConfusionCounts {
        let mut all = ConfusionCounts::default();
        for c in self.groups.values() {
            all.merge(c);
        }
        all
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are no groups.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}
