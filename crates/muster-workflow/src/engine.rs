//! The run engine: a workflow run is a state machine driven by delegation outcomes.
//!
//! ```text
//!  enter step ──task──▶ delegate ──completed──▶ next: first rule that holds and whose
//!      ▲                   │                          max_visits is not reached
//!      │                   └─escalated──▶ on_exhausted step (a gate) or the run fails
//!      │       ──parallel─▶ delegate every branch at once; join waits for all;
//!      │                   a failed non-optional branch takes its on_exhausted route
//!      │       ──gate─────▶ wait for approve / reject
//!      └────────────────── terminal: done (completed) or fail (failed)
//! ```
//!
//! Every step's task carries the run id as correlation id and the envelope of the lease
//! that produced the previous output as causation id. The run's state (inputs, step
//! outputs, visits, where it is) is journaled as it changes, so it can be inspected and
//! rebuilt.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::definition::{Next, Step, TaskStep, Workflow};
use super::gates::{ApproveError, Decision, Gates};
use super::outcome::{
    AttemptFailure, RunOutcome, RunStatus, StepEvent, StepRecord, StepSummary, verdict_of,
};
use super::recovery::{
    MAX_REFUNDED_INTERRUPTIONS, PendingTask, Position, RecoveredRun, StepProgress,
};
use super::retry::RetryPlan;
use muster_core::conditions::Condition;
use muster_core::delegation::{Backoff, LeaseOutcome, SubmitError, Task, TaskRecord, TaskStatus};
use muster_core::journal::{Event, Unwritten, UsageTotals};
use muster_core::messaging::ContractError;
use muster_core::messaging::contract::SchemaError;
use muster_core::runtime::Muster;

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The run input breaks the workflow's input schema.
    #[error("run input refused: {0}")]
    InvalidInput(ContractError),
    /// The workflow's input schema is unknown.
    #[error("{0}")]
    Schema(#[from] SchemaError),
    /// A recovered run cannot be resumed with this workflow.
    #[error("run {run} cannot be resumed: {reason}")]
    NotResumable {
        /// Run id.
        run: Uuid,
        /// Why.
        reason: String,
    },
}

/// Options of one run.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Receives step events as they happen.
    pub progress: Option<mpsc::UnboundedSender<StepEvent>>,
    /// Return `Waiting` at a gate instead of waiting for the decision.
    pub stop_at_gates: bool,
    /// A fixed run id.
    pub run_id: Option<Uuid>,
}

struct RunState<'a> {
    muster: &'a Muster,
    wf: &'a Workflow,
    id: Uuid,
    run: Value,
    /// `steps.<name>` records, always a JSON object: mappings and conditions read it in
    /// place (no copy per step).
    steps: Value,
    /// The `output` of each `steps.<name>` record this process made, as the one value its
    /// task's record and journal records hold: a mapping that is exactly
    /// `steps.<name>.output` hands it to the next task shared, not copied.
    outputs: HashMap<String, Arc<Value>>,
    visits: HashMap<String, u32>,
    summaries: Vec<StepSummary>,
    causation: Option<Uuid>,
    opts: RunOptions,
    /// The step whose failure the run last saw, and why (cleared by a step that
    /// completes): what a run that ends at a fail terminal reports.
    last_failure: Option<(String, String)>,
    /// The model tokens the run's tasks have reported so far, summed as each step ends
    /// (what `[budget] tokens` is checked against; a resumed run starts from the journal's
    /// count).
    usage: UsageTotals,
    /// The sequence number of the last record this run journaled: what it waits for
    /// before it acts or reports. A task step's own end (`step_completed`,
    /// `step_failed`) comes after its task's terminal record, and the journal writes in
    /// order, so this covers the tasks too, and never another run's later records.
    last: AtomicU64,
}

/// A gate a run waits at, removed from the table when the wait ends or is dropped.
struct Parked<'a> {
    gates: &'a Gates,
    run: Uuid,
    gate: &'a str,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.gates.forget(self.run, self.gate);
    }
}

enum TaskEnd {
    Done,
    Failed(String),
}

/// How a task step ended, its record for `steps.<name>` (if any) and its summary.
type StepResult = (TaskEnd, Option<(String, StepRecord)>, Option<StepSummary>);

