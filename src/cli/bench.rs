//! `muster bench`: the coordination-overhead benchmark (W1-W5 of `docs/workloads.md`) beside
//! raw tokio and raw actix, with a progress bar on a terminal and `--json` for one
//! document with every figure. The measuring lives in [`crate::bench`].

use std::io::IsTerminal;
use std::time::Duration;

use serde_json::json;

use super::{block_on, CliError};
use crate::bench::{run as run_bench, scale_from_env, BenchConfig, Workload, SCALE_ENV};

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
            ))
        }
        None => scale_from_env()
            .map_err(|m| CliError::bad_input(m, json!({"env": SCALE_ENV})))?
            .unwrap_or(1.0),
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
        WorkloadArg::All => Workload::ALL.to_vec(),
    };
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
                bar.set_message(format!("{} run {}", p.workload, p.run));
            }
        })
        .await
    });
    bar.finish_and_clear();
    let report = report.map_err(|e| CliError::failed(e.to_string(), json!({})))?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
