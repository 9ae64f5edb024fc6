//! `muster run`: run one workflow with the cast, showing each step as it happens.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::agents::{load_manifests, manifest_files, start_naming};
use super::check::load_workflow;
use super::{CastArgs, CliError, EXIT_FAILED, EXIT_OK, block_on, interrupted};
use muster::journal::{Durability, Event, Journal, JournalConfig, SqliteJournal, UsageTotals};
use muster::runtime::Muster;
use muster::telemetry::{DEFAULT_EVERY, Follower, Following, Traces};
use muster::workflow::WorkflowExt;
use muster::workflow::engine::RunOptions;
use muster::workflow::{RunOutcome, RunStatus, StepEvent, StepSummary, Workflow, recovery};

/// Exit code: the run waits at a human gate.
pub const EXIT_WAITING: i32 = 3;

/// Arguments of `muster run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The workflow file (TOML).
    pub workflow: PathBuf,
    /// The run input: inline JSON, or @FILE. Default: `input.json` beside the workflow.
    #[arg(long)]
    pub input: Option<String>,
    /// Where the cast and schemas are.
    #[command(flatten)]
    pub cast: CastArgs,
    /// The runtime's settings.
    #[command(flatten)]
    pub runtime: super::RuntimeArgs,
    /// The journal (an SQLite file, created if absent): every event of the run, so that
    /// `muster resume` can finish it after a crash and `muster inspect` can show it.
    #[arg(long, default_value = ".muster/journal.db")]
    pub journal: PathBuf,
    /// `relaxed` (survives a crash of the process) or `sync` (survives power loss; a
    /// result is acknowledged only once it is on disk).
    #[arg(long, default_value = "relaxed", value_parser = parse_durability)]
    pub durability: Durability,
    /// At a gate, wait for its decision (`muster approve` from another shell) instead of
    /// exiting with code 3.
    #[arg(long)]
    pub wait: bool,
    /// Print one JSON document instead of progress lines and a table.
    #[arg(long)]
    pub json: bool,
    /// Run on a node instead of locally (WORKFLOW is then the name of a workflow the node
    /// serves, or a file whose `name` is one).
    #[command(flatten)]
    pub server: super::client::ServerArgs,
}

pub(crate) fn parse_durability(s: &str) -> Result<Durability, String> {
    s.parse()
}

/// The fault-injection variable: a pause before every journal commit (a slow disk).
pub(crate) const COMMIT_DELAY_VAR: &str = "MUSTER_JOURNAL_COMMIT_DELAY";

/// Opens (or creates) a journal for writing, holding its lock; errors are bad input naming
/// the file (another process holding it: the holder's pid). `MUSTER_JOURNAL_COMMIT_DELAY`
/// (`"20ms"`) slows every commit down, for failure drills.
pub(crate) fn open_journal(
    path: &Path,
    durability: Durability,
) -> Result<Arc<SqliteJournal>, CliError> {
    let mut config = JournalConfig::default();
    if let Ok(v) = std::env::var(COMMIT_DELAY_VAR) {
        config.commit_delay = humantime::parse_duration(v.trim()).map_err(|e| {
            CliError::bad_input(
                format!("{COMMIT_DELAY_VAR}=`{v}` is not a duration ({e}); write e.g. \"20ms\""),
                json!({"variable": COMMIT_DELAY_VAR, "value": v}),
            )
        })?;
    }
    SqliteJournal::open_with(path, durability, config)
        .map(Arc::new)
        .map_err(|e| CliError::bad_input(e.to_string(), json!({"journal": path})))
}

/// Reads the run input.
pub(crate) fn read_input(arg: Option<&str>, workflow: &Path) -> Result<Value, CliError> {
    let (text, origin) = match arg {
        Some(a) if a.starts_with('@') => {
            let p = &a[1..];
            (
                std::fs::read_to_string(p).map_err(|e| {
                    CliError::bad_input(
                        format!("{p}: cannot read the input: {e}"),
                        json!({"file": p}),
                    )
                })?,
                p.to_string(),
            )
        }
        Some(a) => (a.to_string(), "--input".to_string()),
        None => {
            let p = workflow.with_file_name("input.json");
            let text = std::fs::read_to_string(&p).map_err(|_| {
                CliError::bad_input(
                    format!(
                        "no run input: give --input JSON or --input @FILE (there is no {})",
                        p.display()
                    ),
                    json!({}),
                )
            })?;
            (text, p.display().to_string())
        }
    };
    serde_json::from_str(&text).map_err(|e| {
        CliError::bad_input(
            format!("{origin}: the input is not JSON: {e}"),
            json!({"file": origin}),
        )
    })
}

