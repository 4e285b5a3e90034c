//! KernelSHAP: model-agnostic Shapley values by weighted linear regression over coalitions,
//! following the semantics of shap's `KernelExplainer` (shap 0.51, `shap/explainers/_kernel.py`).
//!
//! For a row `x`, a background [`Background`] (rows `b` with weights `w_b` summing to 1) and a
//! coalition `S` of features, the value of the coalition is
//! `v(S) = Σ_b w_b f(z)` with `z_j = x_j` for `j ∈ S` and `z_j = b_j` otherwise. The base value
//! is `v(∅)`, the weighted mean model output over the background.
//!
//! What is reproduced from shap:
//! - only *varying* features take part: a feature whose value in `x` is `isclose` (numpy's
//!   `rtol = 1e-5`, `atol = 1e-8`, NaN equal to NaN) to its value in every background row gets
//!   0 and always takes the background value in the hybrid rows;
//! - `nsamples` defaults to `2 M + 2048` (`M` = number of varying features) and is capped at
//!   `2^M - 2`;
//! - coalitions: whole subset sizes (paired with their complements) are enumerated from size 1
//!   up while the remaining budget covers them under the Shapley-kernel weight allocation, the
//!   rest of the budget is drawn at random (paired with complements, duplicates merged by
//!   incrementing their weight) and those weights rescaled to the weight left;
//! - the weighted least squares is solved with the efficiency constraint by eliminating the
//!   last feature, so `base_value + Σ values == prediction` holds to rounding; an (exactly or
//!   numerically) singular normal matrix falls back to a pseudo-inverse;
//! - 0 varying features → all zeros; 1 varying feature → it gets `f(x) - base`.
//!
//! What differs: the random stream (ChaCha8 seeded by [`KernelConfig::seed`], re-seeded for
//! every explained row so results do not depend on row order or thread count, where numpy's
//! global stream runs on across rows), hence agreement with shap is within sampling error
//! unless the whole coalition space is enumerated, where both give exact Shapley values.
//! L1 feature selection: [`L1Reg::None`] (default) is shap's `l1_reg=False`;
//! [`L1Reg::NumFeatures`] is `l1_reg="num_features(r)"` (LARS); shap's AIC/BIC/alpha variants
//! are not offered.
//!
//! # Speed
//! The generic path builds the `N` hybrid rows of each coalition and calls
//! [`Model::predict`] in batches. When [`Model::as_tree_ensemble`] is `Some`, two exact fast
//! paths exploit the tree structure (both give the same numbers as the generic path up to
//! floating-point summation order):
//! - [`Strategy::TreeBitset`]: for each coalition, one traversal per tree carries the set of
//!   background rows (a bitset) down the tree: at a node whose feature is in `S` the whole set
//!   follows `x`'s direction, otherwise it is split by a precomputed per-node bitset of the
//!   background rows going left; each leaf adds its value to the margin of the rows that reach
//!   it;
//! - [`Strategy::TreeTable`] (few varying features): for each background row, the hybrid
//!   margin as a function of `S` is expanded once into its Möbius (interaction) coefficients
//!   by one branching walk per tree, then a subset-sum (zeta) transform yields the margin of
//!   *every* coalition at once; the sampled coalitions are read from that table.
//!
//! The link is applied per background row before averaging (shap averages probabilities).

use std::collections::HashMap;

use rand::distributions::{Distribution, WeightedIndex};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::model::{Link, TreeEnsemble};
use crate::{AiError, Explanation, Matrix, Model, Output};

/// Background data: the rows that stand in for "missing" features, with weights summing to 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Background {
    data: Matrix,
    weights: Vec<f64>,
}

impl Background {
    /// Every row of `data` with equal weight.
    pub fn new(data: Matrix) -> Result<Self, AiError> {
        let n = data.n_rows();
        Self::weighted(data, vec![1.0; n])
    }

    /// Rows with the given non-negative weights (normalised to sum to 1).
    pub fn weighted(data: Matrix, weights: Vec<f64>) -> Result<Self, AiError> {
        if data.n_rows() == 0 {
            return Err(AiError::InvalidArgument(
                "the background has no rows".to_string(),
            ));
        }
        if data.n_cols() == 0 {
            return Err(AiError::InvalidArgument(
                "the background has no columns".to_string(),
            ));
        }
        if weights.len() != data.n_rows() {
            return Err(AiError::InvalidArgument(format!(
                "{} background weights for {} rows",
                weights.len(),
                data.n_rows()
            )));
        }
        if let Some((row, &value)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
        {
            return Err(AiError::NonFinite {
                column: "background weight".to_string(),
                row,
                value,
            });
        }
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return Err(AiError::InvalidArgument(
                "background weights sum to 0".to_string(),
            ));
        }
        let weights = weights.into_iter().map(|w| w / total).collect();
        Ok(Background { data, weights })
    }

