//! The statistics behind the breach rule: score intervals for proportions, their differences
//! and ratios, and significance of PSI and binned KS drift.
//!
//! - [`wilson`]: Wilson score interval of one proportion;
//! - [`newcombe_difference`]: Newcombe's hybrid score interval (his method 10) for a difference
//!   of two independent proportions, built from the two Wilson intervals;
//! - [`katz_ratio`]: Katz' log interval for a ratio of two proportions (0.5 added to every cell
//!   of the 2x2 table when one is empty);
//! - [`psi_pvalue`]: PSI is asymptotically `(1/n + 1/m) · χ²(B - 1)` under "no drift"
//!   (Yurdakul 2018), which gives a p-value;
//! - [`binned_ks`]: the two-sample KS statistic evaluated at shared bin edges, with the
//!   asymptotic p-value at the effective size.
//!
//! Every function returns `None` (rather than NaN) where its inputs leave it undefined.

use serde::{Deserialize, Serialize};

/// A two-sided confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceInterval {
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
    /// Confidence level in (0, 1), e.g. 0.95.
    pub confidence: f64,
}

impl ConfidenceInterval {
    /// Whether `value` lies outside `[lower, upper]`.
    pub fn excludes(&self, value: f64) -> bool {
        value < self.lower || value > self.upper
    }
}

/// Standard normal quantile (inverse CDF) by Acklam's rational approximation (relative error
/// below 1.2e-9); `None` outside (0, 1).
pub fn normal_quantile(p: f64) -> Option<f64> {
    if !(p > 0.0 && p < 1.0) {
        return None;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.024_25;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    Some(if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    })
}

/// The two-sided critical value `z` for `confidence` (1.959964 for 0.95).
fn z_of(confidence: f64) -> Option<f64> {
    normal_quantile(1.0 - (1.0 - confidence) / 2.0)
}

/// Wilson score interval of `successes / trials`; `None` when `trials` is 0, `successes >
/// trials`, or `confidence` is not in (0, 1).
pub fn wilson(successes: u64, trials: u64, confidence: f64) -> Option<ConfidenceInterval> {
    if trials == 0 || successes > trials {
        return None;
    }
    let z = z_of(confidence)?;
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(ConfidenceInterval {
        lower: (center - half).max(0.0),
        upper: (center + half).min(1.0),
        confidence,
    })
}

/// Newcombe's hybrid score interval for `x1/n1 - x2/n2` (independent samples).
pub fn newcombe_difference(
    x1: u64,
    n1: u64,
    x2: u64,
    n2: u64,
    confidence: f64,
) -> Option<ConfidenceInterval> {
    let w1 = wilson(x1, n1, confidence)?;
    let w2 = wilson(x2, n2, confidence)?;
    let p1 = x1 as f64 / n1 as f64;
    let p2 = x2 as f64 / n2 as f64;
    let d = p1 - p2;
    Some(ConfidenceInterval {
        lower: d - ((p1 - w1.lower).powi(2) + (w2.upper - p2).powi(2)).sqrt(),
        upper: d + ((w1.upper - p1).powi(2) + (p2 - w2.lower).powi(2)).sqrt(),
        confidence,
    })
}

/// Katz' log interval for the ratio `(x1/n1) / (x2/n2)`. When a cell of the 2x2 table is empty
/// (x = 0 or x = n) 0.5 is added to every cell. `None` when a sample is empty.
pub fn katz_ratio(
    x1: u64,
    n1: u64,
    x2: u64,
    n2: u64,
    confidence: f64,
) -> Option<ConfidenceInterval> {
    if n1 == 0 || n2 == 0 || x1 > n1 || x2 > n2 {
        return None;
    }
    let z = z_of(confidence)?;
    let empty_cell = x1 == 0 || x2 == 0 || x1 == n1 || x2 == n2;
    let (a, m, b, k) = if empty_cell {
        (
            x1 as f64 + 0.5,
            n1 as f64 + 1.0,
            x2 as f64 + 0.5,
            n2 as f64 + 1.0,
        )
    } else {
        (x1 as f64, n1 as f64, x2 as f64, n2 as f64)
    };
    let log_ratio = ((a / m) / (b / k)).ln();
    let se = (1.0 / a - 1.0 / m + 1.0 / b - 1.0 / k).sqrt();
    Some(ConfidenceInterval {
        lower: (log_ratio - z * se).exp(),
        upper: (log_ratio + z * se).exp(),
        confidence,
    })
}

/// p-value of "no drift" for a PSI computed on `bins` bins from `n_current` and
/// `n_reference` values: `P(χ²(bins - 1) ≥ psi / (1/n + 1/m))`.
pub fn psi_pvalue(psi: f64, bins: usize, n_current: u64, n_reference: u64) -> Option<f64> {
    if bins < 2 || n_current == 0 || n_reference == 0 || !psi.is_finite() {
        return None;
    }
    let scale = 1.0 / n_current as f64 + 1.0 / n_reference as f64;
    Some(attest_ai::drift::special::chi2_sf(
        psi.max(0.0) / scale,
        (bins - 1) as f64,
    ))
}

/// A KS statistic computed from binned counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BinnedKs {
    /// max over the bin edges of |F_reference - F_current|.
    pub statistic: f64,
    /// Asymptotic two-sided p-value (`kstwo.sf(D, round(n m / (n + m)))`).
    pub pvalue: f64,
}

