//! Opens the event store the global flags select: embedded SQLite by default, PostgreSQL with
//! `--postgres`; and the message broker: NATS JetStream with `--nats`, else the embedded broker
//! beside the SQLite store.

use std::sync::Arc;

use anyhow::{bail, Context};
use attest_bus::embedded::EmbeddedBroker;
use attest_bus::nats::NatsBroker;
use attest_bus::DynBroker;
use attest_store::postgres::PostgresStore;
use attest_store::sqlite::SqliteStore;
use attest_store::{EventStore, StoreOptions};

use crate::GlobalArgs;

/// Opens (creating if needed) the selected store.
pub async fn open_store(g: &GlobalArgs) -> anyhow::Result<Arc<dyn EventStore>> {
    let options = StoreOptions::default();
    match &g.postgres {
        Some(url) => {
            let store = PostgresStore::connect(url, &g.pg_schema, options)
                .await
                .with_context(|| format!("connecting to PostgreSQL (schema {})", g.pg_schema))?;
            Ok(Arc::new(store))
        }
        None => {
            std::fs::create_dir_all(&g.data_dir)
                .with_context(|| format!("creating data directory {}", g.data_dir.display()))?;
            let path = g.data_dir.join("events.db");
            let store = SqliteStore::open(&path, options)
                .with_context(|| format!("opening {}", path.display()))?;
            Ok(store)
        }
    }
}

/// An opened broker, plus the event store it runs on when it is the embedded one.
pub struct OpenBroker {
    /// The broker.
    pub broker: DynBroker,
    /// The store holding the embedded broker's messages (`None` for NATS).
    pub store: Option<Arc<dyn EventStore>>,
}

/// Opens the selected broker: NATS at `--nats`, else the embedded broker over the SQLite store
/// `<data-dir>/events.db`, with its ack state in `<data-dir>/events.db.bus`.
pub async fn open_broker(g: &GlobalArgs) -> anyhow::Result<OpenBroker> {
    if let Some(url) = &g.nats {
        let broker = NatsBroker::connect(url)
            .await
            .with_context(|| format!("connecting to NATS at {url}"))?;
        return Ok(OpenBroker {
            broker: Arc::new(broker),
            store: None,
        });
    }
    if g.postgres.is_some() {
        bail!("the embedded broker runs on the embedded (SQLite) store; with --postgres, pass --nats URL");
    }
    let store = open_store(g).await?;
    let path = g.data_dir.join("events.db");
    let broker = EmbeddedBroker::open_beside(store.clone(), &path)
        .await
        .with_context(|| format!("opening the embedded broker beside {}", path.display()))?;
    Ok(OpenBroker {
        broker: Arc::new(broker),
        store: Some(store),
    })
}

/// A human description of where the store lives.
pub fn describe(g: &GlobalArgs) -> String {
    match &g.postgres {
        Some(url) => format!("postgres {} (schema {})", redact(url), g.pg_schema),
        None => format!("sqlite {}", g.data_dir.join("events.db").display()),
    }
}

fn redact(url: &str) -> String {
    // Hide a password in postgres://user:pass@host/db.
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
