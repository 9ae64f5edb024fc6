//! The event vocabulary: what can happen in a runtime, as data.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::model_call::ModelCall;
use super::usage::Usage;
use crate::messaging::{Envelope, Scope};

/// A journaled event with its sequence number and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// From 1, gap-free, in append order.
    pub seq: u64,
    /// Unix milliseconds (virtual time in simulations).
    pub at_ms: u64,
    /// What happened.
    pub event: Event,
}

/// Everything the runtime journals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// An agent instance joined the registry.
    AgentRegistered {
        /// Instance id, e.g. `tester#0`.
        agent: Arc<str>,
        /// Its capabilities.
        capabilities: Vec<Arc<str>>,
        /// Start generation (0 first, +1 per restart).
        generation: u64,
    },
    /// An agent instance changed lifecycle state.
    AgentStateChanged {
        /// Instance id.
        agent: Arc<str>,
        /// New state.
        state: String,
        /// Why, if it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// An agent instance left the registry.
    AgentDroppedOut {
        /// Instance id.
        agent: Arc<str>,
        /// Why (restart intensity, missed heartbeats, shutdown...).
        reason: String,
    },
    /// A supervisor restarted a child.
    ChildRestarted {
        /// Supervisor id.
        supervisor: Arc<str>,
        /// Child id.
        child: Arc<str>,
        /// How the child had exited.
        exit: String,
    },
    /// A supervisor hit its restart intensity and escalated to its parent.
    SupervisorEscalated {
        /// Supervisor id.
        supervisor: Arc<str>,
        /// What happened.
        reason: String,
    },
    /// An envelope was delivered to a recipient's mailbox.
    EnvelopeRouted {
        /// The envelope, whole.
        envelope: Arc<Envelope>,
        /// The instance it went to.
        delivered_to: Arc<str>,
    },
    /// An envelope could not be delivered (a dead letter).
    EnvelopeFailed {
        /// The envelope, whole.
        envelope: Arc<Envelope>,
        /// The reason, from the closed set.
        reason: String,
        /// Details.
        detail: String,
    },
    /// A task was accepted.
    TaskSubmitted {
        /// Task id.
        task: Uuid,
        /// Capability.
        capability: Arc<str>,
        /// Correlation id (the workflow run, or the task itself).
        correlation: Uuid,
        /// The validated input (shared with the task and its envelopes).
        input: Arc<Value>,
        /// Attempt budget.
        attempts: u32,
        /// Per-attempt time bound, ms.
        timeout_ms: u64,
        /// Who delegated it: a workflow step is `"{workflow}/{step}"` (recovery ties the
        /// task to its step by it). Empty in journals written before it was recorded.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        sender: String,
    },
    /// A task was leased to an agent under a fresh epoch.
    LeaseGranted {
        /// Task id.
        task: Uuid,
        /// Agent instance.
        agent: Arc<str>,
        /// Fencing token.
        epoch: u64,
        /// Attempt number, from 1.
        attempt: u32,
        /// The envelope carrying the input.
        envelope: Uuid,
        /// That envelope, whole, as it was delivered to `agent`: a lease is journaled once,
        /// with its envelope, instead of as a lease and an `envelope_routed`. Absent in
        /// journals written before the two were folded into one record.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        routed: Option<Arc<Envelope>>,
    },
    /// An attempt failed (error, panic, timeout, missed heartbeat, contract violation...).
    AttemptFailed {
        /// Task id.
        task: Uuid,
        /// Agent instance.
        agent: Arc<str>,
        /// Epoch of the failed lease.
        epoch: u64,
        /// Failure kind (`error`, `panic`, `timeout`, ...).
        reason: String,
        /// Details (message, validator errors...).
        detail: String,
    },
    /// An attempt was cut short by the runtime's own end: its lease was granted, and the
    /// process died (a crash, a SIGKILL) before the attempt ended. Journaled when the task
    /// is resumed, for each lease that has no end in the journal. It is not the agent's
    /// failure: `refunded` says whether the attempt was given back to the task's attempt
    /// budget (a bounded number of them are per task, so that a crash loop stays finite).
    AttemptInterrupted {
        /// Task id.
        task: Uuid,
        /// Agent instance that held the lease.
        agent: Arc<str>,
        /// Epoch of the interrupted lease.
        epoch: u64,
        /// Whether it does not count against the attempt budget.
        refunded: bool,
    },
    /// A result was accepted: the task is completed.
    ResultAccepted {
        /// Task id.
        task: Uuid,
        /// Agent instance.
        agent: Arc<str>,
        /// Epoch of the lease.
        epoch: u64,
        /// The output (shared with the task's record, not copied).
        output: Arc<Value>,
    },
    /// What an attempt spent on a model (LLM agents), journaled when the attempt ends,
    /// before its `result_accepted` or `attempt_failed`: tokens the server did not report
    /// are `null` (unknown), never 0.
    ModelUsage {
        /// Task id.
        task: Uuid,
        /// Agent instance.
        agent: Arc<str>,
        /// Epoch of the lease.
        epoch: u64,
        /// The model, its calls, tokens and cost.
        usage: Usage,
    },
    /// One model call of an attempt, journaled as it ends by an LLM agent that records its
    /// prompts (`[backend] record = "prompts"`): the messages sent and the raw answer,
    /// bounded and redacted by the backend before this record is made.
    ModelCall {
        /// Task id.
        task: Uuid,
        /// Agent instance.
        agent: Arc<str>,
        /// Epoch of the lease.
        epoch: u64,
        /// The call.
        call: Box<ModelCall>,
    },
    /// A late result of an earlier epoch was adopted: the capability is idempotent and
    /// declares `late_results = "adopt"`, the result passed the contract, and it arrived
    /// while the attempt under `current_epoch` was running (that attempt is cancelled). A
    /// `result_accepted` under `epoch` follows.
    ResultAdopted {
        /// Task id.
        task: Uuid,
        /// Agent instance that answered late.
        agent: Arc<str>,
        /// The earlier epoch whose result is adopted.
        epoch: u64,
        /// The epoch of the attempt it supersedes.
        current_epoch: u64,
    },
    /// A result from a superseded epoch was rejected (G2).
    ResultStale {
        /// Task id.
        task: Uuid,
        /// Agent instance that answered late.
        agent: Arc<str>,
        /// The stale epoch it carried.
        epoch: u64,
        /// The epoch in force (0 when the task had already ended).
        current_epoch: u64,
    },
    /// An agent declared an effect on the outside world (a charge, an email, a write)
    /// before doing it: until an `effect_done` of the same task and name follows, its
    /// outcome is unknown. Journaled by whichever epoch ran it, stale or not: effects are
    /// facts, and a later attempt of the task is handed them.
    EffectStarted {
        /// Task id.
        task: Uuid,
        /// The effect's name, unique within the task (e.g. `refund:order-17`).
        name: String,
        /// The idempotency key the agent passed to the outside world, if any (see
        /// `TaskContext::effect_key`).
        key: Option<String>,
        /// The epoch of the attempt that started it.
        epoch: u64,
        /// The agent instance.
        agent: Arc<str>,
    },
    /// An effect declared by `effect_started` is done: `result` is what the outside world
    /// answered. A later attempt of the task does not run it again and gets this result.
    EffectDone {
        /// Task id.
        task: Uuid,
        /// The effect's name.
        name: String,
        /// Its idempotency key, if any.
        key: Option<String>,
        /// The epoch of the attempt that reported it.
        epoch: u64,
        /// The agent instance.
        agent: Arc<str>,
        /// What the effect returned.
        result: Value,
    },
    /// A task's policy is exhausted; a gate or the dead-letter record holds it.
    TaskEscalated {
        /// Task id.
        task: Uuid,
        /// The gate, or `dead_letter`.
        to: String,
        /// Why.
        reason: String,
    },
    /// A task was cancelled.
    TaskCancelled {
        /// Task id.
        task: Uuid,
        /// Why.
        reason: String,
    },
    /// A task took its scope: it may lease now.
    ScopeAcquired {
        /// Task id.
        task: Uuid,
        /// The scope it holds until it ends.
        scope: Scope,
    },
    /// A task's scope overlaps one held (or asked for first): it waits its turn.
    ScopeWaiting {
        /// Task id.
        task: Uuid,
        /// The task it waits for.
        holder: Uuid,
        /// Which patterns overlap, with an example path.
        overlap: String,
    },
    /// A task that held (or waited for) a scope ended: the scope is free.
    ScopeReleased {
        /// Task id.
        task: Uuid,
    },
    /// An idempotent task returned the accepted result of an identical earlier (or
    /// concurrent) task instead of running again. Terminal, like `result_accepted`.
    TaskReused {
        /// Task id.
        task: Uuid,
        /// The task whose accepted result it returns.
        original: Uuid,
        /// That result (shared with the original's records, not copied).
        output: Arc<Value>,
    },
    /// A workflow run started.
    RunStarted {
        /// Run id (the correlation id of its tasks).
        run: Uuid,
        /// Workflow name.
        workflow: String,
        /// The workflow file.
        file: String,
        /// The validated run input.
        input: Value,
    },
    /// A run entered a step.
    StepEntered {
        /// Run id.
        run: Uuid,
        /// Step name.
        step: String,
        /// How many times the run has entered it (from 1).
        visit: u32,
    },
    /// A task step (or branch) completed.
    StepCompleted {
        /// Run id.
        run: Uuid,
        /// Step name.
        step: String,
        /// The step's task.
        task: Uuid,
        /// The accepted output (shared with the task's `result_accepted`, not copied).
        output: Arc<Value>,
    },
    /// A task step (or branch) failed: its task was escalated, or its input mapping failed.
    StepFailed {
        /// Run id.
        run: Uuid,
        /// Step name.
        step: String,
        /// The step's task, if one was submitted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<Uuid>,
        /// Why.
        reason: String,
    },
    /// A run waits at a gate for a human decision.
    GateWaiting {
        /// Run id.
        run: Uuid,
        /// Gate step name.
        gate: String,
        /// What the human decides.
        question: String,
    },
    /// A human decided at a gate.
    GateDecided {
        /// Run id.
        run: Uuid,
        /// Gate step name.
        gate: String,
        /// Approved or rejected.
        approved: bool,
        /// Why.
        reason: String,
    },
    /// A run ended.
    RunEnded {
        /// Run id.
        run: Uuid,
        /// `completed` or `failed`.
        status: String,
        /// The step it ended at.
        step: String,
        /// Why, for failures.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A control node of a cluster took the run over from one that left (its lease won
    /// by compare-and-set); the run goes on from its records on this node.
    RunTakenOver {
        /// Run id.
        run: Uuid,
        /// The control node that drove it until it left.
        from: String,
        /// The control node that drives it now.
        to: String,
        /// The run lease's revision won (the new owner's fencing token).
        revision: u64,
    },
    /// A run started as the retry of a failed run (journaled right after its
    /// `run_started`, before the `step_completed` records of the steps it carries over):
    /// it takes the outputs of the failed run's completed steps and starts at the step
    /// that failed.
    RetryStarted {
        /// The new run.
        run: Uuid,
        /// The failed run it retries.
        from: Uuid,
        /// The step it starts at.
        step: String,
        /// The steps whose outputs it takes from the failed run.
        carried: Vec<String>,
    },
    /// A failed run was retried as a new run (journaled in the failed run's story, after
    /// the new run's `retry_started`).
    RunRetried {
        /// The failed run.
        run: Uuid,
        /// The new run.
        retry: Uuid,
        /// The step the new run starts at.
        step: String,
    },
    /// Free text (tests, tools).
    Note {
        /// The text.
        text: String,
    },
}

impl Event {
    /// The snake_case kind of the event, as stored in the `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::AgentRegistered { .. } => "agent_registered",
            Event::AgentStateChanged { .. } => "agent_state_changed",
            Event::AgentDroppedOut { .. } => "agent_dropped_out",
            Event::ChildRestarted { .. } => "child_restarted",
            Event::SupervisorEscalated { .. } => "supervisor_escalated",
            Event::EnvelopeRouted { .. } => "envelope_routed",
            Event::EnvelopeFailed { .. } => "envelope_failed",
            Event::TaskSubmitted { .. } => "task_submitted",
            Event::LeaseGranted { .. } => "lease_granted",
            Event::AttemptFailed { .. } => "attempt_failed",
            Event::AttemptInterrupted { .. } => "attempt_interrupted",
            Event::ResultAccepted { .. } => "result_accepted",
            Event::ModelUsage { .. } => "model_usage",
            Event::ModelCall { .. } => "model_call",
            Event::ResultStale { .. } => "result_stale",
            Event::ResultAdopted { .. } => "result_adopted",
            Event::EffectStarted { .. } => "effect_started",
            Event::EffectDone { .. } => "effect_done",
            Event::TaskEscalated { .. } => "task_escalated",
            Event::TaskCancelled { .. } => "task_cancelled",
            Event::ScopeAcquired { .. } => "scope_acquired",
            Event::ScopeWaiting { .. } => "scope_waiting",
            Event::ScopeReleased { .. } => "scope_released",
            Event::TaskReused { .. } => "task_reused",
            Event::RunStarted { .. } => "run_started",
            Event::StepEntered { .. } => "step_entered",
            Event::StepCompleted { .. } => "step_completed",
            Event::StepFailed { .. } => "step_failed",
            Event::GateWaiting { .. } => "gate_waiting",
            Event::GateDecided { .. } => "gate_decided",
            Event::RunEnded { .. } => "run_ended",
            Event::RunTakenOver { .. } => "run_taken_over",
            Event::RetryStarted { .. } => "retry_started",
            Event::RunRetried { .. } => "run_retried",
            Event::Note { .. } => "note",
        }
    }

    /// The task the event is about, if any (envelopes: the task they carry).
    ///
    /// # Example
    /// ```
    /// use muster_core::Event;
    /// let task = uuid::Uuid::now_v7();
    /// let e = Event::TaskCancelled { task, reason: "user".into() };
    /// assert_eq!(e.task(), Some(task));
    /// assert_eq!(Event::Note { text: "hi".into() }.task(), None);
    /// ```
    pub fn task(&self) -> Option<Uuid> {
        match self {
            Event::TaskSubmitted { task, .. }
            | Event::LeaseGranted { task, .. }
            | Event::AttemptFailed { task, .. }
            | Event::AttemptInterrupted { task, .. }
            | Event::ResultAccepted { task, .. }
            | Event::ModelUsage { task, .. }
            | Event::ModelCall { task, .. }
            | Event::ResultStale { task, .. }
            | Event::ResultAdopted { task, .. }
            | Event::EffectStarted { task, .. }
            | Event::EffectDone { task, .. }
            | Event::TaskEscalated { task, .. }
            | Event::TaskCancelled { task, .. }
            | Event::ScopeAcquired { task, .. }
            | Event::ScopeWaiting { task, .. }
            | Event::ScopeReleased { task }
            | Event::TaskReused { task, .. } => Some(*task),
            Event::EnvelopeRouted { envelope, .. } | Event::EnvelopeFailed { envelope, .. } => {
                envelope.task_id
            }
            _ => None,
        }
    }

    /// The agent instance the event is about, if any (a routed envelope: the instance it
    /// was delivered to; a failed one: its named recipient).
    ///
    /// # Example
    /// ```
    /// use muster_core::Event;
    /// let e = Event::AgentDroppedOut { agent: "tester#0".into(), reason: "shutdown".into() };
    /// assert_eq!(e.agent(), Some("tester#0"));
    /// ```
    pub fn agent(&self) -> Option<&str> {
        match self {
            Event::AgentRegistered { agent, .. }
            | Event::AgentStateChanged { agent, .. }
            | Event::AgentDroppedOut { agent, .. }
            | Event::LeaseGranted { agent, .. }
            | Event::AttemptFailed { agent, .. }
            | Event::AttemptInterrupted { agent, .. }
            | Event::ResultAccepted { agent, .. }
            | Event::ModelUsage { agent, .. }
            | Event::ModelCall { agent, .. }
            | Event::EffectStarted { agent, .. }
            | Event::EffectDone { agent, .. }
            | Event::ResultAdopted { agent, .. }
            | Event::ResultStale { agent, .. } => Some(agent),
            Event::EnvelopeRouted { delivered_to, .. } => Some(delivered_to),
            Event::EnvelopeFailed { envelope, .. } => match &envelope.recipient {
                crate::messaging::Recipient::Agent(a) => Some(a),
                crate::messaging::Recipient::Capability(_) => None,
            },
            _ => None,
        }
    }

    /// The lease epoch (fencing token) the event carries, if any. Envelopes count only
    /// when they carry a task.
    ///
    /// # Example
    /// ```
    /// use muster_core::Event;
    /// let e = Event::ResultStale {
    ///     task: uuid::Uuid::now_v7(), agent: "a#0".into(), epoch: 1, current_epoch: 2,
    /// };
    /// assert_eq!(e.epoch(), Some(1));
    /// ```
    pub fn epoch(&self) -> Option<u64> {
        match self {
            Event::LeaseGranted { epoch, .. }
            | Event::AttemptFailed { epoch, .. }
            | Event::AttemptInterrupted { epoch, .. }
            | Event::ResultAccepted { epoch, .. }
            | Event::ModelUsage { epoch, .. }
            | Event::ModelCall { epoch, .. }
            | Event::EffectStarted { epoch, .. }
            | Event::EffectDone { epoch, .. }
            | Event::ResultAdopted { epoch, .. }
            | Event::ResultStale { epoch, .. } => Some(*epoch),
            Event::EnvelopeRouted { envelope, .. } | Event::EnvelopeFailed { envelope, .. } => {
                envelope.task_id.map(|_| envelope.epoch)
            }
            _ => None,
        }
    }

    /// The workflow run a run record (`run_started`, `step_*`, `gate_*`, `run_ended`,
    /// `run_taken_over`, `retry_started`, `run_retried`) belongs to; `None` for any other record (a task's records name their run as their
    /// correlation).
    ///
    /// # Example
    /// ```
    /// use muster_core::Event;
    ///
    /// let run = uuid::Uuid::now_v7();
    /// let waiting = Event::GateWaiting { run, gate: "ship".into(), question: "ship it?".into() };
    /// assert_eq!(waiting.run(), Some(run));
    /// assert_eq!(Event::Note { text: "hello".into() }.run(), None);
    /// ```
    pub fn run(&self) -> Option<Uuid> {
        match self {
            Event::RunStarted { run, .. }
            | Event::StepEntered { run, .. }
            | Event::StepCompleted { run, .. }
            | Event::StepFailed { run, .. }
            | Event::GateWaiting { run, .. }
            | Event::GateDecided { run, .. }
            | Event::RunEnded { run, .. }
            | Event::RunTakenOver { run, .. }
            | Event::RetryStarted { run, .. }
            | Event::RunRetried { run, .. } => Some(*run),
            _ => None,
        }
    }

    /// Whether the record belongs to its task's story alone, never to its run's: a
    /// recorded model call (`model_call`, prompts and answers, up to 64 KiB each) is read
    /// per task (`GET /v1/tasks/{id}/llm`, `muster inspect --task`), so a read of a run
    /// (its document, recovery, `muster inspect --run`) must not decode it. A journal
    /// leaves such a record out of a run's records (the SQLite journal by its `kind`) and
    /// keeps it among its task's; a run's reader counts them with
    /// [`Journal::model_call_counts`](super::Journal::model_call_counts).
    ///
    /// # Example
    /// ```
    /// use muster_core::journal::{Event, ModelCall, TurnKind};
    /// let call = ModelCall {
    ///     attempt: 1, turn: 0, kind: TurnKind::First, round: 0, model: "m".into(),
    ///     messages: Vec::new(), answer: None, error: None, usage: None, latency_ms: 0,
    ///     truncated: false,
    /// };
    /// let task = uuid::Uuid::now_v7();
    /// let e = Event::ModelCall { task, agent: "a#0".into(), epoch: 1, call: Box::new(call) };
    /// assert!(e.task_only());
    /// assert!(!Event::TaskCancelled { task, reason: "user".into() }.task_only());
    /// ```
    pub fn task_only(&self) -> bool {
        matches!(self, Event::ModelCall { .. })
    }

    /// The correlation id the event itself carries (a submitted task's, an envelope's).
    /// Other task events share their task's correlation: look it up by [`Event::task`]
    /// (the SQLite journal fills its `correlation` column that way).
    ///
    /// # Example
    /// ```
    /// use muster_core::{Envelope, Event, Recipient};
    /// use serde_json::json;
    /// let env = Envelope::new("echo", Recipient::Agent("echo#0".into()), "any", json!({}));
    /// let id = env.correlation_id;
    /// let e = Event::EnvelopeRouted { envelope: env.into(), delivered_to: "echo#0".into() };
    /// assert_eq!(e.correlation(), Some(id));
    /// ```
    pub fn correlation(&self) -> Option<Uuid> {
        match self {
            Event::TaskSubmitted { correlation, .. } => Some(*correlation),
            Event::EnvelopeRouted { envelope, .. }
            | Event::EnvelopeFailed { envelope, .. }
            | Event::LeaseGranted {
                routed: Some(envelope),
                ..
            } => Some(envelope.correlation_id),
            _ => None,
        }
    }
}