impl RunState<'_> {
    /// A step's verdict in words, for whoever follows the run's progress; nothing when
    /// nobody does (a node, the simulator, the benchmark): it is presentation, and a
    /// workflow step's hop should not pay for it.
    fn verdict(&self, output: &Value) -> String {
        match self.opts.progress {
            Some(_) => verdict_of(output),
            None => String::new(),
        }
    }

    /// Reports a progress event, once everything the run journaled so far is written (a
    /// line the user reads must never claim what a crash could lose).
    async fn emit(&self, e: StepEvent) {
        if let Some(p) = &self.opts.progress
            && self.written().await.is_ok()
        {
            let _ = p.send(e);
        }
    }

    /// Waits until everything this run journaled so far is written: before the run acts on it
    /// (starts the next step, follows a decision) or reports it (returns its outcome).
    async fn written(&self) -> Result<(), Unwritten> {
        let last = self.last.load(Ordering::Acquire);
        match self.muster.recorder().until_written(last) {
            None => Ok(()),
            Some(w) => w.await,
        }
    }

    fn journal(&self, e: Event) {
        let seq = self.muster.recorder().record(e);
        self.last.fetch_max(seq, Ordering::AcqRel);
    }

    /// A task step that could not even submit its task (its input mapping, scope or task
    /// was refused): journaled `step_failed`, recorded as refused.
    fn refused(&self, name: &str, reason: String) -> StepResult {
        self.journal(Event::StepFailed {
            run: self.id,
            step: name.into(),
            task: None,
            reason: reason.clone(),
        });
        (
            TaskEnd::Failed(reason.clone()),
            Some((name.into(), StepRecord::refused(reason))),
            None,
        )
    }

    /// Runs one task step (or branch) to its end and records it in `steps`. A task
    /// recovered in flight (`pending`) is resubmitted with its id and input, leasing above
    /// its highest journaled epoch.
    async fn run_task(
        &self,
        name: &str,
        ts: &TaskStep,
        pending: Option<&PendingTask>,
    ) -> StepResult {
        let steps = &self.steps;
        let input: Arc<Value> = match (&ts.input, pending) {
            (_, Some(p)) => Arc::new(p.input.clone()),
            (Some(map), None) => match self.shared_output(map) {
                Some(o) => o,
                None => match map.eval_json(&[("run", &self.run), ("steps", steps)]) {
                    Ok(v) => Arc::new(v),
                    Err(e) => {
                        let reason = format!("input mapping failed: {e}");
                        return self.refused(name, reason);
                    }
                },
            },
            (None, None) => Arc::new(self.run["input"].clone()),
        };
        let backoff = ts
            .backoff
            .map(|b| Backoff {
                initial: b,
                max: b,
                factor: 1.0,
            })
            .unwrap_or_default();
        let mut task = Task::new(ts.capability.clone(), input)
            .timeout(ts.timeout.unwrap_or(Duration::from_secs(60)))
            .attempts(ts.attempts.unwrap_or(1))
            .backoff(backoff)
            .correlation(self.id)
            .sender(format!("{}/{name}", self.wf.name));
        // The run waits for the journal itself before it acts on or reports the step's
        // end (`written`), which covers the task's own records too.
        task.early_outcome = true;
        if let Some(c) = self.causation {
            task = task.causation(c);
        }
        if let Some(p) = pending {
            task.id = Some(p.task);
            // Leases granted in the last batch before a crash may not have reached the
            // journal (relaxed durability); a task never holds more leases than its attempt
            // budget, so leasing above `highest journaled + budget` never hands an agent an
            // epoch it may already have seen.
            task.min_epoch = p.epoch + u64::from(ts.attempts.unwrap_or(1));
            // Attempts journaled before the crash count against the budget, except those
            // the crash itself cut short (a bounded number of them per task, so that an
            // attempt that kills the process cannot loop for ever): journaled interrupted.
            let mut refunds = 0;
            for (epoch, agent) in &p.interrupted {
                let refunded = p.refunded + refunds < MAX_REFUNDED_INTERRUPTIONS;
                refunds += u32::from(refunded);
                self.journal(Event::AttemptInterrupted {
                    task: p.task,
                    agent: Arc::from(agent.as_str()),
                    epoch: *epoch,
                    refunded,
                });
            }
            task.spent = p.leases.saturating_sub(p.refunded + refunds);
            // What its attempts did to the outside world before the crash: done effects
            // are not run again, started ones are reported of unknown outcome.
            task.effects = p.effects.clone();
        }
        if let Some(g) = ts.on_exhausted.as_deref().filter(|g| *g != "fail") {
            task = task.escalate_to(g);
        }
        task.on_conflict = ts.on_conflict;
        if let Some(s) = &ts.scope {
            let rendered =
                s.render(&[("run", &self.run), ("steps", steps), ("input", &task.input)]);
            match rendered {
                Ok(scope) => task = task.scope(scope),
                Err(e) => {
                    return self.refused(name, e.to_string());
                }
            }
        }
        let visit = self.visits.get(name).copied().unwrap_or(1);
        let mut outcome: TaskRecord = match self.muster.delegate(task).await {
            Ok(o) => o,
            Err(SubmitError::InvalidInput { source, .. }) => {
                let reason = format!(
                    "the step's input does not fit capability `{}`: {source}",
                    ts.capability
                );
                self.journal(Event::StepFailed {
                    run: self.id,
                    step: name.into(),
                    task: None,
                    reason: reason.clone(),
                });
                let summary = StepSummary {
                    step: name.into(),
                    visit,
                    capability: ts.capability.clone(),
                    agent: None,
                    attempts: 0,
                    reassignments: 0,
                    stale_rejected: 0,
                    outcome: "refused".into(),
                    duration_ms: 0,
                    usage: UsageTotals::default(),
                    verdict: String::new(),
                };
                return (
                    TaskEnd::Failed(reason.clone()),
                    Some((name.into(), StepRecord::refused(reason))),
                    Some(summary),
                );
            }
            Err(e) => {
                let reason = e.to_string();
                return self.refused(name, reason);
            }
        };
        let summary = StepSummary {
            step: name.into(),
            visit,
            capability: ts.capability.clone(),
            agent: outcome.owner().map(str::to_string),
            attempts: outcome.attempts(),
            reassignments: outcome.reassignments(),
            stale_rejected: outcome.stale_rejected,
            outcome: match outcome.status {
                TaskStatus::Completed => "completed",
                TaskStatus::Escalated => "escalated",
                TaskStatus::Cancelled => "cancelled",
                _ => "pending",
            }
            .into(),
            duration_ms: outcome.duration_ms().unwrap_or(0),
            usage: outcome.usage.clone(),
            verdict: String::new(),
        };
        if outcome.is_completed() {
            let output = outcome.output.take().unwrap_or_default();
            let summary = StepSummary {
                verdict: self.verdict(&output),
                ..summary
            };
            self.journal(Event::StepCompleted {
                run: self.id,
                step: name.into(),
                task: outcome.id,
                output: output.clone(),
            });
            let rec = StepRecord::completed(
                output,
                outcome.attempts(),
                outcome.owner().map(str::to_string),
                outcome.accepted_envelope(),
            );
            (TaskEnd::Done, Some((name.into(), rec)), Some(summary))
        } else {
            let reason = outcome
                .escalation
                .as_ref()
                .map(|e| e.reason.clone())
                .unwrap_or_else(|| format!("task {:?}", outcome.status));
            self.journal(Event::StepFailed {
                run: self.id,
                step: name.into(),
                task: Some(outcome.id),
                reason: reason.clone(),
            });
            let failures: Vec<AttemptFailure> = outcome
                .leases
                .iter()
                .filter_map(|l| match &l.outcome {
                    LeaseOutcome::Failed { failure } => Some(AttemptFailure {
                        agent: l.agent.to_string(),
                        reason: failure.reason().into(),
                        detail: failure.detail(),
                    }),
                    _ => None,
                })
                .collect();
            let rec = StepRecord::failed(outcome.attempts(), reason.clone(), failures);
            (
                TaskEnd::Failed(reason),
                Some((name.into(), rec)),
                Some(summary),
            )
        }
    }

    /// Finishes a task step recovered from the journal: runs it if it has no task yet,
    /// resubmits a task in flight, takes an accepted result from the journal (the task is
    /// not run again), or replays a journaled end.
    async fn resume_task(&self, name: &str, ts: &TaskStep, progress: &StepProgress) -> StepResult {
        let visit = self.visits.get(name).copied().unwrap_or(1);
        let summary = |agent: Option<String>, attempts: u32, outcome: &str| StepSummary {
            step: name.into(),
            visit,
            capability: ts.capability.clone(),
            agent,
            attempts,
            reassignments: attempts.saturating_sub(1),
            stale_rejected: 0,
            outcome: outcome.into(),
            duration_ms: 0,
            usage: UsageTotals::default(),
            verdict: String::new(),
        };
        match progress {
            StepProgress::Entered => self.run_task(name, ts, None).await,
            StepProgress::InFlight(p) => self.run_task(name, ts, Some(p)).await,
            StepProgress::Accepted {
                task,
                agent,
                output,
                leases,
                ..
            } => {
                self.journal(Event::StepCompleted {
                    run: self.id,
                    step: name.into(),
                    task: *task,
                    output: output.clone(),
                });
                let rec = StepRecord::completed(output.clone(), *leases, Some(agent.clone()), None);
                (
                    TaskEnd::Done,
                    Some((name.into(), rec)),
                    Some(StepSummary {
                        verdict: self.verdict(output),
                        ..summary(Some(agent.clone()), *leases, "completed")
                    }),
                )
            }
            StepProgress::Escalated {
                task,
                reason,
                leases,
            } => {
                self.journal(Event::StepFailed {
                    run: self.id,
                    step: name.into(),
                    task: Some(*task),
                    reason: reason.clone(),
                });
                let rec = StepRecord::failed(*leases, reason.clone(), Vec::new());
                (
                    TaskEnd::Failed(reason.clone()),
                    Some((name.into(), rec)),
                    Some(summary(None, *leases, "escalated")),
                )
            }
            StepProgress::Completed => (TaskEnd::Done, None, None),
            StepProgress::Failed { reason } => (TaskEnd::Failed(reason.clone()), None, None),
        }
    }

    /// Runs a task step fresh, or finishes it from its recovered progress.
    async fn run_or_resume(
        &self,
        name: &str,
        ts: &TaskStep,
        progress: Option<&StepProgress>,
    ) -> StepResult {
        match progress {
            Some(p) => self.resume_task(name, ts, p).await,
            None => self.run_task(name, ts, None).await,
        }
    }

    async fn record(&mut self, r: StepResult) -> TaskEnd {
        let (end, rec, summary) = r;
        if let Some((name, rec)) = rec {
            // What the next step does is caused by the envelope that carried this one.
            if let Some(e) = rec.envelope {
                self.causation = Some(e);
            }
            self.last_failure = rec.error.as_ref().map(|e| (name.clone(), e.reason.clone()));
            self.outputs.insert(name.clone(), rec.output.clone());
            if let Value::Object(steps) = &mut self.steps {
                steps.insert(name, rec.into_value());
            }
        }
        if let Some(s) = summary {
            self.usage.merge(&s.usage);
            self.emit(StepEvent::Finished(s.clone())).await;
            self.summaries.push(s);
        }
        end
    }

    /// The next step by the rules, or `Err` when none applies.
    /// The step a transition leads to, and the `max_visits` of the rule taken (if any).
    fn next(&self, from: &str, next: &Option<Next>) -> Result<(String, Option<u32>), String> {
        match next {
            None => Err(format!("step `{from}` has no next step")),
            Some(Next::Step(s)) => Ok((s.clone(), None)),
            Some(Next::Rules(rules)) => {
                let steps = &self.steps;
                for r in rules {
                    let holds = match &r.when {
                        None => true,
                        Some(c) => c
                            .eval_bool(&[("run", &self.run), ("steps", steps)])
                            .map_err(|e| format!("transition from `{from}`: {e}"))?,
                    };
                    let within = r
                        .max_visits
                        .is_none_or(|m| self.visits.get(&r.goto).copied().unwrap_or(0) < m);
                    if holds && within {
                        return Ok((r.goto.clone(), r.max_visits));
                    }
                }
                Err(format!("no transition from `{from}` applies"))
            }
        }
    }

    /// The output a mapping reads when it is exactly `steps.<name>.output` of a step this
    /// process recorded: the shared value, where evaluating would copy it.
    fn shared_output(&self, map: &Condition) -> Option<Arc<Value>> {
        match map.plain_path()? {
            [steps, name, output] if &**steps == "steps" && &**output == "output" => {
                self.outputs.get(&**name).cloned()
            }
            _ => None,
        }
    }

    fn exhausted_route(&self, ts: &TaskStep) -> Option<String> {
        ts.on_exhausted.clone().filter(|s| s != "fail")
    }
}

