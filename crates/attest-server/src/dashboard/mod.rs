//! The dashboard: server-rendered HTML pages with inline SVG charts, served by the same
//! process as the API. No script, no external resource; every page renders with zero
//! decisions.
//!
//! Pages:
//! - `/` overview: decision count and rate, approval rate (overall, and by sensitive group from
//!   the auditor), current disparities with intervals and thresholds, drift per feature (PSI,
//!   KS), consumer and projection lag, open incidents, the latest decisions;
//! - `/decisions/{id}`: the decision, its inputs, the SHAP waterfall from the base value to the
//!   model output (TreeSHAP, log-odds of default), model version, trace id, outcome;
//! - `/models`: global importance of the active model (mean |SHAP| over its reference sample,
//!   computed once per model version and cached);
//! - `/incidents`: incidents with their status;
//! - `/login`, `/logout`: browser sign-in with an API key when the server requires keys
//!   (see the `signin` module).
//!
//! Data: counts, rates, recent decisions and incidents come from [`feed::DashboardFeed`], an
//! in-memory read model of the log; per-group and drift figures come from the auditor through
//! the server's [`crate::audit::AuditHandle`]; decisions and explanations from the
//! [`attest_lending::LendingService`].
//!
//! Wiring: `let dash = Dashboard::start(store.clone());` then
//! `ApiBuilder::new(state.clone()).merge(dash.router(&state))`. The pages sit behind the
//! API-key gate with the `read` scope (so they are open on loopback unless auth is required;
//! otherwise a browser is sent to `/login` and signs in with a key).

pub mod audit_view;
pub mod feed;
pub mod importance;
pub mod render;
mod signin;
pub mod view;

use std::sync::Arc;

use attest_lending::{ExplainMethod, LendingError, ProtectedView};
use attest_store::DynStore;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use chrono::Utc;

use crate::app::AppState;
use crate::auth::Scope;

use self::feed::DashboardFeed;
use self::importance::ImportanceCache;
use self::view::{
    DecisionPageView, IncidentsPageView, ModelsPageView, OverviewView, WaterfallStep, WaterfallView,
};

/// The dashboard's own state: the log feed and the importance cache. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    feed: DashboardFeed,
    importance: ImportanceCache,
}

impl Dashboard {
    /// Starts the dashboard's log feed on `store` (inside a tokio runtime).
    pub fn start(store: DynStore) -> Self {
        Dashboard {
            inner: Arc::new(Inner {
                feed: DashboardFeed::start(store.clone()),
                importance: ImportanceCache::new(),
            }),
        }
    }

    /// The log feed (counts, rates, recent decisions, incidents).
    pub fn feed(&self) -> &DashboardFeed {
        &self.inner.feed
    }

    /// The global-importance cache.
    pub fn importance(&self) -> &ImportanceCache {
        &self.inner.importance
    }

    /// The page routes, gated with the `read` scope, and the browser sign-in form
    /// (`/login`, `/logout`, see [`signin`]); merge into the API with
    /// [`crate::app::ApiBuilder::merge`].
    pub fn router(&self, state: &AppState) -> Router<AppState> {
        let pages = Router::new()
            .route("/", get(overview))
            .route("/decisions/{id}", get(decision))
            .route("/models", get(models))
            .route("/incidents", get(incidents))
            .layer(Extension(self.clone()));
        state.protect(pages, Scope::Read).merge(signin::router())
    }

    /// Gathers the overview page's figures.
    pub async fn overview_view(&self, state: &AppState) -> OverviewView {
        let now = Utc::now();
        let snap = self.inner.feed.snapshot(now);
        let audit = audit_view::gather(state.audit()).await;
        let mut lags = vec![snap.lag.clone()];
        lags.extend(audit.lags);
        OverviewView {
            generated_at: now,
            active_model: Some(state.lending().active_model()),
            totals: snap.totals,
            rate: snap.rate,
            groups: audit.groups,
            disparities: audit.disparities,
            drift: audit.drift,
            lags,
            open_incidents: snap.incidents.iter().filter(|i| i.is_open()).count(),
            recent: snap.recent,
            audit: audit.status,
        }
    }

