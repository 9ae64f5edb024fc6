//! What a benchmark reports: every figure with its unit, its samples (one per run) and
//! their median and min..max; ratios to the baselines computed run by run (both sides
//! measured in the same run); the peers measured in the same runs, with their ratios to
//! muster run by run; and the design targets, met or missed.
//!
//! Must not invent a figure: no peer figure is a constant (a peer appears only when it ran
//! in this benchmark), and a figure that was not measured is listed as such, with why.

use serde::Serialize;
use serde_json::{Value, json};

/// A figure's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    /// Microseconds (lower is better).
    #[serde(rename = "µs")]
    Micros,
    /// Milliseconds (lower is better).
    #[serde(rename = "ms")]
    Millis,
    /// Seconds (lower is better).
    #[serde(rename = "s")]
    Seconds,
    /// Tasks or messages per second (higher is better).
    #[serde(rename = "1/s")]
    PerSecond,
    /// Bytes (lower is better).
    #[serde(rename = "B")]
    Bytes,
    /// Mebibytes (lower is better).
    #[serde(rename = "MiB")]
    Megabytes,
    /// A count.
    #[serde(rename = "count")]
    Count,
    /// A ratio of two figures.
    #[serde(rename = "x")]
    Ratio,
}

impl Unit {
    /// The unit as printed.
    pub fn as_str(&self) -> &'static str {
        match self {
            Unit::Micros => "µs",
            Unit::Millis => "ms",
            Unit::Seconds => "s",
            Unit::PerSecond => "1/s",
            Unit::Bytes => "B",
            Unit::Megabytes => "MiB",
            Unit::Count => "count",
            Unit::Ratio => "x",
        }
    }
}

/// Median and range of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
}

impl Summary {
    /// Summarises samples; `None` when there are none.
    ///
    /// # Example
    /// ```
    /// use muster_bench::report::Summary;
    /// let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
    /// assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
    /// ```
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// One measured figure: one sample per run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// Name, unique within its workload.
    pub name: String,
    /// Unit.
    pub unit: Unit,
    /// One sample per run, in run order.
    pub samples: Vec<f64>,
}

/// Collects the samples of one workload, run after run.
#[derive(Debug, Clone, Default)]
pub struct Collector {
    /// Figures in the order first recorded.
    pub figures: Vec<Figure>,
}

impl Collector {
    /// Records one run's sample of a figure.
    pub fn rec(&mut self, name: &str, unit: Unit, value: f64) {
        match self.figures.iter_mut().find(|f| f.name == name) {
            Some(f) => f.samples.push(value),
            None => self.figures.push(Figure {
                name: name.to_string(),
                unit,
                samples: vec![value],
            }),
        }
    }

    /// A figure by name.
    pub fn get(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name == name)
    }
}

/// A peer runtime's samples of one workload, measured in the same run as muster's.
#[derive(Debug, Clone, Default)]
pub struct PeerSamples {
    /// The peer's name (`autogen-core`, `graph-flow`, ... or a user's `--peer NAME`).
    pub peer: String,
    /// The version the peer reported.
    pub version: String,
    /// The command it was run with (without the workload's arguments).
    pub command: String,
    /// Its figures, one sample per run.
    pub collected: Collector,
}

/// Ratios of muster to each peer, computed run by run:
/// `(workload, name, muster figure, peer figure)`. For times, below 1 means muster is
/// faster; for rates (`1/s`), above 1 means muster is faster.
pub const PEER_RATIOS: &[(&str, &str, &str, &str)] = &[
    (
        "W1",
        "muster_workflow_over_peer",
        "muster_workflow_us_per_handoff",
        "us_per_handoff",
    ),
    (
        "W1",
        "muster_delegate_over_peer",
        "muster_delegate_us_per_handoff",
        "us_per_handoff",
    ),
    (
        "W2",
        "muster_over_peer_throughput",
        "muster_tasks_per_s",
        "tasks_per_s",
    ),
    // Like for like: the peers run on one thread, as muster's one-shard runtime does.
    (
        "W2",
        "muster_one_shard_over_peer_throughput",
        "muster_one_shard_tasks_per_s",
        "tasks_per_s",
    ),
    ("W3", "muster_over_peer_p50", "muster_p50_us", "p50_us"),
    ("W3", "muster_over_peer_p99", "muster_p99_us", "p99_us"),
];

