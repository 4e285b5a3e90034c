//! A seeded synthetic lending data generator with a configurable injected bias.
//!
//! # The population (same for every `bias`)
//! Each applicant draws, from one ChaCha8 stream seeded by `seed`:
//! - protected attributes: `sex` ∈ {female, male} (50/50), `race` ∈ {group_a (60 %),
//!   group_b (25 %), group_c (15 %)}, `age_band` ∈ {18-25, 26-35, 36-50, 51-65, 66+};
//! - features (see [`FEATURES`] for names, kinds and ranges): `annual_income` (log-normal,
//!   median ≈ 52 000, grows with a latent career length drawn independently of the protected
//!   attributes, age band included), `loan_amount` (a share of income), `debt_to_income`,
//!   `credit_history_months` (grows with career length), `late_payments_24m` (Poisson-like count),
//!   `employment_years`, `open_credit_lines`, `home_ownership` (0 rent, 1 mortgage, 2 own);
//! - the outcome from a known logistic ground truth on the features only:
//!   `logit P(default) = -1.6 + 2.2·(dti − 0.35) + 0.55·late_payments_24m
//!   − 0.012·(credit_history_months − 60) − 0.7·ln(income / 50 000) + 0.9·(loan/income − 0.3)
//!   − 0.05·employment_years + 0.06·(open_credit_lines − 5) − 0.25·[home_ownership = 2]`,
//!   see [`ground_truth_logit`]. At `bias = 0` the protected attributes do not enter the
//!   features' distribution or the label, so any model trained on the data shows no disparity
//!   beyond sampling noise.
//!
//! # The injected bias
//! The *disadvantaged group* is `sex = female` (see [`DISADVANTAGED`]). With `bias = b` in
//! `[0, 1]`, for applicants of that group only:
//! - **feature shift** (historical under-recording): `late_payments_24m` gets `+Poisson(2 b)`
//!   extra recorded late payments and `credit_history_months` is multiplied by `1 − 0.5 b`;
//! - **label shift** (historical prejudice in outcomes): the true default logit gets `+1.5 b`.
//!
//! A model trained on biased data therefore declines that group more often (selection-rate
//! difference grows with `b`), and live traffic generated with `bias > 0` shows a disparity even
//! against an unbiased model, because the group's features are shifted. `bias` outside `[0, 1]`
//! is clamped.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};

use crate::events::{FeatureKind, FeatureSpec, Outcome};
use crate::service::{DecisionRequest, ProtectedAttributes};

/// `(name, kind, min, max, description)` of every feature, in model column order.
pub const FEATURES: [(&str, FeatureKind, f64, f64, &str); 8] = [
    (
        "annual_income",
        FeatureKind::Number,
        0.0,
        10_000_000.0,
        "Gross annual income in currency units",
    ),
    (
        "loan_amount",
        FeatureKind::Number,
        100.0,
        5_000_000.0,
        "Requested loan amount in currency units",
    ),
    (
        "debt_to_income",
        FeatureKind::Number,
        0.0,
        5.0,
        "Monthly debt payments divided by monthly income",
    ),
    (
        "credit_history_months",
        FeatureKind::Integer,
        0.0,
        900.0,
        "Age of the oldest credit line in months",
    ),
    (
        "late_payments_24m",
        FeatureKind::Integer,
        0.0,
        100.0,
        "Payments 30+ days late in the last 24 months",
    ),
    (
        "employment_years",
        FeatureKind::Number,
        0.0,
        60.0,
        "Years with the current employer",
    ),
    (
        "open_credit_lines",
        FeatureKind::Integer,
        0.0,
        100.0,
        "Number of open credit lines",
    ),
    (
        "home_ownership",
        FeatureKind::Integer,
        0.0,
        2.0,
        "0 = rent, 1 = mortgage, 2 = own outright",
    ),
];

/// Name of the protected attribute the bias targets and the group it disadvantages.
pub const DISADVANTAGED: (&str, &str) = ("sex", "female");

/// The feature schema specs of the generator's features.
pub fn feature_specs() -> Vec<FeatureSpec> {
    FEATURES
        .iter()
        .map(|(name, kind, min, max, description)| FeatureSpec {
            name: name.to_string(),
            kind: *kind,
            min: *min,
            max: *max,
            description: description.to_string(),
        })
        .collect()
}

/// Feature names in column order.
pub fn feature_names() -> Vec<String> {
    FEATURES.iter().map(|f| f.0.to_string()).collect()
}