    /// Gathers a decision page; `Err` carries the lending error (e.g. not found).
    pub async fn decision_view(
        &self,
        state: &AppState,
        id: &str,
    ) -> Result<DecisionPageView, LendingError> {
        let lending = state.lending();
        let d = lending.decision(id).await?;
        let explanation = match lending.explanation(id, ExplainMethod::Tree).await {
            Ok(e) => Ok(WaterfallView {
                method: e.method.to_string(),
                output_space: output_space(&e.output),
                base_value: e.base_value,
                output: e.prediction,
                steps: e
                    .contributions
                    .iter()
                    .map(|c| WaterfallStep {
                        feature: c.feature.clone(),
                        value: Some(c.value),
                        contribution: c.contribution,
                    })
                    .collect(),
            }),
            Err(e) => Err(e.to_string()),
        };
        let schema_order = lending.feature_schema().names();
        let mut inputs: Vec<(String, String)> = Vec::with_capacity(d.features.len());
        for name in &schema_order {
            if let Some(v) = d.features.get(name) {
                inputs.push((name.clone(), value_text(v)));
            }
        }
        for (k, v) in &d.features {
            if !schema_order.contains(k) {
                inputs.push((k.clone(), value_text(v)));
            }
        }
        let protected = match &d.protected {
            ProtectedView::NotProvided => Vec::new(),
            ProtectedView::Erased => vec![("all".to_string(), "erased".to_string())],
            ProtectedView::Present(p) => [
                ("sex", &p.sex),
                ("race", &p.race),
                ("age_band", &p.age_band),
            ]
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.clone().unwrap_or_else(|| "not provided".into()),
                )
            })
            .collect(),
        };
        let r = &d.response;
        Ok(DecisionPageView {
            id: r.decision_id.clone(),
            applicant_id: d.applicant_id.clone(),
            decision: r.decision,
            probability: r.probability,
            threshold: r.threshold,
            model: r.model.clone(),
            trace_id: r.trace_id.clone(),
            decided_at: Some(d.submitted_at),
            inputs,
            protected,
            top: r
                .top_contributions
                .iter()
                .map(|c| (c.feature.clone(), c.value, c.contribution))
                .collect(),
            explanation,
            outcome: d.outcome.as_ref().map(|o| (o.outcome, Some(o.observed_at))),
        })
    }

    /// Gathers the models page.
    pub async fn models_view(&self, state: &AppState) -> ModelsPageView {
        let active = state.lending().active_model();
        let importance = self
            .inner
            .importance
            .get(state.lending(), &active)
            .await
            .map(|v| (*v).clone())
            .map_err(|e| e.to_string());
        ModelsPageView {
            active_model: Some(active),
            importance,
        }
    }

    /// Gathers the incidents page.
    pub fn incidents_view(&self) -> IncidentsPageView {
        IncidentsPageView {
            incidents: self.inner.feed.snapshot(Utc::now()).incidents,
        }
    }
}

fn output_space(o: &attest_ai::Output) -> String {
    match o {
        attest_ai::Output::Margin => "log-odds of default".into(),
        attest_ai::Output::Probability => "probability of default".into(),
    }
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An HTML response with the dashboard's security headers.
/// The pages' content security policy: no script, no external resource, no form.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// The sign-in page's: the same, with forms posting to this origin.
const CSP_FORM: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn html(status: StatusCode, body: String) -> Response {
    html_with(status, body, CSP)
}

/// An HTML page holding a form that posts to this origin.
fn form_html(status: StatusCode, body: String) -> Response {
    html_with(status, body, CSP_FORM)
}

fn html_with(status: StatusCode, body: String, csp: &'static str) -> Response {
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

async fn overview(State(state): State<AppState>, Extension(d): Extension<Dashboard>) -> Response {
    let v = d.overview_view(&state).await;
    html(StatusCode::OK, render::overview(&v))
}

async fn decision(
    State(state): State<AppState>,
    Extension(d): Extension<Dashboard>,
    Path(id): Path<String>,
) -> Response {
    let now = Utc::now();
    match d.decision_view(&state, &id).await {
        Ok(v) => html(StatusCode::OK, render::decision(&v, &now)),
        Err(LendingError::NotFound(_)) => html(
            StatusCode::NOT_FOUND,
            render::error_page(
                "Decision not found",
                &format!("No decision with id {id}."),
                &now,
            ),
        ),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            tracing::warn!(error = %e, "dashboard: decision page failed");
            html(
                status,
                render::error_page("Decision unavailable", &e.to_string(), &now),
            )
        }
    }
}

async fn models(State(state): State<AppState>, Extension(d): Extension<Dashboard>) -> Response {
    let v = d.models_view(&state).await;
    html(StatusCode::OK, render::models(&v, &Utc::now()))
}

async fn incidents(Extension(d): Extension<Dashboard>) -> Response {
    let v = d.incidents_view();
    html(StatusCode::OK, render::incidents(&v, &Utc::now()))
}