/// A performance target of the project (docs/workloads.md lists them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Target {
    /// Workload.
    pub workload: &'static str,
    /// Our figure it bounds.
    pub figure: &'static str,
    /// The bound.
    pub bound: f64,
    /// `true`: the figure must be at most the bound; `false`: at least.
    pub at_most: bool,
    /// The target as the project states it.
    pub text: &'static str,
}

/// The project's targets that these workloads measure.
pub const TARGETS: &[Target] = &[
    Target {
        workload: "W1",
        figure: "muster_workflow_us_per_handoff",
        bound: 3.0,
        at_most: true,
        text: "W1 coordination overhead per handoff through the workflow engine (schemas on, in-memory journal) ≤ 3 µs",
    },
    Target {
        workload: "W1",
        figure: "muster_delegate_us_per_handoff",
        bound: 2.0,
        at_most: true,
        text: "W1 per handoff through chained delegate ≤ 2 µs",
    },
    Target {
        workload: "W1",
        figure: "muster_workflow_sqlite_relaxed_us_per_handoff",
        bound: 15.0,
        at_most: true,
        text: "W1 with the durable SQLite journal (relaxed) ≤ 15 µs",
    },
    Target {
        workload: "W1",
        figure: "muster_delegate_sqlite_relaxed_us_per_handoff",
        bound: 40.0,
        at_most: true,
        text: "W1 per handoff through chained delegate with the SQLite journal, relaxed ≤ 40 µs",
    },
    Target {
        workload: "W1",
        figure: "muster_delegate_sqlite_sync_us_per_handoff",
        bound: 300.0,
        at_most: true,
        text: "W1 per handoff through chained delegate with the SQLite journal, sync ≤ 300 µs",
    },
    Target {
        workload: "W2",
        figure: "muster_tasks_per_s",
        bound: 300_000.0,
        at_most: false,
        text: "W2 fan-out, 1,000 agents, 100k tasks ≥ 300k msg/s",
    },
    Target {
        workload: "W2",
        figure: "muster_sqlite_relaxed_tasks_per_s",
        bound: 100_000.0,
        at_most: false,
        text: "W2 with the durable SQLite journal (relaxed), commits shared by the tasks in flight ≥ 100k tasks/s",
    },
    Target {
        workload: "W3",
        figure: "muster_p50_us",
        bound: 2.5,
        at_most: true,
        text: "W3 request-response p50 ≤ 2.5 µs",
    },
    Target {
        workload: "W3",
        figure: "muster_p99_us",
        bound: 8.0,
        at_most: true,
        text: "W3 request-response p99 ≤ 8 µs",
    },
    Target {
        workload: "W4",
        figure: "muster_recovery_p50_us",
        bound: 1000.0,
        at_most: true,
        text: "time from a crash to the task running on another agent ≤ 1 ms",
    },
    Target {
        workload: "W5",
        figure: "bytes_per_agent",
        bound: 1500.0,
        at_most: true,
        text: "idle agent memory at 10^6 agents ≤ 1,500 bytes each",
    },
    Target {
        workload: "W5",
        figure: "pick_p50_us",
        bound: 1.0,
        at_most: true,
        text: "least-loaded pick at 1,000 instances ≤ 1 µs",
    },
    Target {
        workload: "W5",
        figure: "agents_registered",
        bound: 1_000_000.0,
        at_most: false,
        text: "1M agents registered",
    },
];

/// Ratios computed run by run: `(name, numerator figure, denominator figure)`.
pub const RATIOS: &[(&str, &str, &str, &str)] = &[
    (
        "W1",
        "workflow_over_raw_tokio",
        "muster_workflow_us_per_handoff",
        "raw_tokio_us_per_handoff",
    ),
    (
        "W1",
        "workflow_over_raw_actix",
        "muster_workflow_us_per_handoff",
        "raw_actix_us_per_handoff",
    ),
    (
        "W1",
        "delegate_over_raw_tokio",
        "muster_delegate_us_per_handoff",
        "raw_tokio_us_per_handoff",
    ),
    (
        "W1",
        "delegate_over_raw_actix",
        "muster_delegate_us_per_handoff",
        "raw_actix_us_per_handoff",
    ),
    (
        "W1",
        "workflow_over_delegate",
        "muster_workflow_us_per_handoff",
        "muster_delegate_us_per_handoff",
    ),
    (
        "W1",
        "memory_journal_over_discarded",
        "muster_delegate_us_per_handoff",
        "muster_delegate_journal_discarded_us_per_handoff",
    ),
    (
        "W2",
        "raw_tokio_over_muster_throughput",
        "raw_tokio_tasks_per_s",
        "muster_tasks_per_s",
    ),
    (
        "W2",
        "raw_actix_over_muster_throughput",
        "raw_actix_tasks_per_s",
        "muster_tasks_per_s",
    ),
    (
        "W3",
        "p50_over_raw_tokio",
        "muster_p50_us",
        "raw_tokio_p50_us",
    ),
    (
        "W3",
        "p50_over_raw_actix",
        "muster_p50_us",
        "raw_actix_p50_us",
    ),
    (
        "W3",
        "p99_over_raw_tokio",
        "muster_p99_us",
        "raw_tokio_p99_us",
    ),
    (
        "W3",
        "p99_over_raw_actix",
        "muster_p99_us",
        "raw_actix_p99_us",
    ),
    (
        "W4",
        "recovery_over_raw_tokio",
        "muster_recovery_p50_us",
        "raw_tokio_recovery_p50_us",
    ),
    (
        "W4",
        "recovery_over_raw_actix",
        "muster_recovery_p50_us",
        "raw_actix_recovery_p50_us",
    ),
];

