//! A small multilayer perceptron on [`candle_core`], loadable from safetensors.
//!
//! ## Tensor naming scheme
//!
//! A network with `L` dense layers stores, for `i = 0..L`:
//!
//! - `layers.{i}.weight`: shape `[out_i, in_i]` (PyTorch `nn.Linear` layout);
//! - `layers.{i}.bias`: shape `[out_i]`.
//!
//! Layer sizes are inferred from the shapes: `in_0` is the number of input features,
//! `in_{i+1} = out_i`, and the last layer has one output, the margin. Hidden layers use ReLU;
//! the output goes through the model's [`Link`] for [`Output::Probability`]. Any float dtype
//! is accepted on load; computation is in `f64` on the CPU. This is the naming a
//! `candle_nn::VarBuilder` produces under the prefix `layers`, and what a PyTorch
//! `nn.Sequential` of `Linear`/`ReLU` gives after renaming its indices.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::tree::Link;
use crate::{AiError, Matrix, Model, Output};

/// A ReLU multilayer perceptron with one output (the margin).
#[derive(Debug, Clone)]
pub struct Mlp {
    feature_names: Vec<String>,
    /// `(weight [out, in], bias [out])` per layer, `f64` on the CPU.
    layers: Vec<(Tensor, Tensor)>,
    link: Link,
}

fn candle_err(what: &str) -> impl Fn(candle_core::Error) -> AiError + '_ {
    move |e| AiError::InvalidArgument(format!("{what}: {e}"))
}

