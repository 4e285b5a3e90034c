//! XGBoost JSON export of a trained [`GbdtModel`].

use serde_json::{json, Value};

use super::GbdtModel;
use crate::model::tree::{Link, SplitRule, Tree};
use crate::AiError;

/// XGBoost's "no parent" marker.
const NO_PARENT: i64 = 2_147_483_647;

impl GbdtModel {
    /// The model as an XGBoost JSON document (`binary:logistic`, `gbtree`, format of XGBoost
    /// 2.x), the same layout `Booster.save_model("m.json")` writes. Loading it with
    /// [`crate::model::xgboost::parse`] gives back `self.ensemble` exactly.
    ///
    /// Fails with [`AiError::InvalidArgument`] when the ensemble is not one this trainer makes
    /// (a non-logistic link or a non-XGBoost split rule).
    pub fn to_xgboost_json(&self) -> Result<String, AiError> {
        let ens = &self.ensemble;
        if ens.link != Link::Logistic {
            return Err(AiError::InvalidArgument(
                "only logistic models can be exported as binary:logistic".to_string(),
            ));
        }
        let n_features = ens.feature_names.len();
        let trees = ens
            .trees
            .iter()
            .enumerate()
            .map(|(id, t)| tree_json(id, t, n_features))
            .collect::<Result<Vec<_>, _>>()?;
        let n_trees = trees.len();
        let doc = json!({
            "learner": {
                "attributes": {},
                "feature_names": ens.feature_names,
                "feature_types": vec!["float"; n_features],
                "gradient_booster": {
                    "model": {
                        "gbtree_model_param": {
                            "num_parallel_tree": "1",
                            "num_trees": n_trees.to_string(),
                        },
                        "iteration_indptr": (0..=n_trees).collect::<Vec<_>>(),
                        "tree_info": vec![0; n_trees],
                        "trees": trees,
                    },
                    "name": "gbtree",
                },
                "learner_model_param": {
                    // Shortest representation that parses back to the same f64.
                    "base_score": format!("{:E}", self.base_score),
                    "boost_from_average": "1",
                    "num_class": "0",
                    "num_feature": n_features.to_string(),
                    "num_target": "1",
                },
                "objective": {
                    "name": "binary:logistic",
                    "reg_loss_param": { "scale_pos_weight": "1" },
                },
            },
            "version": [2, 1, 0],
        });
        serde_json::to_string(&doc).map_err(|e| AiError::InvalidArgument(e.to_string()))
    }
}

fn tree_json(id: usize, tree: &Tree, n_features: usize) -> Result<Value, AiError> {
    let n = tree.nodes.len();
    let mut parents = vec![NO_PARENT; n];
    for (i, node) in tree.nodes.iter().enumerate() {
        if !node.is_leaf() {
            parents[node.left as usize] = i as i64;
            parents[node.right as usize] = i as i64;
        }
    }
    let mut left = Vec::with_capacity(n);
    let mut right = Vec::with_capacity(n);
    let mut split_indices = Vec::with_capacity(n);
    let mut split_conditions = Vec::with_capacity(n);
    let mut default_left = Vec::with_capacity(n);
    let mut base_weights = Vec::with_capacity(n);
    let mut sum_hessian = Vec::with_capacity(n);
    for node in &tree.nodes {
        let SplitRule::LessThanF32 { threshold } = node.rule else {
            return Err(AiError::InvalidArgument(
                "only XGBoost-style (x < f32 threshold) splits can be exported".to_string(),
            ));
        };
        if node.is_leaf() {
            left.push(-1i64);
            right.push(-1i64);
            split_indices.push(0u32);
            split_conditions.push(node.value);
        } else {
            left.push(i64::from(node.left));
            right.push(i64::from(node.right));
            split_indices.push(node.feature);
            split_conditions.push(f64::from(threshold));
        }
        default_left.push(u8::from(node.default_left));
        base_weights.push(node.value);
        sum_hessian.push(node.cover);
    }
    Ok(json!({
        "base_weights": base_weights,
        "categories": [],
        "categories_nodes": [],
        "categories_segments": [],
        "categories_sizes": [],
        "default_left": default_left,
        "id": id,
        "left_children": left,
        "loss_changes": vec![0.0; n],
        "parents": parents,
        "right_children": right,
        "split_conditions": split_conditions,
        "split_indices": split_indices,
        "split_type": vec![0; n],
        "sum_hessian": sum_hessian,
        "tree_param": {
            "num_deleted": "0",
            "num_feature": n_features.to_string(),
            "num_nodes": n.to_string(),
            "size_leaf_vector": "1",
        },
    }))
}

#[cfg(test)]
mod tests {
    use crate::model::train::{train_gbdt, GbdtParams};
    use crate::model::xgboost;
    use crate::Matrix;

    #[test]
    fn export_loads_back_identically() {
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for i in 0..600u32 {
            let a = f64::from(i % 13) * 1.37;
            let b = f64::from((i * 7) % 11) - 5.0;
            let c = if i % 17 == 0 {
                f64::NAN
            } else {
                f64::from(i % 5)
            };
            rows.push(vec![a, b, c]);
            y.push(if a + b + c.max(0.0) * 0.5 > 9.0 {
                1.0
            } else {
                0.0
            });
        }
        let x = Matrix::from_rows(&rows).unwrap();
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let m = train_gbdt(&x, &y, &names, &GbdtParams::default()).unwrap();
        let text = m.to_xgboost_json().unwrap();
        let back = xgboost::parse(&text, "exported", None).unwrap();
        assert_eq!(back.base_margin, m.ensemble.base_margin);
        assert_eq!(back.feature_names, m.ensemble.feature_names);
        for (t, (a, b)) in back.trees.iter().zip(&m.ensemble.trees).enumerate() {
            for (i, (na, nb)) in a.nodes.iter().zip(&b.nodes).enumerate() {
                assert_eq!(na, nb, "tree {t} node {i}");
            }
        }
        assert_eq!(back, m.ensemble);
        assert_eq!(m.to_xgboost_json().unwrap(), text);
    }
}