/// What each workload is, as measured here.
pub fn describe(workload: &str) -> &'static str {
    match workload {
        "W1" => {
            "handoff chain A -> B -> C: a 3-step workflow (Workflow::parse, step inputs map the previous output), schemas on, in-memory journal, sequential tasks after warm-up; also 3 chained delegate calls; baselines do 3 request-replies from the caller"
        }
        "W2" => {
            "fan-out: 1,000 instances of one capability, tasks in batches of 1,000 in flight, each routed by capability to one instance which echoes; on one shard and on every core with the in-memory journal, then on every core with the SQLite journal (relaxed: each result acknowledged once its records are committed); baselines: 1,000 tokio tasks / actix actors, round-robin"
        }
        "W3" => {
            "request-response: one agent, sequential delegate calls each timed alone, after warm-up; baselines time the same loop"
        }
        "W4" => {
            "recovery: one capability, 2 instances (w4-crashy registered first, panics on every task; w4-healthy); sequential tasks; time from just before the panic to the healthy agent starting the task (tokio Instants inside the agents); crashy's supervisor allows 1,000,000 restarts/s so it never drops out; baselines: a panicking spawned task / actix actor, then a request-reply to a healthy one"
        }
        "W5" => {
            "scale: agent types of 1,000 replicas, a capability each; bytes per agent = VmRSS delta / agents (process-wide: includes supervisors, registry index and journal events); look-up at that size: Muster::candidates over one capability (sorts its 1,000 instances) and a whole delegate"
        }
        _ => "",
    }
}

/// Notes that hold for every report.
pub const NOTES: &[&str] = &[
    "Every figure: median and min..max over the runs; one sample per run.",
    "Ratios are computed within each run (muster and baseline measured minutes apart at most, same process), then summarised.",
    "Peers (with --peers) run as programs of their own, interleaved with muster: in each run, right after muster's workload, every peer runs the same workload with the same counts; ratios muster/peer are computed within each run, then summarised (for times below 1 means muster is faster, for rates above 1).",
    "All actors and baseline tasks run on one thread (one actix system), except W2's muster runs on every core, which use one shard per core.",
    "No guarantee is turned off for a figure: muster runs with schemas checked both ways, a task owner and a fenced lease per task, acceptance rules and the journal on.",
];

/// The results of one workload.
#[derive(Debug, Clone)]
pub struct WorkloadReport {
    /// `W1` ... `W5`.
    pub id: String,
    /// The samples.
    pub collected: Collector,
    /// Figures that were not measured, with why.
    pub not_measured: Vec<(String, String)>,
    /// Peers measured in the same runs (empty without `--peers`).
    pub peers: Vec<PeerSamples>,
}

/// The machine the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Operating system.
    pub os: &'static str,
    /// Whether this is a release build (debug figures are not comparable).
    pub release_build: bool,
}

impl Machine {
    /// This machine.
    pub fn detect() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            os: std::env::consts::OS,
            release_build: !cfg!(debug_assertions),
        }
    }
}

/// A whole benchmark report.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The command that produced it.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// Runs per workload.
    pub runs: usize,
    /// Task-count scale (1.0 = the counts of docs/workloads.md).
    pub scale: f64,
    /// Workloads in order.
    pub workloads: Vec<WorkloadReport>,
    /// Wall time of the whole benchmark, s.
    pub wall_s: f64,
}

fn figure_json(f: &Figure) -> Value {
    let s = Summary::of(&f.samples);
    json!({
        "name": f.name,
        "unit": f.unit,
        "median": s.map(|s| s.median),
        "min": s.map(|s| s.min),
        "max": s.map(|s| s.max),
        "samples": f.samples,
    })
}

