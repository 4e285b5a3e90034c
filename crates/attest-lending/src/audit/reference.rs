//! Drift reference profiles: bin layouts derived once from a model's reference sample, so
//! that a window only keeps bin counts (incremental, mergeable) and PSI / KS are computed
//! from counts.
//!
//! Each layout has *fine* bins (reference quantiles, 50 by default) for the KS statistic and
//! the *decile* bins of `attest_ai::drift::decile_edges` for PSI. Every decile edge is also a
//! fine edge, so each fine bin lies inside one decile bin and PSI from summed fine counts is
//! exactly `attest_ai::drift::numeric_drift(..).psi` of the same values.

use async_trait::async_trait;
use attest_ai::{Matrix, Output};
use attest_core::StreamId;
use attest_store::{Direction, DynStore, StoreError, StreamFrom};
use serde::{Deserialize, Serialize};

use crate::events::{ModelRef, ModelVersionRegistered, MODEL_CATEGORY, MODEL_VERSION_REGISTERED};

use super::stats::{binned_ks, psi_pvalue, BinnedKs};
use super::window::DriftSample;
use super::AuditError;

/// Fine bins per layout unless configured otherwise.
pub const DEFAULT_FINE_BINS: usize = 50;

/// numpy's default (linear) quantile of sorted values.
fn quantile_sorted(s: &[f64], q: f64) -> f64 {
    let pos = q * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(s.len() - 1);
    let t = pos - lo as f64;
    let (a, b) = (s[lo], s[hi]);
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

/// Bins of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinLayout {
    /// Fine bin edges, ascending; bins are `(-inf, e0), [e0, e1), ..., [e_last, inf)`.
    pub edges: Vec<f64>,
    /// The decile (PSI) bin of every fine bin.
    pub coarse_of: Vec<u32>,
    /// Number of decile bins.
    pub coarse_bins: usize,
    /// Reference values per fine bin.
    pub reference: Vec<u64>,
}

impl BinLayout {
    /// The layout of a reference column (NaN dropped); `None` when no finite value is left.
    pub fn from_reference(values: &[f64], fine_bins: usize) -> Option<BinLayout> {
        let mut s: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        let deciles = attest_ai::drift::decile_edges(&s).ok()?;
        let fine_bins = fine_bins.max(2);
        let mut edges: Vec<f64> = (1..fine_bins)
            .map(|k| quantile_sorted(&s, k as f64 / fine_bins as f64))
            .chain(deciles.iter().copied())
            .collect();
        edges.sort_by(f64::total_cmp);
        edges.dedup();
        let coarse_of = std::iter::once(0u32)
            .chain(
                edges
                    .iter()
                    .map(|e| deciles.partition_point(|d| d <= e) as u32),
            )
            .collect();
        let mut layout = BinLayout {
            coarse_bins: deciles.len() + 1,
            reference: vec![0; edges.len() + 1],
            edges,
            coarse_of,
        };
        for v in &s {
            if let Some(b) = layout.bin(*v) {
                layout.reference[b as usize] += 1;
            }
        }
        Some(layout)
    }

    /// Fine bin of `v`; `None` for NaN or an infinity (treated as missing).
    pub fn bin(&self, v: f64) -> Option<u32> {
        if !v.is_finite() {
            return None;
        }
        Some(self.edges.partition_point(|e| *e <= v) as u32)
    }

    /// Decile-bin counts from fine-bin counts (shorter vectors are zero-padded).
    pub fn coarse(&self, fine: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; self.coarse_bins];
        for (i, c) in fine.iter().enumerate() {
            if let Some(k) = self.coarse_of.get(i) {
                out[*k as usize] += c;
            }
        }
        out
    }

    fn padded(&self, fine: &[u64]) -> Vec<u64> {
        let mut v = fine.to_vec();
        v.resize(self.reference.len(), 0);
        v
    }

    /// PSI of `fine` (current counts) against the reference on the decile bins, with its
    /// p-value; `None` when the current window is empty.
    pub fn psi(&self, fine: &[u64]) -> Option<(f64, Option<f64>)> {
        let cur = self.coarse(&self.padded(fine));
        let n: u64 = cur.iter().sum();
        let r = self.coarse(&self.reference);
        let m: u64 = r.iter().sum();
        if n == 0 || m == 0 {
            return None;
        }
        let pr: Vec<f64> = r.iter().map(|c| *c as f64 / m as f64).collect();
        let pc: Vec<f64> = cur.iter().map(|c| *c as f64 / n as f64).collect();
        let psi = attest_ai::drift::psi(&pr, &pc);
        Some((psi, psi_pvalue(psi, self.coarse_bins, n, m)))
    }

    /// KS of `fine` (current counts) against the reference at the fine edges.
    pub fn ks(&self, fine: &[u64]) -> Option<BinnedKs> {
        binned_ks(&self.reference, &self.padded(fine))
    }
}

