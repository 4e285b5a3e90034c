//! SQLite backend throughput (durable: WAL + `synchronous=FULL`), against a plain-rusqlite
//! baseline measured in the same run on the same disk.
//!
//! - `sqlite_append/baseline_raw_insert_100`: plain rusqlite, same pragmas, same `events`
//!   columns and indexes, the same 100 rows per transaction through one cached prepared
//!   statement, no store logic (the "raw insert limit").
//! - `sqlite_append/store_batch_100`: `SqliteStore::append` of 100 events (~100-byte JSON).
//! - `sqlite_append/store_64_writers_single`: 64 tokio tasks, each appending single events to
//!   its own stream (group commit folds them into shared transactions).
//! - `sqlite_append_nosync/*`: the same three with `durable: false` / `synchronous=NORMAL`, to
//!   show the store's own overhead once fsync is out of the picture.
//! - after each append group, a `paired (...)` line: baseline and store interleaved round by
//!   round (60 rounds, medians), because fsync latency on a shared disk drifts a lot between
//!   two criterion benches run one after the other; the ratios there are the fair ones.
//! - `sqlite_read/store_read_all_1024`: `read_all` of a 100k-event log in 1024-event pages;
//!   `sqlite_read/baseline_raw_scan`: the same rows selected with plain rusqlite (no decoding).
//!
//! Run: `cargo bench -p attest-store --bench sqlite -- --warm-up-time 1 --measurement-time 3`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attest_core::{EventId, ExpectedVersion, NewEvent, StreamId};
use attest_store::sqlite::SqliteStore;
use attest_store::validate::checksum;
use attest_store::{EventStore, LogFilter, StoreOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::runtime::Runtime;

const BATCH: usize = 100;
const WRITERS: usize = 64;
const PER_WRITER: usize = 16;
const READ_LOG: u64 = 100_000;
const PAGE: usize = 1024;

fn payload(i: u64) -> serde_json::Value {
    serde_json::json!({
        "applicant": format!("app-{i:08}"),
        "amount": 12_500 + i % 1000,
        "term_months": 36,
        "purpose": "home_improvement",
        "score": 0.7312,
    })
}

fn event(i: u64) -> NewEvent {
    NewEvent::json("LoanApplicationSubmitted", &payload(i)).expect("valid event")
}

fn batch(i: u64) -> Vec<NewEvent> {
    (0..BATCH as u64).map(|k| event(i * 1000 + k)).collect()
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The baseline: same pragmas and the same `events` shape as the store's file.
struct Baseline {
    conn: rusqlite::Connection,
    next: i64,
}

impl Baseline {
    fn new(path: &Path, durable: bool) -> Self {
        let conn = rusqlite::Connection::open(path).expect("open baseline");
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .expect("wal");
        assert_eq!(mode, "wal");
        conn.execute_batch(
            "PRAGMA cache_size=-32768; PRAGMA temp_store=MEMORY;
             CREATE TABLE events (
                position INTEGER PRIMARY KEY, stream INTEGER NOT NULL, version INTEGER NOT NULL,
                event_id BLOB NOT NULL, event_type TEXT NOT NULL, schema_id TEXT,
                schema_version INTEGER, content_type TEXT NOT NULL, payload BLOB NOT NULL,
                metadata TEXT, recorded_at INTEGER NOT NULL, checksum INTEGER NOT NULL);
             CREATE UNIQUE INDEX events_stream_version ON events(stream, version);
             CREATE UNIQUE INDEX events_event_id ON events(event_id);",
        )
        .expect("baseline schema");
        conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })
            .expect("synchronous");
        Baseline { conn, next: 1 }
    }

    /// Inserts `events` as stream `stream` (versions from `version`) in one transaction.
    fn insert(&mut self, stream: i64, version: i64, events: &[NewEvent]) {
        self.conn.execute_batch("BEGIN").expect("begin");
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "INSERT INTO events(position, stream, version, event_id, event_type, \
                     schema_id, schema_version, content_type, payload, metadata, recorded_at, \
                     checksum) VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, ?6, ?7, NULL, ?8, ?9)",
                )
                .expect("prepare");
            let now = chrono::Utc::now().timestamp_micros();
            for (k, e) in events.iter().enumerate() {
                stmt.execute(rusqlite::params![
                    self.next,
                    stream,
                    version + k as i64,
                    e.id.as_uuid().as_bytes().as_slice(),
                    e.event_type.as_str(),
                    e.content_type,
                    e.payload,
                    now,
                    i64::from(checksum(&e.content_type, &e.payload)),
                ])
                .expect("insert");
                self.next += 1;
            }
        }
        self.conn.execute_batch("COMMIT").expect("commit");
    }
}

