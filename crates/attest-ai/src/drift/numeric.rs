//! Drift statistics for numeric columns: two-sample Kolmogorov–Smirnov, Wasserstein-1, and
//! PSI / Jensen–Shannon on reference-decile bins.

use serde::Serialize;

use super::distance::{jensen_shannon, psi};
use super::kolmogorov::kstwo_sf;
use crate::AiError;

/// Drops NaN (missing) values; rejects infinities; fails when nothing is left.
pub fn clean(column: &str, which: &str, values: &[f64]) -> Result<Vec<f64>, AiError> {
    let mut out = Vec::with_capacity(values.len());
    for (row, v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if v.is_infinite() {
            return Err(AiError::NonFinite {
                column: format!("{column} ({which})"),
                row,
                value: *v,
            });
        }
        out.push(*v);
    }
    if out.is_empty() {
        return Err(AiError::InvalidArgument(format!(
            "column {column:?}: the {which} sample has no non-missing values"
        )));
    }
    Ok(out)
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// How the KS p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KsMethod {
    /// Exact: the probability that a uniformly random lattice path from (0, 0) to (n1, n2)
    /// leaves the band |i/n1 - j/n2| < D (Hodges 1957), as scipy's `method="exact"`.
    Exact,
    /// scipy's `method="asymp"` for two-sided tests: `kstwo.sf(D, round(n1 n2 / (n1 + n2)))`.
    Asymptotic,
}

/// Result of a two-sample KS test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KsResult {
    /// max |F_ref - F_cur|.
    pub statistic: f64,
    /// Two-sided p-value.
    pub pvalue: f64,
    /// Which computation gave the p-value.
    pub method: KsMethod,
}

/// Largest sample size for which `ks_2samp` computes the exact p-value (scipy's
/// `MAX_AUTO_N` for `method="auto"`).
pub const KS_EXACT_MAX_N: usize = 10_000;

/// Two-sided two-sample KS test, scipy's `ks_2samp(reference, current)` with the default
/// `method="auto"`: exact when both samples have at most [`KS_EXACT_MAX_N`] values, else the
/// asymptotic form — `kstwo.sf(D, round(n1 n2 / (n1 + n2)))`, the exact one-sample
/// distribution at the effective size (this is what the Adult reference used: 30,162 vs
/// 15,060 rows). NaN values are dropped.
pub fn ks_2samp(reference: &[f64], current: &[f64]) -> Result<KsResult, AiError> {
    let a = sorted(&clean("ks", "reference", reference)?);
    let b = sorted(&clean("ks", "current", current)?);
    Ok(ks_sorted(&a, &b))
}

/// [`ks_2samp`] on already cleaned, sorted samples.
fn ks_sorted(a: &[f64], b: &[f64]) -> KsResult {
    let statistic = ks_statistic_sorted(a, b);
    let (n1, n2) = (a.len(), b.len());
    if n1.max(n2) <= KS_EXACT_MAX_N {
        KsResult {
            statistic,
            pvalue: ks_exact_pvalue(n1 as u64, n2 as u64, statistic),
            method: KsMethod::Exact,
        }
    } else {
        let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
        let en = (m * n / (m + n)).round() as u64;
        KsResult {
            statistic,
            pvalue: kstwo_sf(en, statistic),
            method: KsMethod::Asymptotic,
        }
    }
}

/// max |F_a - F_b| over the pooled values, both inputs sorted.
pub fn ks_statistic_sorted(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut d = 0.0f64;
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.min(*y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / n1 - j as f64 / n2).abs());
    }
    d
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Exact two-sided p-value P(D >= d) for samples of sizes `n1`, `n2` (no ties assumed).
///
/// `d` is snapped to the lattice `h / lcm(n1, n2)` as scipy does; then every path point must
/// satisfy |i n2 - j n1| < h g (g = gcd). The uniform path measure is propagated with
/// transition probabilities (sampling without replacement), so nothing overflows.
pub fn ks_exact_pvalue(n1: u64, n2: u64, d: f64) -> f64 {
    let g = gcd(n1, n2);
    let lcm = (n1 / g) as f64 * n2 as f64;
    let h = (d * lcm).round();
    if h <= 0.0 {
        return 1.0;
    }
    // |i/n1 - j/n2| < h/lcm  <=>  |i (n2/g) - j (n1/g)| < h.
    let (a, b) = ((n2 / g) as f64, (n1 / g) as f64);
    let inside = |i: u64, j: u64| (i as f64 * a - j as f64 * b).abs() < h;
    let (m, n) = (n1 as usize, n2 as usize);
    let total = (n1 + n2) as f64;
    let mut prev = vec![0.0f64; n + 1];
    let mut cur = vec![0.0f64; n + 1];
    prev[0] = 1.0;
    // Row i = 0.
    for j in 1..=n {
        prev[j] = if inside(0, j as u64) {
            prev[j - 1] * (n - j + 1) as f64 / (total - (j - 1) as f64)
        } else {
            0.0
        };
    }
    for i in 1..=m {
        for j in 0..=n {
            if !inside(i as u64, j as u64) {
                cur[j] = 0.0;
                continue;
            }
            // From (i-1, j): an i-step, with (m - i + 1) i-steps left out of total - (i-1+j).
            let left = total - (i - 1 + j) as f64;
            let mut p = prev[j] * (m - i + 1) as f64 / left;
            if j > 0 {
                let left = total - (i + j - 1) as f64;
                p += cur[j - 1] * (n - j + 1) as f64 / left;
            }
            cur[j] = p;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    (1.0 - prev[n]).clamp(0.0, 1.0)
}

/// First Wasserstein distance between the two empirical distributions
/// (scipy's `wasserstein_distance(u, v)`): ∫ |F_u - F_v|.
pub fn wasserstein(reference: &[f64], current: &[f64]) -> Result<f64, AiError> {
    let a = sorted(&clean("wasserstein", "reference", reference)?);
    let b = sorted(&clean("wasserstein", "current", current)?);
    Ok(wasserstein_sorted(&a, &b))
}

fn wasserstein_sorted(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut total = 0.0;
    let mut prev: Option<f64> = None;
    let (mut fa, mut fb) = (0.0f64, 0.0f64);
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.min(*y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => break,
        };
        if let Some(p) = prev {
            total += (fa - fb).abs() * (v - p);
        }
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        fa = i as f64 / n1;
        fb = j as f64 / n2;
        prev = Some(v);
    }
    total
}

/// Mean and standard deviation with `ddof` (1 = sample, 0 = population).
pub fn mean_std(values: &[f64], ddof: usize) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (mean, (ss / (n - ddof as f64)).sqrt())
}

