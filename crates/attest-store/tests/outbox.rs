//! The transactional outbox on real SQLite files and the local PostgreSQL.

use std::collections::BTreeMap;

use attest_store::outbox::{self, OutboxMessage, OutboxRecord};
use proptest::prelude::*;
use rusqlite::Connection;

const PG_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

fn sqlite_db() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("service.db")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE accounts (id TEXT PRIMARY KEY, balance INTEGER NOT NULL);",
    )
    .unwrap();
    outbox::sqlite::ensure_schema(&conn).unwrap();
    (dir, conn)
}

fn msg(key: &str, n: u32) -> OutboxMessage {
    OutboxMessage::new(
        key,
        format!("accounts.{key}"),
        format!("{key}:{n}").into_bytes(),
    )
    .with_header("n", n.to_string())
}

#[test]
fn sqlite_rollback_leaves_no_row_commit_does() {
    let (_d, mut conn) = sqlite_db();
    // Rolled back: neither the business row nor the message survive.
    {
        let tx = conn.transaction().unwrap();
        tx.execute("INSERT INTO accounts VALUES ('a', 10)", [])
            .unwrap();
        outbox::sqlite::enqueue(&tx, &msg("a", 1)).unwrap();
        tx.rollback().unwrap();
    }
    // Dropped without commit: same.
    {
        let tx = conn.transaction().unwrap();
        tx.execute("INSERT INTO accounts VALUES ('a', 10)", [])
            .unwrap();
        outbox::sqlite::enqueue(&tx, &msg("a", 2)).unwrap();
    }
    assert!(outbox::sqlite::fetch_batch(&conn, 100).unwrap().is_empty());
    assert_eq!(outbox::sqlite::stats(&conn).unwrap().backlog, 0);
    let committed = msg("a", 3);
    {
        let tx = conn.transaction().unwrap();
        tx.execute("INSERT INTO accounts VALUES ('a', 10)", [])
            .unwrap();
        outbox::sqlite::enqueue(&tx, &committed).unwrap();
        tx.commit().unwrap();
    }
    let batch = outbox::sqlite::fetch_batch(&conn, 100).unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].message, committed);
    assert_eq!(
        batch[0].message.headers.get("n").map(String::as_str),
        Some("3")
    );
    let balance: i64 = conn
        .query_row("SELECT balance FROM accounts WHERE id = 'a'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(balance, 10);
}

#[test]
fn sqlite_batches_in_order_delete_and_stats() {
    let (_d, mut conn) = sqlite_db();
    let mut expected = Vec::new();
    for i in 0..30u32 {
        let tx = conn.transaction().unwrap();
        let m = msg(["a", "b", "c"][(i % 3) as usize], i);
        outbox::sqlite::enqueue(&tx, &m).unwrap();
        tx.commit().unwrap();
        expected.push(m);
    }
    let s = outbox::sqlite::stats(&conn).unwrap();
    assert_eq!(s.backlog, 30);
    assert!(s.oldest_age_seconds >= 0.0);
    let first = outbox::sqlite::fetch_batch(&conn, 10).unwrap();
    let got: Vec<_> = first.iter().map(|r| r.message.clone()).collect();
    assert_eq!(got, expected[..10]);
    assert!(first.windows(2).all(|w| w[0].seq < w[1].seq));
    let seqs: Vec<i64> = first.iter().map(|r| r.seq).collect();
    assert_eq!(outbox::sqlite::delete(&conn, &seqs).unwrap(), 10);
    assert_eq!(outbox::sqlite::delete(&conn, &seqs).unwrap(), 0);
    let rest = outbox::sqlite::fetch_batch(&conn, 100).unwrap();
    let got: Vec<_> = rest.iter().map(|r| r.message.clone()).collect();
    assert_eq!(got, expected[10..]);
    assert_eq!(outbox::sqlite::stats(&conn).unwrap().backlog, 20);
}

