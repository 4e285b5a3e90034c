//! `attest models`: the model registry (versions kept as events in stream `model-<name>` of
//! the selected store, so every process sharing it sees them).
//!
//! - `attest models add --name credit --format xgboost --file m.json [--reference ref.csv]
//!   [--threshold 0.5] [--activate]`: registers a version (the artifact must load; feature
//!   ranges are derived from the reference sample, which also serves as drift reference and
//!   explanation background);
//! - `attest models list [--name credit]`: versions, with the active one marked;
//! - `attest models activate --name credit --version 2`: switches the deciding version
//!   (running servers pick it up on their next registry refresh).

use std::path::PathBuf;

use anyhow::{bail, Context};
use attest_lending::events::ModelFormat;
use attest_lending::registry::{artifact_feature_names, RegisterModel, Registry};
use clap::{Args, Subcommand};

use crate::backend::open_store;
use crate::GlobalArgs;

/// `attest models` subcommands.
#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Register a model version from a file.
    Add(AddArgs),
    /// List registered versions.
    List(ListArgs),
    /// Make a version the active one.
    Activate(ActivateArgs),
}

/// Options of `attest models add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Registry name (1 to 64 characters of [A-Za-z0-9_.]).
    #[arg(long, default_value = "credit")]
    pub name: String,
    /// Artifact format: xgboost (JSON), lightgbm (text) or linear (attest JSON).
    #[arg(long)]
    pub format: String,
    /// The model file.
    #[arg(long)]
    pub file: PathBuf,
    /// CSV with a header naming the model's features (extra columns are ignored): the
    /// reference sample (feature ranges, drift reference, explanation background).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Decline when the predicted probability of default is at least this.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// Activate the new version right away.
    #[arg(long)]
    pub activate: bool,
    /// Provenance text stored with the version.
    #[arg(long, default_value = "")]
    pub description: String,
}

/// Options of `attest models list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this name (default: every name).
    #[arg(long)]
    pub name: Option<String>,
}

/// Options of `attest models activate`.
#[derive(Args, Debug)]
pub struct ActivateArgs {
    /// Registry name.
    #[arg(long, default_value = "credit")]
    pub name: String,
    /// Version to activate.
    #[arg(long)]
    pub version: u32,
}

/// Runs an `attest models` subcommand.
pub async fn run(cmd: ModelsCommand, g: &GlobalArgs) -> anyhow::Result<()> {
    let store = open_store(g).await?;
    let registry = Registry::new(store);
    match cmd {
        ModelsCommand::Add(a) => add(&registry, a, g.json).await,
        ModelsCommand::List(a) => list(&registry, a, g.json).await,
        ModelsCommand::Activate(a) => {
            registry.activate(&a.name, a.version).await?;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({ "name": a.name, "version": a.version, "active": true })
                );
            } else {
                println!("activated {} v{}", a.name, a.version);
            }
            Ok(())
        }
    }
}

async fn add(registry: &Registry, a: AddArgs, json: bool) -> anyhow::Result<()> {
    let format: ModelFormat = a.format.parse().map_err(anyhow::Error::msg)?;
    let artifact = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading model file {}", a.file.display()))?;
    let reference = match &a.reference {
        None => Vec::new(),
        Some(path) => {
            let names = artifact_feature_names(format, &artifact)?;
            let table = attest_ai::data::Table::read_csv(path)?;
            let m = table.matrix(&names)?;
            if m.n_rows() == 0 {
                bail!("reference sample {} has no rows", path.display());
            }
            m.rows().map(<[f64]>::to_vec).collect()
        }
    };
    let r = registry
        .register(RegisterModel {
            name: a.name.clone(),
            format,
            artifact,
            features: None,
            threshold: a.threshold,
            reference,
            description: if a.description.is_empty() {
                format!("added from {}", a.file.display())
            } else {
                a.description
            },
            activate: a.activate,
        })
        .await?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "name": r.id, "version": r.version, "activated": a.activate })
        );
    } else {
        println!(
            "registered {} v{}{}",
            r.id,
            r.version,
            if a.activate { " (active)" } else { "" }
        );
    }
    Ok(())
}

async fn list(registry: &Registry, a: ListArgs, json: bool) -> anyhow::Result<()> {
    let names = match a.name {
        Some(n) => vec![n],
        None => registry.names().await?,
    };
    let mut all = Vec::new();
    for n in &names {
        all.extend(registry.versions(n).await?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no models registered (attest serve installs the built-in `credit` model)");
        return Ok(());
    }
    println!(
        "{:<16} {:>7} {:<8} {:>9} {:>8} {:>9}  {:<12} ACTIVE",
        "NAME", "VERSION", "FORMAT", "THRESHOLD", "FEATURES", "REF ROWS", "SHA256"
    );
    for v in all {
        println!(
            "{:<16} {:>7} {:<8} {:>9} {:>8} {:>9}  {:<12} {}",
            v.model.id,
            v.model.version,
            v.format.to_string(),
            v.threshold,
            v.n_features,
            v.reference_rows,
            &v.sha256[..12.min(v.sha256.len())],
            if v.active { "*" } else { "" }
        );
    }
    Ok(())
}
