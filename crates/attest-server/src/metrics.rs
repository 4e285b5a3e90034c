//! Prometheus metrics of the HTTP layer and the decisions it serves.
//!
//! All metrics live in one shared [`prometheus_client::registry::Registry`] (see
//! [`crate::AppState::registry`]); other components (the auditor, projections) register their
//! own metrics in the same registry and `/metrics` exposes them all.
//!
//! - `attest_http_requests_total{method,route,status}`: requests by matched route template
//!   (`unmatched` for unknown paths);
//! - `attest_http_request_duration_seconds{method,route,status}`: latency histogram;
//! - `attest_decisions_total{model,model_version,decision}`: decisions returned by
//!   `POST /v1/decisions` (idempotent replays included).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Labels of the HTTP metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HttpLabels {
    /// HTTP method.
    pub method: String,
    /// Matched route template, e.g. `/v1/decisions/{id}`.
    pub route: String,
    /// Response status code.
    pub status: u16,
}

/// Labels of the decision counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Model id.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// `approve` or `decline`.
    pub decision: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~8 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 15,
    ))
}

/// The server's metric families.
#[derive(Clone)]
pub struct HttpMetrics {
    /// Requests by method, route and status.
    pub requests: Family<HttpLabels, Counter>,
    /// Latency by method, route and status.
    pub duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    /// Decisions by model and outcome.
    pub decisions: Family<DecisionLabels, Counter>,
}

impl HttpMetrics {
    /// Creates the families and registers them (prefix `attest_`) in `registry`.
    pub fn register(registry: &Arc<Mutex<Registry>>) -> HttpMetrics {
        let m = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            decisions: Family::default(),
        };
        // A poisoned registry only means another thread panicked while registering; the
        // registry itself is still usable.
        let mut reg = registry.lock().unwrap_or_else(|p| p.into_inner());
        reg.register(
            "attest_http_requests",
            "HTTP requests by method, route and status",
            m.requests.clone(),
        );
        reg.register_with_unit(
            "attest_http_request_duration",
            "HTTP request latency by method, route and status",
            Unit::Seconds,
            m.duration.clone(),
        );
        reg.register(
            "attest_decisions",
            "Decisions returned by POST /v1/decisions, by model and decision",
            m.decisions.clone(),
        );
        m
    }
}

/// Middleware recording request count and latency by matched route.
pub async fn track(State(metrics): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let res = next.run(req).await;
    let labels = HttpLabels {
        method,
        route,
        status: res.status().as_u16(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .duration
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    res
}

/// Renders the registry in the OpenMetrics text format.
pub fn render(registry: &Mutex<Registry>) -> Result<String, std::fmt::Error> {
    let reg = registry.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)?;
    Ok(out)
}