    /// `k` rows drawn without replacement (seeded), like `shap.sample`; all rows when
    /// `k >= n_rows`.
    pub fn sample(data: &Matrix, k: usize, seed: u64) -> Result<Self, AiError> {
        if k == 0 {
            return Err(AiError::InvalidArgument(
                "background sample size k must be at least 1".to_string(),
            ));
        }
        if k >= data.n_rows() {
            return Self::new(data.clone());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut idx = rand::seq::index::sample(&mut rng, data.n_rows(), k).into_vec();
        idx.sort_unstable();
        let mut out = Vec::with_capacity(k * data.n_cols());
        for i in idx {
            out.extend_from_slice(data.row(i));
        }
        Self::new(Matrix::new(out, k, data.n_cols())?)
    }

    /// `k` weighted centres from seeded k-means (k-means++ start, Lloyd iterations), like
    /// `shap.kmeans`: each centre coordinate is then replaced by the closest value that feature
    /// takes in `data` (shap's `round_values=True`) and weighted by its cluster size. Empty
    /// clusters are dropped. `data` must be finite.
    pub fn kmeans(data: &Matrix, k: usize, seed: u64) -> Result<Self, AiError> {
        if k == 0 {
            return Err(AiError::InvalidArgument(
                "k-means needs k >= 1 clusters".to_string(),
            ));
        }
        let (n, p) = (data.n_rows(), data.n_cols());
        if n == 0 {
            return Err(AiError::InvalidArgument(
                "the background has no rows".to_string(),
            ));
        }
        for (i, row) in data.rows().enumerate() {
            if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                return Err(AiError::NonFinite {
                    column: format!("feature {j}"),
                    row: i,
                    value: row[j],
                });
            }
        }
        if k >= n {
            return Self::new(data.clone());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dist2 =
            |a: &[f64], b: &[f64]| -> f64 { a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum() };
        // k-means++ initialisation.
        let mut centres: Vec<f64> = Vec::with_capacity(k * p);
        let first = rand::Rng::gen_range(&mut rng, 0..n);
        centres.extend_from_slice(data.row(first));
        let mut closest: Vec<f64> = data.rows().map(|r| dist2(r, data.row(first))).collect();
        while centres.len() < k * p {
            let total: f64 = closest.iter().sum();
            let next = if total > 0.0 {
                let target = rand::Rng::gen::<f64>(&mut rng) * total;
                let mut acc = 0.0;
                let mut pick = n - 1;
                for (i, d) in closest.iter().enumerate() {
                    acc += d;
                    if acc > target {
                        pick = i;
                        break;
                    }
                }
                pick
            } else {
                // All remaining points coincide with a centre: any row will do.
                rand::Rng::gen_range(&mut rng, 0..n)
            };
            centres.extend_from_slice(data.row(next));
            for (c, r) in closest.iter_mut().zip(data.rows()) {
                *c = c.min(dist2(r, data.row(next)));
            }
        }
        // Lloyd iterations.
        let mut labels = vec![usize::MAX; n];
        for _ in 0..300 {
            let mut changed = false;
            for (i, r) in data.rows().enumerate() {
                let mut best = (f64::INFINITY, 0usize);
                for c in 0..k {
                    let d = dist2(r, &centres[c * p..(c + 1) * p]);
                    if d < best.0 {
                        best = (d, c);
                    }
                }
                if labels[i] != best.1 {
                    labels[i] = best.1;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
            let mut sums = vec![0.0; k * p];
            let mut counts = vec![0usize; k];
            for (r, &l) in data.rows().zip(&labels) {
                counts[l] += 1;
                for (s, v) in sums[l * p..(l + 1) * p].iter_mut().zip(r) {
                    *s += v;
                }
            }
            for c in 0..k {
                if counts[c] > 0 {
                    for j in 0..p {
                        centres[c * p + j] = sums[c * p + j] / counts[c] as f64;
                    }
                }
            }
        }
        let mut counts = vec![0usize; k];
        for &l in &labels {
            counts[l] += 1;
        }
        let mut out = Vec::new();
        let mut weights = Vec::new();
        for c in 0..k {
            if counts[c] == 0 {
                continue;
            }
            for j in 0..p {
                let target = centres[c * p + j];
                let mut best = (f64::INFINITY, target);
                for r in data.rows() {
                    let d = (r[j] - target).abs();
                    if d < best.0 {
                        best = (d, r[j]);
                    }
                }
                out.push(best.1);
            }
            weights.push(counts[c] as f64);
        }
        let rows = weights.len();
        Self::weighted(Matrix::new(out, rows, p)?, weights)
    }

    /// The background rows.
    pub fn data(&self) -> &Matrix {
        &self.data
    }

    /// The row weights (summing to 1).
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Number of background rows.
    pub fn n_rows(&self) -> usize {
        self.data.n_rows()
    }
}

/// How coalition values are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// A tree path when the model is a tree ensemble (the cheaper of the two by a cost
    /// estimate), otherwise the generic path.
    #[default]
    Auto,
    /// Hybrid rows through [`Model::predict`], for any model.
    Generic,
    /// One bitset-carrying traversal per tree and coalition (tree ensembles only).
    TreeBitset,
    /// Per background row, a table of the margin of every coalition (tree ensembles with at
    /// most [`MAX_TABLE_FEATURES`] varying features only).
    TreeTable,
}

/// The largest number of varying features [`Strategy::TreeTable`] handles (a table of
/// `2^M` margins per background row).
pub const MAX_TABLE_FEATURES: usize = 21;

/// KernelSHAP settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelConfig {
    /// Coalitions evaluated per row; `None` = shap's auto `2 M + 2048`. Must be at least 2.
    pub nsamples: Option<usize>,
    /// Output space explained ([`Output::Probability`] matches shap on `predict_proba`).
    pub output: Output,
    /// Seed of the coalition sampling (every row starts from this seed).
    pub seed: u64,
    /// How coalition values are computed.
    pub strategy: Strategy,
    /// Feature selection before the regression (shap's `l1_reg`).
    pub l1_reg: L1Reg,
}

/// shap's `l1_reg` options that are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L1Reg {
    /// No selection: plain constrained weighted least squares (shap `l1_reg=False`).
    #[default]
    None,
    /// Keep the `r` features that least-angle regression selects first, give the others 0
    /// (shap `l1_reg="num_features(r)"`, shap 0.51's default with `r = 10`). `r = 0` is
    /// rejected.
    NumFeatures(usize),
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            nsamples: None,
            output: Output::Probability,
            seed: 0,
            strategy: Strategy::Auto,
            l1_reg: L1Reg::None,
        }
    }
}

/// Per-tree precomputation for the tree paths: for every node, the bitset of background rows
/// that go left (`words` u64 per node).
#[derive(Debug)]
struct TreePrep<'a> {
    ensemble: &'a TreeEnsemble,
    words: usize,
    left_sets: Vec<Vec<u64>>,
    max_depth: usize,
}

impl<'a> TreePrep<'a> {
    fn new(ensemble: &'a TreeEnsemble, background: &Matrix) -> Result<Self, AiError> {
        let n = background.n_rows();
        let words = n.div_ceil(64);
        let mut left_sets = Vec::with_capacity(ensemble.trees.len());
        let mut max_depth = 0;
        for (t, tree) in ensemble.trees.iter().enumerate() {
            let mut sets = vec![0u64; tree.nodes.len() * words];
            for (i, node) in tree.nodes.iter().enumerate() {
                if node.is_leaf() {
                    continue;
                }
                let f = node.feature as usize;
                if f >= background.n_cols()
                    || [node.left, node.right]
                        .iter()
                        .any(|&c| c as usize >= tree.nodes.len())
                {
                    return Err(AiError::ModelFormat {
                        path: "tree ensemble".to_string(),
                        reason: format!("tree {t} node {i} has an out-of-range feature or child"),
                    });
                }
                for (b, row) in background.rows().enumerate() {
                    if node.goes_left(row[f]) {
                        sets[i * words + b / 64] |= 1u64 << (b % 64);
                    }
                }
            }
            max_depth = max_depth.max(tree.max_depth());
            left_sets.push(sets);
        }
        Ok(TreePrep {
            ensemble,
            words,
            left_sets,
            max_depth,
        })
    }
}

