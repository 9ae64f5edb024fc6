//! The one trait every agent kind implements, and what an attempt can end in.

use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::effects::{EffectEntry, EffectError, Ledger, Unrecorded};
use crate::journal::{ModelCall, Usage};
use crate::messaging::{ContractError, Envelope};

/// What an agent gets with each task: who it is, which task, the lease epoch (its fencing
/// token: pass it to any side effect that must not happen twice) and the deadline.
#[derive(Clone)]
pub struct TaskContext {
    /// The task, or the envelope id for a plain message.
    pub task_id: Uuid,
    /// The lease epoch. A result carrying an older epoch than the task's current one is
    /// rejected as stale.
    pub epoch: u64,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The capability asked for.
    pub capability: Arc<str>,
    /// This instance's id, e.g. `tester#0`.
    pub agent: Arc<str>,
    /// When the owner stops waiting for this attempt.
    pub deadline: tokio::time::Instant,
    /// The envelope that carried the task.
    pub envelope: Arc<Envelope>,
    /// Called by [`TaskContext::heartbeat`]; set by whoever hands the task out.
    pub(crate) heartbeat: Option<Arc<dyn Fn() + Send + Sync>>,
    /// What the attempt spent on models so far; the instance puts it in the attempt's
    /// report however the attempt ends (even past its deadline).
    pub(crate) usage: Arc<parking_lot::Mutex<Option<Usage>>>,
    /// The task's effect ledger, shared by every attempt of the task.
    pub(crate) effects: Arc<Ledger>,
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("task_id", &self.task_id)
            .field("epoch", &self.epoch)
            .field("attempt", &self.attempt)
            .field("capability", &self.capability)
            .field("agent", &self.agent)
            .finish()
    }
}

impl TaskContext {
    /// Tells the task's owner this attempt is alive (for capabilities that declare a
    /// heartbeat interval). Cheap; call it as often as you like.
    pub fn heartbeat(&self) {
        if let Some(h) = &self.heartbeat {
            h();
        }
    }

    /// The same context, whose [`heartbeat`](TaskContext::heartbeat) calls `beat`: for a
    /// host that runs an agent outside the runtime's instances (a test harness, a remote
    /// worker) and forwards the agent's heartbeats itself.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use muster_core::TaskContext;
    ///
    /// let beats = Arc::new(AtomicUsize::new(0));
    /// let counter = beats.clone();
    /// let deadline = tokio::time::Instant::now();
    /// let ctx = TaskContext::standalone(uuid::Uuid::nil(), 1, "work", "w#0", deadline)
    ///     .with_heartbeat(Arc::new(move || {
    ///         counter.fetch_add(1, Ordering::Relaxed);
    ///     }));
    /// ctx.heartbeat();
    /// assert_eq!(beats.load(Ordering::Relaxed), 1);
    /// ```
    pub fn with_heartbeat(mut self, beat: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.heartbeat = Some(beat);
        self
    }

    /// A context for running an agent by hand, outside a runtime (tools, tests): no owner
    /// listens to its heartbeats.
    pub fn standalone(
        task_id: Uuid,
        epoch: u64,
        capability: &str,
        agent: &str,
        deadline: tokio::time::Instant,
    ) -> Self {
        let envelope = Envelope::new(
            capability,
            crate::messaging::Recipient::Agent(Arc::from(agent)),
            "",
            Value::Null,
        );
        TaskContext {
            task_id,
            epoch,
            attempt: 1,
            capability: Arc::from(capability),
            agent: Arc::from(agent),
            deadline,
            envelope: Arc::new(envelope),
            heartbeat: None,
            usage: Arc::default(),
            effects: Arc::new(Ledger::detached(task_id)),
        }
    }

