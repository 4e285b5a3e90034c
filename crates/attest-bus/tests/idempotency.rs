//! Exactly one effect per command, with SQLite (embedded broker) and PostgreSQL (NATS):
//! duplicates under different message ids, and a consumer that crashes between its effect
//! and its ack.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use attest_bus::consumer::Handler;
use attest_bus::consumer::{Consumer, ConsumerOptions, HandlerError, RetryPolicy};
use attest_bus::dlq::DeadLetterConfig;
use attest_bus::idempotency::PgIdempotentHandler;
use attest_bus::idempotency::{PgEffect, SqliteIdempotentHandler};
use attest_bus::{
    ConsumerConfig, DynBroker, Message, OutgoingMessage, StreamConfig, IDEMPOTENCY_KEY_HEADER,
};

fn options(dlq: &DeadLetterConfig, fetch_wait: Duration) -> ConsumerOptions {
    ConsumerOptions {
        batch: 8,
        fetch_wait,
        retry: RetryPolicy::default(),
        dead_letters: dlq.clone(),
        lag_every: Duration::from_secs(60),
    }
}

fn command(subject: &str, msg_id: &str, key: &str, n: u64) -> OutgoingMessage {
    OutgoingMessage::new(subject, msg_id, n.to_string().into_bytes())
        .with_header(IDEMPOTENCY_KEY_HEADER, key)
}

// ---------- SQLite ----------

fn sqlite_effect(tx: &rusqlite::Transaction<'_>, m: &Message) -> Result<(), HandlerError> {
    // A plain table with no unique key: a duplicate effect would show as an extra row.
    tx.execute(
        "INSERT INTO effects(key, body) VALUES (?1, ?2)",
        rusqlite::params![
            m.header(IDEMPOTENCY_KEY_HEADER).unwrap_or_default(),
            String::from_utf8_lossy(&m.payload).to_string()
        ],
    )
    .map_err(HandlerError::retryable)?;
    Ok(())
}

