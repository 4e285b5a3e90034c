//! Exact SHAP values for tree ensembles, in margin (raw score) space.
//!
//! - [`TreeExplainer`]: **path-dependent** TreeSHAP — the Shapley values of
//!   `v(S) = E[f(x) | x_S]` where the expectation follows the training covers of the tree
//!   (Lundberg et al. 2018, "Algorithm 2"; what `shap.TreeExplainer(model)` computes with
//!   `feature_perturbation="tree_path_dependent"`). Two algorithms give the same numbers:
//!   - [`Algorithm::Fast`] (default) precomputes, once per leaf, two tables indexed by the
//!     subset of the leaf's path features that a row "agrees with"; a row then costs one pass
//!     over the nodes (to find each leaf's agreement mask) plus `O(d)` table look-ups per leaf,
//!     `d` = distinct features on the leaf's path — the idea of Fast TreeSHAP v2 (Yang 2021),
//!     derived afresh below;
//!   - [`Algorithm::Classic`] is the recursive path-extension / unwinding algorithm
//!     (`O(L·D²)` per tree and row), kept as the test oracle and the benchmark baseline.
//! - [`InterventionalTreeExplainer`]: **interventional** TreeSHAP with a background set —
//!   exact Shapley values of `v(S) = mean_b f(x_S, b_{¬S})`, one tree walk per (row,
//!   background row) pair (Lundberg et al. 2020, "independent" TreeSHAP).
//!
//! ## The fast path-dependent algorithm
//!
//! For one leaf with value `v`, let `F` be the distinct features on its path (`d = |F|`),
//! `z_k` the product of `cover(child)/cover(parent)` over the path splits on feature `k` and
//! `O ⊆ F` the features whose every split on the path the row follows. The leaf's game is
//! `v(S) = v · Π_{k∈F∖S} z_k · [F∩S ⊆ O]`, and its Shapley values reduce to
//!
//! ```text
//! φ_j = v (1 − z_j) · Zc(O) · H(O ∖ {j})     for j ∈ O
//! φ_j = −v · Zc(O) · H(O)                    for j ∈ F ∖ O
//! Zc(M) = Π_{k∈F∖M} z_k,   H(M) = Σ_{S⊆M} |S|!(d−|S|−1)!/d! · Π_{k∈M∖S} z_k
//! ```
//!
//! so `Zc` and `v·H` are tabulated for all `2^d` masks (via elementary symmetric polynomials
//! of the `z`'s). A tree whose tables would exceed [`MAX_TABLE_ENTRIES`] falls back to the
//! classic algorithm.
//!
//! Missing values (`NaN`) follow each split's default direction, as in prediction.

use rayon::prelude::*;

use super::Explanation;
use crate::model::tree::{Node, Tree, TreeEnsemble};
use crate::{AiError, Matrix, Output};

/// Per-tree cap on the fast algorithm's table size (sum over leaves of `2^d`); larger trees
/// use the classic algorithm.
pub const MAX_TABLE_ENTRIES: usize = 1 << 20;

/// Rows explained together, tree by tree, by [`TreeExplainer::explain`].
const ROW_BLOCK: usize = 32;

/// Which path-dependent TreeSHAP algorithm to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Precomputed per-leaf subset tables (default).
    #[default]
    Fast,
    /// The classic recursive algorithm (Lundberg et al. 2018, Algorithm 2).
    Classic,
}

/// Path-dependent TreeSHAP over a [`TreeEnsemble`], in margin space.
#[derive(Debug, Clone)]
pub struct TreeExplainer<'a> {
    ens: &'a TreeEnsemble,
    algorithm: Algorithm,
    fast: Vec<FastTree>,
    classic_path_len: usize,
    base_value: f64,
}

impl<'a> TreeExplainer<'a> {
    /// Prepares the fast algorithm for `ens`. Fails with [`AiError::InvalidArgument`] when an
    /// internal node has a non-positive cover (the cover ratios would be undefined).
    pub fn new(ens: &'a TreeEnsemble) -> Result<Self, AiError> {
        Self::with_algorithm(ens, Algorithm::Fast)
    }

