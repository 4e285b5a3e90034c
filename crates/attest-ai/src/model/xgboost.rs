//! Loader for XGBoost models saved as JSON (`Booster.save_model("model.json")`, XGBoost 1.x–3.x).
//!
//! Supported: the `gbtree` booster with numerical splits and one output group, objectives
//! `binary:logistic`, `reg:logistic` (logistic link, base score given as a probability),
//! `binary:logitraw` (identity link on the log-odds margin) and `reg:squarederror` /
//! `reg:linear` / `reg:absoluteerror` / `reg:pseudohubererror` (identity link).
//! Everything else (multiclass, ranking, survival, count/gamma/tweedie links, `dart`,
//! `gblinear`, categorical splits) is rejected with [`AiError::ModelFormat`].

use std::path::Path;

use serde_json::Value;

use super::tree::{Link, Node, SplitRule, Tree, TreeEnsemble};
use crate::AiError;

/// Reads and parses an XGBoost JSON model file. Feature names come from the file
/// (`learner.feature_names`) when present, else `f0..f{n-1}`.
pub fn load(path: impl AsRef<Path>) -> Result<TreeEnsemble, AiError> {
    load_with_names(path, None)
}

/// Like [`load`], with caller-supplied feature names used when the file has none (they must
/// then match `num_feature`). Names stored in the file win; if both exist they must agree.
pub fn load_with_names(
    path: impl AsRef<Path>,
    names: Option<&[String]>,
) -> Result<TreeEnsemble, AiError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| AiError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string(), names)
}

/// Parses the JSON text of an XGBoost model; `source` names it in errors.
pub fn parse(text: &str, source: &str, names: Option<&[String]>) -> Result<TreeEnsemble, AiError> {
    let err = |reason: String| AiError::ModelFormat {
        path: source.to_string(),
        reason,
    };
    let root: Value =
        serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?;
    let learner = field(&root, "learner", "", source)?;
    let param = field(learner, "learner_model_param", "learner", source)?;

    let num_feature = usize_of(
        field(param, "num_feature", "learner.learner_model_param", source)?,
        "learner.learner_model_param.num_feature",
        source,
    )?;
    if let Some(nc) = param.get("num_class") {
        let nc = usize_of(nc, "learner.learner_model_param.num_class", source)?;
        if nc > 1 {
            return Err(err(format!(
                "multiclass models are not supported (num_class = {nc})"
            )));
        }
    }
    if let Some(nt) = param.get("num_target") {
        let nt = usize_of(nt, "learner.learner_model_param.num_target", source)?;
        if nt > 1 {
            return Err(err(format!(
                "multi-target models are not supported (num_target = {nt})"
            )));
        }
    }
    let base_score = parse_base_score(
        field(param, "base_score", "learner.learner_model_param", source)?,
        source,
    )?;

    let objective = field(learner, "objective", "learner", source)?;
    let obj_name = field(objective, "name", "learner.objective", source)?
        .as_str()
        .ok_or_else(|| err("learner.objective.name is not a string".into()))?;
    let (link, base_margin) = match obj_name {
        "binary:logistic" | "reg:logistic" => {
            if !(base_score > 0.0 && base_score < 1.0) {
                return Err(err(format!(
                    "base_score {base_score} is not a probability in (0, 1) for objective {obj_name}"
                )));
            }
            (Link::Logistic, (base_score / (1.0 - base_score)).ln())
        }
        "binary:logitraw"
        | "reg:squarederror"
        | "reg:linear"
        | "reg:absoluteerror"
        | "reg:pseudohubererror" => (Link::Identity, base_score),
        other => {
            return Err(err(format!(
                "unsupported objective {other:?} (supported: binary:logistic, reg:logistic, \
                 binary:logitraw, reg:squarederror, reg:linear, reg:absoluteerror, \
                 reg:pseudohubererror)"
            )))
        }
    };

    let feature_names = resolve_names(learner, num_feature, names, source)?;

    let booster = field(learner, "gradient_booster", "learner", source)?;
    let booster_name = field(booster, "name", "learner.gradient_booster", source)?
        .as_str()
        .unwrap_or("");
    if booster_name != "gbtree" {
        return Err(err(format!(
            "unsupported booster {booster_name:?} (only gbtree is supported)"
        )));
    }
    let model = field(booster, "model", "learner.gradient_booster", source)?;
    let trees_json = field(model, "trees", "learner.gradient_booster.model", source)?
        .as_array()
        .ok_or_else(|| err("learner.gradient_booster.model.trees is not an array".into()))?;
    if let Some(info) = model.get("tree_info").and_then(Value::as_array) {
        if info.iter().any(|g| g.as_u64() != Some(0)) {
            return Err(err(
                "tree_info has output groups other than 0 (multiclass model)".into(),
            ));
        }
    }

    let mut trees = Vec::with_capacity(trees_json.len());
    for (t, tj) in trees_json.iter().enumerate() {
        trees.push(parse_tree(tj, t, source)?);
    }
    let ens = TreeEnsemble {
        feature_names,
        trees,
        base_margin,
        link,
    };
    ens.validate(source)?;
    tracing::debug!(
        source,
        trees = ens.trees.len(),
        features = ens.feature_names.len(),
        objective = obj_name,
        "loaded XGBoost model"
    );
    Ok(ens)
}

