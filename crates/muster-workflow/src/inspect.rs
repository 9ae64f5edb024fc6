//! Inspection: what happened to a conversation, rebuilt from journal records (G5).
//!
//! Owns the read-side views `muster inspect` prints: a summary per correlation, the
//! timeline of one correlation (or task) with every handoff, failure and result, the
//! ownership history of each task lease by lease, and a Mermaid sequence diagram. Pure
//! functions over `&[Record]`: they never write and work on any backend's records.
//!
//! A workflow run is a correlation: its run id is the correlation id of its tasks, and its
//! own records (`run_started`, `step_entered`, `gate_waiting`, `run_ended`, ...) count as
//! the correlation's too. [`runs`] lists the runs with where each stands, read off those
//! records' own fields (`run_ended`'s status, step and reason; `gate_waiting`'s gate; the
//! last `step_entered`): a summary for people, not the state a run resumes from (that is
//! `workflow::recovery`, which knows what the events mean for the engine).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use muster_core::journal::{Event, Record};
use muster_core::messaging::{Envelope, Recipient};

/// What happened under one correlation id (a workflow run, or a lone task).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorrelationSummary {
    /// The correlation id.
    pub correlation: Uuid,
    /// Tasks submitted under it.
    pub tasks: usize,
    /// Handoffs: leases granted.
    pub handoffs: usize,
    /// Tasks completed.
    pub completed: usize,
    /// Tasks escalated.
    pub escalated: usize,
    /// Tasks cancelled.
    pub cancelled: usize,
    /// Its first event, Unix ms.
    pub started_ms: u64,
    /// From its first event to its last, ms.
    pub duration_ms: u64,
}

/// Where a workflow run stands, by its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// `run_ended` with status `completed`.
    Completed,
    /// `run_ended` with status `failed` (or any status other than `completed`).
    Failed,
    /// Stopped at a gate (`gate_waiting`) with no decision journaled yet.
    Waiting,
    /// No `run_ended`, and not waiting at a gate: the process stopped mid-run (it was
    /// killed or crashed; `muster resume` finishes the run), or it is still running.
    Unfinished,
}

impl RunState {
    /// `completed`, `failed`, `waiting` or `unfinished`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Waiting => "waiting",
            RunState::Unfinished => "unfinished",
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A step that failed (`step_failed`): its task escalated, or its input could not be made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepFailure {
    /// The step.
    pub step: String,
    /// Why.
    pub reason: String,
}

/// One workflow run: its workflow and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// The run id (the correlation id of its tasks).
    pub run: Uuid,
    /// The workflow's name.
    pub workflow: String,
    /// The workflow file, as recorded at the start.
    pub file: String,
    /// Completed, failed, waiting at a gate, or unfinished.
    pub status: RunState,
    /// The step it ended at (completed or failed), waits at (the gate), or was in when the
    /// journal stops (unfinished); none if it entered no step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The gate it waits at (waiting only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// The gate's question (waiting only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    /// Why it failed (failed only; `run_ended`'s reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last step failure of a run that did not complete, when it adds to `step` and
    /// `reason` (a run that failed at a `fail` terminal after a step failed, a join whose
    /// branch failed, a run that waits or stopped after a step failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<StepFailure>,
    /// Tasks submitted under it.
    pub tasks: usize,
    /// `run_started`'s stamp, Unix ms.
    pub started_ms: u64,
    /// `run_ended`'s stamp, Unix ms (none unless completed or failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// From its start to its end, or to its last record, ms.
    pub duration_ms: u64,
}

/// The run a workflow record belongs to: the run id of a run, step or gate event; `None`
/// for any other record (a task's records name their run as their correlation).
///
/// # Example
/// ```
/// use muster_core::journal::Event;
/// use muster_workflow::inspect::run_of;
///
/// let run = uuid::Uuid::now_v7();
/// let waiting = Event::GateWaiting { run, gate: "ship".into(), question: "ship it?".into() };
/// assert_eq!(run_of(&waiting), Some(run));
/// assert_eq!(run_of(&Event::Note { text: "hello".into() }), None);
/// ```
pub fn run_of(e: &Event) -> Option<Uuid> {
    e.run()
}

/// Which records a timeline covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every task and envelope.
    All,
    /// One correlation id (a workflow run id is one).
    Correlation(Uuid),
    /// One task.
    Task(Uuid),
}

/// One handoff, failure or result in a timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    /// Journal sequence number.
    pub seq: u64,
    /// Unix ms.
    pub at_ms: u64,
    /// Since the timeline's first entry, ms.
    pub offset_ms: u64,
    /// The event kind (`lease_granted`, `attempt_failed`, ...).
    pub kind: &'static str,
    /// The task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<Uuid>,
    /// The correlation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Uuid>,
    /// Who handed off (the task's delegator, an envelope's sender).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The agent instance concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The capability (an envelope's topic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// The payload's schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The attempt, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The lease epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// What came of it, in words.
    pub outcome: String,
}

