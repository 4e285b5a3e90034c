//! Tree ensembles (XGBoost, LightGBM) in one in-memory form shared by prediction and the
//! tree explainers.
//!
//! Loaders live in `xgboost.rs` and `lightgbm.rs`; both produce a [`TreeEnsemble`].

use serde::{Deserialize, Serialize};

/// How a node compares a feature value with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum SplitRule {
    /// XGBoost: go left when `(x as f32) < threshold`; a missing value (NaN) goes
    /// `default_left`.
    LessThanF32 {
        /// Split condition as stored by XGBoost.
        threshold: f32,
    },
    /// LightGBM numerical split: go left when `x <= threshold`; missing handling per
    /// [`MissingKind`].
    LessOrEqual {
        /// Split threshold.
        threshold: f64,
        /// Which inputs count as missing.
        missing: MissingKind,
    },
}

/// LightGBM's missing-value types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissingKind {
    /// No missing handling: NaN is treated as 0.0.
    None,
    /// Zero (and NaN) are missing and go `default_left`.
    Zero,
    /// NaN is missing and goes `default_left`.
    NaN,
}

/// One node of a tree. Leaves have `left == right == u32::MAX`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Feature index tested by an internal node (unused on leaves).
    pub feature: u32,
    /// Comparison of an internal node.
    pub rule: SplitRule,
    /// Child for values that satisfy the rule.
    pub left: u32,
    /// Child for the others.
    pub right: u32,
    /// Direction of missing values.
    pub default_left: bool,
    /// Leaf output (margin contribution); internal nodes may carry their mean value.
    pub value: f64,
    /// Training cover: sum of hessians (XGBoost) or sample count (LightGBM).
    pub cover: f64,
}

impl Node {
    /// Marker for "no child".
    pub const NONE: u32 = u32::MAX;

    /// Whether this node is a leaf.
    #[inline]
    pub fn is_leaf(&self) -> bool {
        self.left == Self::NONE
    }

    /// Whether a row whose tested feature has value `x` goes to the left child.
    #[inline]
    pub fn goes_left(&self, x: f64) -> bool {
        match self.rule {
            SplitRule::LessThanF32 { threshold } => {
                if x.is_nan() {
                    self.default_left
                } else {
                    (x as f32) < threshold
                }
            }
            SplitRule::LessOrEqual { threshold, missing } => match missing {
                MissingKind::None => {
                    let x = if x.is_nan() { 0.0 } else { x };
                    x <= threshold
                }
                MissingKind::Zero => {
                    if x.is_nan() || x == 0.0 {
                        self.default_left
                    } else {
                        x <= threshold
                    }
                }
                MissingKind::NaN => {
                    if x.is_nan() {
                        self.default_left
                    } else {
                        x <= threshold
                    }
                }
            },
        }
    }

    /// The child a row goes to.
    #[inline]
    pub fn next(&self, row: &[f64]) -> u32 {
        if self.goes_left(row[self.feature as usize]) {
            self.left
        } else {
            self.right
        }
    }
}

/// One regression tree; node 0 is the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// Nodes, root first.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// The leaf value reached by `row`.
    #[inline]
    pub fn predict(&self, row: &[f64]) -> f64 {
        let mut i = 0usize;
        loop {
            let n = &self.nodes[i];
            if n.is_leaf() {
                return n.value;
            }
            i = n.next(row) as usize;
        }
    }

    /// Depth of the deepest leaf (a lone leaf has depth 0).
    pub fn max_depth(&self) -> usize {
        fn rec(t: &Tree, i: usize) -> usize {
            let n = &t.nodes[i];
            if n.is_leaf() {
                0
            } else {
                1 + rec(t, n.left as usize).max(rec(t, n.right as usize))
            }
        }
        if self.nodes.is_empty() {
            0
        } else {
            rec(self, 0)
        }
    }
}

/// The link from margin to output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Link {
    /// Output = margin (regression).
    Identity,
    /// Output = 1 / (1 + exp(-margin)) (binary classification).
    Logistic,
}

impl Link {
    /// Applies the link to a margin.
    #[inline]
    pub fn apply(self, margin: f64) -> f64 {
        match self {
            Link::Identity => margin,
            Link::Logistic => 1.0 / (1.0 + (-margin).exp()),
        }
    }
}

/// A sum of trees plus a base margin, then a link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeEnsemble {
    /// Input feature names in column order.
    pub feature_names: Vec<String>,
    /// The trees; the margin is `base_margin + sum of leaf values`.
    pub trees: Vec<Tree>,
    /// Margin added to every prediction (XGBoost's base score in margin space; 0 for
    /// LightGBM, whose init score is folded into the first tree).
    pub base_margin: f64,
    /// Link from margin to output.
    pub link: Link,
}

