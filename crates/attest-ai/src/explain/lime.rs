//! LIME for tabular data, following lime 0.2's `LimeTabularExplainer` defaults
//! (`lime/lime_tabular.py`, `lime/lime_base.py`, `lime/discretize.py`):
//!
//! - a quartile discretiser fitted on the training matrix: per continuous feature the 25/50/75
//!   percentiles (numpy's linear interpolation), de-duplicated, give the bins
//!   `x <= q0`, `q0 < x <= q1`, ..., `x > q_last`; each bin keeps the mean, standard deviation
//!   (`+ 1e-11`), minimum and maximum of its training values. Categorical features are not
//!   binned;
//! - `num_samples` perturbations (default 5,000); the first is the explained row itself. For
//!   every feature a bin (continuous) or a value (categorical) is drawn from its training
//!   frequencies; the interpretable representation is 1 where the draw equals the row's own
//!   bin/value, else 0. A drawn bin is turned back into a value by a draw from the normal
//!   distribution with the bin's mean and standard deviation truncated to the bin's
//!   `[min, max]` (lime uses scipy's `truncnorm`; here it is rejection sampling from the same
//!   truncated distribution, see [`LimeConfig`] for the one edge case);
//! - distances are euclidean in the binary representation (lime's scaler is the identity for
//!   the all-categorical discretised data) and weights the exponential kernel
//!   `sqrt(exp(-d² / width²))` with `width = 0.75 · sqrt(M)` by default;
//! - feature selection (`auto`: forward selection when `num_features <= 6`, else the highest
//!   weights of a ridge fit with `alpha = 0.01`, as lime does), then a weighted ridge surrogate
//!   (`alpha = 1`, with intercept) on the selected features, its weighted R² score and its
//!   prediction at the row.
//!
//! Random streams differ from numpy's (ChaCha8, re-seeded with [`LimeConfig::seed`] for
//! every row: the same seed gives identical output), so results agree with lime within
//! sampling error.
//!
//! LIME is **not additive**: `intercept + Σ weights` equals the surrogate's local prediction,
//! not the model output, so [`Explanation::check_additivity`] must not be run on
//! [`LimeExplanation::to_explanation`]'s result.

use std::collections::BTreeMap;

use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::kernel::solve_symmetric;
use crate::{AiError, Explanation, Matrix, Model, Output};

/// How the features of the surrogate are chosen (lime's `feature_selection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeatureSelection {
    /// Forward selection when `num_features <= 6`, else highest weights.
    #[default]
    Auto,
    /// Greedy forward selection by weighted R² of an unregularised fit.
    ForwardSelection,
    /// The largest |coefficients| of a ridge fit (`alpha = 0.01`) on all features.
    HighestWeights,
    /// All features.
    None,
}

/// LIME settings (defaults are lime's).
#[derive(Debug, Clone, PartialEq)]
pub struct LimeConfig {
    /// Perturbations per row, the row itself included (lime: 5,000). At least 2.
    pub num_samples: usize,
    /// Features in the explanation (lime: 10). At least 1.
    pub num_features: usize,
    /// Kernel width; `None` = `0.75 · sqrt(number of features)`.
    pub kernel_width: Option<f64>,
    /// Feature selection method.
    pub feature_selection: FeatureSelection,
    /// Columns that are categorical (integer codes, not binned).
    pub categorical_features: Vec<usize>,
    /// Display names of categorical codes: `categorical_names[&j][code]`.
    pub categorical_names: BTreeMap<usize, Vec<String>>,
    /// Output space explained (lime explains `predict_proba[:, 1]` = [`Output::Probability`]).
    pub output: Output,
    /// Seed of the perturbations (every row starts from this seed).
    pub seed: u64,
}

impl Default for LimeConfig {
    fn default() -> Self {
        LimeConfig {
            num_samples: 5000,
            num_features: 10,
            kernel_width: None,
            feature_selection: FeatureSelection::Auto,
            categorical_features: Vec::new(),
            categorical_names: BTreeMap::new(),
            output: Output::Probability,
            seed: 0,
        }
    }
}

