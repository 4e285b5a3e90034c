//! The dashboard's in-memory read model against a real SQLite store: decisions, outcomes and
//! the incident lifecycle (opened → acknowledged → resolved) as written to the log, and a
//! rebuild from the log giving the same figures.

use std::time::Duration;

use attest_core::{ExpectedVersion, NewEvent, StreamId};
use attest_lending::events::{
    IncidentOpened, LoanDecisionMade, LoanOutcomeObserved, RecordedContribution, INCIDENT_OPENED,
    LOAN_DECISION_MADE, LOAN_OUTCOME_OBSERVED,
};
use attest_lending::incident::{
    IncidentAcknowledged, IncidentResolved, INCIDENT_ACKNOWLEDGED, INCIDENT_RESOLVED,
};
use attest_lending::{Decision, ModelRef, Outcome};
use attest_server::dashboard::feed::DashboardFeed;
use attest_store::sqlite::SqliteStore;
use attest_store::{DynStore, StoreOptions};
use chrono::Utc;

fn model() -> ModelRef {
    ModelRef {
        id: "credit".into(),
        version: 3,
    }
}

async fn append<T: serde::Serialize>(store: &DynStore, stream: &str, ty: &str, payload: &T) {
    store
        .append(
            StreamId::new(stream).expect("stream id"),
            ExpectedVersion::Any,
            vec![NewEvent::json(ty, payload).expect("event")],
        )
        .await
        .expect("append");
}

async fn decide(store: &DynStore, id: &str, decision: Decision) {
    let d = LoanDecisionMade {
        decision_id: id.into(),
        applicant_id: format!("app-{id}"),
        model: model(),
        score: -1.0,
        probability: 0.27,
        decision,
        threshold: 0.35,
        top_contributions: vec![RecordedContribution {
            feature: "debt_to_income".into(),
            value: 0.3,
            contribution: 0.4,
        }],
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        decided_at: Utc::now(),
    };
    append(
        store,
        &format!("loanapplication-{id}"),
        LOAN_DECISION_MADE,
        &d,
    )
    .await;
}

async fn settled(
    feed: &DashboardFeed,
    store: &DynStore,
) -> attest_server::dashboard::feed::FeedSnapshot {
    let head = store.head_position().await.expect("head");
    assert!(
        feed.wait_for(head, Duration::from_secs(30)).await,
        "feed did not reach {head}"
    );
    feed.snapshot(Utc::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_counts_decisions_outcomes_and_follows_incident_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open_default(dir.path(), StoreOptions::default()).expect("store");
    let store: DynStore = sqlite.clone();
    let feed = DashboardFeed::start(store.clone());

    let empty = settled(&feed, &store).await;
    assert_eq!(empty.totals.decisions, 0);
    assert!(empty.recent.is_empty() && empty.incidents.is_empty());
    assert_eq!(empty.rate.per_minute.len(), 60);

    decide(&store, "d1", Decision::Approve).await;
    decide(&store, "d2", Decision::Decline).await;
    decide(&store, "d3", Decision::Approve).await;
    append(
        &store,
        "loanapplication-d1",
        LOAN_OUTCOME_OBSERVED,
        &LoanOutcomeObserved {
            decision_id: "d1".into(),
            outcome: Outcome::Defaulted,
            observed_at: Utc::now(),
        },
    )
    .await;
    // An event the feed does not know is skipped, not fatal.
    append(
        &store,
        "other-1",
        "SomethingElse",
        &serde_json::json!({"x": 1}),
    )
    .await;

    let s = settled(&feed, &store).await;
    assert_eq!(s.totals.decisions, 3);
    assert_eq!(s.totals.approvals, 2);
    assert_eq!(s.totals.declines, 1);
    assert_eq!(s.totals.defaulted, 1);
    assert_eq!(s.totals.repaid, 0);
    assert_eq!(s.rate.last_hour, 3);
    let ids: Vec<&str> = s.recent.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["d3", "d2", "d1"]);
    assert_eq!(s.recent[2].outcome, Some(Outcome::Defaulted));
    assert_eq!(s.lag.events, 0);

    append(
        &store,
        "incident-i1",
        INCIDENT_OPENED,
        &IncidentOpened {
            incident_id: "i1".into(),
            model: model(),
            reason: "demographic parity difference 0.31 > 0.1".into(),
            trigger: "FairnessThresholdBreached".into(),
            opened_at: Utc::now(),
        },
    )
    .await;
    let s = settled(&feed, &store).await;
    assert_eq!(s.incidents.len(), 1);
    assert_eq!(s.incidents[0].status, "open");
    assert_eq!(s.incidents[0].model, "credit@v3");
    assert!(s.incidents[0].is_open());

    append(
        &store,
        "incident-i1",
        INCIDENT_ACKNOWLEDGED,
        &IncidentAcknowledged {
            incident_id: "i1".into(),
            acknowledged_by: "risk-team".into(),
            note: None,
            acknowledged_at: Utc::now(),
        },
    )
    .await;
    let s = settled(&feed, &store).await;
    assert_eq!(s.incidents[0].status, "acknowledged");
    assert!(s.incidents[0].is_open());

    append(
        &store,
        "incident-i1",
        INCIDENT_RESOLVED,
        &IncidentResolved {
            incident_id: "i1".into(),
            resolved_by: "risk-team".into(),
            resolution: "model retrained".into(),
            resolved_at: Utc::now(),
        },
    )
    .await;
    let s = settled(&feed, &store).await;
    assert_eq!(s.incidents[0].status, "resolved");
    assert!(!s.incidents[0].is_open());

    // A new feed rebuilds the same figures from the log.
    let rebuilt = DashboardFeed::start(store.clone());
    let r = settled(&rebuilt, &store).await;
    assert_eq!(r.totals, s.totals);
    assert_eq!(r.recent, s.recent);
    assert_eq!(r.incidents, s.incidents);
    assert_eq!(r.position, s.position);

    drop(feed);
    drop(rebuilt);
    sqlite.close().await;
}
