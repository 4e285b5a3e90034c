//! `attest lag`: how far behind each durable consumer (and, optionally, each projection) is.
//!
//! Consumers are sampled `--samples` times, `--interval-ms` apart, by re-attaching with their
//! own stored configuration (nothing is changed) and reading their info; the samples feed a
//! [`LagMonitor`], whose status rules (OK, WARN, STALL, STOP) need several observations.
//! Projections are read from the checkpoint table of a SQLite read-model file: lag in events is
//! the store head minus the checkpoint, lag in seconds the age of the first event after it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use attest_bus::lag::{LagConfig, LagMonitor, LagRow};
use attest_bus::{BusError, PullConsumer};
use attest_store::{EventStore, LogFilter};
use chrono::Utc;
use clap::Args;
use serde::Serialize;
use serde_json::json;

use crate::backend::{open_broker, open_store};
use crate::GlobalArgs;

/// Options of `attest lag`.
#[derive(Args, Debug)]
pub struct LagArgs {
    /// Only the consumers of this stream (default: every stream).
    #[arg(long)]
    pub stream: Option<String>,
    /// Observations per consumer.
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
    /// Milliseconds between observations.
    #[arg(long, default_value_t = 500)]
    pub interval_ms: u64,
    /// Also report the projections checkpointed in this SQLite read-model file.
    #[arg(long)]
    pub read_model: Option<PathBuf>,
}

/// One projection checkpoint's lag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionLag {
    /// Projection name.
    pub projection: String,
    /// Checkpoint generation.
    pub generation: i64,
    /// `active` or `building`.
    pub status: String,
    /// Last position the projection applied.
    pub checkpoint: u64,
    /// Store head minus the checkpoint.
    pub lag_events: u64,
    /// Age of the first event after the checkpoint, in seconds (0 when caught up).
    pub lag_seconds: f64,
}

/// A consumer that could not be sampled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Consumer key, `stream/consumer`.
    pub consumer: String,
    /// Why.
    pub error: String,
}

/// Runs `attest lag`.
pub async fn run(args: LagArgs, g: &GlobalArgs) -> anyhow::Result<()> {
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let opened = open_broker(g).await?;
    let broker = opened.broker.clone();
    let streams = match &args.stream {
        Some(s) => vec![s.clone()],
        None => broker.streams().await.context("listing streams")?,
    };
    let mut bound: Vec<(String, Box<dyn PullConsumer>)> = Vec::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    for stream in &streams {
        let configs = match broker.consumers(stream).await {
            Ok(c) => c,
            // Deleted between listing streams and listing its consumers.
            Err(BusError::StreamNotFound { .. }) if args.stream.is_none() => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("listing consumers of stream {stream}"))
            }
        };
        for cfg in configs {
            let key = format!("{stream}/{}", cfg.name);
            // Re-attach with the stored configuration: no change is made to the consumer. A
            // consumer the broker will not re-attach to (e.g. one created by another tool with
            // settings outside `ConsumerConfig`) is reported as skipped, not fatal.
            match broker.consumer(&cfg).await {
                Ok(c) => bound.push((key, c)),
                Err(e) => {
                    tracing::warn!(consumer = %key, error = %e, "cannot attach; skipped");
                    skipped.push(Skipped {
                        consumer: key,
                        error: e.to_string(),
                    });
                }
            }
        }
    }
    let monitor = LagMonitor::new(LagConfig {
        window: args.samples,
        ..LagConfig::default()
    });
    for i in 0..args.samples {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
        for (key, c) in &bound {
            let info = c
                .info()
                .await
                .with_context(|| format!("reading info of consumer {key}"))?;
            monitor.record_info(key, &info, Utc::now());
        }
    }
    let rows = monitor.snapshot();

    let projections = match &args.read_model {
        Some(path) => {
            let store = match &opened.store {
                Some(s) => s.clone(),
                None => open_store(g).await?,
            };
            Some(projection_lag(store, path).await?)
        }
        None => None,
    };

    let out = &mut std::io::stdout().lock();
    if g.json {
        let mut v = json!({ "broker": broker.kind(), "consumers": rows, "skipped": skipped });
        if let Some(p) = &projections {
            v["projections"] = serde_json::to_value(p)?;
        }
        writeln!(out, "{v}")?;
    } else {
        print_consumers(out, &rows)?;
        for s in &skipped {
            writeln!(out, "skipped {}: {}", s.consumer, s.error)?;
        }
        if let Some(p) = &projections {
            writeln!(out)?;
            print_projections(out, p)?;
        }
    }
    Ok(())
}

/// Reads every checkpoint row of the read model at `path` and measures it against `store`.
pub async fn projection_lag(
    store: Arc<dyn EventStore>,
    path: &Path,
) -> anyhow::Result<Vec<ProjectionLag>> {
    if !path.exists() {
        bail!("read model {} does not exist", path.display());
    }
    let p = path.to_path_buf();
    let rows = tokio::task::spawn_blocking(move || read_checkpoints(&p))
        .await
        .context("reading checkpoints")??;
    let head = store.head_position().await?;
    let now = Utc::now();
    let mut out = Vec::with_capacity(rows.len());
    for (projection, generation, checkpoint, status) in rows {
        let lag_events = head.saturating_sub(checkpoint);
        let lag_seconds = if lag_events == 0 {
            0.0
        } else {
            match store
                .read_all(checkpoint, 1, &LogFilter::All)
                .await?
                .first()
            {
                Some(e) => ((now - e.recorded_at).num_milliseconds().max(0) as f64) / 1000.0,
                None => 0.0,
            }
        };
        out.push(ProjectionLag {
            projection,
            generation,
            status,
            checkpoint,
            lag_events,
            lag_seconds,
        });
    }
    Ok(out)
}

type CheckpointRow = (String, i64, u64, String);

fn read_checkpoints(path: &Path) -> anyhow::Result<Vec<CheckpointRow>> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening read model {}", path.display()))?;
    let mut st = conn
        .prepare(
            "SELECT name, generation, position, status FROM projection_checkpoints
             ORDER BY name, generation",
        )
        .with_context(|| {
            format!(
                "{} has no projection_checkpoints table (not a read model?)",
                path.display()
            )
        })?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r?);
    }
    Ok(out)
}

fn print_consumers(out: &mut impl Write, rows: &[LagRow]) -> anyhow::Result<()> {
    if rows.is_empty() {
        writeln!(out, "no consumers")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<40} {:>12} {:>12} {:>12}  STATUS",
        "CONSUMER", "LAG (MSGS)", "LAG (SECS)", "POSITION"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<40} {:>12} {:>12.3} {:>12}  {}",
            r.consumer, r.lag_messages, r.lag_seconds, r.position, r.status
        )?;
    }
    Ok(())
}

fn print_projections(out: &mut impl Write, rows: &[ProjectionLag]) -> anyhow::Result<()> {
    if rows.is_empty() {
        writeln!(out, "no projections")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<30} {:>4} {:<9} {:>12} {:>12} {:>12}",
        "PROJECTION", "GEN", "STATUS", "CHECKPOINT", "LAG (EVENTS)", "LAG (SECS)"
    )?;
    for p in rows {
        writeln!(
            out,
            "{:<30} {:>4} {:<9} {:>12} {:>12} {:>12.3}",
            p.projection, p.generation, p.status, p.checkpoint, p.lag_events, p.lag_seconds
        )?;
    }
    Ok(())
}