/// Loads a workflow file; errors name the file and the step.
pub(crate) fn print_event(e: &StepEvent) {
    match e {
        StepEvent::Started {
            run,
            workflow,
            file,
        } => println!("running `{workflow}` ({file}), run {run}"),
        StepEvent::Entered { step, visit, bound } => {
            if let Some(line) = entered_line(step, *visit, *bound) {
                println!("{line}");
            }
        }
        StepEvent::Finished(s) => println!("{}", finished_line(s)),
        StepEvent::Waiting { gate, question } => println!("  {gate:<12} gate: {question}"),
        StepEvent::Decided { gate, approved } => {
            println!(
                "  {gate:<12} {}",
                if *approved { "approved" } else { "rejected" }
            )
        }
    }
}

/// The progress line of a step visit that ended: who, how many attempts, the outcome,
/// how long, and what its output says ([`muster::workflow::verdict_of`]).
pub(crate) fn finished_line(s: &StepSummary) -> String {
    let mut line = format!(
        "  {:<12} {:<16} {:<16} attempt {:<2} {:<10} {:>7} ms",
        s.step,
        s.capability,
        s.agent.as_deref().unwrap_or("-"),
        s.attempts,
        s.outcome,
        s.duration_ms,
    );
    if s.reassignments > 0 {
        line.push_str(&format!("  ({} reassigned)", s.reassignments));
    }
    if !s.verdict.is_empty() {
        line.push_str(&format!("  — {}", s.verdict));
    }
    line
}

/// The line for a loop back: a step entered again through a transition that bounds its
/// visits (`max_visits`), with which visit of how many. Nothing for a first visit, or for
/// a step entered again on the way (the join after a loop's first step).
pub(crate) fn entered_line(step: &str, visit: u32, bound: Option<u32>) -> Option<String> {
    let max = bound?;
    (visit >= 2).then(|| format!("  → back to {step} (visit {visit} of {max})"))
}

/// The loop-back line when only the visit is known (a run followed on a node, from its
/// step summaries).
fn revisit_line(step: &str, visit: u32) -> String {
    format!("  → back to {step} (visit {visit})")
}

/// Prints the summary table of a finished run.
pub(crate) fn print_summary(o: &RunOutcome, wall_ms: u128) {
    println!();
    println!("run {} of `{}`", o.run, o.workflow);
    let mut t = super::table::new(
        &[
            "step",
            "capability",
            "owner",
            "attempts",
            "reassigned",
            "outcome",
            "verdict",
        ],
        &[3, 4],
    );
    for s in &o.steps {
        t.add_row(vec![
            s.step.clone(),
            s.capability.clone(),
            s.agent.clone().unwrap_or_else(|| "-".into()),
            s.attempts.to_string(),
            s.reassignments.to_string(),
            s.outcome.clone(),
            s.verdict.clone(),
        ]);
    }
    println!("{}", super::table::render(&t, 2));
    println!(
        "  steps {}, owners {}, attempts {}, reassignments {}, stale results rejected {}, handoffs {}, wall time {} ms",
        o.steps.len(),
        o.owners.len(),
        o.handoffs,
        o.reassignments,
        o.stale_rejected,
        o.handoffs,
        wall_ms
    );
    match &o.status {
        RunStatus::Completed => println!("completed"),
        RunStatus::Failed { step, reason } => println!("failed at step `{step}`: {reason}"),
        RunStatus::Waiting { gate, question } => println!("waiting at gate `{gate}`: {question}"),
    }
}

/// The tokens line of the summary.
pub(crate) fn print_usage(usage: Option<&UsageTotals>) {
    if let Some(u) = usage {
        let known = |n: u64| {
            if u.unknown_attempts == u.attempts {
                "unknown".to_string()
            } else {
                n.to_string()
            }
        };
        println!(
            "  model usage: {} calls in {} attempts, tokens prompt {}, completion {}, total {}{}",
            u.calls,
            u.attempts,
            known(u.prompt_tokens),
            known(u.completion_tokens),
            u.display_total(),
            u.cost.map_or(String::new(), |c| format!(", cost {c:.6}"))
        );
    }
}

