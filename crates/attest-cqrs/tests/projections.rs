//! Projections into SQLite read models, fed from the real SQLite event store.

#[path = "projections_support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attest_core::RecordedEvent;
use attest_cqrs::projection::users_by_city::{
    all_users, users_in_city, User, UserEvent, UsersByCity,
};
use attest_cqrs::projection::{
    HandlerError, Projection, ReplayOutcome, SqliteProjection, SqliteProjector, Tables,
};
use attest_store::LogFilter;
use proptest::prelude::*;
use rusqlite::{Connection, OpenFlags, Transaction};
use support::*;

fn reader(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

fn reg(id: &str, name: &str, city: &str) -> UserEvent {
    UserEvent::Registered {
        user_id: id.into(),
        name: name.into(),
        city: city.into(),
    }
}

fn moved(id: &str, city: &str) -> UserEvent {
    UserEvent::Moved {
        user_id: id.into(),
        to_city: city.into(),
    }
}

/// Waits (bounded, to never hang the suite) until `cond` holds.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond().await {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn users_by_city_lists_londoners() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("events.db"));
    let rm = dir.path().join("read.db");
    for e in [
        reg("1", "Ada", "London"),
        reg("2", "Alan", "Manchester"),
        reg("3", "Grace", "London"),
        moved("2", "London"),
        reg("4", "Edsger", "Amsterdam"),
        UserEvent::Deleted {
            user_id: "3".into(),
        },
        moved("1", "Paris"),
    ] {
        append_one(&store, &e).await;
    }
    let p = SqliteProjector::open(&rm, store.clone(), UsersByCity::new(), fast_options())
        .await
        .unwrap();
    let head = store.head_position().await.unwrap();
    assert_eq!(p.catch_up().await.unwrap(), head);
    let conn = reader(&rm);
    assert_eq!(
        users_in_city(&conn, "London").unwrap(),
        vec![User {
            user_id: "2".into(),
            name: "Alan".into(),
            city: "London".into()
        }]
    );
    assert_eq!(users_in_city(&conn, "Paris").unwrap()[0].name, "Ada");
    assert!(users_in_city(&conn, "Manchester").unwrap().is_empty());
    assert_eq!(all_users(&conn).unwrap().len(), 3);
    assert!(p.parked().await.unwrap().is_empty());
    let lag = p.lag().await.unwrap();
    assert_eq!((lag.events, lag.seconds, lag.checkpoint), (0, 0.0, head));
    assert_eq!(p.checkpoint().await.unwrap(), (1, head));
}

#[tokio::test]
async fn live_runner_follows_appends_and_resumes_from_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("events.db"));
    let rm = dir.path().join("read.db");
    let first = workload(1, 500, "a");
    append_all(&store, &first, 50).await;
    let p = SqliteProjector::open(&rm, store.clone(), Counting::new(), fast_options())
        .await
        .unwrap();
    let runner = tokio::spawn({
        let p = p.clone();
        async move { p.run().await }
    });
    let second = workload(2, 700, "b");
    for part in second.chunks(7) {
        append_all(&store, part, 7).await;
    }
    let head = store.head_position().await.unwrap();
    eventually("live runner reaches the head", || async {
        p.checkpoint().await.unwrap().1 == head
    })
    .await;
    runner.abort();
    let _ = runner.await;
    let conn = reader(&rm);
    let mut all = first.clone();
    all.extend(second.iter().cloned());
    assert_eq!(all_users(&conn).unwrap(), model(&all));
    assert_eq!(applied_count(&conn), all.len() as i64);

    // A new projector on the same file resumes where the old one stopped.
    let third = workload(3, 300, "c");
    append_all(&store, &third, 30).await;
    drop(p);
    let p2 = SqliteProjector::open(&rm, store.clone(), Counting::new(), fast_options())
        .await
        .unwrap();
    assert_eq!(
        p2.catch_up().await.unwrap(),
        store.head_position().await.unwrap()
    );
    all.extend(third);
    assert_eq!(all_users(&conn).unwrap(), model(&all));
    assert_eq!(applied_count(&conn), all.len() as i64);
}

#[tokio::test]
async fn lag_in_events_and_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("events.db"));
    let p = SqliteProjector::open(
        dir.path().join("read.db"),
        store.clone(),
        UsersByCity::new(),
        fast_options(),
    )
    .await
    .unwrap();
    let lag = p.lag().await.unwrap();
    assert_eq!((lag.events, lag.head, lag.seconds), (0, 0, 0.0));
    let evs = workload(4, 40, "l");
    for e in &evs {
        append_one(&store, e).await;
    }
    let oldest = store.read_all(0, 1, &LogFilter::All).await.unwrap()[0].recorded_at;
    // The oldest unprocessed event is at least this old when lag is measured.
    let floor = (chrono::Utc::now() - oldest).num_microseconds().unwrap() as f64 / 1e6;
    let lag = p.lag().await.unwrap();
    assert_eq!((lag.events, lag.head, lag.checkpoint), (40, 40, 0));
    assert!(
        lag.seconds >= floor - 1e-6 && lag.seconds >= 0.0,
        "{lag:?} vs {floor}"
    );
    p.catch_up().await.unwrap();
    let lag = p.lag().await.unwrap();
    assert_eq!((lag.events, lag.checkpoint, lag.seconds), (0, 40, 0.0));
}