/// numpy's default `quantile` (method "linear") of sorted values.
fn quantile_sorted(s: &[f64], q: f64) -> f64 {
    let pos = q * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(s.len() - 1);
    let t = pos - lo as f64;
    let (a, b) = (s[lo], s[hi]);
    // numpy's lerp: from the nearer end, so t = 1 gives b exactly.
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

/// Bin edges: the reference deciles 0.1, ..., 0.9 (numpy's linear quantile), deduplicated.
/// Together with open outer bins they give up to 10 bins.
pub fn decile_edges(reference: &[f64]) -> Result<Vec<f64>, AiError> {
    let s = sorted(&clean("deciles", "reference", reference)?);
    let mut edges: Vec<f64> = (1..=9)
        .map(|k| quantile_sorted(&s, f64::from(k) / 10.0))
        .collect();
    edges.dedup();
    Ok(edges)
}

/// Proportion of `values` in each bin `(-inf, e0), [e0, e1), ..., [e_last, inf)`.
pub fn bin_proportions(values: &[f64], edges: &[f64]) -> Vec<f64> {
    let mut counts = vec![0u64; edges.len() + 1];
    for v in values {
        counts[edges.partition_point(|e| e <= v)] += 1;
    }
    let n = values.len() as f64;
    counts.into_iter().map(|c| c as f64 / n).collect()
}

/// The drift statistics of one numeric column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NumericDrift {
    /// Two-sample KS.
    pub ks: KsResult,
    /// Wasserstein-1 distance.
    pub wasserstein: f64,
    /// Wasserstein over the reference standard deviation (ddof = 1).
    pub wasserstein_over_ref_std: f64,
    /// Evidently's normed Wasserstein: over `max(std(reference, ddof = 0), 0.001)`.
    pub wasserstein_normed_evidently: f64,
    /// PSI on reference-decile bins (proportions clipped below at 1e-4).
    pub psi: f64,
    /// Jensen–Shannon distance (base 2) on the same bins.
    pub jensen_shannon: f64,
    /// The decile bin edges.
    pub decile_edges: Vec<f64>,
    /// Distinct values in both samples together.
    pub n_unique: usize,
    /// Non-missing reference values.
    pub n_reference: usize,
    /// Non-missing current values.
    pub n_current: usize,
}

/// All numeric drift statistics of one column (NaN values dropped).
pub fn numeric_drift(
    column: &str,
    reference: &[f64],
    current: &[f64],
) -> Result<NumericDrift, AiError> {
    let a = sorted(&clean(column, "reference", reference)?);
    let b = sorted(&clean(column, "current", current)?);
    let ks = ks_sorted(&a, &b);
    let w = wasserstein_sorted(&a, &b);
    let (_, sd1) = mean_std(&a, 1);
    let (_, sd0) = mean_std(&a, 0);
    let edges = decile_edges(&a)?;
    let pr = bin_proportions(&a, &edges);
    let pc = bin_proportions(&b, &edges);
    let mut all: Vec<f64> = a.iter().chain(&b).copied().collect();
    all.sort_by(f64::total_cmp);
    all.dedup();
    Ok(NumericDrift {
        ks,
        wasserstein: w,
        wasserstein_over_ref_std: w / sd1,
        wasserstein_normed_evidently: w / sd0.max(0.001),
        psi: psi(&pr, &pc),
        jensen_shannon: jensen_shannon(&pr, &pc, 2.0),
        decile_edges: edges,
        n_unique: all.len(),
        n_reference: a.len(),
        n_current: b.len(),
    })
}