fn field<'a>(v: &'a Value, key: &str, at: &str, source: &str) -> Result<&'a Value, AiError> {
    v.get(key).ok_or_else(|| AiError::ModelFormat {
        path: source.to_string(),
        reason: if at.is_empty() {
            format!("missing field {key:?}")
        } else {
            format!("missing field {at}.{key}")
        },
    })
}

/// XGBoost stores most scalars as strings ("13"); accept numbers too.
fn usize_of(v: &Value, what: &str, source: &str) -> Result<usize, AiError> {
    let parsed = match v {
        Value::String(s) => s.trim().parse::<usize>().ok(),
        Value::Number(n) => n.as_u64().and_then(|u| usize::try_from(u).ok()),
        _ => None,
    };
    parsed.ok_or_else(|| AiError::ModelFormat {
        path: source.to_string(),
        reason: format!("{what} is not a non-negative integer: {v}"),
    })
}

/// `base_score` is "5E-1" (XGBoost < 3), "[2.4892248E-1]" (XGBoost 3, a vector) or a number.
fn parse_base_score(v: &Value, source: &str) -> Result<f64, AiError> {
    let bad = |why: &str| AiError::ModelFormat {
        path: source.to_string(),
        reason: format!("base_score {v}: {why}"),
    };
    let x = match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| bad("not a number"))?,
        Value::String(s) => {
            let s = s.trim();
            let inner = s
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .unwrap_or(s);
            let parts: Vec<&str> = inner
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            match parts.as_slice() {
                [one] => one.parse::<f64>().map_err(|_| bad("not a number"))?,
                [] => return Err(bad("empty")),
                _ => return Err(bad("several values (multi-target model) are not supported")),
            }
        }
        Value::Array(a) if a.len() == 1 => a[0].as_f64().ok_or_else(|| bad("not a number"))?,
        _ => return Err(bad("unexpected type")),
    };
    if !x.is_finite() {
        return Err(bad("not finite"));
    }
    Ok(x)
}

