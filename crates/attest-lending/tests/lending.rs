//! The lending service end to end on real stores: SQLite files in temp dirs and the local
//! PostgreSQL (127.0.0.1:5432, user postgres, db `test`).

use std::sync::Arc;

use attest_core::StreamId;
use attest_lending::default_model::{train_default, DEFAULT_THRESHOLD};
use attest_lending::events::{ModelFormat, LOAN_DECISION_MADE};
use attest_lending::registry::RegisterModel;
use attest_lending::synth::Generator;
use attest_lending::{
    DecideOptions, Decision, DecisionRequest, ExplainMethod, FieldErrorCode, LendingConfig,
    LendingError, LendingService, Outcome, ProtectedAttributes, ProtectedView,
};
use attest_store::{Direction, DynStore, StreamFrom};
use serde_json::json;

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn sqlite_service() -> (LendingService, DynStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore =
        attest_store::sqlite::SqliteStore::open(dir.path().join("events.db"), Default::default())
            .unwrap();
    let svc = LendingService::open(LendingConfig::embedded(store.clone(), dir.path()))
        .await
        .unwrap();
    (svc, store, dir)
}

async fn stream_len(store: &DynStore, id: &str) -> usize {
    let s = StreamId::new(format!("loanapplication-{id}")).unwrap();
    match store
        .read_stream(&s, StreamFrom::Version(0), Direction::Forward, 100)
        .await
    {
        Ok(v) => v.len(),
        Err(attest_store::StoreError::StreamNotFound { .. }) => 0,
        Err(e) => panic!("{e}"),
    }
}

fn request(seed: u64) -> DecisionRequest {
    Generator::new(seed, 0.0).next_application().0
}

