//! Prometheus metrics of a runtime: counters and histograms folded from the journal's
//! records, gauges read from the [`Muster`] handle when scraped, rendered in the Prometheus
//! text exposition format (version 0.0.4).
//!
//! Driven by the journal, so the hot path is untouched and a runtime that resumed a
//! journal counts what `muster inspect` shows (G5): every record is observed once, by its
//! sequence number. Memory is bounded whatever the journal holds: label values that name
//! agents, supervisors or failure reasons are capped (the rest fold into `other`), and the
//! leases waiting for their outcome are a bounded map. It must not act on what it counts.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use uuid::Uuid;

use super::bounded::{Bounded, LabelCap};
use super::history::{History, HistoryDoc};
use muster_core::agents::AgentState;
use muster_core::journal::write_stats::{BATCH_RECORDS_BOUNDS, COMMIT_SECONDS_BOUNDS};
use muster_core::journal::{Event, Record, WriteStats};
use muster_core::runtime::Muster;

/// Label pairs of one series.
type Labels = Vec<(&'static str, String)>;

/// Upper bounds of the lease-latency buckets (lease granted → its outcome), in seconds.
pub const LEASE_SECONDS_BOUNDS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// What a serving node refused at its admission bound (the `kind` label of
/// `muster_admission_refused_total`).
///
/// # Example
/// ```
/// use muster_telemetry::AdmissionKind;
///
/// assert_eq!(AdmissionKind::Task.as_str(), "task");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionKind {
    /// A run (`POST /v1/runs`, bounded by `--max-runs`).
    Run,
    /// A bare task (`POST /v1/tasks`, bounded by `--max-tasks`).
    Task,
}

impl AdmissionKind {
    /// The label value: `run` or `task`.
    pub fn as_str(self) -> &'static str {
        match self {
            AdmissionKind::Run => "run",
            AdmissionKind::Task => "task",
        }
    }
}

/// Bounds of what [`Metrics`] keeps.
///
/// # Example
/// ```
/// use muster_telemetry::{Metrics, MetricsConfig};
///
/// let m = Metrics::with_config(MetricsConfig { agent_labels: 50, ..MetricsConfig::default() });
/// # let _ = m;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Distinct agent-instance label values (per-agent series); the rest are `other`.
    pub agent_labels: usize,
    /// Distinct supervisor label values.
    pub supervisor_labels: usize,
    /// Distinct failure-reason and status label values (the journal's own set is small;
    /// a foreign journal's is capped).
    pub reason_labels: usize,
    /// Leases remembered while they wait for their outcome (for the latency histogram);
    /// the oldest is forgotten past it.
    pub open_leases: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            agent_labels: 200,
            supervisor_labels: 100,
            reason_labels: 32,
            open_leases: 100_000,
        }
    }
}

/// The metric families, each a shared handle also held by the registry.
#[derive(Debug, Clone)]
struct Families {
    tasks_submitted: Counter,
    tasks_ended: Family<Labels, Counter>,
    attempts: Family<Labels, Counter>,
    leases_granted: Counter,
    reassignments: Counter,
    stale_results: Counter,
    attempts_interrupted: Family<Labels, Counter>,
    lease_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    runs_started: Counter,
    runs_ended: Family<Labels, Counter>,
    gate_decisions: Family<Labels, Counter>,
    restarts: Family<Labels, Counter>,
    supervisor_escalations: Family<Labels, Counter>,
    dead_letters: Counter,
    model_calls: Family<Labels, Counter>,
    model_tokens: Family<Labels, Counter>,
    model_unknown: Family<Labels, Counter>,
    agents: Family<Labels, Gauge>,
    agent_in_flight: Family<Labels, Gauge>,
    agent_queued: Family<Labels, Gauge>,
    tasks_live: Gauge,
    journal_seq: Gauge,
    open_leases: Gauge,
    evicted_leases: Gauge,
    admission_refused: Family<Labels, Counter>,
}

fn lease_histogram() -> Histogram {
    Histogram::new(LEASE_SECONDS_BOUNDS)
}