    /// Prepares the chosen algorithm for `ens`.
    pub fn with_algorithm(ens: &'a TreeEnsemble, algorithm: Algorithm) -> Result<Self, AiError> {
        let mut base_value = ens.base_margin;
        for (t, tree) in ens.trees.iter().enumerate() {
            check_covers(tree, t)?;
            base_value += expected_value(tree);
        }
        let fast = match algorithm {
            Algorithm::Fast => ens.trees.iter().map(FastTree::build).collect(),
            Algorithm::Classic => Vec::new(),
        };
        let max_depth = ens.trees.iter().map(Tree::max_depth).max().unwrap_or(0);
        Ok(TreeExplainer {
            ens,
            algorithm,
            fast,
            classic_path_len: (max_depth + 2) * (max_depth + 3) / 2 + max_depth + 2,
            base_value,
        })
    }

    /// The algorithm in use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The expected margin under the trees' covers (`shap`'s `expected_value`).
    pub fn base_value(&self) -> f64 {
        self.base_value
    }

    /// Explains one row.
    pub fn explain_row(&self, row: &[f64]) -> Result<Explanation, AiError> {
        self.check_row(row)?;
        let mut scratch = Scratch::default();
        Ok(self.explain_unchecked(row, &mut scratch))
    }

    /// Explains every row of `x`, in parallel over rows on the current rayon pool.
    pub fn explain(&self, x: &Matrix) -> Result<Vec<Explanation>, AiError> {
        let n = self.ens.feature_names.len();
        if x.n_cols() != n {
            return Err(AiError::FeatureCount {
                expected: n,
                got: x.n_cols(),
            });
        }
        if x.n_rows() == 0 {
            return Ok(Vec::new());
        }
        if n == 0 {
            let mut scratch = Scratch::default();
            return Ok(x
                .rows()
                .map(|r| self.explain_unchecked(r, &mut scratch))
                .collect());
        }
        // Blocks of rows, tree-major inside a block: a tree's nodes and tables stay in cache
        // while every row of the block goes through it.
        let blocks: Vec<Vec<Explanation>> = x
            .as_slice()
            .par_chunks(n * ROW_BLOCK)
            .map_init(Scratch::default, |s, block| self.explain_block(block, n, s))
            .collect();
        Ok(blocks.into_iter().flatten().collect())
    }

    fn explain_block(&self, block: &[f64], n: usize, scratch: &mut Scratch) -> Vec<Explanation> {
        let mut phi = vec![0.0; block.len()];
        for (t, tree) in self.ens.trees.iter().enumerate() {
            for (row, out) in block.chunks_exact(n).zip(phi.chunks_exact_mut(n)) {
                self.accumulate_tree(t, tree, row, out, scratch);
            }
        }
        block
            .chunks_exact(n)
            .zip(phi.chunks_exact(n))
            .map(|(row, values)| Explanation {
                base_value: self.base_value,
                values: values.to_vec(),
                prediction: self.ens.margin_row(row),
                output: Output::Margin,
            })
            .collect()
    }

    /// Writes the SHAP values of `row` into `phi` (overwritten), returning the margin.
    pub fn shap_values_into(&self, row: &[f64], phi: &mut [f64]) -> Result<f64, AiError> {
        self.check_row(row)?;
        if phi.len() != row.len() {
            return Err(AiError::InvalidArgument(format!(
                "output buffer has {} slots for {} features",
                phi.len(),
                row.len()
            )));
        }
        phi.iter_mut().for_each(|p| *p = 0.0);
        let mut scratch = Scratch::default();
        self.accumulate(row, phi, &mut scratch);
        Ok(self.ens.margin_row(row))
    }

    fn check_row(&self, row: &[f64]) -> Result<(), AiError> {
        let n = self.ens.feature_names.len();
        if row.len() != n {
            return Err(AiError::FeatureCount {
                expected: n,
                got: row.len(),
            });
        }
        Ok(())
    }

