//! Running a scenario: the whole runtime on one thread, on tokio's paused clock.
//!
//! Owns [`run`] and the [`SimReport`]. The runtime is started with
//! `Muster::builder().seed(seed)` (seeded ids, a fixed clock origin) inside an actix
//! system whose tokio runtime is current-thread with `start_paused(true)`: timers fire in
//! virtual time, as fast as the CPU allows, and, with nothing else on other threads, the
//! same seed gives the same journal, byte for byte (G6). Tasks or runs arrive by the
//! scenario's arrival process (drawn from the seed), runtime faults are applied at their
//! virtual times, agents on nodes are reached through the scenario's simulated network
//! ([`SimNetwork`]: its partitions are journaled as notes when they start and heal, and a
//! partition's `ttl` takes the node's agent types out of the registry until the heal),
//! and the run ends when every task or run has ended (or at the horizon,
//! and then what is unfinished is reported lost). Nothing is scheduled past the horizon:
//! an arrival or a fault due at or after it never happens (a task never submitted is
//! lost too), so no parameter (a vanishing arrival rate, a latency or timeout of years)
//! can make a run cover more virtual time than its horizon, and the horizon itself is
//! capped at [`MAX_HORIZON`]: on the paused clock, virtual time still costs wall time in
//! proportion (the runtime's periodic timers fire all along it). Every figure of the
//! report except the wall-clock ones comes from the journal's records
//! ([`super::TallyJournal`]). It must not start threads that the simulation waits on (the
//! paused clock would jump).

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use muster_cast::BackendSpec;
use muster_core::agents::AgentDef;
use muster_core::delegation::{Backoff, Task};
use muster_core::ids::splitmix64;
use muster_core::journal::{Journal, MemoryJournal};
use muster_core::runtime::Muster;
use muster_sqlite::{Durability, SqliteJournal};
use muster_workflow::engine::RunOptions;

use super::file::{Arrival, RuntimeFault, Scenario, Target};
use super::tally::{Latencies, Tally, TallyJournal};
use muster_core::journal::Event;
use muster_sim::{NetworkCounts, SimNetwork, SimRng};
use muster_workflow::WorkflowExt;

/// The longest horizon a simulation runs to (366 virtual days); a longer one is cut to it.
/// The paused clock skips idle time only up to the next timer, and the runtime has periodic
/// ones, so every virtual day costs wall time (over a second in a debug build).
pub const MAX_HORIZON: Duration = Duration::from_secs(366 * 24 * 3600);

/// The longest task timeout or backoff the simulation hands the runtime (the runtime's
/// own limit, 366 days): longer ones would never fire before [`MAX_HORIZON`] anyway,
/// and keep `Instant + timeout × attempts` finite.
const MAX_SPAN: Duration = muster_core::delegation::task::MAX_DURATION;

/// How `run` deviates from the scenario file, and where it reports.
#[derive(Default)]
pub struct SimOptions {
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Overrides the scenario's task (or run) count.
    pub count: Option<u64>,
    /// A SQLite journal file to write (default: in memory).
    pub journal: Option<PathBuf>,
    /// Where the capabilities' JSON Schemas are (default `schemas`).
    pub schemas_dir: Option<PathBuf>,
    /// Called now and then with the progress (on the simulation's thread).
    pub progress: Option<Box<dyn Fn(Progress)>>,
}

impl std::fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimOptions")
            .field("seed", &self.seed)
            .field("count", &self.count)
            .field("journal", &self.journal)
            .finish()
    }
}

/// Progress of a simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Tasks (or runs) ended.
    pub ended: u64,
    /// Tasks (or runs) to run.
    pub total: u64,
    /// Virtual time so far, ms.
    pub virtual_ms: u64,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The runtime would not start or an agent would not register.
    #[error("the runtime did not start: {0}")]
    Start(String),
    /// A task was refused.
    #[error("a task was refused: {0}")]
    Submit(String),
    /// The journal file could not be opened.
    #[error("{0}")]
    Journal(String),
}

/// Percentiles of a latency, virtual milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: u64,
    /// 90th percentile.
    pub p90_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// Largest.
    pub max_ms: u64,
}

