//! `attest store …`: initialise, append to, read, follow and count the event log.

use std::io::{BufRead, Write};

use anyhow::{bail, Context};
use attest_core::{Category, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamId};
use attest_store::{Direction, LogFilter, StreamFrom, Subscription};
use clap::Subcommand;
use serde_json::json;

use crate::backend::{describe, open_store};
use crate::GlobalArgs;

/// Event store tools.
#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Create the store (data directory and schema) if it does not exist.
    Init,
    /// Append one event, or JSON lines `{"type": ..., "data": ..., "metadata": {...}}` from stdin.
    Append {
        /// Target stream, `category-id`.
        stream: String,
        /// Event type (omit to read JSON lines from stdin).
        event_type: Option<String>,
        /// JSON payload (default `{}`).
        data: Option<String>,
        /// Expected version: any, no-stream, exists, or a number.
        #[arg(long, default_value = "any")]
        expected: String,
        /// Correlation id recorded in the metadata.
        #[arg(long)]
        correlation_id: Option<String>,
    },
    /// Read a stream.
    Read {
        /// The stream, `category-id`.
        stream: String,
        /// First version to read (default: start, or end when --backward).
        #[arg(long)]
        from: Option<u64>,
        /// Newest first.
        #[arg(long)]
        backward: bool,
        /// Most events to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print the global log and follow it live (like `tail -f`).
    Tail {
        /// Start after this position (default: the last 10 events).
        #[arg(long)]
        from: Option<u64>,
        /// Only streams of this category.
        #[arg(long)]
        category: Option<String>,
        /// Stop when caught up instead of following.
        #[arg(long)]
        no_follow: bool,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Counts and sizes.
    Stats,
}

fn parse_expected(s: &str) -> anyhow::Result<ExpectedVersion> {
    Ok(match s {
        "any" => ExpectedVersion::Any,
        "no-stream" => ExpectedVersion::NoStream,
        "exists" => ExpectedVersion::StreamExists,
        n => ExpectedVersion::Exact(n.parse().with_context(|| {
            format!("--expected {n:?}: use any, no-stream, exists or a version number")
        })?),
    })
}

fn parse_json(what: &str, s: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(s).with_context(|| format!("{what} is not valid JSON: {s:.80}"))
}

/// Runs a store subcommand.
pub async fn run(cmd: StoreCommand, g: &GlobalArgs) -> anyhow::Result<()> {
    let out = &mut std::io::stdout().lock();
    match cmd {
        StoreCommand::Init => {
            let store = open_store(g).await?;
            let stats = store.stats().await?;
            if g.json {
                writeln!(
                    out,
                    "{}",
                    json!({ "store": describe(g), "events": stats.events })
                )?;
            } else {
                writeln!(
                    out,
                    "store ready: {} ({} events)",
                    describe(g),
                    stats.events
                )?;
            }
        }
        StoreCommand::Append {
            stream,
            event_type,
            data,
            expected,
            correlation_id,
        } => {
            let stream = StreamId::new(&stream)?;
            let expected = parse_expected(&expected)?;
            let metadata = Metadata {
                correlation_id,
                actor: std::env::var("USER").ok(),
                ..Default::default()
            };
            let events = match event_type {
                Some(t) => {
                    let data = parse_json("data", data.as_deref().unwrap_or("{}"))?;
                    vec![NewEvent::json(t, &data)?.with_metadata(metadata)]
                }
                None => read_json_lines(metadata)?,
            };
            let store = open_store(g).await?;
            let r = store.append(stream, expected, events).await?;
            if g.json {
                writeln!(out, "{}", serde_json::to_string(&r)?)?;
            } else {
                let s = &r.streams[0];
                writeln!(
                    out,
                    "appended {} event(s) to {} at versions {}..={}, positions {}..={}",
                    s.last_version - s.first_version + 1,
                    s.stream,
                    s.first_version,
                    s.last_version,
                    r.first_position,
                    r.last_position
                )?;
            }
        }
        StoreCommand::Read {
            stream,
            from,
            backward,
            limit,
        } => {
            let stream = StreamId::new(&stream)?;
            let store = open_store(g).await?;
            let (dir, start) = match (backward, from) {
                (false, None) => (Direction::Forward, StreamFrom::Start),
                (true, None) => (Direction::Backward, StreamFrom::End),
                (false, Some(v)) => (Direction::Forward, StreamFrom::Version(v)),
                (true, Some(v)) => (Direction::Backward, StreamFrom::Version(v)),
            };
            for e in store.read_stream(&stream, start, dir, limit).await? {
                print_event(out, &e, g.json)?;
            }
        }
        StoreCommand::Tail {
            from,
            category,
            no_follow,
            limit,
        } => {
            let store = open_store(g).await?;
            let filter = match category {
                Some(c) => LogFilter::Category(Category::new(c)?),
                None => LogFilter::All,
            };
            let start = match from {
                Some(p) => p,
                None => store.head_position().await?.saturating_sub(10),
            };
            let mut sub = Subscription::new(store, start, filter);
            let mut printed = 0u64;
            loop {
                if limit.is_some_and(|l| printed >= l) {
                    break;
                }
                let next = if no_follow {
                    sub.try_next().await?
                } else {
                    Some(sub.next().await?)
                };
                let Some(e) = next else { break };
                print_event(out, &e, g.json)?;
                out.flush()?;
                printed += 1;
            }
        }
        StoreCommand::Stats => {
            let store = open_store(g).await?;
            let s = store.stats().await?;
            if g.json {
                writeln!(out, "{}", serde_json::to_string(&s)?)?;
            } else {
                writeln!(out, "store      {}", describe(g))?;
                writeln!(out, "events     {}", s.events)?;
                writeln!(out, "streams    {}", s.streams)?;
                writeln!(out, "head       {}", s.head_position)?;
                if let Some(b) = s.size_bytes {
                    writeln!(out, "size       {:.1} MiB", b as f64 / (1024.0 * 1024.0))?;
                }
            }
        }
    }
    Ok(())
}

fn read_json_lines(metadata: Metadata) -> anyhow::Result<Vec<NewEvent>> {
    let mut events = Vec::new();
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v = parse_json(&format!("stdin line {}", i + 1), &line)?;
        let Some(t) = v.get("type").and_then(|t| t.as_str()) else {
            bail!("stdin line {}: missing string field \"type\"", i + 1);
        };
        let data = v.get("data").cloned().unwrap_or(json!({}));
        let mut m = metadata.clone();
        if let Some(extra) = v.get("metadata") {
            let given: Metadata = serde_json::from_value(extra.clone())
                .with_context(|| format!("stdin line {}: bad metadata", i + 1))?;
            m = Metadata {
                actor: given.actor.or(m.actor),
                correlation_id: given.correlation_id.or(m.correlation_id),
                ..given
            };
        }
        events.push(NewEvent::json(t, &data)?.with_metadata(m));
    }
    if events.is_empty() {
        bail!("no events: give an event type and data, or JSON lines on stdin");
    }
    Ok(events)
}

fn print_event(out: &mut impl Write, e: &RecordedEvent, json: bool) -> anyhow::Result<()> {
    let data: serde_json::Value = serde_json::from_slice(&e.payload)
        .unwrap_or_else(|_| json!({ "bytes": e.payload.len(), "content_type": e.content_type }));
    if json {
        let v = json!({
            "position": e.position,
            "stream": e.stream_id,
            "version": e.version,
            "id": e.id,
            "type": e.event_type,
            "recorded_at": e.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "data": data,
            "metadata": e.metadata,
        });
        writeln!(out, "{v}")?;
    } else {
        let mut text = data.to_string();
        if text.len() > 100 {
            let cut = (0..=97)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text.truncate(cut);
            text.push_str("...");
        }
        writeln!(
            out,
            "{:>8}  {}  {}@{}  {}  {}",
            e.position,
            e.recorded_at.format("%Y-%m-%d %H:%M:%S%.3f"),
            e.stream_id,
            e.version,
            e.event_type,
            text
        )?;
    }
    Ok(())
}
