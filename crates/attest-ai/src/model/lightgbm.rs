//! Loader for LightGBM text models (`Booster.save_model("model.txt")`, format `v3`/`v4`).
//!
//! Supported: numerical splits with every missing-value type (None / Zero / NaN) and
//! `default_left`, one tree per iteration, objectives `binary` (logistic link; a `sigmoid:σ`
//! other than 1 is folded into the leaf values so that the margin is the log-odds `σ·raw`),
//! `cross_entropy` (logistic link) and the regression family `regression`, `regression_l1`,
//! `huber`, `fair`, `quantile`, `mape` (identity link). Categorical splits, linear trees,
//! multiclass, ranking and log-link objectives are rejected with [`AiError::ModelFormat`].
//!
//! Node covers are LightGBM's training-data counts (`internal_count` / `leaf_count`), as used
//! by LightGBM's own `pred_contrib` and by `shap`.

use std::collections::HashMap;
use std::path::Path;

use super::tree::{Link, MissingKind, Node, SplitRule, Tree, TreeEnsemble};
use crate::AiError;

/// Reads and parses a LightGBM text model file.
pub fn load(path: impl AsRef<Path>) -> Result<TreeEnsemble, AiError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| AiError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses the text of a LightGBM model; `source` names it in errors.
pub fn parse(text: &str, source: &str) -> Result<TreeEnsemble, AiError> {
    let err = |reason: String| AiError::ModelFormat {
        path: source.to_string(),
        reason,
    };
    let mut lines = text.lines().map(str::trim).peekable();
    match lines.next() {
        Some("tree") => {}
        other => {
            return Err(err(format!(
                "first line is {other:?}, a LightGBM text model starts with \"tree\""
            )))
        }
    }
    // Header: key=value lines up to the first "Tree=".
    let mut header: HashMap<&str, &str> = HashMap::new();
    while let Some(line) = lines.peek() {
        if line.starts_with("Tree=") || *line == "end of trees" {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            header.insert(k, v);
        }
        lines.next();
    }
    let get = |k: &str| {
        header
            .get(k)
            .copied()
            .ok_or_else(|| err(format!("header has no {k:?} line")))
    };
    let num_class: usize = get("num_class")?
        .parse()
        .map_err(|_| err("num_class is not an integer".into()))?;
    if num_class != 1 {
        return Err(err(format!(
            "multiclass models are not supported (num_class = {num_class})"
        )));
    }
    if let Some(per_iter) = header.get("num_tree_per_iteration") {
        if per_iter.trim() != "1" {
            return Err(err(format!(
                "num_tree_per_iteration = {per_iter} is not supported"
            )));
        }
    }
    let max_feature_idx: usize = get("max_feature_idx")?
        .parse()
        .map_err(|_| err("max_feature_idx is not an integer".into()))?;
    let n_features = max_feature_idx + 1;
    let feature_names: Vec<String> = match header.get("feature_names") {
        Some(v) => v.split_whitespace().map(str::to_string).collect(),
        None => (0..n_features).map(|i| format!("Column_{i}")).collect(),
    };
    if feature_names.len() != n_features {
        return Err(err(format!(
            "{} feature names for max_feature_idx = {max_feature_idx}",
            feature_names.len()
        )));
    }
    let (link, scale) = parse_objective(get("objective")?, source)?;

    let mut trees = Vec::new();
    let mut block: HashMap<&str, &str> = HashMap::new();
    let mut current: Option<usize> = None;
    let mut ended = false;
    for line in lines {
        if line == "end of trees" {
            ended = true;
            break;
        }
        if let Some(idx) = line.strip_prefix("Tree=") {
            if let Some(t) = current.take() {
                trees.push(parse_tree(&block, t, scale, n_features, source)?);
                block.clear();
            }
            let t: usize = idx
                .parse()
                .map_err(|_| err(format!("bad tree header {line:?}")))?;
            if t != trees.len() {
                return Err(err(format!(
                    "tree {t} found where tree {} was expected",
                    trees.len()
                )));
            }
            current = Some(t);
        } else if let Some((k, v)) = line.split_once('=') {
            block.insert(k, v);
        }
    }
    if let Some(t) = current {
        if !ended {
            return Err(err(format!(
                "file ends inside tree {t} (no \"end of trees\" line): truncated?"
            )));
        }
        trees.push(parse_tree(&block, t, scale, n_features, source)?);
    }
    if trees.is_empty() {
        return Err(err("no trees".into()));
    }
    let ens = TreeEnsemble {
        feature_names,
        trees,
        base_margin: 0.0,
        link,
    };
    ens.validate(source)?;
    tracing::debug!(
        source,
        trees = ens.trees.len(),
        features = ens.feature_names.len(),
        "loaded LightGBM model"
    );
    Ok(ens)
}

/// Returns the link and the factor applied to leaf values.
fn parse_objective(obj: &str, source: &str) -> Result<(Link, f64), AiError> {
    let err = |reason: String| AiError::ModelFormat {
        path: source.to_string(),
        reason,
    };
    let mut parts = obj.split_whitespace();
    let name = parts.next().unwrap_or("");
    let opts: Vec<&str> = parts.collect();
    match name {
        "binary" => {
            let mut sigmoid = 1.0;
            for o in &opts {
                if let Some(s) = o.strip_prefix("sigmoid:") {
                    sigmoid = s
                        .parse::<f64>()
                        .map_err(|_| err(format!("bad sigmoid parameter in {obj:?}")))?;
                }
            }
            if !(sigmoid.is_finite() && sigmoid > 0.0) {
                return Err(err(format!("sigmoid must be positive in {obj:?}")));
            }
            Ok((Link::Logistic, sigmoid))
        }
        "cross_entropy" | "xentropy" => Ok((Link::Logistic, 1.0)),
        "regression" | "regression_l2" | "regression_l1" | "huber" | "fair" | "quantile"
        | "mape" => {
            if opts.contains(&"sqrt") {
                return Err(err(format!(
                    "objective {obj:?}: reg_sqrt (squared output) is not supported"
                )));
            }
            Ok((Link::Identity, 1.0))
        }
        _ => Err(err(format!(
            "unsupported objective {obj:?} (supported: binary, cross_entropy, regression, \
             regression_l1, huber, fair, quantile, mape)"
        ))),
    }
}