/// Workflows on a runtime: run one, resume one rebuilt from the journal, decide a gate.
///
/// The engine is a layer above the runtime: it uses only the public [`Muster`] handle
/// (delegation, the journal, the schema store) and keeps its gate table as a runtime
/// extension. Bring the trait into scope (`use muster_workflow::WorkflowExt;`) to call these on a
/// [`Muster`].
// The engine's futures run on the runtime's own thread (the runtime is single-threaded by
// design), so they carry no `Send` bound for callers to rely on.
#[allow(async_fn_in_trait)]
pub trait WorkflowExt {
    /// Runs a workflow to its end (waiting at gates for [`WorkflowExt::approve`]).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(muster: muster_core::Muster) -> Result<(), Box<dyn std::error::Error>> {
    /// use muster_workflow::{Workflow, WorkflowExt};
    /// use std::sync::Arc;
    ///
    /// let wf = Workflow::load("examples/code-review/workflow.toml".as_ref(), &muster.schemas())
    ///     .map_err(|e| format!("{e:?}"))?;
    /// let outcome = muster.run_workflow(Arc::new(wf), serde_json::json!({"spec": "..."})).await?;
    /// println!("{:?}", outcome.status);
    /// # Ok(()) }
    /// ```
    async fn run_workflow(&self, wf: Arc<Workflow>, input: Value) -> Result<RunOutcome, RunError>;

