//! The OpenAPI 3.0 document of the API, built from the active model's feature schema (the
//! request body of `POST /v1/decisions` lists every feature with its type and range).

use attest_lending::{FeatureKind, FeatureSchema};
use serde_json::{json, Map, Value};

/// Every route of the API as (method, path), in document order.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/decisions"),
    ("get", "/v1/decisions/{id}"),
    ("get", "/v1/decisions/{id}/explanation"),
    ("post", "/v1/decisions/{id}/outcome"),
    ("delete", "/v1/applicants/{applicant_id}/protected"),
    ("get", "/v1/audit/fairness"),
    ("get", "/v1/audit/drift"),
    ("get", "/metrics"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
];

fn err(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn ok(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

fn with_errors(mut responses: Map<String, Value>, codes: &[u16]) -> Value {
    for code in codes {
        let d = match code {
            400 => "Malformed request (bad JSON, bad header or query)",
            401 => "Missing or invalid API key",
            403 => "The API key lacks the required scope",
            404 => "Not found",
            409 => {
                "Conflict (outcome already recorded, or idempotency key reused with another body)"
            }
            413 => "Request body too large",
            415 => "Content-Type is not application/json",
            422 => "Validation failed; `fields` lists each problem",
            500 => "Internal error",
            503 => "A dependency is unavailable",
            _ => "Error",
        };
        responses.insert(code.to_string(), err(d));
    }
    Value::Object(responses)
}

fn responses(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn id_param() -> Value {
    json!({
        "name": "id", "in": "path", "required": true,
        "description": "Decision id (UUID)",
        "schema": { "type": "string" }
    })
}

fn feature_schema(schema: &FeatureSchema) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in &schema.features {
        let ty = match f.kind {
            FeatureKind::Integer => "integer",
            FeatureKind::Number => "number",
        };
        let mut p = Map::new();
        p.insert("type".into(), json!(ty));
        if f.min.is_finite() {
            p.insert("minimum".into(), json!(f.min));
        }
        if f.max.is_finite() {
            p.insert("maximum".into(), json!(f.max));
        }
        if !f.description.is_empty() {
            p.insert("description".into(), json!(f.description));
        }
        props.insert(f.name.clone(), Value::Object(p));
        required.push(json!(f.name));
    }
    let mut s = json!({
        "type": "object",
        "description": format!("Inputs of model {}, every one required", schema.model),
        "properties": props,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        s["required"] = Value::Array(required);
    }
    s
}

/// The OpenAPI 3.0.3 document for a model's feature schema. With `auth_required` the `/v1`
/// operations declare the bearer API key as mandatory; without it (a loopback server without
/// `--require-auth`) as optional, matching what the server enforces.
pub fn document(schema: &FeatureSchema, auth_required: bool) -> Value {
    let string_attr =
        json!({ "type": "string", "minLength": 1, "maxLength": 64, "nullable": true });
    let contribution = json!({
        "type": "object",
        "required": ["feature", "value", "contribution", "direction"],
        "properties": {
            "feature": { "type": "string" },
            "value": { "type": "number" },
            "contribution": { "type": "number", "description": "SHAP value in log-odds of default (tree, kernel) or LIME weight on the probability of default (lime)" },
            "direction": { "type": "string", "enum": ["increases", "decreases"], "description": "Whether the feature pushed the probability of default up or down" }
        }
    });
    let outcome_view_props = json!({
        "decision_id": { "type": "string" },
        "outcome": { "type": "string", "enum": ["repaid", "defaulted"] },
        "observed_at": { "type": "string", "format": "date-time" }
    });
    let decision_response_props = json!({
        "decision_id": { "type": "string" },
        "decision": { "type": "string", "enum": ["approve", "decline"] },
        "probability": { "type": "number", "minimum": 0, "maximum": 1, "description": "Predicted probability of default" },
        "threshold": { "type": "number", "description": "Decline when probability >= threshold" },
        "model": { "$ref": "#/components/schemas/ModelRef" },
        "top_contributions": { "type": "array", "items": { "$ref": "#/components/schemas/Contribution" } },
        "trace_id": { "type": "string", "pattern": "^[0-9a-f]{32}$" }
    });
    let decision_response_required = json!([
        "decision_id",
        "decision",
        "probability",
        "threshold",
        "model",
        "top_contributions",
        "trace_id"
    ]);
    let mut view_props = decision_response_props
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (k, v) in json!({
        "applicant_id": { "type": "string" },
        "features": { "type": "object", "additionalProperties": true },
        "protected": {
            "type": "object",
            "required": ["status"],
            "description": "Protected attributes: decrypted, erased (crypto-shredded) or not provided",
            "properties": {
                "status": { "type": "string", "enum": ["not_provided", "erased", "present"] },
                "sex": { "type": "string" },
                "race": { "type": "string" },
                "age_band": { "type": "string" }
            }
        },
        "score": { "type": "number", "description": "Raw score (log-odds of default)" },
        "submitted_at": { "type": "string", "format": "date-time" },
        "outcome": {
            "type": "object", "nullable": true,
            "required": ["decision_id", "outcome", "observed_at"],
            "properties": outcome_view_props.clone()
        }
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
    {
        view_props.insert(k, v);
    }
    let mut view_required = decision_response_required
        .as_array()
        .cloned()
        .unwrap_or_default();
    for k in [
        "applicant_id",
        "features",
        "protected",
        "score",
        "submitted_at",
        "outcome",
    ] {
        view_required.push(json!(k));
    }

    let bearer = if auth_required {
        json!([{ "apiKey": [] }])
    } else {
        json!([{ "apiKey": [] }, {}])
    };
    let public = json!([]);

    let decide_op = json!({
        "operationId": "createDecision",
        "summary": "Decide a loan application",
        "description": "Validates the application against the active model's schema, scores it, explains it (TreeSHAP top-3) and records the decision as events. With an Idempotency-Key, a retry returns the same response and records nothing new; the same key with a different body is 409.",
        "tags": ["decisions"],
        "security": bearer,
        "parameters": [
            { "name": "Idempotency-Key", "in": "header", "required": false,
              "schema": { "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$" } },
            { "name": "traceparent", "in": "header", "required": false,
              "description": "W3C Trace Context; a new trace is started when absent or invalid",
              "schema": { "type": "string" } }
        ],
        "requestBody": {
            "required": true,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/DecisionRequest" } } }
        },
        "responses": with_errors(responses(&[("201", ok("The decision", "DecisionResponse"))]),
            &[400, 401, 403, 409, 413, 415, 422, 500, 503]),
    });
    let get_op = json!({
        "operationId": "getDecision",
        "summary": "A recorded decision",
        "tags": ["decisions"],
        "security": bearer,
        "parameters": [id_param()],
        "responses": with_errors(responses(&[("200", ok("The decision", "DecisionView"))]),
            &[401, 403, 404, 500, 503]),
    });
    let explain_op = json!({
        "operationId": "explainDecision",
        "summary": "Explain a recorded decision with the model version that made it",
        "tags": ["decisions"],
        "security": bearer,
        "parameters": [id_param(), {
            "name": "method", "in": "query", "required": false,
            "schema": { "type": "string", "enum": ["tree", "kernel", "lime"], "default": "tree" }
        }],
        "responses": with_errors(responses(&[("200", ok("The explanation", "Explanation"))]),
            &[400, 401, 403, 404, 422, 500, 503]),
    });
    let outcome_op = json!({
        "operationId": "recordOutcome",
        "summary": "Record the observed outcome of a decision (once)",
        "tags": ["decisions"],
        "security": bearer,
        "parameters": [id_param()],
        "requestBody": {
            "required": true,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/OutcomeRequest" } } }
        },
        "responses": with_errors(responses(&[("201", ok("The recorded outcome", "OutcomeView"))]),
            &[400, 401, 403, 404, 409, 413, 415, 422, 500, 503]),
    });
    let erase_op = json!({
        "operationId": "eraseSubject",
        "summary": "Erase an applicant's protected attributes (crypto-shredding: the subject's key is deleted)",
        "tags": ["applicants"],
        "security": bearer,
        "parameters": [{
            "name": "applicant_id", "in": "path", "required": true,
            "schema": { "type": "string" }
        }],
        "responses": with_errors(responses(&[("204", json!({ "description": "Erased" }))]),
            &[401, 403, 404, 500, 503]),
    });
    let audit_op = |id: &str, summary: &str| {
        json!({
            "operationId": id,
            "summary": summary,
            "tags": ["audit"],
            "security": bearer,
            "responses": with_errors(responses(&[("200", ok("Current audit state", "AuditState"))]),
                &[401, 403, 500, 503]),
        })
    };
    let plain = |id: &str, summary: &str, schema: &str, extra: &[u16]| {
        json!({
            "operationId": id,
            "summary": summary,
            "tags": ["operations"],
            "security": public,
            "responses": with_errors(responses(&[("200", ok("OK", schema))]), extra),
        })
    };
    let metrics_op = json!({
        "operationId": "metrics",
        "summary": "Prometheus metrics (OpenMetrics text)",
        "tags": ["operations"],
        "security": public,
        "responses": {
            "200": { "description": "Metrics",
                     "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } },
            "500": err("Internal error")
        }
    });

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Attest lending decision API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Explained, recorded and audited lending decisions. Active model: {}. Errors are \
                 `{{\"error\": {{\"code\", \"message\", \"fields\"}}}}`. API keys \
                 (`Authorization: Bearer <key>`) carry scopes decide, read, admin; they are \
                 required when the server listens on a non-loopback address.",
                schema.model
            ),
        },
        "security": bearer,
        "paths": {
            "/v1/decisions": { "post": decide_op },
            "/v1/decisions/{id}": { "get": get_op },
            "/v1/decisions/{id}/explanation": { "get": explain_op },
            "/v1/decisions/{id}/outcome": { "post": outcome_op },
            "/v1/applicants/{applicant_id}/protected": { "delete": erase_op },
            "/v1/audit/fairness": { "get": audit_op("auditFairness", "Fairness metrics per model and group") },
            "/v1/audit/drift": { "get": audit_op("auditDrift", "Prediction and feature drift per model") },
            "/metrics": { "get": metrics_op },
            "/healthz": { "get": plain("healthz", "The process is up", "Health", &[]) },
            "/readyz": { "get": plain("readyz", "The store is reachable and a model is loaded", "Ready", &[503]) },
            "/openapi.json": { "get": plain("openapi", "This document", "OpenApi", &[]) },
        },
        "components": {
            "securitySchemes": {
                "apiKey": { "type": "http", "scheme": "bearer", "description": "atk_<id>_<secret> from `attest keys create`" }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message", "fields"],
                            "properties": {
                                "code": { "type": "string" },
                                "message": { "type": "string" },
                                "fields": { "type": "array", "items": { "$ref": "#/components/schemas/FieldError" } }
                            }
                        }
                    }
                },
                "FieldError": {
                    "type": "object",
                    "required": ["field", "code", "message"],
                    "properties": {
                        "field": { "type": "string", "description": "Dotted path, e.g. features.annual_income" },
                        "code": { "type": "string", "enum": ["missing", "wrong_type", "out_of_range", "unknown_field", "invalid"] },
                        "message": { "type": "string" }
                    }
                },
                "ModelRef": {
                    "type": "object",
                    "required": ["id", "version"],
                    "properties": { "id": { "type": "string" }, "version": { "type": "integer", "minimum": 0 } }
                },
                "Features": feature_schema(schema),
                "ProtectedAttributes": {
                    "type": "object",
                    "nullable": true,
                    "description": "Sensitive attributes, used for auditing only and never as model input; stored encrypted per applicant",
                    "additionalProperties": false,
                    "properties": { "sex": string_attr, "race": string_attr, "age_band": string_attr }
                },
                "DecisionRequest": {
                    "type": "object",
                    "required": ["applicant_id", "features"],
                    "additionalProperties": false,
                    "properties": {
                        "applicant_id": { "type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9_.-]+$" },
                        "features": { "$ref": "#/components/schemas/Features" },
                        "protected": { "$ref": "#/components/schemas/ProtectedAttributes" }
                    }
                },
                "Contribution": contribution,
                "DecisionResponse": {
                    "type": "object",
                    "required": decision_response_required,
                    "properties": decision_response_props
                },
                "DecisionView": {
                    "type": "object",
                    "required": view_required,
                    "properties": view_props
                },
                "Explanation": {
                    "type": "object",
                    "required": ["decision_id", "method", "model", "output", "base_value", "prediction", "additive", "contributions"],
                    "properties": {
                        "decision_id": { "type": "string" },
                        "method": { "type": "string", "enum": ["tree", "kernel", "lime"] },
                        "model": { "$ref": "#/components/schemas/ModelRef" },
                        "output": { "type": "string", "enum": ["margin", "probability"] },
                        "base_value": { "type": "number" },
                        "prediction": { "type": "number" },
                        "additive": { "type": "boolean" },
                        "contributions": { "type": "array", "items": { "$ref": "#/components/schemas/Contribution" } },
                        "score": { "type": "number", "description": "LIME surrogate R² (lime only)" }
                    }
                },
                "OutcomeRequest": {
                    "type": "object",
                    "required": ["outcome"],
                    "additionalProperties": false,
                    "properties": { "outcome": { "type": "string", "enum": ["repaid", "defaulted"] } }
                },
                "OutcomeView": {
                    "type": "object",
                    "required": ["decision_id", "outcome", "observed_at"],
                    "properties": outcome_view_props
                },
                "AuditState": { "type": "object", "additionalProperties": true },
                "Health": {
                    "type": "object", "required": ["status"],
                    "properties": { "status": { "type": "string" } }
                },
                "Ready": {
                    "type": "object", "required": ["status", "store_head_position", "model"],
                    "properties": {
                        "status": { "type": "string" },
                        "store_head_position": { "type": "integer", "minimum": 0 },
                        "model": { "$ref": "#/components/schemas/ModelRef" }
                    }
                },
                "OpenApi": { "type": "object", "required": ["openapi", "paths"], "additionalProperties": true }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest_lending::{FeatureSpec, ModelRef};

    #[test]
    fn document_lists_routes_and_feature_ranges() {
        let schema = FeatureSchema {
            model: ModelRef {
                id: "credit".into(),
                version: 2,
            },
            features: vec![FeatureSpec {
                name: "income".into(),
                kind: FeatureKind::Number,
                min: 0.0,
                max: 1e6,
                description: "yearly income".into(),
            }],
        };
        let doc = document(&schema, true);
        for (method, path) in ROUTES {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
        let op = &doc["paths"]["/v1/decisions"]["post"];
        assert_eq!(op["security"], json!([{ "apiKey": [] }]));
        let open = document(&schema, false);
        let op = &open["paths"]["/v1/decisions"]["post"];
        assert_eq!(op["security"], json!([{ "apiKey": [] }, {}]));
        assert_eq!(open["paths"]["/healthz"]["get"]["security"], json!([]));
        let f = &doc["components"]["schemas"]["Features"];
        assert_eq!(f["properties"]["income"]["maximum"], json!(1e6));
        assert_eq!(f["required"], json!(["income"]));
        assert_eq!(f["additionalProperties"], json!(false));
    }
}
