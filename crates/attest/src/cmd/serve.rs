//! `attest serve`: the event store, the lending service and the HTTP API in one process.
//!
//! Embedded by default (SQLite in `--data-dir`); `--postgres URL` switches the store, the key
//! vault and the API keys to PostgreSQL. API keys are required on any non-loopback `--bind`
//! (and with `--require-auth`); the server refuses to start if none exists. Ctrl-C or SIGTERM
//! stops accepting connections and lets in-flight requests finish.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use attest_lending::audit::{spawn_auditor, AuditMetrics, AuditorConfig};
use attest_lending::{LendingConfig, LendingService};
use attest_server::dashboard::audit_view::SnapshotAuditSource;
use attest_server::dashboard::Dashboard;
use attest_server::{ApiBuilder, AppState, AuthPolicy, Server};
use clap::Args;

use crate::backend::{describe, open_store};
use crate::cmd::keys::open_keys;
use crate::GlobalArgs;

/// Options of `attest serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on; a non-loopback address requires API keys.
    #[arg(long, env = "ATTEST_BIND", default_value = "127.0.0.1:7878")]
    pub bind: SocketAddr,
    /// Require API keys on loopback too.
    #[arg(long)]
    pub require_auth: bool,
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs, g: &GlobalArgs) -> anyhow::Result<()> {
    // Refuse an unauthenticated public bind before opening anything else.
    let keys = open_keys(g).await?;
    let policy = AuthPolicy::for_bind(args.bind, args.require_auth, &keys).await?;
    let store = open_store(g).await?;
    let config = match &g.postgres {
        Some(url) => LendingConfig::postgres(store.clone(), &g.data_dir, url, &g.pg_schema),
        None => LendingConfig::embedded(store.clone(), &g.data_dir),
    };
    let lending = LendingService::open(config)
        .await
        .context("opening the lending service")?;
    let state = AppState::builder(lending.clone(), store.clone(), keys, policy).build();

    // The auditor: a stream job on the global log, never on the request path. With
    // PostgreSQL, several `attest serve` processes share one auditor through a lease.
    let metrics = AuditMetrics::new();
    match state.registry().lock() {
        Ok(mut registry) => metrics.register(&mut registry),
        Err(_) => anyhow::bail!("metrics registry lock poisoned"),
    }
    let mut audit_config = match &g.postgres {
        Some(url) => AuditorConfig::postgres(
            store.clone(),
            lending.vault().clone(),
            url,
            &g.pg_schema,
            format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
                std::process::id()
            ),
        ),
        None => AuditorConfig::embedded(
            store.clone(),
            lending.vault().clone(),
            g.data_dir.join("audit"),
        ),
    };
    audit_config.metrics = Some(metrics);
    let auditor = Arc::new(
        spawn_auditor(audit_config)
            .await
            .context("starting the auditor")?,
    );
    let reader = auditor.clone();
    state
        .audit()
        .install(Arc::new(SnapshotAuditSource::new(move || {
            reader.snapshot()
        })));

    // Pick up a model version activated by `attest models activate` (possibly from another
    // process sharing the store) within a few seconds.
    let reloader = {
        let lending = lending.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = lending.reload_active_model().await {
                    tracing::warn!(error = %e, "reloading the active model failed");
                }
            }
        })
    };

    // Scale-out: with --nats, the global log is also published to JetStream (subjects
    // `attest.events.<category>`, message id = event id, so the relays of several processes
    // de-duplicate each other within the stream's duplicate window) for consumers elsewhere.
    let relay = match &g.nats {
        Some(_) => Some(spawn_global_log_relay(g, store.clone()).await?),
        None => None,
    };

    let dashboard = Dashboard::start(store.clone());
    let router = ApiBuilder::new(state.clone())
        .merge(dashboard.router(&state))
        .build();
    let server = Server::bind(args.bind, policy, router).await?;
    let model = state.lending().active_model();
    println!(
        "attest serving on http://{} — store {}, model {}, API keys {}",
        server.local_addr(),
        describe(g),
        model,
        match policy {
            AuthPolicy::Required => "required",
            AuthPolicy::Optional => "optional (loopback)",
        }
    );
    let served = server.run(shutdown_signal()).await;
    reloader.abort();
    if let Some(relay) = relay {
        relay.abort();
    }
    drop(state);
    drop(dashboard);
    // Stop the auditor gracefully (final checkpoint, lease released) once nothing else
    // holds it; if something still does, its last periodic checkpoint stands and a restart
    // replays from there without double counting.
    match Arc::try_unwrap(auditor) {
        Ok(auditor) => {
            if let Err(e) = auditor.stop().await {
                tracing::warn!(error = %e, "auditor did not stop cleanly");
            }
        }
        Err(_) => tracing::warn!("auditor still referenced at shutdown; not stopped gracefully"),
    }
    served?;
    println!("attest stopped");
    Ok(())
}

/// Starts the global-log relay to the `--nats` broker, checkpointed in PostgreSQL (with
/// `--postgres`) or in `<data-dir>/relay.db`.
async fn spawn_global_log_relay(
    g: &GlobalArgs,
    store: attest_store::DynStore,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use attest_bus::relay::{
        CheckpointStore, GlobalLogRelay, PostgresCheckpointStore, RelayOptions,
        SqliteCheckpointStore,
    };
    let broker = crate::backend::open_broker(g).await?.broker;
    let checkpoints: Arc<dyn CheckpointStore> = match &g.postgres {
        Some(url) => Arc::new(
            PostgresCheckpointStore::connect(url, &g.pg_schema)
                .await
                .context("opening the relay checkpoints in PostgreSQL")?,
        ),
        None => {
            std::fs::create_dir_all(&g.data_dir)?;
            Arc::new(
                SqliteCheckpointStore::open(g.data_dir.join("relay.db"))
                    .await
                    .context("opening the relay checkpoints")?,
            )
        }
    };
    let relay = GlobalLogRelay::new(
        "serve-global-log",
        "attest.events",
        store,
        broker.clone(),
        checkpoints,
        RelayOptions::default(),
    );
    broker
        .ensure_stream(&relay.stream_config("ATTEST_EVENTS"))
        .await
        .context("creating the ATTEST_EVENTS stream")?;
    Ok(tokio::spawn(async move {
        if let Err(e) = relay.run().await {
            tracing::error!(error = %e, "global-log relay stopped");
        }
    }))
}

/// Completes on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