    /// The same context with `ledger` as its task's effect ledger (tools and tests that run
    /// an agent by hand across several "attempts").
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use muster_core::agents::effects::Ledger;
    /// use muster_core::TaskContext;
    /// let task = uuid::Uuid::now_v7();
    /// let ledger = Arc::new(Ledger::detached(task));
    /// let ctx = TaskContext::standalone(task, 1, "pay", "p#0", tokio::time::Instant::now())
    ///     .with_ledger(ledger.clone());
    /// assert!(Arc::ptr_eq(ctx.ledger(), &ledger));
    /// ```
    pub fn with_ledger(mut self, ledger: Arc<Ledger>) -> Self {
        self.effects = ledger;
        self
    }

    /// The task's effect ledger (backends that relay an agent's effect reports use it).
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.effects
    }

    /// A stable key for effect `name` of this task: the same in every attempt of the task,
    /// whichever agent runs it and after a crash and `muster resume`, and different between
    /// tasks. Pass it to the outside world as an idempotency key (e.g. the
    /// `Idempotency-Key` header of a payment API), so that a repeated call is recognised
    /// there as well.
    ///
    /// # Example
    /// ```
    /// use muster_core::TaskContext;
    /// let task = uuid::Uuid::now_v7();
    /// let first = TaskContext::standalone(task, 1, "pay", "p#0", tokio::time::Instant::now());
    /// let second = TaskContext::standalone(task, 2, "pay", "p#1", tokio::time::Instant::now());
    /// assert_eq!(first.effect_key("refund:17"), second.effect_key("refund:17"));
    /// assert_ne!(first.effect_key("refund:17"), first.effect_key("refund:18"));
    /// ```
    pub fn effect_key(&self, name: &str) -> String {
        self.effects.key(name)
    }

    /// The prefix of every [`TaskContext::effect_key`] of this task.
    pub fn effect_key_prefix(&self) -> &str {
        self.effects.prefix()
    }

    /// The task's effect ledger as this attempt sees it: every effect an attempt of the
    /// task (this one, an earlier one, a stale one still running) started, done or of
    /// unknown outcome.
    pub fn effects(&self) -> Vec<EffectEntry> {
        self.effects.entries()
    }

    /// Runs effect `name` at most once per task: journals `effect_started`, waits until it
    /// is written, runs `f`, journals `effect_done` with its result and returns it.
    ///
    /// - An effect already **done** (by any attempt of the task, before a crash as well) is
    ///   not run again: `f` is skipped and its recorded result returned.
    /// - An effect **started and never done** (its attempt crashed, timed out, or is still
    ///   running) is not run blindly: [`EffectError::Unknown`] names it and its key, so the
    ///   agent asks the outside world by that key, then runs [`TaskContext::reconcile`]
    ///   (repeat the call with the same idempotency key) or [`TaskContext::effect_done`].
    /// - If `f` fails, the effect's outcome is unknown from then on (the call may have
    ///   happened before the error).
    ///
    /// `key` is the idempotency key passed to the outside world ([`TaskContext::effect_key`]),
    /// journaled with the effect; `None` for an effect without one.
    ///
    /// # Example
    /// ```
    /// use muster_core::{AgentError, TaskContext};
    /// # actix_rt::System::new().block_on(async {
    /// let ctx = TaskContext::standalone(uuid::Uuid::now_v7(), 1, "pay", "p#0",
    ///     tokio::time::Instant::now());
    /// let key = ctx.effect_key("refund:17");
    /// let charged: u64 = ctx.effect("refund:17", Some(&key), || async {
    ///     // POST /refunds with the header `Idempotency-Key: {key}`
    ///     Ok::<_, AgentError>(1700)
    /// }).await?;
    /// // A second call of the same effect in the same task returns the recorded result.
    /// let again: u64 = ctx.effect("refund:17", Some(&key), || async { unreachable!() }).await?;
    /// assert_eq!((charged, again), (1700, 1700));
    /// # Ok::<(), muster_core::agents::effects::EffectError>(()) }).unwrap();
    /// ```
    pub async fn effect<T, F, Fut>(
        &self,
        name: &str,
        key: Option<&str>,
        f: F,
    ) -> Result<T, EffectError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, AgentError>>,
    {
        self.run_effect(name, key, false, f).await
    }

    /// Runs effect `name` whose outcome is unknown once more: `f` is expected to reconcile
    /// with the outside world (look the call up by its key, or repeat it with the same
    /// idempotency key, which a payment API answers with the first call's result). Journals
    /// another `effect_started` and then `effect_done`. A done effect is not run (its result
    /// is returned); one never started runs as with [`TaskContext::effect`].
    ///
    /// # Example
    /// ```
    /// use muster_core::agents::effects::EffectError;
    /// use muster_core::{AgentError, TaskContext};
    /// # actix_rt::System::new().block_on(async {
    /// let ctx = TaskContext::standalone(uuid::Uuid::now_v7(), 1, "pay", "p#0",
    ///     tokio::time::Instant::now());
    /// let key = ctx.effect_key("mail");
    /// let failed = ctx.effect("mail", Some(&key), || async {
    ///     Err::<u32, _>(AgentError::new("connection reset")) }).await;
    /// assert!(matches!(failed, Err(EffectError::Failed { .. })));
    /// let unknown = ctx.effect("mail", Some(&key), || async { Ok(1u32) }).await;
    /// assert!(matches!(unknown, Err(EffectError::Unknown { .. })));
    /// let sent: u32 = ctx.reconcile("mail", Some(&key), || async { Ok(1) }).await?;
    /// assert_eq!(sent, 1);
    /// # Ok::<(), EffectError>(()) }).unwrap();
    /// ```
    pub async fn reconcile<T, F, Fut>(
        &self,
        name: &str,
        key: Option<&str>,
        f: F,
    ) -> Result<T, EffectError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, AgentError>>,
    {
        self.run_effect(name, key, true, f).await
    }

    /// Reports effect `name` done with `result` without running anything: for an effect of
    /// unknown outcome the agent found done when it asked the outside world by its key.
    ///
    /// # Example
    /// ```
    /// use muster_core::TaskContext;
    /// let ctx = TaskContext::standalone(uuid::Uuid::now_v7(), 1, "pay", "p#0",
    ///     tokio::time::Instant::now());
    /// ctx.effect_done("refund:17", None, serde_json::json!({"charge": "ch_1"}));
    /// assert!(ctx.effects()[0].result.is_some());
    /// ```
    pub fn effect_done(&self, name: &str, key: Option<&str>, result: Value) {
        self.effects
            .done(name, key, self.epoch, &self.agent, result);
    }

    async fn run_effect<T, F, Fut>(
        &self,
        name: &str,
        key: Option<&str>,
        retry: bool,
        f: F,
    ) -> Result<T, EffectError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, AgentError>>,
    {
        let result_error = |e: serde_json::Error| EffectError::Result {
            name: name.to_string(),
            message: e.to_string(),
        };
        // Someone else's entry: done, its result; else unknown.
        let theirs = |entry: EffectEntry| match entry.result {
            Some(done) => serde_json::from_value(done).map_err(result_error),
            None => Err(EffectError::Unknown {
                name: entry.name,
                key: entry.key,
                epoch: entry.epoch,
            }),
        };
        let seq = match self
            .effects
            .claim(name, key, self.epoch, &self.agent, retry)
        {
            Ok(seq) => seq,
            Err(entry) => return theirs(entry),
        };
        // Declared before it is done: a crash from here on leaves it "unknown", never
        // forgotten.
        match self.effects.written(seq).await {
            Ok(()) => {}
            // The task's owner in another process had it claimed first.
            Err(Unrecorded::Claimed(entry)) => return theirs(entry),
            Err(source) => {
                return Err(EffectError::Unwritten {
                    name: name.to_string(),
                    source,
                });
            }
        }
        let value = f().await.map_err(|e| EffectError::Failed {
            name: name.to_string(),
            message: e.message,
        })?;
        let recorded = serde_json::to_value(&value).map_err(result_error)?;
        self.effects
            .done(name, key, self.epoch, &self.agent, recorded);
        Ok(value)
    }

    /// Records what one model call of this attempt spent (LLM backends call it after each
    /// request); the attempt's journal records carry the sum.
    ///
    /// # Example
    /// ```
    /// use muster_core::journal::Usage;
    /// use muster_core::TaskContext;
    ///
    /// let ctx = TaskContext::standalone(uuid::Uuid::nil(), 1, "cap", "a#0", tokio::time::Instant::now());
    /// ctx.record_usage(&Usage::known("m", 3, 4));
    /// ctx.record_usage(&Usage::known("m", 1, 1));
    /// assert_eq!(ctx.usage().and_then(|u| u.total_tokens), Some(9));
    /// ```
    pub fn record_usage(&self, usage: &Usage) {
        let mut cell = self.usage.lock();
        match cell.as_mut() {
            Some(u) => u.add(usage),
            None => *cell = Some(usage.clone()),
        }
    }

    /// Journals one model call of this attempt (an LLM backend that records its prompts
    /// calls it after each request) as a `model_call` record of the task, under this
    /// attempt's agent and epoch, at once: the calls of an attempt that hangs or crashes
    /// later are in the journal. The caller bounds and redacts `call`; a context run by
    /// hand ([`TaskContext::standalone`]) journals nothing.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use muster_core::agents::effects::Ledger;
    /// use muster_core::journal::{Journal, MemoryJournal, ModelCall, Recorder, TurnKind};
    /// use muster_core::TaskContext;
    ///
    /// let journal = Arc::new(MemoryJournal::default());
    /// let task = uuid::Uuid::now_v7();
    /// let recorder = Recorder::new(journal.clone(), muster_core::clock::Clock::system());
    /// let ledger = Ledger::new(task, recorder, Vec::new(), None);
    /// let ctx = TaskContext::standalone(task, 1, "triage", "triager#0", tokio::time::Instant::now())
    ///     .with_ledger(Arc::new(ledger));
    /// ctx.record_model_call(ModelCall {
    ///     attempt: 1, turn: 0, kind: TurnKind::First, round: 0, model: "m".into(),
    ///     messages: Vec::new(), answer: Some("{}".into()), error: None, usage: None,
    ///     latency_ms: 3, truncated: false,
    /// });
    /// assert_eq!(journal.read_after(0)[0].event.kind(), "model_call");
    /// ```
    pub fn record_model_call(&self, call: ModelCall) {
        self.effects.record(crate::journal::Event::ModelCall {
            task: self.task_id,
            agent: self.agent.clone(),
            epoch: self.epoch,
            call: Box::new(call),
        });
    }

    /// What this attempt has spent on models so far (`None` if it called none).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.lock().clone()
    }

    /// The resources this task may touch, if it declares a scope: change only what its
    /// `write` patterns cover (an output reporting a `touched` path outside them is a
    /// contract violation).
    ///
    /// # Example
    /// ```
    /// use muster_core::TaskContext;
    /// let ctx = TaskContext::standalone(uuid::Uuid::now_v7(), 1, "code.implement", "dev#0",
    ///     tokio::time::Instant::now());
    /// assert!(ctx.scope().is_none());
    /// ```
    pub fn scope(&self) -> Option<&crate::messaging::Scope> {
        self.envelope.scope.as_deref()
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline
            .saturating_duration_since(tokio::time::Instant::now())
    }
}