impl Latency {
    fn of(l: &Latencies) -> Option<Latency> {
        // Nearest rank.
        Some(Latency {
            p50_ms: l.nearest_rank(0.50)?,
            p90_ms: l.nearest_rank(0.90)?,
            p99_ms: l.nearest_rank(0.99)?,
            max_ms: l.max()?,
        })
    }
}

/// Counts of tasks (or runs) by how they ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ends {
    /// Started.
    pub total: u64,
    /// Completed.
    pub completed: u64,
    /// Escalated (a task: dead letter or gate; a run: failed or stopped at a gate).
    pub escalated: u64,
    /// Cancelled (tasks only).
    pub cancelled: u64,
    /// No terminal state in the journal.
    pub lost: u64,
    /// More than one `result_accepted` (tasks only).
    pub duplicates: u64,
}

/// Wall-clock and memory figures: the only ones that differ between two runs with one
/// seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Wall {
    /// Wall time, ms.
    pub ms: u64,
    /// Journal records per wall second.
    pub events_per_sec: f64,
    /// The process's resident memory when 10 %, 50 % and 100 % of the tasks (or runs) had
    /// ended, and its peak, MiB (absent where `/proc/self/status` is not readable). Two
    /// close figures at 50 % and 100 % say memory plateaued instead of growing per task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss: Option<RssMarks>,
}

/// What the simulated agents' effects came to (`crash_after_effect` models).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EffectCounts {
    /// Tasks that did their effect.
    pub run: u64,
    /// Effects done again by a later attempt (0 with the effect ledger).
    pub repeated: u64,
    /// Effects started and never reported done.
    pub unknown: u64,
}

/// Resident memory at points of a simulation, MiB (see [`Wall::rss`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RssMarks {
    /// When 10 % had ended.
    pub at_10pct_mb: f64,
    /// When 50 % had ended.
    pub at_50pct_mb: f64,
    /// When all had ended (or at the horizon).
    pub at_100pct_mb: f64,
    /// The process's peak (`VmHWM`) at the end.
    pub peak_mb: f64,
}

/// Takes the resident memory as the ended count passes 10 % and 50 % of the total.
#[derive(Debug, Default)]
struct RssSampler {
    marks: RssMarks,
    next: u8,
}

impl RssSampler {
    fn observe(&mut self, ended: u64, total: u64) {
        let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
        while self.next < 2 {
            let percent = [10, 50][self.next as usize];
            if ended.saturating_mul(100) < total.saturating_mul(percent) {
                return;
            }
            let now = muster_core::util::resident_memory().map_or(0.0, |(rss, _)| mb(rss));
            match self.next {
                0 => self.marks.at_10pct_mb = now,
                _ => self.marks.at_50pct_mb = now,
            }
            self.next += 1;
        }
    }

    fn finish(mut self) -> Option<RssMarks> {
        let (rss, peak) = muster_core::util::resident_memory()?;
        let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
        self.marks.at_100pct_mb = mb(rss);
        self.marks.peak_mb = mb(peak);
        Some(self.marks)
    }
}

/// What a simulation found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// The scenario's name.
    pub scenario: String,
    /// The seed used.
    pub seed: u64,
    /// `workflow` or `capability`.
    pub mode: String,
    /// Workflow runs (workflow mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<Ends>,
    /// Tasks (in workflow mode: every step's task).
    pub tasks: Ends,
    /// Results rejected as stale (G2).
    pub stale_rejected: u64,
    /// Effects: tasks that did one, effects done again, effects of unknown outcome.
    pub effects: EffectCounts,
    /// Results accepted under an epoch other than the task's latest lease (G2: must be 0).
    pub accepted_superseded: u64,
    /// Leases after a task's first.
    pub reassignments: u64,
    /// Failed attempts.
    pub failed_attempts: u64,
    /// Agent restarts (`child_restarted`).
    pub restarts: u64,
    /// Agent instances that dropped out of the registry.
    pub dropped_out: u64,
    /// Runtime faults applied.
    pub faults_applied: u64,
    /// Latency per task, submit to terminal state.
    pub task_latency: Option<Latency>,
    /// Latency per run, start to end (workflow mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_latency: Option<Latency>,
    /// Virtual time from the first record to the last (to the horizon, when the simulation
    /// stopped there), ms.
    pub virtual_ms: u64,
    /// Journal records.
    pub events: u64,
    /// FNV-1a 64 over the canonical JSON of every record, in order.
    pub digest: String,
    /// Whether the simulation stopped at its horizon with work unfinished.
    pub hit_horizon: bool,
    /// What the simulated network did (scenarios with a `[network]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkReport>,
    /// Wall-clock figures.
    pub wall: Wall,
}