impl Families {
    fn new() -> Self {
        Families {
            tasks_submitted: Counter::default(),
            tasks_ended: Family::default(),
            attempts: Family::default(),
            leases_granted: Counter::default(),
            reassignments: Counter::default(),
            stale_results: Counter::default(),
            attempts_interrupted: Family::default(),
            lease_seconds: Family::new_with_constructor(lease_histogram),
            runs_started: Counter::default(),
            runs_ended: Family::default(),
            gate_decisions: Family::default(),
            restarts: Family::default(),
            supervisor_escalations: Family::default(),
            dead_letters: Counter::default(),
            model_calls: Family::default(),
            model_tokens: Family::default(),
            model_unknown: Family::default(),
            agents: Family::default(),
            agent_in_flight: Family::default(),
            agent_queued: Family::default(),
            tasks_live: Gauge::default(),
            journal_seq: Gauge::default(),
            open_leases: Gauge::default(),
            evicted_leases: Gauge::default(),
            admission_refused: Family::default(),
        }
    }

    /// Registers every family under the `muster_` prefix.
    fn register(&self, r: &mut Registry) {
        let f = self.clone();
        r.register(
            "tasks_submitted",
            "Tasks accepted (journal: task_submitted)",
            f.tasks_submitted,
        );
        r.register(
            "tasks_ended",
            "Tasks that reached a terminal state, by status (completed, escalated, cancelled, reused)",
            f.tasks_ended,
        );
        r.register(
            "attempts",
            "Attempts that ended, by outcome (completed, or the failure reason)",
            f.attempts,
        );
        r.register(
            "leases_granted",
            "Leases granted (each attempt starts with one)",
            f.leases_granted,
        );
        r.register(
            "reassignments",
            "Leases granted after a failed attempt (attempt > 1)",
            f.reassignments,
        );
        r.register(
            "stale_results",
            "Results rejected because their lease epoch was superseded (G2)",
            f.stale_results,
        );
        r.register(
            "attempts_interrupted",
            "Attempts cut short by muster's own death, found at resume, by whether they were refunded",
            f.attempts_interrupted,
        );
        r.register(
            "lease_seconds",
            "Time from a lease being granted to its result or failure, by outcome (journal timestamps)",
            f.lease_seconds,
        );
        r.register("runs_started", "Workflow runs started", f.runs_started);
        r.register("runs_ended", "Workflow runs ended, by status", f.runs_ended);
        r.register(
            "gate_decisions",
            "Human decisions at gates, by decision",
            f.gate_decisions,
        );
        r.register(
            "child_restarts",
            "Children restarted, by supervisor",
            f.restarts,
        );
        r.register(
            "supervisor_escalations",
            "Supervisors that hit their restart intensity, by supervisor",
            f.supervisor_escalations,
        );
        r.register(
            "dead_letters",
            "Envelopes that could not be delivered (journal: envelope_failed)",
            f.dead_letters,
        );
        r.register(
            "model_calls",
            "Model requests answered, by agent instance",
            f.model_calls,
        );
        r.register(
            "model_tokens",
            "Model tokens by agent instance and kind (input, output, total), as the server reported them",
            f.model_tokens,
        );
        r.register(
            "model_usage_unknown",
            "Attempts whose token counts the model server did not report, by agent instance",
            f.model_unknown,
        );
        r.register("agents", "Agent instances by lifecycle state", f.agents);
        r.register(
            "agent_in_flight",
            "Tasks an agent instance holds now (running and queued)",
            f.agent_in_flight,
        );
        r.register(
            "agent_queued",
            "Tasks waiting in an agent instance's mailbox beyond its concurrency",
            f.agent_queued,
        );
        r.register("tasks_live", "Tasks not yet ended", f.tasks_live);
        r.register(
            "telemetry_journal_seq",
            "The last journal sequence number the metrics observed",
            f.journal_seq,
        );
        r.register(
            "telemetry_open_leases",
            "Leases remembered while they wait for their outcome",
            f.open_leases,
        );
        r.register(
            "telemetry_evicted_leases",
            "Leases forgotten past the bound before their outcome (left out of lease_seconds)",
            f.evicted_leases,
        );
        r.register(
            "admission_refused",
            "Requests a serving node refused at its admission bound, by kind (run: --max-runs, task: --max-tasks)",
            f.admission_refused,
        );
    }
}

