//! The `muster` command line: parses arguments and calls the library. No logic lives here
//! that a library user could not reach.
//!
//! Exit codes: 0 success, 1 the thing checked or run failed, 2 bad input (unreadable file,
//! schema error), with a message naming the file, the field and what was expected.

pub mod agents;
pub mod approve;
pub mod bench;
pub mod check;
pub mod client;
pub mod inspect;
pub mod journal;
pub mod mcp;
pub mod resume;
pub mod retry;
pub mod run;
pub mod serve;
pub mod sim;
mod table;
pub mod worker;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: what was run or checked failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: bad input.
pub const EXIT_BAD_INPUT: i32 = 2;

/// muster: every AI agent a supervised actor.
#[derive(Debug, Parser)]
#[command(name = "muster", version, about, long_about = None)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List agents, capabilities, schemas and state after registering the cast.
    Agents(agents::AgentsArgs),
    /// Check a workflow against the cast: discovery, messaging and delegation.
    Check(check::CheckArgs),
    /// Run one workflow with the cast, showing each step as it happens.
    Run(run::RunArgs),
    /// Show what happened, from a journal file: correlations, timelines, ownership.
    Inspect(inspect::InspectArgs),
    /// Measure coordination overhead (W1-W5) beside raw tokio and raw actix.
    Bench(bench::BenchArgs),
    /// Look after a journal file: `compact` removes (and archives) work that ended long ago.
    Journal(journal::JournalArgs),
    /// Finish every unfinished run of a journal (after a crash, or past a decided gate).
    Resume(resume::ResumeArgs),
    /// Decide a gate where a run waits: appends the decision to the journal.
    Approve(approve::ApproveArgs),
    /// Retry a failed run from its failed step on a node, as a new run (docs/api.md).
    Retry(retry::RetryArgs),
    /// Simulate a failure scenario on virtual time: lost, duplicated, latencies, digest.
    Sim(sim::SimArgs),
    /// Serve the cast and workflows over HTTP (docs/api.md) until SIGINT or SIGTERM.
    Serve(serve::ServeArgs),
    /// Host the cast's agents for a cluster over NATS JetStream (docs/distributed.md).
    Worker(worker::WorkerArgs),
    /// Serve the cast and workflows as MCP tools on stdin/stdout, for desktop clients and
    /// IDEs (docs/mcp.md).
    Mcp(mcp::McpArgs),
}

/// Options shared by commands that load a cast.
#[derive(Debug, Clone, clap::Args)]
pub struct CastArgs {
    /// Directory of agent manifests (`*.toml`).
    #[arg(long, default_value = "actors")]
    pub actors: PathBuf,
    /// Directory of JSON Schemas (`NAME.schema.json`).
    #[arg(long, default_value = "schemas")]
    pub schemas: PathBuf,
    /// Refuse (exit 2) what is otherwise a warning: an environment override
    /// `MUSTER_<AGENT>__<FIELD>` for an agent the cast does not have; for `muster serve`,
    /// also a workflow of `--workflows` that does not check clean.
    #[arg(long)]
    pub strict: bool,
}

impl CastArgs {
    /// The cast of a workflow that keeps its own beside it: `--actors` (`--schemas`) left at
    /// `actors` (`schemas`) is read as the `actors/` (`schemas/`) folder of the workflow
    /// file's folder when there is one, so `muster run examples/refunds/workflow.toml`
    /// runs from anywhere in the repository without naming its cast.
    pub(crate) fn beside(mut self, workflow: &std::path::Path) -> Self {
        let Some(dir) = workflow
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && *d != std::path::Path::new("."))
        else {
            return self;
        };
        if self.actors == std::path::Path::new("actors") && dir.join("actors").is_dir() {
            self.actors = dir.join("actors");
        }
        if self.schemas == std::path::Path::new("schemas") && dir.join("schemas").is_dir() {
            self.schemas = dir.join("schemas");
        }
        self
    }
}

/// The runtime's settings a command that starts one takes.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Shards (threads) the runtime runs on: a number from 1 to 256, or `auto` for one per
    /// core this process may use.
    #[arg(long, default_value = "auto", value_parser = parse_shards)]
    pub shards: usize,
}

