//! `muster sim`: run a failure scenario on virtual time and report what happened.
//!
//! Parses arguments, loads the scenario ([`muster::scenario::Scenario`]), runs it
//! ([`muster::scenario::run`]) and prints the report. Exit 0 when nothing was lost or
//! duplicated, 1 when something was, 2 on bad input.

use std::io::IsTerminal;
use std::path::PathBuf;

use serde_json::json;

use super::{CliError, EXIT_FAILED, EXIT_OK};
use muster::SchemaStore;
use muster::scenario::{MAX_COUNT, Progress, Scenario, SimOptions, SimReport, run as simulate};

/// Arguments of `muster sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// The scenario file (TOML).
    pub scenario: PathBuf,
    /// Overrides the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Overrides the scenario's task (or run) count (at most 10,000,000).
    #[arg(long, alias = "runs")]
    pub tasks: Option<u64>,
    /// Writes the journal to this SQLite file (default: in memory).
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Directory of JSON Schemas (`NAME.schema.json`).
    #[arg(long, default_value = "schemas")]
    pub schemas: PathBuf,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Runs `muster sim`; returns the exit code.
pub fn run(a: SimArgs) -> Result<i32, CliError> {
    let store = SchemaStore::new();
    store.load_dir(&a.schemas).map_err(|e| {
        CliError::bad_input(
            format!("{}: {e}", a.schemas.display()),
            json!({"file": a.schemas}),
        )
    })?;
    let scenario = Scenario::load(&a.scenario, &store).map_err(|errs| {
        let text = errs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        CliError::bad_input(
            format!("invalid scenario:\n{text}"),
            json!({"errors": errs}),
        )
    })?;
    match a.tasks {
        Some(0) => {
            return Err(CliError::bad_input(
                "--tasks: must be at least 1",
                json!({"field": "--tasks"}),
            ));
        }
        Some(n) if n > MAX_COUNT => {
            return Err(CliError::bad_input(
                format!("--tasks: {n} is above the limit of {MAX_COUNT}"),
                json!({"field": "--tasks", "limit": MAX_COUNT}),
            ));
        }
        _ => {}
    }
    let total = a.tasks.unwrap_or(scenario.count);
    let bar = (std::io::stderr().is_terminal() && !a.json).then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let progress: Option<Box<dyn Fn(Progress)>> = bar.clone().map(|b| {
        Box::new(move |p: Progress| {
            b.set_position(p.ended);
            b.set_message(format!("virtual {}", fmt_ms(p.virtual_ms)));
        }) as Box<dyn Fn(Progress)>
    });
    let report = simulate(
        &scenario,
        SimOptions {
            seed: a.seed,
            count: a.tasks,
            journal: a.journal.clone(),
            schemas_dir: Some(a.schemas.clone()),
            progress,
        },
    )
    .map_err(|e| CliError::failed(e.to_string(), json!({})))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", human(&report));
    }
    Ok(if report.failed() {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

fn fmt_ms(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

/// The report as text.
fn human(r: &SimReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "scenario {} (seed {}, {})", r.scenario, r.seed, r.mode);
    if let Some(runs) = r.runs {
        let _ = writeln!(
            s,
            "  runs     {:>9}  completed {}  escalated {}  lost {}",
            runs.total, runs.completed, runs.escalated, runs.lost
        );
    }
    let t = r.tasks;
    let _ = writeln!(
        s,
        "  tasks    {:>9}  completed {}  escalated {}  cancelled {}  lost {}  duplicates {}",
        t.total, t.completed, t.escalated, t.cancelled, t.lost, t.duplicates
    );
    if r.effects.run > 0 {
        let _ = writeln!(
            s,
            "  effects  run {}  repeated {}  unknown outcome {}",
            r.effects.run, r.effects.repeated, r.effects.unknown
        );
    }
    let _ = writeln!(
        s,
        "  faults   failed attempts {}  reassignments {}  stale results rejected {}  restarts {}  dropped out {}  runtime faults {}",
        r.failed_attempts,
        r.reassignments,
        r.stale_rejected,
        r.restarts,
        r.dropped_out,
        r.faults_applied
    );
    if r.accepted_superseded > 0 {
        let _ = writeln!(
            s,
            "  FENCING  {} results accepted under a superseded epoch",
            r.accepted_superseded
        );
    }
    if let Some(n) = r.network {
        let c = n.counts;
        let _ = writeln!(
            s,
            "  network  messages {}  delayed {}  lost {}  lost in partitions {}  held in partitions {}  partitions {} (healed {})",
            c.messages,
            c.delayed,
            c.lost,
            c.lost_in_partitions,
            c.held_in_partitions,
            n.partitions,
            n.healed
        );
    }
    for (what, l) in [("task", r.task_latency), ("run", r.run_latency)] {
        if let Some(l) = l {
            let _ = writeln!(
                s,
                "  latency per {what:<4} p50 {}  p90 {}  p99 {}  max {}",
                fmt_ms(l.p50_ms),
                fmt_ms(l.p90_ms),
                fmt_ms(l.p99_ms),
                fmt_ms(l.max_ms)
            );
        }
    }
    let _ = writeln!(
        s,
        "  time     virtual {}  wall {}  ({} events, {:.0} events/s)",
        fmt_ms(r.virtual_ms),
        fmt_ms(r.wall.ms),
        r.events,
        r.wall.events_per_sec
    );
    if let Some(m) = r.wall.rss {
        let _ = writeln!(
            s,
            "  memory   RSS at 10% {:.0} MiB  50% {:.0} MiB  100% {:.0} MiB  peak {:.0} MiB",
            m.at_10pct_mb, m.at_50pct_mb, m.at_100pct_mb, m.peak_mb
        );
    }
    let _ = writeln!(s, "  digest   {}", r.digest);
    if r.hit_horizon {
        let _ = writeln!(
            s,
            "  the simulation stopped at its horizon with work unfinished"
        );
    }
    let _ = writeln!(
        s,
        "{}",
        if r.failed() {
            "FAILED: something was lost or duplicated"
        } else {
            "ok: nothing lost, nothing duplicated"
        }
    );
    s
}