fn resolve_names(
    learner: &Value,
    num_feature: usize,
    names: Option<&[String]>,
    source: &str,
) -> Result<Vec<String>, AiError> {
    let err = |reason: String| AiError::ModelFormat {
        path: source.to_string(),
        reason,
    };
    let stored: Option<Vec<String>> = match learner.get("feature_names") {
        Some(Value::Array(a)) if !a.is_empty() => Some(
            a.iter()
                .map(|n| {
                    n.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| err(format!("feature name {n} is not a string")))
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => None,
    };
    let chosen = match (stored, names) {
        (Some(s), Some(given)) if s.as_slice() != given => {
            return Err(err(format!(
                "feature names in the file ({}) differ from the ones supplied ({})",
                s.join(","),
                given.join(",")
            )))
        }
        (Some(s), _) => s,
        (None, Some(given)) => given.to_vec(),
        (None, None) => (0..num_feature).map(|i| format!("f{i}")).collect(),
    };
    if chosen.len() != num_feature {
        return Err(err(format!(
            "{} feature names for num_feature = {num_feature}",
            chosen.len()
        )));
    }
    Ok(chosen)
}

fn num_array(tree: &Value, key: &str, t: usize, source: &str) -> Result<Vec<f64>, AiError> {
    let err = |reason: String| AiError::ModelFormat {
        path: source.to_string(),
        reason: format!("tree {t}: {reason}"),
    };
    let a = tree
        .get(key)
        .ok_or_else(|| err(format!("missing field {key:?}")))?
        .as_array()
        .ok_or_else(|| err(format!("field {key:?} is not an array")))?;
    a.iter()
        .map(|v| match v {
            Value::Number(n) => n.as_f64(),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        })
        .map(|o| o.ok_or_else(|| err(format!("field {key:?} has a non-numeric entry"))))
        .collect()
}

fn parse_tree(tj: &Value, t: usize, source: &str) -> Result<Tree, AiError> {
    let err = |reason: String| AiError::ModelFormat {
        path: source.to_string(),
        reason: format!("tree {t}: {reason}"),
    };
    let left = num_array(tj, "left_children", t, source)?;
    let right = num_array(tj, "right_children", t, source)?;
    let feat = num_array(tj, "split_indices", t, source)?;
    let cond = num_array(tj, "split_conditions", t, source)?;
    let dleft = num_array(tj, "default_left", t, source)?;
    let weights = num_array(tj, "base_weights", t, source)?;
    let hess = num_array(tj, "sum_hessian", t, source)?;
    let n = left.len();
    for (name, len) in [
        ("right_children", right.len()),
        ("split_indices", feat.len()),
        ("split_conditions", cond.len()),
        ("default_left", dleft.len()),
        ("base_weights", weights.len()),
        ("sum_hessian", hess.len()),
    ] {
        if len != n {
            return Err(err(format!(
                "{name} has {len} entries, left_children has {n}"
            )));
        }
    }
    if n == 0 {
        return Err(err("no nodes".into()));
    }
    if let Some(st) = tj.get("split_type").and_then(Value::as_array) {
        if st.iter().any(|s| s.as_u64().unwrap_or(1) != 0) {
            return Err(err(
                "categorical splits (split_type != 0) are not supported".into(),
            ));
        }
    }
    let child = |c: f64, i: usize, side: &str| -> Result<u32, AiError> {
        if c == -1.0 {
            Ok(Node::NONE)
        } else if c >= 0.0 && c.fract() == 0.0 && (c as usize) < n {
            Ok(c as u32)
        } else {
            Err(err(format!("node {i}: {side} child {c} out of range")))
        }
    };
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let l = child(left[i], i, "left")?;
        let r = child(right[i], i, "right")?;
        let is_leaf = l == Node::NONE;
        if is_leaf != (r == Node::NONE) {
            return Err(err(format!("node {i} has exactly one child")));
        }
        if !is_leaf && (feat[i] < 0.0 || feat[i].fract() != 0.0 || feat[i] > f64::from(u32::MAX)) {
            return Err(err(format!("node {i}: invalid split index {}", feat[i])));
        }
        nodes.push(Node {
            feature: if is_leaf { 0 } else { feat[i] as u32 },
            rule: SplitRule::LessThanF32 {
                threshold: cond[i] as f32,
            },
            left: l,
            right: r,
            default_left: dleft[i] != 0.0,
            // XGBoost keeps a leaf's output in split_conditions (== base_weights once the
            // learning rate is applied); internal nodes carry their base weight.
            value: if is_leaf { cond[i] } else { weights[i] },
            cover: hess[i],
        });
    }
    Ok(Tree { nodes })
}
