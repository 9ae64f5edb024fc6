//! Coordination overhead, measured: the workloads W1-W5 of `docs/workloads.md` on muster,
//! each beside its raw tokio and raw actix baselines in the same run, repeated and
//! reported as medians with min..max, with ratios to the baselines and, with peers
//! ([`peers`]), to other agent runtimes run interleaved with muster in the same runs.
//!
//! The agents do trivial work (copy a 5-field payload), so what is measured is the
//! coordination alone: ownership, leases, contract checks, journaling, routing. This
//! module owns the harness; [`workloads`] holds the workloads, [`baseline`] the floors
//! and [`report`] the figures. It must never assert a timing, and never report a figure
//! it did not measure in this process (or, for W5, in a child process it started).
//!
//! # Example
//! ```no_run
//! # actix::System::new().block_on(async {
//! use muster_bench::{run, BenchConfig, Workload};
//! let config = BenchConfig { workloads: vec![Workload::W3], runs: 1, scale: 0.01, ..BenchConfig::default() };
//! let report = run(&config, &mut |_| {}).await.expect("bench ran");
//! println!("{}", report.to_text());
//! # });
//! ```
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod baseline;
pub mod payload;
pub mod peers;
pub mod report;
pub mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use peers::{PEER_WORKLOADS, Peer};
use report::{BenchReport, Collector, Machine, PeerSamples, WorkloadReport};

/// The environment variable that scales every task and agent count (e.g. `0.01`).
pub const SCALE_ENV: &str = "MUSTER_BENCH_SCALE";

/// A workload of `docs/workloads.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Handoff chain A -> B -> C.
    W1,
    /// Fan-out over 1,000 agents.
    W2,
    /// Request-response latency.
    W3,
    /// Recovery from a panicking agent.
    W4,
    /// A million agents registered.
    W5,
}

impl Workload {
    /// Every workload, in order.
    pub const ALL: [Workload; 5] = [
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
    ];

    /// `W1` ... `W5`.
    pub fn id(&self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
            Workload::W5 => "W5",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Workloads, in order.
    pub workloads: Vec<Workload>,
    /// Runs per workload (at least 1).
    pub runs: usize,
    /// Scales task and agent counts (1.0 = the counts of docs/workloads.md).
    pub scale: f64,
    /// When set, each W5 run happens in a child process started from this executable
    /// (`EXE bench --workload W5 --runs 1 --json --scale S --in-process`), so that its
    /// million agents neither distort the other workloads' memory figures nor outlive
    /// the run.
    pub isolate_w5: Option<PathBuf>,
    /// Wall time W5 may spend registering before it stops and reports what it reached.
    pub w5_budget: Duration,
    /// The command line, for the report.
    pub command: String,
    /// Peers made ready beforehand ([`peers::PeerSpec::prepare`]); each runs W1, W2 and
    /// W3 right after muster's in every run, with the same counts.
    pub peers: Vec<Peer>,
    /// The longest one peer run may take before it is killed and the benchmark fails.
    pub peer_limit: Duration,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            workloads: Workload::ALL.to_vec(),
            runs: 3,
            scale: 1.0,
            isolate_w5: None,
            w5_budget: Duration::from_secs(60),
            command: String::new(),
            peers: Vec::new(),
            peer_limit: Duration::from_secs(900),
        }
    }
}