/// An agent's own failure: what it returns instead of an output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    /// What went wrong, for the journal and the next owner.
    pub message: String,
    /// Set by backends when the agent process itself is gone (not just this task).
    #[serde(default)]
    pub exited: bool,
    /// Set by backends when the agent broke its wire protocol.
    #[serde(default)]
    pub protocol: bool,
    /// Set by backends when the agent's answer broke its contract (a path it reports it
    /// touched lies outside its write scope): the attempt fails `contract_violation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<ContractError>,
}

impl AgentError {
    /// An ordinary task failure.
    pub fn new(message: impl Into<String>) -> Self {
        AgentError {
            message: message.into(),
            exited: false,
            protocol: false,
            contract: None,
        }
    }

    /// The agent's process exited during the task.
    pub fn exited(message: impl Into<String>) -> Self {
        AgentError {
            exited: true,
            ..AgentError::new(message)
        }
    }

    /// The agent's answer broke its contract, as `violation` says.
    pub fn contract(violation: ContractError) -> Self {
        AgentError {
            contract: Some(violation.clone()),
            ..AgentError::new(violation.to_string())
        }
    }

    /// The agent broke its protocol (garbage, wrong task id or epoch).
    pub fn protocol(message: impl Into<String>) -> Self {
        AgentError {
            protocol: true,
            ..AgentError::new(message)
        }
    }
}

