//! The gradient-boosted trees learner (logistic loss, histogram splits, depth-wise growth).

use std::collections::VecDeque;

use crate::model::tree::{Link, Node, SplitRule, Tree, TreeEnsemble};
use crate::{AiError, Matrix};

/// Hyper-parameters of [`train_gbdt`] (names and meanings follow XGBoost's).
#[derive(Debug, Clone, PartialEq)]
pub struct GbdtParams {
    /// Boosting rounds (trees). 0 gives a model that predicts the base score.
    pub n_trees: usize,
    /// Maximum depth of a tree (1 to 16).
    pub max_depth: usize,
    /// Shrinkage applied to every leaf weight (`eta`), in `(0, 1]`.
    pub learning_rate: f64,
    /// L2 regularisation of leaf weights (`lambda`), at least 0.
    pub lambda: f64,
    /// Minimum loss reduction to make a split (`gamma`), at least 0.
    pub gamma: f64,
    /// Minimum sum of hessians in each child (`min_child_weight`), at least 0.
    pub min_child_weight: f64,
    /// Most histogram bins per feature (2 to 65,535); a feature with fewer distinct values
    /// gets one bin per value (exact splits).
    pub max_bins: usize,
}

impl Default for GbdtParams {
    fn default() -> Self {
        GbdtParams {
            n_trees: 100,
            max_depth: 4,
            learning_rate: 0.1,
            lambda: 1.0,
            gamma: 0.0,
            min_child_weight: 1.0,
            max_bins: 256,
        }
    }
}

/// A trained binary classifier: the ensemble plus the base score (a probability) it starts
/// from, which the XGBoost export needs verbatim.
#[derive(Debug, Clone, PartialEq)]
pub struct GbdtModel {
    /// The trees, base margin `ln(base_score / (1 − base_score))`, logistic link.
    pub ensemble: TreeEnsemble,
    /// Initial prediction as a probability (the label mean, rounded to `f32`).
    pub base_score: f64,
}

/// Bin marker of a missing (NaN) value.
const MISSING_BIN: u16 = u16::MAX;

/// Smallest loss reduction that counts as an improvement (guards against splits that only
/// rounding noise favours).
const MIN_GAIN: f64 = 1e-10;

/// Rounds to `f32` precision the way an XGBoost JSON file carries it: the `f64` nearest to the
/// shortest decimal of the `f32`. Such short decimals parse back to exactly this `f64` with any
/// JSON parser, so a model survives export and load bit for bit.
fn f32r(x: f64) -> f64 {
    let f = x as f32;
    // Display of a finite f32 is its shortest round-trip decimal, which always parses.
    f.to_string().parse::<f64>().unwrap_or(f64::from(f))
}

fn check_params(p: &GbdtParams) -> Result<(), AiError> {
    let bad = |m: String| Err(AiError::InvalidArgument(m));
    if !(1..=16).contains(&p.max_depth) {
        return bad(format!("max_depth must be 1 to 16, got {}", p.max_depth));
    }
    if !(p.learning_rate > 0.0 && p.learning_rate <= 1.0) {
        return bad(format!(
            "learning_rate must be in (0, 1], got {}",
            p.learning_rate
        ));
    }
    for (name, v) in [
        ("lambda", p.lambda),
        ("gamma", p.gamma),
        ("min_child_weight", p.min_child_weight),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return bad(format!("{name} must be a finite number >= 0, got {v}"));
        }
    }
    if !(2..=65_535).contains(&p.max_bins) {
        return bad(format!("max_bins must be 2 to 65535, got {}", p.max_bins));
    }
    Ok(())
}

/// Cut points of one feature: `f32` data values `c_1 < … < c_k`; a value `x` falls in bin
/// `#{c_i <= x}` and a split at cut `c_i` sends `x < c_i` left — exactly XGBoost's
/// `(x as f32) < threshold` rule.
fn cuts_of(values: &mut [f32], max_bins: usize) -> Vec<f32> {
    values.sort_by(f32::total_cmp);
    let mut distinct: Vec<f32> = values.to_vec();
    distinct.dedup();
    if distinct.len() <= max_bins {
        return distinct.into_iter().skip(1).collect();
    }
    let n = values.len();
    let mut cuts: Vec<f32> = (1..max_bins).map(|k| values[k * n / max_bins]).collect();
    cuts.dedup();
    // A cut at the minimum would leave its left side empty.
    cuts.retain(|&c| c > values[0]);
    cuts
}