/// Why a benchmark could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The runtime or an agent did not start.
    #[error("start: {0}")]
    Start(#[from] muster_core::runtime::StartError),
    /// A task was refused.
    #[error("submit: {0}")]
    Submit(#[from] muster_core::runtime::SubmitError),
    /// The fixture could not be built.
    #[error("setup: {0}")]
    Setup(String),
    /// A task or reply did not complete: the figure would be meaningless.
    #[error("incomplete: {0}")]
    Incomplete(String),
    /// A W5 child process failed.
    #[error("W5 child process: {0}")]
    Child(String),
    /// A peer did not deliver its figures: the comparison would be missing a side.
    #[error("{0}")]
    Peer(#[from] peers::PeerError),
}

/// The scale from [`SCALE_ENV`], if set; an error names a bad value.
pub fn scale_from_env() -> Result<Option<f64>, String> {
    match std::env::var(SCALE_ENV) {
        Ok(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| *x > 0.0 && x.is_finite())
            .map(Some)
            .ok_or_else(|| format!("{SCALE_ENV}={s}: expected a number above 0, e.g. 0.01")),
        Err(_) => Ok(None),
    }
}

/// Progress of a benchmark.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Steps done.
    pub done: usize,
    /// Steps in all (workloads x runs, and each peer's runs).
    pub total: usize,
    /// What runs next (or just finished, when `done == total`).
    pub workload: &'static str,
    /// The peer that runs next, or empty for muster.
    pub peer: String,
    /// Run number, from 1.
    pub run: usize,
}

/// Runs the benchmark on the current actix system (call it inside `System::block_on`).
/// Runs are the outer loop, so each run measures every workload once, baselines first.
pub async fn run(
    config: &BenchConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<BenchReport, BenchError> {
    let started = std::time::Instant::now();
    let runs = config.runs.max(1);
    let mut reports: Vec<WorkloadReport> = config
        .workloads
        .iter()
        .map(|w| WorkloadReport {
            id: w.id().to_string(),
            collected: Collector::default(),
            not_measured: Vec::new(),
            peers: if PEER_WORKLOADS.contains(w) {
                config
                    .peers
                    .iter()
                    .map(|p| PeerSamples {
                        peer: p.name.clone(),
                        command: p.command_line(),
                        ..PeerSamples::default()
                    })
                    .collect()
            } else {
                Vec::new()
            },
        })
        .collect();
    let peer_steps = config
        .workloads
        .iter()
        .filter(|w| PEER_WORKLOADS.contains(w))
        .count()
        * config.peers.len();
    let total = runs * (config.workloads.len() + peer_steps);
    let mut done = 0;
    for r in 1..=runs {
        for (w, rep) in config.workloads.iter().zip(reports.iter_mut()) {
            progress(Progress {
                done,
                total,
                workload: w.id(),
                peer: String::new(),
                run: r,
            });
            let c = &mut rep.collected;
            match w {
                Workload::W1 => workloads::w1(config.scale, c).await?,
                Workload::W2 => workloads::w2(config.scale, c).await?,
                Workload::W3 => workloads::w3(config.scale, c).await?,
                Workload::W4 => workloads::w4(config.scale, c).await?,
                Workload::W5 => match &config.isolate_w5 {
                    Some(exe) => w5_in_child(exe, config, c)?,
                    None => workloads::w5(config.scale, config.w5_budget, c).await?,
                },
            }
            done += 1;
            // Interleaved: each peer runs this workload right after muster, in this run.
            for (peer, samples) in config.peers.iter().zip(rep.peers.iter_mut()) {
                progress(Progress {
                    done,
                    total,
                    workload: w.id(),
                    peer: peer.name.clone(),
                    run: r,
                });
                samples.version =
                    peer.run(*w, config.scale, config.peer_limit, &mut samples.collected)?;
                done += 1;
            }
        }
    }
    for rep in &mut reports {
        for (id, figure) in [
            ("W1", "muster_workflow_sqlite_relaxed_us_per_handoff"),
            ("W2", "muster_sqlite_relaxed_tasks_per_s"),
        ] {
            if rep.id == id && rep.collected.get(figure).is_none() {
                rep.not_measured.push((
                    figure.into(),
                    "the SQLite journal could not be opened in the temp directory".into(),
                ));
            }
        }
    }
    progress(Progress {
        done,
        total,
        workload: "",
        peer: String::new(),
        run: runs,
    });
    Ok(BenchReport {
        command: config.command.clone(),
        machine: Machine::detect(),
        runs,
        scale: config.scale,
        workloads: reports,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

fn w5_in_child(
    exe: &std::path::Path,
    config: &BenchConfig,
    into: &mut Collector,
) -> Result<(), BenchError> {
    let out = std::process::Command::new(exe)
        .args([
            "bench",
            "--workload",
            "W5",
            "--runs",
            "1",
            "--json",
            "--in-process",
        ])
        .args(["--scale", &config.scale.to_string()])
        .args(["--w5-budget-s", &config.w5_budget.as_secs().to_string()])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| BenchError::Child(format!("{}: {e}", exe.display())))?;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        BenchError::Child(format!(
            "exit {:?}, output not JSON ({e}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
        ))
    })?;
    if doc["ok"] != true {
        return Err(BenchError::Child(doc["error"].to_string()));
    }
    report::merge_samples(&doc, "W5", into).map_err(|e| BenchError::Child(e.to_string()))
}