/// One lease of a task: who owned it, under which epoch, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseSpan {
    /// The agent instance.
    pub agent: String,
    /// The fencing token.
    pub epoch: u64,
    /// The attempt, from 1.
    pub attempt: u32,
    /// When it was granted, Unix ms.
    pub granted_ms: u64,
    /// When it ended, Unix ms (none while it runs, or if the journal stops first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// `completed`, `failed: REASON`, `cancelled`, `escalated` or `running`.
    pub outcome: String,
}

/// The ownership history of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskOwnership {
    /// The task.
    pub task: Uuid,
    /// Its capability.
    pub capability: String,
    /// Who delegated it.
    pub sender: String,
    /// `completed`, `escalated`, `cancelled` or `open`.
    pub status: String,
    /// Its leases, in order.
    pub leases: Vec<LeaseSpan>,
    /// Results rejected as stale, as `agent@epoch`.
    pub stale: Vec<String>,
    /// Its effects on the outside world (`effect_started`, `effect_done`), by name in
    /// the order they were first started.
    pub effects: Vec<EffectView>,
}

/// One effect of a task, as its records tell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectView {
    /// The effect's name.
    pub name: String,
    /// The idempotency key it was last started with, if any.
    pub key: Option<String>,
    /// The epochs that started it, in order (more than one: a later attempt reconciled an
    /// unknown outcome, or ran it again).
    pub started: Vec<u64>,
    /// The epochs that reported it done, in order (at most one, unless an agent repeated
    /// a done effect).
    pub done: Vec<u64>,
    /// `done`, or `unknown` (started, never reported done).
    pub state: &'static str,
    /// Set when the effect was started more than once without an idempotency key: the
    /// outside world may have seen it twice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl EffectView {
    fn new(name: &str) -> Self {
        EffectView {
            name: name.to_string(),
            key: None,
            started: Vec::new(),
            done: Vec::new(),
            state: "unknown",
            warning: None,
        }
    }

    /// Folds one of the task's effect records in.
    fn note(&mut self, event: &Event) {
        match event {
            Event::EffectStarted { key, epoch, .. } => {
                self.started.push(*epoch);
                if key.is_some() {
                    self.key = key.clone();
                }
                if self.started.len() > 1 && self.key.is_none() {
                    self.warning = Some(format!(
                        "started {} times without an idempotency key (epochs {}): the outside world may have seen it more than once",
                        self.started.len(),
                        self.started
                            .iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            Event::EffectDone { key, epoch, .. } => {
                self.done.push(*epoch);
                if self.key.is_none() {
                    self.key = key.clone();
                }
                self.state = "done";
            }
            _ => {}
        }
    }
}

/// The story of a scope: entries in journal order, then ownership per task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// Handoffs, failures and results, in order.
    pub entries: Vec<TimelineEntry>,
    /// Each task's leases, in order of submission.
    pub ownership: Vec<TaskOwnership>,
}

#[derive(Debug, Default)]
struct TaskInfo {
    capability: String,
    correlation: Option<Uuid>,
    sender: Option<String>,
    status: Option<&'static str>,
    /// epoch → attempt
    attempts: HashMap<u64, u32>,
    first_seq: u64,
}

/// Notes a delivered (or undeliverable) envelope, and what it says of its task.
fn note_envelope(
    tasks: &mut HashMap<Uuid, TaskInfo>,
    envelopes: &mut HashMap<Uuid, Arc<Envelope>>,
    envelope: &Arc<Envelope>,
    seq: u64,
) {
    envelopes.insert(envelope.id, envelope.clone());
    if let Some(id) = envelope.task_id {
        let t = tasks.entry(id).or_insert_with(|| TaskInfo {
            first_seq: seq,
            ..TaskInfo::default()
        });
        t.correlation.get_or_insert(envelope.correlation_id);
        t.sender.get_or_insert_with(|| envelope.sender.to_string());
        if t.capability.is_empty() {
            t.capability = envelope.topic.to_string();
        }
    }
}

/// An index over records: tasks, envelopes and correlations.
struct Index<'a> {
    records: &'a [Record],
    tasks: HashMap<Uuid, TaskInfo>,
    envelopes: HashMap<Uuid, Arc<Envelope>>,
}

impl<'a> Index<'a> {
    fn new(records: &'a [Record]) -> Self {
        let mut tasks: HashMap<Uuid, TaskInfo> = HashMap::new();
        let mut envelopes = HashMap::new();
        for r in records {
            match &r.event {
                Event::TaskSubmitted {
                    task,
                    capability,
                    correlation,
                    ..
                } => {
                    let t = tasks.entry(*task).or_default();
                    t.capability = capability.to_string();
                    t.correlation = Some(*correlation);
                    t.first_seq = r.seq;
                }
                Event::EnvelopeRouted { envelope, .. } | Event::EnvelopeFailed { envelope, .. } => {
                    note_envelope(&mut tasks, &mut envelopes, envelope, r.seq);
                }
                Event::LeaseGranted {
                    task,
                    epoch,
                    attempt,
                    routed,
                    ..
                } => {
                    if let Some(envelope) = routed {
                        note_envelope(&mut tasks, &mut envelopes, envelope, r.seq);
                    }
                    let t = tasks.entry(*task).or_insert_with(|| TaskInfo {
                        first_seq: r.seq,
                        ..TaskInfo::default()
                    });
                    t.attempts.insert(*epoch, *attempt);
                }
                Event::ResultAccepted { task, .. } => set_status(&mut tasks, *task, "completed"),
                Event::TaskReused { task, .. } => set_status(&mut tasks, *task, "completed"),
                Event::TaskEscalated { task, .. } => set_status(&mut tasks, *task, "escalated"),
                Event::TaskCancelled { task, .. } => set_status(&mut tasks, *task, "cancelled"),
                _ => {}
            }
        }
        Index {
            records,
            tasks,
            envelopes,
        }
    }

    fn correlation(&self, e: &Event) -> Option<Uuid> {
        e.correlation().or_else(|| run_of(e)).or_else(|| {
            e.task()
                .and_then(|t| self.tasks.get(&t))
                .and_then(|t| t.correlation)
        })
    }

    fn in_scope(&self, e: &Event, scope: Scope) -> bool {
        match scope {
            Scope::All => e.task().is_some() || e.correlation().is_some(),
            Scope::Correlation(c) => self.correlation(e) == Some(c),
            Scope::Task(t) => e.task() == Some(t),
        }
    }
}

fn set_status(tasks: &mut HashMap<Uuid, TaskInfo>, task: Uuid, s: &'static str) {
    let t = tasks.entry(task).or_default();
    t.status.get_or_insert(s);
}

/// One summary per correlation id, in order of first appearance.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Journal, MemoryJournal};
/// use muster_workflow::inspect;
///
/// let j = MemoryJournal::default();
/// let task = uuid::Uuid::now_v7();
/// j.append(10, Event::TaskSubmitted {
///     task, capability: "echo".into(), correlation: task, input: serde_json::json!({}).into(),
///     attempts: 3, timeout_ms: 1000, sender: "api".into(),
/// });
/// j.append(12, Event::TaskCancelled { task, reason: "user".into() });
/// let s = inspect::correlations(&j.read_after(0));
/// assert_eq!((s[0].tasks, s[0].cancelled, s[0].duration_ms), (1, 1, 2));
/// ```
pub fn correlations(records: &[Record]) -> Vec<CorrelationSummary> {
    let index = Index::new(records);
    let mut order: Vec<Uuid> = Vec::new();
    let mut by: HashMap<Uuid, CorrelationSummary> = HashMap::new();
    let mut tasks: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
    for r in records {
        let Some(c) = index.correlation(&r.event) else {
            continue;
        };
        let s = by.entry(c).or_insert_with(|| {
            order.push(c);
            CorrelationSummary {
                correlation: c,
                tasks: 0,
                handoffs: 0,
                completed: 0,
                escalated: 0,
                cancelled: 0,
                started_ms: r.at_ms,
                duration_ms: 0,
            }
        });
        s.started_ms = s.started_ms.min(r.at_ms);
        s.duration_ms = s.duration_ms.max(r.at_ms.saturating_sub(s.started_ms));
        if let Some(t) = r.event.task() {
            tasks.entry(c).or_default().insert(t);
        }
        match &r.event {
            Event::LeaseGranted { .. } => s.handoffs += 1,
            Event::ResultAccepted { .. } | Event::TaskReused { .. } => s.completed += 1,
            Event::TaskEscalated { .. } => s.escalated += 1,
            Event::TaskCancelled { .. } => s.cancelled += 1,
            _ => {}
        }
    }
    order
        .into_iter()
        .filter_map(|c| {
            let mut s = by.remove(&c)?;
            s.tasks = tasks.get(&c).map_or(0, HashSet::len);
            Some(s)
        })
        .collect()
}

/// Every workflow run in the records, in the order they started, with its workflow and
/// where it stands: completed; failed (the step it failed at, and why); waiting at a gate
/// (which, and its question); or unfinished (no `run_ended`: the step it was in).
///
/// # Example
/// ```
/// use muster_workflow::inspect::{runs, RunState};
/// use muster_core::journal::{Event, Journal, MemoryJournal};
/// use serde_json::json;
///
/// let j = MemoryJournal::default();
/// let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
/// for run in [a, b] {
///     j.append(0, Event::RunStarted { run, workflow: "ship".into(), file: "ship.toml".into(), input: json!({}) });
///     j.append(1, Event::StepEntered { run, step: "test".into(), visit: 1 });
/// }
/// j.append(9, Event::RunEnded { run: a, status: "failed".into(), step: "test".into(), reason: Some("tests fail".into()) });
/// let r = runs(&j.read_after(0));
/// assert_eq!((r[0].status, r[0].step.as_deref(), r[0].reason.as_deref()),
///            (RunState::Failed, Some("test"), Some("tests fail")));
/// assert_eq!((r[1].status, r[1].step.as_deref()), (RunState::Unfinished, Some("test")));
/// ```
pub fn runs(records: &[Record]) -> Vec<RunSummary> {
    struct Building {
        summary: RunSummary,
        ended: bool,
        /// The run's previous record was a `step_entered` (a following one is a branch of
        /// the parallel join entered before it: the run is still at the join).
        just_entered: bool,
        tasks: HashSet<Uuid>,
    }
    let index = Index::new(records);
    let mut order: Vec<Uuid> = Vec::new();
    let mut by: HashMap<Uuid, Building> = HashMap::new();
    for r in records {
        if let Event::RunStarted {
            run,
            workflow,
            file,
            ..
        } = &r.event
        {
            // A run started twice keeps its first start.
            by.entry(*run).or_insert_with(|| {
                order.push(*run);
                Building {
                    summary: RunSummary {
                        run: *run,
                        workflow: workflow.clone(),
                        file: file.clone(),
                        status: RunState::Unfinished,
                        step: None,
                        gate: None,
                        question: None,
                        reason: None,
                        failed_step: None,
                        tasks: 0,
                        started_ms: r.at_ms,
                        ended_ms: None,
                        duration_ms: 0,
                    },
                    ended: false,
                    just_entered: false,
                    tasks: HashSet::new(),
                }
            });
            continue;
        }
        let Some(b) = index.correlation(&r.event).and_then(|c| by.get_mut(&c)) else {
            continue;
        };
        if let Some(t) = r.event.task() {
            b.tasks.insert(t);
        }
        if b.ended {
            continue;
        }
        let s = &mut b.summary;
        s.duration_ms = s.duration_ms.max(r.at_ms.saturating_sub(s.started_ms));
        let entered = matches!(r.event, Event::StepEntered { .. });
        match &r.event {
            Event::StepEntered { step, .. } => {
                if !b.just_entered {
                    s.step = Some(step.clone());
                }
                s.status = RunState::Unfinished;
                s.gate = None;
                s.question = None;
            }
            Event::StepFailed { step, reason, .. } => {
                s.failed_step = Some(StepFailure {
                    step: step.clone(),
                    reason: reason.clone(),
                });
            }
            Event::GateWaiting { gate, question, .. } => {
                s.status = RunState::Waiting;
                s.step = Some(gate.clone());
                s.gate = Some(gate.clone());
                s.question = Some(question.clone());
            }
            // Decided, and not gone on yet (a decision made by `muster approve` waits for
            // `muster resume`).
            Event::GateDecided { gate, .. } if s.gate.as_ref() == Some(gate) => {
                s.status = RunState::Unfinished;
                s.gate = None;
                s.question = None;
            }
            Event::RunEnded {
                status,
                step,
                reason,
                ..
            } => {
                b.ended = true;
                s.step = Some(step.clone());
                s.gate = None;
                s.question = None;
                s.ended_ms = Some(r.at_ms);
                if status == "completed" {
                    s.status = RunState::Completed;
                    s.failed_step = None;
                } else {
                    s.status = RunState::Failed;
                    s.reason = Some(reason.clone().unwrap_or_else(|| format!("ended {status}")));
                }
            }
            _ => {}
        }
        b.just_entered = entered;
    }
    order
        .into_iter()
        .filter_map(|run| {
            let mut b = by.remove(&run)?;
            let s = &mut b.summary;
            s.tasks = b.tasks.len();
            // A failure that only repeats the step and reason already given adds nothing.
            if s.failed_step.as_ref().is_some_and(|f| {
                Some(&f.step) == s.step.as_ref() && Some(&f.reason) == s.reason.as_ref()
            }) {
                s.failed_step = None;
            }
            Some(b.summary)
        })
        .collect()
}

/// Every correlation id in the records (a workflow run id is one).
pub fn correlation_ids(records: &[Record]) -> Vec<Uuid> {
    correlations(records)
        .into_iter()
        .map(|s| s.correlation)
        .collect()
}

/// Every task id in the records, in order of first appearance.
pub fn task_ids(records: &[Record]) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    records
        .iter()
        .filter_map(|r| r.event.task())
        .filter(|t| seen.insert(*t))
        .collect()
}