/// Fails the first `failures` attempts at events of user `victim`.
struct Flaky {
    inner: UsersByCity,
    victim: String,
    failures: Arc<AtomicU32>,
}

impl Projection for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn tables(&self) -> &'static [&'static str] {
        self.inner.tables()
    }
    fn filter(&self) -> LogFilter {
        self.inner.filter()
    }
}

impl SqliteProjection for Flaky {
    fn create_tables(&mut self, tx: &Transaction<'_>, t: &Tables) -> Result<(), rusqlite::Error> {
        self.inner.create_tables(tx, t)
    }
    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        t: &Tables,
        e: &RecordedEvent,
    ) -> Result<(), HandlerError> {
        if e.stream_id.id_part() == self.victim
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(HandlerError::msg("injected failure"));
        }
        self.inner.handle(tx, t, e)
    }
}

#[tokio::test]
async fn transient_failure_is_retried_without_parking() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("events.db"));
    let evs = vec![
        reg("1", "A", "London"),
        reg("2", "B", "Oslo"),
        reg("3", "C", "Rome"),
        moved("2", "London"),
    ];
    for e in &evs {
        append_one(&store, e).await;
    }
    let failures = Arc::new(AtomicU32::new(2)); // max_attempts is 3
    let flaky = Flaky {
        inner: UsersByCity::new(),
        victim: "2".into(),
        failures: failures.clone(),
    };
    let rm = dir.path().join("read.db");
    let p = SqliteProjector::open(&rm, store.clone(), flaky, fast_options())
        .await
        .unwrap();
    assert_eq!(p.catch_up().await.unwrap(), 4);
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert!(p.parked().await.unwrap().is_empty());
    assert_eq!(all_users(&reader(&rm)).unwrap(), model(&evs));
}

#[tokio::test]
async fn poison_event_is_parked_listed_and_replayable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("events.db"));
    let rm = dir.path().join("read.db");
    // A move for a user nobody registered (yet): the handler rejects it.
    append_one(&store, &reg("1", "Ada", "London")).await;
    let bad = append_one(&store, &moved("9", "London")).await;
    append_one(&store, &reg("2", "Alan", "Paris")).await;
    let p = SqliteProjector::open(&rm, store.clone(), UsersByCity::new(), fast_options())
        .await
        .unwrap();
    // Never loops forever: the checkpoint moves past the poison event.
    assert_eq!(p.catch_up().await.unwrap(), 3);
    let parked = p.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    let pe = &parked[0];
    assert_eq!((pe.position, pe.attempts), (bad, 3));
    assert_eq!(pe.stream_id.as_str(), "user-9");
    assert_eq!(pe.event_type, "UserMoved");
    assert!(pe.error.contains("unknown user"), "{}", pe.error);
    let conn = reader(&rm);
    assert_eq!(all_users(&conn).unwrap().len(), 2);

    // Replaying while the cause persists keeps it parked and counts the attempt.
    assert!(matches!(
        p.replay_parked(bad).await.unwrap(),
        ReplayOutcome::StillFailing(e) if e.contains("unknown user")
    ));
    assert_eq!(p.parked().await.unwrap()[0].attempts, 4);

    // Once the registration has arrived, the replay applies it.
    append_one(&store, &reg("9", "Grace", "Berlin")).await;
    p.catch_up().await.unwrap();
    assert_eq!(p.replay_parked(bad).await.unwrap(), ReplayOutcome::Applied);
    assert!(p.parked().await.unwrap().is_empty());
    let londoners: Vec<String> = users_in_city(&conn, "London")
        .unwrap()
        .into_iter()
        .map(|u| u.user_id)
        .collect();
    assert_eq!(londoners, vec!["1".to_string(), "9".to_string()]);
    assert!(matches!(
        p.replay_parked(bad).await,
        Err(attest_cqrs::projection::ProjectionError::NotParked { .. })
    ));
}

