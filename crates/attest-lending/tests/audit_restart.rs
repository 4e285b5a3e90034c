//! Exactly-once counts across restarts: the auditor stopped and reopened mid-stream (and
//! with new events appended while it was down) ends with the same windows, counts, breaches
//! and incidents as an uninterrupted run.

mod audit_common;

use attest_lending::audit::{spawn_auditor, WindowKind};
use attest_lending::events::{FAIRNESS_THRESHOLD_BREACHED, INCIDENT_OPENED};
use audit_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_reopen_mid_stream_counts_every_decision_once() {
    let expected = uninterrupted().await;

    let f = sqlite_fixture().await;
    register_model(&f.store).await;
    // First part, audited completely, then stopped.
    append_decisions(&f.store, &f.vault, 0..N / 3, true, 0.0).await;
    let h = spawn_auditor(embedded_config(&f)).await.unwrap();
    wait_for(&h, &f.store, "first part", |s| {
        decisions_in(s, WindowKind::Sliding) > 0
    })
    .await;
    h.stop().await.unwrap();
    // Appended while the auditor is down.
    append_decisions(&f.store, &f.vault, N / 3..N, true, 0.0).await;
    // Reopened: it shows the persisted state at once, then resumes from its checkpoint; it
    // is stopped again as soon as it has made some progress (mid-stream)...
    let h = spawn_auditor(embedded_config(&f)).await.unwrap();
    let early = h.snapshot();
    assert!(
        !early.current.is_empty(),
        "a restart must show the persisted state at once"
    );
    let before = early.position;
    for _ in 0..400 {
        if h.refresh().await.position > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    h.stop().await.unwrap();
    // ... and reopened once more to finish.
    let h = spawn_auditor(embedded_config(&f)).await.unwrap();
    let s = wait_for(&h, &f.store, "interrupted run complete", complete).await;
    h.stop().await.unwrap();

    assert_eq!(fingerprint(&s), expected);
    // Breach events and incidents were not duplicated by the replays.
    let breaches = events_of_type(&f.store, FAIRNESS_THRESHOLD_BREACHED).await;
    let incidents = events_of_type(&f.store, INCIDENT_OPENED).await;
    assert!(!breaches.is_empty());
    assert_eq!(breaches.len(), s.breaches.len());
    assert_eq!(incidents.len(), breaches.len());
}