/// KernelSHAP explainer over a model and a background.
pub struct KernelExplainer<'a> {
    model: &'a dyn Model,
    background: Background,
    config: KernelConfig,
    base_value: f64,
    tree: Option<TreePrep<'a>>,
}

impl std::fmt::Debug for KernelExplainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelExplainer")
            .field("n_features", &self.model.n_features())
            .field("background_rows", &self.background.n_rows())
            .field("config", &self.config)
            .field("base_value", &self.base_value)
            .field("tree_path", &self.tree.is_some())
            .finish()
    }
}

/// numpy's `isclose(a, b, rtol=1e-5, atol=1e-8, equal_nan=True)` with `b` the reference.
fn isclose(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    (a - b).abs() <= 1e-8 + 1e-5 * b.abs()
}

impl<'a> KernelExplainer<'a> {
    /// Builds the explainer and computes the base value (weighted mean model output over the
    /// background). Fails on a background whose width differs from the model's, on
    /// `nsamples < 2`, on [`Strategy::TreeBitset`] / [`Strategy::TreeTable`] for a model that is
    /// not a tree ensemble, and on a non-finite base value.
    pub fn new(
        model: &'a dyn Model,
        background: Background,
        config: KernelConfig,
    ) -> Result<Self, AiError> {
        model.check_width(background.data())?;
        if let Some(ns) = config.nsamples {
            if ns < 2 {
                return Err(AiError::InvalidArgument(format!(
                    "nsamples must be at least 2, got {ns}"
                )));
            }
        }
        if config.l1_reg == L1Reg::NumFeatures(0) {
            return Err(AiError::InvalidArgument(
                "l1_reg num_features(k) needs k >= 1".to_string(),
            ));
        }
        let ensemble = model.as_tree_ensemble();
        if ensemble.is_none()
            && matches!(config.strategy, Strategy::TreeBitset | Strategy::TreeTable)
        {
            return Err(AiError::InvalidArgument(format!(
                "strategy {:?} needs a tree-ensemble model",
                config.strategy
            )));
        }
        let tree = match (config.strategy, ensemble) {
            (Strategy::Generic, _) | (_, None) => None,
            (_, Some(e)) => Some(TreePrep::new(e, background.data())?),
        };
        let preds = model.predict(background.data(), config.output)?;
        let base_value: f64 = preds
            .iter()
            .zip(background.weights())
            .map(|(y, w)| y * w)
            .sum();
        if !base_value.is_finite() {
            return Err(AiError::NonFinite {
                column: "base value (mean background prediction)".to_string(),
                row: 0,
                value: base_value,
            });
        }
        tracing::debug!(
            background_rows = background.n_rows(),
            base_value,
            tree_path = tree.is_some(),
            "KernelSHAP explainer ready"
        );
        Ok(KernelExplainer {
            model,
            background,
            config,
            base_value,
            tree,
        })
    }

    /// The base value `v(∅)`.
    pub fn base_value(&self) -> f64 {
        self.base_value
    }

    /// The settings.
    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    /// Explains every row of `x` (rows in parallel on rayon's current pool). Each row is
    /// seeded with [`KernelConfig::seed`], so row `i` equals `explain_row(x.row(i))`.
    pub fn explain(&self, x: &Matrix) -> Result<Vec<Explanation>, AiError> {
        self.model.check_width(x)?;
        (0..x.n_rows())
            .into_par_iter()
            .map(|i| self.explain_row(x.row(i)).map_err(|e| with_row(e, i)))
            .collect()
    }

    /// Explains one row.
    pub fn explain_row(&self, x: &[f64]) -> Result<Explanation, AiError> {
        let p = self.model.n_features();
        if x.len() != p {
            return Err(AiError::FeatureCount {
                expected: p,
                got: x.len(),
            });
        }
        let fx = self.model.predict_row(x, self.config.output)?;
        if !fx.is_finite() {
            let column = x
                .iter()
                .position(|v| v.is_nan())
                .map(|j| self.model.feature_names()[j].clone())
                .unwrap_or_else(|| "model output".to_string());
            return Err(AiError::NonFinite {
                column,
                row: 0,
                value: fx,
            });
        }
        let bg = self.background.data();
        let varying: Vec<usize> = (0..p)
            .filter(|&j| bg.rows().any(|b| !isclose(x[j], b[j])))
            .collect();
        let m = varying.len();
        let mut values = vec![0.0; p];
        let diff = fx - self.base_value;
        if m == 1 {
            values[varying[0]] = diff;
        } else if m > 1 {
            let max_samples = if m <= 30 { (1usize << m) - 2 } else { 1 << 30 };
            let nsamples = self
                .config
                .nsamples
                .unwrap_or(2 * m + 2048)
                .min(max_samples);
            let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
            let coalitions = Coalitions::sample(m, nsamples, &mut rng)?;
            let ey = self.coalition_values(x, &varying, &coalitions)?;
            let cols: Vec<usize> = match self.config.l1_reg {
                L1Reg::None => (0..m).collect(),
                L1Reg::NumFeatures(r) => lars_select(&coalitions, &ey, self.base_value, diff, r),
            };
            let phi = solve_constrained(&coalitions, &ey, self.base_value, diff, &cols)?;
            for (k, &j) in varying.iter().enumerate() {
                values[j] = phi[k];
            }
        }
        Ok(Explanation {
            base_value: self.base_value,
            values,
            prediction: fx,
            output: self.config.output,
        })
    }

