//! Crash recovery: the state of every workflow run, rebuilt from the journal alone.
//!
//! Owns [`runs`] / [`recover`], which replay a journal's records into one
//! [`RecoveredRun`] per run: its input, its `steps` map exactly as the engine holds it
//! (`{output, attempts, error, agent}`), the visits per step, and where it is
//! ([`Position`]): the step it was in, which of that step's task steps (the step itself, or
//! the branches of a parallel join) completed, failed, or have a task in flight, and a
//! gate's waiting state and decision. The engine then finishes the run from there
//! ([`WorkflowExt::resume_run`](super::WorkflowExt::resume_run)). It upholds G1 across a crash (no step is lost: a
//! step whose task was in flight is resubmitted) and G2 (no result is accepted twice: a
//! step whose task has a `result_accepted` takes that output and is not run again; a
//! resubmitted task keeps its id and leases above the highest epoch journaled, so an
//! answer of the dead process's lease is fenced). It must not write anything: it only
//! reads records.
//!
//! How events tie to a run: run events carry the run id; a step's task is tied by its
//! `task_submitted` (correlation = the run, sender = `"{workflow}/{step}"`), and the
//! task's later events by the task id. A `step_entered` that directly follows another
//! `step_entered` of the same run is a branch of the parallel join entered before it
//! (the engine enters every branch before it submits anything).
//!
//! ```text
//!  run_started ─▶ step_entered(s) ─▶ task_submitted ─▶ lease_granted(e) ─▶ result_accepted ─▶ step_completed
//!                      │                  resume: resubmit, same id, epochs above e ──┘ resume: take the output
//!                      ├─▶ step_entered(branch)… (a join: per branch as above)
//!                      └─▶ gate_waiting ─▶ gate_decided ─▶ (next step_entered)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::outcome::{AttemptFailure, StepRecord, StepSummary};
use muster_core::agents::EffectEntry;
use muster_core::journal::{Event, Record};

/// A task of a step that was submitted before the crash and has no accepted result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingTask {
    /// The task id, kept when it is resubmitted.
    pub task: Uuid,
    /// The highest lease epoch journaled for it (0: never leased). The resubmitted task
    /// leases above it, so a result carrying it or an older epoch is stale.
    pub epoch: u64,
    /// Leases granted before the crash.
    pub leases: u32,
    /// The input it was submitted with (resubmitted as is, not mapped again).
    pub input: Value,
    /// The leases (epoch, agent) with no end in the journal: attempts that were running
    /// when the process died. They are the runtime's interruption, not the agent's
    /// failure: the engine journals each `attempt_interrupted` and gives up to
    /// [`MAX_REFUNDED_INTERRUPTIONS`] of them per task back to the attempt budget.
    pub interrupted: Vec<(u64, String)>,
    /// Interrupted attempts already given back at earlier resumes (`attempt_interrupted`
    /// records with `refunded`).
    pub refunded: u32,
    /// Its effect ledger, folded from its `effect_started` and `effect_done` records
    /// (of every epoch, stale ones included): handed to the resubmitted task.
    pub effects: Vec<EffectEntry>,
}

/// How many attempts of one task cut short by the process's own end (a crash, a kill)
/// are given back to its attempt budget, over all its resumes: an attempt interrupted
/// beyond these counts as spent, so a task whose attempts crash the process ends after
/// a bounded number of restarts.
pub const MAX_REFUNDED_INTERRUPTIONS: u32 = 3;