/// What observing needs besides the families.
#[derive(Debug)]
struct State {
    /// The last record observed: a record at or below it is not counted again.
    last_seq: u64,
    agents: LabelCap,
    supervisors: LabelCap,
    reasons: LabelCap,
    /// (task, epoch) → when its lease was granted, ms.
    leases: Bounded<(Uuid, u64), u64>,
    /// The last hour in ten-second samples (`GET /v1/metrics/history`).
    history: History,
}

/// Prometheus metrics of one runtime: [`Metrics::observe`] every journal record (the
/// [`Follower`](super::Follower) does), [`Metrics::render`] on each scrape.
///
/// Share it in an `Arc`: observing and rendering take `&self`.
///
/// # Example
/// ```
/// # actix::System::new().block_on(async {
/// use muster_telemetry::Metrics;
/// use muster_core::{AgentDef, CapabilitySpec, Muster, Task};
/// use serde_json::json;
///
/// let m = Muster::builder()
///     .schema("any", json!({}))
///     .agent(AgentDef::function("echo", |v, _| async move { Ok(v) })
///         .capability(CapabilitySpec::new("echo", "any", "any")))
///     .start()
///     .await
///     .unwrap();
/// m.delegate(Task::new("echo", json!({"hi": 1}))).await.unwrap();
///
/// let metrics = Metrics::default();
/// for r in m.journal().read_after(0) {
///     metrics.observe(&r);
/// }
/// let text = metrics.render(&m);
/// assert!(text.contains("muster_tasks_submitted_total 1"));
/// assert!(text.contains("muster_tasks_ended_total{status=\"completed\"} 1"));
/// # m.shutdown().await;
/// # });
/// ```
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    f: Families,
    state: Mutex<State>,
    /// The journal writer's stats, set at render time for the collector.
    writes: Arc<Mutex<Option<WriteStats>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::with_config(MetricsConfig::default())
    }
}

fn labels(k: &'static str, v: impl Into<String>) -> Labels {
    vec![(k, v.into())]
}

impl Metrics {
    /// The `Content-Type` of [`Metrics::render`]'s text, for a `/metrics` response.
    pub const CONTENT_TYPE: &'static str =
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

    /// Metrics with explicit bounds.
    pub fn with_config(config: MetricsConfig) -> Self {
        let f = Families::new();
        for kind in [AdmissionKind::Run, AdmissionKind::Task] {
            let _ = f
                .admission_refused
                .get_or_create(&labels("kind", kind.as_str()));
        }
        let mut registry = Registry::with_prefix("muster");
        f.register(&mut registry);
        let writes: Arc<Mutex<Option<WriteStats>>> = Arc::default();
        registry.register_collector(Box::new(JournalWrites(writes.clone())));
        Metrics {
            registry,
            f,
            state: Mutex::new(State {
                last_seq: 0,
                agents: LabelCap::new(config.agent_labels),
                supervisors: LabelCap::new(config.supervisor_labels),
                reasons: LabelCap::new(config.reason_labels),
                leases: Bounded::new(config.open_leases),
                history: History::default(),
            }),
            writes,
        }
    }

    /// Counts a request a serving node refused at its admission bound (`muster serve
    /// --max-runs` for `kind` `run`, `--max-tasks` for `task`): not from the journal, since
    /// a refused request leaves nothing there. Both kinds show from the start, at 0.
    ///
    /// # Example
    /// ```
    /// # actix::System::new().block_on(async {
    /// use muster_telemetry::{AdmissionKind, Metrics};
    ///
    /// let m = muster_core::Muster::builder().start().await.unwrap();
    /// let metrics = Metrics::default();
    /// metrics.admission_refused(AdmissionKind::Run);
    /// let text = metrics.render(&m);
    /// assert!(text.contains("muster_admission_refused_total{kind=\"run\"} 1"));
    /// assert!(text.contains("muster_admission_refused_total{kind=\"task\"} 0"));
    /// # m.shutdown().await;
    /// # });
    /// ```
    pub fn admission_refused(&self, kind: AdmissionKind) {
        self.f
            .admission_refused
            .get_or_create(&labels("kind", kind.as_str()))
            .inc();
    }

