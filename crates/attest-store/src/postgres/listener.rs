//! The LISTEN connection that turns other processes' commits into head-watch updates.
//!
//! One dedicated connection (outside the pool) runs `LISTEN "<schema>_head"`; every append
//! transaction runs `pg_notify('<schema>_head', last_position)`, which PostgreSQL delivers at
//! commit, in commit order. The connection is driven by hand with
//! [`tokio_postgres::Connection::poll_message`] so notifications surface as
//! [`AsyncMessage::Notification`]. If the connection drops, the task reconnects with
//! exponential backoff, and after each (re)connect it LISTENs *first* and then re-reads the
//! committed head: a commit before the LISTEN is covered by the head read, one after it by a
//! notification, so no wake-up is lost.

use std::sync::Arc;
use std::time::Duration;

use attest_core::Position;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

/// First reconnect delay.
const BACKOFF_START: Duration = Duration::from_millis(50);
/// Largest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Raises the watched head to `position` if it is newer.
pub(crate) fn bump(head: &watch::Sender<Position>, position: Position) {
    head.send_if_modified(|h| {
        if position > *h {
            *h = position;
            true
        } else {
            false
        }
    });
}

/// Spawns the listener task; it runs until aborted.
pub(crate) fn spawn(
    config: tokio_postgres::Config,
    channel: String,
    head_sql: String,
    head: Arc<watch::Sender<Position>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = BACKOFF_START;
        loop {
            match listen_once(&config, &channel, &head_sql, &head).await {
                Ok(true) => {
                    backoff = BACKOFF_START;
                    tracing::warn!(%channel, "head listener connection closed; reconnecting");
                }
                Ok(false) => {
                    tracing::warn!(%channel, "head listener connection closed during setup");
                }
                Err(e) => {
                    tracing::warn!(%channel, error = %e, "head listener failed; reconnecting");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    })
}

/// One connection's life: connect, LISTEN, read the head, then forward notifications until
/// the connection ends. Returns whether the setup completed before it ended.
async fn listen_once(
    config: &tokio_postgres::Config,
    channel: &str,
    head_sql: &str,
    head: &watch::Sender<Position>,
) -> Result<bool, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen = format!("LISTEN \"{channel}\"");
    let setup = async {
        client.batch_execute(&listen).await?;
        let row = client.query_one(head_sql, &[]).await?;
        row.try_get::<_, i64>(0)
    };
    tokio::pin!(setup);
    let mut ready = false;
    loop {
        tokio::select! {
            r = &mut setup, if !ready => {
                let position = r?;
                bump(head, u64::try_from(position).unwrap_or(0));
                ready = true;
                tracing::debug!(%channel, position, "head listener ready");
            }
            msg = messages.next() => match msg {
                Some(Ok(AsyncMessage::Notification(n))) => match n.payload().parse::<u64>() {
                    Ok(p) => bump(head, p),
                    Err(_) => tracing::warn!(payload = n.payload(), "unexpected head notification"),
                },
                Some(Ok(AsyncMessage::Notice(notice))) => {
                    tracing::debug!(message = notice.message(), "notice on listener connection");
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(ready),
            },
        }
    }
}
