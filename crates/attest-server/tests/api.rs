//! The HTTP API end to end: a real server on an ephemeral port over a real SQLite store.

mod common;

use attest_core::StreamId;
use attest_store::{Direction, StreamFrom};
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::start;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn json_of(res: reqwest::Response) -> Value {
    res.json::<Value>().await.unwrap()
}

fn field_codes(body: &Value) -> Vec<(String, String)> {
    body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_string(),
                f["code"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn decide_read_explain_and_record_outcome() {
    let s = start().await;
    let res = s
        .client
        .post(s.url("/v1/decisions"))
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(&s.valid_request("applicant-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let tp = res.headers()["traceparent"].to_str().unwrap().to_string();
    assert!(tp.starts_with(&format!("00-{TRACE_ID}-")), "{tp}");
    let decided = json_of(res).await;
    let id = decided["decision_id"].as_str().unwrap().to_string();
    assert_eq!(decided["trace_id"], json!(TRACE_ID));
    assert_eq!(decided["top_contributions"].as_array().unwrap().len(), 3);
    let p = decided["probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    let expected = if p >= decided["threshold"].as_f64().unwrap() {
        "decline"
    } else {
        "approve"
    };
    assert_eq!(decided["decision"], json!(expected));
    for c in decided["top_contributions"].as_array().unwrap() {
        let dir = if c["contribution"].as_f64().unwrap() >= 0.0 {
            "increases"
        } else {
            "decreases"
        };
        assert_eq!(c["direction"], json!(dir));
    }

    // The trace context reached the event metadata.
    let stream = StreamId::new(format!("loanapplication-{id}")).unwrap();
    let events = s
        .store
        .read_stream(&stream, StreamFrom::Start, Direction::Forward, 100)
        .await
        .unwrap();
    assert!(!events.is_empty());
    for e in &events {
        let tp = e.metadata.traceparent.as_deref().unwrap_or_default();
        assert!(tp.contains(TRACE_ID), "{tp:?} in {}", e.event_type);
    }

    let res = s
        .client
        .get(s.url(&format!("/v1/decisions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let view = json_of(res).await;
    assert_eq!(view["decision_id"], json!(id));
    assert_eq!(view["applicant_id"], json!("applicant-1"));
    assert_eq!(view["probability"], decided["probability"]);
    assert_eq!(view["protected"]["status"], json!("present"));
    assert_eq!(view["protected"]["sex"], json!("female"));
    assert_eq!(view["outcome"], Value::Null);

    for method in ["tree", "kernel", "lime"] {
        let res = s
            .client
            .get(s.url(&format!("/v1/decisions/{id}/explanation?method={method}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{method}");
        let ex = json_of(res).await;
        assert_eq!(ex["method"], json!(method));
        let n = s.state.lending().feature_schema().features.len();
        assert_eq!(ex["contributions"].as_array().unwrap().len(), n, "{method}");
    }
    // TreeSHAP is additive in log-odds.
    let ex = json_of(
        s.client
            .get(s.url(&format!("/v1/decisions/{id}/explanation")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ex["method"], json!("tree"));
    let sum: f64 = ex["contributions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["contribution"].as_f64().unwrap())
        .sum();
    let lhs = ex["base_value"].as_f64().unwrap() + sum;
    assert!((lhs - ex["prediction"].as_f64().unwrap()).abs() < 1e-6);

    let res = s
        .client
        .get(s.url(&format!("/v1/decisions/{id}/explanation?method=magic")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_codes(&json_of(res).await),
        vec![("method".to_string(), "invalid".to_string())]
    );

    let res = s
        .client
        .post(s.url(&format!("/v1/decisions/{id}/outcome")))
        .json(&json!({ "outcome": "repaid" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let o = json_of(res).await;
    assert_eq!(o["outcome"], json!("repaid"));
    assert_eq!(o["decision_id"], json!(id));

    let res = s
        .client
        .post(s.url(&format!("/v1/decisions/{id}/outcome")))
        .json(&json!({ "outcome": "defaulted" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(json_of(res).await["error"]["code"], json!("conflict"));

    let view = json_of(
        s.client
            .get(s.url(&format!("/v1/decisions/{id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(view["outcome"]["outcome"], json!("repaid"));

    // Unknown decisions are 404 for every read and write.
    let missing = "00000000-0000-4000-8000-000000000000";
    for res in [
        s.client
            .get(s.url(&format!("/v1/decisions/{missing}")))
            .send()
            .await
            .unwrap(),
        s.client
            .get(s.url(&format!("/v1/decisions/{missing}/explanation")))
            .send()
            .await
            .unwrap(),
        s.client
            .post(s.url(&format!("/v1/decisions/{missing}/outcome")))
            .json(&json!({ "outcome": "repaid" }))
            .send()
            .await
            .unwrap(),
        s.client
            .get(s.url("/v1/decisions/not%20an%20id"))
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(json_of(res).await["error"]["code"], json!("not_found"));
    }
    s.stop().await;
}

#[tokio::test]
async fn a_request_without_traceparent_gets_a_new_trace() {
    let s = start().await;
    let res = s
        .client
        .post(s.url("/v1/decisions"))
        .header("traceparent", "not-a-traceparent")
        .json(&s.valid_request("applicant-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let tp = res.headers()["traceparent"].to_str().unwrap().to_string();
    let body = json_of(res).await;
    let trace_id = body["trace_id"].as_str().unwrap();
    assert_eq!(trace_id.len(), 32);
    assert_eq!(&tp[3..35], trace_id);
    // Every response carries one, errors too.
    let res = s.client.get(s.url("/nope")).send().await.unwrap();
    assert!(res.headers().contains_key("traceparent"));
    s.stop().await;
}

#[tokio::test]
async fn field_level_validation_errors() {
    let s = start().await;
    let schema = s.state.lending().feature_schema();
    let first = &schema.features[0];
    let second = &schema.features[1];
    let mut features = s.valid_features();
    features.remove(&first.name);
    features.insert(second.name.clone(), json!("lots"));
    features.insert("shoe_size".into(), json!(44));
    if schema.features.len() > 2 && schema.features[2].max.is_finite() {
        let third = &schema.features[2];
        features.insert(third.name.clone(), json!(third.max + 1e6));
    }
    let body = json!({
        "applicant_id": 42,
        "features": features,
        "protected": { "sex": 1, "religion": "x" },
        "extra": true
    });
    let res = s
        .client
        .post(s.url("/v1/decisions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json_of(res).await;
    assert_eq!(body["error"]["code"], json!("validation_failed"));
    let codes = field_codes(&body);
    let has = |f: &str, c: &str| codes.contains(&(f.to_string(), c.to_string()));
    assert!(has("applicant_id", "wrong_type"), "{codes:?}");
    assert!(has("extra", "unknown_field"), "{codes:?}");
    assert!(has("protected.sex", "wrong_type"), "{codes:?}");
    assert!(has("protected.religion", "unknown_field"), "{codes:?}");
    assert!(
        has(&format!("features.{}", first.name), "missing"),
        "{codes:?}"
    );
    assert!(
        has(&format!("features.{}", second.name), "wrong_type"),
        "{codes:?}"
    );
    assert!(has("features.shoe_size", "unknown_field"), "{codes:?}");
    if schema.features.len() > 2 && schema.features[2].max.is_finite() {
        let f = format!("features.{}", schema.features[2].name);
        assert!(has(&f, "out_of_range"), "{codes:?}");
    }

    // Missing envelope fields; a non-object body.
    let res = s
        .client
        .post(s.url("/v1/decisions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let codes = field_codes(&json_of(res).await);
    assert!(codes.contains(&("applicant_id".into(), "missing".into())));
    assert!(codes.contains(&("features".into(), "missing".into())));
    let res = s
        .client
        .post(s.url("/v1/decisions"))
        .json(&json!([1, 2]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // An applicant id with bad characters.
    let mut req = s.valid_request("x");
    req["applicant_id"] = json!("no spaces allowed");
    let res = s
        .client
        .post(s.url("/v1/decisions"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_codes(&json_of(res).await),
        vec![("applicant_id".to_string(), "invalid".to_string())]
    );
    // Outcome bodies.
    for (body, field, code) in [
        (json!({}), "outcome", "missing"),
        (json!({ "outcome": 1 }), "outcome", "wrong_type"),
        (json!({ "outcome": "maybe" }), "outcome", "invalid"),
        (
            json!({ "outcome": "repaid", "when": "now" }),
            "when",
            "unknown_field",
        ),
    ] {
        let res = s
            .client
            .post(s.url("/v1/decisions/00000000-0000-4000-8000-000000000000/outcome"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let codes = field_codes(&json_of(res).await);
        assert!(codes.contains(&(field.into(), code.into())), "{codes:?}");
    }
    // Nothing was recorded by any of these.
    let stats = s.store.stats().await.unwrap();
    let before = stats.events;
    let res = s
        .client
        .post(s.url("/v1/decisions"))
        .json(&json!({ "applicant_id": "a" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s.store.stats().await.unwrap().events, before);
    s.stop().await;
}

#[tokio::test]
async fn malformed_oversize_and_wrong_content_type() {
    let s = start().await;
    let post = |body: Vec<u8>, ct: Option<&str>| {
        let mut r = s.client.post(s.url("/v1/decisions")).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    let res = post(b"{\"applicant_id\": ".to_vec(), Some("application/json"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(res).await["error"]["code"], json!("malformed_json"));

    let res = post(Vec::new(), Some("application/json")).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let mut big = b"{\"applicant_id\": \"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 70 * 1024));
    big.extend(b"\"}");
    let res = post(big, Some("application/json")).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        json_of(res).await["error"]["code"],
        json!("payload_too_large")
    );

    let body = serde_json::to_vec(&s.valid_request("a")).unwrap();
    let res = post(body.clone(), Some("text/plain")).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        json_of(res).await["error"]["code"],
        json!("unsupported_media_type")
    );
    let res = post(body.clone(), None).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let res = post(body, Some("application/json; charset=utf-8"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    // Unknown routes and methods answer JSON errors.
    let res = s.client.get(s.url("/v2/whatever")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(res).await["error"]["code"], json!("not_found"));
    let res = s
        .client
        .delete(s.url("/v1/decisions"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "POST");
    assert_eq!(
        json_of(res).await["error"]["code"],
        json!("method_not_allowed")
    );
    // A bad Idempotency-Key header.
    let res = s
        .client
        .post(s.url("/v1/decisions"))
        .header("idempotency-key", "a".repeat(300))
        .json(&s.valid_request("a"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn idempotency_key_replays_and_conflicts() {
    let s = start().await;
    let req = s.valid_request("applicant-idem");
    let send = |body: Value, key: &str| {
        s.client
            .post(s.url("/v1/decisions"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = send(req.clone(), "order-17").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first = json_of(first).await;
    let head = s.store.head_position().await.unwrap();
    let second = send(req.clone(), "order-17").await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    let second = json_of(second).await;
    assert_eq!(first, second);
    assert_eq!(s.store.head_position().await.unwrap(), head);
    let id = first["decision_id"].as_str().unwrap();
    let stream = StreamId::new(format!("loanapplication-{id}")).unwrap();
    let events = s
        .store
        .read_stream(&stream, StreamFrom::Start, Direction::Forward, 100)
        .await
        .unwrap();
    let decisions = events
        .iter()
        .filter(|e| e.event_type.as_str() == "LoanDecisionMade")
        .count();
    assert_eq!(decisions, 1);

    let mut other = req.clone();
    other["applicant_id"] = json!("someone-else");
    let res = send(other, "order-17").await.unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(
        json_of(res).await["error"]["code"],
        json!("idempotency_conflict")
    );
    assert_eq!(s.store.head_position().await.unwrap(), head);

    // A different key is a different decision.
    let third = json_of(send(req, "order-18").await.unwrap()).await;
    assert_ne!(third["decision_id"], first["decision_id"]);
    s.stop().await;
}

#[tokio::test]
async fn openapi_metrics_health_and_audit() {
    let s = start().await;
    let res = s.client.get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let doc: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (method, path) in attest_server::openapi::ROUTES {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    let features = &doc["components"]["schemas"]["Features"];
    for f in s.state.lending().feature_schema().features {
        let p = &features["properties"][&f.name];
        assert!(p.is_object(), "{}", f.name);
        if f.min.is_finite() {
            assert_eq!(p["minimum"].as_f64().unwrap(), f.min);
        }
        if f.max.is_finite() {
            assert_eq!(p["maximum"].as_f64().unwrap(), f.max);
        }
    }
    for code in ["401", "403", "409", "413", "415", "422"] {
        assert!(
            doc["paths"]["/v1/decisions"]["post"]["responses"][code].is_object(),
            "{code}"
        );
    }

    let res = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = s.client.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ready = json_of(res).await;
    assert_eq!(
        ready["model"]["id"],
        json!(s.state.lending().active_model().id)
    );

    // No auditor installed yet: typed 503.
    for path in ["/v1/audit/fairness", "/v1/audit/drift"] {
        let res = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            json_of(res).await["error"]["code"],
            json!("audit_unavailable")
        );
    }

    let res = s
        .client
        .post(s.url("/v1/decisions"))
        .json(&s.valid_request("m-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let decided = json_of(res).await;
    let res = s.client.get(s.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let text = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            "attest_http_requests_total{method=\"POST\",route=\"/v1/decisions\",status=\"201\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("attest_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/decisions\",status=\"201\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "attest_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1"
        ),
        "{text}"
    );
    let model = s.state.lending().active_model();
    let line = format!(
        "attest_decisions_total{{model=\"{}\",model_version=\"{}\",decision=\"{}\"}} 1",
        model.id,
        model.version,
        decided["decision"].as_str().unwrap()
    );
    assert!(text.contains(&line), "{line}\n{text}");
    assert!(text.contains("route=\"/v1/audit/fairness\",status=\"503\""));
    s.stop().await;
}

#[tokio::test]
async fn an_installed_auditor_is_served() {
    struct Fixed;
    #[async_trait::async_trait]
    impl attest_server::audit::AuditSource for Fixed {
        async fn fairness(&self) -> Result<Value, attest_server::audit::AuditError> {
            Ok(json!({ "models": [] }))
        }
        async fn drift(&self) -> Result<Value, attest_server::audit::AuditError> {
            Err(attest_server::audit::AuditError::Unavailable(
                "warming up".into(),
            ))
        }
    }
    let s = start().await;
    s.state.audit().install(std::sync::Arc::new(Fixed));
    let res = s
        .client
        .get(s.url("/v1/audit/fairness"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await, json!({ "models": [] }));
    let res = s.client.get(s.url("/v1/audit/drift")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_of(res).await["error"]["message"], json!("warming up"));
    s.stop().await;
}