/// What the simulated network did to the messages between the runtime and its agents'
/// nodes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NetworkReport {
    /// Messages by what happened to them.
    #[serde(flatten)]
    pub counts: NetworkCounts,
    /// Partitions that started before the horizon.
    pub partitions: u64,
    /// Partitions that healed before the horizon.
    pub healed: u64,
}

impl SimReport {
    /// Whether anything was lost or duplicated (the CLI exits 1 then).
    pub fn failed(&self) -> bool {
        let runs = self.runs.map_or(0, |r| r.lost);
        self.tasks.lost + self.tasks.duplicates + self.accepted_superseded + runs > 0
    }

    /// The report without its wall-clock figures: equal for two runs with one seed.
    pub fn deterministic(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("wall");
        }
        v
    }
}

/// Simulated crashes are panics (so that they take the runtime's real panic path); the
/// default hook would print each one, with a backtrace when `RUST_BACKTRACE` is set, which
/// costs more than the simulation itself. Other panics still reach the previous hook.
fn silence_simulated_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str));
            if !msg.is_some_and(muster_sim::is_simulated_crash) {
                previous(info);
            }
        }));
    });
}

fn paused_runtime() -> Result<tokio::runtime::Runtime, SimError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| SimError::Start(format!("cannot build the tokio runtime: {e}")))
}

/// Runs a scenario on virtual time and reports on it.
///
/// # Example
/// ```
/// use muster_scenario::{run, Scenario, SimOptions};
/// use muster_core::SchemaStore;
///
/// # // Run from the repository root, as the `muster` binary is.
/// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).unwrap();
/// let schemas = SchemaStore::new();
/// schemas.load_dir("schemas").unwrap();
/// let s = Scenario::load("examples/scenarios/all-agents-fail.toml".as_ref(), &schemas).unwrap();
/// let r = run(&s, SimOptions { count: Some(20), ..SimOptions::default() }).unwrap();
/// assert_eq!(r.tasks.lost, 0);
/// ```
pub fn run(scenario: &Scenario, opts: SimOptions) -> Result<SimReport, SimError> {
    silence_simulated_panics();
    let wall = std::time::Instant::now();
    let seed = opts.seed.unwrap_or(scenario.seed);
    let count = opts.count.unwrap_or(scenario.count);
    let (inner, sqlite): (Arc<dyn Journal>, Option<Arc<SqliteJournal>>) = match &opts.journal {
        Some(p) => {
            let j = Arc::new(
                SqliteJournal::open(p, Durability::Relaxed)
                    .map_err(|e| SimError::Journal(e.to_string()))?,
            );
            (j.clone(), Some(j))
        }
        None => (Arc::new(MemoryJournal::default()), None),
    };
    let journal = Arc::new(TallyJournal::new(inner));
    let rt = paused_runtime()?;
    let sys = actix::System::with_tokio_rt(move || rt);
    let out = sys.block_on(simulate(scenario, seed, count, journal.clone(), &opts));
    drop(sys);
    let (faults_applied, hit_horizon, t, rss, network) = out?;
    if let Some(j) = sqlite {
        j.close().map_err(|e| SimError::Journal(e.to_string()))?;
    }
    let mut r = report(scenario, seed, t, faults_applied, wall.elapsed(), count);
    r.hit_horizon = hit_horizon;
    r.wall.rss = rss;
    r.network = network;
    Ok(r)
}

