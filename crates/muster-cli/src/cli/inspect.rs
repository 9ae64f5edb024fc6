//! `muster inspect`: what happened, read from a journal file without changing it (G5).
//!
//! Parses the options, reads the records ([`muster::journal::sqlite::read_journal`]),
//! builds the views ([`muster::journal::inspect`]) and prints them as a table, JSON lines
//! or a Mermaid sequence diagram. Without a filter it lists the workflow runs (workflow,
//! status: completed, failed, waiting at a gate or unfinished, and the step) and then
//! every correlation; with `--run` (or the `--correlation` of a run) the timeline opens
//! with the run's status.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::CliError;
use muster::journal::Record;
use muster::journal::inspect::{self, CorrelationSummary, RunState, RunSummary, Scope, Timeline};
use muster::journal::sqlite::{read_archive, read_journal};

/// How `muster inspect` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON lines: one record per line, each with a `record` field saying what it is.
    Json,
    /// A Mermaid `sequenceDiagram`.
    Mermaid,
}

/// Arguments of `muster inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The journal file (SQLite), opened read-only.
    #[arg(long, default_value = ".muster/journal.db")]
    pub journal: PathBuf,
    /// A workflow run id, a unique prefix of one, or `latest` (the run started last).
    /// Its tasks share it as their correlation id.
    #[arg(long, conflicts_with_all = ["correlation", "task"])]
    pub run: Option<String>,
    /// A correlation id, or a unique prefix of one.
    #[arg(long, conflicts_with = "task")]
    pub correlation: Option<String>,
    /// A task id, or a unique prefix of one.
    #[arg(long)]
    pub task: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Same as `--format json` (errors too are printed as JSON).
    #[arg(long)]
    pub json: bool,
    /// Read an archive written by `muster journal compact --archive` instead of the
    /// journal (its count and digest are checked first).
    #[arg(long, conflicts_with = "journal")]
    pub archive: Option<PathBuf>,
    /// Read the journal of a node instead of a file.
    #[command(flatten)]
    pub server: super::client::ServerArgs,
}

/// `writeln!` into the output buffer (writing to a `String` cannot fail).
macro_rules! outln {
    ($out:expr) => {{ let _ = writeln!($out); }};
    ($out:expr, $($arg:tt)*) => {{ let _ = writeln!($out, $($arg)*); }};
}

/// `write!` into the output buffer.
macro_rules! outw {
    ($out:expr, $($arg:tt)*) => {{ let _ = write!($out, $($arg)*); }};
}

/// Runs `muster inspect`.
pub fn run(args: InspectArgs) -> Result<(), CliError> {
    let records = if args.server.server.is_some() {
        let client = super::client::Client::new(&args.server)?;
        // One run (by id or unique prefix): its records only, from whichever control
        // node of a cluster has it.
        let run = args
            .run
            .clone()
            .filter(|r| !r.trim().eq_ignore_ascii_case("latest"));
        super::block_on(async move {
            match run {
                Some(r) => {
                    let run = client.resolve_run(&r).await?;
                    client.run_records(run).await
                }
                None => client.records().await,
            }
        })?
    } else if let Some(archive) = &args.archive {
        read_archive(archive).map_err(|e| {
            CliError::bad_input(
                e.to_string(),
                json!({"archive": archive, "message": e.to_string()}),
            )
        })?
    } else {
        read_journal(&args.journal, 0).map_err(|e| {
            CliError::bad_input(
                e.to_string(),
                json!({"journal": args.journal, "message": e.to_string()}),
            )
        })?
    };
    let format = if args.json { Format::Json } else { args.format };
    let latest = match args.run.as_deref().map(str::trim) {
        Some(r) if r.eq_ignore_ascii_case("latest") => Some(latest_run(&records, &args)?),
        _ => None,
    };
    let scope = if let Some(id) = latest {
        Scope::Correlation(id)
    } else if let Some(id) = args.run.as_ref().or(args.correlation.as_ref()) {
        let what = if args.run.is_some() {
            "run"
        } else {
            "correlation"
        };
        Scope::Correlation(resolve(
            what,
            id,
            &inspect::correlation_ids(&records),
            &args,
        )?)
    } else if let Some(id) = &args.task {
        Scope::Task(resolve("task", id, &inspect::task_ids(&records), &args)?)
    } else {
        Scope::All
    };
    let mut out = String::new();
    let runs = inspect::runs(&records);
    // The run a `--run` / `--correlation` names, if it names one.
    let run = match scope {
        Scope::Correlation(c) => runs.iter().find(|r| r.run == c),
        _ => None,
    };
    match (scope, format) {
        (Scope::All, Format::Table) => {
            if !runs.is_empty() {
                print_runs(&mut out, &runs);
                outln!(out);
            }
            print_summaries(&mut out, &inspect::correlations(&records))
        }
        (Scope::All, Format::Json) => {
            for r in &runs {
                outln!(out, "{}", line("run", r));
            }
            for s in inspect::correlations(&records) {
                outln!(out, "{}", line("correlation", &s));
            }
        }
        (scope, Format::Mermaid) => {
            outw!(out, "{}", inspect::timeline(&records, scope).to_mermaid())
        }
        (scope, Format::Json) => {
            if let Some(r) = run {
                outln!(out, "{}", line("run", r));
            }
            let t = inspect::timeline(&records, scope);
            for e in &t.entries {
                outln!(out, "{}", line("event", e));
            }
            for o in &t.ownership {
                for l in &o.leases {
                    let mut v = line("lease", l);
                    v["task"] = json!(o.task);
                    v["capability"] = json!(o.capability);
                    outln!(out, "{v}");
                }
            }
            for o in &t.ownership {
                outln!(out, "{}", line("task", o));
            }
        }
        (scope, Format::Table) => print_timeline(&mut out, &records, scope, run),
    }
    // What model-backed agents spent, per run and agent type (LLM agents only).
    let usage = inspect::usage(&records, scope);
    match format {
        Format::Table if !usage.is_empty() => print_usage(&mut out, &usage),
        Format::Json => {
            for u in &usage {
                outln!(out, "{}", line("usage", u));
            }
        }
        _ => {}
    }
    // The model calls an LLM agent recorded for the task (`record = "prompts"`).
    if let Scope::Task(task) = scope {
        print_model_calls(&mut out, &records, task, format);
    }
    // A closed pipe (`muster inspect | head`) is the reader's choice, not an error.
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::failed(
            format!("cannot write the output: {e}"),
            json!({"message": e.to_string()}),
        )),
        _ => Ok(()),
    }
}