/// Quartile bins of one continuous feature.
#[derive(Debug, Clone, PartialEq)]
pub struct QuartileBins {
    /// Distinct quartile borders, ascending.
    pub borders: Vec<f64>,
    /// Mean of the training values in each bin (`borders.len() + 1` bins).
    pub means: Vec<f64>,
    /// Standard deviation (+1e-11) of the training values in each bin.
    pub stds: Vec<f64>,
    /// Lower bound of each bin (training minimum, then the borders).
    pub mins: Vec<f64>,
    /// Upper bound of each bin (the borders, then the training maximum).
    pub maxs: Vec<f64>,
    /// Display label of each bin, e.g. `"28.00 < age <= 37.00"`.
    pub labels: Vec<String>,
}

impl QuartileBins {
    /// The bin of `x` (numpy `searchsorted(borders, x)`, side left).
    pub fn bin(&self, x: f64) -> usize {
        self.borders.partition_point(|&b| b < x)
    }
}

/// Per-feature sampling table: the values (bin indices or category codes) and their
/// training frequencies.
#[derive(Debug, Clone)]
struct FeatureDist {
    values: Vec<f64>,
    dist: WeightedIndex<f64>,
}

/// The LIME tabular explainer.
pub struct LimeExplainer<'a> {
    model: &'a dyn Model,
    config: LimeConfig,
    kernel_width: f64,
    /// `Some` for binned (continuous) features.
    bins: Vec<Option<QuartileBins>>,
    dists: Vec<FeatureDist>,
}

impl std::fmt::Debug for LimeExplainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimeExplainer")
            .field("n_features", &self.model.n_features())
            .field("config", &self.config)
            .field("kernel_width", &self.kernel_width)
            .finish()
    }
}

/// One term of a LIME explanation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LimeTerm {
    /// Column index.
    pub feature: usize,
    /// lime's label of the interpretable feature, e.g. `"age <= 28.00"` or
    /// `"sex=Male"`.
    pub label: String,
    /// Surrogate coefficient.
    pub weight: f64,
}

/// LIME's result for one row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LimeExplanation {
    /// Selected features, largest |weight| first.
    pub terms: Vec<LimeTerm>,
    /// Surrogate intercept.
    pub intercept: f64,
    /// Surrogate prediction at the row (`intercept + Σ weights`).
    pub local_prediction: f64,
    /// Weighted R² of the surrogate on the perturbations.
    pub score: f64,
    /// The model output at the row.
    pub prediction: f64,
    /// Output space of `prediction` and the weights.
    pub output: Output,
}

impl LimeExplanation {
    /// As an [`Explanation`] over `n_features` columns: the weight of each selected feature
    /// (0 for the others), `base_value` = intercept, `prediction` = model output. Not additive:
    /// do not run [`Explanation::check_additivity`] on it.
    pub fn to_explanation(&self, n_features: usize) -> Explanation {
        let mut values = vec![0.0; n_features];
        for t in &self.terms {
            if let Some(v) = values.get_mut(t.feature) {
                *v = t.weight;
            }
        }
        Explanation {
            base_value: self.intercept,
            values,
            prediction: self.prediction,
            output: self.output,
        }
    }
}

/// numpy's `percentile` with linear interpolation on sorted data.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q / 100.0;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = h - lo as f64;
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