impl From<EffectError> for AgentError {
    fn from(e: EffectError) -> Self {
        AgentError::new(e.to_string())
    }
}

impl From<String> for AgentError {
    fn from(s: String) -> Self {
        AgentError::new(s)
    }
}

impl From<&str> for AgentError {
    fn from(s: &str) -> Self {
        AgentError::new(s)
    }
}

/// How an attempt failed. Every variant is the owner's failure (G4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum Failure {
    /// The agent returned an error.
    Error(String),
    /// The agent panicked (the instance is restarted by its supervisor).
    Panic(String),
    /// The attempt's time bound passed.
    Timeout,
    /// The agent's process exited mid-task.
    Exited(String),
    /// The agent broke its wire protocol.
    Protocol(String),
    /// The capability declares a heartbeat interval and none came.
    HeartbeatMissed,
    /// The output broke the capability's output schema.
    ContractViolation(ContractError),
    /// The output broke the capability's acceptance rule (or the rule failed).
    Rejected(String),
    /// The instance died or stopped while holding the task.
    AgentGone(String),
    /// Nobody will serve the task's capability: every agent type that declared it dropped
    /// out (its supervisor gave up) and no instance is left or starting. The detail names
    /// the capability and each type's drop-out reason.
    NoCapableAgent(String),
    /// The task was cancelled.
    Cancelled,
}