    /// Runs a workflow with options (progress events, stopping at gates, a fixed id).
    async fn run_workflow_with(
        &self,
        wf: Arc<Workflow>,
        input: Value,
        opts: RunOptions,
    ) -> Result<RunOutcome, RunError>;

    /// Finishes a run rebuilt from the journal ([`muster_workflow::recovery::recover`]):
    /// from the step it was in, without entering that step again. A task in flight is
    /// resubmitted with the same id, leasing above the highest journaled epoch (so a late
    /// answer of the dead process's lease is fenced) and with the attempts it already used
    /// counted against its budget; a step with an accepted result takes it from the journal
    /// and is not run again; a gate with a journaled decision goes on by it. The outcome
    /// covers the whole run, the steps before the crash included. `opts.run_id` is ignored
    /// (the run keeps its id).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(muster: muster_core::Muster, wf: std::sync::Arc<muster_workflow::Workflow>)
    /// #     -> Result<(), Box<dyn std::error::Error>> {
    /// use muster_workflow::{engine::RunOptions, recovery, WorkflowExt};
    ///
    /// for run in recovery::recover(&muster.journal().read_after(0)) {
    ///     let outcome = muster.resume_run(wf.clone(), run, RunOptions::default()).await?;
    ///     println!("{:?}", outcome.status);
    /// }
    /// # Ok(()) }
    /// ```
    async fn resume_run(
        &self,
        wf: Arc<Workflow>,
        rec: RecoveredRun,
        opts: RunOptions,
    ) -> Result<RunOutcome, RunError>;

