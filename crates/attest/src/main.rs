//! `attest`: the command-line entry point.
//!
//! Subcommands live in `cmd/`, one module each; this file only parses arguments, sets up
//! logging, and maps errors to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backend;
mod cmd;

/// Attest: an event-sourced platform for accountable decisions.
#[derive(Parser, Debug)]
#[command(name = "attest", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand understands.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Directory of the embedded (SQLite) store.
    #[arg(
        long,
        global = true,
        env = "ATTEST_DATA_DIR",
        default_value = "./attest-data"
    )]
    pub data_dir: std::path::PathBuf,
    /// Use the PostgreSQL backend at this URL instead of the embedded store
    /// (e.g. postgres://postgres@127.0.0.1:5432/postgres).
    #[arg(long, global = true, env = "ATTEST_POSTGRES_URL")]
    pub postgres: Option<String>,
    /// PostgreSQL schema holding Attest's tables.
    #[arg(
        long,
        global = true,
        env = "ATTEST_PG_SCHEMA",
        default_value = "attest"
    )]
    pub pg_schema: String,
    /// Use the NATS JetStream broker at this URL instead of the embedded broker
    /// (e.g. nats://127.0.0.1:4222).
    #[arg(long, global = true, env = "ATTEST_NATS_URL")]
    pub nats: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Event store tools: init, append, read, tail, stats.
    #[command(subcommand)]
    Store(cmd::store::StoreCommand),
    /// Explain a model's predictions (TreeSHAP, KernelSHAP, LIME, linear SHAP).
    Explain(cmd::explain::ExplainArgs),
    /// Fairness audit of predictions by sensitive group.
    Audit(cmd::audit::AuditArgs),
    /// Dead letters: list and replay.
    #[command(subcommand)]
    Dlq(cmd::dlq::DlqCommand),
    /// Consumer and projection lag, with status (OK, WARN, STALL, STOP).
    Lag(cmd::lag::LagArgs),
    /// Run the lending decision service: event store, auditor, HTTP API and dashboard.
    Serve(cmd::serve::ServeArgs),
    /// API keys for `attest serve`: create, list, revoke.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Drive a running server with synthetic loan applications and their outcomes
    /// (`attest demo train`: train the built-in credit model).
    Demo(DemoArgs),
    /// The model registry: add, list, activate versions.
    #[command(subcommand)]
    Models(cmd::models::ModelsCommand),
    /// Open-loop load generator for the HTTP API.
    #[command(subcommand)]
    Loadgen(cmd::loadgen::LoadgenCommand),
}

/// `attest demo [options]` runs the demo; `attest demo train` trains the default model.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct DemoArgs {
    #[command(subcommand)]
    command: Option<DemoCommand>,
    #[command(flatten)]
    run: cmd::demo::DemoRunArgs,
}

#[derive(Subcommand, Debug)]
enum DemoCommand {
    /// Train the built-in credit model on synthetic data, bit for bit reproducibly.
    Train(cmd::demo_train::DemoTrainArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ATTEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let json = cli.global.json;
    let result = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cmd::report_error(&e, json);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Store(c) => cmd::store::run(c, &cli.global).await,
        Command::Explain(a) => cmd::explain::run(a, &cli.global).await,
        Command::Audit(a) => cmd::audit::run(a, &cli.global).await,
        Command::Dlq(c) => cmd::dlq::run(c, &cli.global).await,
        Command::Lag(a) => cmd::lag::run(a, &cli.global).await,
        Command::Serve(a) => cmd::serve::run(a, &cli.global).await,
        Command::Keys(c) => cmd::keys::run(c, &cli.global).await,
        Command::Demo(DemoArgs {
            command: Some(DemoCommand::Train(a)),
            ..
        }) => cmd::demo_train::run(a, &cli.global).await,
        Command::Demo(DemoArgs { run, .. }) => cmd::demo::run(run, &cli.global).await,
        Command::Models(c) => cmd::models::run(c, &cli.global).await,
        Command::Loadgen(c) => cmd::loadgen::run(c, &cli.global).await,
    }
}
