//! Drift statistics for categorical columns (categories given as numeric codes; NaN is
//! missing and dropped).

use serde::Serialize;

use super::distance::{jensen_shannon, psi};
use super::numeric::clean;
use super::special::{chi2_sf, normal_two_sided_p};
use crate::AiError;

/// Category counts of both samples over the union of observed categories (sorted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryCounts {
    /// The categories, sorted.
    pub categories: Vec<f64>,
    /// Reference count per category.
    pub reference: Vec<u64>,
    /// Current count per category.
    pub current: Vec<u64>,
}

impl CategoryCounts {
    /// Counts the two samples.
    pub fn new(column: &str, reference: &[f64], current: &[f64]) -> Result<Self, AiError> {
        let a = clean(column, "reference", reference)?;
        let b = clean(column, "current", current)?;
        let mut cats: Vec<f64> = a.iter().chain(&b).copied().collect();
        cats.sort_by(f64::total_cmp);
        cats.dedup();
        let count = |xs: &[f64]| {
            let mut c = vec![0u64; cats.len()];
            for x in xs {
                if let Ok(i) = cats.binary_search_by(|p| p.total_cmp(x)) {
                    c[i] += 1;
                }
            }
            c
        };
        Ok(CategoryCounts {
            reference: count(&a),
            current: count(&b),
            categories: cats,
        })
    }

    fn proportions(counts: &[u64]) -> Vec<f64> {
        let n: u64 = counts.iter().sum();
        counts.iter().map(|c| *c as f64 / n as f64).collect()
    }

    /// Reference proportions.
    pub fn reference_proportions(&self) -> Vec<f64> {
        Self::proportions(&self.reference)
    }

    /// Current proportions.
    pub fn current_proportions(&self) -> Vec<f64> {
        Self::proportions(&self.current)
    }
}

/// A chi-square test result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChiSquare {
    /// The statistic.
    pub statistic: f64,
    /// P(χ²_dof >= statistic).
    pub pvalue: f64,
    /// Degrees of freedom.
    pub dof: usize,
}

/// Pearson's chi-square test of independence on the 2 x k table (reference row, current
/// row), scipy's `chi2_contingency(table, correction=False)`.
pub fn chi2_contingency(c: &CategoryCounts) -> ChiSquare {
    let n1: u64 = c.reference.iter().sum();
    let n2: u64 = c.current.iter().sum();
    let n = (n1 + n2) as f64;
    let mut stat = 0.0;
    for (r, k) in c.reference.iter().zip(&c.current) {
        let col = (r + k) as f64;
        for (obs, row) in [(*r, n1), (*k, n2)] {
            let e = row as f64 * col / n;
            if e > 0.0 {
                stat += (obs as f64 - e).powi(2) / e;
            }
        }
    }
    let dof = c.categories.len().saturating_sub(1);
    ChiSquare {
        statistic: stat,
        pvalue: if dof == 0 {
            1.0
        } else {
            chi2_sf(stat, dof as f64)
        },
        dof,
    }
}

/// Evidently's `chisquare` stat test: goodness of fit of the current counts against the
/// reference proportions scaled to the current size (scipy's `chisquare(f_obs, f_exp)`).
/// A category absent from the reference gives an infinite statistic (p = 0).
pub fn chi2_goodness_of_fit(c: &CategoryCounts) -> ChiSquare {
    let n1: u64 = c.reference.iter().sum();
    let n2: u64 = c.current.iter().sum();
    let k = n2 as f64 / n1 as f64;
    let mut stat = 0.0;
    for (r, o) in c.reference.iter().zip(&c.current) {
        let e = *r as f64 * k;
        let o = *o as f64;
        stat += if e > 0.0 {
            (o - e).powi(2) / e
        } else if o > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
    }
    let dof = c.categories.len().saturating_sub(1);
    ChiSquare {
        statistic: stat,
        pvalue: if dof == 0 {
            1.0
        } else {
            chi2_sf(stat, dof as f64)
        },
        dof,
    }
}

/// Evidently's two-proportion z-test for binary columns: the share of the first (smallest)
/// category in each sample, pooled standard error, two-sided normal p-value. Returns
/// `(z, p)`; identical single-valued samples give `p = 1`.
pub fn proportions_z_test(c: &CategoryCounts) -> (f64, f64) {
    if c.categories.len() <= 1 {
        return (0.0, 1.0);
    }
    let n1: u64 = c.reference.iter().sum();
    let n2: u64 = c.current.iter().sum();
    // Evidently codes the first category as 0 and everything else as 1.
    let p1 = (n1 - c.reference[0]) as f64 / n1 as f64;
    let p2 = (n2 - c.current[0]) as f64 / n2 as f64;
    let p = (p1 * n1 as f64 + p2 * n2 as f64) / (n1 + n2) as f64;
    let se = (p * (1.0 - p) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    let z = (p1 - p2) / se;
    (z, normal_two_sided_p(z))
}

/// The drift statistics of one categorical column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoricalDrift {
    /// Chi-square test of independence (2 x k, no continuity correction).
    pub chi2: ChiSquare,
    /// PSI with one bin per category (proportions clipped below at 1e-4).
    pub psi: f64,
    /// Jensen–Shannon distance, base 2, one bin per category.
    pub jensen_shannon: f64,
    /// The counts.
    pub counts: CategoryCounts,
}

/// All categorical drift statistics of one column.
pub fn categorical_drift(
    column: &str,
    reference: &[f64],
    current: &[f64],
) -> Result<CategoricalDrift, AiError> {
    let counts = CategoryCounts::new(column, reference, current)?;
    let (pr, pc) = (counts.reference_proportions(), counts.current_proportions());
    Ok(CategoricalDrift {
        chi2: chi2_contingency(&counts),
        psi: psi(&pr, &pc),
        jensen_shannon: jensen_shannon(&pr, &pc, 2.0),
        counts,
    })
}
