//! Drift metrics.
