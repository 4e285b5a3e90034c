//! kill -9 variant of the restart test: the auditor runs in a child process (this test
//! binary re-executed) that is SIGKILLed at pseudo-random moments while decisions keep
//! arriving; a final run must end exactly where an uninterrupted run ends, with no breach or
//! incident duplicated.

mod audit_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use attest_lending::audit::spawn_auditor;
use attest_lending::events::{FAIRNESS_THRESHOLD_BREACHED, INCIDENT_OPENED};
use attest_lending::vault::KeyVault;
use attest_store::DynStore;
use audit_common::*;

const DIR_ENV: &str = "ATTEST_AUDIT_CRASH_DIR";

/// The child: runs the auditor on the directory it is given until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of kill_9_mid_stream_counts_every_decision_once"]
async fn crash_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let store: DynStore =
        attest_store::sqlite::SqliteStore::open(dir.join("events.db"), Default::default()).unwrap();
    let vault = KeyVault::open_sqlite(dir.join("keys.db")).unwrap();
    let f = Fixture {
        dir: tempfile::tempdir().unwrap(),
        store,
        vault,
    };
    let mut config = embedded_config(&f);
    config.backend = attest_lending::audit::Backend::Embedded {
        data_dir: dir.join("audit"),
    };
    // Small batches: many checkpoints, so a kill lands between them.
    config.max_batch = 2;
    let _handle = spawn_auditor(config).await.unwrap();
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_counts_every_decision_once() {
    let expected = uninterrupted().await;

    let f = sqlite_fixture().await;
    register_model(&f.store).await;
    append_decisions(&f.store, &f.vault, 0..N, true, 0.0).await;
    let head = f.store.head_position().await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let persisted = |dir: &std::path::Path| -> u64 {
        std::fs::read_to_string(dir.join("audit/audit-state.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["position"].as_u64())
            .unwrap_or(0)
    };
    let mut seed: u64 = 0x5eed;
    let mut kills_behind = 0;
    for _ in 0..12 {
        let before = persisted(f.dir.path());
        if before >= head {
            break;
        }
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--ignored", "--nocapture"])
            .env(DIR_ENV, f.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill it once it has made progress (plus a pseudo-random delay), or after 5 s.
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        for _ in 0..1_000 {
            if persisted(f.dir.path()) > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis((seed >> 33) % 40)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if persisted(f.dir.path()) < head {
            kills_behind += 1;
        }
    }
    assert!(kills_behind > 0, "no kill landed mid-stream");
    let h = spawn_auditor(embedded_config(&f)).await.unwrap();
    let s = wait_for(&h, &f.store, "run after kills complete", complete).await;
    h.stop().await.unwrap();

    assert_eq!(fingerprint(&s), expected);
    let breaches = events_of_type(&f.store, FAIRNESS_THRESHOLD_BREACHED).await;
    assert!(!breaches.is_empty());
    assert_eq!(breaches.len(), s.breaches.len());
    assert_eq!(
        events_of_type(&f.store, INCIDENT_OPENED).await.len(),
        breaches.len()
    );
}
