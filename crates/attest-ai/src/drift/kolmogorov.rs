//! The distribution of the two-sided one-sample Kolmogorov–Smirnov statistic D_n (scipy's
//! `kstwo`), used for the asymptotic two-sample p-value.
//!
//! The algorithm choice follows Simard & L'Ecuyer (2011, "Computing the Two-Sided
//! Kolmogorov–Smirnov Distribution", J. Stat. Software 39(11)), as scipy's `kstwo` does:
//! - `n x <= 1` and `n x >= n - 1`: the closed forms of Ruben & Gambino (1982);
//! - survival for `n > 140`: 0 when `n x² >= 370`; `2 P(D+_n >= x)` (the exact one-sided
//!   Smirnov tail, Birnbaum & Tingey 1951) when `n x² >= 2.2`; otherwise `1 - CDF`;
//! - CDF: the Durbin matrix (Marsaglia, Tsang & Wang 2003) when `n <= 100000` and
//!   `n x^1.5 <= 1.4`, else the Pelz–Good (1976) asymptotic series;
//! - `n <= 140`: the Durbin matrix when `n x² <= 4` (scipy uses Pomeranz's recursion for
//!   `0.754693 < n x² <= 4`; both are exact, they differ by rounding only), else
//!   `2 P(D+_n >= x)`.

use std::f64::consts::PI;

use super::special::ln_factorial_over_power;