/// One synthetic applicant.
#[derive(Debug, Clone, PartialEq)]
pub struct Applicant {
    /// Sequential id (`app-<seed>-<n>`).
    pub applicant_id: String,
    /// Feature values in [`FEATURES`] order.
    pub features: Vec<f64>,
    /// Protected attributes (all three set).
    pub protected: ProtectedAttributes,
    /// Whether the applicant belongs to the [`DISADVANTAGED`] group.
    pub disadvantaged: bool,
    /// True probability of default (after the label shift).
    pub default_probability: f64,
    /// The sampled outcome.
    pub outcome: Outcome,
}

impl Applicant {
    /// The request to send for this applicant.
    pub fn request(&self) -> DecisionRequest {
        let mut features = Map::new();
        for ((name, kind, ..), &x) in FEATURES.iter().zip(&self.features) {
            let v = match kind {
                FeatureKind::Integer => Value::from(x as i64),
                // Finite by construction; from_f64 only refuses NaN/inf.
                FeatureKind::Number => serde_json::Number::from_f64(x)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
            };
            features.insert(name.to_string(), v);
        }
        DecisionRequest {
            applicant_id: self.applicant_id.clone(),
            features,
            protected: self.protected.clone(),
        }
    }
}

/// The known ground-truth default logit for a feature row (before any bias label shift).
pub fn ground_truth_logit(x: &[f64]) -> f64 {
    let income = x[0].max(1.0);
    let loan = x[1];
    -1.6 + 2.2 * (x[2] - 0.35) + 0.55 * x[4]
        - 0.012 * (x[3] - 60.0)
        - 0.7 * (income / 50_000.0).ln()
        + 0.9 * (loan / income - 0.3)
        - 0.05 * x[5]
        + 0.06 * (x[6] - 5.0)
        - if x[7] == 2.0 { 0.25 } else { 0.0 }
}