impl WorkloadReport {
    fn ratios(&self) -> Vec<Value> {
        RATIOS
            .iter()
            .filter(|r| r.0 == self.id)
            .filter_map(|(_, name, num, den)| {
                let (a, b) = (self.collected.get(num)?, self.collected.get(den)?);
                let per_run: Vec<f64> = a
                    .samples
                    .iter()
                    .zip(&b.samples)
                    .map(|(x, y)| x / y)
                    .collect();
                let s = Summary::of(&per_run)?;
                Some(
                    json!({"name": name, "numerator": num, "denominator": den, "unit": Unit::Ratio,
                            "median": s.median, "min": s.min, "max": s.max, "samples": per_run}),
                )
            })
            .collect()
    }

    /// Each peer's figures and its ratios to muster, run by run.
    pub fn peers(&self) -> Vec<Value> {
        self.peers
            .iter()
            .map(|p| {
                let ratios: Vec<Value> = PEER_RATIOS
                    .iter()
                    .filter(|r| r.0 == self.id)
                    .filter_map(|(_, name, ours, theirs)| {
                        let (a, b) = (self.collected.get(ours)?, p.collected.get(theirs)?);
                        let per_run: Vec<f64> = a
                            .samples
                            .iter()
                            .zip(&b.samples)
                            .map(|(x, y)| x / y)
                            .collect();
                        let s = Summary::of(&per_run)?;
                        let muster_faster = if a.unit == Unit::PerSecond {
                            s.median > 1.0
                        } else {
                            s.median < 1.0
                        };
                        Some(json!({
                            "name": name, "numerator": ours, "denominator": theirs,
                            "unit": Unit::Ratio, "median": s.median, "min": s.min, "max": s.max,
                            "samples": per_run, "muster_faster": muster_faster,
                        }))
                    })
                    .collect();
                json!({
                    "peer": p.peer,
                    "version": p.version,
                    "command": p.command,
                    "figures": p.collected.figures.iter().map(figure_json).collect::<Vec<_>>(),
                    "ratios": ratios,
                })
            })
            .collect()
    }

    fn targets(&self) -> Vec<Value> {
        TARGETS
            .iter()
            .filter(|t| t.workload == self.id)
            .map(|t| {
                let ours = self
                    .collected
                    .get(t.figure)
                    .and_then(|f| Summary::of(&f.samples));
                let status = match ours {
                    None => "not measured",
                    Some(s)
                        if (t.at_most && s.median <= t.bound)
                            || (!t.at_most && s.median >= t.bound) =>
                    {
                        "met"
                    }
                    Some(_) => "missed",
                };
                json!({
                    "target": t.text, "figure": t.figure, "bound": t.bound,
                    "at_most": t.at_most, "median": ours.map(|s| s.median),
                    "status": status,
                    "median_over_bound": ours.map(|s| s.median / t.bound),
                })
            })
            .collect()
    }

    /// This workload as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "description": describe(&self.id),
            "figures": self.collected.figures.iter().map(figure_json).collect::<Vec<_>>(),
            "ratios": self.ratios(),
            "peers": self.peers(),
            "targets": self.targets(),
            "not_measured": self.not_measured.iter().map(|(f, why)| json!({"figure": f, "why": why})).collect::<Vec<_>>(),
        })
    }
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 1000.0 {
        format!("{:.0}", v)
    } else if v.abs() >= 10.0 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    }
}

impl BenchReport {
    /// The report as one JSON document.
    pub fn to_json(&self) -> Value {
        json!({
            "ok": true,
            "command": self.command,
            "machine": self.machine,
            "runs": self.runs,
            "scale": self.scale,
            "wall_s": self.wall_s,
            "notes": NOTES,
            "workloads": self.workloads.iter().map(WorkloadReport::to_json).collect::<Vec<_>>(),
        })
    }