#[test]
fn default_model_is_reproducible_and_beats_the_baseline() {
    let a = train_default(7, 6000).unwrap();
    let b = train_default(7, 6000).unwrap();
    assert_eq!(
        a.xgboost_json, b.xgboost_json,
        "training is not bit-for-bit reproducible"
    );
    assert_eq!(a.model, b.model);
    // The XGBoost export loads back to the identical ensemble.
    let back = attest_ai::model::xgboost::parse(&a.xgboost_json, "default", None).unwrap();
    assert_eq!(back, a.model.ensemble);
    assert!(
        a.holdout_auc > a.baseline_auc + 0.03 && a.holdout_auc > 0.7,
        "held-out AUC {} vs baseline {}",
        a.holdout_auc,
        a.baseline_auc
    );
    // Another seed gives another model.
    assert_ne!(train_default(8, 6000).unwrap().xgboost_json, a.xgboost_json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decide_read_explain_and_record_outcome_on_sqlite() {
    let (svc, store, _dir) = sqlite_service().await;
    assert_eq!(svc.active_model().id, "credit");
    assert_eq!(svc.active_model().version, 1);
    let schema = svc.feature_schema();
    assert_eq!(schema.features.len(), 8);

    let mut req = request(1);
    req.protected = ProtectedAttributes {
        sex: Some("female".into()),
        race: Some("group_b".into()),
        age_band: Some("26-35".into()),
    };
    let resp = svc
        .decide(req.clone(), DecideOptions::default())
        .await
        .unwrap();
    assert_eq!(resp.top_contributions.len(), 3);
    assert_eq!(resp.threshold, DEFAULT_THRESHOLD);
    assert_eq!(
        resp.decision,
        if resp.probability >= DEFAULT_THRESHOLD {
            Decision::Decline
        } else {
            Decision::Approve
        }
    );
    assert!(
        resp.top_contributions[0].contribution.abs()
            >= resp.top_contributions[2].contribution.abs()
    );
    assert_eq!(resp.trace_id.len(), 32);
    assert_eq!(stream_len(&store, &resp.decision_id).await, 2);

    let view = svc.decision(&resp.decision_id).await.unwrap();
    assert_eq!(view.response, resp);
    assert_eq!(view.applicant_id, req.applicant_id);
    assert_eq!(
        view.protected,
        ProtectedView::Present(req.protected.clone())
    );
    assert!(view.outcome.is_none());

    // TreeSHAP is additive and agrees with the recorded top-3; KernelSHAP (exact coalition
    // enumeration over the reference background) adds up too; LIME is not additive.
    let tree = svc
        .explanation(&resp.decision_id, ExplainMethod::Tree)
        .await
        .unwrap();
    let sum: f64 = tree.contributions.iter().map(|c| c.contribution).sum();
    assert!((tree.base_value + sum - tree.prediction).abs() < 1e-9);
    assert_eq!(tree.contributions[..3].to_vec(), resp.top_contributions);
    let p = 1.0 / (1.0 + (-tree.prediction).exp());
    assert!((p - resp.probability).abs() < 1e-12);
    let kernel = svc
        .explanation(&resp.decision_id, ExplainMethod::Kernel)
        .await
        .unwrap();
    let ksum: f64 = kernel.contributions.iter().map(|c| c.contribution).sum();
    assert!((kernel.base_value + ksum - kernel.prediction).abs() < 1e-6);
    assert!((kernel.prediction - tree.prediction).abs() < 1e-9);
    let lime = svc
        .explanation(&resp.decision_id, ExplainMethod::Lime)
        .await
        .unwrap();
    assert!(!lime.additive);
    assert_eq!(lime.contributions.len(), 8);
    assert!(lime.score.is_some());

    let o = svc
        .record_outcome(&resp.decision_id, Outcome::Repaid)
        .await
        .unwrap();
    assert_eq!(o.outcome, Outcome::Repaid);
    let again = svc
        .record_outcome(&resp.decision_id, Outcome::Defaulted)
        .await
        .unwrap_err();
    assert!(matches!(again, LendingError::Conflict(_)), "{again}");
    assert_eq!(again.http_status(), 409);
    assert_eq!(stream_len(&store, &resp.decision_id).await, 3);
    assert_eq!(
        svc.decision(&resp.decision_id)
            .await
            .unwrap()
            .outcome
            .unwrap()
            .outcome,
        Outcome::Repaid
    );

    // Unknown ids are 404, whatever they look like.
    for id in ["00000000-0000-0000-0000-000000000000", "", "../x", "a b"] {
        let e = svc.decision(id).await.unwrap_err();
        assert_eq!(e.http_status(), 404, "{id:?}: {e}");
        let e = svc.record_outcome(id, Outcome::Repaid).await.unwrap_err();
        assert_eq!(e.http_status(), 404, "{id:?}: {e}");
    }

    // Erasure: the stored decision now shows the attributes as erased.
    svc.erase_subject(&req.applicant_id).await.unwrap();
    let view = svc.decision(&resp.decision_id).await.unwrap();
    assert_eq!(view.protected, ProtectedView::Erased);
    // A decision without protected attributes shows "not provided".
    let mut plain = request(2);
    plain.protected = ProtectedAttributes::default();
    let r2 = svc.decide(plain, DecideOptions::default()).await.unwrap();
    assert_eq!(
        svc.decision(&r2.decision_id).await.unwrap().protected,
        ProtectedView::NotProvided
    );
    // The decision event is decodable by consumers from the log.
    let s = StreamId::new(format!("loanapplication-{}", r2.decision_id)).unwrap();
    let evs = store
        .read_stream(&s, StreamFrom::Version(0), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(evs[1].event_type.as_str(), LOAN_DECISION_MADE);
    let d: attest_lending::events::LoanDecisionMade = evs[1].decode_json().unwrap();
    assert_eq!(d.probability, r2.probability);
    assert_eq!(
        evs[1].metadata.traceparent.as_deref().map(|t| &t[3..35]),
        Some(r2.trace_id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_reports_each_field() {
    let (svc, _store, _dir) = sqlite_service().await;
    let mut req = request(3);
    req.features.remove("annual_income");
    req.features.insert("loan_amount".into(), json!("lots"));
    req.features.insert("home_ownership".into(), json!(7));
    req.features.insert("late_payments_24m".into(), json!(1.5));
    req.features.insert("shoe_size".into(), json!(44));
    req.applicant_id = "bad id!".into();
    let err = svc.decide(req, DecideOptions::default()).await.unwrap_err();
    assert_eq!(err.http_status(), 422);
    let mut got: Vec<(String, FieldErrorCode)> = err
        .field_errors()
        .iter()
        .map(|e| (e.field.clone(), e.code))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("applicant_id".to_string(), FieldErrorCode::Invalid),
            (
                "features.annual_income".to_string(),
                FieldErrorCode::Missing
            ),
            (
                "features.home_ownership".to_string(),
                FieldErrorCode::OutOfRange
            ),
            (
                "features.late_payments_24m".to_string(),
                FieldErrorCode::WrongType
            ),
            (
                "features.loan_amount".to_string(),
                FieldErrorCode::WrongType
            ),
            (
                "features.shoe_size".to_string(),
                FieldErrorCode::UnknownField
            ),
        ]
    );
    // Whole-body checks.
    let e = DecisionRequest::from_value(&json!([1, 2])).unwrap_err();
    assert_eq!(e.field_errors()[0].code, FieldErrorCode::WrongType);
    let e = DecisionRequest::from_value(
        &json!({"features": {}, "x": 1, "protected": {"sex": 1, "eye": "b"}}),
    )
    .unwrap_err();
    let codes: Vec<_> = e
        .field_errors()
        .iter()
        .map(|f| (f.field.as_str(), f.code))
        .collect();
    assert!(codes.contains(&("applicant_id", FieldErrorCode::Missing)));
    assert!(codes.contains(&("x", FieldErrorCode::UnknownField)));
    assert!(codes.contains(&("protected.sex", FieldErrorCode::WrongType)));
    assert!(codes.contains(&("protected.eye", FieldErrorCode::UnknownField)));
    let ok = DecisionRequest::from_value(&serde_json::to_value(request(4)).unwrap()).unwrap();
    assert_eq!(ok, request(4));
    let e = svc
        .decide(
            request(5),
            DecideOptions {
                idempotency_key: Some(String::new()),
                traceparent: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.field_errors()[0].field, "idempotency_key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_gives_one_decision() {
    let (svc, store, _dir) = sqlite_service().await;
    let opts = DecideOptions {
        idempotency_key: Some("order-123".into()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    };
    let first = svc.decide(request(6), opts.clone()).await.unwrap();
    assert_eq!(first.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    let second = svc
        .decide(
            request(6),
            DecideOptions {
                traceparent: None,
                ..opts.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(stream_len(&store, &first.decision_id).await, 2);
    let err = svc.decide(request(7), opts.clone()).await.unwrap_err();
    assert!(matches!(err, LendingError::IdempotencyConflict(_)), "{err}");
    assert_eq!(err.http_status(), 409);

    // Concurrent requests with one key: one decision, identical responses.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            svc.decide(
                request(8),
                DecideOptions {
                    idempotency_key: Some("race-key".into()),
                    traceparent: None,
                },
            )
            .await
        }));
    }
    let mut responses = Vec::new();
    for t in tasks {
        responses.push(t.await.unwrap().unwrap());
    }
    assert!(responses.iter().all(|r| r == &responses[0]));
    assert_eq!(stream_len(&store, &responses[0].decision_id).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_versions_activation_and_reload() {
    let (svc, _store, _dir) = sqlite_service().await;
    let reg = svc.registry().clone();
    // Re-registering the built-in model is recognised.
    let trained = train_default(42, 20_000).unwrap();
    let again = reg
        .register(trained.register_request("credit", false))
        .await
        .unwrap();
    assert_eq!(again.version, 1);
    // A linear model as version 2, with ranges derived from its reference sample.
    let names = attest_lending::synth::feature_names();
    let linear = json!({
        "feature_names": names,
        "coefficients": [-0.00001, 0.00002, 2.0, -0.01, 0.5, -0.05, 0.05, -0.2],
        "intercept": -1.0,
        "link": "logistic"
    })
    .to_string();
    let reference: Vec<Vec<f64>> = {
        let d = Generator::new(5, 0.0).dataset(300);
        (0..d.len()).map(|i| d.row(i).to_vec()).collect()
    };
    let v2 = reg
        .register(RegisterModel {
            name: "credit".into(),
            format: ModelFormat::Linear,
            artifact: linear.clone(),
            features: None,
            threshold: 0.4,
            reference: reference.clone(),
            description: "test".into(),
            activate: false,
        })
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let versions = reg.versions("credit").await.unwrap();
    assert_eq!(versions.len(), 2);
    assert!(versions[0].active && !versions[1].active);
    assert_eq!(reg.names().await.unwrap(), vec!["credit".to_string()]);
    // Broken artifacts and bad names are refused.
    let bad = reg
        .register(RegisterModel {
            name: "credit".into(),
            format: ModelFormat::Xgboost,
            artifact: "{}".into(),
            features: None,
            threshold: 0.5,
            reference: vec![],
            description: String::new(),
            activate: true,
        })
        .await;
    assert!(bad.is_err());
    assert!(reg.active("no such/name").await.is_err());
    assert!(reg.activate("credit", 9).await.is_err());

    let before = svc
        .decide(request(9), DecideOptions::default())
        .await
        .unwrap();
    assert_eq!(before.model.version, 1);
    reg.activate("credit", 2).await.unwrap();
    assert_eq!(svc.reload_active_model().await.unwrap().version, 2);
    assert_eq!(svc.feature_schema().model.version, 2);
    let after = svc
        .decide(request(9), DecideOptions::default())
        .await
        .unwrap();
    assert_eq!(after.model.version, 2);
    assert_eq!(after.threshold, 0.4);
    // Explanations use the version that decided.
    let e1 = svc
        .explanation(&before.decision_id, ExplainMethod::Tree)
        .await
        .unwrap();
    assert_eq!(e1.model.version, 1);
    let e2 = svc
        .explanation(&after.decision_id, ExplainMethod::Tree)
        .await
        .unwrap();
    let sum: f64 = e2.contributions.iter().map(|c| c.contribution).sum();
    assert!((e2.base_value + sum - e2.prediction).abs() < 1e-9);
    assert_eq!(e2.contributions[..3].to_vec(), after.top_contributions);
}

async fn pg_schema(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_and_vault_decide_and_record() {
    let schema = pg_schema("h3_lending").await;
    let store: DynStore = Arc::new(
        attest_store::postgres::PostgresStore::connect(PG_URL, &schema, Default::default())
            .await
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = LendingConfig::postgres(store.clone(), dir.path(), PG_URL, schema.clone());
    let svc = LendingService::open(cfg.clone()).await.unwrap();
    // A second process on the same database sees the same model and decisions.
    let svc2 = LendingService::open(cfg).await.unwrap();
    assert_eq!(svc.active_model(), svc2.active_model());
    assert!(
        !dir.path().join("keys.db").exists(),
        "the vault must be in PostgreSQL"
    );

    let mut req = request(10);
    req.protected.sex = Some("male".into());
    let opts = DecideOptions {
        idempotency_key: Some("pg-key".into()),
        traceparent: None,
    };
    let a = svc.decide(req.clone(), opts.clone()).await.unwrap();
    let b = svc2.decide(req.clone(), opts).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(stream_len(&store, &a.decision_id).await, 2);
    let view = svc2.decision(&a.decision_id).await.unwrap();
    assert_eq!(
        view.protected,
        ProtectedView::Present(req.protected.clone())
    );
    svc2.record_outcome(&a.decision_id, Outcome::Defaulted)
        .await
        .unwrap();
    assert!(matches!(
        svc.record_outcome(&a.decision_id, Outcome::Repaid).await,
        Err(LendingError::Conflict(_))
    ));
    svc.erase_subject(&req.applicant_id).await.unwrap();
    assert_eq!(
        svc2.decision(&a.decision_id).await.unwrap().protected,
        ProtectedView::Erased
    );
}