impl Failure {
    /// The snake_case reason, as journaled.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Error(_) => "error",
            Failure::Panic(_) => "panic",
            Failure::Timeout => "timeout",
            Failure::Exited(_) => "exited",
            Failure::Protocol(_) => "protocol",
            Failure::HeartbeatMissed => "heartbeat_missed",
            Failure::ContractViolation(_) => "contract_violation",
            Failure::Rejected(_) => "rejected",
            Failure::AgentGone(_) => "agent_gone",
            Failure::NoCapableAgent(_) => "no_capable_agent",
            Failure::Cancelled => "cancelled",
        }
    }

    /// The details, as journaled.
    pub fn detail(&self) -> String {
        match self {
            Failure::Error(s)
            | Failure::Panic(s)
            | Failure::Exited(s)
            | Failure::Protocol(s)
            | Failure::Rejected(s)
            | Failure::AgentGone(s)
            | Failure::NoCapableAgent(s) => s.clone(),
            Failure::Timeout => "the attempt's time bound passed".into(),
            Failure::HeartbeatMissed => "no heartbeat within the declared interval".into(),
            Failure::ContractViolation(c) => c.to_string(),
            Failure::Cancelled => "cancelled".into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason(), self.detail())
    }
}

/// What an agent can tell its instance outside of a task: that its process died, or that
/// it is alive.
#[derive(Clone)]
pub struct AgentLink {
    pub(crate) on_exit: Arc<dyn Fn(Result<(), String>) + Send + Sync>,
    pub(crate) on_alive: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for AgentLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Two callbacks, nothing else to show.
        f.debug_struct("AgentLink").finish_non_exhaustive()
    }
}