    /// `v(S)` for every coalition, by the configured strategy.
    fn coalition_values(
        &self,
        x: &[f64],
        varying: &[usize],
        co: &Coalitions,
    ) -> Result<Vec<f64>, AiError> {
        let ey = match &self.tree {
            None => self.values_generic(x, varying, co)?,
            Some(prep) => {
                let m = varying.len();
                let n = self.background.n_rows();
                let trees = prep.ensemble.trees.len().max(1);
                let use_table = match self.config.strategy {
                    Strategy::TreeTable => {
                        if m > MAX_TABLE_FEATURES {
                            return Err(AiError::InvalidArgument(format!(
                                "strategy TreeTable handles at most {MAX_TABLE_FEATURES} varying features, the row has {m}"
                            )));
                        }
                        true
                    }
                    Strategy::TreeBitset => false,
                    _ => {
                        // Rough operation counts of the two tree paths.
                        let table = (n as f64)
                            * ((m as f64) * (1u64 << m.min(40)) as f64 / 2.0 + 64.0 * trees as f64);
                        let bitset = (co.len() as f64) * (trees as f64) * (n as f64 + 32.0);
                        m <= MAX_TABLE_FEATURES && table < bitset
                    }
                };
                if use_table {
                    self.values_table(prep, x, varying, co)
                } else {
                    self.values_bitset(prep, x, varying, co)
                }
            }
        };
        if let Some((i, &v)) = ey.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(AiError::NonFinite {
                column: "coalition value".to_string(),
                row: i,
                value: v,
            });
        }
        Ok(ey)
    }

    /// Generic path: hybrid rows through `Model::predict`, in batches.
    fn values_generic(
        &self,
        x: &[f64],
        varying: &[usize],
        co: &Coalitions,
    ) -> Result<Vec<f64>, AiError> {
        let bg = self.background.data();
        let (n, p) = (bg.n_rows(), bg.n_cols());
        let weights = self.background.weights();
        let per_batch = (16_384 / n).max(1);
        let mut ey = Vec::with_capacity(co.len());
        let mut start = 0;
        while start < co.len() {
            let end = (start + per_batch).min(co.len());
            let mut data = Vec::with_capacity((end - start) * n * p);
            for s in start..end {
                let mask = co.mask(s);
                for b in bg.rows() {
                    let at = data.len();
                    data.extend_from_slice(b);
                    for (k, &j) in varying.iter().enumerate() {
                        if bit(mask, k) {
                            data[at + j] = x[j];
                        }
                    }
                }
            }
            let rows = (end - start) * n;
            let preds = self
                .model
                .predict(&Matrix::new(data, rows, p)?, self.config.output)?;
            for chunk in preds.chunks_exact(n) {
                let mut acc = 0.0;
                for (y, w) in chunk.iter().zip(weights) {
                    acc += y * w;
                }
                ey.push(acc);
            }
            start = end;
        }
        Ok(ey)
    }

    /// The link applied per background row in the configured output space.
    fn out_link(&self, ensemble: &TreeEnsemble) -> Link {
        match self.config.output {
            Output::Margin => Link::Identity,
            Output::Probability => ensemble.link,
        }
    }

    /// Tree path 1: bitset-carrying traversals, one per tree and coalition (and block of 128
    /// background rows).
    fn values_bitset(
        &self,
        prep: &TreePrep<'_>,
        x: &[f64],
        varying: &[usize],
        co: &Coalitions,
    ) -> Vec<f64> {
        let ens = prep.ensemble;
        let n = self.background.n_rows();
        let words = prep.words;
        let weights = self.background.weights();
        let link = self.out_link(ens);
        let var_of = varying_index(varying, self.model.n_features());
        let (walks, _) = row_walks(prep, x, &var_of);
        let blocks = n.div_ceil(128);
        let mut margins = vec![0.0; n];
        let mut in_s = vec![false; varying.len()];
        let mut stack: Vec<(u32, [u64; 2])> = Vec::with_capacity(2 * prep.max_depth + 2);
        let mut ey = Vec::with_capacity(co.len());
        for s in 0..co.len() {
            let mask = co.mask(s);
            for (k, v) in in_s.iter_mut().enumerate() {
                *v = bit(mask, k);
            }
            margins.iter_mut().for_each(|m| *m = 0.0);
            for blk in 0..blocks {
                let w0 = 2 * blk;
                let rows_in = |w: usize| -> u64 {
                    let lo = w * 64;
                    match n.saturating_sub(lo) {
                        0 => 0,
                        r if r >= 64 => u64::MAX,
                        r => (1u64 << r) - 1,
                    }
                };
                let full = [rows_in(w0), rows_in(w0 + 1)];
                for (t, tree) in ens.trees.iter().enumerate() {
                    let walk = &walks[t];
                    let left_sets = &prep.left_sets[t];
                    stack.push((0, full));
                    while let Some((start, mut set)) = stack.pop() {
                        let mut i = start as usize;
                        loop {
                            let wn = walk[i];
                            if wn.x_child == NONE {
                                let v = tree.nodes[i].value;
                                for (k, &word) in set.iter().enumerate() {
                                    let mut word = word;
                                    while word != 0 {
                                        let b = (w0 + k) * 64 + word.trailing_zeros() as usize;
                                        margins[b] += v;
                                        word &= word - 1;
                                    }
                                }
                                break;
                            }
                            if wn.var != NONE && in_s[wn.var as usize] {
                                // In the coalition: the whole set follows x.
                                i = wn.x_child as usize;
                                continue;
                            }
                            let l0 = left_sets[i * words + w0];
                            let l1 = if w0 + 1 < words {
                                left_sets[i * words + w0 + 1]
                            } else {
                                0
                            };
                            let left = [set[0] & l0, set[1] & l1];
                            let right = [set[0] & !l0, set[1] & !l1];
                            let (lc, rc) = if wn.x_left {
                                (wn.x_child, wn.o_child)
                            } else {
                                (wn.o_child, wn.x_child)
                            };
                            let has_left = left[0] | left[1] != 0;
                            let has_right = right[0] | right[1] != 0;
                            if has_left && has_right {
                                stack.push((rc, right));
                            }
                            if has_left {
                                i = lc as usize;
                                set = left;
                            } else {
                                i = rc as usize;
                                set = right;
                            }
                        }
                    }
                }
            }
            let mut acc = 0.0;
            for (m, w) in margins.iter().zip(weights) {
                acc += link.apply(ens.base_margin + m) * w;
            }
            ey.push(acc);
        }
        ey
    }

    /// Tree path 2: per background row, the Möbius coefficients of the hybrid margin as a
    /// function of the coalition, then a zeta transform to the margin of every coalition.
    fn values_table(
        &self,
        prep: &TreePrep<'_>,
        x: &[f64],
        varying: &[usize],
        co: &Coalitions,
    ) -> Vec<f64> {
        let ens = prep.ensemble;
        let m = varying.len();
        let words = prep.words;
        let weights = self.background.weights();
        let link = self.out_link(ens);
        let var_of = varying_index(varying, self.model.n_features());
        let (walks, diffs) = row_walks(prep, x, &var_of);
        let bg = self.background.data();
        // Coalitions as bitmasks over the varying features (m <= MAX_TABLE_FEATURES < 64).
        let masks: Vec<u32> = (0..co.len()).map(|s| co.mask(s)[0] as u32).collect();
        let mut table: Vec<f64> = Vec::with_capacity(1usize << m);
        let mut ey = vec![0.0; co.len()];
        // Position of each varying feature among those where x and b differ.
        let mut cpos = vec![0u32; m];
        // (node, in-S set A, out-of-S set B) frames of the branching walk, in compressed bits.
        let mut stack: Vec<(u32, u32, u32)> = Vec::new();
        let mut lut = [[0u32; 128]; 3];
        for (b, &wb) in weights.iter().enumerate() {
            // Only features where x and b differ can change b's hybrid margin: the table is
            // over those `d` features (`2^d` entries instead of `2^m`).
            let brow = bg.row(b);
            let mut dmask = 0u32;
            let mut d = 0u32;
            for (k, &j) in varying.iter().enumerate() {
                let same = x[j] == brow[j] || (x[j].is_nan() && brow[j].is_nan());
                if !same {
                    dmask |= 1 << k;
                    cpos[k] = d;
                    d += 1;
                }
            }
            table.clear();
            table.resize(1usize << d, 0.0);
            let (bw, bm) = (b / 64, 1u64 << (b % 64));
            for (t, tree) in ens.trees.iter().enumerate() {
                let walk = &walks[t];
                let diff = &diffs[t];
                stack.push((0, 0, 0));
                while let Some((start, mut a_set, b_set)) = stack.pop() {
                    let mut i = start as usize;
                    loop {
                        let wn = walk[i];
                        if wn.x_child == NONE {
                            let v = tree.nodes[i].value;
                            scatter_mobius(&mut table, v, a_set as usize, b_set as usize);
                            break;
                        }
                        if diff[i * words + bw] & bm == 0 {
                            // b goes x's way: the coalition does not matter here.
                            i = wn.x_child as usize;
                        } else if wn.var == NONE {
                            // A non-varying feature always takes b's value.
                            i = wn.o_child as usize;
                        } else {
                            // Different directions imply different values: var is in dmask.
                            let kb = 1u32 << cpos[wn.var as usize];
                            if a_set & kb != 0 {
                                i = wn.x_child as usize;
                            } else if b_set & kb != 0 {
                                i = wn.o_child as usize;
                            } else {
                                stack.push((wn.o_child, a_set, b_set | kb));
                                a_set |= kb;
                                i = wn.x_child as usize;
                            }
                        }
                    }
                }
            }
            zeta_transform(&mut table, d as usize);
            // Compress a coalition to the table index (a parallel bit extract of dmask) with
            // three 7-bit lookup tables.
            let mut shifts = [0u32; 3];
            for (c, l) in lut.iter_mut().enumerate() {
                let part = (dmask >> (7 * c)) & 127;
                for (v, out) in l.iter_mut().enumerate() {
                    *out = pext(v as u32, part);
                }
                if c < 2 {
                    shifts[c + 1] = shifts[c] + part.count_ones();
                }
            }
            let index = |s: u32| -> usize {
                (lut[0][(s & 127) as usize]
                    | lut[1][((s >> 7) & 127) as usize] << shifts[1]
                    | lut[2][((s >> 14) & 127) as usize] << shifts[2]) as usize
            };
            if table.len() <= masks.len() {
                // Fewer distinct hybrid margins than coalitions: link each once.
                for v in table.iter_mut() {
                    *v = link.apply(ens.base_margin + *v) * wb;
                }
                for (e, &s) in ey.iter_mut().zip(&masks) {
                    *e += table[index(s)];
                }
            } else {
                for (e, &s) in ey.iter_mut().zip(&masks) {
                    *e += link.apply(ens.base_margin + table[index(s)]) * wb;
                }
            }
        }
        ey
    }
}

