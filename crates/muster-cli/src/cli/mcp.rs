//! `muster mcp`: the node of `muster serve` answering MCP over stdin and stdout instead of
//! HTTP, for desktop clients and IDEs that start their MCP servers as programs
//! ([`muster::serve::serve_mcp_stdio`], docs/mcp.md). The cast, the workflows and the
//! journal are loaded, checked and resumed exactly as `muster serve` does.

use std::path::PathBuf;

use super::serve::{Front, ServeArgs, run_as};
use super::{CastArgs, CliError};
use muster::journal::Durability;
use muster::serve::admission;

/// Arguments of `muster mcp`.
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Where the cast and schemas are.
    #[command(flatten)]
    pub cast: CastArgs,
    /// The runtime's settings.
    #[command(flatten)]
    pub runtime: super::RuntimeArgs,
    /// Workflows to serve as tools: every `*.toml` in DIR and every `DIR/*/workflow.toml`.
    #[arg(long)]
    pub workflows: Option<PathBuf>,
    /// The journal (SQLite, created if absent; one process at a time).
    #[arg(long, default_value = ".muster/journal.db")]
    pub journal: PathBuf,
    /// `relaxed` or `sync` (see `muster run --help`).
    #[arg(long, default_value = "relaxed", value_parser = super::run::parse_durability)]
    pub durability: Durability,
    /// At most this many runs in flight (as `muster serve --max-runs`).
    #[arg(long, default_value_t = admission::DEFAULT_MAX_RUNS,
          value_parser = |s: &str| admission::parse_bound("--max-runs", s))]
    pub max_runs: usize,
    /// At most this many capability calls in flight (as `muster serve --max-tasks`).
    #[arg(long, default_value_t = admission::DEFAULT_MAX_TASKS,
          value_parser = |s: &str| admission::parse_bound("--max-tasks", s))]
    pub max_tasks: usize,
}

/// Runs `muster mcp` until the client closes stdin (or SIGINT/SIGTERM); returns the exit
/// code.
pub fn run(a: McpArgs) -> Result<i32, CliError> {
    let args = ServeArgs {
        cast: a.cast,
        runtime: a.runtime,
        workflows: a.workflows,
        journal: a.journal,
        durability: a.durability,
        listen: String::new(),
        tls_cert: None,
        tls_key: None,
        token_file: None,
        token_env: None,
        max_runs: a.max_runs,
        max_tasks: a.max_tasks,
        json: false,
        nats: None,
        node: None,
        ttl: std::time::Duration::from_millis(1500),
        replicas: muster::cluster::Replicas::Auto,
        retain: None,
        retain_every: std::time::Duration::from_secs(3600),
        archive_dir: None,
    };
    run_as(args, Front::McpStdio)
}
