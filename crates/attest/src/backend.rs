//! Opens the event store the global flags select: embedded SQLite by default, PostgreSQL with
//! `--postgres`.

use std::sync::Arc;

use anyhow::Context;
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