#[tokio::test]
async fn rebuild_while_writes_continue_matches_live_and_a_clean_build() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("events.db"));
    let rm = dir.path().join("read.db");
    let base = workload(10, 4000, "r");
    append_all(&store, &base, 200).await;
    let p = SqliteProjector::open(&rm, store.clone(), Counting::new(), fast_options())
        .await
        .unwrap();
    let live = tokio::spawn({
        let p = p.clone();
        async move { p.run().await }
    });
    // Writes keep coming during the rebuild.
    let more = workload(11, 3000, "w");
    let writer = tokio::spawn({
        let store = store.clone();
        let more = more.clone();
        async move {
            for part in more.chunks(10) {
                append_all(&store, part, 10).await;
                tokio::task::yield_now().await;
            }
        }
    });
    // A reader keeps being served by the old generation during the rebuild.
    let conn = reader(&rm);
    assert!(all_users(&conn).is_ok());
    let report = p.rebuild().await.unwrap();
    assert_eq!((report.generation, report.replaced), (2, 1));
    writer.await.unwrap();
    let head = store.head_position().await.unwrap();
    eventually(
        "live runner adopts the new generation and reaches the head",
        || async { p.checkpoint().await.unwrap() == (2, head) },
    )
    .await;
    live.abort();
    let _ = live.await;

    let mut all = base.clone();
    all.extend(more);
    let expected = model(&all);
    assert_eq!(all_users(&conn).unwrap(), expected);
    // Exactly once into the new generation, across the switch.
    assert_eq!(applied_count(&conn), all.len() as i64);
    // Old generation dropped, views on the new one.
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE name LIKE '%_g%' AND type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names, vec!["applied_events_g2", "users_by_city_g2"]);

    // A clean build in another file agrees.
    let clean = dir.path().join("clean.db");
    let c = SqliteProjector::open(&clean, store.clone(), UsersByCity::new(), fast_options())
        .await
        .unwrap();
    c.catch_up().await.unwrap();
    assert_eq!(all_users(&reader(&clean)).unwrap(), expected);

    // A second rebuild with nothing running also works.
    let r2 = p.rebuild().await.unwrap();
    assert_eq!((r2.generation, r2.replaced, r2.position), (3, 2, head));
    assert_eq!(all_users(&conn).unwrap(), expected);
}

const CHILD_ENV: &str = "ATTEST_PROJECTION_CRASH_CHILD";

/// Child half of the SIGKILL test (run by the parent in its own process).
#[tokio::test]
#[ignore = "helper: run by sigkill_mid_batch_then_resume_applies_each_event_once"]
async fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let store = open_store(&dir.join("events.db"));
    let mut opts = fast_options();
    opts.batch_size = 37;
    opts.durable = true;
    let p = SqliteProjector::open(dir.join("read.db"), store, Counting::new(), opts)
        .await
        .unwrap();
    p.catch_up().await.unwrap();
}

#[tokio::test]
async fn sigkill_mid_batch_then_resume_applies_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let events_db = dir.path().join("events.db");
    let evs = workload(20, 30_000, "k");
    let head = {
        let store = open_store(&events_db);
        append_all(&store, &evs, 500).await;
        store.head_position().await.unwrap()
    };
    let rm = dir.path().join("read.db");
    let mut kills = 0;
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "crash_child", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill it once it has made some progress beyond the previous round.
        let target = head * (round + 1) / 4;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let pos: Option<i64> =
                Connection::open_with_flags(&rm, OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .ok()
                    .and_then(|c| {
                        c.query_row(
                        "SELECT position FROM projection_checkpoints WHERE name = 'users_counted'",
                        [],
                        |r| r.get(0),
                    )
                    .ok()
                    });
            if pos.is_some_and(|p| p as u64 >= target) || child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "child made no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(
        kills > 0,
        "the child always finished before it could be killed"
    );
    // Resume in this process and compare with a clean build.
    let store = open_store(&events_db);
    let p = SqliteProjector::open(&rm, store.clone(), Counting::new(), fast_options())
        .await
        .unwrap();
    assert_eq!(p.catch_up().await.unwrap(), head);
    let conn = reader(&rm);
    assert_eq!(applied_count(&conn), evs.len() as i64);
    assert!(p.parked().await.unwrap().is_empty());
    let clean = dir.path().join("clean.db");
    let c = SqliteProjector::open(&clean, store.clone(), UsersByCity::new(), fast_options())
        .await
        .unwrap();
    c.catch_up().await.unwrap();
    let got = all_users(&conn).unwrap();
    assert_eq!(got, all_users(&reader(&clean)).unwrap());
    assert_eq!(got, model(&evs));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Whatever the history and batch size, the read model equals the model computed in memory
    /// and every event is applied exactly once.
    #[test]
    fn read_model_equals_fold_of_history(seed in any::<u64>(), ops in 1usize..400, batch in 1usize..300, chunk in 1usize..50) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = open_store(&dir.path().join("events.db"));
            let evs = workload(seed, ops, "p");
            append_all(&store, &evs, chunk).await;
            let mut opts = fast_options();
            opts.batch_size = batch;
            let rm = dir.path().join("read.db");
            let p = SqliteProjector::open(&rm, store.clone(), Counting::new(), opts).await.unwrap();
            p.catch_up().await.unwrap();
            let conn = reader(&rm);
            assert_eq!(all_users(&conn).unwrap(), model(&evs));
            assert_eq!(applied_count(&conn), evs.len() as i64);
        });
    }
}
