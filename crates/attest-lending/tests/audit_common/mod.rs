//! Shared fixtures of the auditor tests: a real SQLite store and key vault in a tempdir,
//! lending events constructed with chosen event times, and waiting for the auditor.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use attest_core::{ExpectedVersion, NewEvent, StreamId};
use attest_lending::audit::{
    AuditState, AuditorConfig, AuditorHandle, WindowAudit, WindowConfig, WindowKind,
};
use attest_lending::events::{
    Decision, FeatureKind, FeatureSpec, LoanApplicationSubmitted, LoanDecisionMade,
    LoanOutcomeObserved, ModelFormat, ModelRef, ModelVersionRegistered, Outcome,
    LOAN_APPLICATION_SUBMITTED, LOAN_DECISION_MADE, LOAN_OUTCOME_OBSERVED,
    MODEL_VERSION_REGISTERED,
};
use attest_lending::vault::KeyVault;
use attest_lending::ProtectedAttributes;
use attest_store::{Direction, DynStore, StoreError, StreamAppend, StreamFrom};
use chrono::{TimeZone, Utc};

/// 2026-01-01T00:00:00Z in ms.
pub const T0: i64 = 1_767_225_600_000;
/// Decisions are 10 s apart.
pub const STEP_MS: i64 = 10_000;
/// Outcomes are observed for decision `i - OUTCOME_LAG` right after decision `i`.
pub const OUTCOME_LAG: usize = 3;

pub fn model() -> ModelRef {
    ModelRef {
        id: "credit".into(),
        version: 1,
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: DynStore,
    pub vault: KeyVault,
}

pub async fn sqlite_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore =
        attest_store::sqlite::SqliteStore::open(dir.path().join("events.db"), Default::default())
            .unwrap();
    let vault = KeyVault::open_sqlite(dir.path().join("keys.db")).unwrap();
    Fixture { dir, store, vault }
}

pub fn sex_of(i: usize) -> &'static str {
    if (i / 10).is_multiple_of(2) {
        "F"
    } else {
        "M"
    }
}

/// Whether decision `i` approves: with bias, men 70 %, women 30 %; without, 50 % for all.
pub fn approves(i: usize, bias: bool) -> bool {
    if bias {
        if sex_of(i) == "M" {
            i % 10 < 7
        } else {
            i % 10 < 3
        }
    } else {
        i % 10 < 5
    }
}

pub fn income(i: usize, shift: f64) -> f64 {
    30_000.0 + ((i * 7_919) % 50_000) as f64 + shift
}

pub fn debt_ratio(i: usize) -> f64 {
    ((i * 31) % 100) as f64 / 100.0
}

fn at(ms: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap()
}

/// Registers model `credit` v1 with a reference sample drawn like the applications.
pub async fn register_model(store: &DynStore) {
    let reference: Vec<Vec<f64>> = (0..2_000)
        .map(|j| vec![income(j + 100_000, 0.0), debt_ratio(j + 100_000)])
        .collect();
    let reg = ModelVersionRegistered {
        name: "credit".into(),
        version: 1,
        format: ModelFormat::Linear,
        artifact: String::new(),
        sha256: String::new(),
        features: vec![
            FeatureSpec {
                name: "income".into(),
                kind: FeatureKind::Number,
                min: 0.0,
                max: 1e7,
                description: "annual income".into(),
            },
            FeatureSpec {
                name: "debt_ratio".into(),
                kind: FeatureKind::Number,
                min: 0.0,
                max: 1.0,
                description: "debt to income".into(),
            },
        ],
        threshold: 0.5,
        reference,
        description: "test".into(),
        registered_at: at(T0),
    };
    store
        .append(
            StreamId::new("model-credit").unwrap(),
            ExpectedVersion::Any,
            vec![NewEvent::json(MODEL_VERSION_REGISTERED, &reg).unwrap()],
        )
        .await
        .unwrap();
}

pub fn decision_id(i: usize) -> String {
    format!("d{i:06}")
}

/// Appends decisions `range` (and outcomes for `i - OUTCOME_LAG`) in event-time order.
pub async fn append_decisions(
    store: &DynStore,
    vault: &KeyVault,
    range: std::ops::Range<usize>,
    bias: bool,
    income_shift: f64,
) {
    for i in range {
        let id = decision_id(i);
        let applicant = format!("a{i}");
        let attrs = ProtectedAttributes {
            sex: Some(sex_of(i).into()),
            race: Some(["group_a", "group_b", "group_c"][(i / 20) % 3].into()),
            age_band: Some(["18-25", "26-35", "36+"][(i / 60) % 3].into()),
        };
        let sealed = vault.seal(&applicant, &attrs).await.unwrap();
        let t = T0 + i as i64 * STEP_MS;
        let mut features = serde_json::Map::new();
        features.insert("income".into(), income(i, income_shift).into());
        features.insert("debt_ratio".into(), debt_ratio(i).into());
        let submitted = LoanApplicationSubmitted {
            decision_id: id.clone(),
            applicant_id: applicant.clone(),
            features,
            protected: Some(sealed),
            request_hash: "h".into(),
            idempotency_key: None,
            submitted_at: at(t),
        };
        let approve = approves(i, bias);
        let decided = LoanDecisionMade {
            decision_id: id.clone(),
            applicant_id: applicant,
            model: model(),
            score: 0.0,
            probability: if approve { 0.2 } else { 0.7 },
            decision: if approve {
                Decision::Approve
            } else {
                Decision::Decline
            },
            threshold: 0.5,
            top_contributions: vec![],
            trace_id: "0".repeat(32),
            decided_at: at(t),
        };
        let mut appends = vec![StreamAppend {
            stream: StreamId::new(format!("loanapplication-{id}")).unwrap(),
            expected: ExpectedVersion::NoStream,
            events: vec![
                NewEvent::json(LOAN_APPLICATION_SUBMITTED, &submitted).unwrap(),
                NewEvent::json(LOAN_DECISION_MADE, &decided).unwrap(),
            ],
        }];
        if i >= OUTCOME_LAG {
            let j = i - OUTCOME_LAG;
            let outcome = LoanOutcomeObserved {
                decision_id: decision_id(j),
                outcome: if !j.is_multiple_of(3) {
                    Outcome::Repaid
                } else {
                    Outcome::Defaulted
                },
                observed_at: at(t + 1_000),
            };
            appends.push(StreamAppend {
                stream: StreamId::new(format!("loanapplication-{}", decision_id(j))).unwrap(),
                expected: ExpectedVersion::Exact(1),
                events: vec![NewEvent::json(LOAN_OUTCOME_OBSERVED, &outcome).unwrap()],
            });
        }
        store.append_many(appends).await.unwrap();
    }
}

