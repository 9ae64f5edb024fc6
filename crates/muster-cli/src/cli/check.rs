//! `muster check`: the static checks of a workflow against the cast (the essay's three
//! questions), printed with the file, the step and what to change.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::agents::{load_manifests_warning, program_warnings};
use super::{CastArgs, CliError, EXIT_FAILED, EXIT_OK};
use muster::SchemaStore;
use muster::agents::AgentDef;
use muster::messaging::CapabilitySpec;
use muster::workflow::{Finding, Workflow, check};

/// Arguments of `muster check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The workflow file (TOML).
    pub workflow: PathBuf,
    /// Where the cast and schemas are.
    #[command(flatten)]
    pub cast: CastArgs,
    /// Print one JSON document `{"ok": bool, "findings": [...]}`.
    #[arg(long)]
    pub json: bool,
}

/// Every capability the cast declares.
pub(crate) fn capabilities(defs: &[AgentDef]) -> Vec<CapabilitySpec> {
    defs.iter()
        .flat_map(|d| d.capabilities.iter().cloned())
        .collect()
}

/// Runs the checks of `wf` against the cast.
pub(crate) fn findings(wf: &Workflow, defs: &[AgentDef], store: &SchemaStore) -> Vec<Finding> {
    check(wf, &capabilities(defs), store)
}

/// Prints findings (text or one JSON document); returns the exit code.
pub(crate) fn report(wf: &Workflow, findings: &[Finding], json_out: bool) -> i32 {
    report_with(wf, findings, &[], json_out)
}

/// [`report`], with warnings that do not change the exit code (printed first).
fn report_with(wf: &Workflow, findings: &[Finding], warnings: &[String], json_out: bool) -> i32 {
    if json_out {
        let mut doc = json!({
            "ok": findings.is_empty(),
            "workflow": wf.name,
            "file": wf.file.display().to_string(),
            "findings": findings,
        });
        if !warnings.is_empty() {
            doc["warnings"] = json!(warnings);
        }
        println!("{doc}");
        return if findings.is_empty() {
            EXIT_OK
        } else {
            EXIT_FAILED
        };
    }
    for w in warnings {
        println!("{w}");
    }
    if findings.is_empty() {
        println!(
            "{}: `{}` ok: every capability is declared (discovery), every handoff has a \
             schema that fits (messaging), every step is bounded, reachable and can end \
             (delegation)",
            wf.file.display(),
            wf.name
        );
    } else {
        for f in findings {
            println!("{f}");
        }
        println!(
            "{} finding{} in {}",
            findings.len(),
            if findings.len() == 1 { "" } else { "s" },
            wf.file.display()
        );
    }
    if findings.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// Runs `muster check`; returns the exit code (0 clean, 1 findings). Warnings about the
/// cast (an environment override for no agent, a command agent's program not found from
/// here) are printed first (in `--json`: a `warnings` list) and do not change the code.
pub fn run(mut args: CheckArgs) -> Result<i32, CliError> {
    args.cast = args.cast.beside(&args.workflow);
    let (store, defs, manifests, overrides) = load_manifests_warning(&args.cast)?;
    // Text: on stderr, as every command that loads the cast says them; `--json`: in the
    // document's `warnings`.
    let mut warnings = Vec::new();
    for w in overrides {
        if args.json {
            warnings.push(w);
        } else {
            eprintln!("{w}");
        }
    }
    let wf = load_workflow(&args.workflow, &store)?;
    let here = std::env::current_dir().unwrap_or_default();
    warnings.extend(
        program_warnings(&manifests, &here)
            .into_iter()
            .map(|w| format!("warning: {w}")),
    );
    let found = findings(&wf, &defs, &store);
    Ok(report_with(&wf, &found, &warnings, args.json))
}

/// Loads and compiles a workflow file; every error names the file and the step (exit 2).
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