/// The timeline of a scope: every `task_submitted`, `envelope_routed`,
/// `envelope_failed`, `lease_granted`, `attempt_failed`, `result_accepted`,
/// `result_stale`, `task_escalated`, `task_cancelled`, `task_reused` (a result reused
/// from an identical task) and the scope events (`scope_waiting`, `scope_acquired`,
/// `scope_released`) in order, and each task's ownership history.
///
/// # Example
/// ```
/// use muster_workflow::inspect::{timeline, Scope};
/// use muster_core::journal::{Event, Journal, MemoryJournal};
///
/// let j = MemoryJournal::default();
/// let task = uuid::Uuid::now_v7();
/// j.append(0, Event::LeaseGranted { task, agent: "a#0".into(), epoch: 1, attempt: 1, envelope: uuid::Uuid::now_v7(), routed: None });
/// j.append(5, Event::AttemptFailed { task, agent: "a#0".into(), epoch: 1, reason: "panic".into(), detail: "boom".into() });
/// let t = timeline(&j.read_after(0), Scope::Task(task));
/// assert_eq!(t.entries.len(), 2);
/// assert_eq!(t.ownership[0].leases[0].outcome, "failed: panic");
/// ```
pub fn timeline(records: &[Record], scope: Scope) -> Timeline {
    let index = Index::new(records);
    let mut entries = Vec::new();
    let mut first: Option<u64> = None;
    // task → (leases, stale)
    let mut owners: BTreeMap<(u64, Uuid), (Vec<LeaseSpan>, Vec<String>)> = BTreeMap::new();
    let mut effects: HashMap<Uuid, Vec<EffectView>> = HashMap::new();
    let key = |t: &Uuid| (index.tasks.get(t).map_or(0, |i| i.first_seq), *t);
    for r in index.records {
        if !index.in_scope(&r.event, scope) {
            continue;
        }
        let task = r.event.task();
        let info = task.and_then(|t| index.tasks.get(&t));
        let capability = info.map(|i| i.capability.clone());
        let sender = info.and_then(|i| i.sender.clone());
        let mut entry = TimelineEntry {
            seq: r.seq,
            at_ms: r.at_ms,
            offset_ms: 0,
            kind: r.event.kind(),
            task,
            correlation: index.correlation(&r.event),
            sender,
            agent: r.event.agent().map(str::to_string),
            capability,
            schema: None,
            attempt: None,
            epoch: r.event.epoch(),
            outcome: String::new(),
        };
        let end_lease = |owners: &mut BTreeMap<_, (Vec<LeaseSpan>, Vec<String>)>,
                         task: Uuid,
                         epoch: Option<u64>,
                         outcome: String| {
            if let Some((leases, _)) = owners.get_mut(&key(&task)) {
                let open = leases
                    .iter_mut()
                    .rev()
                    .find(|l| l.ended_ms.is_none() && epoch.is_none_or(|e| e == l.epoch));
                if let Some(l) = open {
                    l.ended_ms = Some(r.at_ms);
                    l.outcome = outcome;
                }
            }
        };
        match &r.event {
            Event::TaskSubmitted {
                attempts,
                timeout_ms,
                task,
                ..
            } => {
                owners.entry(key(task)).or_default();
                entry.outcome = format!("submitted ({attempts} attempts, {timeout_ms} ms each)");
            }
            Event::EnvelopeRouted { envelope, .. } => {
                fill_envelope(&mut entry, envelope);
                entry.outcome = "delivered".into();
            }
            Event::EnvelopeFailed {
                envelope,
                reason,
                detail,
                ..
            } => {
                fill_envelope(&mut entry, envelope);
                entry.outcome = format!("undeliverable ({reason}): {detail}");
            }
            Event::LeaseGranted {
                task,
                agent,
                epoch,
                attempt,
                envelope,
                ..
            } => {
                if let Some(env) = index.envelopes.get(envelope) {
                    entry.schema = Some(env.schema.to_string());
                    entry.sender = Some(env.sender.to_string());
                }
                entry.attempt = Some(*attempt);
                entry.outcome = if *attempt > 1 {
                    "reassigned".into()
                } else {
                    "leased".into()
                };
                owners.entry(key(task)).or_default().0.push(LeaseSpan {
                    agent: agent.to_string(),
                    epoch: *epoch,
                    attempt: *attempt,
                    granted_ms: r.at_ms,
                    ended_ms: None,
                    outcome: "running".into(),
                });
            }
            Event::AttemptFailed {
                task,
                epoch,
                reason,
                detail,
                ..
            } => {
                entry.attempt = info.and_then(|i| i.attempts.get(epoch).copied());
                entry.outcome = format!("failed ({reason}): {detail}");
                end_lease(
                    &mut owners,
                    *task,
                    Some(*epoch),
                    format!("failed: {reason}"),
                );
            }
            Event::ResultAccepted { task, epoch, .. } => {
                entry.attempt = info.and_then(|i| i.attempts.get(epoch).copied());
                entry.outcome = "completed".into();
                end_lease(&mut owners, *task, Some(*epoch), "completed".into());
            }
            Event::TaskReused { original, .. } => {
                entry.outcome = format!("completed: reused the accepted result of task {original}");
            }
            Event::ScopeWaiting {
                holder, overlap, ..
            } => {
                entry.outcome = format!("waits for the scope of task {holder}: {overlap}");
            }
            Event::ScopeAcquired { scope, .. } => {
                let list = |p: &[muster_core::messaging::Pattern]| {
                    p.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
                };
                entry.outcome = format!(
                    "scope acquired: write [{}], read [{}]",
                    list(&scope.write),
                    list(&scope.read)
                );
            }
            Event::ScopeReleased { .. } => {
                entry.outcome = "scope released".into();
            }
            Event::ResultStale {
                task,
                agent,
                epoch,
                current_epoch,
            } => {
                entry.attempt = info.and_then(|i| i.attempts.get(epoch).copied());
                entry.outcome = if *current_epoch == 0 {
                    "stale: the task had already ended".into()
                } else {
                    format!("stale: epoch {current_epoch} is in force")
                };
                owners
                    .entry(key(task))
                    .or_default()
                    .1
                    .push(format!("{agent}@{epoch}"));
            }
            Event::EffectStarted {
                task, name, key, ..
            }
            | Event::EffectDone {
                task, name, key, ..
            } => {
                entry.attempt =
                    info.and_then(|i| entry.epoch.and_then(|e| i.attempts.get(&e).copied()));
                let done = matches!(r.event, Event::EffectDone { .. });
                let key = key
                    .as_deref()
                    .map_or("no key".to_string(), |k| format!("key {k}"));
                entry.outcome = if done {
                    format!("effect `{name}` done ({key})")
                } else {
                    format!("effect `{name}` started ({key})")
                };
                let list = effects.entry(*task).or_default();
                let i = match list.iter().position(|v| v.name == *name) {
                    Some(i) => i,
                    None => {
                        list.push(EffectView::new(name));
                        list.len() - 1
                    }
                };
                list[i].note(&r.event);
            }
            Event::TaskEscalated { task, to, reason } => {
                entry.outcome = format!("escalated to {to}: {reason}");
                end_lease(&mut owners, *task, None, "escalated".into());
            }
            Event::TaskCancelled { task, reason } => {
                entry.outcome = format!("cancelled: {reason}");
                end_lease(&mut owners, *task, None, "cancelled".into());
            }
            // The run's own story: where it went and why.
            Event::RunStarted { workflow, file, .. } => {
                entry.outcome = format!("run of `{workflow}` started ({file})");
            }
            Event::StepEntered { step, visit, .. } => {
                entry.outcome = if *visit > 1 {
                    format!("step `{step}` entered again (visit {visit})")
                } else {
                    format!("step `{step}` entered")
                };
            }
            Event::StepCompleted { step, output, .. } => {
                let verdict = crate::outcome::verdict_of(output);
                entry.outcome = if verdict.is_empty() {
                    format!("step `{step}` completed")
                } else {
                    format!("step `{step}` completed: {verdict}")
                };
            }
            Event::StepFailed { step, reason, .. } => {
                entry.outcome = format!("step `{step}` failed: {reason}");
            }
            Event::GateWaiting { gate, question, .. } => {
                entry.outcome = format!("gate `{gate}` waits: {question}");
            }
            Event::GateDecided {
                gate,
                approved,
                reason,
                ..
            } => {
                let decision = if *approved { "approved" } else { "rejected" };
                entry.outcome = if reason.is_empty() {
                    format!("gate `{gate}` {decision}")
                } else {
                    format!("gate `{gate}` {decision}: {reason}")
                };
            }
            Event::RunEnded {
                status,
                step,
                reason,
                ..
            } => {
                entry.outcome = match reason {
                    Some(why) => format!("run ended {status} at `{step}`: {why}"),
                    None => format!("run ended {status} at `{step}`"),
                };
            }
            _ => continue,
        }
        let start = *first.get_or_insert(r.at_ms);
        entry.offset_ms = r.at_ms.saturating_sub(start);
        entries.push(entry);
    }
    let ownership = owners
        .into_iter()
        .map(|((_, task), (leases, stale))| {
            let info = index.tasks.get(&task);
            TaskOwnership {
                task,
                capability: info.map(|i| i.capability.clone()).unwrap_or_default(),
                sender: info
                    .and_then(|i| i.sender.clone())
                    .unwrap_or_else(|| "owner".into()),
                status: info.and_then(|i| i.status).unwrap_or("open").to_string(),
                leases,
                stale,
                effects: effects.remove(&task).unwrap_or_default(),
            }
        })
        .collect();
    Timeline { entries, ownership }
}