/// Deterministic applicant stream.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: ChaCha8Rng,
    seed: u64,
    bias: f64,
    n: u64,
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller; u1 in (0, 1].
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> f64 {
    // Knuth; lambda is small here.
    if lambda <= 0.0 {
        return 0.0;
    }
    let l = (-lambda).exp();
    let mut k = 0.0;
    let mut p = 1.0;
    loop {
        p *= rng.gen::<f64>();
        if p <= l || k >= 100.0 {
            return k;
        }
        k += 1.0;
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Generator {
    /// A generator; `bias` is clamped to `[0, 1]` (see the module docs for its effect).
    pub fn new(seed: u64, bias: f64) -> Self {
        Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            bias: if bias.is_finite() {
                bias.clamp(0.0, 1.0)
            } else {
                0.0
            },
            n: 0,
        }
    }

    /// The bias in use.
    pub fn bias(&self) -> f64 {
        self.bias
    }

    /// The next applicant.
    pub fn next_applicant(&mut self) -> Applicant {
        let r = &mut self.rng;
        let female = r.gen_bool(0.5);
        let race = match r.gen::<f64>() {
            u if u < 0.60 => "group_a",
            u if u < 0.85 => "group_b",
            _ => "group_c",
        };
        let age_years: f64 = 18.0 + 52.0 * r.gen::<f64>().powf(1.2);
        let age_band = match age_years {
            a if a < 26.0 => "18-25",
            a if a < 36.0 => "26-35",
            a if a < 51.0 => "36-50",
            a if a < 66.0 => "51-65",
            _ => "66+",
        };
        // The features grow with a latent career length drawn independently of every
        // protected attribute (age band included), so that at bias 0 no protected group
        // differs in its features or outcomes.
        let age: f64 = 18.0 + 52.0 * r.gen::<f64>().powf(1.2);
        let age_factor = ((age - 18.0) / 30.0).min(1.0);
        let income = (50_000f64.ln() + 0.2 * age_factor + 0.45 * normal(r)).exp();
        let income = round2(income.clamp(8_000.0, 2_000_000.0));
        let loan = round2((income * (0.05 + 0.5 * r.gen::<f64>())).clamp(500.0, 1_000_000.0));
        let dti = round2((0.3 + 0.12 * normal(r)).clamp(0.0, 1.5) * 1.0);
        let mut history = ((age - 18.0) * 12.0 * (0.3 + 0.7 * r.gen::<f64>())).round();
        let mut late = poisson(r, 0.6);
        let employment = round2(((age - 18.0) * 0.4 * r.gen::<f64>()).min(45.0));
        let lines = (1.0 + poisson(r, 4.0)).min(40.0);
        let home = match r.gen::<f64>() + 0.3 * age_factor {
            u if u < 0.55 => 0.0,
            u if u < 1.05 => 1.0,
            _ => 2.0,
        };
        let disadvantaged = female; // DISADVANTAGED = ("sex", "female")
        if disadvantaged && self.bias > 0.0 {
            late += poisson(r, 2.0 * self.bias);
            history = (history * (1.0 - 0.5 * self.bias)).round();
        }
        let late = late.min(30.0);
        let features = vec![income, loan, dti, history, late, employment, lines, home];
        let mut logit = ground_truth_logit(&features);
        if disadvantaged {
            logit += 1.5 * self.bias;
        }
        let p = 1.0 / (1.0 + (-logit).exp());
        let outcome = if r.gen::<f64>() < p {
            Outcome::Defaulted
        } else {
            Outcome::Repaid
        };
        let applicant_id = format!("app-{}-{}", self.seed, self.n);
        self.n += 1;
        Applicant {
            applicant_id,
            features,
            protected: ProtectedAttributes {
                sex: Some(if female { "female" } else { "male" }.to_string()),
                race: Some(race.to_string()),
                age_band: Some(age_band.to_string()),
            },
            disadvantaged,
            default_probability: p,
            outcome,
        }
    }

    /// The next applicant as a decision request (what `attest demo` posts).
    pub fn next_application(&mut self) -> (DecisionRequest, Applicant) {
        let a = self.next_applicant();
        (a.request(), a)
    }

    /// The outcome drawn for `applicant` (what `attest demo` reports later).
    pub fn outcome_for(&self, applicant: &Applicant) -> Outcome {
        applicant.outcome
    }

    /// `n` applicants as a dataset: row-major features and labels (1 = default).
    pub fn dataset(&mut self, n: usize) -> Dataset {
        let mut x = Vec::with_capacity(n * FEATURES.len());
        let mut y = Vec::with_capacity(n);
        let mut groups = Vec::with_capacity(n);
        for _ in 0..n {
            let a = self.next_applicant();
            x.extend_from_slice(&a.features);
            y.push(f64::from(a.outcome.label()));
            groups.push(a.disadvantaged);
        }
        Dataset {
            x,
            y,
            disadvantaged: groups,
            n_cols: FEATURES.len(),
        }
    }
}

/// A generated dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Row-major features.
    pub x: Vec<f64>,
    /// Labels: 1.0 = defaulted, 0.0 = repaid.
    pub y: Vec<f64>,
    /// Whether each row belongs to the disadvantaged group.
    pub disadvantaged: Vec<bool>,
    /// Columns per row.
    pub n_cols: usize,
}

impl Dataset {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.n_cols..(i + 1) * self.n_cols]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let a = Generator::new(7, 0.3).dataset(500);
        let b = Generator::new(7, 0.3).dataset(500);
        assert_eq!(a, b);
        let specs = feature_specs();
        for i in 0..a.len() {
            for (x, s) in a.row(i).iter().zip(&specs) {
                assert!(*x >= s.min && *x <= s.max, "{} = {x}", s.name);
                if s.kind == FeatureKind::Integer {
                    assert_eq!(x.fract(), 0.0);
                }
            }
        }
        let rate = a.y.iter().sum::<f64>() / a.len() as f64;
        assert!(rate > 0.05 && rate < 0.6, "default rate {rate}");
    }

    fn group_default_rates(bias: f64) -> (f64, f64) {
        let d = Generator::new(11, bias).dataset(20_000);
        let (mut s, mut n, mut s0, mut n0) = (0.0, 0.0, 0.0, 0.0);
        for i in 0..d.len() {
            if d.disadvantaged[i] {
                s += d.y[i];
                n += 1.0;
            } else {
                s0 += d.y[i];
                n0 += 1.0;
            }
        }
        (s / n, s0 / n0)
    }

    #[test]
    fn bias_creates_a_disparity_and_zero_bias_none() {
        let (g, o) = group_default_rates(0.0);
        assert!((g - o).abs() < 0.02, "no bias: {g} vs {o}");
        let (g, o) = group_default_rates(0.8);
        assert!(g - o > 0.15, "bias: {g} vs {o}");
    }
}