impl<'a> LimeExplainer<'a> {
    /// Fits the discretiser and sampling frequencies on `training` (finite values, the model's
    /// width). Fails on an empty or non-finite training matrix, a width mismatch,
    /// `num_samples < 2`, `num_features = 0`, a non-positive kernel width or an out-of-range
    /// categorical index.
    pub fn new(
        model: &'a dyn Model,
        training: &Matrix,
        config: LimeConfig,
    ) -> Result<Self, AiError> {
        model.check_width(training)?;
        let (n, p) = (training.n_rows(), training.n_cols());
        if n == 0 {
            return Err(AiError::InvalidArgument(
                "the training data has no rows".to_string(),
            ));
        }
        if config.num_samples < 2 {
            return Err(AiError::InvalidArgument(format!(
                "num_samples must be at least 2, got {}",
                config.num_samples
            )));
        }
        if config.num_features == 0 {
            return Err(AiError::InvalidArgument(
                "num_features must be at least 1".to_string(),
            ));
        }
        if let Some(&j) = config.categorical_features.iter().find(|&&j| j >= p) {
            return Err(AiError::InvalidArgument(format!(
                "categorical feature index {j} out of range ({p} features)"
            )));
        }
        let kernel_width = config.kernel_width.unwrap_or(0.75 * (p as f64).sqrt());
        if !(kernel_width.is_finite() && kernel_width > 0.0) {
            return Err(AiError::InvalidArgument(format!(
                "kernel width must be positive, got {kernel_width}"
            )));
        }
        let names = model.feature_names();
        let mut bins = Vec::with_capacity(p);
        let mut dists = Vec::with_capacity(p);
        for j in 0..p {
            let mut col: Vec<f64> = training.rows().map(|r| r[j]).collect();
            if let Some(row) = col.iter().position(|v| !v.is_finite()) {
                return Err(AiError::NonFinite {
                    column: names[j].clone(),
                    row,
                    value: col[row],
                });
            }
            let categorical = config.categorical_features.contains(&j);
            let (fb, codes): (Option<QuartileBins>, Vec<f64>) = if categorical {
                (None, col.clone())
            } else {
                let mut sorted = col.clone();
                sorted.sort_by(f64::total_cmp);
                let mut borders: Vec<f64> = [25.0, 50.0, 75.0]
                    .iter()
                    .map(|&q| percentile(&sorted, q))
                    .collect();
                borders.dedup();
                let k = borders.len();
                let name = &names[j];
                let mut labels = vec![format!("{name} <= {:.2}", borders[0])];
                for i in 0..k - 1 {
                    labels.push(format!(
                        "{:.2} < {name} <= {:.2}",
                        borders[i],
                        borders[i + 1]
                    ));
                }
                labels.push(format!("{name} > {:.2}", borders[k - 1]));
                let mut qb = QuartileBins {
                    borders,
                    means: vec![0.0; k + 1],
                    stds: vec![0.0; k + 1],
                    mins: Vec::with_capacity(k + 1),
                    maxs: Vec::with_capacity(k + 1),
                    labels,
                };
                let codes: Vec<f64> = col.iter().map(|&v| qb.bin(v) as f64).collect();
                let mut sums = vec![(0usize, 0.0f64); k + 1];
                for (&c, &v) in codes.iter().zip(&col) {
                    let s = &mut sums[c as usize];
                    s.0 += 1;
                    s.1 += v;
                }
                for (mean, &(count, sum)) in qb.means.iter_mut().zip(&sums) {
                    if count > 0 {
                        *mean = sum / count as f64;
                    }
                }
                let mut sq = vec![0.0f64; k + 1];
                for (&c, &v) in codes.iter().zip(&col) {
                    let d = v - qb.means[c as usize];
                    sq[c as usize] += d * d;
                }
                for ((std, &sqb), &(count, _)) in qb.stds.iter_mut().zip(&sq).zip(&sums) {
                    let var = if count > 0 { sqb / count as f64 } else { 0.0 };
                    *std = var.sqrt() + 1e-11;
                }
                qb.mins.push(sorted[0]);
                qb.mins.extend_from_slice(&qb.borders);
                qb.maxs.extend_from_slice(&qb.borders);
                qb.maxs.push(sorted[n - 1]);
                (Some(qb), codes)
            };
            col = codes;
            col.sort_by(f64::total_cmp);
            let mut values = Vec::new();
            let mut counts = Vec::new();
            for v in col {
                if values.last() == Some(&v) {
                    if let Some(c) = counts.last_mut() {
                        *c += 1.0;
                    }
                } else {
                    values.push(v);
                    counts.push(1.0);
                }
            }
            let dist = WeightedIndex::new(&counts)
                .map_err(|e| AiError::InvalidArgument(format!("feature {j} frequencies: {e}")))?;
            bins.push(fb);
            dists.push(FeatureDist { values, dist });
        }
        Ok(LimeExplainer {
            model,
            config,
            kernel_width,
            bins,
            dists,
        })
    }