    fn explain_unchecked(&self, row: &[f64], scratch: &mut Scratch) -> Explanation {
        let mut phi = vec![0.0; row.len()];
        self.accumulate(row, &mut phi, scratch);
        Explanation {
            base_value: self.base_value,
            values: phi,
            prediction: self.ens.margin_row(row),
            output: Output::Margin,
        }
    }

    fn accumulate(&self, row: &[f64], phi: &mut [f64], scratch: &mut Scratch) {
        for (t, tree) in self.ens.trees.iter().enumerate() {
            self.accumulate_tree(t, tree, row, phi, scratch);
        }
    }

    #[inline]
    fn accumulate_tree(
        &self,
        t: usize,
        tree: &Tree,
        row: &[f64],
        phi: &mut [f64],
        scratch: &mut Scratch,
    ) {
        match (self.algorithm, self.fast.get(t)) {
            (Algorithm::Fast, Some(FastTree::Tables(tt))) => {
                tt.accumulate(row, phi, &mut scratch.masks)
            }
            _ => classic_tree(tree, row, phi, &mut scratch.path, self.classic_path_len),
        }
    }
}

/// Per-thread working memory.
#[derive(Default)]
struct Scratch {
    masks: Vec<u64>,
    path: Vec<PathElem>,
}

fn check_covers(tree: &Tree, t: usize) -> Result<(), AiError> {
    for (i, n) in tree.nodes.iter().enumerate() {
        let valid = n.cover > 0.0 && n.cover.is_finite();
        if !n.is_leaf() && !valid {
            return Err(AiError::InvalidArgument(format!(
                "tree {t} node {i}: cover {} must be positive for path-dependent TreeSHAP",
                n.cover
            )));
        }
    }
    Ok(())
}

/// The cover-weighted mean leaf value: at each node `(c_l·m_l + c_r·m_r) / c_node`.
fn expected_value(tree: &Tree) -> f64 {
    fn rec(t: &Tree, i: usize) -> f64 {
        let n = &t.nodes[i];
        if n.is_leaf() {
            return n.value;
        }
        let (l, r) = (&t.nodes[n.left as usize], &t.nodes[n.right as usize]);
        (l.cover * rec(t, n.left as usize) + r.cover * rec(t, n.right as usize)) / n.cover
    }
    if tree.nodes.is_empty() {
        0.0
    } else {
        rec(tree, 0)
    }
}

// ---------------------------------------------------------------------------------------------
// Fast algorithm
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum FastTree {
    Tables(Box<TableTree>),
    TooLarge,
}

/// A tree in preorder with per-leaf tables.
#[derive(Debug, Clone)]
struct TableTree {
    /// Nodes in preorder (every parent before its children).
    nodes: Vec<CNode>,
    /// Per leaf, in preorder of leaves.
    leaves: Vec<LeafInfo>,
    /// Distinct path features of every leaf, concatenated.
    features: Vec<u32>,
    /// `1 − z` for each entry of `features`.
    one_minus_z: Vec<f64>,
    /// Per leaf: `Zc(M)` for all masks, then `v·H(M)` for all masks.
    tables: Vec<f64>,
}

#[derive(Debug, Clone)]
struct CNode {
    /// The original node (split rule, missing direction).
    node: Node,
    /// Preorder indices of the children (internal nodes).
    left: u32,
    right: u32,
    /// Bit of this split's feature in the agreement masks of the leaves below it.
    bit: u64,
    /// Leaf number (leaves only).
    leaf: u32,
}

#[derive(Debug, Clone, Copy)]
struct LeafInfo {
    d: u32,
    feat_off: u32,
    table_off: usize,
}