/// Runs `muster run`; returns the exit code.
pub fn run(mut args: RunArgs) -> Result<i32, CliError> {
    if args.server.server.is_some() {
        return remote(args);
    }
    args.cast = args.cast.beside(&args.workflow);
    let (store, defs, manifests) = load_manifests(&args.cast)?;
    let files = manifest_files(&manifests);
    let wf = Arc::new(load_workflow(&args.workflow, &store)?);
    // The same checks as `muster check`: a workflow with findings does not run.
    let found = super::check::findings(&wf, &defs, &store);
    if !found.is_empty() {
        if !args.json {
            eprintln!("refusing to run {}:", args.workflow.display());
        }
        return Ok(super::check::report(&wf, &found, args.json));
    }
    let input = read_input(args.input.as_deref(), &args.workflow)?;
    if !wf.input.is_empty()
        && let Err(e) = store.validate(&wf.input, &input)
    {
        return Err(CliError::bad_input(
            format!("the run input does not fit schema `{}`: {e}", wf.input),
            serde_json::to_value(&e).unwrap_or_default(),
        ));
    }
    let json_out = args.json;
    let traces = traces_from_env()?;
    let journal = open_journal(&args.journal, args.durability)?;
    block_on(async move {
        let muster = start_naming(
            &args.cast.schemas,
            args.runtime.shards,
            defs,
            Some(journal.clone() as Arc<dyn Journal>),
            &files,
        )
        .await?;
        let following = follow_traces(&journal, traces);
        // The header ("running `name` (file), run ID") is the run's first progress event:
        // printed once `run_started` is written, never for a run a crash could lose.
        let (tx, printer) = printer(json_out);
        let wall = std::time::Instant::now();
        let opts = RunOptions {
            progress: Some(tx.clone()),
            stop_at_gates: true,
            run_id: None,
        };
        let gates = Gates {
            muster: &muster,
            journal: &journal,
            path: &args.journal,
            wf: wf.clone(),
            wait: args.wait,
            progress: tx,
        };
        let run = async {
            let first = muster
                .run_workflow_with(wf.clone(), input, opts)
                .await
                .map_err(|e| CliError::bad_input(e.to_string(), json!({})))?;
            gates.past_gates(first).await
        };
        let outcome = tokio::select! {
            o = run => o,
            code = interrupted() => {
                eprintln!("interrupted: cancelling the running tasks (`muster resume` finishes the run)");
                muster.shutdown().await;
                let _ = journal.flush();
                stop_traces(following).await;
                return Ok(code);
            }
        };
        drop(gates);
        let _ = printer.await;
        let outcome = outcome?;
        // The summary claims only what the journal holds.
        muster.shutdown().await;
        flush(&journal)?;
        stop_traces(following).await;
        Ok(report(
            &outcome,
            wall.elapsed().as_millis(),
            json_out,
            &Where::Journal(&args.journal),
            (!outcome.usage.is_empty()).then_some(&outcome.usage),
        ))
    })
}

/// The name of the workflow WORKFLOW names: a file's `name`, or WORKFLOW itself.
fn workflow_name(arg: &Path) -> Result<String, CliError> {
    if !arg.is_file() {
        return Ok(arg.display().to_string());
    }
    let text = std::fs::read_to_string(arg).map_err(|e| {
        CliError::bad_input(
            format!("{}: cannot read: {e}", arg.display()),
            json!({"file": arg}),
        )
    })?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| {
        CliError::bad_input(
            format!("{}: not TOML: {e}", arg.display()),
            json!({"file": arg}),
        )
    })?;
    doc.get("name")
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            CliError::bad_input(
                format!("{}: /name: the workflow has no name", arg.display()),
                json!({"file": arg, "field": "/name"}),
            )
        })
}

