//! `muster resume`: finish every unfinished run of a journal after a crash or a gate.
//!
//! Reads the journal, rebuilds each unfinished run ([`muster::workflow::recovery`]), loads
//! its workflow from the file recorded when it started, and lets the engine finish it
//! with the cast ([`WorkflowExt::resume_run`](muster::workflow::WorkflowExt::resume_run)), journaling into the same file. Prints
//! the same summary as `muster run` for each run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use super::agents::{load_manifests, manifest_files, start_naming};
use super::check::load_workflow;
use super::run::{
    EXIT_WAITING, Gates, flush, follow_traces, open_journal, parse_durability, printer, report,
    stop_traces, traces_from_env,
};
use super::{CastArgs, CliError, EXIT_FAILED, EXIT_OK, block_on, interrupted};
use muster::journal::sqlite::read_journal;
use muster::journal::{Durability, Event, Journal};
use muster::workflow::engine::RunOptions;
use muster::workflow::resume::{self, Unfinished};

/// Arguments of `muster resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// The journal of the runs to finish.
    #[arg(long, default_value = ".muster/journal.db")]
    pub journal: PathBuf,
    /// Where the cast and schemas are.
    #[command(flatten)]
    pub cast: CastArgs,
    /// The runtime's settings.
    #[command(flatten)]
    pub runtime: super::RuntimeArgs,
    /// `relaxed` or `sync` (see `muster run --help`).
    #[arg(long, default_value = "relaxed", value_parser = parse_durability)]
    pub durability: Durability,
    /// At a gate, wait for its decision instead of stopping there (exit code 3).
    #[arg(long)]
    pub wait: bool,
    /// Print one JSON document per run instead of progress lines and tables.
    #[arg(long)]
    pub json: bool,
}

fn journal_error(path: &Path, e: muster::journal::JournalError) -> CliError {
    CliError::bad_input(
        e.to_string(),
        json!({"journal": path, "message": e.to_string()}),
    )
}

/// Runs `muster resume`; returns the exit code: 0 when every run completed (or there
/// was nothing to finish), 1 when one failed, 3 when one waits at a gate.
pub fn run(mut args: ResumeArgs) -> Result<i32, CliError> {
    // Read-only first: a missing or foreign file is refused before anything is created.
    read_journal(&args.journal, i64::MAX as u64).map_err(|e| journal_error(&args.journal, e))?;
    // Then the lock: what is unfinished is read by the one process that may finish it
    // (another process writing the journal gets this one refused, naming it).
    let journal = open_journal(&args.journal, args.durability)?;
    let records = journal
        .try_read_after(0)
        .map_err(|e| journal_error(&args.journal, e))?;
    // The unfinished runs, and the scopes the crashed process's tasks held (given back to
    // them as each run resumes).
    let Unfinished { runs: open, held } = Unfinished::of(&records);
    let any_started = records
        .iter()
        .any(|r| matches!(r.event, Event::RunStarted { .. }));
    drop(records);
    if open.is_empty() {
        if args.json {
            println!("{}", json!({"ok": true, "resumed": 0}));
        } else if any_started {
            println!(
                "nothing to resume: every run in {} has ended",
                args.journal.display()
            );
        } else {
            println!(
                "nothing to resume: no run was started in {}",
                args.journal.display()
            );
        }
        return Ok(EXIT_OK);
    }
    // A workflow that keeps its cast beside it finds it there (see `muster run`).
    if let Some(first) = open.first() {
        args.cast = args.cast.clone().beside(Path::new(&first.file));
    }
    let (store, defs, manifests) = load_manifests(&args.cast)?;
    let files = manifest_files(&manifests);
    let mut work = Vec::new();
    for rec in open {
        let wf = load_workflow(Path::new(&rec.file), &store).map_err(|e| {
            CliError::bad_input(
                format!(
                    "run {} of `{}`: its workflow file {}: {}",
                    rec.run, rec.workflow, rec.file, e.message
                ),
                json!({"run": rec.run, "file": rec.file, "details": e.details}),
            )
        })?;
        work.push((Arc::new(wf), rec));
    }
    let json_out = args.json;
    let traces = traces_from_env()?;
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
        let (tx, printer) = printer(json_out);
        let wall = std::time::Instant::now();
        let mut outcomes = Vec::new();
        let all = async {
            for (wf, rec) in work {
                if !json_out {
                    let at = rec
                        .at
                        .as_ref()
                        .map_or(wf.start.as_str(), |p| p.step.as_str());
                    println!("resuming run {} of `{}` at step `{at}`", rec.run, wf.name);
                }
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
                    progress: tx.clone(),
                };
                let first = resume::resume(&muster, wf.clone(), rec, &held, opts)
                    .await
                    .map_err(|e| CliError::failed(e.to_string(), json!({})))?;
                let o = gates.past_gates(first).await?;
                outcomes.push(o);
            }
            Ok::<(), CliError>(())
        };
        let done = tokio::select! {
            d = all => d,
            code = interrupted() => {
                eprintln!("interrupted: cancelling the running tasks (`muster resume` again finishes the runs)");
                muster.shutdown().await;
                let _ = journal.flush();
                stop_traces(following).await;
                return Ok(code);
            }
        };
        drop(tx);
        let _ = printer.await;
        // The summaries claim only what the journal holds.
        muster.shutdown().await;
        flush(&journal)?;
        stop_traces(following).await;
        let mut codes = Vec::new();
        for o in &outcomes {
            codes.push(report(
                o,
                wall.elapsed().as_millis(),
                json_out,
                &super::run::Where::Journal(&args.journal),
                (!o.usage.is_empty()).then_some(&o.usage),
            ));
        }
        done?;
        Ok(if codes.contains(&EXIT_FAILED) {
            EXIT_FAILED
        } else if codes.contains(&EXIT_WAITING) {
            EXIT_WAITING
        } else {
            EXIT_OK
        })
    })
}