impl FastTree {
    fn build(tree: &Tree) -> FastTree {
        // Size check first: sum over leaves of 2^d.
        let mut total = 0usize;
        let mut ok = true;
        let mut path: Vec<u32> = Vec::new();
        leaf_dims(tree, 0, &mut path, &mut |d| {
            if d >= 40 {
                ok = false;
            } else {
                total = total.saturating_add(1usize << d);
            }
        });
        if !ok || total > MAX_TABLE_ENTRIES {
            tracing::debug!(
                entries = total,
                "tree too large for the fast TreeSHAP tables; using the classic algorithm"
            );
            return FastTree::TooLarge;
        }
        let mut tt = TableTree {
            nodes: Vec::with_capacity(tree.nodes.len()),
            leaves: Vec::new(),
            features: Vec::new(),
            one_minus_z: Vec::new(),
            tables: Vec::with_capacity(2 * total),
        };
        let mut path = Vec::new();
        tt.build_rec(tree, 0, &mut path);
        FastTree::Tables(Box::new(tt))
    }
}

/// Calls `f(d)` for every leaf with its number of distinct path features.
fn leaf_dims(tree: &Tree, i: usize, path: &mut Vec<u32>, f: &mut impl FnMut(usize)) {
    let n = &tree.nodes[i];
    if n.is_leaf() {
        f(path.len());
        return;
    }
    let added = !path.contains(&n.feature);
    if added {
        path.push(n.feature);
    }
    leaf_dims(tree, n.left as usize, path, f);
    leaf_dims(tree, n.right as usize, path, f);
    if added {
        path.pop();
    }
}

impl TableTree {
    /// Preorder construction. `path` holds (feature, z) of the distinct features so far.
    fn build_rec(&mut self, tree: &Tree, i: usize, path: &mut Vec<(u32, f64)>) -> u32 {
        let n = &tree.nodes[i];
        // Node counts are bounded by the u32 child indices of `Node`.
        let me = self.nodes.len() as u32;
        if n.is_leaf() {
            let leaf = self.leaves.len() as u32;
            self.nodes.push(CNode {
                node: n.clone(),
                left: Node::NONE,
                right: Node::NONE,
                bit: 0,
                leaf,
            });
            self.add_leaf(n.value, path);
            return me;
        }
        let pos = path.iter().position(|(f, _)| *f == n.feature);
        let bit = 1u64 << pos.unwrap_or(path.len());
        self.nodes.push(CNode {
            node: n.clone(),
            left: 0,
            right: 0,
            bit,
            leaf: Node::NONE,
        });
        let mut children = [0u32; 2];
        for (k, c) in [n.left, n.right].into_iter().enumerate() {
            let ratio = tree.nodes[c as usize].cover / n.cover;
            match pos {
                Some(p) => {
                    let old = path[p].1;
                    path[p].1 = old * ratio;
                    children[k] = self.build_rec(tree, c as usize, path);
                    path[p].1 = old;
                }
                None => {
                    path.push((n.feature, ratio));
                    children[k] = self.build_rec(tree, c as usize, path);
                    path.pop();
                }
            }
        }
        let node = &mut self.nodes[me as usize];
        node.left = children[0];
        node.right = children[1];
        me
    }

    fn add_leaf(&mut self, value: f64, path: &[(u32, f64)]) {
        let d = path.len();
        let size = 1usize << d;
        self.leaves.push(LeafInfo {
            d: d as u32,
            feat_off: self.features.len() as u32,
            table_off: self.tables.len(),
        });
        for &(f, z) in path {
            self.features.push(f);
            self.one_minus_z.push(1.0 - z);
        }
        // Shapley weights w(s) = s!(d-s-1)!/d! for s < d.
        let w: Vec<f64> = (0..d).map(|s| shapley_weight(s, d)).collect();
        // Elementary symmetric polynomials of z over each mask, built from the mask without
        // its lowest bit: e(M) = e(M') * (1 + z_low t).
        let mut e = vec![0.0; size * (d + 1)];
        e[0] = 1.0;
        let mut zc = vec![1.0; size];
        let mut h = vec![0.0; size];
        for m in 0..size {
            if m > 0 {
                let low = m.trailing_zeros() as usize;
                let prev = m & (m - 1);
                let z = path[low].1;
                for t in 0..=d {
                    let mut val = e[prev * (d + 1) + t];
                    if t > 0 {
                        val += z * e[prev * (d + 1) + t - 1];
                    }
                    e[m * (d + 1) + t] = val;
                }
            }
            let card = m.count_ones() as usize;
            // H(M) = sum_t w(|M| - t) e_t(M), only terms with |S| = |M| - t < d.
            h[m] = (0..=card)
                .filter(|&t| card - t < d)
                .map(|t| w[card - t] * e[m * (d + 1) + t])
                .sum::<f64>()
                * value;
            zc[m] = (0..d)
                .filter(|k| m & (1 << k) == 0)
                .map(|k| path[k].1)
                .product();
        }
        self.tables.extend_from_slice(&zc);
        self.tables.extend_from_slice(&h);
    }