/// P(D_n > x), scipy's `kstwo.sf(x, n)`.
pub fn kstwo_sf(n: u64, x: f64) -> f64 {
    if n == 0 || x.is_nan() {
        return f64::NAN;
    }
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    let t = nf * x;
    if t <= 1.0 {
        if t <= 0.5 {
            return 1.0;
        }
        let cdf = (ln_factorial_over_power(n) + nf * (2.0 * t - 1.0).ln()).exp();
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    if t >= nf - 1.0 {
        return (2.0 * (1.0 - x).powf(nf)).clamp(0.0, 1.0);
    }
    if x >= 0.5 {
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    let nxx = t * x;
    if n <= 140 {
        if nxx <= 4.0 {
            return (1.0 - durbin_cdf(n, x)).clamp(0.0, 1.0);
        }
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    if nxx >= 370.0 {
        return 0.0;
    }
    if nxx >= 2.2 {
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    let cdf = if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        durbin_cdf(n, x)
    } else {
        pelz_good_cdf(n, x)
    };
    (1.0 - cdf).clamp(0.0, 1.0)
}

/// Exact one-sided tail P(D+_n >= x) (Birnbaum & Tingey 1951):
/// `x Σ_{j=0}^{⌊n(1-x)⌋} C(n, j) (1 - x - j/n)^(n-j) (x + j/n)^(j-1)`, summed in log space.
pub fn smirnov_sf(n: u64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    let jmax = (nf * (1.0 - x)).floor() as u64;
    // ln C(n, j), built incrementally.
    let mut ln_choose = 0.0f64;
    let mut logs: Vec<f64> = Vec::with_capacity(jmax as usize + 1);
    for j in 0..=jmax {
        if j > 0 {
            ln_choose += ((nf - j as f64 + 1.0) / j as f64).ln();
        }
        let jf = j as f64;
        let a = 1.0 - x - jf / nf;
        let b = x + jf / nf;
        if a <= 0.0 && (nf - jf) > 0.0 {
            continue;
        }
        let la = if nf - jf > 0.0 {
            (nf - jf) * a.ln()
        } else {
            0.0
        };
        logs.push(ln_choose + la + (jf - 1.0) * b.ln());
    }
    let Some(max) = logs.iter().copied().reduce(f64::max) else {
        return 0.0;
    };
    let sum: f64 = logs.iter().map(|l| (l - max).exp()).sum();
    (x.ln() + max + sum.ln()).exp().clamp(0.0, 1.0)
}

/// P(D_n < d) by the Durbin matrix method (Marsaglia, Tsang & Wang 2003): with
/// `k = ⌈n d⌉`, `h = k - n d`, `m = 2k - 1`, `P = n!/n^n (H^n)[k-1][k-1]`.
pub fn durbin_cdf(n: u64, d: f64) -> f64 {
    let nf = n as f64;
    let nd = nf * d;
    if nd <= 0.5 {
        return 0.0;
    }
    if d >= 1.0 {
        return 1.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut inv_fact = vec![1.0f64; m + 1];
    for j in 1..=m {
        inv_fact[j] = inv_fact[j - 1] / j as f64;
    }
    let mut hm = vec![0.0f64; m * m];
    for i in 0..m {
        for j in 0..=(i + 1).min(m - 1) {
            hm[i * m + j] = inv_fact[i + 1 - j];
        }
    }
    for i in 0..m {
        hm[i * m] -= h.powi(i as i32 + 1) * inv_fact[i + 1];
        hm[(m - 1) * m + i] -= h.powi((m - i) as i32) * inv_fact[m - i];
    }
    let corner = (2.0 * h - 1.0).max(0.0);
    hm[(m - 1) * m] += corner.powi(m as i32) * inv_fact[m];

    // Binary powering with power-of-two rescaling; `scale` is the log2 of the factor removed.
    let mut result = identity(m);
    let mut result_scale: i64 = 0;
    let mut base = hm;
    let mut base_scale: i64 = 0;
    let mut e = n;
    while e > 0 {
        if e & 1 == 1 {
            result = matmul(&result, &base, m);
            result_scale += base_scale;
            rescale(&mut result, &mut result_scale);
        }
        e >>= 1;
        if e > 0 {
            base = matmul(&base, &base, m);
            base_scale *= 2;
            rescale(&mut base, &mut base_scale);
        }
    }
    let v = result[(k - 1) * m + (k - 1)];
    if v <= 0.0 {
        return 0.0;
    }
    let ln_p = v.ln() + result_scale as f64 * std::f64::consts::LN_2 + ln_factorial_over_power(n);
    ln_p.exp().clamp(0.0, 1.0)
}

fn identity(m: usize) -> Vec<f64> {
    let mut a = vec![0.0; m * m];
    for i in 0..m {
        a[i * m + i] = 1.0;
    }
    a
}

fn matmul(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * m];
    for i in 0..m {
        for l in 0..m {
            let x = a[i * m + l];
            if x == 0.0 {
                continue;
            }
            for j in 0..m {
                c[i * m + j] += x * b[l * m + j];
            }
        }
    }
    c
}

/// Keeps the largest entry below 2^256 by dividing by powers of 2^256 (exact in binary).
fn rescale(a: &mut [f64], scale: &mut i64) {
    const STEP: i32 = 256;
    let big = 2f64.powi(STEP);
    loop {
        let max = a.iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
        if max <= big {
            break;
        }
        let f = 2f64.powi(-STEP);
        for v in a.iter_mut() {
            *v *= f;
        }
        *scale += i64::from(STEP);
    }
}

/// P(D_n <= x) by the Pelz–Good (1976) series: `K0(z) + K1(z)/√n + K2(z)/n + K3(z)/n^1.5`
/// with `z = x√n`, each term in its theta-function form for small `z`.
pub fn pelz_good_cdf(n: u64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let z = nf.sqrt() * x;
    let (z2, z3, z4, z6) = (z * z, z.powi(3), z.powi(4), z.powi(6));
    let pi2 = PI * PI;
    let pi4 = pi2 * pi2;
    let pi6 = pi4 * pi2;
    let log_q = -pi2 / 8.0 / z2;
    if log_q < -708.0 {
        return 0.0;
    }
    let kmax = (16.0 * z / PI).ceil() as i64;
    // Sums over odd m = 2k - 1 of c(m) exp(-π² m² / (8 z²)).
    let (mut s0, mut s1, mut s2, mut s3) = (0.0, 0.0, 0.0, 0.0);
    for k in 1..=kmax {
        let m = (2 * k - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let e = (log_q * m2).exp();
        s0 += e;
        s1 += (-z2 + pi2 * m2 / 4.0) * e;
        s2 += (6.0 * z6
            + 2.0 * z4
            + (2.0 * z4 - 5.0 * z2) * pi2 * m2 / 4.0
            + pi4 * (1.0 - 2.0 * z2) * m4 / 16.0)
            * e;
        s3 += (-30.0 * z6 - 90.0 * z.powi(8)
            + pi2 * (135.0 * z4 - 96.0 * z6) * m2 / 4.0
            + pi4 * (212.0 * z4 - 60.0 * z2) * m4 / 16.0
            + pi6 * (5.0 - 30.0 * z2) * m6 / 64.0)
            * e;
    }
    let sqrt2pi = (2.0 * PI).sqrt();
    let k0 = sqrt2pi * s0 / z;
    let k1 = sqrt2pi * s1 / (6.0 * z4);
    let mut k2 = sqrt2pi * s2 / (72.0 * z.powi(7));
    let mut k3 = sqrt2pi * s3 / (6480.0 * z.powi(10));
    // Sums over all k >= 1 of c(k) exp(-π² k² / (2 z²)).
    let (mut t2, mut t3) = (0.0, 0.0);
    for k in 1..=kmax {
        let kf = k as f64;
        let e = (-pi2 * kf * kf / 2.0 / z2).exp();
        t2 += kf * kf * e;
        t3 += (3.0 * z2 - pi2 * kf * kf) * kf * kf * e;
    }
    k2 -= pi2 * sqrt2pi * t2 / (36.0 * z3);
    k3 += pi2 * sqrt2pi * t3 / (216.0 * z6);
    (k0 + k1 / nf.sqrt() + k2 / nf + k3 / nf.powf(1.5)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(n, x, scipy.stats.kstwo.sf(x, n))` from scipy 1.17.1, covering every branch.
    const SCIPY: [(u64, f64, f64); 15] = [
        (10045, 0.01115972420905853, 0.16253831251091622),
        (10045, 0.005441941536948824, 0.9257306318323314),
        (10045, 0.0022625498272146327, 0.9999999994120113),
        (10045, 0.0011940567416693915, 1.0),
        (10045, 0.0026686966080377156, 0.9999996278903401),
        (10045, 0.1464319632814145, 1.8923880882413773e-188),
        (10045, 0.02, 0.0006382858378910037),
        (50, 0.1, 0.6623112704658186),
        (50, 0.2, 0.03143877776953241),
        (50, 0.3, 0.00017353260202718738),
        (100, 0.05, 0.9532159710635725),
        (7, 0.6, 0.006140397691438094),
        (1000, 0.03, 0.3226902143914636),
        (200000, 0.002, 0.39995085369038097),
        (5, 0.15, 0.9988),
    ];

    #[test]
    fn kstwo_matches_scipy_relatively() {
        for (n, x, want) in SCIPY {
            let got = kstwo_sf(n, x);
            let rel = (got - want).abs() / want.max(1e-300);
            assert!(
                rel < 1e-9,
                "n={n} x={x}: got {got:e}, scipy {want:e} (rel {rel:e})"
            );
        }
    }

    #[test]
    fn smirnov_matches_scipy() {
        for (n, x, want) in [
            (10045, 0.1464319632814145, 9.461940441206886e-189),
            (100, 0.1, 0.1265906584562817),
        ] {
            let got = smirnov_sf(n, x);
            assert!(((got - want) / want).abs() < 1e-9, "{got:e} vs {want:e}");
        }
    }

    #[test]
    fn chi2_and_normal_match_scipy() {
        use crate::drift::special::{chi2_sf, normal_two_sided_p};
        for (s, d, want) in [
            (4.433681738166445, 6.0, 0.6182015208050606),
            (36.02010648743338, 40.0, 0.6500244472759158),
            (0.1675855235504203, 1.0, 0.682266604684878),
            (100.0, 3.0, 1.5541594313896026e-21),
            (0.5, 10.0, 0.999993388289439),
        ] {
            let got = chi2_sf(s, d);
            assert!(
                ((got - want) / want).abs() < 1e-12,
                "chi2 {s} {d}: {got:e} vs {want:e}"
            );
        }
        for (z, want) in [(1.7, 0.08913092551708608), (6.0, 1.973175290075389e-09)] {
            let got = normal_two_sided_p(z);
            assert!(
                ((got - want) / want).abs() < 1e-12,
                "z {z}: {got:e} vs {want:e}"
            );
        }
    }
}
