//! `muster journal compact`: retention for a journal file. Removes the records of work
//! that ended before a cutoff (runs completed, failed or cancelled; bare tasks whose every
//! task ended; records of no run such as agent registrations and restarts), after writing
//! them to an archive when asked; keeps everything running or waiting at a gate; returns
//! the space to the file system. A node serving the journal holds its lock: compact it
//! with `muster serve --retain` instead.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::{CliError, EXIT_OK};
use muster::journal::sqlite::{Compaction, compact};

/// Arguments of `muster journal`.
#[derive(Debug, clap::Args)]
pub struct JournalArgs {
    /// What to do with the journal.
    #[command(subcommand)]
    pub command: JournalCommand,
}

/// The `muster journal` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum JournalCommand {
    /// Remove (and optionally archive) the records of work that ended before a cutoff.
    Compact(CompactArgs),
}

impl JournalArgs {
    /// Whether the subcommand prints JSON.
    pub fn json(&self) -> bool {
        match &self.command {
            JournalCommand::Compact(a) => a.json,
        }
    }
}

/// Arguments of `muster journal compact`.
#[derive(Debug, clap::Args)]
pub struct CompactArgs {
    /// The journal file.
    #[arg(long, default_value = ".muster/journal.db")]
    pub journal: PathBuf,
    /// Remove work that ended longer ago than this (`30d`, `12h`, `0s` for everything
    /// ended); running and gate-waiting work is always kept.
    #[arg(long, value_parser = parse_age)]
    pub finished_before: Duration,
    /// First write the removed records to this new file (`.jsonl.zst`, read by `muster
    /// inspect --archive`); never overwritten.
    #[arg(long)]
    pub archive: Option<PathBuf>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// An age such as `30d` (humantime), at most 100 years.
pub(crate) fn parse_age(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not an age like 30d, 12h or 0s: {e}"))?;
    if d > Duration::from_secs(100 * 365 * 24 * 3600) {
        return Err(format!("`{s}` is longer than 100 years"));
    }
    Ok(d)
}

/// Runs `muster journal`.
pub fn run(args: JournalArgs) -> Result<i32, CliError> {
    match args.command {
        JournalCommand::Compact(a) => compact_file(a),
    }
}

fn compact_file(a: CompactArgs) -> Result<i32, CliError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let cutoff = now_ms.saturating_sub(a.finished_before.as_millis() as u64);
    let what = Compaction {
        ended_before_ms: cutoff,
        archive: a.archive.clone(),
    };
    let started = std::time::Instant::now();
    let done = compact(&a.journal, &what, now_ms).map_err(|e| {
        CliError::bad_input(
            e.to_string(),
            json!({"journal": a.journal, "archive": a.archive}),
        )
    })?;
    let took = started.elapsed();
    if a.json {
        let mut doc = serde_json::to_value(&done).unwrap_or_default();
        doc["journal"] = json!(a.journal);
        doc["ended_before_ms"] = json!(cutoff);
        doc["took_ms"] = json!(took.as_millis() as u64);
        println!("{doc}");
    } else {
        println!(
            "{}: removed {} records of {} runs and {} bare-task stories that ended before {}",
            a.journal.display(),
            done.records,
            done.runs,
            done.stories,
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(cutoff)
            ),
        );
        println!(
            "  kept {} unfinished runs; {} -> {} bytes; {:.1}s; digest {}",
            done.kept_unfinished,
            done.bytes_before,
            done.bytes_after,
            took.as_secs_f64(),
            done.digest
        );
        if let Some(p) = &done.archive {
            println!(
                "  archived in {} (muster inspect --archive {0})",
                p.display()
            );
        }
    }
    Ok(EXIT_OK)
}