    /// The quartile bins of feature `j` (`None` for categorical features).
    pub fn bins(&self, j: usize) -> Option<&QuartileBins> {
        self.bins.get(j).and_then(Option::as_ref)
    }

    /// The kernel width in use.
    pub fn kernel_width(&self) -> f64 {
        self.kernel_width
    }

    /// Explains every row of `x` (rows in parallel); row `i` equals `explain_row(x.row(i))`.
    pub fn explain(&self, x: &Matrix) -> Result<Vec<LimeExplanation>, AiError> {
        self.model.check_width(x)?;
        (0..x.n_rows())
            .into_par_iter()
            .map(|i| {
                self.explain_row(x.row(i)).map_err(|e| match e {
                    AiError::NonFinite { column, value, .. } => AiError::NonFinite {
                        column,
                        row: i,
                        value,
                    },
                    other => other,
                })
            })
            .collect()
    }

    /// The interpretable label of feature `j` for value `v` of the explained row.
    fn label(&self, j: usize, v: f64) -> String {
        let name = &self.model.feature_names()[j];
        match &self.bins[j] {
            Some(b) => b.labels[b.bin(v)].clone(),
            None => {
                let code = v as i64;
                let shown = usize::try_from(code)
                    .ok()
                    .and_then(|c| self.config.categorical_names.get(&j).and_then(|n| n.get(c)))
                    .cloned()
                    .unwrap_or_else(|| code.to_string());
                format!("{name}={shown}")
            }
        }
    }