/// The most characters of one recorded message a table shows (`--json` shows them whole).
const CALL_TEXT_SHOWN: usize = 240;

/// A recorded text on one line, cut to [`CALL_TEXT_SHOWN`] characters.
fn one_line(text: &str) -> String {
    let flat = text.replace(['\n', '\r'], " ");
    match flat.char_indices().nth(CALL_TEXT_SHOWN) {
        Some((i, _)) => format!("{}… ({} characters)", &flat[..i], flat.chars().count()),
        None => flat,
    }
}

/// The task's recorded model calls: with `--json` one `record: "model_call"` line each
/// (the call whole); as a table, a heading per call and its messages and answer on a line
/// each.
fn print_model_calls(out: &mut String, records: &[Record], task: Uuid, format: Format) {
    let calls: Vec<(&Record, &str, u64, &muster::journal::ModelCall)> = records
        .iter()
        .filter_map(|r| match &r.event {
            muster::journal::Event::ModelCall {
                task: t,
                agent,
                epoch,
                call,
            } if *t == task => Some((r, agent.as_ref(), *epoch, call.as_ref())),
            _ => None,
        })
        .collect();
    if calls.is_empty() {
        return;
    }
    match format {
        Format::Json => {
            for (r, agent, epoch, call) in &calls {
                let mut v = line("model_call", call);
                v["seq"] = json!(r.seq);
                v["task"] = json!(task);
                v["agent"] = json!(agent);
                v["epoch"] = json!(epoch);
                outln!(out, "{v}");
            }
        }
        Format::Table => {
            outln!(out);
            outln!(out, "model calls (recorded prompts)");
            for (_, agent, epoch, call) in &calls {
                let tokens = call.usage.as_ref().map_or("failed".to_string(), |u| {
                    let n = |x: Option<u64>| x.map_or("unknown".to_string(), |x| x.to_string());
                    format!(
                        "{} tokens ({} prompt + {} completion)",
                        n(u.total_tokens),
                        n(u.prompt_tokens),
                        n(u.completion_tokens)
                    )
                });
                outln!(
                    out,
                    "attempt {} (epoch {epoch}, {agent}) · {} · {} · {tokens} · {} ms{}",
                    call.attempt,
                    call.label(),
                    call.model,
                    call.latency_ms,
                    if call.truncated { " · cut" } else { "" }
                );
                for m in &call.messages {
                    outln!(out, "  {:>9}: {}", m.role, one_line(&m.content));
                }
                match (&call.answer, &call.error) {
                    (Some(a), _) => outln!(out, "  {:>9}: {}", "answer", one_line(a)),
                    (None, Some(e)) => outln!(out, "  {:>9}: {}", "failed", one_line(e)),
                    (None, None) => {}
                }
            }
        }
        Format::Mermaid => {}
    }
}