fn fill_envelope(entry: &mut TimelineEntry, envelope: &Envelope) {
    entry.sender = Some(envelope.sender.to_string());
    entry.capability = Some(envelope.topic.to_string());
    entry.schema = Some(envelope.schema.to_string()).filter(|s| !s.is_empty());
    entry.attempt = Some(envelope.attempt);
    if entry.agent.is_none()
        && let Recipient::Capability(c) = &envelope.recipient
    {
        entry.agent = Some(format!("({c})"));
    }
}

impl Timeline {
    /// The timeline as a Mermaid `sequenceDiagram`: delegators and agents as
    /// participants, leases as arrows `owner->>agent: capability (attempt n, epoch e)`,
    /// accepted results as return arrows, failures, reassignments, stale results and
    /// escalations as notes.
    ///
    /// # Example
    /// ```
    /// use muster_workflow::inspect::{timeline, Scope};
    /// use muster_core::journal::{Event, Journal, MemoryJournal};
    ///
    /// let j = MemoryJournal::default();
    /// let task = uuid::Uuid::now_v7();
    /// j.append(0, Event::LeaseGranted { task, agent: "a#0".into(), epoch: 1, attempt: 1, envelope: uuid::Uuid::now_v7(), routed: None });
    /// j.append(1, Event::ResultAccepted { task, agent: "a#0".into(), epoch: 1, output: serde_json::json!({}).into() });
    /// let m = timeline(&j.read_after(0), Scope::All).to_mermaid();
    /// assert!(m.starts_with("sequenceDiagram"));
    /// assert!(m.contains("->>") && m.contains("-->>"));
    /// ```
    pub fn to_mermaid(&self) -> String {
        let mut names: Vec<String> = Vec::new();
        let mut body = String::new();
        let lease_envelopes = self.lease_envelope_seqs();
        for e in &self.entries {
            let sender = e.sender.clone().unwrap_or_else(|| "owner".into());
            let agent = e.agent.clone().unwrap_or_else(|| "agent".into());
            let cap = e.capability.clone().unwrap_or_default();
            let epoch = e.epoch.unwrap_or(0);
            let line = match e.kind {
                "lease_granted" => {
                    let (s, a) = (id(&sender, &mut names), id(&agent, &mut names));
                    let mut l = format!(
                        "    {s}->>{a}: {} (attempt {}, epoch {epoch})\n",
                        text(&cap),
                        e.attempt.unwrap_or(1)
                    );
                    if e.attempt.unwrap_or(1) > 1 {
                        l += &format!(
                            "    Note over {a}: reassigned (attempt {})\n",
                            e.attempt.unwrap_or(1)
                        );
                    }
                    l
                }
                "envelope_routed" if !lease_envelopes.contains(&e.seq) => {
                    let (s, a) = (id(&sender, &mut names), id(&agent, &mut names));
                    format!("    {s}->>{a}: {}\n", text(&cap))
                }
                "envelope_failed" => {
                    let s = id(&sender, &mut names);
                    format!("    Note over {s}: {}\n", text(&e.outcome))
                }
                "result_accepted" => {
                    let (s, a) = (id(&sender, &mut names), id(&agent, &mut names));
                    format!("    {a}-->>{s}: result (epoch {epoch})\n")
                }
                "attempt_failed" | "result_stale" => {
                    let a = id(&agent, &mut names);
                    format!("    Note over {a}: {} (epoch {epoch})\n", text(&e.outcome))
                }
                "task_escalated" | "task_cancelled" => {
                    let s = id(&sender, &mut names);
                    format!("    Note over {s}: {}\n", text(&e.outcome))
                }
                _ => String::new(),
            };
            body += &line;
        }
        let mut out = String::from("sequenceDiagram\n");
        for (i, n) in names.iter().enumerate() {
            let _ = writeln!(out, "    participant P{i} as {}", text(n));
        }
        out + &body
    }

