//! Projections into PostgreSQL read models (local server, trust auth), fed from the real
//! SQLite event store.

#[path = "projections_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use attest_cqrs::projection::users_by_city::{
    all_users_pg, users_in_city_pg, UserEvent, UsersByCity,
};
use attest_cqrs::projection::{PostgresProjector, ReplayOutcome};
use support::*;
use tokio_postgres::{Client, NoTls};

async fn client(schema: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(PG_URL, NoTls).await.unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    c
}

fn schema(tag: &str) -> String {
    format!("rm_{tag}_{}", std::process::id())
}

async fn applied(c: &Client, schema: &str) -> i64 {
    c.query_one(&format!("SELECT n FROM {schema}.applied_events"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn postgres_users_by_city_lists_londoners_and_parks_poison() {
    let s = schema("london");
    let c = client(&s).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("events.db"));
    let evs = [
        UserEvent::Registered {
            user_id: "1".into(),
            name: "Ada".into(),
            city: "London".into(),
        },
        UserEvent::Registered {
            user_id: "2".into(),
            name: "Alan".into(),
            city: "Paris".into(),
        },
        UserEvent::Moved {
            user_id: "404".into(),
            to_city: "London".into(),
        },
        UserEvent::Moved {
            user_id: "2".into(),
            to_city: "London".into(),
        },
    ];
    let mut positions = Vec::new();
    for e in &evs {
        positions.push(append_one(&store, e).await);
    }
    let p = PostgresProjector::connect(
        PG_URL,
        &s,
        store.clone(),
        UsersByCity::new(),
        fast_options(),
    )
    .await
    .unwrap();
    assert_eq!(p.catch_up().await.unwrap(), 4);
    let london: Vec<String> = users_in_city_pg(&c, &s, "London")
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.user_id)
        .collect();
    assert_eq!(london, vec!["1", "2"]);
    let parked = p.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!((parked[0].position, parked[0].attempts), (positions[2], 3));
    assert!(parked[0].error.contains("unknown user"));
    assert!(matches!(
        p.replay_parked(positions[2]).await.unwrap(),
        ReplayOutcome::StillFailing(_)
    ));
    append_one(
        &store,
        &UserEvent::Registered {
            user_id: "404".into(),
            name: "Found".into(),
            city: "Rome".into(),
        },
    )
    .await;
    p.catch_up().await.unwrap();
    assert_eq!(
        p.replay_parked(positions[2]).await.unwrap(),
        ReplayOutcome::Applied
    );
    assert!(p.parked().await.unwrap().is_empty());
    assert_eq!(users_in_city_pg(&c, &s, "London").await.unwrap().len(), 3);
    let lag = p.lag().await.unwrap();
    assert_eq!((lag.events, lag.seconds), (0, 0.0));
    c.batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
async fn postgres_abort_mid_run_then_resume_applies_each_event_once() {
    let s = schema("abort");
    let c = client(&s).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("events.db"));
    let evs = workload(30, 3000, "x");
    append_all(&store, &evs, 100).await;
    let head = store.head_position().await.unwrap();
    let mut opts = fast_options();
    opts.batch_size = 50;
    for round in 1..=3u64 {
        let p =
            PostgresProjector::connect(PG_URL, &s, store.clone(), Counting::new(), opts.clone())
                .await
                .unwrap();
        let task = tokio::spawn({
            let p = p.clone();
            async move { p.run().await }
        });
        // Abort the runner (mid-transaction, most likely) once it passed a mark.
        let deadline = Instant::now() + Duration::from_secs(120);
        while p.checkpoint().await.unwrap().1 < head * round / 4 {
            assert!(Instant::now() < deadline, "no progress");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        task.abort();
        let _ = task.await;
    }
    let p = PostgresProjector::connect(PG_URL, &s, store.clone(), Counting::new(), opts)
        .await
        .unwrap();
    assert_eq!(p.catch_up().await.unwrap(), head);
    assert_eq!(applied(&c, &s).await, evs.len() as i64);
    assert_eq!(all_users_pg(&c, &s).await.unwrap(), model(&evs));
    c.batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
async fn postgres_rebuild_while_writes_continue_matches_live() {
    let s = schema("rebuild");
    let c = client(&s).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("events.db"));
    let base = workload(40, 1500, "b");
    append_all(&store, &base, 100).await;
    let p = PostgresProjector::connect(PG_URL, &s, store.clone(), Counting::new(), fast_options())
        .await
        .unwrap();
    p.catch_up().await.unwrap();
    let live = tokio::spawn({
        let p = p.clone();
        async move { p.run().await }
    });
    let more = workload(41, 1000, "m");
    let writer = tokio::spawn({
        let store = store.clone();
        let more = more.clone();
        async move {
            for part in more.chunks(10) {
                append_all(&store, part, 10).await;
            }
        }
    });
    // A second projector (another "process") does the rebuild while the first keeps serving.
    let rebuilder =
        PostgresProjector::connect(PG_URL, &s, store.clone(), Counting::new(), fast_options())
            .await
            .unwrap();
    let report = rebuilder.rebuild().await.unwrap();
    assert_eq!((report.generation, report.replaced), (2, 1));
    writer.await.unwrap();
    let head = store.head_position().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while p.checkpoint().await.unwrap() != (2, head) {
        assert!(
            Instant::now() < deadline,
            "live runner did not adopt generation 2"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    live.abort();
    let _ = live.await;
    let mut all = base;
    all.extend(more);
    assert_eq!(all_users_pg(&c, &s).await.unwrap(), model(&all));
    assert_eq!(applied(&c, &s).await, all.len() as i64);
    let tables: Vec<String> = c
        .query(
            "SELECT table_name::TEXT FROM information_schema.tables
             WHERE table_schema = $1 AND table_type = 'BASE TABLE' AND table_name LIKE '%\\_g%'
             ORDER BY 1",
            &[&s],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, vec!["applied_events_g2", "users_by_city_g2"]);
    c.batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
}