struct Binned {
    /// Column-major bins: `bins[j][i]`.
    bins: Vec<Vec<u16>>,
    cuts: Vec<Vec<f32>>,
}

fn bin_matrix(x: &Matrix, max_bins: usize) -> Result<Binned, AiError> {
    let (n, p) = (x.n_rows(), x.n_cols());
    let mut bins = Vec::with_capacity(p);
    let mut cuts = Vec::with_capacity(p);
    for j in 0..p {
        let mut vals = Vec::with_capacity(n);
        for (i, row) in x.rows().enumerate() {
            let v = row[j];
            if v.is_infinite() {
                return Err(AiError::NonFinite {
                    column: format!("feature {j}"),
                    row: i,
                    value: v,
                });
            }
            if !v.is_nan() {
                vals.push(v as f32);
            }
        }
        let c = cuts_of(&mut vals, max_bins);
        let col: Vec<u16> = x
            .rows()
            .map(|row| {
                let v = row[j];
                if v.is_nan() {
                    MISSING_BIN
                } else {
                    let v = v as f32;
                    // At most max_bins - 1 <= 65,534 cuts, so the bin fits in u16 below MISSING_BIN.
                    c.partition_point(|&cut| cut <= v) as u16
                }
            })
            .collect();
        bins.push(col);
        cuts.push(c);
    }
    Ok(Binned { bins, cuts })
}

#[derive(Debug, Clone, Copy)]
struct Split {
    feature: usize,
    /// Index into the feature's cuts: left gets bins `<= cut_index`.
    cut_index: usize,
    default_left: bool,
    gain: f64,
}

struct Grower<'a> {
    binned: &'a Binned,
    grad: &'a [f64],
    hess: &'a [f64],
    params: &'a GbdtParams,
}