    /// Starts a new run that retries a failed one from its failed step
    /// ([`retry::plan`](crate::retry::plan) says which step and which completed steps it
    /// carries over): journals the new run's `run_started`, `retry_started` and a
    /// `step_completed` per carried step, and `run_retried` in the failed run's story,
    /// then runs it from that step like a resumed run. `opts.run_id` is the new run's id
    /// (a new one when `None`).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(muster: muster_core::Muster, wf: std::sync::Arc<muster_workflow::Workflow>,
    /// #     failed: uuid::Uuid) -> Result<(), Box<dyn std::error::Error>> {
    /// use muster_workflow::{engine::RunOptions, retry, WorkflowExt};
    ///
    /// let plan = retry::plan(&wf, &muster.journal().records_of(failed), failed)?;
    /// let outcome = muster.retry_run(wf, plan, RunOptions::default()).await?;
    /// println!("{:?}", outcome.status);
    /// # Ok(()) }
    /// ```
    async fn retry_run(
        &self,
        wf: Arc<Workflow>,
        plan: RetryPlan,
        opts: RunOptions,
    ) -> Result<RunOutcome, RunError>;

    /// Records a human decision at a gate where a run waits in this process (at most once).
    fn approve(&self, run: Uuid, gate: &str, decision: Decision) -> Result<(), ApproveError>;

    /// Whether a run waits at a gate in this process.
    fn is_waiting(&self, run: Uuid, gate: &str) -> bool;
}

impl WorkflowExt for Muster {
    async fn run_workflow(&self, wf: Arc<Workflow>, input: Value) -> Result<RunOutcome, RunError> {
        self.run_workflow_with(wf, input, RunOptions::default())
            .await
    }

    async fn run_workflow_with(
        &self,
        wf: Arc<Workflow>,
        input: Value,
        opts: RunOptions,
    ) -> Result<RunOutcome, RunError> {
        if !wf.input.is_empty() {
            self.schemas()
                .get(&wf.input)?
                .validate(&input)
                .map_err(RunError::InvalidInput)?;
        }
        let started = self.recorder().now_ms();
        let id = opts.run_id.unwrap_or_else(|| self.new_id());
        let file = wf.file.display().to_string();
        let started_written = self
            .recorder()
            .record_written(Event::RunStarted {
                run: id,
                workflow: wf.name.clone(),
                file: file.clone(),
                input: input.clone(),
            })
            .await;
        // Announced only once it is durable: a user who saw the run start finds it in the
        // journal after any crash (a journal that stopped first announces nothing).
        // The run's first record: what it waits for until it journals more.
        let first = started_written.as_ref().map_or(0, |seq| *seq);
        if let (Ok(_), Some(p)) = (started_written, &opts.progress) {
            let _ = p.send(StepEvent::Started {
                run: id,
                workflow: wf.name.clone(),
                file,
            });
        }
        let st = RunState {
            muster: self,
            wf: &wf,
            id,
            run: json!({"input": input, "id": id.to_string()}),
            steps: Value::Object(serde_json::Map::new()),
            outputs: HashMap::new(),
            visits: HashMap::new(),
            summaries: Vec::new(),
            causation: None,
            opts,
            last_failure: None,
            usage: UsageTotals::default(),
            last: AtomicU64::new(first),
        };
        Ok(drive(self, st, wf.start.clone(), None, started).await)
    }

