//! Crash-test child for the SQLite backend (driven by `tests/sqlite_crash.rs`).
//!
//! Usage: `crash-sqlite <db-path> <round>`. Opens the store (durable) and appends forever from
//! several concurrent tasks, mixing single-stream appends and 2–3-stream atomic appends with
//! deterministic ids and payloads. After each acknowledged append it prints and flushes one
//! line `ack <round> <task> <seq> <first_position> <last_position>`. It is meant to be killed
//! with SIGKILL; it exits by itself only when its stdout is closed.
//!
//! Every event's JSON payload names its append (`round`, `task`, `seq`) and the total number
//! of events of that append (`total`), so a checker can tell a partial append from a whole one
//! without knowing the plan.

use std::io::Write;
use std::process::ExitCode;

use attest_core::{EventId, ExpectedVersion, NewEvent, StreamId};
use attest_store::sqlite::SqliteStore;
use attest_store::{EventStore, StoreError, StoreOptions, StreamAppend};

const TASKS: u16 = 4;

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn event_id(round: u32, task: u16, seq: u32, part: u8, k: u8) -> EventId {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&round.to_be_bytes());
    b[4..6].copy_from_slice(&task.to_be_bytes());
    b[6..10].copy_from_slice(&seq.to_be_bytes());
    b[10] = part;
    b[11] = k;
    b[12..16].copy_from_slice(b"CRSH");
    EventId::from_bytes(b)
}

/// The append number `seq` of `task` in `round`: `(stream, event count)` per part.
fn plan(round: u32, task: u16, seq: u32) -> Vec<(String, u8)> {
    let mut x = xorshift(
        (u64::from(round) << 40) ^ (u64::from(task) << 32) ^ u64::from(seq) ^ 0x5DEE_CE66_D1A4_F87D,
    );
    let mut next = |m: u64| {
        x = xorshift(x);
        x % m
    };
    // Every third append spans 2-3 streams (a `match`, as `is_multiple_of` is newer than MSRV).
    let multi = matches!(seq % 3, 0);
    if multi {
        let parts = 2 + next(2) as u32;
        let base = next(5) as u32;
        (0..parts)
            .map(|j| (format!("acct-{}", (base + j) % 5), 1 + next(3) as u8))
            .collect()
    } else {
        vec![(format!("item-{}", next(7)), 1 + next(4) as u8)]
    }
}

fn build(round: u32, task: u16, seq: u32) -> Result<Vec<StreamAppend>, StoreError> {
    let plan = plan(round, task, seq);
    let total: u32 = plan.iter().map(|(_, n)| u32::from(*n)).sum();
    let mut appends = Vec::with_capacity(plan.len());
    for (part, (stream, n)) in plan.into_iter().enumerate() {
        let part = part as u8;
        let events = (0..n)
            .map(|k| {
                let body = serde_json::json!({
                    "round": round, "task": task, "seq": seq, "part": part, "k": k, "total": total,
                });
                NewEvent::json("CrashTestAppended", &body)
                    .map(|e| e.with_id(event_id(round, task, seq, part, k)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        appends.push(StreamAppend {
            stream: StreamId::new(stream)?,
            expected: ExpectedVersion::Any,
            events,
        });
    }
    Ok(appends)
}

async fn writer(store: std::sync::Arc<SqliteStore>, round: u32, task: u16) -> Result<(), String> {
    for seq in 0u32.. {
        let appends = build(round, task, seq).map_err(|e| e.to_string())?;
        let r = store
            .append_many(appends)
            .await
            .map_err(|e| e.to_string())?;
        let mut out = std::io::stdout().lock();
        // A closed stdout means the parent is gone: stop.
        writeln!(
            out,
            "ack {round} {task} {seq} {} {}",
            r.first_position, r.last_position
        )
        .and_then(|_| out.flush())
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(round)) = (args.get(1), args.get(2).and_then(|r| r.parse::<u32>().ok()))
    else {
        eprintln!("usage: crash-sqlite <db-path> <round>");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crash-sqlite: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let store = SqliteStore::open(path, StoreOptions::default()).map_err(|e| e.to_string())?;
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| tokio::spawn(writer(store.clone(), round, t)))
            .collect();
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash-sqlite: {e}");
            ExitCode::FAILURE
        }
    }
}
