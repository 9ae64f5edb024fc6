//! What both Rust peers of `muster bench --peers` share (included by `#[path]`, since each
//! peer is a cargo project of its own): the command line muster passes (the counts it uses
//! itself), the payload and hop of docs/workloads.md, the percentiles muster's report uses,
//! and the one JSON line a peer prints per workload. It must not measure anything itself.

use serde_json::{json, Value};

/// The workload and counts of one run.
pub struct Args {
    /// `W1`, `W2` or `W3`.
    pub workload: String,
    /// Tasks timed.
    pub tasks: usize,
    /// Tasks run before timing.
    pub warmup: usize,
    /// W2: agent instances.
    pub agents: usize,
    /// W2: tasks in flight at a time.
    pub in_flight: usize,
}

const MAX_COUNT: usize = 100_000_000;

/// Parses `--workload W --tasks N [--warmup N] [--agents N] [--in-flight N]`; a bad
/// argument ends the process with exit 2 and a message naming it.
pub fn parse_args() -> Args {
    let mut a = Args {
        workload: String::new(),
        tasks: 0,
        warmup: 0,
        agents: 1000,
        in_flight: 1000,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            usage(&format!("{flag}: missing value"));
        };
        let count = || match value.parse::<usize>() {
            Ok(n) if n <= MAX_COUNT => n,
            _ => usage(&format!(
                "{flag} {value}: expected a count up to {MAX_COUNT}"
            )),
        };
        match flag.as_str() {
            "--workload" if ["W1", "W2", "W3"].contains(&value.as_str()) => {
                a.workload = value.clone()
            }
            "--workload" => usage(&format!("--workload {value}: expected W1, W2 or W3")),
            "--tasks" => a.tasks = count(),
            "--warmup" => a.warmup = count(),
            "--agents" => a.agents = count(),
            "--in-flight" => a.in_flight = count(),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if a.workload.is_empty() || a.tasks == 0 || a.agents == 0 || a.in_flight == 0 {
        usage("--workload and --tasks are required; --tasks, --agents, --in-flight at least 1");
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!(
        "{why}\nusage: {} --workload W1|W2|W3 --tasks N [--warmup N] [--agents N] [--in-flight N]",
        std::env::args().next().unwrap_or_default()
    );
    std::process::exit(2)
}

/// The 5-field payload of task `i`.
pub fn payload(i: u64) -> Value {
    json!({"task_id": i, "hops": 0, "last": "", "data": "hello world", "score": 0.5})
}

/// What every agent does: copy the payload, `hops += 1`, `last = name`.
pub fn hop(mut v: Value, name: &str) -> Value {
    let h = v["hops"].as_i64().unwrap_or(0) + 1;
    v["hops"] = json!(h);
    v["last"] = json!(name);
    v
}

/// The hop count of a payload.
pub fn hops(v: &Value) -> i64 {
    v["hops"].as_i64().unwrap_or(-1)
}

/// The p-th percentile (nearest rank) of sorted values, as muster's report computes it.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p90 and p99 of latencies in microseconds.
pub fn latency_figures(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({"p50_us": percentile(&v, 50.0), "p90_us": percentile(&v, 90.0), "p99_us": percentile(&v, 99.0)})
}

/// This process's peak resident memory (VmHWM), MiB; NaN where /proc is absent.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Prints the one JSON line muster reads.
pub fn emit(peer: &str, version: &str, args: &Args, figures: Value) {
    println!(
        "{}",
        json!({"peer": peer, "version": version, "workload": args.workload, "tasks": args.tasks, "figures": figures})
    );
}

/// A workload that did not complete: no figure, a message, exit 1.
pub fn fail(why: &str) -> ! {
    eprintln!("{why}");
    std::process::exit(1)
}