impl Grower<'_> {
    fn weight(&self, g: f64, h: f64) -> f64 {
        -g / (h + self.params.lambda)
    }

    fn score(&self, g: f64, h: f64) -> f64 {
        g * g / (h + self.params.lambda)
    }

    fn best_split(&self, rows: &[u32], g: f64, h: f64) -> Option<Split> {
        let parent = self.score(g, h);
        let mcw = self.params.min_child_weight;
        let mut best: Option<Split> = None;
        let mut hist_g = Vec::new();
        let mut hist_h = Vec::new();
        for (j, (col, cuts)) in self.binned.bins.iter().zip(&self.binned.cuts).enumerate() {
            if cuts.is_empty() {
                continue;
            }
            let nb = cuts.len() + 1;
            hist_g.clear();
            hist_g.resize(nb, 0.0);
            hist_h.clear();
            hist_h.resize(nb, 0.0);
            let (mut mg, mut mh, mut n_missing) = (0.0, 0.0, 0usize);
            for &r in rows {
                let r = r as usize;
                let b = col[r];
                if b == MISSING_BIN {
                    mg += self.grad[r];
                    mh += self.hess[r];
                    n_missing += 1;
                } else {
                    hist_g[b as usize] += self.grad[r];
                    hist_h[b as usize] += self.hess[r];
                }
            }
            let (mut gl, mut hl) = (0.0, 0.0);
            for k in 0..nb - 1 {
                gl += hist_g[k];
                hl += hist_h[k];
                // Present values: left = bins 0..=k, right = the rest; missing on either side.
                let gr = g - gl - mg;
                let hr = h - hl - mh;
                let options: &[bool] = if n_missing > 0 {
                    &[false, true]
                } else {
                    &[false]
                };
                for &missing_left in options {
                    let (gl2, hl2, gr2, hr2) = if missing_left {
                        (gl + mg, hl + mh, gr, hr)
                    } else {
                        (gl, hl, gr + mg, hr + mh)
                    };
                    if hl2 < mcw || hr2 < mcw || hl2 <= 0.0 || hr2 <= 0.0 {
                        continue;
                    }
                    let gain = 0.5 * (self.score(gl2, hl2) + self.score(gr2, hr2) - parent);
                    if gain > best.map_or(MIN_GAIN.max(self.params.gamma), |b| b.gain) {
                        best = Some(Split {
                            feature: j,
                            cut_index: k,
                            // Without missing values in training, unseen NaN go to the heavier side.
                            default_left: if n_missing > 0 {
                                missing_left
                            } else {
                                hl2 >= hr2
                            },
                            gain,
                        });
                    }
                }
            }
        }
        best
    }

    fn grow(&self, all_rows: Vec<u32>) -> Tree {
        let eta = self.params.learning_rate;
        let mut nodes: Vec<Node> = Vec::new();
        // (node index, rows, depth)
        let mut queue: VecDeque<(usize, Vec<u32>, usize)> = VecDeque::new();
        nodes.push(leaf_node(0.0, 0.0));
        queue.push_back((0, all_rows, 0));
        while let Some((idx, rows, depth)) = queue.pop_front() {
            let (mut g, mut h) = (0.0, 0.0);
            for &r in &rows {
                g += self.grad[r as usize];
                h += self.hess[r as usize];
            }
            let value = f32r(eta * self.weight(g, h));
            nodes[idx] = leaf_node(value, f32r(h));
            if depth >= self.params.max_depth {
                continue;
            }
            let Some(split) = self.best_split(&rows, g, h) else {
                continue;
            };
            let col = &self.binned.bins[split.feature];
            let (mut left, mut right) = (Vec::new(), Vec::new());
            for &r in &rows {
                let b = col[r as usize];
                let goes_left = if b == MISSING_BIN {
                    split.default_left
                } else {
                    (b as usize) <= split.cut_index
                };
                if goes_left {
                    left.push(r);
                } else {
                    right.push(r);
                }
            }
            let l = nodes.len();
            nodes.push(leaf_node(0.0, 0.0));
            nodes.push(leaf_node(0.0, 0.0));
            nodes[idx] = Node {
                feature: split.feature as u32,
                rule: SplitRule::LessThanF32 {
                    threshold: self.binned.cuts[split.feature][split.cut_index],
                },
                left: l as u32,
                right: l as u32 + 1,
                default_left: split.default_left,
                value,
                cover: f32r(h),
            };
            queue.push_back((l, left, depth + 1));
            queue.push_back((l + 1, right, depth + 1));
        }
        Tree { nodes }
    }
}

/// A leaf as the XGBoost loader builds it (the leaf value doubles as its split condition).
fn leaf_node(value: f64, cover: f64) -> Node {
    Node {
        feature: 0,
        rule: SplitRule::LessThanF32 {
            threshold: value as f32,
        },
        left: Node::NONE,
        right: Node::NONE,
        default_left: false,
        value,
        cover,
    }
}

