//! `attest demo train`: trains the built-in credit model on synthetic data, deterministically.
//!
//! The data comes from [`attest_lending::synth`] (seeded, bias 0); the learner is attest-ai's
//! gradient-boosted trees (single-threaded, no randomness), so the same `--seed` and `--rows`
//! give the same bytes on every run. The output is an XGBoost JSON model (loadable by XGBoost
//! and by `attest models add --format xgboost`); `--reference` also writes the reference sample
//! as CSV.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use attest_lending::default_model::{train_default, DEFAULT_ROWS, DEFAULT_SEED};
use clap::Args;

use crate::GlobalArgs;

/// Options of `attest demo train`.
#[derive(Args, Debug, Clone)]
pub struct DemoTrainArgs {
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Rows to generate (80 % train, 20 % held out for the reported AUC).
    #[arg(long, default_value_t = DEFAULT_ROWS)]
    pub rows: usize,
    /// Where to write the XGBoost JSON model.
    #[arg(long, default_value = "credit-model.json")]
    pub out: PathBuf,
    /// Also write the reference sample (CSV with a header) here.
    #[arg(long)]
    pub reference: Option<PathBuf>,
}

/// Runs `attest demo train`.
pub async fn run(args: DemoTrainArgs, g: &GlobalArgs) -> anyhow::Result<()> {
    let (seed, rows) = (args.seed, args.rows);
    let started = std::time::Instant::now();
    let trained = tokio::task::spawn_blocking(move || train_default(seed, rows))
        .await
        .context("training task")??;
    let elapsed = started.elapsed();
    std::fs::write(&args.out, trained.xgboost_json.as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    if let Some(path) = &args.reference {
        let mut f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        writeln!(f, "{}", attest_lending::synth::feature_names().join(","))?;
        for row in &trained.reference {
            let cells: Vec<String> = row.iter().map(|x| x.to_string()).collect();
            writeln!(f, "{}", cells.join(","))?;
        }
    }
    let sha = attest_lending::registry::sha256_hex(trained.xgboost_json.as_bytes());
    if g.json {
        println!(
            "{}",
            serde_json::json!({
                "out": args.out,
                "seed": seed,
                "rows": rows,
                "trees": trained.model.ensemble.trees.len(),
                "holdout_auc": trained.holdout_auc,
                "baseline_auc": trained.baseline_auc,
                "sha256": sha,
                "seconds": elapsed.as_secs_f64(),
            })
        );
    } else {
        println!(
            "trained {} trees on {} rows (seed {seed}) in {:.2} s",
            trained.model.ensemble.trees.len(),
            rows * 4 / 5,
            elapsed.as_secs_f64()
        );
        println!(
            "held-out AUC {:.4} (baseline debt-to-income only: {:.4})",
            trained.holdout_auc, trained.baseline_auc
        );
        println!("wrote {} (sha256 {sha})", args.out.display());
        println!(
            "register it with: attest models add --name credit --format xgboost --file {}{}",
            args.out.display(),
            args.reference
                .as_ref()
                .map(|r| format!(" --reference {}", r.display()))
                .unwrap_or_default()
        );
    }
    Ok(())
}