type SqliteHandler =
    SqliteIdempotentHandler<fn(&rusqlite::Transaction<'_>, &Message) -> Result<(), HandlerError>>;

fn sqlite_handler(path: &std::path::Path) -> SqliteHandler {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS effects (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, body TEXT NOT NULL);",
    )
    .unwrap();
    SqliteIdempotentHandler::with_connection(
        conn,
        "ledger",
        sqlite_effect as fn(&rusqlite::Transaction<'_>, &Message) -> Result<(), HandlerError>,
    )
    .unwrap()
}

fn sqlite_counts(path: &std::path::Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT COUNT(*), COUNT(DISTINCT key) FROM effects",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

async fn embedded_setup(e: &common::TempEmbedded) -> (DynBroker, String, DeadLetterConfig) {
    let broker: DynBroker = Arc::new(e.broker.clone());
    broker
        .ensure_stream(&StreamConfig::new("CMDS", vec!["cmd.>".into()]))
        .await
        .unwrap();
    (broker, "cmd.loan".into(), DeadLetterConfig::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commands_delivered_twice_have_one_effect() {
    let e = common::TempEmbedded::new().await;
    let (broker, subject, dlq) = embedded_setup(&e).await;
    for n in 0..20u64 {
        for copy in 0..2 {
            let ack = broker
                .publish(command(
                    &subject,
                    &format!("m-{n}-{copy}"),
                    &format!("k-{n}"),
                    n,
                ))
                .await
                .unwrap();
            assert!(
                !ack.duplicate,
                "different message ids are different messages"
            );
        }
    }
    let path = common::db_path(e.dir.path());
    let handler = sqlite_handler(&path);
    let skipped = handler.skipped();
    let mut c = Consumer::new(
        broker.clone(),
        ConsumerConfig::new("CMDS", "ledger"),
        handler,
        options(&dlq, Duration::from_millis(300)),
    );
    assert_eq!(c.drain().await.unwrap(), 40);
    assert_eq!(sqlite_counts(&path), (20, 20));
    assert_eq!(skipped.load(Ordering::Relaxed), 20);
    assert_eq!(c.stats().snapshot(), (40, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crash_between_effect_and_ack_has_no_duplicate_and_no_loss() {
    let e = common::TempEmbedded::new().await;
    let dir = e.dir.clone();
    let path = common::db_path(dir.path());
    let config = ConsumerConfig::new("CMDS", "ledger").with_ack_wait(Duration::from_millis(300));
    {
        let (broker, subject, _) = embedded_setup(&e).await;
        for n in 0..30u64 {
            broker
                .publish(command(&subject, &format!("m-{n}"), &format!("k-{n}"), n))
                .await
                .unwrap();
        }
        let handler = sqlite_handler(&path);
        let pull = broker.consumer(&config).await.unwrap();
        let batch = pull.fetch(10, Duration::from_secs(2)).await.unwrap();
        assert_eq!(batch.len(), 10);
        for d in &batch {
            // The effect commits ...
            handler.handle(&d.message, &d.info).await.unwrap();
        }
        // ... and the process dies before acknowledging anything.
    }
    drop(e);
    assert_eq!(sqlite_counts(&path), (10, 10));

    let e = common::TempEmbedded::reopen(dir).await;
    let (broker, _, dlq) = embedded_setup(&e).await;
    let handler = sqlite_handler(&path);
    let skipped = handler.skipped();
    let mut c = Consumer::new(
        broker.clone(),
        config,
        handler,
        options(&dlq, Duration::from_secs(2)),
    );
    assert_eq!(c.drain().await.unwrap(), 30, "20 new + 10 redelivered");
    assert_eq!(
        sqlite_counts(&path),
        (30, 30),
        "no duplicate effect, no loss"
    );
    assert_eq!(skipped.load(Ordering::Relaxed), 10);
    let pull = broker.consumer(c.config()).await.unwrap();
    assert_eq!(pull.info().await.unwrap().lag_messages(), 0);
}

// ---------- PostgreSQL ----------

struct PgLedger {
    schema: String,
}

#[async_trait]
impl PgEffect for PgLedger {
    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        m: &Message,
    ) -> Result<(), HandlerError> {
        tx.execute(
            &format!(
                "INSERT INTO \"{}\".effects(key, body) VALUES ($1, $2)",
                self.schema
            ),
            &[
                &m.header(IDEMPOTENCY_KEY_HEADER).unwrap_or_default(),
                &String::from_utf8_lossy(&m.payload).to_string(),
            ],
        )
        .await
        .map_err(HandlerError::retryable)?;
        Ok(())
    }
}

struct Pg {
    pool: deadpool_postgres::Pool,
    schema: String,
}

impl Pg {
    async fn new() -> Self {
        let cfg: tokio_postgres::Config = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
            .parse()
            .unwrap();
        let mgr = deadpool_postgres::Manager::new(cfg, tokio_postgres::NoTls);
        let pool = deadpool_postgres::Pool::builder(mgr)
            .max_size(4)
            .build()
            .unwrap();
        let schema = common::unique("bus_idem_");
        let client = pool.get().await.unwrap();
        client
            .batch_execute(&format!(
                "CREATE SCHEMA \"{schema}\";
                 CREATE TABLE \"{schema}\".effects (id BIGSERIAL PRIMARY KEY, key TEXT NOT NULL, body TEXT NOT NULL);"
            ))
            .await
            .unwrap();
        Pg { pool, schema }
    }

    async fn handler(&self) -> PgIdempotentHandler<PgLedger> {
        PgIdempotentHandler::new(
            self.pool.clone(),
            &self.schema,
            "ledger",
            PgLedger {
                schema: self.schema.clone(),
            },
        )
        .await
        .unwrap()
    }

    async fn counts(&self) -> (i64, i64) {
        let client = self.pool.get().await.unwrap();
        let row = client
            .query_one(
                &format!(
                    "SELECT COUNT(*), COUNT(DISTINCT key) FROM \"{}\".effects",
                    self.schema
                ),
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    async fn drop_schema(&self) {
        let client = self.pool.get().await.unwrap();
        client
            .batch_execute(&format!("DROP SCHEMA \"{}\" CASCADE", self.schema))
            .await
            .unwrap();
    }
}

struct NatsSetup {
    broker: DynBroker,
    stream: String,
    subject: String,
    dlq: DeadLetterConfig,
}

impl NatsSetup {
    async fn new() -> Self {
        let ns = common::unique("i");
        let broker: DynBroker = Arc::new(common::nats().await);
        let stream = format!("IDEM_{ns}");
        broker
            .ensure_stream(&StreamConfig::new(&stream, vec![format!("idem.{ns}.>")]))
            .await
            .unwrap();
        let dlq = DeadLetterConfig::new(format!("DLQ_{ns}"), format!("dlq.{ns}"));
        NatsSetup {
            broker,
            stream,
            subject: format!("idem.{ns}.loan"),
            dlq,
        }
    }

    async fn cleanup(&self) {
        self.broker.delete_stream(&self.stream).await.unwrap();
        // The dead-letter stream exists once a runner has bound.
        let _ = self.broker.delete_stream(&self.dlq.stream).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commands_delivered_twice_have_one_effect() {
    let pg = Pg::new().await;
    let n = NatsSetup::new().await;
    for i in 0..20u64 {
        for copy in 0..2 {
            n.broker
                .publish(command(
                    &n.subject,
                    &format!("m-{i}-{copy}"),
                    &format!("k-{i}"),
                    i,
                ))
                .await
                .unwrap();
        }
    }
    let handler = pg.handler().await;
    let skipped = handler.skipped();
    let mut c = Consumer::new(
        n.broker.clone(),
        ConsumerConfig::new(&n.stream, "ledger"),
        handler,
        options(&n.dlq, Duration::from_millis(300)),
    );
    assert_eq!(c.drain().await.unwrap(), 40);
    assert_eq!(pg.counts().await, (20, 20));
    assert_eq!(skipped.load(Ordering::Relaxed), 20);
    n.cleanup().await;
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_between_effect_and_ack_has_no_duplicate_and_no_loss() {
    let pg = Pg::new().await;
    let n = NatsSetup::new().await;
    for i in 0..30u64 {
        n.broker
            .publish(command(&n.subject, &format!("m-{i}"), &format!("k-{i}"), i))
            .await
            .unwrap();
    }
    let config = ConsumerConfig::new(&n.stream, "ledger").with_ack_wait(Duration::from_secs(1));
    {
        // A separate connection that "crashes": effects commit, acks never leave.
        let crashing: DynBroker = Arc::new(common::nats().await);
        let handler = pg.handler().await;
        let pull = crashing.consumer(&config).await.unwrap();
        let mut batch = Vec::new();
        while batch.len() < 10 {
            batch.extend(
                pull.fetch(10 - batch.len(), Duration::from_secs(2))
                    .await
                    .unwrap(),
            );
        }
        for d in &batch {
            handler.handle(&d.message, &d.info).await.unwrap();
        }
    }
    assert_eq!(pg.counts().await, (10, 10));

    let handler = pg.handler().await;
    let skipped = handler.skipped();
    let mut c = Consumer::new(
        n.broker.clone(),
        config,
        handler,
        options(&n.dlq, Duration::from_secs(3)),
    );
    assert_eq!(c.drain().await.unwrap(), 30, "20 new + 10 redelivered");
    assert_eq!(pg.counts().await, (30, 30), "no duplicate effect, no loss");
    assert_eq!(skipped.load(Ordering::Relaxed), 10);
    n.cleanup().await;
    pg.drop_schema().await;
}