fn print_usage(out: &mut String, usage: &[inspect::UsageLine]) {
    outln!(out);
    outln!(
        out,
        "model usage (tokens; unknown: the server did not report them)"
    );
    let mut t = super::table::new(
        &[
            "CORRELATION",
            "AGENT",
            "ATTEMPTS",
            "CALLS",
            "PROMPT",
            "COMPLETION",
            "TOTAL",
            "COST",
        ],
        &[2, 3, 4, 5],
    );
    for u in usage {
        let t_ = &u.totals;
        let known = |n: u64| {
            if t_.unknown_attempts == t_.attempts {
                "unknown".to_string()
            } else {
                n.to_string()
            }
        };
        t.add_row(vec![
            u.correlation.to_string(),
            u.agent.to_string(),
            t_.attempts.to_string(),
            t_.calls.to_string(),
            known(t_.prompt_tokens),
            known(t_.completion_tokens),
            t_.display_total(),
            t_.cost.map_or("-".into(), |c| format!("{c:.6}")),
        ]);
    }
    outln!(out, "{}", super::table::render(&t, 0));
}

/// Finds the one id that `given` names exactly or by a unique prefix.
/// The run of the journal started last (`--run latest`).
fn latest_run(records: &[Record], args: &InspectArgs) -> Result<Uuid, CliError> {
    inspect::runs(records)
        .iter()
        .max_by_key(|r| (r.started_ms, r.run))
        .map(|r| r.run)
        .ok_or_else(|| {
            CliError::bad_input(
                format!(
                    "{}: --run latest: this journal holds no workflow run",
                    args.journal.display()
                ),
                json!({"journal": args.journal, "run": "latest"}),
            )
        })
}

/// `1 run`, `3 runs`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn resolve(what: &str, given: &str, ids: &[Uuid], args: &InspectArgs) -> Result<Uuid, CliError> {
    let given = given.trim().to_ascii_lowercase();
    if let Ok(id) = Uuid::parse_str(&given)
        && ids.contains(&id)
    {
        return Ok(id);
    }
    let matches: Vec<&Uuid> = ids
        .iter()
        .filter(|id| !given.is_empty() && id.to_string().starts_with(&given))
        .collect();
    match matches.as_slice() {
        [one] => Ok(**one),
        [] => Err(CliError::bad_input(
            format!(
                "{}: no {what} `{given}` in this journal ({} known)",
                args.journal.display(),
                ids.len()
            ),
            json!({"journal": args.journal, what: given}),
        )),
        many => Err(CliError::bad_input(
            format!(
                "{}: `{given}` names {} {what}s; give more of the id",
                args.journal.display(),
                many.len()
            ),
            json!({"journal": args.journal, what: given, "matches": many}),
        )),
    }
}

fn line<T: Serialize>(record: &str, value: &T) -> Value {
    let mut v = serde_json::to_value(value).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("record".into(), json!(record));
    }
    v
}

fn print_runs(out: &mut String, runs: &[RunSummary]) {
    let mut t = super::table::new(
        &[
            "RUN", "WORKFLOW", "STATUS", "STEP", "TASKS", "STARTED", "DURATION", "DETAIL",
        ],
        &[4, 6],
    );
    for r in runs {
        t.add_row(vec![
            r.run.to_string(),
            r.workflow.clone(),
            r.status.to_string(),
            r.step.clone().unwrap_or_else(|| "-".into()),
            r.tasks.to_string(),
            timestamp(r.started_ms),
            duration(r.duration_ms),
            detail(r),
        ]);
    }
    outln!(out, "{}", super::table::render(&t, 0));
    outln!(out, "{}", count(runs.len(), "run", "runs"));
}

/// What a run's status needs said beside it.
fn detail(r: &RunSummary) -> String {
    let mut d = match r.status {
        RunState::Completed => return "-".into(),
        RunState::Failed => r.reason.clone().unwrap_or_default(),
        RunState::Waiting => format!(
            "waits at gate `{}` for a decision (muster approve): {}",
            r.gate.as_deref().unwrap_or("-"),
            r.question.as_deref().unwrap_or("")
        ),
        RunState::Unfinished => "no run_ended: the process stopped mid-run, or is still running \
                                 (muster resume finishes it)"
            .into(),
    };
    if let Some(f) = &r.failed_step {
        let _ = write!(d, "; step `{}` failed: {}", f.step, f.reason);
    }
    d
}