    /// The last hour of the records observed, in ten-second samples up to `now_ms`
    /// ([`History`]): what `GET /v1/metrics/history` answers.
    ///
    /// # Example
    /// ```
    /// let metrics = muster_telemetry::Metrics::default();
    /// assert!(metrics.history(0).samples.is_empty()); // nothing observed yet
    /// ```
    pub fn history(&self, now_ms: u64) -> HistoryDoc {
        self.state.lock().history.doc(now_ms)
    }

    /// The last journal sequence number observed (0: none).
    pub fn last_seq(&self) -> u64 {
        self.state.lock().last_seq
    }

    /// Counts one journal record. A record whose sequence number is not above the last
    /// one observed is ignored, so feeding a record twice (a follower restarted from an
    /// earlier point) counts it once.
    pub fn observe(&self, r: &Record) {
        let mut s = self.state.lock();
        if r.seq <= s.last_seq {
            return;
        }
        s.last_seq = r.seq;
        s.history.observe(r);
        let f = &self.f;
        match &r.event {
            Event::TaskSubmitted { .. } => {
                f.tasks_submitted.inc();
            }
            Event::LeaseGranted {
                task,
                epoch,
                attempt,
                ..
            } => {
                f.leases_granted.inc();
                if *attempt > 1 {
                    f.reassignments.inc();
                }
                s.leases.insert((*task, *epoch), r.at_ms);
            }
            Event::ResultAccepted { task, epoch, .. } => {
                f.attempts
                    .get_or_create(&labels("outcome", "completed"))
                    .inc();
                f.tasks_ended
                    .get_or_create(&labels("status", "completed"))
                    .inc();
                self.lease_ended(&mut s, *task, *epoch, r.at_ms, "completed");
            }
            Event::AttemptFailed {
                task,
                epoch,
                reason,
                ..
            } => {
                let reason = s.reasons.label(reason);
                f.attempts.get_or_create(&labels("outcome", reason)).inc();
                self.lease_ended(&mut s, *task, *epoch, r.at_ms, "failed");
            }
            Event::ResultStale { .. } => {
                f.stale_results.inc();
            }
            Event::AttemptInterrupted { refunded, .. } => {
                f.attempts_interrupted
                    .get_or_create(&labels(
                        "refunded",
                        if *refunded { "true" } else { "false" },
                    ))
                    .inc();
            }
            Event::TaskEscalated { .. } => {
                f.tasks_ended
                    .get_or_create(&labels("status", "escalated"))
                    .inc();
            }
            Event::TaskCancelled { .. } => {
                f.tasks_ended
                    .get_or_create(&labels("status", "cancelled"))
                    .inc();
            }
            Event::TaskReused { .. } => {
                f.tasks_ended
                    .get_or_create(&labels("status", "reused"))
                    .inc();
            }
            Event::ModelUsage { agent, usage, .. } => {
                let agent = s.agents.label(agent);
                f.model_calls
                    .get_or_create(&labels("agent", agent.clone()))
                    .inc_by(u64::from(usage.calls));
                let kinds = [
                    ("input", usage.prompt_tokens),
                    ("output", usage.completion_tokens),
                    ("total", usage.total_tokens),
                ];
                for (kind, n) in kinds {
                    if let Some(n) = n {
                        f.model_tokens
                            .get_or_create(&vec![("agent", agent.clone()), ("kind", kind.into())])
                            .inc_by(n);
                    }
                }
                if usage.total_tokens.is_none() {
                    f.model_unknown.get_or_create(&labels("agent", agent)).inc();
                }
            }
            Event::RunStarted { .. } => {
                f.runs_started.inc();
            }
            Event::RunEnded { status, .. } => {
                let status = s.reasons.label(status);
                f.runs_ended.get_or_create(&labels("status", status)).inc();
            }
            Event::GateDecided { approved, .. } => {
                let d = if *approved { "approved" } else { "rejected" };
                f.gate_decisions.get_or_create(&labels("decision", d)).inc();
            }
            Event::ChildRestarted { supervisor, .. } => {
                let sup = s.supervisors.label(supervisor);
                f.restarts.get_or_create(&labels("supervisor", sup)).inc();
            }
            Event::SupervisorEscalated { supervisor, .. } => {
                let sup = s.supervisors.label(supervisor);
                f.supervisor_escalations
                    .get_or_create(&labels("supervisor", sup))
                    .inc();
            }
            Event::EnvelopeFailed { .. } => {
                f.dead_letters.inc();
            }
            _ => {}
        }
    }

