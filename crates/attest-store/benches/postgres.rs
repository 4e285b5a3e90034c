//! PostgreSQL backend throughput, against plain tokio-postgres baselines measured in the same
//! run on the same server and table shape.
//!
//! - `pg_append_batch/store_100`: `PostgresStore::append` of 100 events (~100-byte JSON).
//! - `pg_append_batch/baseline_100`: the same rows inserted with one multi-row `INSERT ...
//!   SELECT FROM unnest(...)` per transaction into a table `LIKE events INCLUDING ALL`, no
//!   store logic.
//! - 16 concurrent writers appending single events for a fixed time (store, and a baseline of
//!   single-row insert transactions with positions from a sequence): throughput and p50/p99
//!   latency, printed (collected per append, not by criterion).
//!
//! Run: `cargo bench -p attest-store --bench postgres -- --warm-up-time 1 --measurement-time 3`

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attest_core::{ExpectedVersion, NewEvent, StreamId};
use attest_store::postgres::PostgresStore;
use attest_store::validate::checksum;
use attest_store::{EventStore, StoreOptions};
use criterion::{Criterion, Throughput};
use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

const URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const BATCH: usize = 100;
const WRITERS: usize = 16;

fn payload(i: u64) -> serde_json::Value {
    serde_json::json!({
        "applicant": format!("app-{i:08}"),
        "amount": 12_500 + i % 1000,
        "term_months": 36,
        "purpose": "home_improvement",
        "score": 0.7312,
    })
}

fn batch(i: u64) -> Vec<NewEvent> {
    (0..BATCH as u64)
        .map(|k| {
            NewEvent::json("LoanApplicationSubmitted", &payload(i * 1000 + k)).expect("valid event")
        })
        .collect()
}

async fn raw_client() -> Client {
    let (client, conn) = tokio_postgres::connect(URL, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// The baseline: same columns and indexes as the store's `events` table.
struct Baseline {
    client: Client,
    insert: tokio_postgres::Statement,
    next: AtomicI64,
}

impl Baseline {
    async fn new(schema: &str) -> Self {
        let client = raw_client().await;
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS \"{schema}\".baseline; \
                 CREATE TABLE \"{schema}\".baseline (LIKE \"{schema}\".events INCLUDING ALL);"
            ))
            .await
            .expect("baseline table");
        let insert = client
            .prepare(&format!(
                "INSERT INTO \"{schema}\".baseline (position, event_id, stream_id, category, version, \
                   event_type, schema_id, schema_version, content_type, payload, metadata, checksum, \
                   recorded_us) \
                 SELECT u.position, u.event_id, u.stream_id, 'bench', u.version, u.event_type, NULL, \
                   NULL, 'application/json', u.payload, NULL, u.checksum, 0 \
                 FROM unnest($1::int8[], $2::uuid[], $3::text[], $4::int8[], $5::text[], $6::bytea[], \
                   $7::int8[]) AS u(position, event_id, stream_id, version, event_type, payload, checksum)"
            ))
            .await
            .expect("prepare baseline insert");
        Baseline {
            client,
            insert,
            next: AtomicI64::new(1),
        }
    }

    async fn insert(&mut self, stream: &str, events: &[NewEvent]) {
        let n = events.len() as i64;
        let first = self.next.fetch_add(n, Ordering::Relaxed);
        let positions: Vec<i64> = (first..first + n).collect();
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| *e.id.as_uuid()).collect();
        let streams: Vec<&str> = vec![stream; events.len()];
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let payloads: Vec<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
        let sums: Vec<i64> = events
            .iter()
            .map(|e| i64::from(checksum(&e.content_type, &e.payload)))
            .collect();
        let tx = self.client.transaction().await.expect("begin");
        tx.execute(
            &self.insert,
            &[
                &positions, &ids, &streams, &positions, &types, &payloads, &sums,
            ],
        )
        .await
        .expect("baseline insert");
        tx.commit().await.expect("commit");
    }
}

fn schema_name() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("bench_pg_{secs}_{}", std::process::id())
}