    /// Explains one row (finite values only: its bins must be defined).
    pub fn explain_row(&self, x: &[f64]) -> Result<LimeExplanation, AiError> {
        let p = self.model.n_features();
        if x.len() != p {
            return Err(AiError::FeatureCount {
                expected: p,
                got: x.len(),
            });
        }
        if let Some(j) = x.iter().position(|v| !v.is_finite()) {
            return Err(AiError::NonFinite {
                column: self.model.feature_names()[j].clone(),
                row: 0,
                value: x[j],
            });
        }
        let ns = self.config.num_samples;
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        // Interpretable (binary) data, column-major for the regressions, and model inputs.
        let mut binary = vec![0.0f64; p * ns];
        let mut inverse = vec![0.0f64; ns * p];
        inverse[..p].copy_from_slice(x);
        for j in 0..p {
            let own = match &self.bins[j] {
                Some(b) => b.bin(x[j]) as f64,
                None => x[j],
            };
            let fd = &self.dists[j];
            let col = &mut binary[j * ns..(j + 1) * ns];
            col[0] = 1.0;
            for s in 1..ns {
                let drawn = fd.values[fd.dist.sample(&mut rng)];
                col[s] = if drawn == own { 1.0 } else { 0.0 };
                inverse[s * p + j] = drawn;
            }
        }
        for j in 0..p {
            if let Some(b) = &self.bins[j] {
                for s in 1..ns {
                    let bin = inverse[s * p + j] as usize;
                    inverse[s * p + j] = undiscretize(b, bin, &mut rng);
                }
            }
        }
        let y = self
            .model
            .predict(&Matrix::new(inverse, ns, p)?, self.config.output)?;
        if let Some((s, &v)) = y.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(AiError::NonFinite {
                column: "model output on a perturbation".to_string(),
                row: s,
                value: v,
            });
        }
        let w2 = self.kernel_width * self.kernel_width;
        let weights: Vec<f64> = (0..ns)
            .map(|s| {
                let zeros = (0..p).filter(|&j| binary[j * ns + s] == 0.0).count() as f64;
                (-zeros / w2).exp().sqrt()
            })
            .collect();
        let k = self.config.num_features.min(p);
        let all: Vec<usize> = (0..p).collect();
        let used: Vec<usize> = match self.config.feature_selection {
            FeatureSelection::None => all,
            FeatureSelection::ForwardSelection => {
                forward_selection(&binary, ns, &y, &weights, p, k)?
            }
            FeatureSelection::HighestWeights => highest_weights(&binary, ns, &y, &weights, p, k)?,
            FeatureSelection::Auto => {
                if self.config.num_features <= 6 {
                    forward_selection(&binary, ns, &y, &weights, p, k)?
                } else {
                    highest_weights(&binary, ns, &y, &weights, p, k)?
                }
            }
        };
        let fit = ridge(&binary, ns, &used, &y, &weights, 1.0)?;
        let score = fit.r2(&binary, ns, &used, &y, &weights);
        let local_prediction = fit.intercept + fit.coef.iter().sum::<f64>();
        let mut terms: Vec<LimeTerm> = used
            .iter()
            .zip(&fit.coef)
            .map(|(&j, &w)| LimeTerm {
                feature: j,
                label: self.label(j, x[j]),
                weight: w,
            })
            .collect();
        terms.sort_by(|a, b| b.weight.abs().total_cmp(&a.weight.abs()));
        Ok(LimeExplanation {
            terms,
            intercept: fit.intercept,
            local_prediction,
            score,
            prediction: y[0],
            output: self.config.output,
        })
    }
}

/// A value of `bin` drawn from N(mean, std) truncated to `[min, max]` by rejection (the
/// acceptance probability is at least about 0.47: the bin mean lies inside the bin and the
/// bin is at least two standard deviations wide). A bin with `min == max` holds one value,
/// which is returned.
fn undiscretize(b: &QuartileBins, bin: usize, rng: &mut ChaCha8Rng) -> f64 {
    let (lo, hi, mean, std) = (b.mins[bin], b.maxs[bin], b.means[bin], b.stds[bin]);
    if lo == hi {
        return lo;
    }
    for _ in 0..10_000 {
        let v = mean + std * standard_normal(rng);
        if (lo..=hi).contains(&v) {
            return v;
        }
    }
    // Unreachable in practice (see above); stay inside the bin regardless.
    mean.clamp(lo, hi)
}

/// A standard normal draw (Marsaglia's polar method).
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    loop {
        let u: f64 = rng.gen_range(-1.0..1.0);
        let v: f64 = rng.gen_range(-1.0..1.0);
        let s = u * u + v * v;
        if s > 0.0 && s < 1.0 {
            return u * (-2.0 * s.ln() / s).sqrt();
        }
    }
}

/// A weighted ridge fit with intercept (sklearn `Ridge(alpha, fit_intercept=True)` with
/// `sample_weight`).
struct RidgeFit {
    coef: Vec<f64>,
    intercept: f64,
}

impl RidgeFit {
    fn predict(&self, data: &[f64], ns: usize, cols: &[usize], s: usize) -> f64 {
        self.intercept
            + cols
                .iter()
                .zip(&self.coef)
                .map(|(&j, c)| c * data[j * ns + s])
                .sum::<f64>()
    }