/// Row count from which [`TreeEnsemble`] prediction fans out over rayon's thread pool.
pub const PARALLEL_ROWS: usize = 256;

/// Rows scored together, tree by tree.
const PREDICT_BLOCK: usize = 64;

impl TreeEnsemble {
    /// The margin (base margin plus the sum of leaf values) for one row.
    ///
    /// The row must have at least as many values as the highest feature index the trees use;
    /// [`crate::Model::predict`] checks the width, this raw form does not.
    #[inline]
    pub fn margin_row(&self, row: &[f64]) -> f64 {
        self.base_margin + self.trees.iter().map(|t| t.predict(row)).sum::<f64>()
    }

    /// Checks the structure every consumer relies on: child indices in range, node 0 the root,
    /// internal nodes with two children and a feature below `feature_names.len()`, every node
    /// reachable exactly once (a tree, not a DAG or a cycle), finite leaf values and
    /// non-negative covers. `source` names the model in the error.
    pub fn validate(&self, source: &str) -> Result<(), crate::AiError> {
        let err = |reason: String| crate::AiError::ModelFormat {
            path: source.to_string(),
            reason,
        };
        if !self.base_margin.is_finite() {
            return Err(err(format!(
                "base margin {} is not finite",
                self.base_margin
            )));
        }
        let n_features = self.feature_names.len();
        for (t, tree) in self.trees.iter().enumerate() {
            let n = tree.nodes.len();
            if n == 0 {
                return Err(err(format!("tree {t} has no nodes")));
            }
            let mut seen = vec![false; n];
            let mut stack = vec![0usize];
            while let Some(i) = stack.pop() {
                if seen[i] {
                    return Err(err(format!("tree {t}: node {i} is reached twice")));
                }
                seen[i] = true;
                let node = &tree.nodes[i];
                if !(node.cover.is_finite() && node.cover >= 0.0) {
                    return Err(err(format!(
                        "tree {t} node {i}: invalid cover {}",
                        node.cover
                    )));
                }
                if node.is_leaf() {
                    if node.right != Node::NONE {
                        return Err(err(format!("tree {t} node {i}: only one child")));
                    }
                    if !node.value.is_finite() {
                        return Err(err(format!(
                            "tree {t} leaf {i}: value {} is not finite",
                            node.value
                        )));
                    }
                    continue;
                }
                if node.feature as usize >= n_features {
                    return Err(err(format!(
                        "tree {t} node {i}: feature index {} out of range (model has {n_features} features)",
                        node.feature
                    )));
                }
                for c in [node.left, node.right] {
                    if c == Node::NONE || c as usize >= n {
                        return Err(err(format!(
                            "tree {t} node {i}: child index {c} out of range ({n} nodes)"
                        )));
                    }
                    stack.push(c as usize);
                }
            }
            if let Some(orphan) = seen.iter().position(|s| !s) {
                return Err(err(format!(
                    "tree {t}: node {orphan} is not reachable from the root"
                )));
            }
        }
        Ok(())
    }
}

impl crate::Model for TreeEnsemble {
    fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    fn predict(
        &self,
        x: &crate::Matrix,
        output: crate::Output,
    ) -> Result<Vec<f64>, crate::AiError> {
        use rayon::prelude::*;
        self.check_width(x)?;
        let n = x.n_cols();
        if n == 0 {
            // Only all-leaf trees can have no features (checked by `validate`).
            let m = self.margin_row(&[]);
            let v = match output {
                crate::Output::Margin => m,
                crate::Output::Probability => self.link.apply(m),
            };
            return Ok(vec![v; x.n_rows()]);
        }
        // Blocks of rows, tree-major inside a block so that a tree stays in cache.
        let block = |rows: &[f64]| -> Vec<f64> {
            let mut out = vec![self.base_margin; rows.len() / n];
            for tree in &self.trees {
                for (o, row) in out.iter_mut().zip(rows.chunks_exact(n)) {
                    *o += tree.predict(row);
                }
            }
            if output == crate::Output::Probability {
                out.iter_mut().for_each(|m| *m = self.link.apply(*m));
            }
            out
        };
        let data = x.as_slice();
        if x.n_rows() >= PARALLEL_ROWS {
            let blocks: Vec<Vec<f64>> = data.par_chunks(n * PREDICT_BLOCK).map(block).collect();
            Ok(blocks.concat())
        } else {
            Ok(data.chunks(n * PREDICT_BLOCK).flat_map(block).collect())
        }
    }

    fn as_tree_ensemble(&self) -> Option<&TreeEnsemble> {
        Some(self)
    }
}
