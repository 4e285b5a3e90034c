//! Crypto-shredding and the audit: an erased subject's decisions count as group `unknown`.

mod audit_common;

use attest_lending::audit::{spawn_auditor, WindowKind};
use audit_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_subjects_count_as_unknown() {
    let f = sqlite_fixture().await;
    register_model(&f.store).await;
    append_decisions(&f.store, &f.vault, 0..40, false, 0.0).await;
    // Erase the first 10 applicants (all "F" by construction: i / 10 even).
    for i in 0..10 {
        assert!(f.vault.erase(&format!("a{i}")).await.unwrap());
    }
    let h = spawn_auditor(embedded_config(&f)).await.unwrap();
    let s = wait_for(&h, &f.store, "40 decisions", |s| {
        decisions_in(s, WindowKind::Tumbling) == 40
    })
    .await;
    let w = s.current_window("credit@v1", WindowKind::Tumbling).unwrap();
    for attr in ["sex", "race", "age_band"] {
        let a = w.fairness.iter().find(|a| a.attribute == attr).unwrap();
        let unknown = a
            .groups
            .iter()
            .find(|g| g.group == "unknown")
            .map_or(0, |g| g.decisions);
        assert_eq!(unknown, 10, "{attr}: {:?}", a.groups);
    }
    let sex = w.fairness.iter().find(|a| a.attribute == "sex").unwrap();
    let count = |g: &str| {
        sex.groups
            .iter()
            .find(|x| x.group == g)
            .map_or(0, |x| x.decisions)
    };
    assert_eq!((count("F"), count("M")), (10, 20));
    // Outcomes of erased applicants are labelled as unknown too (decisions 0..=9 got
    // outcomes after decisions 3..=12).
    let unknown = sex.groups.iter().find(|g| g.group == "unknown").unwrap();
    assert_eq!(unknown.labeled, 10);
    h.stop().await.unwrap();
}