fn nums<T: std::str::FromStr>(
    block: &HashMap<&str, &str>,
    key: &str,
    t: usize,
    expected: usize,
    source: &str,
) -> Result<Vec<T>, AiError> {
    let err = |reason: String| AiError::ModelFormat {
        path: source.to_string(),
        reason: format!("tree {t}: {reason}"),
    };
    let v = block
        .get(key)
        .ok_or_else(|| err(format!("missing {key:?} line")))?;
    let out: Vec<T> = v
        .split_whitespace()
        .map(|s| {
            s.parse::<T>()
                .map_err(|_| err(format!("{key}: cannot parse {s:?}")))
        })
        .collect::<Result<_, _>>()?;
    if out.len() != expected {
        return Err(err(format!(
            "{key} has {} values, expected {expected}",
            out.len()
        )));
    }
    Ok(out)
}

fn parse_tree(
    block: &HashMap<&str, &str>,
    t: usize,
    scale: f64,
    n_features: usize,
    source: &str,
) -> Result<Tree, AiError> {
    let err = |reason: String| AiError::ModelFormat {
        path: source.to_string(),
        reason: format!("tree {t}: {reason}"),
    };
    let num_leaves: usize = block
        .get("num_leaves")
        .ok_or_else(|| err("missing num_leaves line".into()))?
        .parse()
        .map_err(|_| err("num_leaves is not an integer".into()))?;
    if num_leaves == 0 {
        return Err(err("num_leaves = 0".into()));
    }
    if block.get("num_cat").is_some_and(|c| c.trim() != "0") {
        return Err(err(
            "categorical splits (num_cat > 0) are not supported".into()
        ));
    }
    if block.get("is_linear").is_some_and(|c| c.trim() != "0") {
        return Err(err("linear trees are not supported".into()));
    }
    let leaf_value: Vec<f64> = nums(block, "leaf_value", t, num_leaves, source)?;
    if num_leaves == 1 {
        let cover = match block.get("leaf_count") {
            Some(_) => nums::<f64>(block, "leaf_count", t, 1, source)?[0],
            None => 0.0,
        };
        return Ok(Tree {
            nodes: vec![leaf(leaf_value[0] * scale, cover)],
        });
    }
    let n_int = num_leaves - 1;
    let split_feature: Vec<usize> = nums(block, "split_feature", t, n_int, source)?;
    let threshold: Vec<f64> = nums(block, "threshold", t, n_int, source)?;
    let decision_type: Vec<u8> = nums(block, "decision_type", t, n_int, source)?;
    let left_child: Vec<i64> = nums(block, "left_child", t, n_int, source)?;
    let right_child: Vec<i64> = nums(block, "right_child", t, n_int, source)?;
    let leaf_count: Vec<f64> = nums(block, "leaf_count", t, num_leaves, source)?;
    let internal_count: Vec<f64> = nums(block, "internal_count", t, n_int, source)?;
    let internal_value: Vec<f64> = nums(block, "internal_value", t, n_int, source)?;

    // Internal node i keeps index i; leaf j becomes node n_int + j.
    let child = |c: i64, i: usize| -> Result<u32, AiError> {
        let idx = if c >= 0 {
            c as usize
        } else {
            n_int + (!c) as usize
        };
        if (c >= 0 && (c as usize) < n_int) || (c < 0 && ((!c) as usize) < num_leaves) {
            u32::try_from(idx).map_err(|_| err(format!("node {i}: child {c} too large")))
        } else {
            Err(err(format!("node {i}: child {c} out of range")))
        }
    };
    let mut nodes = Vec::with_capacity(n_int + num_leaves);
    for i in 0..n_int {
        let dt = decision_type[i];
        if dt & 1 != 0 {
            return Err(err(format!(
                "node {i}: categorical split (decision_type {dt}) is not supported"
            )));
        }
        let missing = match (dt >> 2) & 3 {
            0 => MissingKind::None,
            1 => MissingKind::Zero,
            2 => MissingKind::NaN,
            m => return Err(err(format!("node {i}: unknown missing type {m}"))),
        };
        if split_feature[i] >= n_features {
            return Err(err(format!(
                "node {i}: split_feature {} out of range ({n_features} features)",
                split_feature[i]
            )));
        }
        let feature = u32::try_from(split_feature[i])
            .map_err(|_| err(format!("node {i}: split_feature too large")))?;
        nodes.push(Node {
            feature,
            rule: SplitRule::LessOrEqual {
                threshold: threshold[i],
                missing,
            },
            left: child(left_child[i], i)?,
            right: child(right_child[i], i)?,
            default_left: dt & 2 != 0,
            value: internal_value[i] * scale,
            cover: internal_count[i],
        });
    }
    for j in 0..num_leaves {
        nodes.push(leaf(leaf_value[j] * scale, leaf_count[j]));
    }
    Ok(Tree { nodes })
}

fn leaf(value: f64, cover: f64) -> Node {
    Node {
        feature: 0,
        rule: SplitRule::LessOrEqual {
            threshold: 0.0,
            missing: MissingKind::None,
        },
        left: Node::NONE,
        right: Node::NONE,
        default_left: false,
        value,
        cover,
    }
}