impl Mlp {
    /// Builds a network from named tensors (see the module docs for the names).
    /// `source` names the origin in errors.
    pub fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        feature_names: Vec<String>,
        link: Link,
        source: &str,
    ) -> Result<Self, AiError> {
        let err = |reason: String| AiError::ModelFormat {
            path: source.to_string(),
            reason,
        };
        let n_layers = (0..)
            .take_while(|i| tensors.contains_key(&format!("layers.{i}.weight")))
            .count();
        if n_layers == 0 {
            return Err(err("no tensor named layers.0.weight".into()));
        }
        let expected: usize = 2 * n_layers;
        if tensors.len() != expected {
            let mut extra: Vec<&String> = tensors
                .keys()
                .filter(|k| {
                    !(0..n_layers).any(|i| {
                        **k == format!("layers.{i}.weight") || **k == format!("layers.{i}.bias")
                    })
                })
                .collect();
            extra.sort();
            return Err(err(format!(
                "{} tensors for {n_layers} layers; unexpected or missing: {extra:?}",
                tensors.len()
            )));
        }
        let mut layers = Vec::with_capacity(n_layers);
        let mut width = feature_names.len();
        for i in 0..n_layers {
            let w = &tensors[&format!("layers.{i}.weight")];
            let b = tensors
                .get(&format!("layers.{i}.bias"))
                .ok_or_else(|| err(format!("missing tensor layers.{i}.bias")))?;
            let (out, inp) = w.dims2().map_err(|_| {
                err(format!(
                    "layers.{i}.weight has shape {:?}, expected [out, in]",
                    w.dims()
                ))
            })?;
            if inp != width {
                return Err(err(format!(
                    "layers.{i}.weight takes {inp} inputs, the previous layer gives {width}"
                )));
            }
            if b.dims() != [out] {
                return Err(err(format!(
                    "layers.{i}.bias has shape {:?}, expected [{out}]",
                    b.dims()
                )));
            }
            let to64 = |t: &Tensor| {
                t.to_device(&Device::Cpu)
                    .and_then(|t| t.to_dtype(DType::F64))
                    .map_err(|e| err(format!("layer {i}: {e}")))
            };
            layers.push((to64(w)?, to64(b)?));
            width = out;
        }
        if width != 1 {
            return Err(err(format!(
                "the last layer has {width} outputs; the model needs exactly 1"
            )));
        }
        Ok(Mlp {
            feature_names,
            layers,
            link,
        })
    }

    /// Loads a safetensors file (see the module docs for the tensor names).
    pub fn load_safetensors(
        path: impl AsRef<Path>,
        feature_names: Vec<String>,
        link: Link,
    ) -> Result<Self, AiError> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| AiError::Io {
            path: source.clone(),
            source: e,
        })?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
            AiError::ModelFormat {
                path: source.clone(),
                reason: format!("not a safetensors file: {e}"),
            }
        })?;
        Self::from_tensors(&tensors, feature_names, link, &source)
    }

    /// Writes the weights to a safetensors file under the documented names (`f64`).
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<(), AiError> {
        let mut map = HashMap::new();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            map.insert(format!("layers.{i}.weight"), w.clone());
            map.insert(format!("layers.{i}.bias"), b.clone());
        }
        let path = path.as_ref();
        candle_core::safetensors::save(&map, path).map_err(|e| AiError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// A freshly initialised network (`candle_nn`'s default Kaiming-uniform init) with the
    /// given hidden layer widths, for tests and experiments.
    pub fn new_random(
        feature_names: Vec<String>,
        hidden: &[usize],
        link: Link,
    ) -> Result<Self, AiError> {
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
        let mut sizes = vec![feature_names.len()];
        sizes.extend_from_slice(hidden);
        sizes.push(1);
        let mut tensors = HashMap::new();
        for (i, win) in sizes.windows(2).enumerate() {
            let lin = candle_nn::linear(win[0], win[1], vb.pp(format!("layers.{i}")))
                .map_err(candle_err("initialising the network"))?;
            tensors.insert(format!("layers.{i}.weight"), lin.weight().clone());
            let bias = lin
                .bias()
                .cloned()
                .ok_or_else(|| AiError::InvalidArgument("linear layer without bias".into()))?;
            tensors.insert(format!("layers.{i}.bias"), bias);
        }
        Self::from_tensors(&tensors, feature_names, link, "new_random")
    }

    /// Layer widths, inputs first, output (1) last.
    pub fn layer_sizes(&self) -> Vec<usize> {
        let mut v = vec![self.feature_names.len()];
        v.extend(self.layers.iter().map(|(w, _)| w.dims()[0]));
        v
    }

    /// The link from margin to output.
    pub fn link(&self) -> Link {
        self.link
    }

    /// Margins of a batch `[n, n_features]` as an `[n, 1]` tensor (differentiable).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, AiError> {
        let e = candle_err("MLP forward pass");
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(&w.t().map_err(&e)?).map_err(&e)?;
            h = h.broadcast_add(b).map_err(&e)?;
            if i < last {
                h = h.relu().map_err(&e)?;
            }
        }
        Ok(h)
    }
}

impl Model for Mlp {
    fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    fn predict(&self, x: &Matrix, output: Output) -> Result<Vec<f64>, AiError> {
        self.check_width(x)?;
        if x.n_rows() == 0 {
            return Ok(Vec::new());
        }
        check_finite(x, &self.feature_names)?;
        let e = candle_err("MLP prediction");
        let t =
            Tensor::from_slice(x.as_slice(), (x.n_rows(), x.n_cols()), &Device::Cpu).map_err(&e)?;
        let margins: Vec<f64> = self
            .forward(&t)?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f64>())
            .map_err(&e)?;
        Ok(match output {
            Output::Margin => margins,
            Output::Probability => margins.into_iter().map(|m| self.link.apply(m)).collect(),
        })
    }
}

/// Rejects NaN / infinite inputs (a network has no notion of a missing value).
pub(crate) fn check_finite(x: &Matrix, names: &[String]) -> Result<(), AiError> {
    if let Some(k) = x.as_slice().iter().position(|v| !v.is_finite()) {
        let (row, col) = (k / x.n_cols(), k % x.n_cols());
        return Err(AiError::NonFinite {
            column: names.get(col).cloned().unwrap_or_else(|| format!("f{col}")),
            row,
            value: x.as_slice()[k],
        });
    }
    Ok(())
}