    #[inline]
    fn accumulate(&self, row: &[f64], phi: &mut [f64], masks: &mut Vec<u64>) {
        masks.clear();
        masks.resize(self.nodes.len(), 0);
        masks[0] = u64::MAX;
        for (i, cn) in self.nodes.iter().enumerate() {
            let m = masks[i];
            if cn.leaf != Node::NONE {
                let info = self.leaves[cn.leaf as usize];
                let d = info.d as usize;
                let o = (m & ((1u64 << d) - 1)) as usize;
                let size = 1usize << d;
                let tab = &self.tables[info.table_off..info.table_off + 2 * size];
                let (zc, hv) = tab.split_at(size);
                let a = zc[o];
                let neg = a * hv[o];
                let fo = info.feat_off as usize;
                let feats = &self.features[fo..fo + d];
                let omz = &self.one_minus_z[fo..fo + d];
                // Branch-free on purpose: whether the row agrees with feature k is close to a
                // coin flip, so a branch here would mispredict about half the time.
                for k in 0..d {
                    let b = 1usize << k;
                    let inside = ((o >> k) & 1) as f64;
                    let plus = omz[k] * a * hv[o ^ b];
                    // Exact: one of the two products is multiplied by zero.
                    phi[feats[k] as usize] += inside * plus - (1.0 - inside) * neg;
                }
            } else {
                let left = cn.node.goes_left(row[cn.node.feature as usize]);
                // Branch-free: the child the row does not take loses this feature's bit.
                let clear_left = cn.bit * u64::from(!left);
                masks[cn.left as usize] = m & !clear_left;
                masks[cn.right as usize] = m & !(cn.bit ^ clear_left);
            }
        }
    }
}

/// `s!(d−s−1)!/d!`, computed as a product to stay finite for large `d`.
fn shapley_weight(s: usize, d: usize) -> f64 {
    // s!(d-1-s)!/d! = 1 / (d * C(d-1, s))
    let mut c = 1.0f64;
    for i in 0..s {
        c = c * (d - 1 - i) as f64 / (i + 1) as f64;
    }
    1.0 / (d as f64 * c)
}

// ---------------------------------------------------------------------------------------------
// Classic algorithm (Lundberg et al. 2018, Algorithm 2)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct PathElem {
    feature: i64,
    zero: f64,
    one: f64,
    weight: f64,
}

fn classic_tree(tree: &Tree, row: &[f64], phi: &mut [f64], buf: &mut Vec<PathElem>, len: usize) {
    if tree.nodes.is_empty() {
        return;
    }
    if buf.len() < len {
        buf.resize(len, PathElem::default());
    }
    classic_rec(tree, row, phi, buf, 0, 0, 0, 1.0, 1.0, -1);
}

fn extend(path: &mut [PathElem], depth: usize, zero: f64, one: f64, feature: i64) {
    path[depth] = PathElem {
        feature,
        zero,
        one,
        weight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let dp1 = (depth + 1) as f64;
    for i in (0..depth).rev() {
        path[i + 1].weight += one * path[i].weight * (i + 1) as f64 / dp1;
        path[i].weight = zero * path[i].weight * (depth - i) as f64 / dp1;
    }
}

fn unwind(path: &mut [PathElem], depth: usize, index: usize) {
    let one = path[index].one;
    let zero = path[index].zero;
    let dp1 = (depth + 1) as f64;
    let mut next_one = path[depth].weight;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = path[i].weight;
            path[i].weight = next_one * dp1 / ((i + 1) as f64 * one);
            next_one = tmp - path[i].weight * zero * (depth - i) as f64 / dp1;
        } else {
            path[i].weight = path[i].weight * dp1 / (zero * (depth - i) as f64);
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
}

fn unwound_sum(path: &[PathElem], depth: usize, index: usize) -> f64 {
    let one = path[index].one;
    let zero = path[index].zero;
    let dp1 = (depth + 1) as f64;
    let mut next_one = path[depth].weight;
    let mut total = 0.0;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = next_one * dp1 / ((i + 1) as f64 * one);
            total += tmp;
            next_one = path[i].weight - tmp * zero * (depth - i) as f64 / dp1;
        } else if zero != 0.0 {
            total += path[i].weight / zero / ((depth - i) as f64 / dp1);
        }
    }
    total
}

