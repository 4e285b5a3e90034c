//! The auditor on real lending traffic: the lending service (default model, key vault,
//! registry) decides synthetic applications with injected bias; the auditor's live view shows
//! the disparity against the disadvantaged group, prediction and feature drift against the
//! registered reference, and an erased applicant as `unknown`.

mod audit_common;

use std::time::Duration;

use attest_lending::audit::{spawn_auditor, AuditorConfig, WindowKind};
use attest_lending::synth::Generator;
use attest_lending::vault::KeyVault;
use attest_lending::{DecideOptions, LendingConfig, LendingService};
use attest_store::DynStore;
use audit_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn biased_traffic_through_the_service_shows_in_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore =
        attest_store::sqlite::SqliteStore::open(dir.path().join("events.db"), Default::default())
            .unwrap();
    let svc = LendingService::open(LendingConfig::embedded(store.clone(), dir.path()))
        .await
        .unwrap();
    let n = 400;
    let mut gen = Generator::new(11, 1.0);
    let mut first_applicant = None;
    for _ in 0..n {
        let (req, applicant) = gen.next_application();
        first_applicant.get_or_insert_with(|| req.applicant_id.clone());
        let resp = svc.decide(req, DecideOptions::default()).await.unwrap();
        svc.record_outcome(&resp.decision_id, gen.outcome_for(&applicant))
            .await
            .unwrap();
    }
    svc.erase_subject(first_applicant.as_deref().unwrap())
        .await
        .unwrap();

    let vault = KeyVault::open_sqlite(dir.path().join("keys.db")).unwrap();
    let mut config = AuditorConfig::embedded(store.clone(), vault, dir.path().join("audit"));
    config.publish_interval = Duration::from_millis(50);
    let h = spawn_auditor(config).await.unwrap();
    let s = wait_for(&h, &store, "all decisions", |s| {
        decisions_in(s, WindowKind::Sliding) == n
    })
    .await;
    let model = svc.active_model().to_string();
    let w = s.current_window(&model, WindowKind::Sliding).unwrap();
    assert_eq!(w.labeled, n);

    let sex = w.fairness.iter().find(|a| a.attribute == "sex").unwrap();
    let rate = |g: &str| {
        sex.groups
            .iter()
            .find(|x| x.group == g)
            .unwrap()
            .selection_rate
            .unwrap()
    };
    assert!(rate("female") < rate("male"), "{:?}", sex.groups);
    let dpd = sex.demographic_parity_difference.as_ref().unwrap();
    assert!(dpd.value > 0.05, "{dpd:?}");
    assert_eq!(dpd.groups.1, "female");
    // The erased applicant counts as unknown.
    let unknown = sex.groups.iter().find(|g| g.group == "unknown").unwrap();
    assert_eq!(unknown.decisions, 1);

    // Drift against the registered reference: the prediction is scored through the registry,
    // and the shifted feature (extra late payments for the disadvantaged group) drifts.
    let drift = w.drift.as_ref().unwrap();
    let prediction = drift.prediction.as_ref().expect("prediction drift");
    assert_eq!(prediction.samples, n);
    let late = drift
        .features
        .iter()
        .find(|c| c.feature == "late_payments_24m")
        .unwrap();
    assert!(late.psi.unwrap() > 0.1, "{late:?}");
    h.stop().await.unwrap();
}
