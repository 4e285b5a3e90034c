//! `attest keys create|list|revoke`: API keys for `attest serve`.
//!
//! Keys live in `<data-dir>/auth.db` (embedded) or in table `api_keys` of the `--pg-schema`
//! schema (with `--postgres`), where every `attest serve` process sharing the database sees
//! them. Only a SHA-256 of each key's secret is stored: `create` prints the key once.

use anyhow::{bail, Context};
use attest_server::auth::parse_scopes;
use attest_server::{ApiKeyInfo, KeyStore};
use chrono::SecondsFormat;
use clap::Subcommand;
use serde_json::json;

use crate::GlobalArgs;

/// `attest keys` subcommands.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key with scopes (decide, read, admin) and print it once.
    Create {
        /// Comma-separated scopes: decide, read, admin (admin grants all).
        #[arg(long)]
        scopes: String,
        /// A name to recognise the key by (who or what uses it).
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id; it stops working at once.
    Revoke {
        /// The key id (the 16 hex digits after `atk_`).
        id: String,
    },
}

/// Opens the key table the global flags select.
pub async fn open_keys(g: &GlobalArgs) -> anyhow::Result<KeyStore> {
    match &g.postgres {
        Some(url) => KeyStore::open_postgres(url, &g.pg_schema)
            .await
            .with_context(|| format!("opening the API keys in schema {}", g.pg_schema)),
        None => KeyStore::open_sqlite(&g.data_dir).await.with_context(|| {
            format!(
                "opening the API keys in {}",
                g.data_dir.join("auth.db").display()
            )
        }),
    }
}

fn scopes_str(k: &ApiKeyInfo) -> String {
    k.scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs a `keys` subcommand.
pub async fn run(cmd: KeysCommand, g: &GlobalArgs) -> anyhow::Result<()> {
    let keys = open_keys(g).await?;
    match cmd {
        KeysCommand::Create { scopes, name } => {
            let scopes = parse_scopes(&scopes)?;
            let created = keys.create(&name, &scopes).await?;
            if g.json {
                println!(
                    "{}",
                    json!({ "id": created.info.id, "name": created.info.name,
                            "scopes": created.info.scopes, "key": created.key })
                );
            } else {
                println!("{}", created.key);
                eprintln!(
                    "created key {} with scopes {} — it is shown only once; send it as `Authorization: Bearer <key>`",
                    created.info.id,
                    scopes_str(&created.info)
                );
            }
        }
        KeysCommand::List => {
            let list = keys.list().await?;
            if g.json {
                println!("{}", serde_json::to_string(&list)?);
            } else if list.is_empty() {
                println!("no API keys (create one with `attest keys create --scopes decide,read`)");
            } else {
                println!(
                    "{:<16}  {:<18}  {:<20}  {:<20}  status",
                    "id", "scopes", "name", "created"
                );
                for k in list {
                    let status = match k.revoked_at {
                        Some(t) => {
                            format!("revoked {}", t.to_rfc3339_opts(SecondsFormat::Secs, true))
                        }
                        None => "active".to_string(),
                    };
                    println!(
                        "{:<16}  {:<18}  {:<20}  {:<20}  {status}",
                        k.id,
                        scopes_str(&k),
                        k.name,
                        k.created_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            if !keys.revoke(&id).await? {
                bail!("no active API key with id {id:?}");
            }
            if g.json {
                println!("{}", json!({ "revoked": id }));
            } else {
                println!("revoked {id}");
            }
        }
    }
    Ok(())
}
