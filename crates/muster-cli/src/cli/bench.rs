//! `muster bench`: the coordination-overhead benchmark (W1-W5 of `docs/workloads.md`) beside
//! raw tokio and raw actix, and with `--peers` beside other agent runtimes run interleaved
//! in the same runs; a progress bar on a terminal and `--json` for one document with every
//! figure. The measuring lives in [`muster::bench`].

use std::io::IsTerminal;
use std::time::Duration;

use serde_json::json;

use super::{CliError, block_on};
use muster::bench::peers::{PEER_WORKLOADS, Peer, PeerDirs, choose};
use muster::bench::{BenchConfig, SCALE_ENV, Workload, run as run_bench, scale_from_env};

/// Which workloads: one, or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadArg {
    /// W1 handoff chain.
    #[value(name = "W1", alias = "w1")]
    W1,
    /// W2 fan-out.
    #[value(name = "W2", alias = "w2")]
    W2,
    /// W3 request-response.
    #[value(name = "W3", alias = "w3")]
    W3,
    /// W4 recovery.
    #[value(name = "W4", alias = "w4")]
    W4,
    /// W5 scale.
    #[value(name = "W5", alias = "w5")]
    W5,
    /// Every workload.
    #[value(name = "all")]
    All,
}

/// Arguments of `muster bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The workload to run.
    #[arg(long, value_enum, default_value = "all")]
    pub workload: WorkloadArg,
    /// Runs per workload; figures are medians with min..max over them.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Scales task and agent counts (default: $MUSTER_BENCH_SCALE, else 1.0).
    #[arg(long)]
    pub scale: Option<f64>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Wall-time budget, s, for W5's registrations; it reports how many it reached.
    #[arg(long, default_value_t = 60)]
    pub w5_budget_s: u64,
    /// Run W5 in this process (the default runs each W5 run in a child process).
    #[arg(long, hide = true)]
    pub in_process: bool,
    /// Also run peer runtimes on W1-W3, interleaved with muster in every run: `all` (the
    /// default when given without a value), `python`, `rust`, or names separated by commas
    /// (autogen-core, langgraph, graph-flow, autoagents-core). Missing venvs and builds are
    /// made first, under target/peers.
    #[arg(long, num_args = 0..=1, default_missing_value = "all", value_name = "PEERS")]
    pub peers: Option<String>,
    /// Also run this program as a peer (`NAME=PROGRAM`; it gets the peers' arguments and
    /// prints their JSON line). Repeatable.
    #[arg(long = "peer", value_name = "NAME=PROGRAM")]
    pub extra_peers: Vec<String>,
    /// The longest one peer run may take, s, before it is killed and the bench fails.
    #[arg(long, default_value_t = 900)]
    pub peer_timeout_s: u64,
    /// The peers' sources (a muster checkout's `benches/peers`); by default the checkout
    /// the current directory is in.
    #[arg(long, value_name = "DIR")]
    pub peers_dir: Option<std::path::PathBuf>,
    /// A quick look without peers: W1, W2 and W3 only (or the one `--workload` names), at
    /// scale 0.1 unless `--scale` or $MUSTER_BENCH_SCALE says otherwise; refuses `--peers`
    /// and `--peer`.
    #[arg(long)]
    pub quick: bool,
}

/// The workloads `--quick` runs.
const QUICK_WORKLOADS: [Workload; 3] = [Workload::W1, Workload::W2, Workload::W3];
/// The scale `--quick` runs at when none is given.
const QUICK_SCALE: f64 = 0.1;

/// The longest `--peer-timeout-s`.
const MAX_PEER_TIMEOUT_S: u64 = 86_400;
/// The most `--peer` programs.
const MAX_EXTRA_PEERS: usize = 16;

/// Makes every asked-for peer ready (venv, pip install, cargo build) before anything is
/// measured, with a spinner on a terminal; the first that cannot be made ready is an
/// error naming it and the command that failed.
fn prepare_peers(args: &BenchArgs) -> Result<Vec<Peer>, CliError> {
    let mut peers = Vec::new();
    if let Some(list) = &args.peers {
        let dirs = PeerDirs::locate(args.peers_dir.as_deref()).map_err(|m| {
            CliError::bad_input(format!("--peers: {m}"), json!({"field": "--peers-dir"}))
        })?;
        let spinner = if std::io::stderr().is_terminal() {
            let s = indicatif::ProgressBar::new_spinner();
            s.enable_steady_tick(Duration::from_millis(120));
            s
        } else {
            indicatif::ProgressBar::hidden()
        };
        let on_terminal = std::io::stderr().is_terminal();
        let chosen = choose(list).map_err(|m| {
            CliError::bad_input(
                format!("--peers {list:?}: {m}"),
                json!({"field": "--peers"}),
            )
        })?;
        for spec in chosen {
            let peer = spec
                .prepare(&dirs, &mut |step| {
                    if on_terminal {
                        spinner.set_message(step.to_string());
                    } else {
                        eprintln!("muster bench: {step}");
                    }
                })
                .map_err(|e| {
                    spinner.finish_and_clear();
                    CliError::failed(
                        e.to_string(),
                        json!({"peer": e.peer, "stage": "prepare", "why": e.what}),
                    )
                })?;
            peers.push(peer);
        }
        spinner.finish_and_clear();
    }
    if args.extra_peers.len() > MAX_EXTRA_PEERS {
        return Err(CliError::bad_input(
            format!("--peer: at most {MAX_EXTRA_PEERS} programs"),
            json!({"field": "--peer"}),
        ));
    }
    for spec in &args.extra_peers {
        let peer = Peer::external(spec)
            .map_err(|m| CliError::bad_input(m.to_string(), json!({"field": "--peer"})))?;
        if peers.iter().any(|p| p.name == peer.name) {
            return Err(CliError::bad_input(
                format!(
                    "--peer {spec}: a peer named `{}` is already chosen",
                    peer.name
                ),
                json!({"field": "--peer"}),
            ));
        }
        peers.push(peer);
    }
    Ok(peers)
}

