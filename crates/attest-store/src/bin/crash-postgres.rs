//! Crash-test child for the PostgreSQL backend (driven by `tests/postgres_crash.rs`).
//!
//! Usage: `crash-postgres <url> <schema> <round>`. Connects (durable store) and appends forever
//! from several concurrent tasks: every third append goes to one stream, the others are atomic
//! appends to 2 or 3 streams, with ids derived from `(round, task, op, event)`. After each
//! acknowledged append it prints and flushes one line
//! `ack <round> <task> <op> <first_position> <last_position> <stream>:<first>:<last>...`.
//! It is meant to be killed with SIGKILL; it exits by itself only if its stdout closes or an
//! append fails.
//!
//! Each event's JSON payload names its append (`round`, `task`, `op`) and the number of events
//! in that append (`total`), so the checker can recognise a partially visible append without
//! knowing the plan.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use attest_core::{EventId, ExpectedVersion, NewEvent, StreamId};
use attest_store::postgres::{PostgresConfig, PostgresStore};
use attest_store::{EventStore, StoreError, StoreOptions, StreamAppend};

/// Concurrent appending tasks.
const TASKS: u64 = 4;
/// Shared streams the appends spread over.
const STREAMS: u64 = 6;

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser: a deterministic, well-spread choice per (round, task, op).
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Deterministic event id: round, task, op and index packed into the UUID's bits.
fn event_id(round: u64, task: u64, op: u64, index: u64) -> EventId {
    let v = (u128::from(round) << 96)
        | (u128::from(task) << 80)
        | (u128::from(op) << 32)
        | (u128::from(index) << 8)
        | 0x5a;
    EventId::from_uuid(uuid::Uuid::from_u128(v))
}

/// The append `op` of `task` in `round`.
fn plan(round: u64, task: u64, op: u64) -> Result<Vec<StreamAppend>, StoreError> {
    let r =
        mix(round.wrapping_mul(1_000_003) ^ task.wrapping_mul(7_919) ^ op.wrapping_mul(104_729));
    let parts = match op % 3 {
        0 => 1,
        _ => 2 + r % 2,
    };
    let first_stream = (r >> 8) % STREAMS;
    let counts: Vec<u64> = (0..parts).map(|p| 1 + (r >> (16 + 4 * p)) % 3).collect();
    let total: u64 = counts.iter().sum();
    let mut index = 0;
    let mut appends = Vec::with_capacity(counts.len());
    for (p, &n) in counts.iter().enumerate() {
        let stream = StreamId::new(format!("crash-{}", (first_stream + p as u64) % STREAMS))?;
        let mut events = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let body = serde_json::json!({
                "round": round, "task": task, "op": op, "index": index, "total": total,
            });
            events.push(
                NewEvent::json("CrashTested", &body)?.with_id(event_id(round, task, op, index)),
            );
            index += 1;
        }
        appends.push(StreamAppend {
            stream,
            expected: ExpectedVersion::Any,
            events,
        });
    }
    Ok(appends)
}

async fn run_task(
    store: PostgresStore,
    round: u64,
    task: u64,
    out: Arc<Mutex<std::io::Stdout>>,
) -> Result<(), String> {
    for op in 0.. {
        let appends = plan(round, task, op).map_err(|e| e.to_string())?;
        let r = store
            .append_many(appends)
            .await
            .map_err(|e| e.to_string())?;
        let mut line = format!(
            "ack {round} {task} {op} {} {}",
            r.first_position, r.last_position
        );
        for s in &r.streams {
            line.push_str(&format!(
                " {}:{}:{}",
                s.stream, s.first_version, s.last_version
            ));
        }
        let mut out = out.lock().map_err(|_| "stdout lock poisoned".to_string())?;
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("stdout closed: {e}"))?;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(schema), Some(round)) = (
        args.get(1),
        args.get(2),
        args.get(3).and_then(|r| r.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: crash-postgres <url> <schema> <round>");
        return ExitCode::from(2);
    };
    let config = PostgresConfig {
        pool_size: TASKS as usize,
        ..PostgresConfig::default()
    };
    let store =
        match PostgresStore::connect_with(url, schema, StoreOptions::default(), config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("connect failed: {e}");
                return ExitCode::FAILURE;
            }
        };
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| tokio::spawn(run_task(store.clone(), round, t, out.clone())))
        .collect();
    let mut code = ExitCode::SUCCESS;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("append task stopped: {e}");
                code = ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("append task panicked: {e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    code
}