    fn lease_ended(&self, s: &mut State, task: Uuid, epoch: u64, at_ms: u64, outcome: &str) {
        if let Some(granted) = s.leases.remove(&(task, epoch)) {
            let secs = at_ms.saturating_sub(granted) as f64 / 1000.0;
            self.f
                .lease_seconds
                .get_or_create(&labels("outcome", outcome))
                .observe(secs);
        }
    }

    /// The metrics in the Prometheus text format ([`Metrics::CONTENT_TYPE`]): the counters
    /// observed so far, and gauges read from `muster` now (agents by state, each agent's
    /// in-flight and queued tasks, live tasks, the journal writer's commits).
    pub fn render(&self, muster: &Muster) -> String {
        let mut s = self.state.lock();
        let f = &self.f;
        let mut by_state: HashMap<AgentState, i64> = HashMap::new();
        let mut in_flight: HashMap<String, i64> = HashMap::new();
        let mut queued: HashMap<String, i64> = HashMap::new();
        for a in muster.agents() {
            *by_state.entry(a.state).or_default() += 1;
            let label = s.agents.label(&a.id);
            let held = i64::try_from(a.in_flight).unwrap_or(i64::MAX);
            let waiting =
                i64::try_from(a.in_flight.saturating_sub(a.concurrency)).unwrap_or(i64::MAX);
            *in_flight.entry(label.clone()).or_default() += held;
            *queued.entry(label).or_default() += waiting;
        }
        f.agents.clear();
        for st in [
            AgentState::Starting,
            AgentState::Ready,
            AgentState::Busy,
            AgentState::Failed,
            AgentState::Stopped,
        ] {
            let n = by_state.get(&st).copied().unwrap_or(0);
            f.agents.get_or_create(&labels("state", st.as_str())).set(n);
        }
        f.agent_in_flight.clear();
        for (agent, n) in in_flight {
            f.agent_in_flight
                .get_or_create(&labels("agent", agent))
                .set(n);
        }
        f.agent_queued.clear();
        for (agent, n) in queued {
            f.agent_queued.get_or_create(&labels("agent", agent)).set(n);
        }
        f.tasks_live
            .set(i64::try_from(muster.live_tasks()).unwrap_or(i64::MAX));
        f.journal_seq
            .set(i64::try_from(s.last_seq).unwrap_or(i64::MAX));
        f.open_leases
            .set(i64::try_from(s.leases.len()).unwrap_or(i64::MAX));
        f.evicted_leases
            .set(i64::try_from(s.leases.evicted()).unwrap_or(i64::MAX));
        *self.writes.lock() = muster.journal().write_stats();
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would leave the text cut
        // short, which a scraper reports, so it is logged rather than hidden.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "encoding the metrics");
        }
        drop(s);
        out
    }
}

/// The journal writer's commit latency and batch size, as two histograms (absent for a
/// journal whose `append` is the write).
#[derive(Debug)]
struct JournalWrites(Arc<Mutex<Option<WriteStats>>>);

impl Collector for JournalWrites {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(w) = self.0.lock().clone() else {
            return Ok(());
        };
        let no_exemplars: Option<&HashMap<usize, Exemplar<Labels, f64>>> = None;
        let latency: Vec<(f64, u64)> = COMMIT_SECONDS_BOUNDS
            .iter()
            .copied()
            .zip(w.commit_buckets.iter().copied())
            .collect();
        encoder
            .encode_descriptor(
                "journal_commit_seconds",
                "Time the journal writer took per group commit (one transaction)",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram(w.commit_seconds, w.commits, &latency, no_exemplars)?;
        let batch: Vec<(f64, u64)> = BATCH_RECORDS_BOUNDS
            .iter()
            .copied()
            .zip(w.batch_buckets.iter().copied())
            .collect();
        encoder
            .encode_descriptor(
                "journal_batch_records",
                "Records per group commit of the journal writer",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram(w.records as f64, w.commits, &batch, no_exemplars)?;
        Ok(())
    }
}