    async fn resume_run(
        &self,
        wf: Arc<Workflow>,
        rec: RecoveredRun,
        opts: RunOptions,
    ) -> Result<RunOutcome, RunError> {
        if rec.workflow != wf.name {
            return Err(RunError::NotResumable {
                run: rec.run,
                reason: format!(
                    "it is a run of workflow `{}`, not of `{}`",
                    rec.workflow, wf.name
                ),
            });
        }
        if let Some(status) = &rec.ended {
            return Err(RunError::NotResumable {
                run: rec.run,
                reason: format!("it has already ended ({status})"),
            });
        }
        // The outcome covers the whole run: from its first start, with the step visits that
        // ended before the crash.
        let started = rec.started_ms;
        let st = RunState {
            muster: self,
            wf: &wf,
            id: rec.run,
            run: json!({"input": rec.input, "id": rec.run.to_string()}),
            steps: Value::Object(rec.steps),
            outputs: HashMap::new(),
            visits: rec.visits.into_iter().collect(),
            summaries: rec.summaries,
            causation: None,
            opts,
            last_failure: None,
            usage: spent_before(self, rec.run),
            // What it was rebuilt from was read back from the journal (a retry's records
            // were awaited): nothing of its own waits to be written yet.
            last: AtomicU64::new(0),
        };
        let current = match (&rec.at, &rec.start) {
            (Some(p), _) => p.step.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => wf.start.clone(),
        };
        Ok(drive(self, st, current, rec.at, started).await)
    }

    async fn retry_run(
        &self,
        wf: Arc<Workflow>,
        plan: RetryPlan,
        opts: RunOptions,
    ) -> Result<RunOutcome, RunError> {
        let id = opts.run_id.unwrap_or_else(|| self.new_id());
        if plan.workflow != wf.name {
            return Err(RunError::NotResumable {
                run: plan.from,
                reason: format!(
                    "it is a run of workflow `{}`, not of `{}`",
                    plan.workflow, wf.name
                ),
            });
        }
        // One group, one commit: after a crash the journal holds the retry whole (it
        // resumes as a retry, and the failed run says it was retried) or not at all (the
        // failed run may be retried again).
        let mut group = vec![
            Event::RunStarted {
                run: id,
                workflow: wf.name.clone(),
                file: wf.file.display().to_string(),
                input: plan.input.clone(),
            },
            Event::RetryStarted {
                run: id,
                from: plan.from,
                step: plan.step.clone(),
                carried: plan.carried.iter().map(|c| c.step.clone()).collect(),
            },
        ];
        group.extend(plan.carried.iter().map(|c| Event::StepCompleted {
            run: id,
            step: c.step.clone(),
            task: c.task,
            output: c.output.clone(),
        }));
        group.push(Event::RunRetried {
            run: plan.from,
            retry: id,
            step: plan.step.clone(),
        });
        let written = self.recorder().record_group_written(group).await;
        if let Err(e) = written {
            return Err(RunError::NotResumable {
                run: id,
                reason: format!("the journal stopped before the retry was written: {e}"),
            });
        }
        // The retry's state is what recovery rebuilds from its own records, exactly as a
        // node restarted now would rebuild it: one definition of a run's state, live or
        // after a crash. A carried step is a fact of the failed run; in the retry it
        // counts no attempt and no owner (the failed run's records keep those).
        let records = self.journal().records_of(id);
        let rec = crate::recovery::runs(&records)
            .into_iter()
            .find(|r| r.run == id)
            .ok_or_else(|| RunError::NotResumable {
                run: id,
                reason: "its records are not in the journal".into(),
            })?;
        self.resume_run(wf, rec, opts).await
    }

    fn approve(&self, run: Uuid, gate: &str, decision: Decision) -> Result<(), ApproveError> {
        self.extension::<Gates>().decide(run, gate, decision)
    }

    fn is_waiting(&self, run: Uuid, gate: &str) -> bool {
        self.extension::<Gates>().is_waiting(run, gate)
    }
}

/// What a recovered run's tasks spent before it was resumed, from the run's records in the
/// journal (read once, at resume, through the journal's run index; a live run keeps its
/// own count).
fn spent_before(muster: &Muster, run: Uuid) -> UsageTotals {
    let records = muster.journal().records_of(run);
    crate::inspect::usage(&records, crate::inspect::Scope::Correlation(run))
        .into_iter()
        .find(|l| l.agent == "*")
        .map(|l| l.totals)
        .unwrap_or_default()
}