/// The two-sample KS statistic at the shared bin edges of two count vectors over the same
/// bins. It is exact at the edges; between them it can miss at most the largest reference
/// mass of one bin (bins are reference quantiles, so about `1 / bins`). `None` when a side is
/// empty or the lengths differ.
pub fn binned_ks(reference: &[u64], current: &[u64]) -> Option<BinnedKs> {
    if reference.len() != current.len() {
        return None;
    }
    let m: u64 = reference.iter().sum();
    let n: u64 = current.iter().sum();
    if m == 0 || n == 0 {
        return None;
    }
    let (mut cr, mut cc, mut d) = (0u64, 0u64, 0.0f64);
    for (r, c) in reference.iter().zip(current) {
        cr += r;
        cc += c;
        d = d.max((cr as f64 / m as f64 - cc as f64 / n as f64).abs());
    }
    let (mf, nf) = (m as f64, n as f64);
    let en = (mf * nf / (mf + nf)).round().max(1.0) as u64;
    Some(BinnedKs {
        statistic: d,
        pvalue: attest_ai::drift::kolmogorov::kstwo_sf(en, d),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn normal_quantile_matches_tables() {
        assert!(close(normal_quantile(0.975).unwrap(), 1.959_963_985, 1e-8));
        assert!(close(normal_quantile(0.5).unwrap(), 0.0, 1e-12));
        assert!(close(normal_quantile(0.01).unwrap(), -2.326_347_874, 1e-8));
        assert!(normal_quantile(0.0).is_none());
        assert!(normal_quantile(1.0).is_none());
        assert!(normal_quantile(f64::NAN).is_none());
    }

    #[test]
    fn wilson_by_hand() {
        // 8/10 at 95%: z = 1.959964, z² = 3.841459; centre = (0.8 + 0.192073) / 1.384146
        // = 0.716740; half = 1.959964 / 1.384146 * sqrt(0.016 + 0.009604) = 0.226562.
        let w = wilson(8, 10, 0.95).unwrap();
        assert!(close(w.lower, 0.490_16, 1e-4), "{w:?}");
        assert!(close(w.upper, 0.943_32, 1e-4), "{w:?}");
        // 0/10: lower bound is exactly 0, upper z²/(n + z²) = 3.841459 / 13.841459.
        let w = wilson(0, 10, 0.95).unwrap();
        assert!(close(w.lower, 0.0, 1e-12), "{w:?}");
        assert!(close(w.upper, 0.277_53, 1e-4), "{w:?}");
        assert!(wilson(1, 0, 0.95).is_none());
        assert!(wilson(3, 2, 0.95).is_none());
    }

    #[test]
    fn newcombe_matches_his_paper() {
        // Newcombe (1998), Statistics in Medicine 17, example (a): 56/70 - 48/80,
        // method 10 gives 0.0524 to 0.3339.
        let c = newcombe_difference(56, 70, 48, 80, 0.95).unwrap();
        assert!(close(c.lower, 0.0524, 1e-4), "{c:?}");
        assert!(close(c.upper, 0.3339, 1e-4), "{c:?}");
        assert!(c.excludes(0.0));
        // Example (b): 9/10 - 3/10 gives 0.1705 to 0.8090.
        let c = newcombe_difference(9, 10, 3, 10, 0.95).unwrap();
        assert!(close(c.lower, 0.1705, 1e-4), "{c:?}");
        assert!(close(c.upper, 0.8090, 1e-4), "{c:?}");
        // Example (d): 5/56 - 0/29 gives -0.0381 to 0.1926.
        let c = newcombe_difference(5, 56, 0, 29, 0.95).unwrap();
        assert!(close(c.lower, -0.0381, 1e-4), "{c:?}");
        assert!(close(c.upper, 0.1926, 1e-4), "{c:?}");
        assert!(!c.excludes(0.0));
    }

    #[test]
    fn katz_by_hand() {
        // 10/100 over 20/100: RR = 0.5, se = sqrt(1/10 - 1/100 + 1/20 - 1/100) = sqrt(0.13);
        // exp(ln 0.5 ± 1.959964 · 0.360555) = (0.24665, 1.01357).
        let c = katz_ratio(10, 100, 20, 100, 0.95).unwrap();
        assert!(close(c.lower, 0.246_65, 1e-4), "{c:?}");
        assert!(close(c.upper, 1.013_57, 1e-4), "{c:?}");
        assert!(!c.excludes(1.0));
        // With an empty cell every cell gets 0.5: (0.5/11) / (5.5/11) = 1/11.
        let c = katz_ratio(0, 10, 5, 10, 0.95).unwrap();
        let rr = 1.0 / 11.0;
        assert!(c.lower < rr && rr < c.upper);
        assert!(katz_ratio(1, 0, 1, 2, 0.95).is_none());
    }

    #[test]
    fn psi_pvalue_by_hand() {
        // 10 bins, n = m = 1000: scale 0.002; PSI 0.0338 -> χ² = 16.9 on 9 dof, p ≈ 0.0502.
        let p = psi_pvalue(0.0338, 10, 1000, 1000).unwrap();
        assert!(close(p, 0.0502, 1e-3), "{p}");
        assert!(psi_pvalue(0.1, 1, 10, 10).is_none());
        assert!(psi_pvalue(0.1, 10, 0, 10).is_none());
    }

    #[test]
    fn binned_ks_by_hand() {
        // Reference uniform over 4 bins, current all in the first: CDFs at the edges
        // (0.25, 0.5, 0.75, 1) vs (1, 1, 1, 1): D = 0.75.
        let k = binned_ks(&[25, 25, 25, 25], &[40, 0, 0, 0]).unwrap();
        assert!(close(k.statistic, 0.75, 1e-12));
        assert!(k.pvalue < 1e-6);
        let k = binned_ks(&[25, 25, 25, 25], &[10, 10, 10, 10]).unwrap();
        assert_eq!(k.statistic, 0.0);
        assert!(close(k.pvalue, 1.0, 1e-12));
        assert!(binned_ks(&[1, 2], &[0, 0]).is_none());
        assert!(binned_ks(&[1, 2], &[1]).is_none());
    }
}
