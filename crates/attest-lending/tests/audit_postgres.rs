//! Two auditors on one PostgreSQL store: one owner at a time through the partition lease,
//! the other serves the persisted snapshot; after a hand-over the counts equal a single
//! uninterrupted run and no breach or incident is duplicated.

mod audit_common;

use std::sync::Arc;
use std::time::Duration;

use attest_lending::audit::{spawn_auditor, AuditState, AuditorConfig, AuditorHandle, Backend};
use attest_lending::events::{FAIRNESS_THRESHOLD_BREACHED, INCIDENT_OPENED};
use attest_lending::vault::KeyVault;
use attest_store::DynStore;
use audit_common::*;

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn config(store: &DynStore, vault: &KeyVault, schema: &str, owner: &str) -> AuditorConfig {
    let mut c = AuditorConfig::postgres(store.clone(), vault.clone(), URL, schema, owner);
    if let Backend::Postgres { lease_ttl, .. } = &mut c.backend {
        *lease_ttl = Duration::from_secs(2);
    }
    c.windows = test_windows();
    c.publish_interval = Duration::from_millis(50);
    c.checkpoint_interval = Duration::from_millis(20);
    c
}

/// Waits for one of `handles` to own the auditor and to satisfy `done`; returns its index.
async fn wait_owner(
    handles: &[&AuditorHandle],
    store: &DynStore,
    what: &str,
    done: impl Fn(&AuditState) -> bool,
) -> (usize, Arc<AuditState>) {
    for _ in 0..1_200 {
        let head = store.head_position().await.unwrap();
        for (i, h) in handles.iter().enumerate() {
            let s = h.refresh().await;
            if s.owner && s.position >= head && done(&s) {
                return (i, s);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no auditor reached: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_one_owner_no_double_count() {
    let expected = uninterrupted().await;

    let schema = format!(
        "audit_two_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let store: DynStore = Arc::new(
        attest_store::postgres::PostgresStore::connect(URL, &schema, Default::default())
            .await
            .unwrap(),
    );
    let vault = KeyVault::open_postgres(URL, &schema).await.unwrap();
    register_model(&store).await;
    append_decisions(&store, &vault, 0..N / 2, true, 0.0).await;

    let a = spawn_auditor(config(&store, &vault, &schema, "p1"))
        .await
        .unwrap();
    let b = spawn_auditor(config(&store, &vault, &schema, "p2"))
        .await
        .unwrap();
    let (owner, _) = wait_owner(&[&a, &b], &store, "first half", |s| !s.current.is_empty()).await;
    // Exactly one owner; the other serves the owner's persisted snapshot.
    let (ho, hn) = if owner == 0 { (&a, &b) } else { (&b, &a) };
    assert!(ho.is_owner() && !hn.is_owner());
    let mut served = false;
    for _ in 0..200 {
        let s = hn.refresh().await;
        if !s.owner && !s.current.is_empty() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(served, "the non-owner must serve the persisted snapshot");

    // More decisions; the owner goes away mid-stream (graceful stop releases the lease),
    // the other takes over from the checkpoint.
    append_decisions(&store, &vault, N / 2..N, true, 0.0).await;
    let (survivor, other) = if owner == 0 { (b, a) } else { (a, b) };
    other.stop().await.unwrap();
    let (_, s) = wait_owner(&[&survivor], &store, "after hand-over", complete).await;
    assert_eq!(fingerprint(&s), expected);

    let breaches = events_of_type(&store, FAIRNESS_THRESHOLD_BREACHED).await;
    assert!(!breaches.is_empty());
    assert_eq!(breaches.len(), s.breaches.len());
    assert_eq!(
        events_of_type(&store, INCIDENT_OPENED).await.len(),
        breaches.len()
    );
    survivor.stop().await.unwrap();
    drop(store);

    // Best-effort cleanup of the test schema.
    if let Ok((client, conn)) = tokio_postgres::connect(URL, tokio_postgres::NoTls).await {
        let task = tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
        drop(client);
        let _ = task.await;
    }
}
