//! `attest dlq …`: list dead letters with their provenance, and replay one to its original
//! subject.

use std::io::Write;

use anyhow::Context;
use attest_bus::dlq::{list_dead_letters, replay_dead_letter, DeadLetter, DeadLetterConfig};
use attest_bus::BusError;
use clap::Subcommand;
use serde_json::json;

use crate::backend::open_broker;
use crate::GlobalArgs;

/// Dead-letter tools.
#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List dead letters (oldest first) with their provenance.
    List {
        /// Only the dead letters of this consumer.
        #[arg(long)]
        consumer: Option<String>,
        /// First dead-letter id to list.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most dead letters to list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Publish a dead letter again to its original subject.
    Replay {
        /// The dead letter's id (as `attest dlq list` shows it).
        id: u64,
    },
}

/// Runs a dlq subcommand.
pub async fn run(cmd: DlqCommand, g: &GlobalArgs) -> anyhow::Result<()> {
    let opened = open_broker(g).await?;
    let broker = opened.broker.as_ref();
    let config = DeadLetterConfig::default();
    let out = &mut std::io::stdout().lock();
    match cmd {
        DlqCommand::List {
            consumer,
            from,
            limit,
        } => {
            let letters =
                match list_dead_letters(broker, &config, consumer.as_deref(), from, limit).await {
                    Ok(l) => l,
                    // No dead-letter stream yet: nothing was ever dead-lettered.
                    Err(BusError::StreamNotFound { .. }) => Vec::new(),
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("listing dead letters of stream {}", config.stream)
                        })
                    }
                };
            if g.json {
                for dl in &letters {
                    writeln!(out, "{}", serde_json::to_string(dl)?)?;
                }
            } else {
                print_table(out, &letters)?;
            }
        }
        DlqCommand::Replay { id } => {
            let ack = replay_dead_letter(broker, &config, id)
                .await
                .with_context(|| format!("replaying dead letter {id}"))?;
            if g.json {
                writeln!(
                    out,
                    "{}",
                    json!({
                        "dead_letter": id,
                        "stream": ack.stream,
                        "sequence": ack.sequence,
                        "duplicate": ack.duplicate,
                    })
                )?;
            } else if ack.duplicate {
                writeln!(
                    out,
                    "dead letter {id} was already replayed: {} sequence {} (duplicate, nothing stored)",
                    ack.stream, ack.sequence
                )?;
            } else {
                writeln!(
                    out,
                    "replayed dead letter {id}: stored in {} at sequence {}",
                    ack.stream, ack.sequence
                )?;
            }
        }
    }
    Ok(())
}

fn print_table(out: &mut impl Write, letters: &[DeadLetter]) -> anyhow::Result<()> {
    if letters.is_empty() {
        writeln!(out, "no dead letters")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>6}  {:<20} {:<17} {:>8}  {:<40} {:<25} ERROR",
        "ID", "CONSUMER", "KIND", "ATTEMPTS", "ORIGINAL (STREAM SUBJECT #SEQ)", "LAST FAILURE"
    )?;
    for dl in letters {
        let original = format!(
            "{} {} #{}",
            dl.original_stream, dl.original_subject, dl.original_sequence
        );
        writeln!(
            out,
            "{:>6}  {:<20} {:<17} {:>8}  {:<40} {:<25} {}",
            dl.id,
            dl.consumer,
            dl.kind.as_str(),
            dl.attempts,
            original,
            dl.last_failure.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            dl.error
        )?;
    }
    Ok(())
}
