//! `muster approve`: record a human decision at a gate where a run waits, in its journal.
//!
//! The decision is appended to the journal as `gate_decided`; a run waiting with
//! `muster run --wait` sees it there and goes on, otherwise `muster resume` continues
//! the run past the gate. Refuses (exit 2) an unknown run, a gate the run does not wait
//! at, and a gate already decided, so a gate is decided exactly once.

use std::path::PathBuf;

use serde_json::json;

use super::CliError;
use muster::journal::sqlite::{DecideError, decide_gate, find_runs, read_records_of};
use muster::workflow::recovery;

/// Arguments of `muster approve`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The journal the run is in.
    #[arg(long, default_value = ".muster/journal.db")]
    pub journal: PathBuf,
    /// The run id, or a unique prefix of it.
    pub run: String,
    /// The gate step the run waits at.
    pub gate: String,
    /// Reject instead of approving.
    #[arg(long)]
    pub reject: bool,
    /// A note on the decision, journaled with it (the API's `note`; `--reason` is the
    /// old name, still accepted).
    #[arg(long, alias = "reason", default_value = "")]
    pub note: String,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Decide on a node instead of in a journal file.
    #[command(flatten)]
    pub server: super::client::ServerArgs,
}

/// Finds a run by id or unique id prefix, through the journal's run index (a read of the
/// matching ids, not of the history).
fn find(journal: &std::path::Path, id: &str) -> Result<uuid::Uuid, CliError> {
    let id = id.trim().to_ascii_lowercase();
    let bad = |e: muster::journal::JournalError| {
        CliError::bad_input(
            e.to_string(),
            json!({"journal": journal, "message": e.to_string()}),
        )
    };
    let hits = if id.is_empty() {
        Vec::new()
    } else {
        find_runs(journal, &id, 20).map_err(bad)?
    };
    match hits.as_slice() {
        [one] => Ok(*one),
        [] => Err(CliError::bad_input(
            format!("no run `{id}` in the journal"),
            json!({"run": id}),
        )),
        many => Err(CliError::bad_input(
            format!(
                "`{id}` matches {}{} runs; give more of the id: {}",
                if many.len() >= 20 { "at least " } else { "" },
                many.len(),
                many.iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            json!({"run": id, "matches": many}),
        )),
    }
}

/// `muster approve --server`: decides the gate on the node, which goes on with the run.
fn remote(args: ApproveArgs) -> Result<(), CliError> {
    let client = super::client::Client::new(&args.server)?;
    super::block_on(async move {
        let run = client.resolve_run(&args.run).await?;
        let approved = !args.reject;
        let body = json!({
            "decision": if approved { "approve" } else { "reject" },
            "note": args.note,
        });
        client
            .post(&format!("/v1/runs/{run}/gates/{}", args.gate), &body)
            .await?;
        if args.json {
            println!(
                "{}",
                json!({"ok": true, "run": run, "gate": args.gate, "approved": approved})
            );
        } else {
            let verb = if approved { "approved" } else { "rejected" };
            println!(
                "{verb} gate `{}` of run {run} on {}",
                args.gate,
                client.base()
            );
            println!("the node goes on with the run");
        }
        Ok(())
    })
}

/// Runs `muster approve`.
pub fn run(args: ApproveArgs) -> Result<(), CliError> {
    if args.server.server.is_some() {
        return remote(args);
    }
    let bad_journal = |e: muster::journal::JournalError| {
        CliError::bad_input(
            e.to_string(),
            json!({"journal": args.journal, "message": e.to_string()}),
        )
    };
    let run = find(&args.journal, &args.run)?;
    let records = read_records_of(&args.journal, run).map_err(bad_journal)?;
    let runs = recovery::runs(&records);
    let rec = runs.iter().find(|r| r.run == run).ok_or_else(|| {
        CliError::bad_input(
            format!("no run `{run}` in the journal"),
            json!({"run": run}),
        )
    })?;
    let details = json!({"run": run, "gate": args.gate});
    if let Some(status) = &rec.ended {
        return Err(CliError::bad_input(
            format!("run {run} has already ended ({status}); there is nothing to decide"),
            details,
        ));
    }
    let at = rec.at.as_ref();
    match at {
        Some(p) if p.step == args.gate && p.decision.is_some() => {
            let d = p.decision.as_ref().map(|d| d.approved).unwrap_or_default();
            return Err(CliError::bad_input(
                format!(
                    "gate `{}` of run {run} is already decided ({}); `muster resume` continues the run",
                    args.gate,
                    if d { "approved" } else { "rejected" }
                ),
                details,
            ));
        }
        Some(p) if p.step == args.gate && p.gate_waiting => {}
        _ => {
            let where_ = match (rec.waiting_at(), at) {
                (Some(g), _) => format!("it waits at gate `{g}`"),
                (None, Some(p)) => format!("it is at step `{}`, not at a gate", p.step),
                (None, None) => "it has not entered a step yet".to_string(),
            };
            return Err(CliError::bad_input(
                format!("run {run} does not wait at gate `{}`: {where_}", args.gate),
                details,
            ));
        }
    }
    let approved = !args.reject;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // One compare-and-set transaction: of two deciders racing, one wins and the other is
    // told the decision that stands.
    let seq = decide_gate(&args.journal, run, &args.gate, approved, &args.note, now)
        .map_err(|e| match e {
            DecideError::AlreadyDecided {
                approved, seq, ..
            } => CliError::bad_input(
                format!("{e}; `muster resume` continues the run"),
                json!({"run": run, "gate": args.gate, "decided": {"approved": approved, "seq": seq}}),
            ),
            other => CliError::bad_input(other.to_string(), details.clone()),
        })?;
    let verb = if approved { "approved" } else { "rejected" };
    if args.json {
        println!(
            "{}",
            json!({"ok": true, "run": run, "gate": args.gate, "approved": approved, "seq": seq})
        );
    } else {
        println!(
            "{verb} gate `{}` of run {run} (journal seq {seq})",
            args.gate
        );
        println!(
            "continue it with: muster resume --journal {}",
            args.journal.display()
        );
    }
    Ok(())
}
