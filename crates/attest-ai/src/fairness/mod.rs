//! Fairness metrics.