#[allow(clippy::too_many_arguments)]
fn classic_rec(
    tree: &Tree,
    row: &[f64],
    phi: &mut [f64],
    buf: &mut [PathElem],
    parent_off: usize,
    depth: usize,
    node: usize,
    zero: f64,
    one: f64,
    feature: i64,
) {
    // This level's path lives right after the parent's, whose entries 0..depth are copied
    // here before the extension writes entry `depth`.
    let off = if depth == 0 {
        parent_off
    } else {
        parent_off + depth + 1
    };
    if depth > 0 {
        buf.copy_within(parent_off..parent_off + depth, off);
    }
    let mut depth = depth;
    {
        let path = &mut buf[off..];
        extend(path, depth, zero, one, feature);
    }
    let n = &tree.nodes[node];
    if n.is_leaf() {
        let path = &buf[off..];
        for i in 1..=depth {
            let w = unwound_sum(path, depth, i);
            let el = path[i];
            phi[el.feature as usize] += w * (el.one - el.zero) * n.value;
        }
        return;
    }
    let (hot, cold) = if n.goes_left(row[n.feature as usize]) {
        (n.left as usize, n.right as usize)
    } else {
        (n.right as usize, n.left as usize)
    };
    let hot_zero = tree.nodes[hot].cover / n.cover;
    let cold_zero = tree.nodes[cold].cover / n.cover;
    let mut in_zero = 1.0;
    let mut in_one = 1.0;
    let f = i64::from(n.feature);
    if let Some(k) = (1..=depth).find(|&k| buf[off + k].feature == f) {
        in_zero = buf[off + k].zero;
        in_one = buf[off + k].one;
        unwind(&mut buf[off..], depth, k);
        depth -= 1;
    }
    classic_rec(
        tree,
        row,
        phi,
        buf,
        off,
        depth + 1,
        hot,
        hot_zero * in_zero,
        in_one,
        f,
    );
    classic_rec(
        tree,
        row,
        phi,
        buf,
        off,
        depth + 1,
        cold,
        cold_zero * in_zero,
        0.0,
        f,
    );
}

// ---------------------------------------------------------------------------------------------
// Interventional TreeSHAP
// ---------------------------------------------------------------------------------------------

/// Interventional TreeSHAP: exact Shapley values of `v(S) = mean_b f(x_S, b_{¬S})` over a
/// background set, in margin space. Cost per row is `O(|background| · Σ_trees nodes)`.
#[derive(Debug, Clone)]
pub struct InterventionalTreeExplainer<'a> {
    ens: &'a TreeEnsemble,
    background: Matrix,
    base_value: f64,
    /// `weights[n][s] = s!(n−s−1)!/n!`.
    weights: Vec<Vec<f64>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    None,
    X,
    B,
}

impl<'a> InterventionalTreeExplainer<'a> {
    /// Prepares the explainer; the background must be non-empty and as wide as the model.
    pub fn new(ens: &'a TreeEnsemble, background: &Matrix) -> Result<Self, AiError> {
        let n = ens.feature_names.len();
        if background.n_cols() != n {
            return Err(AiError::FeatureCount {
                expected: n,
                got: background.n_cols(),
            });
        }
        if background.n_rows() == 0 {
            return Err(AiError::InvalidArgument("empty background set".into()));
        }
        let base_value =
            background.rows().map(|b| ens.margin_row(b)).sum::<f64>() / background.n_rows() as f64;
        let max_depth = ens.trees.iter().map(Tree::max_depth).max().unwrap_or(0);
        let weights = (0..=max_depth.min(n) + 1)
            .map(|k| {
                (0..k.max(1))
                    .map(|s| if k == 0 { 0.0 } else { shapley_weight(s, k) })
                    .collect()
            })
            .collect();
        Ok(InterventionalTreeExplainer {
            ens,
            background: background.clone(),
            base_value,
            weights,
        })
    }