    /// Seqs of `envelope_routed` entries that carry a lease (drawn once, as the lease).
    fn lease_envelope_seqs(&self) -> HashSet<u64> {
        let leases: HashSet<(Option<Uuid>, Option<u64>)> = self
            .entries
            .iter()
            .filter(|e| e.kind == "lease_granted")
            .map(|e| (e.task, e.epoch))
            .collect();
        self.entries
            .iter()
            .filter(|e| {
                e.kind == "envelope_routed"
                    && e.task.is_some()
                    && leases.contains(&(e.task, e.epoch))
            })
            .map(|e| e.seq)
            .collect()
    }
}

/// The participant id of `name` (`P0`, `P1`, ... in order of appearance).
fn id(name: &str, names: &mut Vec<String>) -> String {
    let i = match names.iter().position(|n| n == name) {
        Some(i) => i,
        None => {
            names.push(name.to_string());
            names.len() - 1
        }
    };
    format!("P{i}")
}

/// Text safe inside a Mermaid statement: `;` ends a statement and `#` starts an entity
/// code, so both are written as entity codes; newlines are flattened.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '#' => out.push_str("#35;"),
            ';' => out.push_str("#59;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::journal::{Journal, MemoryJournal};
    use serde_json::json;

    fn journal(run: Uuid, events: Vec<Event>) -> Vec<Record> {
        let j = MemoryJournal::default();
        j.append(
            0,
            Event::RunStarted {
                run,
                workflow: "w".into(),
                file: "w.toml".into(),
                input: json!({}),
            },
        );
        for (i, e) in events.into_iter().enumerate() {
            j.append(i as u64 + 1, e);
        }
        j.read_after(0)
    }

    fn entered(run: Uuid, step: &str) -> Event {
        Event::StepEntered {
            run,
            step: step.into(),
            visit: 1,
        }
    }

    #[test]
    fn an_unfinished_join_is_at_the_join_not_its_last_branch() {
        let run = Uuid::from_u128(1);
        let r = &runs(&journal(
            run,
            vec![
                entered(run, "checks"),
                entered(run, "lint"),
                entered(run, "test"),
            ],
        ))[0];
        assert_eq!(
            (r.status, r.step.as_deref()),
            (RunState::Unfinished, Some("checks"))
        );
        assert_eq!(r.duration_ms, 3);
    }

    #[test]
    fn a_decided_gate_not_gone_past_is_unfinished() {
        let run = Uuid::from_u128(2);
        let r = &runs(&journal(
            run,
            vec![
                entered(run, "ask"),
                Event::GateWaiting {
                    run,
                    gate: "ask".into(),
                    question: "ship?".into(),
                },
                Event::GateDecided {
                    run,
                    gate: "ask".into(),
                    approved: true,
                    reason: "ok".into(),
                },
            ],
        ))[0];
        assert_eq!(
            (r.status, r.step.as_deref(), r.gate.as_deref()),
            (RunState::Unfinished, Some("ask"), None)
        );
    }

    #[test]
    fn a_run_failed_at_a_fail_terminal_names_the_step_that_failed() {
        let run = Uuid::from_u128(3);
        let r = &runs(&journal(
            run,
            vec![
                entered(run, "test"),
                Event::StepFailed {
                    run,
                    step: "test".into(),
                    task: None,
                    reason: "boom".into(),
                },
                entered(run, "stop"),
                Event::RunEnded {
                    run,
                    status: "failed".into(),
                    step: "stop".into(),
                    reason: Some("reached a fail terminal".into()),
                },
                // Records after the end (a late answer) change nothing.
                entered(run, "other"),
            ],
        ))[0];
        assert_eq!(
            (r.status, r.step.as_deref(), r.reason.as_deref()),
            (
                RunState::Failed,
                Some("stop"),
                Some("reached a fail terminal")
            )
        );
        assert_eq!(
            r.failed_step,
            Some(StepFailure {
                step: "test".into(),
                reason: "boom".into()
            })
        );
        assert_eq!((r.ended_ms, r.duration_ms), (Some(4), 4));
    }
}