/// `muster run --server`: starts the run on the node, follows it until it ends (or waits
/// at a gate, without `--wait`) and prints the same summary as a local run.
fn remote(args: RunArgs) -> Result<i32, CliError> {
    let client = super::client::Client::new(&args.server)?;
    let name = workflow_name(&args.workflow)?;
    let input = read_input(args.input.as_deref(), &args.workflow)?;
    let json_out = args.json;
    block_on(async move {
        let started = client
            .post("/v1/runs", &json!({"workflow": name, "input": input}))
            .await?;
        let run = started["run"].as_str().unwrap_or_default().to_string();
        if !json_out {
            println!("running `{name}` on {} (run {run})", client.base());
        }
        let wall = std::time::Instant::now();
        let mut printed = 0usize;
        let mut deepest = 1u32;
        let follow = async {
            loop {
                let doc = client.get(&format!("/v1/runs/{run}")).await?;
                if !json_out {
                    // The step visits that ended since the last look, as a local run
                    // prints them; a visit deeper than any before is a loop back.
                    let progress: Vec<StepSummary> =
                        serde_json::from_value(doc["progress"].clone()).unwrap_or_default();
                    for s in progress.iter().skip(printed) {
                        if s.visit > deepest {
                            deepest = s.visit;
                            println!("{}", revisit_line(&s.step, s.visit));
                        }
                        println!("{}", finished_line(s));
                    }
                    printed = printed.max(progress.len());
                }
                let waiting = doc["status"] == "waiting";
                if let Some(o) = doc.get("outcome").filter(|_| !(waiting && args.wait)) {
                    return Ok::<_, CliError>((o.clone(), doc["usage"].clone()));
                }
                tokio::time::sleep(POLL).await;
            }
        };
        let (outcome, usage) = tokio::select! {
            r = follow => r?,
            code = interrupted() => {
                eprintln!("interrupted: the run goes on in the node (muster inspect --server {} --run {run})", client.base());
                return Ok(code);
            }
        };
        let outcome: RunOutcome = serde_json::from_value(outcome).map_err(|e| {
            CliError::failed(
                format!("the node's run document is not readable: {e}"),
                json!({}),
            )
        })?;
        let usage: Option<UsageTotals> = serde_json::from_value(usage).ok();
        Ok(report(
            &outcome,
            wall.elapsed().as_millis(),
            json_out,
            &Where::Server(client.base()),
            usage.as_ref(),
        ))
    })
}

/// Where a run lives, for the hints printed with a waiting run.
pub(crate) enum Where<'a> {
    /// A journal file (local runs).
    Journal(&'a Path),
    /// A node (`--server`).
    Server(&'a str),
}

/// Traces of what this process journals, exported over OTLP when the OpenTelemetry
/// environment asks for it (docs/observability.md); a variable with a value this build
/// cannot honour is bad input naming it.
pub(crate) fn traces_from_env() -> Result<Option<Traces>, CliError> {
    Traces::from_env().map_err(|e| {
        let var = match &e {
            muster::telemetry::TelemetryError::Env { var, .. } => json!(var),
            _ => Value::Null,
        };
        CliError::bad_input(e.to_string(), json!({"variable": var}))
    })
}

/// Follows `journal` from its end as it is now, feeding `traces` (nothing without them).
pub(crate) fn follow_traces(
    journal: &Arc<SqliteJournal>,
    traces: Option<Traces>,
) -> Option<Following> {
    let traces = traces?;
    Some(
        Follower::new(journal.clone() as Arc<dyn Journal>)
            .starting_after(journal.len())
            .traces(traces)
            .spawn(DEFAULT_EVERY),
    )
}

/// Reads the last records and flushes the spans; an export that fails is a warning (the
/// run's outcome and the journal stand).
pub(crate) async fn stop_traces(following: Option<Following>) {
    if let Some(f) = following
        && let Err(e) = f.stop().await
    {
        eprintln!("warning: {e}");
    }
}

/// A task printing progress events as they come (nothing with `--json`); it ends once
/// every sender is dropped.
pub(crate) fn printer(
    json_out: bool,
) -> (
    tokio::sync::mpsc::UnboundedSender<StepEvent>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handle = actix::spawn(async move {
        while let Some(e) = rx.recv().await {
            if !json_out {
                print_event(&e);
            }
        }
    });
    (tx, handle)
}

/// Commits what the journal holds before the process exits.
pub(crate) fn flush(journal: &SqliteJournal) -> Result<(), CliError> {
    journal.flush().map_err(|e| {
        CliError::failed(
            e.to_string(),
            json!({"journal": journal.path(), "message": e.to_string()}),
        )
    })
}

/// How often a waiting run looks for its gate's decision in the journal.
const POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Takes a run past its gates: with `--wait`, each decision is awaited in the journal
/// (written there by `muster approve`, possibly from another process) and the run goes
/// on from the journal's state; without it, the waiting outcome is returned as is.
pub(crate) struct Gates<'a> {
    pub(crate) muster: &'a Muster,
    pub(crate) journal: &'a Arc<SqliteJournal>,
    pub(crate) path: &'a Path,
    pub(crate) wf: Arc<Workflow>,
    pub(crate) wait: bool,
    pub(crate) progress: tokio::sync::mpsc::UnboundedSender<StepEvent>,
}