/// Marker for "none" in [`WalkNode`].
const NONE: u32 = u32::MAX;

/// A node as seen from the explained row: the child `x` goes to, the other child, and the
/// node's feature as a varying-feature index (`NONE` for leaves / non-varying features).
#[derive(Debug, Clone, Copy)]
struct WalkNode {
    x_child: u32,
    o_child: u32,
    var: u32,
    x_left: bool,
}

/// Per tree: the row's walk nodes and, per node, the bitset of background rows that go the
/// other way than `x`.
fn row_walks(
    prep: &TreePrep<'_>,
    x: &[f64],
    var_of: &[Option<usize>],
) -> (Vec<Vec<WalkNode>>, Vec<Vec<u64>>) {
    let words = prep.words;
    let mut walks = Vec::with_capacity(prep.ensemble.trees.len());
    let mut diffs = Vec::with_capacity(prep.ensemble.trees.len());
    for (tree, left_sets) in prep.ensemble.trees.iter().zip(&prep.left_sets) {
        let mut walk = Vec::with_capacity(tree.nodes.len());
        let mut diff = vec![0u64; tree.nodes.len() * words];
        for (i, n) in tree.nodes.iter().enumerate() {
            if n.is_leaf() {
                walk.push(WalkNode {
                    x_child: NONE,
                    o_child: NONE,
                    var: NONE,
                    x_left: false,
                });
                continue;
            }
            let xl = n.goes_left(x[n.feature as usize]);
            let (x_child, o_child) = if xl {
                (n.left, n.right)
            } else {
                (n.right, n.left)
            };
            let var = var_of[n.feature as usize].map_or(NONE, |k| k as u32);
            walk.push(WalkNode {
                x_child,
                o_child,
                var,
                x_left: xl,
            });
            for w in 0..words {
                let l = left_sets[i * words + w];
                diff[i * words + w] = if xl { !l } else { l };
            }
        }
        walks.push(walk);
        diffs.push(diff);
    }
    (walks, diffs)
}

