//! Seeded percentile-bootstrap confidence intervals for disparities.
//!
//! Every replicate resamples the rows with replacement (same size), recounts, and re-evaluates
//! each disparity. Replicate `r` draws from ChaCha8 seeded with `seed` on stream `r`, so the
//! intervals depend only on the seed, not on the number of threads.

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::counts::{ConfusionCounts, EncodedInput};
use super::disparity::{DisparityKind, PrivilegedGroups};
use crate::AiError;

/// Bootstrap settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BootstrapConfig {
    /// Number of resamples.
    pub replicates: usize,
    /// RNG seed.
    pub seed: u64,
    /// Two-sided confidence level in (0, 1), e.g. 0.95.
    pub confidence: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            replicates: 1000,
            seed: 0,
            confidence: 0.95,
        }
    }
}

/// A percentile confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Lower bound (the `(1 - confidence) / 2` percentile of the replicates).
    pub lower: f64,
    /// Upper bound (the `(1 + confidence) / 2` percentile).
    pub upper: f64,
    /// The confidence level.
    pub confidence: f64,
    /// Replicates where the disparity was defined (the interval uses only these).
    pub defined_replicates: usize,
    /// Replicates where it was undefined (e.g. a group drew no positives).
    pub undefined_replicates: usize,
}

/// Linear-interpolation percentile (numpy's default) of sorted values, `q` in [0, 1].
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Bootstrap intervals for `kinds` (same order); `None` where no replicate was defined.
pub fn bootstrap_intervals(
    input: &EncodedInput,
    kinds: &[DisparityKind],
    privileged: Option<&PrivilegedGroups>,
    config: &BootstrapConfig,
) -> Result<Vec<Option<Interval>>, AiError> {
    if config.replicates == 0 {
        return Err(AiError::InvalidArgument(
            "bootstrap needs at least one replicate".into(),
        ));
    }
    if !(config.confidence > 0.0 && config.confidence < 1.0) {
        return Err(AiError::InvalidArgument(format!(
            "bootstrap confidence must be in (0, 1), got {}",
            config.confidence
        )));
    }
    let n = input.n_rows();
    if n == 0 {
        return Err(AiError::InvalidArgument("bootstrap over zero rows".into()));
    }
    // Fail early (not per replicate) on a bad privileged spec.
    if let Some(p) = privileged {
        p.partition(&input.counts())?;
    }
    let n_groups = input.keys.len();
    let replicate = |r: usize| -> Result<Vec<Option<f64>>, AiError> {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(r as u64);
        let mut acc = vec![ConfusionCounts::default(); n_groups];
        for _ in 0..n {
            let i = rng.gen_range(0..n);
            let c = input.cells[i];
            let w = input.weights.as_ref().map_or(1.0, |w| w[i]);
            acc[(c >> 2) as usize].add(c & 2 != 0, c & 1 != 0, w);
        }
        // Groups that drew no row are dropped, as they would be absent from a real sample.
        let counts = input.counts_from(acc);
        let counts = super::counts::GroupCounts::from_parts(
            counts.feature_names().to_vec(),
            counts
                .groups()
                .filter(|(_, c)| c.count() > 0)
                .map(|(k, c)| (k.clone(), *c))
                .collect(),
        )?;
        let partition = match privileged {
            Some(p) => Some(p.partition(&counts)?),
            None => None,
        };
        Ok(kinds
            .iter()
            .map(|k| k.evaluate(&counts, partition.as_ref()).value())
            .collect())
    };
    let draws: Vec<Vec<Option<f64>>> = (0..config.replicates)
        .into_par_iter()
        .map(replicate)
        .collect::<Result<_, _>>()?;
    let alpha = (1.0 - config.confidence) / 2.0;
    Ok((0..kinds.len())
        .map(|j| {
            let mut vals: Vec<f64> = draws.iter().filter_map(|d| d[j]).collect();
            if vals.is_empty() {
                return None;
            }
            vals.sort_by(f64::total_cmp);
            Some(Interval {
                lower: percentile(&vals, alpha),
                upper: percentile(&vals, 1.0 - alpha),
                confidence: config.confidence,
                defined_replicates: vals.len(),
                undefined_replicates: config.replicates - vals.len(),
            })
        })
        .collect())
}