    /// The report as text tables.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "muster bench: {} run(s), scale {}, {} CPU(s) ({}), {} build, {:.1} s",
            self.runs,
            self.scale,
            m.nproc,
            m.cpu_model,
            if m.release_build {
                "release"
            } else {
                "DEBUG (figures not comparable)"
            },
            self.wall_s
        );
        for w in &self.workloads {
            let _ = writeln!(out, "\n{}: {}", w.id, describe(&w.id));
            let _ = writeln!(
                out,
                "  {:<50} {:>12} {:>25}",
                "figure", "median", "min..max"
            );
            for f in &w.collected.figures {
                if let Some(s) = Summary::of(&f.samples) {
                    let _ = writeln!(
                        out,
                        "  {:<50} {:>12} {:>25}",
                        format!("{} ({})", f.name, f.unit.as_str()),
                        fmt(s.median),
                        format!("{}..{}", fmt(s.min), fmt(s.max))
                    );
                }
            }
            for r in w.ratios() {
                let _ = writeln!(
                    out,
                    "  {:<50} {:>12} {:>25}",
                    format!("ratio {} (x)", r["name"].as_str().unwrap_or_default()),
                    fmt(r["median"].as_f64().unwrap_or(f64::NAN)),
                    format!(
                        "{}..{}",
                        fmt(r["min"].as_f64().unwrap_or(f64::NAN)),
                        fmt(r["max"].as_f64().unwrap_or(f64::NAN))
                    )
                );
            }
            for p in w.peers() {
                let _ = writeln!(
                    out,
                    "  peer {} {} ({}):",
                    p["peer"].as_str().unwrap_or_default(),
                    p["version"].as_str().unwrap_or_default(),
                    p["command"].as_str().unwrap_or_default()
                );
                for f in p["figures"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "    {:<48} {:>12} {:>25}",
                        format!(
                            "{} ({})",
                            f["name"].as_str().unwrap_or_default(),
                            f["unit"].as_str().unwrap_or_default()
                        ),
                        fmt(f["median"].as_f64().unwrap_or(f64::NAN)),
                        format!(
                            "{}..{}",
                            fmt(f["min"].as_f64().unwrap_or(f64::NAN)),
                            fmt(f["max"].as_f64().unwrap_or(f64::NAN))
                        )
                    );
                }
                for r in p["ratios"].as_array().into_iter().flatten() {
                    let median = r["median"].as_f64().unwrap_or(f64::NAN);
                    let how = if median >= 1.0 { median } else { 1.0 / median };
                    let faster = if r["muster_faster"] == true {
                        "faster"
                    } else {
                        "slower"
                    };
                    let _ = writeln!(
                        out,
                        "    {:<48} {:>12} {:>25}  muster {}x {faster}",
                        format!("ratio {} (x)", r["name"].as_str().unwrap_or_default()),
                        fmt(median),
                        format!(
                            "{}..{}",
                            fmt(r["min"].as_f64().unwrap_or(f64::NAN)),
                            fmt(r["max"].as_f64().unwrap_or(f64::NAN))
                        ),
                        fmt(how)
                    );
                }
            }
            for t in w.targets() {
                let _ = writeln!(
                    out,
                    "  target {}: {}",
                    t["target"].as_str().unwrap_or_default(),
                    t["status"].as_str().unwrap_or_default()
                );
            }
            for (f, why) in &w.not_measured {
                let _ = writeln!(out, "  not measured: {f}: {why}");
            }
        }
        out
    }
}

/// Rebuilds the samples of one workload from the JSON of another report (a W5 run in a
/// process of its own), appending them to `into`.
pub fn merge_samples(doc: &Value, workload: &str, into: &mut Collector) -> Result<(), MergeError> {
    let w = doc["workloads"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == workload))
        .ok_or_else(|| MergeError::NoWorkload(workload.to_string()))?;
    for f in w["figures"].as_array().into_iter().flatten() {
        let name = f["name"].as_str().unwrap_or_default();
        let unit: Unit = serde_json::from_value::<UnitName>(f["unit"].clone())
            .map(|u| u.0)
            .map_err(|e| MergeError::Unit(name.to_string(), e))?;
        for s in f["samples"].as_array().into_iter().flatten() {
            into.rec(name, unit, s.as_f64().unwrap_or(f64::NAN));
        }
    }
    Ok(())
}

/// Why [`merge_samples`] could not read another report.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The report has no such workload.
    #[error("no {0} in the child's report")]
    NoWorkload(String),
    /// A figure's unit is not one muster writes.
    #[error("figure {0}: {1}")]
    Unit(String, #[source] serde_json::Error),
}

struct UnitName(Unit);

impl<'de> serde::Deserialize<'de> for UnitName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        [
            Unit::Micros,
            Unit::Millis,
            Unit::Seconds,
            Unit::PerSecond,
            Unit::Bytes,
            Unit::Megabytes,
            Unit::Count,
            Unit::Ratio,
        ]
        .into_iter()
        .find(|u| u.as_str() == s)
        .map(UnitName)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown unit `{s}`")))
    }
}