/// A model's drift reference: one layout per feature and one for predicted probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceProfile {
    /// The model.
    pub model: ModelRef,
    /// Feature names, in the model's order.
    pub features: Vec<String>,
    /// Layout per feature (`None`: the reference column had no finite value).
    pub layouts: Vec<Option<BinLayout>>,
    /// Layout of the reference predictions (probability of default), when known.
    pub prediction: Option<BinLayout>,
    /// Reference rows.
    pub reference_rows: usize,
}

impl ReferenceProfile {
    /// Builds the profile from reference rows (in `features` order) and, optionally, the
    /// model's predicted probabilities on those rows.
    pub fn new(
        model: ModelRef,
        features: Vec<String>,
        rows: &[Vec<f64>],
        predictions: Option<&[f64]>,
        fine_bins: usize,
    ) -> Result<Self, AuditError> {
        if let Some((i, r)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != features.len())
        {
            return Err(AuditError::Reference(format!(
                "model {model}: reference row {i} has {} values, the model has {} features",
                r.len(),
                features.len()
            )));
        }
        let layouts = (0..features.len())
            .map(|j| {
                let col: Vec<f64> = rows.iter().map(|r| r[j]).collect();
                BinLayout::from_reference(&col, fine_bins)
            })
            .collect();
        Ok(ReferenceProfile {
            prediction: predictions.and_then(|p| BinLayout::from_reference(p, fine_bins)),
            model,
            features,
            layouts,
            reference_rows: rows.len(),
        })
    }

    /// The bins of one decision.
    pub fn sample(&self, probability: f64, values: &[(String, f64)]) -> DriftSample {
        DriftSample {
            prediction: self.prediction.as_ref().and_then(|l| l.bin(probability)),
            features: self
                .features
                .iter()
                .zip(&self.layouts)
                .map(|(name, layout)| {
                    let v = values.iter().find(|(k, _)| k == name).map(|(_, v)| *v)?;
                    layout.as_ref()?.bin(v)
                })
                .collect(),
        }
    }
}

/// A model's reference sample as the registry holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceData {
    /// Feature names, in the model's order.
    pub features: Vec<String>,
    /// Reference rows (feature order).
    pub rows: Vec<Vec<f64>>,
    /// The model's predicted probabilities on those rows, when it could be scored.
    pub predictions: Option<Vec<f64>>,
}

/// Where the auditor finds a model's reference sample.
#[async_trait]
pub trait ReferenceSource: Send + Sync {
    /// The reference of `model`; `Ok(None)` when the model is not registered (no drift is
    /// computed for it then).
    async fn reference(&self, model: &ModelRef) -> Result<Option<ReferenceData>, AuditError>;
}

/// The registry's reference samples, read from `ModelVersionRegistered` in stream
/// `model-<name>`; the reference predictions come from scoring the sample with the
/// registered artifact through [`crate::registry::LoadedModel`].
#[derive(Clone)]
pub struct StoreReferences {
    store: DynStore,
}

impl std::fmt::Debug for StoreReferences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReferences").finish_non_exhaustive()
    }
}

impl StoreReferences {
    /// References from `store`.
    pub fn new(store: DynStore) -> Self {
        StoreReferences { store }
    }
}

/// Scores `rows` with the registered artifact (through the registry's loader, as decisions
/// are scored); `None` (with a warning) when it cannot.
fn score(reg: &ModelVersionRegistered, rows: &[Vec<f64>]) -> Option<Vec<f64>> {
    let attempt = || -> Result<Vec<f64>, String> {
        let loaded =
            crate::registry::LoadedModel::from_registered(reg).map_err(|e| e.to_string())?;
        let m = Matrix::from_rows(rows).map_err(|e| e.to_string())?;
        loaded
            .model()
            .predict(&m, Output::Probability)
            .map_err(|e| e.to_string())
    };
    match attempt() {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(model = %reg.name, version = reg.version, error = %e,
                "cannot score the reference sample; no prediction drift for this model");
            None
        }
    }
}