    /// Weighted R² (sklearn `r2_score` with `sample_weight`).
    fn r2(&self, data: &[f64], ns: usize, cols: &[usize], y: &[f64], w: &[f64]) -> f64 {
        let sw: f64 = w.iter().sum();
        let ym = y.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() / sw;
        let mut ss_res = 0.0;
        let mut ss_tot = 0.0;
        for s in 0..ns {
            let r = y[s] - self.predict(data, ns, cols, s);
            ss_res += w[s] * r * r;
            ss_tot += w[s] * (y[s] - ym) * (y[s] - ym);
        }
        if ss_tot == 0.0 {
            // sklearn: perfect fit → 1, otherwise 0.
            return if ss_res == 0.0 { 1.0 } else { 0.0 };
        }
        1.0 - ss_res / ss_tot
    }
}

/// Weighted ridge regression on the columns `cols` of column-major `data` (`ns` rows).
fn ridge(
    data: &[f64],
    ns: usize,
    cols: &[usize],
    y: &[f64],
    w: &[f64],
    alpha: f64,
) -> Result<RidgeFit, AiError> {
    let q = cols.len();
    let sw: f64 = w.iter().sum();
    let ym = y.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() / sw;
    let xm: Vec<f64> = cols
        .iter()
        .map(|&j| {
            data[j * ns..(j + 1) * ns]
                .iter()
                .zip(w)
                .map(|(a, b)| a * b)
                .sum::<f64>()
                / sw
        })
        .collect();
    let mut a = vec![0.0; q * q];
    let mut rhs = vec![0.0; q];
    for (i, &ji) in cols.iter().enumerate() {
        let ci = &data[ji * ns..(ji + 1) * ns];
        let mut r = 0.0;
        for s in 0..ns {
            r += w[s] * (ci[s] - xm[i]) * (y[s] - ym);
        }
        rhs[i] = r;
        for (k, &jk) in cols.iter().enumerate().skip(i) {
            let ck = &data[jk * ns..(jk + 1) * ns];
            let mut acc = 0.0;
            for s in 0..ns {
                acc += w[s] * (ci[s] - xm[i]) * (ck[s] - xm[k]);
            }
            a[i * q + k] = acc;
            a[k * q + i] = acc;
        }
        a[i * q + i] += alpha;
    }
    let coef = if q == 0 {
        Vec::new()
    } else {
        solve_symmetric(a, rhs, q)?
    };
    let intercept = ym - coef.iter().zip(&xm).map(|(c, m)| c * m).sum::<f64>();
    Ok(RidgeFit { coef, intercept })
}

/// lime's `highest_weights`: ridge (alpha 0.01) on all features, keep the `k` largest
/// |coefficient × first row| (the first row is all ones); ties keep column order.
fn highest_weights(
    data: &[f64],
    ns: usize,
    y: &[f64],
    w: &[f64],
    p: usize,
    k: usize,
) -> Result<Vec<usize>, AiError> {
    let all: Vec<usize> = (0..p).collect();
    let fit = ridge(data, ns, &all, y, w, 0.01)?;
    let mut idx = all;
    idx.sort_by(|&a, &b| {
        (fit.coef[b] * data[b * ns])
            .abs()
            .total_cmp(&(fit.coef[a] * data[a * ns]).abs())
    });
    idx.truncate(k);
    Ok(idx)
}

/// lime's `forward_selection`: greedily add the feature that maximises the weighted R² of an
/// unregularised fit.
fn forward_selection(
    data: &[f64],
    ns: usize,
    y: &[f64],
    w: &[f64],
    p: usize,
    k: usize,
) -> Result<Vec<usize>, AiError> {
    let mut used: Vec<usize> = Vec::with_capacity(k);
    for _ in 0..k {
        let mut best = (f64::NEG_INFINITY, None);
        for f in 0..p {
            if used.contains(&f) {
                continue;
            }
            let mut cols = used.clone();
            cols.push(f);
            let fit = ridge(data, ns, &cols, y, w, 0.0)?;
            let score = fit.r2(data, ns, &cols, y, w);
            if score > best.0 || best.1.is_none() {
                best = (score, Some(f));
            }
        }
        match best.1 {
            Some(f) => used.push(f),
            None => break,
        }
    }
    Ok(used)
}