/// How far one task step (a step, or a branch of a join) got in the current visit.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StepProgress {
    /// Entered; no task submitted for it yet: run it.
    Entered,
    /// Its task was submitted (maybe leased) without an accepted result: resubmit it
    /// with the same id and `min_epoch = epoch`.
    InFlight(PendingTask),
    /// A result was accepted but the step's completion was not journaled: the output
    /// comes from the journal; the task is not run again.
    Accepted {
        /// The task.
        task: Uuid,
        /// The agent whose result was accepted.
        agent: String,
        /// Its lease epoch.
        epoch: u64,
        /// The accepted output (the journal record's, shared).
        output: Arc<Value>,
        /// Leases granted.
        leases: u32,
    },
    /// The task escalated (its budget is spent) but the step's failure was not
    /// journaled: the step fails with this reason.
    Escalated {
        /// The task.
        task: Uuid,
        /// Why.
        reason: String,
        /// Leases granted.
        leases: u32,
    },
    /// `step_completed` is journaled: the output is in [`RecoveredRun::steps`].
    Completed,
    /// `step_failed` is journaled.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A human decision found in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateDecision {
    /// Approved or rejected.
    pub approved: bool,
    /// Why.
    pub reason: String,
}

/// Where a run is: the step it entered last and how far that visit got.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Position {
    /// The step (a task step, a parallel join, a gate or a terminal).
    pub step: String,
    /// Its visit number.
    pub visit: u32,
    /// The task steps of this visit, by name: the step itself, or the branches of a join
    /// entered so far (a branch absent here was not entered yet).
    pub tasks: BTreeMap<String, StepProgress>,
    /// Whether `gate_waiting` is journaled for this visit (a gate step).
    pub gate_waiting: bool,
    /// The decision, if `gate_decided` is journaled for this visit.
    pub decision: Option<GateDecision>,
}

/// One run's state, rebuilt from the journal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecoveredRun {
    /// Run id.
    pub run: Uuid,
    /// Workflow name.
    pub workflow: String,
    /// The workflow file, as recorded at the start.
    pub file: String,
    /// The run input.
    pub input: Value,
    /// Step records as the engine holds them: `{output, attempts, error, agent}`.
    pub steps: serde_json::Map<String, Value>,
    /// Visits per step.
    pub visits: BTreeMap<String, u32>,
    /// Where it is; `None` when no step was entered yet.
    pub at: Option<Position>,
    /// The step it enters first when it has entered none yet: the failed step a retry
    /// starts at (its `retry_started` record); `None`: the workflow's start.
    pub start: Option<String>,
    /// `completed` or `failed` once `run_ended` is journaled; `None` for an unfinished run.
    pub ended: Option<String>,
    /// When the run started (Unix ms, the `run_started` record's stamp).
    pub started_ms: u64,
    /// The task step visits that ended before the crash, in order (a resumed run's
    /// outcome starts from these, so it covers the whole run).
    pub summaries: Vec<StepSummary>,
}

impl RecoveredRun {
    /// The gate the run waits at for a decision that is not journaled yet, if any.
    pub fn waiting_at(&self) -> Option<&str> {
        match &self.at {
            Some(p) if self.ended.is_none() && p.gate_waiting && p.decision.is_none() => {
                Some(&p.step)
            }
            _ => None,
        }
    }

    /// The tasks it had in flight (resubmitted with the same ids when it resumes).
    pub fn in_flight(&self) -> Vec<Uuid> {
        self.at
            .iter()
            .flat_map(|p| p.tasks.values())
            .filter_map(|s| match s {
                StepProgress::InFlight(p) => Some(p.task),
                _ => None,
            })
            .collect()
    }
}

/// What the journal says about one task.
#[derive(Debug, Default, Clone)]
struct TaskFacts {
    input: Arc<Value>,
    capability: String,
    submitted_ms: u64,
    epoch: u64,
    leases: u32,
    /// Leases granted (epoch -> agent) with no end journaled yet.
    open: BTreeMap<u64, String>,
    /// `attempt_interrupted` records with `refunded`.
    refunded: u32,
    effects: Vec<EffectEntry>,
    stale: u32,
    accepted: Option<(String, u64, Arc<Value>)>,
    escalated: Option<String>,
    failures: Vec<AttemptFailure>,
}