/// `--shards`: `auto` or 1..=256.
fn parse_shards(s: &str) -> Result<usize, String> {
    if s == "auto" {
        return Ok(muster::shards::available());
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=muster::shards::MAX_SHARDS).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a shard count: give `auto` or a number from 1 to {}",
            muster::shards::MAX_SHARDS
        )),
    }
}

/// Parses `--replicas`: `auto` or 1 to 5.
pub(crate) fn parse_replicas(s: &str) -> Result<muster::cluster::Replicas, String> {
    s.parse()
}

/// A failure with its exit code, printed as text or JSON.
#[derive(Debug)]
pub struct CliError {
    /// Exit code.
    pub code: i32,
    /// Message.
    pub message: String,
    /// Structured details for `--json`.
    pub details: serde_json::Value,
}

impl CliError {
    /// Bad input (exit 2).
    pub fn bad_input(message: impl Into<String>, details: serde_json::Value) -> Self {
        CliError {
            code: EXIT_BAD_INPUT,
            message: message.into(),
            details,
        }
    }

    /// Failure (exit 1).
    pub fn failed(message: impl Into<String>, details: serde_json::Value) -> Self {
        CliError {
            code: EXIT_FAILED,
            message: message.into(),
            details,
        }
    }

    /// Prints the error (stderr as text, or stdout as a JSON document) and returns the code.
    pub fn report(&self, json: bool) -> i32 {
        if json {
            let doc =
                serde_json::json!({"ok": false, "error": self.message, "details": self.details});
            println!("{doc}");
        } else {
            eprintln!("error: {}", self.message);
        }
        self.code
    }
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Run(a) => {
            let json = a.json;
            match run::run(a) {
                Ok(code) => code,
                Err(e) => e.report(json),
            }
        }
        Command::Check(a) => {
            let json = a.json;
            match check::run(a) {
                Ok(code) => code,
                Err(e) => e.report(json),
            }
        }
        Command::Bench(a) => {
            let json = a.json;
            match bench::run(a) {
                Ok(()) => EXIT_OK,
                Err(e) => e.report(json),
            }
        }
        Command::Agents(a) => {
            let json = a.json;
            match agents::run(a) {
                Ok(()) => EXIT_OK,
                Err(e) => e.report(json),
            }
        }
        Command::Journal(a) => {
            let json = a.json();
            match journal::run(a) {
                Ok(code) => code,
                Err(e) => e.report(json),
            }
        }
        Command::Resume(a) => {
            let json = a.json;
            match resume::run(a) {
                Ok(code) => code,
                Err(e) => e.report(json),
            }
        }
        Command::Sim(a) => {
            let json = a.json;
            match sim::run(a) {
                Ok(code) => code,
                Err(e) => e.report(json),
            }
        }
        Command::Approve(a) => {
            let json = a.json;
            match approve::run(a) {
                Ok(()) => EXIT_OK,
                Err(e) => e.report(json),
            }
        }
        Command::Retry(a) => {
            let json = a.json;
            match retry::run(a) {
                Ok(()) => EXIT_OK,
                Err(e) => e.report(json),
            }
        }
        Command::Serve(a) => {
            let json = a.json;
            match serve::run(a) {
                Ok(code) => code,
                Err(e) => e.report(json),
            }
        }
        Command::Worker(a) => {
            let json = a.json;
            match worker::run(a) {
                Ok(code) => code,
                Err(e) => e.report(json),
            }
        }
        Command::Mcp(a) => match mcp::run(a) {
            Ok(code) => code,
            Err(e) => e.report(false),
        },
        Command::Inspect(a) => {
            let json = a.json;
            match inspect::run(a) {
                Ok(()) => EXIT_OK,
                Err(e) => e.report(json),
            }
        }
    }
}

/// Runs an async body on a fresh actix system (the runtime's home thread).
/// Resolves when the process is asked to stop: Ctrl-C (exit code 130) or SIGTERM (143),
/// so that both cancel the running tasks, stop the agents and flush the journal.
pub(crate) async fn interrupted() -> i32 {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => 130,
                _ = term.recv() => 143,
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                130
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        130
    }
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    actix::System::new().block_on(f)
}

/// Parses a duration argument such as `30s` or `1.5s` (humantime), at most a week.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like 30s or 1500ms: {e}"))?;
    if d > std::time::Duration::from_secs(7 * 24 * 3600) {
        return Err(format!("`{s}` is longer than a week"));
    }
    Ok(d)
}