/// Small windows so that tests close both kinds: 1 h tumbling, 2 h sliding every 10 min.
pub fn test_windows() -> WindowConfig {
    WindowConfig {
        tumbling_ms: 3_600_000,
        sliding_ms: 7_200_000,
        slide_ms: 600_000,
    }
}

pub fn embedded_config(f: &Fixture) -> AuditorConfig {
    let mut c =
        AuditorConfig::embedded(f.store.clone(), f.vault.clone(), f.dir.path().join("audit"));
    c.windows = test_windows();
    c.publish_interval = Duration::from_millis(50);
    c.checkpoint_interval = Duration::from_millis(20);
    c
}

/// Decisions counted in the open tumbling windows of `s`.
pub fn decisions_in(s: &AuditState, kind: WindowKind) -> u64 {
    s.current
        .iter()
        .filter(|w| w.window.kind == kind)
        .map(|w| w.decisions)
        .sum()
}

/// Waits (bounded, so a bug fails instead of hanging) until the auditor has read the whole
/// log and `done` holds.
pub async fn wait_for(
    handle: &AuditorHandle,
    store: &DynStore,
    what: &str,
    done: impl Fn(&AuditState) -> bool,
) -> Arc<AuditState> {
    for _ in 0..1_200 {
        let s = handle.refresh().await;
        let head = store.head_position().await.unwrap();
        if s.owner && s.position >= head && done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = handle.refresh().await;
    panic!(
        "auditor never reached: {what}; last state: position {} head {} owner {} current {:?}",
        s.position,
        s.head_position,
        s.owner,
        s.current
            .iter()
            .map(|w| (w.window, w.decisions))
            .collect::<Vec<_>>()
    );
}

/// Every event of a stream (empty when it does not exist).
pub async fn read_stream(store: &DynStore, stream: &str) -> Vec<attest_core::RecordedEvent> {
    match store
        .read_stream(
            &StreamId::new(stream).unwrap(),
            StreamFrom::Start,
            Direction::Forward,
            10_000,
        )
        .await
    {
        Ok(v) => v,
        Err(StoreError::StreamNotFound { .. }) => vec![],
        Err(e) => panic!("{e}"),
    }
}

/// All events of the log of the given type.
pub async fn events_of_type(store: &DynStore, event_type: &str) -> Vec<attest_core::RecordedEvent> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .read_all(after, 1_000, &attest_store::LogFilter::All)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        out.extend(
            page.into_iter()
                .filter(|e| e.event_type.as_str() == event_type),
        );
    }
    out
}

/// Decisions of the restart and scale-out tests.
pub const N: usize = 1_200;

/// What must be equal between runs: every open and last-closed window's per-group counts,
/// late records, pending outcomes and breach keys.
pub fn fingerprint(s: &AuditState) -> String {
    let counts = |ws: &[WindowAudit]| {
        let mut v: Vec<String> = ws
            .iter()
            .map(|w| {
                let groups: Vec<String> = w
                    .fairness
                    .iter()
                    .flat_map(|a| {
                        a.groups
                            .iter()
                            .map(move |g| format!("{}={}:{:?}", a.attribute, g.group, g.counts))
                    })
                    .collect();
                let drift = w.drift.as_ref().map(|d| {
                    d.features
                        .iter()
                        .map(|c| format!("{}:{}:{:?}", c.feature, c.samples, c.psi))
                        .collect::<Vec<_>>()
                });
                format!(
                    "{:?} {} {} {groups:?} {drift:?}",
                    w.window, w.decisions, w.labeled
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut breaches: Vec<&str> = s.breaches.iter().map(|b| b.key.as_str()).collect();
    breaches.sort();
    format!(
        "current={:?}\nclosed={:?}\nlate={} pending={}\nbreaches={breaches:?}",
        counts(&s.current),
        counts(&s.last_closed),
        s.late_records,
        s.pending_outcomes
    )
}

pub fn complete(s: &AuditState) -> bool {
    // The last decision (N - 1) is in the open tumbling window once everything is counted.
    let last_t = T0 + (N as i64 - 1) * STEP_MS;
    s.max_event_time
        .is_some_and(|t| t.timestamp_millis() >= last_t + 1_000)
        && decisions_in(s, WindowKind::Tumbling) > 0
}

/// The fingerprint of an uninterrupted run over the same events.
pub async fn uninterrupted() -> String {
    let f = sqlite_fixture().await;
    register_model(&f.store).await;
    append_decisions(&f.store, &f.vault, 0..N, true, 0.0).await;
    let h = attest_lending::audit::spawn_auditor(embedded_config(&f))
        .await
        .unwrap();
    let s = wait_for(&h, &f.store, "uninterrupted run complete", complete).await;
    h.stop().await.unwrap();
    fingerprint(&s)
}