/// Parallel bit extract: the bits of `v` selected by `mask`, packed to the low end.
fn pext(v: u32, mask: u32) -> u32 {
    let mut out = 0;
    let mut bit = 0;
    let mut m = mask;
    while m != 0 {
        let low = m & m.wrapping_neg();
        if v & low != 0 {
            out |= 1 << bit;
        }
        bit += 1;
        m &= m - 1;
    }
    out
}

/// Adds the Möbius expansion of `v · [A ⊆ S] · [B ∩ S = ∅]`:
/// `Σ_{C ⊆ B} (-1)^{|C|} v` at index `A ∪ C`.
fn scatter_mobius(table: &mut [f64], v: f64, a: usize, b: usize) {
    let mut c = b;
    loop {
        let sign = if c.count_ones().is_multiple_of(2) {
            v
        } else {
            -v
        };
        table[a | c] += sign;
        if c == 0 {
            break;
        }
        c = (c - 1) & b;
    }
}

/// In-place subset-sum transform: `t[S] <- Σ_{T ⊆ S} t[T]`.
fn zeta_transform(t: &mut [f64], m: usize) {
    for i in 0..m {
        let half = 1usize << i;
        for block in t.chunks_exact_mut(half * 2) {
            let (lo, hi) = block.split_at_mut(half);
            for (h, l) in hi.iter_mut().zip(lo.iter()) {
                *h += *l;
            }
        }
    }
}

/// Map feature → index among varying features.
fn varying_index(varying: &[usize], p: usize) -> Vec<Option<usize>> {
    let mut var_of = vec![None; p];
    for (k, &j) in varying.iter().enumerate() {
        var_of[j] = Some(k);
    }
    var_of
}

#[inline]
fn bit(mask: &[u64], k: usize) -> bool {
    mask[k / 64] >> (k % 64) & 1 == 1
}

/// Puts the row index into a per-row error.
fn with_row(e: AiError, row: usize) -> AiError {
    match e {
        AiError::NonFinite { column, value, .. } => AiError::NonFinite { column, row, value },
        other => other,
    }
}

/// Sampled coalitions over `m` varying features with their kernel weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Coalitions {
    m: usize,
    words: usize,
    masks: Vec<u64>,
    weights: Vec<f64>,
}

impl Coalitions {
    /// shap's coalition sampling for `m >= 2` features and a budget of `nsamples` (already
    /// capped at `2^m - 2`).
    pub fn sample(m: usize, nsamples: usize, rng: &mut ChaCha8Rng) -> Result<Self, AiError> {
        if m < 2 {
            return Err(AiError::InvalidArgument(format!(
                "coalition sampling needs at least 2 features, got {m}"
            )));
        }
        if nsamples < 2 {
            return Err(AiError::InvalidArgument(format!(
                "nsamples must be at least 2, got {nsamples}"
            )));
        }
        let words = m.div_ceil(64);
        let mut co = Coalitions {
            m,
            words,
            masks: Vec::with_capacity(nsamples * words),
            weights: Vec::with_capacity(nsamples),
        };
        let mf = m as f64;
        // ceil((m - 1) / 2) subset sizes, floor((m - 1) / 2) of them paired with complements.
        let num_subset_sizes = m / 2;
        let num_paired = (m - 1) / 2;
        let mut weight_vector: Vec<f64> = (1..=num_subset_sizes)
            .map(|i| (mf - 1.0) / (i as f64 * (mf - i as f64)))
            .collect();
        for w in weight_vector.iter_mut().take(num_paired) {
            *w *= 2.0;
        }
        let total: f64 = weight_vector.iter().sum();
        weight_vector.iter_mut().for_each(|w| *w /= total);

        let mut num_full = 0usize;
        let mut left = nsamples as f64;
        let mut remaining = weight_vector.clone();
        for size in 1..=num_subset_sizes {
            let mut nsubsets = binom(m, size);
            if size <= num_paired {
                nsubsets *= 2.0;
            }
            if left * remaining[size - 1] / nsubsets >= 1.0 - 1e-8 {
                num_full += 1;
                left -= nsubsets;
                if remaining[size - 1] < 1.0 {
                    let r = 1.0 - remaining[size - 1];
                    remaining.iter_mut().for_each(|w| *w /= r);
                }
                let mut w = weight_vector[size - 1] / binom(m, size);
                if size <= num_paired {
                    w /= 2.0;
                }
                let mut comb: Vec<usize> = (0..size).collect();
                loop {
                    let mut mask = vec![0u64; words];
                    for &k in &comb {
                        mask[k / 64] |= 1u64 << (k % 64);
                    }
                    if size <= num_paired {
                        let comp = co.complement(&mask);
                        co.push(&mask, w);
                        co.push(&comp, w);
                    } else {
                        co.push(&mask, w);
                    }
                    if !next_combination(&mut comb, m) {
                        break;
                    }
                }
            } else {
                break;
            }
        }
        let nfixed = co.len();
        let mut samples_left = nsamples.saturating_sub(nfixed);
        if num_full != num_subset_sizes && samples_left > 0 {
            let mut rw = weight_vector.clone();
            for w in rw.iter_mut().take(num_paired) {
                *w /= 2.0;
            }
            let rw = &rw[num_full..];
            let dist = WeightedIndex::new(rw)
                .map_err(|e| AiError::InvalidArgument(format!("coalition size weights: {e}")))?;
            let mut seen: HashMap<Vec<u64>, usize> = HashMap::new();
            let max_draws = 4 * samples_left;
            let mut draws = 0;
            while samples_left > 0 && draws < max_draws {
                draws += 1;
                let size = dist.sample(rng) + num_full + 1;
                let mut mask = vec![0u64; words];
                for k in rand::seq::index::sample(rng, m, size).iter() {
                    mask[k / 64] |= 1u64 << (k % 64);
                }
                let (new_sample, at) = match seen.get(&mask) {
                    Some(&at) => {
                        co.weights[at] += 1.0;
                        (false, at)
                    }
                    None => {
                        let at = co.len();
                        seen.insert(mask.clone(), at);
                        co.push(&mask, 1.0);
                        samples_left -= 1;
                        (true, at)
                    }
                };
                if samples_left > 0 && size <= num_paired {
                    if new_sample {
                        let comp = co.complement(&mask);
                        co.push(&comp, 1.0);
                        samples_left -= 1;
                    } else {
                        co.weights[at + 1] += 1.0;
                    }
                }
            }
            let weight_left: f64 = weight_vector[num_full..].iter().sum();
            let sampled: f64 = co.weights[nfixed..].iter().sum();
            if sampled > 0.0 {
                co.weights[nfixed..]
                    .iter_mut()
                    .for_each(|w| *w *= weight_left / sampled);
            }
        }
        tracing::trace!(
            m,
            nsamples,
            enumerated = nfixed,
            total = co.len(),
            "coalitions"
        );
        Ok(co)
    }