/// One line on a run: `ship (ship.toml): failed at step `test`: why`.
fn run_line(r: &RunSummary) -> String {
    let at = match (r.status, r.step.as_deref()) {
        (_, None) => String::new(),
        (RunState::Waiting, Some(s)) => format!(" at gate `{s}`"),
        (RunState::Unfinished, Some(s)) => format!(" in step `{s}`"),
        (_, Some(s)) => format!(" at step `{s}`"),
    };
    let detail = match r.status {
        RunState::Completed => String::new(),
        _ => format!(": {}", detail(r)),
    };
    format!("{} ({}): {}{at}{detail}", r.workflow, r.file, r.status)
}

fn print_summaries(out: &mut String, summaries: &[CorrelationSummary]) {
    let mut t = super::table::new(
        &[
            "CORRELATION",
            "TASKS",
            "HANDOFFS",
            "COMPLETED",
            "ESCALATED",
            "CANCELLED",
            "STARTED",
            "DURATION",
        ],
        &[1, 2, 3, 4, 5],
    );
    for s in summaries {
        t.add_row(vec![
            s.correlation.to_string(),
            s.tasks.to_string(),
            s.handoffs.to_string(),
            s.completed.to_string(),
            s.escalated.to_string(),
            s.cancelled.to_string(),
            timestamp(s.started_ms),
            duration(s.duration_ms),
        ]);
    }
    outln!(out, "{}", super::table::render(&t, 0));
    outln!(
        out,
        "{}",
        count(summaries.len(), "correlation", "correlations")
    );
}

fn print_timeline(out: &mut String, records: &[Record], scope: Scope, run: Option<&RunSummary>) {
    let Timeline { entries, ownership } = inspect::timeline(records, scope);
    match scope {
        Scope::Correlation(c) => outln!(out, "correlation {c}"),
        Scope::Task(t) => outln!(out, "task {t}"),
        Scope::All => {}
    }
    if let Some(r) = run {
        outln!(out, "run {}", run_line(r));
    }
    if let Some(first) = entries.first() {
        outln!(out, "started {}", timestamp(first.at_ms));
    }
    outln!(out);
    let mut t = super::table::new(
        &[
            "OFFSET",
            "SEQ",
            "EVENT",
            "TASK",
            "SENDER",
            "AGENT",
            "CAPABILITY",
            "SCHEMA",
            "ATT",
            "EPOCH",
            "OUTCOME",
        ],
        &[0, 1, 8, 9],
    );
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    for e in &entries {
        t.add_row(vec![
            format!("+{}", duration(e.offset_ms)),
            e.seq.to_string(),
            e.kind.to_string(),
            e.task.map_or("-".into(), |t| t.to_string()),
            opt(&e.sender),
            opt(&e.agent),
            opt(&e.capability),
            opt(&e.schema),
            e.attempt.map_or("-".into(), |a| a.to_string()),
            e.epoch.map_or("-".into(), |a| a.to_string()),
            e.outcome.clone(),
        ]);
    }
    outln!(out, "{}", super::table::render(&t, 0));
    let start = entries.first().map_or(0, |e| e.at_ms);
    outln!(out);
    outln!(out, "ownership");
    for o in &ownership {
        outln!(
            out,
            "  task {} ({}, from {}): {}",
            o.task,
            o.capability,
            o.sender,
            o.status
        );
        let mut leases =
            super::table::new(&["epoch", "attempt", "agent", "span", "outcome"], &[0, 1]);
        for l in &o.leases {
            let span = match l.ended_ms {
                Some(end) => format!(
                    "+{}..+{}",
                    duration(l.granted_ms.saturating_sub(start)),
                    duration(end.saturating_sub(start))
                ),
                None => format!("+{}..", duration(l.granted_ms.saturating_sub(start))),
            };
            leases.add_row(vec![
                l.epoch.to_string(),
                l.attempt.to_string(),
                l.agent.to_string(),
                span,
                l.outcome.clone(),
            ]);
        }
        if !o.leases.is_empty() {
            outln!(out, "{}", super::table::render(&leases, 4));
        }
        for s in &o.stale {
            outln!(out, "    stale result from {s} rejected");
        }
        for e in &o.effects {
            let epochs = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            outln!(
                out,
                "    effect {:<24} {:<7} started@{} done@{} key {}",
                e.name,
                e.state,
                epochs(&e.started),
                if e.done.is_empty() {
                    "-".to_string()
                } else {
                    epochs(&e.done)
                },
                e.key.as_deref().unwrap_or("(none)")
            );
            if let Some(w) = &e.warning {
                outln!(out, "      warning: {w}");
            }
        }
    }
}

fn timestamp(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn duration(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else {
        format!("{:.3}s", ms as f64 / 1_000.0)
    }
}