/// Trains a binary classifier (labels 0/1; 1 = the positive class whose probability the model
/// outputs) on `x` (finite values or NaN = missing) with logistic loss.
///
/// Fails with [`AiError::InvalidArgument`] on bad parameters, fewer than 2 rows, labels other
/// than 0/1 or only one class, with [`AiError::LengthMismatch`] when `y` or `feature_names`
/// do not fit `x`, and with [`AiError::NonFinite`] on an infinite feature value.
pub fn train_gbdt(
    x: &Matrix,
    y: &[f64],
    feature_names: &[String],
    params: &GbdtParams,
) -> Result<GbdtModel, AiError> {
    check_params(params)?;
    let (n, p) = (x.n_rows(), x.n_cols());
    if y.len() != n {
        return Err(AiError::LengthMismatch {
            column: "labels".to_string(),
            expected: n,
            got: y.len(),
        });
    }
    if feature_names.len() != p {
        return Err(AiError::LengthMismatch {
            column: "feature_names".to_string(),
            expected: p,
            got: feature_names.len(),
        });
    }
    if n < 2 {
        return Err(AiError::InvalidArgument(format!(
            "training needs at least 2 rows, got {n}"
        )));
    }
    if n > u32::MAX as usize {
        return Err(AiError::InvalidArgument(format!(
            "training supports at most {} rows",
            u32::MAX
        )));
    }
    if let Some((i, v)) = y.iter().enumerate().find(|(_, &v)| v != 0.0 && v != 1.0) {
        return Err(AiError::InvalidArgument(format!(
            "label {v} in row {i} is not 0 or 1"
        )));
    }
    let mean = y.iter().sum::<f64>() / n as f64;
    if mean == 0.0 || mean == 1.0 {
        return Err(AiError::InvalidArgument(
            "training labels hold only one class".to_string(),
        ));
    }
    let binned = bin_matrix(x, params.max_bins)?;
    let base_score = f32r(mean.clamp(1e-6, 1.0 - 1e-6));
    // The same expression the XGBoost loader evaluates, so export + load is exact.
    let base_margin = (base_score / (1.0 - base_score)).ln();
    let mut margin = vec![base_margin; n];
    let mut grad = vec![0.0; n];
    let mut hess = vec![0.0; n];
    let mut trees = Vec::with_capacity(params.n_trees);
    for t in 0..params.n_trees {
        for i in 0..n {
            let prob = Link::Logistic.apply(margin[i]);
            grad[i] = prob - y[i];
            hess[i] = (prob * (1.0 - prob)).max(1e-16);
        }
        let tree = Grower {
            binned: &binned,
            grad: &grad,
            hess: &hess,
            params,
        }
        .grow((0..n as u32).collect());
        for (m, row) in margin.iter_mut().zip(x.rows()) {
            *m += tree.predict(row);
        }
        tracing::trace!(tree = t, nodes = tree.nodes.len(), "grew tree");
        trees.push(tree);
    }
    let ensemble = TreeEnsemble {
        feature_names: feature_names.to_vec(),
        trees,
        base_margin,
        link: Link::Logistic,
    };
    ensemble.validate("trained gradient-boosted trees")?;
    Ok(GbdtModel {
        ensemble,
        base_score,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Model, Output};

    fn and_data() -> (Matrix, Vec<f64>) {
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for i in 0..400 {
            let a = f64::from(i % 2);
            let b = f64::from((i / 2) % 2);
            let noise = f64::from(i % 7) / 7.0;
            rows.push(vec![a, b, noise]);
            y.push(if (a == 1.0 && b == 1.0) || noise > 0.8 {
                1.0
            } else {
                0.0
            });
        }
        (Matrix::from_rows(&rows).unwrap(), y)
    }

    #[test]
    fn learns_an_interaction() {
        let (x, y) = and_data();
        let names: Vec<String> = ["a", "b", "n"].iter().map(|s| s.to_string()).collect();
        let params = GbdtParams {
            n_trees: 30,
            max_depth: 2,
            learning_rate: 0.5,
            ..GbdtParams::default()
        };
        let m = train_gbdt(&x, &y, &names, &params).unwrap();
        let p = m.ensemble.predict(&x, Output::Probability).unwrap();
        for (pi, yi) in p.iter().zip(&y) {
            assert!((pi - yi).abs() < 0.2, "{pi} vs {yi}");
        }
        // Deterministic.
        assert_eq!(train_gbdt(&x, &y, &names, &params).unwrap(), m);
    }

    #[test]
    fn handles_missing_values_and_rejects_bad_input() {
        let (x, y) = and_data();
        let mut data = x.as_slice().to_vec();
        for i in (0..data.len()).step_by(9) {
            data[i] = f64::NAN;
        }
        let xm = Matrix::new(data, x.n_rows(), x.n_cols()).unwrap();
        let names: Vec<String> = ["a", "b", "n"].iter().map(|s| s.to_string()).collect();
        let m = train_gbdt(&xm, &y, &names, &GbdtParams::default()).unwrap();
        assert!(m
            .ensemble
            .predict(&xm, Output::Probability)
            .unwrap()
            .iter()
            .all(|p| p.is_finite()));
        assert!(train_gbdt(&x, &y[1..], &names, &GbdtParams::default()).is_err());
        assert!(train_gbdt(&x, &vec![1.0; y.len()], &names, &GbdtParams::default()).is_err());
        assert!(train_gbdt(&x, &vec![2.0; y.len()], &names, &GbdtParams::default()).is_err());
        let bad = GbdtParams {
            learning_rate: 0.0,
            ..GbdtParams::default()
        };
        assert!(train_gbdt(&x, &y, &names, &bad).is_err());
    }
}