    fn complement(&self, mask: &[u64]) -> Vec<u64> {
        let mut out: Vec<u64> = mask.iter().map(|w| !w).collect();
        let rem = self.m % 64;
        if rem != 0 {
            if let Some(last) = out.last_mut() {
                *last &= (1u64 << rem) - 1;
            }
        }
        out
    }

    fn push(&mut self, mask: &[u64], w: f64) {
        self.masks.extend_from_slice(mask);
        self.weights.push(w);
    }

    /// Number of coalitions.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Number of features `m`.
    pub fn n_features(&self) -> usize {
        self.m
    }

    /// Coalition `s` as a bitset over the `m` features (`ceil(m / 64)` words).
    pub fn mask(&self, s: usize) -> &[u64] {
        &self.masks[s * self.words..(s + 1) * self.words]
    }

    /// Whether feature `k` is in coalition `s`.
    pub fn contains(&self, s: usize, k: usize) -> bool {
        bit(self.mask(s), k)
    }

    /// The kernel weights (summing to 1).
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }
}

/// Next k-combination of `0..n` in lexicographic order; false after the last one.
fn next_combination(comb: &mut [usize], n: usize) -> bool {
    let k = comb.len();
    let mut i = k;
    while i > 0 {
        i -= 1;
        if comb[i] < n - k + i {
            comb[i] += 1;
            for j in i + 1..k {
                comb[j] = comb[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

/// Binomial coefficient as f64 (exact for the sizes used here).
fn binom(n: usize, k: usize) -> f64 {
    let k = k.min(n - k);
    let mut r = 1.0f64;
    for i in 0..k {
        r = r * (n - i) as f64 / (i + 1) as f64;
    }
    r.round()
}

/// shap's constrained weighted least squares over the features `cols` (all varying features,
/// or those kept by L1 selection): eliminate the last of them with `Σ φ = f(x) - base`, solve
/// for the others. Returns one value per varying feature (0 outside `cols`).
fn solve_constrained(
    co: &Coalitions,
    ey: &[f64],
    base: f64,
    diff: f64,
    cols: &[usize],
) -> Result<Vec<f64>, AiError> {
    let mut phi = vec![0.0; co.n_features()];
    let Some((&last, head)) = cols.split_last() else {
        return Ok(phi);
    };
    let q = head.len();
    let mut a = vec![0.0; q * q];
    let mut rhs = vec![0.0; q];
    let mut row = vec![0.0; q];
    for (s, (&w, &e)) in co.weights().iter().zip(ey).enumerate() {
        if w == 0.0 {
            continue;
        }
        let mask = co.mask(s);
        let z_last = if bit(mask, last) { 1.0 } else { 0.0 };
        let y = (e - base) - z_last * diff;
        for (r, &k) in row.iter_mut().zip(head) {
            // Branch-free: the membership bits are random.
            *r = (mask[k / 64] >> (k % 64) & 1) as f64 - z_last;
        }
        for i in 0..q {
            let wi = w * row[i];
            rhs[i] += wi * y;
            for (aij, rj) in a[i * q + i..(i + 1) * q].iter_mut().zip(&row[i..]) {
                *aij += wi * rj;
            }
        }
    }
    // Mirror the upper triangle.
    for i in 0..q {
        for j in 0..i {
            a[i * q + j] = a[j * q + i];
        }
    }
    let head_phi = if q == 0 {
        Vec::new()
    } else {
        solve_symmetric(a, rhs, q)?
    };
    let sum: f64 = head_phi.iter().sum();
    for (&k, v) in head.iter().zip(head_phi) {
        phi[k] = v;
    }
    phi[last] = diff - sum;
    Ok(phi)
}

/// shap's `l1_reg="num_features(r)"` selection: the features active after `r` steps of
/// least-angle regression (sklearn's `lars_path(method="lar", max_iter=r)`) on shap's
/// augmented problem (each coalition row `z` weighted by `w (M - |z|)` with target
/// `v(z) - base`, and its shifted copy `z - 1` weighted by `w |z|` with target
/// `v(z) - base - (f(x) - base)`), worked through the Gram matrix. Returned in column order.
fn lars_select(co: &Coalitions, ey: &[f64], base: f64, diff: f64, r: usize) -> Vec<usize> {
    let m = co.n_features();
    let mut g = vec![0.0; m * m];
    let mut xy = vec![0.0; m];
    let mut z = vec![0.0; m];
    for (s, (&w, &e)) in co.weights().iter().zip(ey).enumerate() {
        let mask = co.mask(s);
        for (k, zk) in z.iter_mut().enumerate() {
            *zk = (mask[k / 64] >> (k % 64) & 1) as f64;
        }
        let size: f64 = z.iter().sum();
        let (w1, w2) = (w * (m as f64 - size), w * size);
        let (y1, y2) = (e - base, e - base - diff);
        for i in 0..m {
            xy[i] += w1 * z[i] * y1 + w2 * (z[i] - 1.0) * y2;
            for j in i..m {
                g[i * m + j] += w1 * z[i] * z[j] + w2 * (z[i] - 1.0) * (z[j] - 1.0);
            }
        }
    }
    for i in 0..m {
        for j in 0..i {
            g[i * m + j] = g[j * m + i];
        }
    }
    let mut active: Vec<usize> = Vec::new();
    let mut signs: Vec<f64> = Vec::new();
    let mut inactive: Vec<usize> = (0..m).collect();
    // Current correlations X^T (y - X β) of the inactive features.
    let mut cov: Vec<f64> = xy.clone();
    let tiny = f64::MIN_POSITIVE;
    while active.len() < r.min(m) {
        let Some((pos, &j)) = inactive.iter().enumerate().max_by(|a, b| {
            cov[*a.1]
                .abs()
                .total_cmp(&cov[*b.1].abs())
                .then(b.0.cmp(&a.0))
        }) else {
            break;
        };
        let c = cov[j].abs();
        if c <= 0.0 || !c.is_finite() {
            break;
        }
        signs.push(cov[j].signum());
        active.push(j);
        inactive.remove(pos);
        if active.len() == r.min(m) {
            break;
        }
        // Equiangular direction.
        let q = active.len();
        let mut gaa = vec![0.0; q * q];
        for (ai, &i) in active.iter().enumerate() {
            for (aj, &k) in active.iter().enumerate() {
                gaa[ai * q + aj] = g[i * m + k];
            }
        }
        let Ok(ls) = solve_symmetric(gaa, signs.clone(), q) else {
            break;
        };
        let norm: f64 = ls.iter().zip(&signs).map(|(a, b)| a * b).sum();
        // Also stops on NaN.
        if norm.is_nan() || norm <= 0.0 {
            break;
        }
        let aa = 1.0 / norm.sqrt();
        let ls: Vec<f64> = ls.iter().map(|v| v * aa).collect();
        let mut gamma = c / aa;
        let mut corr_dir = vec![0.0; m];
        for &k in &inactive {
            let a_k: f64 = active.iter().zip(&ls).map(|(&i, l)| g[k * m + i] * l).sum();
            corr_dir[k] = a_k;
            for cand in [
                (c - cov[k]) / (aa - a_k + tiny),
                (c + cov[k]) / (aa + a_k + tiny),
            ] {
                if cand > 0.0 && cand < gamma {
                    gamma = cand;
                }
            }
        }
        for &k in &inactive {
            cov[k] -= gamma * corr_dir[k];
        }
    }
    active.sort_unstable();
    active
}

/// Solves the symmetric system `a x = b` (`a` is `n x n`, row-major) by Gaussian elimination
/// with partial pivoting; a (numerically) singular `a` falls back to the Moore–Penrose
/// pseudo-inverse, as shap and numpy do.
pub(crate) fn solve_symmetric(a: Vec<f64>, b: Vec<f64>, n: usize) -> Result<Vec<f64>, AiError> {
    if let Some(x) = lu_solve(a.clone(), b.clone(), n) {
        return Ok(x);
    }
    tracing::debug!(n, "singular normal matrix: using the pseudo-inverse");
    pinv_solve(a, &b, n)
}

fn lu_solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale == 0.0 || !scale.is_finite() {
        return None;
    }
    let tol = scale * 1e-13 * n as f64;
    for col in 0..n {
        let (piv, pv) = (col..n)
            .map(|r| (r, a[r * n + col].abs()))
            .fold((col, -1.0), |best, c| if c.1 > best.1 { c } else { best });
        if pv <= tol {
            return None;
        }
        if piv != col {
            for j in 0..n {
                a.swap(col * n + j, piv * n + j);
            }
            b.swap(col, piv);
        }
        let d = a[col * n + col];
        for r in col + 1..n {
            let f = a[r * n + col] / d;
            if f != 0.0 {
                for j in col..n {
                    a[r * n + j] -= f * a[col * n + j];
                }
                b[r] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let mut s = b[r];
        for j in r + 1..n {
            s -= a[r * n + j] * x[j];
        }
        x[r] = s / a[r * n + r];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Pseudo-inverse solve of a symmetric system via cyclic Jacobi eigen-decomposition, with
/// numpy's cut-off (eigenvalues below `1e-15 · max |λ|` count as zero).
fn pinv_solve(mut a: Vec<f64>, b: &[f64], n: usize) -> Result<Vec<f64>, AiError> {
    if a.iter().any(|v| !v.is_finite()) {
        return Err(AiError::InvalidArgument(
            "non-finite normal matrix in least squares".to_string(),
        ));
    }
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let diag: f64 = (0..n).map(|i| a[i * n + i] * a[i * n + i]).sum();
        if off <= 1e-30 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let lambda: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    let lmax = lambda.iter().fold(0.0f64, |m, l| m.max(l.abs()));
    let cut = 1e-15 * lmax;
    let mut x = vec![0.0; n];
    for k in 0..n {
        if lambda[k].abs() <= cut || lambda[k] == 0.0 {
            continue;
        }
        let proj: f64 = (0..n).map(|i| v[i * n + k] * b[i]).sum::<f64>() / lambda[k];
        for i in 0..n {
            x[i] += v[i * n + k] * proj;
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobius_scatter_then_zeta_gives_the_indicator() {
        // v · [0 ∈ S] · [1 ∉ S] over m = 3
        let mut t = vec![0.0; 8];
        scatter_mobius(&mut t, 2.5, 0b001, 0b010);
        zeta_transform(&mut t, 3);
        for (s, v) in t.iter().enumerate() {
            let expect = if s & 1 == 1 && s & 2 == 0 { 2.5 } else { 0.0 };
            assert_eq!(*v, expect, "S = {s:03b}");
        }
    }

    #[test]
    fn pinv_matches_lu_on_regular_and_handles_singular() {
        let a = vec![4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let b = vec![1.0, 2.0, 3.0];
        let x1 = lu_solve(a.clone(), b.clone(), 3).unwrap();
        let x2 = pinv_solve(a, &b, 3).unwrap();
        for (p, q) in x1.iter().zip(&x2) {
            assert!((p - q).abs() < 1e-12);
        }
        // Rank 1: [[1,1],[1,1]] x = [2,2] → minimum-norm solution [1,1].
        let x = solve_symmetric(vec![1.0, 1.0, 1.0, 1.0], vec![2.0, 2.0], 2).unwrap();
        assert!(
            (x[0] - 1.0).abs() < 1e-12 && (x[1] - 1.0).abs() < 1e-12,
            "{x:?}"
        );
    }

    #[test]
    fn combinations_enumerate_binomial_counts() {
        for n in 2..8 {
            for k in 1..n {
                let mut c: Vec<usize> = (0..k).collect();
                let mut count = 1;
                while next_combination(&mut c, n) {
                    count += 1;
                }
                assert_eq!(count as f64, binom(n, k));
            }
        }
    }
}