fn append_group(c: &mut Criterion, durable: bool) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let name = if durable {
        "sqlite_append"
    } else {
        "sqlite_append_nosync"
    };
    let options = StoreOptions {
        durable,
        ..Default::default()
    };
    let mut group = c.benchmark_group(name);
    group.sample_size(10);

    // Raw insert limit.
    let mut base = Baseline::new(&dir.path().join("baseline.db"), durable);
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut round = 0u64;
    group.bench_function("baseline_raw_insert_100", |b| {
        b.iter_custom(|iters| {
            let batches: Vec<Vec<NewEvent>> = (0..iters).map(|i| batch(round + i)).collect();
            let start = Instant::now();
            for (i, events) in batches.iter().enumerate() {
                let stream = ((round + i as u64) % 10) as i64;
                let version = ((round + i as u64) / 10 * BATCH as u64) as i64;
                base.insert(stream, version, events);
            }
            round += iters;
            start.elapsed()
        })
    });

    // Store: batches of 100.
    let store =
        SqliteStore::open(dir.path().join("store-batch.db"), options.clone()).expect("open store");
    let streams: Vec<StreamId> = (0..10)
        .map(|i| StreamId::new(format!("loan-{i}")).expect("id"))
        .collect();
    let mut round = 0u64;
    group.bench_function("store_batch_100", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let store = store.clone();
            let streams = streams.clone();
            let first = round;
            round += iters;
            async move {
                let batches: Vec<Vec<NewEvent>> = (0..iters).map(|i| batch(first + i)).collect();
                let start = Instant::now();
                for (i, events) in batches.into_iter().enumerate() {
                    let s = streams[(first as usize + i) % streams.len()].clone();
                    store
                        .append(s, ExpectedVersion::Any, events)
                        .await
                        .expect("append");
                }
                start.elapsed()
            }
        })
    });

    // Store: 64 concurrent single-event writers.
    let store64 =
        SqliteStore::open(dir.path().join("store-64.db"), options.clone()).expect("open store");
    group.throughput(Throughput::Elements((WRITERS * PER_WRITER) as u64));
    group.bench_function("store_64_writers_single", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let store = store64.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..WRITERS)
                        .map(|w| {
                            let store = store.clone();
                            tokio::spawn(async move {
                                let s = StreamId::new(format!("writer-{w}")).expect("id");
                                for k in 0..PER_WRITER {
                                    store
                                        .append(
                                            s.clone(),
                                            ExpectedVersion::Any,
                                            vec![event(k as u64)],
                                        )
                                        .await
                                        .expect("append");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("writer task");
                    }
                    total += start.elapsed();
                }
                total
            }
        })
    });
    group.finish();
    paired(&rt, &mut base, &store, &store64, &streams, durable);
    rt.block_on(async {
        store.close().await;
        store64.close().await;
    });
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn run_64_writers(store: &Arc<SqliteStore>) {
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = StreamId::new(format!("writer-{w}")).expect("id");
                for k in 0..PER_WRITER {
                    store
                        .append(s.clone(), ExpectedVersion::Any, vec![event(k as u64)])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer task");
    }
}