#[async_trait]
impl ReferenceSource for StoreReferences {
    async fn reference(&self, model: &ModelRef) -> Result<Option<ReferenceData>, AuditError> {
        let stream = StreamId::new(format!("{MODEL_CATEGORY}-{}", model.id))
            .map_err(|e| AuditError::Reference(e.to_string()))?;
        let mut from = StreamFrom::Start;
        loop {
            let page = match self
                .store
                .read_stream(&stream, from, Direction::Forward, 64)
                .await
            {
                Ok(p) => p,
                Err(StoreError::StreamNotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let n = page.len();
            for ev in &page {
                if ev.event_type.as_str() != MODEL_VERSION_REGISTERED {
                    continue;
                }
                let reg: ModelVersionRegistered = ev
                    .decode_json()
                    .map_err(|e| AuditError::Reference(format!("{stream}: {e}")))?;
                if reg.version != model.version {
                    continue;
                }
                let rows = reg.reference.clone();
                let reg2 = reg.clone();
                let predictions = tokio::task::spawn_blocking(move || score(&reg2, &rows))
                    .await
                    .map_err(|e| AuditError::Reference(e.to_string()))?;
                return Ok(Some(ReferenceData {
                    features: reg.features.iter().map(|f| f.name.clone()).collect(),
                    rows: reg.reference,
                    predictions,
                }));
            }
            match page.last() {
                Some(last) if n == 64 => from = StreamFrom::Version(last.version + 1),
                _ => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64, n: usize) -> Vec<f64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (x >> 11) as f64 / (1u64 << 53) as f64
            })
            .collect()
    }

    #[test]
    fn psi_from_bins_equals_attest_ai_psi() {
        let reference = lcg(1, 2_000);
        let current: Vec<f64> = lcg(2, 700).into_iter().map(|v| v * v).collect();
        let layout = BinLayout::from_reference(&reference, DEFAULT_FINE_BINS).unwrap();
        let mut fine = vec![0u64; layout.reference.len()];
        for v in &current {
            fine[layout.bin(*v).unwrap() as usize] += 1;
        }
        let (psi, p) = layout.psi(&fine).unwrap();
        let exact = attest_ai::drift::numeric_drift("x", &reference, &current).unwrap();
        assert!((psi - exact.psi).abs() < 1e-12, "{psi} vs {}", exact.psi);
        assert!(p.unwrap() < 1e-6);
        // Binned KS is within one fine bin's reference mass of the exact statistic.
        let ks = layout.ks(&fine).unwrap();
        assert!(ks.statistic <= exact.ks.statistic + 1e-12);
        let max_mass = *layout.reference.iter().max().unwrap() as f64 / reference.len() as f64;
        assert!(exact.ks.statistic - ks.statistic <= max_mass + 1e-12);
        assert!(max_mass < 1.5 / DEFAULT_FINE_BINS as f64);
    }

    #[test]
    fn discrete_columns_and_missing_values() {
        let reference = [0.0, 0.0, 1.0, 1.0, 1.0, 2.0, f64::NAN];
        let layout = BinLayout::from_reference(&reference, 10).unwrap();
        assert_eq!(layout.reference.iter().sum::<u64>(), 6);
        assert_eq!(layout.bin(f64::NAN), None);
        assert!(BinLayout::from_reference(&[f64::NAN], 10).is_none());
        let profile = ReferenceProfile::new(
            ModelRef {
                id: "m".into(),
                version: 1,
            },
            vec!["a".into(), "b".into()],
            &[vec![1.0, 2.0], vec![2.0, 3.0]],
            None,
            10,
        )
        .unwrap();
        let s = profile.sample(0.3, &[("a".into(), 1.5)]);
        assert_eq!(s.features.len(), 2);
        assert!(s.features[0].is_some() && s.features[1].is_none());
        assert!(ReferenceProfile::new(
            ModelRef {
                id: "m".into(),
                version: 1
            },
            vec!["a".into()],
            &[vec![1.0, 2.0]],
            None,
            10
        )
        .is_err());
    }
}