/// The largest `--scale` (100x the counts of docs/workloads.md: W5 would register 10^8
/// agents, about the memory of this kind of machine).
const MAX_SCALE: f64 = 100.0;
/// The most `--runs`.
const MAX_RUNS: usize = 1_000;

/// Runs `muster bench`.
pub fn run(args: BenchArgs) -> Result<(), CliError> {
    let scale = match args.scale {
        Some(s) if s > 0.0 && s <= MAX_SCALE => s,
        Some(s) => {
            return Err(CliError::bad_input(
                format!("--scale {s}: expected a number above 0 and at most {MAX_SCALE}"),
                json!({"field": "--scale"}),
            ));
        }
        None => scale_from_env()
            .map_err(|m| CliError::bad_input(m, json!({"env": SCALE_ENV})))?
            .unwrap_or(if args.quick { QUICK_SCALE } else { 1.0 }),
    };
    if args.runs == 0 || args.runs > MAX_RUNS {
        return Err(CliError::bad_input(
            format!("--runs {}: expected 1 to {MAX_RUNS}", args.runs),
            json!({"field": "--runs"}),
        ));
    }
    if scale > MAX_SCALE {
        return Err(CliError::bad_input(
            format!("{SCALE_ENV}={scale}: expected at most {MAX_SCALE}"),
            json!({"env": SCALE_ENV}),
        ));
    }
    let workloads = match args.workload {
        WorkloadArg::W1 => vec![Workload::W1],
        WorkloadArg::W2 => vec![Workload::W2],
        WorkloadArg::W3 => vec![Workload::W3],
        WorkloadArg::W4 => vec![Workload::W4],
        WorkloadArg::W5 => vec![Workload::W5],
        WorkloadArg::All if args.quick => QUICK_WORKLOADS.to_vec(),
        WorkloadArg::All => Workload::ALL.to_vec(),
    };
    let asked_for_peers = args.peers.is_some() || !args.extra_peers.is_empty();
    if args.quick && asked_for_peers {
        let flag = if args.peers.is_some() {
            "--peers"
        } else {
            "--peer"
        };
        return Err(CliError::bad_input(
            format!("--quick runs without peers: drop {flag}, or drop --quick to run them"),
            json!({"field": flag}),
        ));
    }
    if args.quick
        && let Some(w) = workloads.iter().find(|w| !QUICK_WORKLOADS.contains(w))
    {
        return Err(CliError::bad_input(
            format!(
                "--quick runs W1, W2 and W3; --workload {} is not one of them",
                w.id()
            ),
            json!({"field": "--workload"}),
        ));
    }
    if asked_for_peers && !workloads.iter().any(|w| PEER_WORKLOADS.contains(w)) {
        return Err(CliError::bad_input(
            format!(
                "--peers: the peers run W1, W2 and W3; --workload {} has none of them",
                workloads
                    .iter()
                    .map(Workload::id)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            json!({"field": "--peers"}),
        ));
    }
    if args.peer_timeout_s == 0 || args.peer_timeout_s > MAX_PEER_TIMEOUT_S {
        return Err(CliError::bad_input(
            format!(
                "--peer-timeout-s {}: expected 1 to {MAX_PEER_TIMEOUT_S}",
                args.peer_timeout_s
            ),
            json!({"field": "--peer-timeout-s"}),
        ));
    }
    let peers = prepare_peers(&args)?;
    let isolate_w5 = if args.in_process {
        None
    } else {
        std::env::current_exe().ok()
    };
    let command = std::iter::once("muster".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let config = BenchConfig {
        workloads,
        runs: args.runs,
        scale,
        isolate_w5,
        w5_budget: Duration::from_secs(args.w5_budget_s),
        command: if std::env::var_os(SCALE_ENV).is_some() && args.scale.is_none() {
            format!("{SCALE_ENV}={scale} {command}")
        } else {
            command
        },
        peers,
        peer_limit: Duration::from_secs(args.peer_timeout_s),
    };
    let bar = if std::io::stderr().is_terminal() && !args.in_process {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let report = block_on(async {
        run_bench(&config, &mut |p| {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
            if !p.workload.is_empty() {
                let who = if p.peer.is_empty() { "muster" } else { &p.peer };
                bar.set_message(format!("{} {who} run {}", p.workload, p.run));
            }
        })
        .await
    });
    bar.finish_and_clear();
    let report = report.map_err(|e| {
        let details = match &e {
            muster::bench::BenchError::Peer(p) => {
                json!({"peer": p.peer, "stage": "run", "why": p.what})
            }
            _ => json!({}),
        };
        CliError::failed(e.to_string(), details)
    })?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