impl Gates<'_> {
    pub(crate) async fn past_gates(&self, mut outcome: RunOutcome) -> Result<RunOutcome, CliError> {
        let journal_err = |e: muster::journal::JournalError| {
            CliError::failed(e.to_string(), json!({"journal": self.path}))
        };
        while let (true, RunStatus::Waiting { gate, .. }) = (self.wait, &outcome.status) {
            let gate = gate.clone();
            // Everything up to the gate is on disk before anyone is asked to decide.
            self.journal.flush().map_err(journal_err)?;
            eprintln!(
                "waiting for a decision at gate `{gate}` (Ctrl-C to stop; `muster resume` picks the run up later):\n  muster approve --journal {} {} {gate} [--reject] [--reason TEXT]",
                self.path.display(),
                outcome.run
            );
            let mut seen = self.journal.len();
            let mut found = None;
            while found.is_none() {
                tokio::time::sleep(POLL).await;
                let records = self.journal.try_read_after(seen).map_err(journal_err)?;
                found = records.iter().find_map(|r| match &r.event {
                    Event::GateDecided { run, gate: g, .. }
                        if *run == outcome.run && *g == gate =>
                    {
                        Some(r.seq)
                    }
                    _ => None,
                });
                seen = records.last().map_or(seen, |r| r.seq);
            }
            // The decision was appended by another process: adopt its sequence numbers.
            self.journal.catch_up().map_err(journal_err)?;
            let records = self.journal.try_read_after(0).map_err(journal_err)?;
            let Some(rec) = recovery::recover(&records)
                .into_iter()
                .find(|r| r.run == outcome.run)
            else {
                break;
            };
            let opts = RunOptions {
                progress: Some(self.progress.clone()),
                stop_at_gates: true,
                run_id: None,
            };
            // The resumed run's outcome covers the whole run.
            outcome = self
                .muster
                .resume_run(self.wf.clone(), rec, opts)
                .await
                .map_err(|e| CliError::failed(e.to_string(), json!({})))?;
        }
        Ok(outcome)
    }
}

/// Prints a run's outcome (a summary table, or one JSON document) and, for a run waiting
/// at a gate, how to decide; returns the exit code.
pub(crate) fn report(
    o: &RunOutcome,
    wall_ms: u128,
    json_out: bool,
    at: &Where<'_>,
    usage: Option<&UsageTotals>,
) -> i32 {
    let hint = |gate: &str| match at {
        Where::Journal(journal) => format!(
            "muster approve --journal {} {} {gate} [--reject] [--reason TEXT]",
            journal.display(),
            o.run
        ),
        Where::Server(url) => format!(
            "muster approve --server {url} {} {gate} [--reject] [--reason TEXT]",
            o.run
        ),
    };
    let then = match at {
        Where::Journal(journal) => format!("muster resume --journal {}", journal.display()),
        Where::Server(_) => "the node goes on by itself once the gate is decided".to_string(),
    };
    if json_out {
        let mut doc = serde_json::to_value(o).unwrap_or_default();
        doc["wall_ms"] = json!(wall_ms);
        if let Some(u) = usage {
            doc["usage"] = json!(u);
        }
        if let RunStatus::Waiting { gate, .. } = &o.status {
            doc["decide"] = json!(hint(gate));
            doc["then"] = json!(then);
        }
        println!("{doc}");
    } else {
        print_summary(o, wall_ms);
        print_usage(usage);
        if let RunStatus::Waiting { gate, .. } = &o.status {
            println!("decide with:   {}", hint(gate));
            println!("then continue: {then}");
        }
    }
    match o.status {
        RunStatus::Completed => EXIT_OK,
        RunStatus::Failed { .. } => EXIT_FAILED,
        RunStatus::Waiting { .. } => EXIT_WAITING,
    }
}
