//! The API's handlers and their routes.

use std::str::FromStr;

use attest_lending::{
    DecideOptions, DecisionRequest, ExplainMethod, FieldError, FieldErrorCode, LendingError,
    Outcome,
};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::audit::AuditError;
use crate::auth::Scope;
use crate::error::ApiError;
use crate::extract::{json_type, JsonObject};
use crate::metrics::DecisionLabels;
use crate::trace::TraceContext;

/// The API routes (without fallbacks and shared layers; see [`crate::ApiBuilder`]).
pub fn api(state: &AppState) -> Router<AppState> {
    let decide = Router::new()
        .route("/v1/decisions", post(decide))
        .route("/v1/decisions/{id}/outcome", post(record_outcome));
    let read = Router::new()
        .route("/v1/decisions/{id}", get(decision))
        .route("/v1/decisions/{id}/explanation", get(explanation))
        .route("/v1/audit/fairness", get(fairness))
        .route("/v1/audit/drift", get(drift));
    let admin = Router::new().route(
        "/v1/applicants/{applicant_id}/protected",
        delete(erase_subject),
    );
    let public = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi));
    Router::new()
        .merge(state.protect(decide, Scope::Decide))
        .merge(state.protect(read, Scope::Read))
        .merge(state.protect(admin, Scope::Admin))
        .merge(public)
}

/// Decision ids are UUIDs; anything else cannot name a decision (answered 404 without asking
/// the store, so odd path segments never reach stream-id parsing).
fn check_decision_id(id: &str) -> Result<(), ApiError> {
    let plausible = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plausible {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no decision {id:?}")))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be visible ASCII",
                )
            })?;
            let max = attest_lending::service::MAX_IDEMPOTENCY_KEY_LEN;
            if s.is_empty() || s.len() > max || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                return Err(ApiError::bad_request(
                    "invalid_idempotency_key",
                    format!(
                        "Idempotency-Key must be 1 to {max} visible ASCII characters (no spaces)"
                    ),
                ));
            }
            Ok(Some(s.to_string()))
        }
    }
}

async fn decide(
    State(state): State<AppState>,
    Extension(trace): Extension<TraceContext>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let body = Value::Object(body);
    let lending = state.lending();
    // Collect every problem at once: the envelope, then each feature against the schema.
    let mut errors: Vec<FieldError> = Vec::new();
    let request = match DecisionRequest::from_value(&body) {
        Ok(r) => Some(r),
        Err(LendingError::Validation(f)) => {
            errors.extend(f);
            None
        }
        Err(other) => return Err(other.into()),
    };
    match &request {
        Some(r) => {
            errors.extend(r.check_envelope());
            if let Err(f) = lending.feature_schema().validate(&r.features) {
                errors.extend(f);
            }
        }
        None => {
            if let Some(Value::Object(features)) = body.get("features") {
                if let Err(f) = lending.feature_schema().validate(features) {
                    errors.extend(f);
                }
            }
        }
    }
    let request = match request {
        Some(r) if errors.is_empty() => r,
        _ => return Err(ApiError::validation(errors)),
    };
    let response = lending
        .decide(
            request,
            DecideOptions {
                idempotency_key,
                traceparent: Some(trace.traceparent()),
            },
        )
        .await?;
    state
        .metrics()
        .decisions
        .get_or_create(&DecisionLabels {
            model: response.model.id.clone(),
            model_version: response.model.version.to_string(),
            decision: match response.decision {
                attest_lending::Decision::Approve => "approve".into(),
                attest_lending::Decision::Decline => "decline".into(),
            },
        })
        .inc();
    let location = format!("/v1/decisions/{}", response.decision_id);
    let mut res = (StatusCode::CREATED, Json(response)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

async fn decision(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_decision_id(&id)?;
    let view = state.lending().decision(&id).await?;
    Ok(Json(view).into_response())
}

async fn explanation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) =
        query.map_err(|e| ApiError::bad_request("bad_query", format!("bad query string: {e}")))?;
    let method = match params.iter().rev().find(|(k, _)| k == "method") {
        None => ExplainMethod::Tree,
        Some((_, m)) => ExplainMethod::from_str(m)?,
    };
    check_decision_id(&id)?;
    let view = state.lending().explanation(&id, method).await?;
    Ok(Json(view).into_response())
}

async fn record_outcome(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    for key in body.keys() {
        if key != "outcome" {
            errors.push(FieldError::new(
                key.clone(),
                FieldErrorCode::UnknownField,
                format!("unknown field {key:?} (expected outcome)"),
            ));
        }
    }
    let outcome = match body.get("outcome") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(
                "outcome",
                FieldErrorCode::Missing,
                "outcome is required",
            ));
            None
        }
        Some(Value::String(s)) => match s.as_str() {
            "repaid" => Some(Outcome::Repaid),
            "defaulted" => Some(Outcome::Defaulted),
            other => {
                errors.push(FieldError::new(
                    "outcome",
                    FieldErrorCode::Invalid,
                    format!("outcome must be repaid or defaulted, got {other:?}"),
                ));
                None
            }
        },
        Some(other) => {
            errors.push(FieldError::new(
                "outcome",
                FieldErrorCode::WrongType,
                format!("outcome must be a string, got {}", json_type(other)),
            ));
            None
        }
    };
    let outcome = match outcome {
        Some(o) if errors.is_empty() => o,
        _ => return Err(ApiError::validation(errors)),
    };
    check_decision_id(&id)?;
    let view = state.lending().record_outcome(&id, outcome).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn erase_subject(
    State(state): State<AppState>,
    Path(applicant_id): Path<String>,
) -> Result<Response, ApiError> {
    if let Err(e) = attest_lending::service::check_applicant_id(&applicant_id) {
        return Err(ApiError::not_found(format!(
            "no applicant {applicant_id:?}: {}",
            e.message
        )));
    }
    state.lending().erase_subject(&applicant_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn audit_response(r: Result<Value, AuditError>) -> Result<Response, ApiError> {
    match r {
        Ok(v) => Ok(Json(v).into_response()),
        Err(AuditError::Unavailable(m)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            m,
        )),
        Err(e @ AuditError::Failed(_)) => Err(ApiError::internal(e)),
    }
}

async fn fairness(State(state): State<AppState>) -> Result<Response, ApiError> {
    audit_response(state.audit().fairness().await)
}

async fn drift(State(state): State<AppState>) -> Result<Response, ApiError> {
    audit_response(state.audit().drift().await)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let head = state.store().head_position().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("event store unreachable: {e}"),
        )
    })?;
    let model = state.lending().active_model();
    Ok(Json(json!({
        "status": "ready",
        "store_head_position": head,
        "model": model,
    })))
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = crate::metrics::render(state.registry()).map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn openapi(State(state): State<AppState>) -> Json<Value> {
    let required = state.policy() == crate::auth::AuthPolicy::Required;
    Json(crate::openapi::document(
        &state.lending().feature_schema(),
        required,
    ))
}