/// Model usage of one agent type in one correlation (a workflow run), from the
/// `model_usage` records; `agent` is `*` on the line that sums the correlation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageLine {
    /// The correlation (run) id.
    pub correlation: Uuid,
    /// The agent type (the instance id up to `#`), or `*` for the whole correlation.
    pub agent: String,
    /// The sums.
    #[serde(flatten)]
    pub totals: muster_core::journal::UsageTotals,
}

/// What model-backed attempts spent, per correlation (run) and agent type, for the
/// records in `scope`: for each correlation with any usage, one line per agent type then
/// a `*` line with the correlation's total. Tokens a server did not report are counted as
/// unknown attempts, never as 0.
///
/// # Example
/// ```
/// use muster_workflow::inspect::{usage, Scope};
/// use muster_core::journal::{Event, Journal, MemoryJournal, Usage};
///
/// let j = MemoryJournal::default();
/// let (task, run) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
/// j.append(1, Event::TaskSubmitted { task, capability: "triage".into(), correlation: run,
///     input: serde_json::json!({}).into(), attempts: 1, timeout_ms: 1000, sender: String::new() });
/// j.append(2, Event::ModelUsage { task, agent: "classifier#0".into(), epoch: 1,
///     usage: Usage::known("m", 10, 5) });
/// let lines = usage(&j.read_after(0), Scope::All);
/// assert_eq!((lines[0].agent.as_str(), lines[0].totals.total_tokens), ("classifier", 15));
/// assert_eq!(lines[1].agent, "*");
/// ```
pub fn usage(records: &[Record], scope: Scope) -> Vec<UsageLine> {
    let mut correlation_of: HashMap<Uuid, Uuid> = HashMap::new();
    let mut by: BTreeMap<(Uuid, String), muster_core::journal::UsageTotals> = BTreeMap::new();
    for r in records {
        match &r.event {
            Event::TaskSubmitted {
                task, correlation, ..
            } => {
                correlation_of.insert(*task, *correlation);
            }
            Event::ModelUsage {
                task, agent, usage, ..
            } => {
                let correlation = correlation_of.get(task).copied().unwrap_or(*task);
                let keep = match scope {
                    Scope::All => true,
                    Scope::Correlation(c) => c == correlation,
                    Scope::Task(t) => t == *task,
                };
                if keep {
                    let agent_type = agent.split('#').next().unwrap_or(agent).to_string();
                    by.entry((correlation, agent_type)).or_default().add(usage);
                    by.entry((correlation, "\u{10FFFF}".into()))
                        .or_default()
                        .add(usage);
                }
            }
            _ => {}
        }
    }
    by.into_iter()
        .map(|((correlation, agent), totals)| UsageLine {
            correlation,
            // The sum sorts last in its correlation.
            agent: if agent == "\u{10FFFF}" {
                "*".into()
            } else {
                agent
            },
            totals,
        })
        .collect()
}