fn report(
    scenario: &Scenario,
    seed: u64,
    t: Tally,
    faults_applied: u64,
    wall: Duration,
    count: u64,
) -> SimReport {
    let workflow = scenario.is_workflow();
    let wall_s = wall.as_secs_f64().max(1e-9);
    SimReport {
        scenario: scenario.name.clone(),
        seed,
        mode: if workflow { "workflow" } else { "capability" }.into(),
        runs: workflow.then_some(Ends {
            total: t.runs,
            completed: t.runs_completed,
            escalated: t.runs_escalated,
            cancelled: 0,
            // A run never started is lost too.
            lost: t.runs_lost + count.saturating_sub(t.runs),
            duplicates: 0,
        }),
        tasks: Ends {
            total: t.tasks,
            completed: t.completed,
            escalated: t.escalated,
            cancelled: t.cancelled,
            lost: t.lost
                + if workflow {
                    0
                } else {
                    count.saturating_sub(t.tasks)
                },
            duplicates: t.duplicates,
        },
        stale_rejected: t.stale_rejected,
        effects: EffectCounts {
            run: t.effects_run,
            repeated: t.effects_repeated,
            unknown: t.effects_unknown,
        },
        accepted_superseded: t.accepted_superseded,
        reassignments: t.reassignments,
        failed_attempts: t.failed_attempts,
        restarts: t.restarts,
        dropped_out: t.dropped_out,
        faults_applied,
        task_latency: Latency::of(&t.task_latencies),
        run_latency: if workflow {
            Latency::of(&t.run_latencies)
        } else {
            None
        },
        virtual_ms: t.span_ms,
        events: t.events,
        digest: t.digest.clone(),
        hit_horizon: false,
        network: None,
        wall: Wall {
            ms: wall.as_millis() as u64,
            events_per_sec: t.events as f64 / wall_s,
            rss: None,
        },
    }
}

/// The agent type of entry `i`, its simulated agents seeded from the run's seed, behind
/// the network when it runs on a node of it.
fn agent_def(
    scenario: &Scenario,
    i: usize,
    seed: u64,
    schemas: &Arc<muster_core::SchemaStore>,
    network: Option<&SimNetwork>,
) -> Result<AgentDef, SimError> {
    let mut m = scenario.agents[i].clone();
    if let BackendSpec::Sim(s) = &mut m.backend {
        let own = s.seed.unwrap_or(0);
        s.seed = Some(splitmix64(
            seed ^ splitmix64(own ^ splitmix64(i as u64 + 1)),
        ));
    }
    let def = m
        .to_def(schemas)
        .map_err(|e| SimError::Start(format!("agent `{}`: {e}", m.name)))?;
    let layer = network
        .zip(scenario.nodes.get(i).and_then(Option::as_deref))
        .and_then(|(net, node)| net.node(node));
    Ok(match layer {
        Some(l) => def.layer(l),
        None => def,
    })
}

/// What the simulation hands back: runtime faults applied, whether it stopped at its
/// horizon, the tally, memory marks, and what the network did.
type Simulated = (u64, bool, Tally, Option<RssMarks>, Option<NetworkReport>);