#[test]
fn sqlite_duplicate_id_and_empty_subject_are_rejected() {
    let (_d, mut conn) = sqlite_db();
    let m = msg("a", 1);
    let tx = conn.transaction().unwrap();
    outbox::sqlite::enqueue(&tx, &m).unwrap();
    assert!(outbox::sqlite::enqueue(&tx, &m).is_err());
    let mut bad = msg("a", 2);
    bad.subject.clear();
    assert!(matches!(
        outbox::sqlite::enqueue(&tx, &bad),
        Err(outbox::OutboxError::Invalid(_))
    ));
    tx.commit().unwrap();
    assert_eq!(outbox::sqlite::fetch_batch(&conn, 10).unwrap().len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Whatever mix of committed and rolled-back transactions, the outbox holds exactly the
    /// committed messages, in commit order.
    #[test]
    fn sqlite_outbox_holds_exactly_the_committed(ops in prop::collection::vec((any::<bool>(), 1usize..4), 1..25)) {
        let (_d, mut conn) = sqlite_db();
        let mut expected = Vec::new();
        for (i, (commit, n)) in ops.iter().enumerate() {
            let tx = conn.transaction().unwrap();
            let mut batch = Vec::new();
            for j in 0..*n {
                let m = msg(&format!("k{}", j % 2), (i * 10 + j) as u32);
                outbox::sqlite::enqueue(&tx, &m).unwrap();
                batch.push(m);
            }
            if *commit {
                tx.commit().unwrap();
                expected.extend(batch);
            } else {
                tx.rollback().unwrap();
            }
        }
        let got: Vec<OutboxMessage> = outbox::sqlite::fetch_batch(&conn, 1000)
            .unwrap()
            .into_iter()
            .map(|r: OutboxRecord| r.message)
            .collect();
        prop_assert_eq!(got, expected);
    }
}

async fn pg(schema: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(PG_URL, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; SET search_path TO {schema};
             CREATE TABLE accounts (id TEXT PRIMARY KEY, balance BIGINT NOT NULL);"
        ))
        .await
        .unwrap();
    outbox::postgres::ensure_schema(&client).await.unwrap();
    client
}

fn schema_name(tag: &str) -> String {
    format!("outbox_{tag}_{}", std::process::id())
}

#[tokio::test]
async fn postgres_rollback_leaves_no_row_commit_does() {
    let schema = schema_name("rb");
    let mut client = pg(&schema).await;
    {
        let tx = client.transaction().await.unwrap();
        tx.execute("INSERT INTO accounts VALUES ('a', 10)", &[])
            .await
            .unwrap();
        outbox::postgres::enqueue(&tx, &msg("a", 1)).await.unwrap();
        tx.rollback().await.unwrap();
    }
    assert!(outbox::postgres::fetch_batch(&client, 10)
        .await
        .unwrap()
        .is_empty());
    let m = msg("a", 2).with_header("traceparent", "00-abc-def-01");
    {
        let tx = client.transaction().await.unwrap();
        tx.execute("INSERT INTO accounts VALUES ('a', 10)", &[])
            .await
            .unwrap();
        outbox::postgres::enqueue(&tx, &m).await.unwrap();
        tx.commit().await.unwrap();
    }
    let batch = outbox::postgres::fetch_batch(&client, 10).await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].message, m);
    let s = outbox::postgres::stats(&client).await.unwrap();
    assert_eq!(s.backlog, 1);
    assert!(s.oldest_age_seconds >= 0.0);
    assert_eq!(
        outbox::postgres::delete(&client, &[batch[0].seq])
            .await
            .unwrap(),
        1
    );
    let s = outbox::postgres::stats(&client).await.unwrap();
    assert_eq!((s.backlog, s.oldest_age_seconds), (0, 0.0));
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
async fn postgres_batches_are_in_order() {
    let schema = schema_name("order");
    let mut client = pg(&schema).await;
    let mut expected = Vec::new();
    for i in 0..20u32 {
        let tx = client.transaction().await.unwrap();
        let m = msg(["x", "y"][(i % 2) as usize], i).with_header("i", i.to_string());
        outbox::postgres::enqueue(&tx, &m).await.unwrap();
        tx.commit().await.unwrap();
        expected.push(m);
    }
    let got = outbox::postgres::fetch_batch(&client, 100).await.unwrap();
    let seqs: Vec<i64> = got.iter().map(|r| r.seq).collect();
    let msgs: Vec<OutboxMessage> = got.into_iter().map(|r| r.message).collect();
    assert_eq!(msgs, expected);
    let mut headers = BTreeMap::new();
    headers.insert("i".to_string(), "0".to_string());
    headers.insert("n".to_string(), "0".to_string());
    assert_eq!(msgs[0].headers, headers);
    assert_eq!(
        outbox::postgres::delete(&client, &seqs[..5]).await.unwrap(),
        5
    );
    let rest = outbox::postgres::fetch_batch(&client, 100).await.unwrap();
    assert_eq!(rest.len(), 15);
    assert_eq!(rest[0].message, expected[5]);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
