//! Wake-ups for commits made by *other processes* on the same file.
//!
//! The writer thread publishes every head it commits itself. SQLite has no cross-process
//! notification, so a second process appending to the same file (say `attest store append`
//! while `attest store tail` follows) would otherwise never wake this process's
//! subscriptions. This thread checks `PRAGMA data_version` — a counter SQLite bumps when
//! another connection commits, read without touching any table — every [`POLL`], and only
//! while someone holds a head watch besides the store itself. When it moved, it reads the
//! head row and raises the watch. Commits made by this process never wait on it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use attest_core::Position;
use rusqlite::Connection;
use tokio::sync::watch;

use super::schema;

/// How often another process's commits are looked for while subscriptions exist.
pub const POLL: Duration = Duration::from_millis(25);

/// Raises `head` to `new` if it is higher; returns whether it changed.
pub(crate) fn raise(head: &watch::Sender<Position>, new: Position) -> bool {
    head.send_if_modified(|h| {
        if new > *h {
            *h = new;
            true
        } else {
            false
        }
    })
}

fn read_head(conn: &Connection) -> rusqlite::Result<Position> {
    let h: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'head'", [], |r| {
            r.get(0)
        })
        .unwrap_or(0);
    Ok(u64::try_from(h).unwrap_or(0))
}

/// Starts the watcher thread; it ends when `stop` is set or the watch has no receivers.
pub(crate) fn spawn(
    path: PathBuf,
    head: Arc<watch::Sender<Position>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("attest-sqlite-watcher".into())
        .spawn(move || {
            let mut conn: Option<Connection> = None;
            let mut last_version: Option<i64> = None;
            while !stop.load(Ordering::Relaxed) && !head.is_closed() {
                std::thread::sleep(POLL);
                // The store itself keeps one receiver; more means someone is waiting.
                if head.receiver_count() <= 1 {
                    continue;
                }
                if conn.is_none() {
                    conn = schema::open_ro(&path).ok();
                }
                let Some(c) = &conn else { continue };
                let version: rusqlite::Result<i64> =
                    c.query_row("PRAGMA data_version", [], |r| r.get(0));
                match version {
                    Ok(v) if Some(v) != last_version => {
                        last_version = Some(v);
                        if let Ok(h) = read_head(c) {
                            raise(&head, h);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "sqlite watcher: reopening connection");
                        conn = None;
                    }
                }
            }
        })
}