    /// The mean margin over the background.
    pub fn base_value(&self) -> f64 {
        self.base_value
    }

    /// Explains one row.
    pub fn explain_row(&self, row: &[f64]) -> Result<Explanation, AiError> {
        let n = self.ens.feature_names.len();
        if row.len() != n {
            return Err(AiError::FeatureCount {
                expected: n,
                got: row.len(),
            });
        }
        let mut side = vec![Side::None; n];
        let mut list = Vec::new();
        Ok(self.explain_unchecked(row, &mut side, &mut list))
    }

    /// Explains every row of `x`, in parallel over rows.
    pub fn explain(&self, x: &Matrix) -> Result<Vec<Explanation>, AiError> {
        let n = self.ens.feature_names.len();
        if x.n_cols() != n {
            return Err(AiError::FeatureCount {
                expected: n,
                got: x.n_cols(),
            });
        }
        Ok((0..x.n_rows())
            .into_par_iter()
            .map_init(
                || (vec![Side::None; n], Vec::new()),
                |(side, list), i| self.explain_unchecked(x.row(i), side, list),
            )
            .collect())
    }

    fn explain_unchecked(
        &self,
        row: &[f64],
        side: &mut [Side],
        list: &mut Vec<u32>,
    ) -> Explanation {
        let mut phi = vec![0.0; row.len()];
        for b in self.background.rows() {
            for tree in &self.ens.trees {
                if !tree.nodes.is_empty() {
                    self.rec(tree, 0, row, b, side, list, 0, &mut phi);
                }
            }
        }
        let inv = 1.0 / self.background.n_rows() as f64;
        phi.iter_mut().for_each(|p| *p *= inv);
        Explanation {
            base_value: self.base_value,
            values: phi,
            prediction: self.ens.margin_row(row),
            output: Output::Margin,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rec(
        &self,
        tree: &Tree,
        i: usize,
        x: &[f64],
        b: &[f64],
        side: &mut [Side],
        list: &mut Vec<u32>,
        nx: usize,
        phi: &mut [f64],
    ) {
        let n = &tree.nodes[i];
        if n.is_leaf() {
            let total = list.len();
            if total == 0 {
                return;
            }
            let w = &self.weights[total];
            // x-side features: + v w(nx-1, total); b-side: - v w(nx, total).
            let plus = if nx > 0 { n.value * w[nx - 1] } else { 0.0 };
            let minus = if nx < total { n.value * w[nx] } else { 0.0 };
            for &f in list.iter() {
                match side[f as usize] {
                    Side::X => phi[f as usize] += plus,
                    Side::B => phi[f as usize] -= minus,
                    Side::None => {}
                }
            }
            return;
        }
        let f = n.feature as usize;
        let gx = n.goes_left(x[f]);
        let gb = n.goes_left(b[f]);
        let child = |g: bool| if g { n.left as usize } else { n.right as usize };
        if gx == gb {
            return self.rec(tree, child(gx), x, b, side, list, nx, phi);
        }
        match side[f] {
            Side::X => self.rec(tree, child(gx), x, b, side, list, nx, phi),
            Side::B => self.rec(tree, child(gb), x, b, side, list, nx, phi),
            Side::None => {
                list.push(n.feature);
                side[f] = Side::X;
                self.rec(tree, child(gx), x, b, side, list, nx + 1, phi);
                side[f] = Side::B;
                self.rec(tree, child(gb), x, b, side, list, nx, phi);
                side[f] = Side::None;
                list.pop();
            }
        }
    }
}