fn append_batches(c: &mut Criterion, rt: &Runtime, store: &PostgresStore) {
    let mut baseline = rt.block_on(Baseline::new(store.schema()));
    let mut group = c.benchmark_group("pg_append_batch");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut i = 0u64;
    group.bench_function("store_100", |b| {
        b.to_async(rt).iter(|| {
            i += 1;
            let stream = StreamId::new(format!("bench-{}", i % 512)).expect("valid stream");
            let events = batch(i);
            let store = store.clone();
            async move {
                store
                    .append(stream, ExpectedVersion::Any, events)
                    .await
                    .expect("append")
            }
        })
    });
    let mut j = 0u64;
    group.bench_function("baseline_100", |b| {
        b.iter(|| {
            j += 1;
            let events = batch(j);
            let stream = format!("bench-{}", j % 512);
            rt.block_on(baseline.insert(&stream, &events));
        })
    });
    group.finish();
}

/// Percentile of sorted latencies.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, elapsed: Duration, mut lat: Vec<Duration>) -> f64 {
    lat.sort_unstable();
    let rate = lat.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{name}: {WRITERS} writers, {} appends in {:.2}s = {rate:.0} appends/s; latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        lat.len(),
        elapsed.as_secs_f64(),
        pct(&lat, 0.50).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    rate
}

async fn concurrent_store(store: &PostgresStore, run: Duration) -> (Duration, Vec<Duration>) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let stream = StreamId::new(format!("conc-{t}")).expect("valid stream");
                let mut k = 0u64;
                while start.elapsed() < run {
                    k += 1;
                    let e = NewEvent::json("Ticked", &payload(k)).expect("valid event");
                    let t0 = Instant::now();
                    store
                        .append(stream.clone(), ExpectedVersion::Any, vec![e])
                        .await
                        .expect("append");
                    lat.push(t0.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer task"));
    }
    (start.elapsed(), all)
}

async fn concurrent_baseline(schema: &str, run: Duration) -> (Duration, Vec<Duration>) {
    let admin = raw_client().await;
    admin
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS \"{schema}\".baseline_conc; \
             CREATE TABLE \"{schema}\".baseline_conc (LIKE \"{schema}\".events INCLUDING ALL); \
             CREATE SEQUENCE IF NOT EXISTS \"{schema}\".baseline_seq;"
        ))
        .await
        .expect("baseline table");
    let sql = Arc::new(format!(
        "INSERT INTO \"{schema}\".baseline_conc (position, event_id, stream_id, category, version, \
           event_type, content_type, payload, checksum, recorded_us) \
         VALUES (nextval('\"{schema}\".baseline_seq'), $1, $2, 'conc', $3, 'Ticked', \
           'application/json', $4, $5, 0)"
    ));
    let start = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|t| {
            let sql = sql.clone();
            tokio::spawn(async move {
                let mut client = raw_client().await;
                let stmt = client.prepare(&sql).await.expect("prepare");
                let stream = format!("conc-{t}");
                let mut lat = Vec::new();
                let mut k = 0i64;
                while start.elapsed() < run {
                    let e = NewEvent::json("Ticked", &payload(k as u64)).expect("valid event");
                    let sum = i64::from(checksum(&e.content_type, &e.payload));
                    let t0 = Instant::now();
                    let tx = client.transaction().await.expect("begin");
                    tx.execute(&stmt, &[e.id.as_uuid(), &stream, &k, &e.payload, &sum])
                        .await
                        .expect("insert");
                    tx.commit().await.expect("commit");
                    lat.push(t0.elapsed());
                    k += 1;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer task"));
    }
    (start.elapsed(), all)
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let schema = schema_name();
    let store = rt
        .block_on(PostgresStore::connect(
            URL,
            &schema,
            StoreOptions::default(),
        ))
        .expect("connect");
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    append_batches(&mut c, &rt, &store);

    // Outside criterion: fixed-time runs with per-append latencies (short in `cargo test`).
    let run = if bench_mode {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(200)
    };
    let (elapsed, lat) = rt.block_on(concurrent_store(&store, run));
    let ours = report("pg_concurrent_single/store", elapsed, lat);
    let (elapsed, lat) = rt.block_on(concurrent_baseline(&schema, run));
    let base = report("pg_concurrent_single/baseline", elapsed, lat);
    println!(
        "pg_concurrent_single: store / baseline throughput = {:.2}",
        ours / base.max(1e-9)
    );

    c.final_summary();
    drop(store);
    rt.block_on(async {
        let admin = raw_client().await;
        if let Err(e) = admin
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await
        {
            eprintln!("could not drop bench schema {schema}: {e}");
        }
    });
}