/// The run loop, from `current`. With `resume`, the first step is the one the run was
/// in when it was recovered: it is not entered again, and its recorded progress is
/// finished rather than started over.
async fn drive(
    muster: &Muster,
    mut st: RunState<'_>,
    mut current: String,
    mut resume: Option<Position>,
    started: u64,
) -> RunOutcome {
    let wf = st.wf;
    let id = st.id;
    // The step the previous turn of the loop was at.
    let mut last: Option<String> = None;
    // The `max_visits` of the transition taken at the end of the previous turn.
    let mut bound: Option<u32> = None;
    let mut status = loop {
        let entered_bound = bound.take();
        // A run over its token budget goes no further (the tokens a server did not report
        // cannot be counted).
        if let Some(limit) = wf.token_budget {
            let spent = st.usage.total_tokens;
            if spent > limit {
                break RunStatus::Failed {
                    step: current.clone(),
                    reason: format!(
                        "token budget exceeded: the run spent {spent} model tokens, above its \
                         budget of {limit} ([budget] tokens)"
                    ),
                };
            }
        }
        let came_from = last.replace(current.clone());
        let Some(step) = wf.steps.get(&current) else {
            break RunStatus::Failed {
                step: current.clone(),
                reason: "no such step".into(),
            };
        };
        let here = resume.take();
        if here.is_none() {
            let visit = {
                let v = st.visits.entry(current.clone()).or_insert(0);
                *v += 1;
                *v
            };
            st.journal(Event::StepEntered {
                run: id,
                step: current.clone(),
                visit,
            });
            st.emit(StepEvent::Entered {
                step: current.clone(),
                visit,
                bound: entered_bound,
            })
            .await;
        }
        match step {
            Step::Task(ts) => {
                let progress = here.as_ref().and_then(|p| p.tasks.get(&current));
                let r = st.run_or_resume(&current, ts, progress).await;
                let end = st.record(r).await;
                // Where a completed step goes (a failed one goes where it is routed).
                let next = match &end {
                    TaskEnd::Done => Ok(st.next(&current, &ts.next)),
                    TaskEnd::Failed(reason) => Err(reason.clone()),
                };
                // The step's end is written before the run acts on it: before it starts
                // another step. A run that goes on to a terminal step acts on nothing
                // before its end, which waits for every record the run journaled: one
                // commit, not two.
                let ends = matches!(&next, Ok(Ok((n, _))) if matches!(wf.steps.get(n), Some(Step::Terminal { .. })));
                if !ends && let Err(e) = st.written().await {
                    break journal_stopped(&current, e);
                }
                match next {
                    Ok(Ok((n, b))) => {
                        current = n;
                        bound = b;
                    }
                    Ok(Err(reason)) => {
                        break RunStatus::Failed {
                            step: current.clone(),
                            reason,
                        };
                    }
                    Err(reason) => match st.exhausted_route(ts) {
                        Some(n) => current = n,
                        None => {
                            break RunStatus::Failed {
                                step: current.clone(),
                                reason,
                            };
                        }
                    },
                }
            }
            Step::Parallel {
                branches,
                optional,
                next,
            } => {
                // Branches recovered from this visit keep their progress; the others
                // (all of them for a fresh visit) are entered now, before any runs.
                let mut progress: HashMap<&str, &StepProgress> = HashMap::new();
                for b in branches {
                    match here.as_ref().and_then(|p| p.tasks.get(b)) {
                        Some(p) => {
                            progress.insert(b.as_str(), p);
                        }
                        None => {
                            *st.visits.entry(b.clone()).or_insert(0) += 1;
                            st.journal(Event::StepEntered {
                                run: id,
                                step: b.clone(),
                                visit: st.visits[b],
                            });
                        }
                    }
                }
                let runs = branches
                    .iter()
                    .filter_map(|b| wf.task(b).map(|ts| (b.clone(), ts)));
                let results = futures::future::join_all(runs.map(|(b, ts)| {
                    let st = &st;
                    let p = progress.get(b.as_str()).copied();
                    async move { (b.clone(), ts, st.run_or_resume(&b, ts, p).await) }
                }))
                .await;
                let mut failed = None;
                for (b, ts, r) in results {
                    if let TaskEnd::Failed(reason) = st.record(r).await
                        && !optional.contains(&b)
                        && failed.is_none()
                    {
                        failed = Some((b, ts, reason));
                    }
                }
                if let Err(e) = st.written().await {
                    break journal_stopped(&current, e);
                }
                match failed {
                    None => match st.next(&current, next) {
                        Ok((n, b)) => {
                            current = n;
                            bound = b;
                        }
                        Err(reason) => {
                            break RunStatus::Failed {
                                step: current.clone(),
                                reason,
                            };
                        }
                    },
                    Some((b, ts, reason)) => match st.exhausted_route(ts) {
                        Some(n) => current = n,
                        None => {
                            break RunStatus::Failed {
                                step: b,
                                reason: format!("branch failed the join: {reason}"),
                            };
                        }
                    },
                }
            }
            Step::Gate {
                question,
                on_approve,
                on_reject,
            } => {
                let (was_waiting, journaled) = here
                    .map(|p| (p.gate_waiting, p.decision))
                    .unwrap_or((false, None));
                let (approved, reason) = match journaled {
                    // Decided while no process waited (`muster approve`): already in
                    // the journal, so it is applied, not journaled again.
                    Some(d) => (d.approved, d.reason),
                    None => {
                        if !was_waiting {
                            st.journal(Event::GateWaiting {
                                run: id,
                                gate: current.clone(),
                                question: question.clone(),
                            });
                        }
                        st.emit(StepEvent::Waiting {
                            gate: current.clone(),
                            question: question.clone(),
                        })
                        .await;
                        // Whoever is asked to decide finds the gate in the journal.
                        if let Err(e) = st.written().await {
                            break journal_stopped(&current, e);
                        }
                        if st.opts.stop_at_gates {
                            break RunStatus::Waiting {
                                gate: current.clone(),
                                question: question.clone(),
                            };
                        }
                        let (tx, rx) = oneshot::channel();
                        let gates = muster.extension::<Gates>();
                        gates.wait(id, &current, tx);
                        // A run dropped while it waits (its caller went away) leaves no
                        // gate behind.
                        let parked = Parked {
                            gates: &gates,
                            run: id,
                            gate: &current,
                        };
                        let decision = rx.await.unwrap_or(Decision::Reject {
                            reason: "the runtime stopped".into(),
                        });
                        drop(parked);
                        let (approved, reason) = match &decision {
                            Decision::Approve { reason } => (true, reason.clone()),
                            Decision::Reject { reason } => (false, reason.clone()),
                        };
                        st.journal(Event::GateDecided {
                            run: id,
                            gate: current.clone(),
                            approved,
                            reason: reason.clone(),
                        });
                        (approved, reason)
                    }
                };
                if let Err(e) = st.written().await {
                    break journal_stopped(&current, e);
                }
                st.emit(StepEvent::Decided {
                    gate: current.clone(),
                    approved,
                })
                .await;
                let target = if approved { on_approve } else { on_reject };
                match target {
                    Some(n) => current = n.clone(),
                    None if approved => break RunStatus::Completed,
                    None => {
                        break RunStatus::Failed {
                            step: current.clone(),
                            reason: format!("rejected at the gate: {reason}"),
                        };
                    }
                }
            }
            Step::Terminal { success: true } => break RunStatus::Completed,
            Step::Terminal { success: false } => {
                // Say why: the step whose failure led here and its last error, not only
                // where the run ended.
                break match &st.last_failure {
                    Some((failed, why)) => RunStatus::Failed {
                        step: failed.clone(),
                        reason: format!(
                            "step `{failed}` failed: {why} (the run then reached fail terminal `{current}`)"
                        ),
                    },
                    None => RunStatus::Failed {
                        step: current.clone(),
                        reason: match &came_from {
                            Some(from) => {
                                format!("reached fail terminal `{current}` from step `{from}`")
                            }
                            None => format!("reached fail terminal `{current}`"),
                        },
                    },
                };
            }
        }
    };
    let (status_name, reason) = match &status {
        RunStatus::Completed => ("completed", None),
        RunStatus::Failed { reason, .. } => ("failed", Some(reason.clone())),
        RunStatus::Waiting { .. } => ("waiting", None),
    };
    if !matches!(status, RunStatus::Waiting { .. }) {
        st.journal(Event::RunEnded {
            run: id,
            status: status_name.into(),
            step: current.clone(),
            reason,
        });
        // The outcome goes back to the caller once the journal holds the run's end; if the
        // journal stopped, the caller's flush of it reports why.
        if let Err(e) = st.written().await {
            tracing::error!(run = %id, error = %e, "the run's end is not in the journal");
            // A run going to its terminal step did not wait for its last step's record
            // alone: a journal that stopped before writing it must not let the run be
            // reported completed, as the step's own wait would not have.
            if matches!(status, RunStatus::Completed) {
                status = journal_stopped(&current, e);
            }
        }
    }
    let mut owners: Vec<String> = st
        .summaries
        .iter()
        .filter_map(|s| s.agent.clone())
        .collect();
    owners.sort();
    owners.dedup();
    // The run is over: its outputs move out of the step records.
    let outputs = match std::mem::take(&mut st.steps) {
        Value::Object(steps) => steps
            .into_iter()
            .map(|(k, mut v)| {
                let output = v.get_mut("output").map(Value::take);
                (k, output.unwrap_or(Value::Null))
            })
            .collect(),
        _ => serde_json::Map::new(),
    };
    RunOutcome {
        run: id,
        workflow: wf.name.clone(),
        status,
        handoffs: st.summaries.iter().map(|s| s.attempts).sum(),
        reassignments: st.summaries.iter().map(|s| s.reassignments).sum(),
        stale_rejected: st.summaries.iter().map(|s| s.stale_rejected).sum(),
        steps: st.summaries,
        owners,
        outputs,
        duration_ms: muster.recorder().now_ms().saturating_sub(started),
        usage: st.usage,
    }
}

/// A run stops when its journal does: nothing more is acted on that could not be recorded.
fn journal_stopped(step: &str, e: Unwritten) -> RunStatus {
    RunStatus::Failed {
        step: step.to_string(),
        reason: format!("the journal stopped writing ({e}); the run cannot go on safely"),
    }
}