/// Baseline and store interleaved round by round, so both see the same disk and CPU load
/// (fsync latency on a shared disk drifts by several x within a minute). Prints medians.
fn paired(
    rt: &Runtime,
    base: &mut Baseline,
    store: &Arc<SqliteStore>,
    store64: &Arc<SqliteStore>,
    streams: &[StreamId],
    durable: bool,
) {
    const ROUNDS: usize = 60;
    let (mut tb, mut ts, mut tb64, mut t64) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        let events = batch(1_000_000 + r as u64);
        let start = Instant::now();
        base.insert(1_000 + r as i64, 0, &events);
        tb.push(start.elapsed());
        let events = batch(2_000_000 + r as u64);
        let s = streams[r % streams.len()].clone();
        let start = Instant::now();
        rt.block_on(store.append(s, ExpectedVersion::Any, events))
            .expect("append");
        ts.push(start.elapsed());
        if r % 6 == 0 {
            // One 64-writer round (1024 events) against ten baseline transactions (1000 rows).
            let start = Instant::now();
            for k in 0..10 {
                base.insert(
                    100_000 + (r * 10 + k) as i64,
                    0,
                    &batch(3_000_000 + (r * 10 + k) as u64),
                );
            }
            tb64.push(start.elapsed() / 10);
            let start = Instant::now();
            rt.block_on(run_64_writers(store64));
            t64.push(start.elapsed());
        }
    }
    let rate = |d: Duration, n: usize| n as f64 / d.as_secs_f64();
    let fastest = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    println!(
        "paired (durable={durable}) fastest round: raw insert 100 {:?}, store batch_100 {:?}, \
         raw 100 (64-writer rounds) {:?}, store 64 writers x{PER_WRITER} {:?}",
        fastest(&tb),
        fastest(&ts),
        fastest(&tb64),
        fastest(&t64)
    );
    let (b, st, b64, s64) = (median(tb), median(ts), median(tb64), median(t64));
    let (rb, rs, rb64, rs64) = (
        rate(b, BATCH),
        rate(st, BATCH),
        rate(b64, BATCH),
        rate(s64, WRITERS * PER_WRITER),
    );
    println!(
        "paired (durable={durable}, {ROUNDS} rounds, medians): raw insert {rb:.0} ev/s | \
         store batch_100 {rs:.0} ev/s = {:.2}x raw | raw insert (64-writer rounds) {rb64:.0} ev/s | \
         store 64 writers {rs64:.0} ev/s = {:.2}x raw",
        rs / rb,
        rs64 / rb64
    );
}

fn bench_append(c: &mut Criterion) {
    append_group(c, true);
}

/// The same with `durable: false` (`synchronous=NORMAL`): store overhead without fsync.
fn bench_append_nosync(c: &mut Criterion) {
    append_group(c, false);
}

fn bench_read(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("read.db");
    let store = SqliteStore::open(
        &path,
        StoreOptions {
            durable: false,
            ..Default::default()
        },
    )
    .expect("open store");
    rt.block_on(async {
        for i in 0..READ_LOG / BATCH as u64 {
            let s = StreamId::new(format!("loan-{}", i % 50)).expect("id");
            let events: Vec<NewEvent> = batch(i)
                .into_iter()
                .map(|e| e.with_id(EventId::new()))
                .collect();
            store
                .append(s, ExpectedVersion::Any, events)
                .await
                .expect("append");
        }
    });
    let mut group = c.benchmark_group("sqlite_read");
    group.sample_size(10);
    group.throughput(Throughput::Elements(READ_LOG));
    group.bench_function("store_read_all_1024", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let store = store.clone();
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut after = 0;
                    let mut n = 0u64;
                    loop {
                        let page = store
                            .read_all(after, PAGE, &LogFilter::All)
                            .await
                            .expect("read");
                        let Some(last) = page.last() else { break };
                        after = last.position;
                        n += page.len() as u64;
                    }
                    assert_eq!(n, READ_LOG);
                }
                start.elapsed()
            }
        })
    });
    let raw = rusqlite::Connection::open(&path).expect("open raw");
    group.bench_function("baseline_raw_scan", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let mut stmt = raw
                    .prepare_cached(
                        "SELECT position, stream, version, event_id, event_type, content_type, \
                         payload, metadata, recorded_at, checksum FROM events ORDER BY position",
                    )
                    .expect("prepare");
                let mut rows = stmt.query([]).expect("query");
                let mut n = 0u64;
                while let Some(r) = rows.next().expect("row") {
                    let p: &[u8] = r
                        .get_ref(6)
                        .and_then(|v| Ok(v.as_blob()?))
                        .expect("payload");
                    n += p.len() as u64 & 1;
                }
                std::hint::black_box(n);
            }
            start.elapsed()
        })
    });
    group.finish();
    rt.block_on(store.close());
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

criterion_group! { name = benches; config = config(); targets = bench_append, bench_append_nosync, bench_read }
criterion_main!(benches);