impl TaskFacts {
    /// The summary of the step visit whose task this is, ended at `ended_ms`.
    fn summary(&self, step: &str, visit: u32, outcome: &str, ended_ms: u64) -> StepSummary {
        StepSummary {
            step: step.into(),
            visit,
            capability: self.capability.clone(),
            agent: self.accepted.as_ref().map(|a| a.0.clone()),
            attempts: self.leases,
            reassignments: self.leases.saturating_sub(1),
            stale_rejected: self.stale,
            outcome: outcome.into(),
            // A step whose task these records never submitted (a retry's carried step)
            // took no time here; its task's own run holds its duration.
            duration_ms: match self.capability.is_empty() {
                true => 0,
                false => ended_ms.saturating_sub(self.submitted_ms),
            },
            // What it spent before the crash is in the run's count (read at resume).
            usage: Default::default(),
            verdict: self
                .accepted
                .as_ref()
                .map(|a| crate::outcome::verdict_of(&a.2))
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug)]
struct Slot {
    task: Option<Uuid>,
    done: Option<StepProgress>,
}

#[derive(Debug)]
struct Building {
    run: RecoveredRun,
    slots: BTreeMap<String, Slot>,
    /// The last run event was a `step_entered` (a following one is a branch).
    just_entered: bool,
}

/// Every workflow run in the journal, finished or not, in the order they started.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Journal, MemoryJournal};
/// use muster_workflow::recovery;
/// use serde_json::json;
///
/// let j = MemoryJournal::default();
/// let run = uuid::Uuid::now_v7();
/// j.append(0, Event::RunStarted { run, workflow: "w".into(), file: "w.toml".into(), input: json!({}) });
/// j.append(1, Event::StepEntered { run, step: "ask".into(), visit: 1 });
/// j.append(2, Event::GateWaiting { run, gate: "ask".into(), question: "ship?".into() });
/// let runs = recovery::runs(&j.read_after(0));
/// assert_eq!(runs[0].waiting_at(), Some("ask"));
/// ```
pub fn runs(records: &[Record]) -> Vec<RecoveredRun> {
    let mut order: Vec<Uuid> = Vec::new();
    let mut by: HashMap<Uuid, Building> = HashMap::new();
    let mut facts: HashMap<Uuid, TaskFacts> = HashMap::new();
    for r in records {
        match &r.event {
            Event::RunStarted {
                run,
                workflow,
                file,
                input,
            } => {
                if !by.contains_key(run) {
                    order.push(*run);
                }
                by.insert(
                    *run,
                    Building {
                        run: RecoveredRun {
                            run: *run,
                            workflow: workflow.clone(),
                            file: file.clone(),
                            input: input.clone(),
                            steps: serde_json::Map::new(),
                            visits: BTreeMap::new(),
                            at: None,
                            start: None,
                            ended: None,
                            started_ms: r.at_ms,
                            summaries: Vec::new(),
                        },
                        slots: BTreeMap::new(),
                        just_entered: false,
                    },
                );
            }
            Event::RetryStarted { run, step, .. } => {
                if let Some(b) = by.get_mut(run) {
                    b.run.start = Some(step.clone());
                }
                continue;
            }
            Event::StepEntered { run, step, visit } => {
                let Some(b) = by.get_mut(run) else { continue };
                b.run.visits.insert(step.clone(), *visit);
                let branch = b.just_entered && b.run.at.is_some();
                if !branch {
                    b.slots.clear();
                    b.run.at = Some(Position {
                        step: step.clone(),
                        visit: *visit,
                        tasks: BTreeMap::new(),
                        gate_waiting: false,
                        decision: None,
                    });
                    // A join's own entry is not a task slot; a task step's is. Which one
                    // it is shows by what follows; `finish` drops the join's slot.
                }
                b.slots.insert(
                    step.clone(),
                    Slot {
                        task: None,
                        done: None,
                    },
                );
                b.just_entered = true;
                continue;
            }
            Event::TaskSubmitted {
                task,
                capability,
                correlation,
                sender,
                input,
                ..
            } => {
                let f = facts.entry(*task).or_default();
                if f.capability.is_empty() {
                    // The first submission; a resumed task is submitted again.
                    f.capability = capability.to_string();
                    f.submitted_ms = r.at_ms;
                }
                f.input = input.clone();
                let Some(b) = by.get_mut(correlation) else {
                    continue;
                };
                b.just_entered = false;
                let prefix = format!("{}/", b.run.workflow);
                if let Some(step) = sender.strip_prefix(&prefix)
                    && let Some(slot) = b.slots.get_mut(step)
                {
                    slot.task = Some(*task);
                }
                continue;
            }
            Event::LeaseGranted {
                task, epoch, agent, ..
            } => {
                let f = facts.entry(*task).or_default();
                f.epoch = f.epoch.max(*epoch);
                f.leases += 1;
                f.open.insert(*epoch, agent.to_string());
            }
            Event::AttemptFailed {
                task,
                agent,
                epoch,
                reason,
                detail,
            } => {
                let f = facts.entry(*task).or_default();
                f.open.remove(epoch);
                f.failures.push(AttemptFailure {
                    agent: agent.to_string(),
                    reason: reason.clone(),
                    detail: detail.clone(),
                });
            }
            Event::AttemptInterrupted {
                task,
                epoch,
                refunded,
                ..
            } => {
                let f = facts.entry(*task).or_default();
                f.open.remove(epoch);
                f.refunded += u32::from(*refunded);
            }
            Event::EffectStarted { task, .. } | Event::EffectDone { task, .. } => {
                let f = facts.entry(*task).or_default();
                EffectEntry::fold(&mut f.effects, &r.event);
            }
            Event::ResultStale { task, epoch, .. } => {
                let f = facts.entry(*task).or_default();
                f.open.remove(epoch);
                f.stale += 1;
            }
            Event::ResultAccepted {
                task,
                agent,
                epoch,
                output,
            } => {
                let f = facts.entry(*task).or_default();
                f.open.remove(epoch);
                if f.accepted.is_none() {
                    f.accepted = Some((agent.to_string(), *epoch, output.clone()));
                }
            }
            Event::TaskReused {
                task,
                original,
                output,
            } => {
                // A reused result was accepted (by the original task's owner): the step
                // takes it like its own.
                let f = facts.entry(*task).or_default();
                if f.accepted.is_none() {
                    f.accepted = Some((format!("reused:{original}"), 0, output.clone()));
                }
            }
            Event::TaskEscalated { task, reason, .. } => {
                facts.entry(*task).or_default().escalated = Some(reason.clone());
            }
            Event::StepCompleted {
                run,
                step,
                task,
                output,
            } => {
                let f = facts.get(task).cloned().unwrap_or_default();
                let agent = f.accepted.as_ref().map(|a| a.0.clone());
                if let Some(b) = by.get_mut(run) {
                    let visit = b.run.visits.get(step).copied().unwrap_or(1);
                    b.run
                        .summaries
                        .push(f.summary(step, visit, "completed", r.at_ms));
                    b.run.steps.insert(
                        step.clone(),
                        StepRecord::completed(output.clone(), f.leases, agent, None).to_value(),
                    );
                    if let Some(slot) = b.slots.get_mut(step) {
                        slot.task = Some(*task);
                        slot.done = Some(StepProgress::Completed);
                    }
                }
            }
            Event::StepFailed {
                run,
                step,
                task,
                reason,
            } => {
                let (rec, summary) = match task {
                    Some(t) => {
                        let f = facts.get(t).cloned().unwrap_or_default();
                        let rec = StepRecord::failed(f.leases, reason.clone(), f.failures.clone());
                        (rec, Some(f))
                    }
                    None => (StepRecord::refused(reason.clone()), None),
                };
                let rec = rec.to_value();
                if let Some(b) = by.get_mut(run) {
                    if let Some(f) = summary {
                        let visit = b.run.visits.get(step).copied().unwrap_or(1);
                        let outcome = if f.escalated.is_some() {
                            "escalated"
                        } else {
                            "cancelled"
                        };
                        b.run
                            .summaries
                            .push(f.summary(step, visit, outcome, r.at_ms));
                    }
                    b.run.steps.insert(step.clone(), rec);
                    if let Some(slot) = b.slots.get_mut(step) {
                        slot.task = *task;
                        slot.done = Some(StepProgress::Failed {
                            reason: reason.clone(),
                        });
                    }
                }
            }
            Event::GateWaiting { run, gate, .. } => {
                if let Some(b) = by.get_mut(run)
                    && let Some(p) = b.run.at.as_mut().filter(|p| &p.step == gate)
                {
                    p.gate_waiting = true;
                    b.slots.remove(gate);
                }
            }
            Event::GateDecided {
                run,
                gate,
                approved,
                reason,
            } => {
                if let Some(b) = by.get_mut(run)
                    && let Some(p) = b.run.at.as_mut().filter(|p| &p.step == gate)
                {
                    if p.decision.is_none() {
                        p.decision = Some(GateDecision {
                            approved: *approved,
                            reason: reason.clone(),
                        });
                    }
                    b.slots.remove(gate);
                }
            }
            Event::RunEnded { run, status, .. } => {
                if let Some(b) = by.get_mut(run) {
                    b.run.ended = Some(status.clone());
                }
            }
            _ => continue,
        }
        // Any run event other than `step_entered` / `task_submitted` ends a run of entries.
        if let Some(run) = run_of(&r.event)
            && let Some(b) = by.get_mut(&run)
        {
            b.just_entered = false;
        }
    }
    order
        .into_iter()
        .filter_map(|id| by.remove(&id))
        .map(|b| finish(b, &facts))
        .collect()
}

/// The runs that have not ended, in the order they started: what `muster resume` finishes.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Journal, MemoryJournal};
/// use muster_workflow::recovery;
/// use serde_json::json;
///
/// let j = MemoryJournal::default();
/// let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
/// for run in [a, b] {
///     j.append(0, Event::RunStarted { run, workflow: "w".into(), file: "w.toml".into(), input: json!({}) });
/// }
/// j.append(1, Event::RunEnded { run: a, status: "completed".into(), step: "done".into(), reason: None });
/// let open = recovery::recover(&j.read_after(0));
/// assert_eq!(open.len(), 1);
/// assert_eq!(open[0].run, b);
/// ```
pub fn recover(records: &[Record]) -> Vec<RecoveredRun> {
    runs(records)
        .into_iter()
        .filter(|r| r.ended.is_none())
        .collect()
}

fn run_of(e: &Event) -> Option<Uuid> {
    match e {
        Event::StepCompleted { run, .. }
        | Event::StepFailed { run, .. }
        | Event::GateWaiting { run, .. }
        | Event::GateDecided { run, .. }
        | Event::RunEnded { run, .. } => Some(*run),
        _ => None,
    }
}

fn finish(b: Building, facts: &HashMap<Uuid, TaskFacts>) -> RecoveredRun {
    let Building {
        mut run, mut slots, ..
    } = b;
    if let Some(p) = run.at.as_mut() {
        // A join's own slot: it has branches after it and never a task of its own.
        if slots.len() > 1
            && let Some(s) = slots.get(&p.step)
            && s.task.is_none()
            && s.done.is_none()
        {
            slots.remove(&p.step);
        }
        if p.gate_waiting || p.decision.is_some() {
            slots.remove(&p.step);
        }
        for (name, slot) in slots {
            let progress = match (slot.done, slot.task) {
                (Some(done), _) => done,
                (None, None) => StepProgress::Entered,
                (None, Some(task)) => {
                    let f = facts.get(&task).cloned().unwrap_or_default();
                    match (f.accepted, f.escalated) {
                        (Some((agent, epoch, output)), _) => StepProgress::Accepted {
                            task,
                            agent,
                            epoch,
                            output,
                            leases: f.leases,
                        },
                        (None, Some(reason)) => StepProgress::Escalated {
                            task,
                            reason,
                            leases: f.leases,
                        },
                        (None, None) => StepProgress::InFlight(PendingTask {
                            task,
                            epoch: f.epoch,
                            leases: f.leases,
                            input: Arc::unwrap_or_clone(f.input),
                            interrupted: f.open.into_iter().collect(),
                            refunded: f.refunded,
                            effects: f.effects,
                        }),
                    }
                }
            };
            p.tasks.insert(name, progress);
        }
    }
    run
}