async fn simulate(
    scenario: &Scenario,
    seed: u64,
    count: u64,
    journal: Arc<TallyJournal>,
    opts: &SimOptions,
) -> Result<Simulated, SimError> {
    let start = Instant::now();
    let schemas_dir = opts
        .schemas_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("schemas"));
    // One shard: the paused clock is this thread's, and one thread is deterministic.
    let muster = Muster::builder()
        .seed(seed)
        .shards(1)
        .schemas_dir(schemas_dir)
        .journal(journal.clone())
        .start()
        .await
        .map_err(|e| SimError::Start(e.to_string()))?;
    let schemas = muster.schemas();
    let network = scenario.network.as_ref().map(|model| {
        let mut nodes: Vec<String> = scenario.nodes.iter().flatten().cloned().collect();
        nodes.sort_unstable();
        nodes.dedup();
        SimNetwork::new(model.clone(), seed, &nodes)
    });
    let mut defs = Vec::new();
    for i in 0..scenario.agents.len() {
        let def = agent_def(scenario, i, seed, &schemas, network.as_ref())?;
        muster
            .register(def.clone())
            .await
            .map_err(|e| SimError::Start(e.to_string()))?;
        defs.push(def);
    }
    let t0 = Instant::now();
    let rss = std::cell::RefCell::new(RssSampler::default());
    let progress = |ended: u64| {
        rss.borrow_mut().observe(ended, count);
        if let Some(p) = &opts.progress {
            p(Progress {
                ended,
                total: count,
                virtual_ms: start.elapsed().as_millis() as u64,
            });
        }
    };

    // The end of the simulation, in virtual time: from the start (the cast's registration
    // counts), so the report never covers more than the horizon.
    let horizon = start + scenario.horizon.min(MAX_HORIZON);
    let before_horizon = |offset: Duration| t0.checked_add(offset).filter(|at| *at < horizon);

    // Runtime faults, each at its virtual time (none at or past the horizon).
    let applied = Rc::new(Cell::new(0u64));
    for f in &scenario.faults {
        let Some(at) = before_horizon(f.at()) else {
            continue;
        };
        let m = muster.clone();
        let applied = applied.clone();
        let f = f.clone();
        let def = match &f {
            RuntimeFault::Drop { agent, .. } => defs.iter().find(|d| &d.name == agent).cloned(),
            RuntimeFault::Kill { .. } => None,
        };
        actix::spawn(async move {
            tokio::time::sleep_until(at).await;
            applied.set(applied.get() + 1);
            match f {
                RuntimeFault::Kill { instance, .. } => {
                    m.kill_agent(&instance, "killed by the scenario");
                }
                RuntimeFault::Drop {
                    agent,
                    rejoin_after,
                    ..
                } => {
                    m.unregister(&agent).await;
                    if let (Some(after), Some(def)) = (rejoin_after, def) {
                        tokio::time::sleep(after).await;
                        let _ = m.register(def).await;
                    }
                }
            }
        });
    }

    // Partitions of nodes: messages are cut (or held) by the network itself, by virtual
    // time; here they are journaled, and a node's agents drop out at its `ttl`.
    let partitions = Rc::new(Cell::new((0u64, 0u64)));
    if let Some(net) = &network {
        net.start_clock(t0);
        for p in scenario.network.iter().flat_map(|n| n.partitions.iter()) {
            let Some(at) = before_horizon(p.start()) else {
                continue;
            };
            let heal = before_horizon(p.end());
            let drop_out = p.drop_out().and_then(before_horizon);
            let on_node: Vec<AgentDef> = defs
                .iter()
                .zip(&scenario.nodes)
                .filter(|(_, n)| n.as_deref() == Some(p.node.as_str()))
                .map(|(d, _)| d.clone())
                .collect();
            let (m, count, p) = (muster.clone(), partitions.clone(), p.clone());
            actix::spawn(async move {
                tokio::time::sleep_until(at).await;
                let (started, healed) = count.get();
                count.set((started + 1, healed));
                let how = if p.hold { "held" } else { "lost" };
                m.recorder().record(Event::Note {
                    text: format!(
                        "network: node {} partitioned for {} (messages {how})",
                        p.node,
                        humantime::format_duration(p.end() - p.start())
                    ),
                });
                if let Some(out) = drop_out {
                    tokio::time::sleep_until(out).await;
                    for d in &on_node {
                        m.unregister(&d.name).await;
                    }
                }
                let Some(heal) = heal else { return };
                tokio::time::sleep_until(heal).await;
                let (started, healed) = count.get();
                count.set((started, healed + 1));
                m.recorder().record(Event::Note {
                    text: format!("network: node {} healed", p.node),
                });
                if drop_out.is_some() {
                    for d in on_node {
                        let _ = m.register(d).await;
                    }
                }
            });
        }
    }

    // Arrivals.
    let runs_done = Rc::new(Cell::new(0u64));
    let run_ended = Rc::new(tokio::sync::Notify::new());
    let mut rng = SimRng::new(splitmix64(seed ^ 0x0a11_7a15));
    let mut offset = 0.0f64;
    let backoff = if scenario.backoff.is_zero() {
        Backoff::default()
    } else {
        let initial = scenario.backoff.min(MAX_SPAN);
        Backoff {
            initial,
            max: initial.saturating_mul(8).min(MAX_SPAN),
            factor: 2.0,
        }
    };
    let horizon_secs = horizon.saturating_duration_since(t0).as_secs_f64();
    for i in 0..count {
        let at = match scenario.arrival {
            Arrival::AllAtOnce => before_horizon(Duration::ZERO),
            // Nothing arrives at a rate of zero (or below, or NaN).
            Arrival::Poisson { rate } if rate.is_nan() || rate <= 0.0 => None,
            Arrival::Poisson { rate } => {
                // An exponential gap with mean 1 / rate. A gap of infinity (a subnormal
                // rate) ends the arrivals like any other past the horizon: every later one
                // is later still, so there is nothing more to draw.
                offset += -(1.0 - rng.next_f64()).ln() / rate;
                if offset < horizon_secs {
                    before_horizon(Duration::from_secs_f64(offset.max(0.0)))
                } else {
                    None
                }
            }
        };
        let Some(at) = at else {
            // Not submitted: reported lost.
            break;
        };
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
        match &scenario.target {
            Target::Capability { name, input } => {
                let task = Task::new(name.clone(), input.clone())
                    .timeout(scenario.timeout.min(MAX_SPAN))
                    .attempts(scenario.attempts)
                    .backoff(backoff)
                    .sender("sim");
                // The outcome is read from the journal: the handle is not awaited.
                muster
                    .submit(task)
                    .await
                    .map_err(|e| SimError::Submit(e.to_string()))?;
            }
            Target::Workflow { workflow, input } => {
                let m = muster.clone();
                let wf = workflow.clone();
                let input = input.clone();
                let done = runs_done.clone();
                let signal = run_ended.clone();
                actix::spawn(async move {
                    let opts = RunOptions {
                        stop_at_gates: true,
                        ..RunOptions::default()
                    };
                    let _ = m.run_workflow_with(wf, input, opts).await;
                    done.set(done.get() + 1);
                    signal.notify_one();
                });
            }
        }
        if i % 1024 == 1023 {
            let (tasks, _) = journal.ended();
            progress(if scenario.is_workflow() {
                runs_done.get()
            } else {
                tasks
            });
            // Let the runtime take what has arrived before more comes.
            tokio::task::yield_now().await;
        }
    }

    // Until everything has ended, or the horizon: woken by each end (never by a periodic
    // tick, which would cost wall time for every virtual second up to a far horizon).
    let mut reported = Instant::now();
    loop {
        let (tasks, _) = journal.ended();
        let ended = if scenario.is_workflow() {
            runs_done.get()
        } else {
            tasks
        };
        let now = Instant::now();
        let over = ended >= count || now >= horizon;
        rss.borrow_mut().observe(ended, count);
        if over || now.saturating_duration_since(reported) >= Duration::from_secs(1) {
            progress(ended);
            reported = now;
        }
        if over {
            break;
        }
        tokio::select! {
            () = journal.ended_changed() => {}
            () = run_ended.notified() => {}
            () = tokio::time::sleep_until(horizon) => {}
        }
    }
    // Sealed here, on virtual time, before the runtime is torn down (see `seal`).
    let mut tally = journal.seal();
    let hit_horizon = Instant::now() >= horizon;
    if hit_horizon {
        // Nothing may have been journaled for a while: the clock ran to the horizon.
        tally.span_ms = tally.span_ms.max(start.elapsed().as_millis() as u64);
    }
    let rss = rss.into_inner().finish();
    let network = network.map(|n| NetworkReport {
        counts: n.counts(),
        partitions: partitions.get().0,
        healed: partitions.get().1,
    });
    Ok((applied.get(), hit_horizon, tally, rss, network))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v = Latencies::default();
        for ms in (1..=100).rev() {
            v.add(ms);
        }
        let l = Latency::of(&v).unwrap();
        assert_eq!((l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms), (50, 90, 99, 100));
        assert_eq!(Latency::of(&Latencies::default()), None);
    }
}
