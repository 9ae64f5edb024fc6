//! `muster run`: run one workflow with the cast, showing each step as it happens.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::agents::{load, start};
use super::{block_on, CastArgs, CliError, EXIT_FAILED, EXIT_OK};
use crate::workflow::engine::RunOptions;
use crate::workflow::{RunOutcome, RunStatus, StepEvent, Workflow};
use crate::SchemaStore;

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
    /// Print one JSON document instead of progress lines and a table.
    #[arg(long)]
    pub json: bool,
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
pub(crate) fn load_workflow(path: &Path, store: &SchemaStore) -> Result<Workflow, CliError> {
    Workflow::load(path, store).map_err(|errs| {
        let text = errs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        CliError::bad_input(
            format!("invalid workflow:\n{text}"),
            serde_json::to_value(&errs).unwrap_or_default(),
        )
    })
}

fn print_event(e: &StepEvent) {
    match e {
        StepEvent::Entered { .. } => {}
        StepEvent::Finished(s) => println!(
            "  {:<12} {:<16} {:<16} attempt {:<2} {:<10} {:>7} ms{}",
            s.step,
            s.capability,
            s.agent.as_deref().unwrap_or("-"),
            s.attempts,
            s.outcome,
            s.duration_ms,
            if s.reassignments > 0 {
                format!("  ({} reassigned)", s.reassignments)
            } else {
                String::new()
            }
        ),
        StepEvent::Waiting { gate, question } => println!("  {gate:<12} gate: {question}"),
        StepEvent::Decided { gate, approved } => {
            println!(
                "  {gate:<12} {}",
                if *approved { "approved" } else { "rejected" }
            )
        }
    }
}

/// Prints the summary table of a finished run.
pub(crate) fn print_summary(o: &RunOutcome, wall_ms: u128) {
    println!();
    println!("run {} of `{}`", o.run, o.workflow);
    println!(
        "  {:<12} {:<16} {:<16} {:>8} {:>10}  outcome",
        "step", "capability", "owner", "attempts", "reassigned"
    );
    for s in &o.steps {
        println!(
            "  {:<12} {:<16} {:<16} {:>8} {:>10}  {}",
            s.step,
            s.capability,
            s.agent.as_deref().unwrap_or("-"),
            s.attempts,
            s.reassignments,
            s.outcome
        );
    }
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

/// Runs `muster run`; returns the exit code.
pub fn run(args: RunArgs) -> Result<i32, CliError> {
    let (store, defs) = load(&args.cast)?;
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
    if !wf.input.is_empty() {
        if let Err(e) = store.validate(&wf.input, &input) {
            return Err(CliError::bad_input(
                format!("the run input does not fit schema `{}`: {e}", wf.input),
                serde_json::to_value(&e).unwrap_or_default(),
            ));
        }
    }
    let json_out = args.json;
    block_on(async move {
        let muster = start(&args.cast.schemas, defs).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let printer = actix::spawn(async move {
            while let Some(e) = rx.recv().await {
                if !json_out {
                    print_event(&e);
                }
            }
        });
        if !json_out {
            println!("running `{}` ({})", wf.name, args.workflow.display());
        }
        let wall = std::time::Instant::now();
        let opts = RunOptions {
            progress: Some(tx),
            stop_at_gates: true,
            run_id: None,
        };
        let run = muster.run_workflow_with(wf.clone(), input, opts);
        let outcome = tokio::select! {
            o = run => o,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: cancelling the running tasks");
                muster.shutdown().await;
                return Ok(130);
            }
        };
        let _ = printer.await;
        let outcome = outcome.map_err(|e| CliError::bad_input(e.to_string(), json!({})))?;
        let wall_ms = wall.elapsed().as_millis();
        if json_out {
            let mut doc = serde_json::to_value(&outcome).unwrap_or_default();
            doc["wall_ms"] = json!(wall_ms);
            println!("{doc}");
        } else {
            print_summary(&outcome, wall_ms);
        }
        muster.shutdown().await;
        Ok(match outcome.status {
            RunStatus::Completed => EXIT_OK,
            RunStatus::Failed { .. } => EXIT_FAILED,
            RunStatus::Waiting { .. } => EXIT_WAITING,
        })
    })
}