impl AgentLink {
    /// A link whose [`exited`](AgentLink::exited) calls `on_exit` and whose
    /// [`alive`](AgentLink::alive) calls `on_alive`: for a host that starts agents itself
    /// (a test harness, a remote worker) and wants to see what they report.
    ///
    /// # Example
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use muster_core::AgentLink;
    ///
    /// let exits = Arc::new(Mutex::new(Vec::new()));
    /// let seen = exits.clone();
    /// let link = AgentLink::new(
    ///     Arc::new(move |r| seen.lock().unwrap().push(r)),
    ///     Arc::new(|| {}),
    /// );
    /// link.exited(Err("the process died".into()));
    /// assert_eq!(exits.lock().unwrap().len(), 1);
    /// ```
    pub fn new(
        on_exit: Arc<dyn Fn(Result<(), String>) + Send + Sync>,
        on_alive: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        AgentLink { on_exit, on_alive }
    }

    /// The agent is gone: `Ok(())` for a normal exit, `Err(why)` for an abnormal one. The
    /// instance fails every task it holds and its supervisor decides on a restart.
    pub fn exited(&self, result: Result<(), String>) {
        (self.on_exit)(result)
    }

    /// The agent is alive (liveness heartbeat to the registry).
    pub fn alive(&self) {
        (self.on_alive)()
    }

    /// A link that goes nowhere (for tests and tools that run an agent by hand).
    pub fn detached() -> Self {
        AgentLink {
            on_exit: Arc::new(|_| {}),
            on_alive: Arc::new(|| {}),
        }
    }
}

/// One agent instance's behaviour. Every kind (function, command, simulated, HTTP) is this
/// trait; the runtime never looks behind it.
///
/// `handle` runs on the runtime's thread as a local future: it may hold non-`Send` state,
/// and it must not block the thread (put blocking work on `tokio::task::spawn_blocking`).
///
/// # Example
/// ```
/// use muster_core::{Agent, AgentError, TaskContext};
/// use futures::future::LocalBoxFuture;
/// use serde_json::{json, Value};
///
/// struct Echo;
/// impl Agent for Echo {
///     fn handle(&self, input: Value, _ctx: TaskContext) -> LocalBoxFuture<'static, Result<Value, AgentError>> {
///         Box::pin(async move { Ok(json!({"echo": input})) })
///     }
/// }
/// ```
pub trait Agent: 'static {
    /// Runs one task.
    fn handle(
        &self,
        input: Value,
        ctx: TaskContext,
    ) -> LocalBoxFuture<'static, Result<Value, AgentError>>;

    /// Called once when the instance starts (spawn a process, open a connection). An error
    /// is an abnormal exit of the instance.
    fn start(&self, _link: AgentLink) -> LocalBoxFuture<'static, Result<(), AgentError>> {
        Box::pin(async { Ok(()) })
    }

    /// Called when the instance stops (kill the process). Must finish promptly.
    fn stop(&self) -> LocalBoxFuture<'static, ()> {
        Box::pin(async {})
    }

    /// Called when a running task is cancelled (tell the process, or kill it).
    fn cancel(&self, _task_id: Uuid, _epoch: u64) {}
}

/// Makes agent instances: called once per instance start, and again on every restart, so a
/// restarted instance never inherits a crashed one's state.
pub trait AgentFactory: Send + Sync + 'static {
    /// A fresh agent for the instance called `instance`.
    fn create(&self, instance: &str) -> Box<dyn Agent>;

    /// Called once when the agent type is registered, before any instance starts, with
    /// what the runtime lends it (shared services, delegation). Backends that need neither
    /// keep the default. An error refuses the registration.
    fn attach(&self, _host: super::host::AgentHost) -> LocalBoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

impl<F> AgentFactory for F
where
    F: Fn(&str) -> Box<dyn Agent> + Send + Sync + 'static,
{
    fn create(&self, instance: &str) -> Box<dyn Agent> {
        self(instance)
    }
}
