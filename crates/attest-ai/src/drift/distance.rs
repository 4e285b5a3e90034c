//! Distances between two binned distributions (proportions over the same bins).

/// Lower clip applied to proportions before PSI (empty bins would make it infinite).
pub const PSI_EPSILON: f64 = 1e-4;

/// Population stability index `Σ (c - r) ln(c / r)`, proportions clipped below at
/// [`PSI_EPSILON`] (not renormalised).
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(r, c)| {
            let (r, c) = (r.max(PSI_EPSILON), c.max(PSI_EPSILON));
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// `x ln(x / y)`, 0 when x = 0 (scipy's `rel_entr` for the values used here).
fn rel_entr(x: f64, y: f64) -> f64 {
    if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Jensen–Shannon distance (the square root of the divergence) in the given log `base`, as
/// scipy's `spatial.distance.jensenshannon(p, q, base)`: both inputs are first normalised to
/// sum to 1.
pub fn jensen_shannon(p: &[f64], q: &[f64], base: f64) -> f64 {
    let sp: f64 = p.iter().sum();
    let sq: f64 = q.iter().sum();
    let mut js = 0.0;
    for (a, b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        let m = (a + b) / 2.0;
        js += rel_entr(a, m) + rel_entr(b, m);
    }
    (js / base.ln() / 2.0).max(0.0).sqrt()
}
