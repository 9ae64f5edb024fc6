//! The runtime: the root supervisor, its children, and the [`Muster`] handle users hold.
//!
//! ```text
//! root (one_for_one) ── registry          discovery
//!                    ├─ router            messaging
//!                    ├─ agents (one_for_one) ── <agent type> (its manifest's strategy) ── <agent>#<i>
//!                    └─ owners            one TaskOwner per live task
//! ```
//!
//! Owns start-up, registration of agent types, submission of tasks and shutdown. All actors
//! live on one arbiter (thread): a task stays on it from submission to completion, because a
//! cross-thread round trip costs ~70 µs on the target machine. From a plain
//! `#[tokio::main]` program the runtime starts its own thread and the handle talks to it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use parking_lot::RwLock;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::agents::instance::{InstanceConfig, Kill, Shutdown};
use crate::agents::{AgentError, AgentFactory, AgentInstance, FnAgent, TaskContext};
use crate::clock::Clock;
use crate::delegation::owner::{CancelTask, TaskHandle, TaskOwner};
use crate::delegation::{Outcome, Task, TaskRecord, TaskStatus};
use crate::discovery::capability::CapabilityError;
use crate::discovery::registry::{Declare, Deregister, Subscribe};
use crate::discovery::{AgentInfo, CapabilityIndex, CapabilitySpec, Registry, RegistryEvent};
use crate::ids::IdGen;
use crate::journal::{Event, Journal, MemoryJournal};
use crate::messaging::contract::SchemaError;
use crate::messaging::router::Route;
use crate::messaging::{
    ContractError, DeadLetters, DeliveryFailure, Envelope, RouterActor, SchemaStore,
};
use crate::supervision::supervisor::{ShutdownSupervisor, SupervisorHandle};
use crate::supervision::{
    ChildHandle, ChildLink, ChildSpec, Restart, StartChild, Supervision, Supervisor,
};

/// Counters of what happened to tasks, kept as they happen.
#[derive(Debug, Default)]
pub struct Stats {
    submitted: AtomicU64,
    completed: AtomicU64,
    escalated: AtomicU64,
    cancelled: AtomicU64,
    reassigned: AtomicU64,
    stale: AtomicU64,
    failed_attempts: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Tasks accepted.
    pub submitted: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Tasks escalated.
    pub escalated: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Reassignments to another agent.
    pub reassigned: u64,
    /// Results rejected as stale.
    pub stale_rejected: u64,
    /// Failed attempts.
    pub failed_attempts: u64,
}

impl Stats {
    pub(crate) fn submitted(&self) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn reassigned(&self) {
        self.reassigned.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn attempt_failed(&self) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn ended(&self, s: TaskStatus) {
        let c = match s {
            TaskStatus::Completed => &self.completed,
            TaskStatus::Escalated => &self.escalated,
            TaskStatus::Cancelled => &self.cancelled,
            _ => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            submitted: self.submitted.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            escalated: self.escalated.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            reassigned: self.reassigned.load(Ordering::Relaxed),
            stale_rejected: self.stale.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
        }
    }
}

/// Runtime-wide settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// How long past its deadline an attempt may run on before it is aborted; a result in
    /// that window reaches its owner and is fenced as stale.
    pub grace: Duration,
    /// How long `register` waits for every replica to come up.
    pub start_timeout: Duration,
    /// How long `send` waits for a full mailbox and, without a deadline, for a reply.
    pub send_wait: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            grace: Duration::from_secs(1),
            start_timeout: Duration::from_secs(10),
            send_wait: Duration::from_secs(30),
        }
    }
}

/// State shared by every actor of one runtime. Read-mostly; written through actors.
pub(crate) struct Shared {
    pub schemas: Arc<SchemaStore>,
    pub index: Arc<CapabilityIndex>,
    pub journal: Arc<dyn Journal>,
    pub clock: Clock,
    pub ids: IdGen,
    pub dead_letters: DeadLetters,
    pub stats: Stats,
    pub config: RuntimeConfig,
    pub owners: DashMap<Uuid, Addr<TaskOwner>>,
    pub gates: DashMap<(Uuid, String), oneshot::Sender<crate::workflow::Decision>>,
    pub registry: RwLock<Option<Addr<Registry>>>,
    pub router: RwLock<Option<Addr<RouterActor>>>,
    pub agents: RwLock<Option<Addr<Supervisor>>>,
    pub stopped: watch::Sender<Option<String>>,
}

impl Shared {
    /// Appends to the journal at the runtime clock's now.
    pub fn journal(&self, e: Event) -> u64 {
        self.journal.append(self.clock.now_ms(), e)
    }

    /// Appends to the journal at a time the caller already read.
    pub fn journal_at(&self, at_ms: u64, e: Event) -> u64 {
        self.journal.append(at_ms, e)
    }

    pub fn registry(&self) -> Option<Addr<Registry>> {
        self.registry.read().clone()
    }

    pub fn router(&self) -> Option<Addr<RouterActor>> {
        self.router.read().clone()
    }

    pub fn agents(&self) -> Option<Addr<Supervisor>> {
        self.agents.read().clone()
    }
}

/// An agent type to register: its capabilities, replicas, restart type and backend.
///
/// # Example
/// ```
/// use muster::{AgentDef, CapabilitySpec};
/// use serde_json::json;
///
/// let def = AgentDef::function("echo", |input, _ctx| async move { Ok(json!({"echo": input})) })
///     .capability(CapabilitySpec::new("echo", "any", "any"))
///     .replicas(2);
/// assert_eq!(def.replicas, 2);
/// ```
#[derive(Clone)]
pub struct AgentDef {
    /// Agent type name; instances are `name#0`, `name#1`, ...
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Supervised instances.
    pub replicas: usize,
    /// Tasks at once per instance.
    pub concurrency: usize,
    /// Tasks queued per instance beyond `concurrency`.
    pub mailbox: usize,
    /// Restart type of each instance.
    pub restart: Restart,
    /// Capabilities it declares.
    pub capabilities: Vec<CapabilitySpec>,
    /// The supervisor of its instances.
    pub supervision: Supervision,
    /// When set, instances must report liveness this often or drop out.
    pub liveness: Option<Duration>,
    /// Makes each instance's agent.
    pub factory: Arc<dyn AgentFactory>,
    /// Schemas this agent type brings (derived from Rust types by [`AgentDef::typed`]),
    /// added to the schema store before its capabilities are compiled.
    pub schemas: Vec<(String, Value)>,
}

impl std::fmt::Debug for AgentDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentDef")
            .field("name", &self.name)
            .field("replicas", &self.replicas)
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

impl AgentDef {
    /// An agent type made by `factory`.
    pub fn new(name: impl Into<String>, factory: impl AgentFactory) -> Self {
        AgentDef {
            name: name.into(),
            description: String::new(),
            replicas: 1,
            concurrency: 1,
            mailbox: 64,
            restart: Restart::Permanent,
            capabilities: Vec::new(),
            supervision: Supervision::default(),
            liveness: None,
            factory: Arc::new(factory),
            schemas: Vec::new(),
        }
    }

    /// An agent type whose instances run an async closure.
    pub fn function<F, Fut>(name: impl Into<String>, f: F) -> Self
    where
        F: Fn(Value, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, AgentError>> + 'static,
    {
        AgentDef::new(name, FnAgent::new(f))
    }

    /// Declares a capability.
    pub fn capability(mut self, c: CapabilitySpec) -> Self {
        self.capabilities.push(c);
        self
    }

    /// Sets the number of instances.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Sets tasks at once per instance.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the queue bound per instance.
    pub fn mailbox(mut self, n: usize) -> Self {
        self.mailbox = n;
        self
    }

    /// Sets the restart type.
    pub fn restart(mut self, r: Restart) -> Self {
        self.restart = r;
        self
    }

    /// Sets the supervision of its instances.
    pub fn supervision(mut self, s: Supervision) -> Self {
        self.supervision = s;
        self
    }

    /// Instance ids.
    pub fn instance_ids(&self) -> Vec<String> {
        (0..self.replicas)
            .map(|i| format!("{}#{i}", self.name))
            .collect()
    }
}

/// Why the runtime would not start or register.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A schema did not load.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// A capability did not resolve or conflicts.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    /// An agent type is invalid.
    #[error("agent `{agent}`: {message}")]
    Agent {
        /// The agent type.
        agent: String,
        /// What is wrong.
        message: String,
    },
    /// The runtime is stopped.
    #[error("the runtime has stopped: {0}")]
    Stopped(String),
}

/// Why a task was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The input breaks the capability's input schema (nothing was leased).
    #[error("task for `{capability}` refused: {source}")]
    InvalidInput {
        /// The capability.
        capability: String,
        /// The validator's errors.
        source: ContractError,
    },
    /// The task's bounds are invalid.
    #[error("task for `{capability}` refused: {message}")]
    InvalidTask {
        /// The capability.
        capability: String,
        /// What is wrong.
        message: String,
    },
    /// The runtime is stopped.
    #[error("the runtime has stopped: {0}")]
    Stopped(String),
}

/// Builds a runtime.
///
/// # Example
/// ```no_run
/// # #[actix::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let muster = muster::Muster::builder().schemas_dir("schemas").start().await?;
/// # let _ = muster; Ok(()) }
/// ```
#[derive(Default)]
pub struct MusterBuilder {
    schemas_dir: Option<PathBuf>,
    schemas: Vec<(String, Value)>,
    agents: Vec<AgentDef>,
    supervision: Option<Supervision>,
    journal: Option<Arc<dyn Journal>>,
    seed: Option<u64>,
    config: RuntimeConfig,
}

impl MusterBuilder {
    /// Loads every `*.schema.json` from this directory.
    pub fn schemas_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.schemas_dir = Some(dir.into());
        self
    }

    /// Adds one schema by name.
    pub fn schema(mut self, name: &str, doc: Value) -> Self {
        self.schemas.push((name.into(), doc));
        self
    }

    /// Registers an agent type at start.
    pub fn agent(mut self, def: AgentDef) -> Self {
        self.agents.push(def);
        self
    }

    /// The root supervisor's settings.
    pub fn supervision(mut self, s: Supervision) -> Self {
        self.supervision = Some(s);
        self
    }

    /// Where events go (default: in memory).
    pub fn journal(mut self, j: Arc<dyn Journal>) -> Self {
        self.journal = Some(j);
        self
    }

    /// Deterministic ids and a fixed clock origin (simulations, tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Runtime settings.
    pub fn config(mut self, c: RuntimeConfig) -> Self {
        self.config = c;
        self
    }

    /// Starts the runtime. Inside an actix system (`#[actix::main]`, `#[actix_rt::test]`)
    /// it runs on the current arbiter; elsewhere (`#[tokio::main]`) on a thread of its own.
    pub async fn start(self) -> Result<Muster, StartError> {
        if actix_rt::Arbiter::try_current().is_some() {
            return self.start_here().await;
        }
        let (tx, rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("muster-runtime".into())
            .spawn(move || {
                let sys = actix::System::new();
                sys.block_on(async move {
                    match self.start_here().await {
                        Ok(m) => {
                            let mut stopped = m.inner.shared.stopped.subscribe();
                            let _ = tx.send(Ok(m));
                            while stopped.borrow_and_update().is_none() {
                                if stopped.changed().await.is_err() {
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| StartError::Stopped(format!("cannot start the runtime thread: {e}")))?;
        drop(thread);
        rx.await
            .map_err(|_| StartError::Stopped("the runtime thread died at start".into()))?
    }

    async fn start_here(self) -> Result<Muster, StartError> {
        let schemas = Arc::new(SchemaStore::new());
        if let Some(dir) = &self.schemas_dir {
            schemas.load_dir(dir)?;
        }
        for (name, doc) in self.schemas {
            schemas.add(&name, doc)?;
        }
        let (stopped, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            schemas,
            index: Arc::new(CapabilityIndex::default()),
            journal: self
                .journal
                .unwrap_or_else(|| Arc::new(MemoryJournal::default())),
            clock: match self.seed {
                Some(_) => Clock::fixed(1_767_225_600_000), // 2026-01-01T00:00:00Z
                None => Clock::system(),
            },
            ids: match self.seed {
                Some(s) => IdGen::seeded(s),
                None => IdGen::Random,
            },
            dead_letters: DeadLetters::default(),
            stats: Stats::default(),
            config: self.config,
            owners: DashMap::new(),
            gates: DashMap::new(),
            registry: RwLock::new(None),
            router: RwLock::new(None),
            agents: RwLock::new(None),
            stopped,
        });
        let on_stop = shared.clone();
        let root_settings = self.supervision.unwrap_or_default();
        let (s1, s2, s3, s4) = (
            shared.clone(),
            shared.clone(),
            shared.clone(),
            shared.clone(),
        );
        let root = Supervisor::new("root", root_settings)
            .with_shared(shared.clone())
            .on_escalate(move |report| {
                let _ = on_stop.stopped.send(Some(report));
            })
            .child(ChildSpec::new(
                "registry",
                Restart::Permanent,
                Duration::from_secs(5),
                move |link| {
                    let addr = Registry::new(s1.clone()).with_link(link).start();
                    *s1.registry.write() = Some(addr.clone());
                    Ok(Box::new(StopHandle(addr.recipient())) as Box<dyn ChildHandle>)
                },
            ))
            .child(ChildSpec::new(
                "router",
                Restart::Permanent,
                Duration::from_secs(5),
                move |link| {
                    let addr = RouterActor::new(s2.clone()).with_link(link).start();
                    *s2.router.write() = Some(addr.clone());
                    Ok(Box::new(StopHandle(addr.recipient())) as Box<dyn ChildHandle>)
                },
            ))
            .child(ChildSpec::new(
                "agents",
                Restart::Permanent,
                Duration::from_secs(30),
                move |link| {
                    let addr = Supervisor::new("agents", Supervision::default())
                        .with_shared(s3.clone())
                        .with_parent(link)
                        .start();
                    *s3.agents.write() = Some(addr.clone());
                    Ok(Box::new(SupervisorHandle(addr)) as Box<dyn ChildHandle>)
                },
            ))
            .child(ChildSpec::new(
                "owners",
                Restart::Permanent,
                Duration::from_secs(30),
                move |link| {
                    let addr =
                        crate::delegation::owners::OwnerSupervisor::new(s4.clone(), link).start();
                    Ok(Box::new(StopHandle(addr.recipient())) as Box<dyn ChildHandle>)
                },
            ))
            .start();
        // The root starts its children when it first runs: wait for them (bounded).
        let limit = tokio::time::Instant::now() + Duration::from_secs(5);
        while shared.agents.read().is_none() {
            if tokio::time::Instant::now() >= limit {
                return Err(StartError::Stopped(
                    "the root supervisor did not start its children".into(),
                ));
            }
            tokio::task::yield_now().await;
        }
        let muster = Muster {
            inner: Arc::new(Inner {
                shared,
                root,
                arbiter: actix_rt::Arbiter::current(),
                thread: std::thread::current().id(),
            }),
        };
        for def in self.agents {
            muster.register(def).await?;
        }
        Ok(muster)
    }
}

struct Inner {
    shared: Arc<Shared>,
    root: Addr<Supervisor>,
    arbiter: actix_rt::ArbiterHandle,
    thread: std::thread::ThreadId,
}

/// The handle to a running muster runtime. Cheap to clone; `Send + Sync`.
///
/// # Example
/// ```no_run
/// use muster::{AgentDef, CapabilitySpec, Muster, Task};
/// use serde_json::json;
///
/// #[actix::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let muster = Muster::builder()
///         .schema("text", json!({"type": "object", "required": ["text"]}))
///         .agent(AgentDef::function("shout", |input, _ctx| async move {
///             let t = input["text"].as_str().unwrap_or_default().to_uppercase();
///             Ok(json!({"text": t}))
///         }).capability(CapabilitySpec::new("shout", "text", "text")))
///         .start()
///         .await?;
///     let outcome = muster.delegate(Task::new("shout", json!({"text": "hi"}))).await?;
///     assert_eq!(outcome.output, Some(json!({"text": "HI"})));
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Muster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Muster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muster")
            .field("agents", &self.inner.shared.index.len())
            .finish()
    }
}

struct InstanceChild {
    addr: Addr<AgentInstance>,
    id: Arc<str>,
    generation: u64,
    shared: Arc<Shared>,
}

impl ChildHandle for InstanceChild {
    fn shutdown(&mut self) {
        self.addr.do_send(Shutdown);
    }

    fn kill(&mut self, reason: &str) {
        self.addr.do_send(Kill(reason.into()));
    }

    fn removed(&mut self, reason: &str) {
        if let Some(r) = self.shared.registry() {
            r.do_send(Deregister {
                id: self.id.clone(),
                generation: self.generation,
                reason: format!("not restarted after exit ({reason})"),
            });
        }
    }
}

impl Muster {
    /// A builder.
    pub fn builder() -> MusterBuilder {
        MusterBuilder::default()
    }

    fn check_running(&self) -> Result<(), String> {
        match &*self.inner.shared.stopped.borrow() {
            Some(r) => Err(r.clone()),
            None => Ok(()),
        }
    }

    /// Registers an agent type: declares its capabilities (refusing a contract that
    /// conflicts with one already declared), starts its instances under a supervisor of
    /// their own, and returns once every instance is discoverable.
    pub async fn register(&self, def: AgentDef) -> Result<Vec<String>, StartError> {
        self.check_running().map_err(StartError::Stopped)?;
        let shared = &self.inner.shared;
        if def.replicas == 0 {
            return Err(StartError::Agent {
                agent: def.name,
                message: "replicas must be at least 1".into(),
            });
        }
        for (name, doc) in &def.schemas {
            shared.schemas.add(name, doc.clone())?;
        }
        let mut contracts = Vec::new();
        for c in &def.capabilities {
            contracts.push(Arc::new(c.compile(&shared.schemas)?));
        }
        let agent_name: Arc<str> = Arc::from(def.name.as_str());
        let registry = shared
            .registry()
            .ok_or_else(|| StartError::Stopped("the registry is not running".into()))?;
        let agents = shared
            .agents()
            .ok_or_else(|| StartError::Stopped("the agents supervisor is not running".into()))?;
        registry
            .send(Declare {
                agent: agent_name.clone(),
                contracts,
            })
            .await
            .map_err(|e| StartError::Stopped(e.to_string()))??;
        let ids = def.instance_ids();
        let spec = group_spec(def, shared.clone());
        agents
            .send(StartChild(spec))
            .await
            .map_err(|e| StartError::Stopped(e.to_string()))?
            .map_err(|message| StartError::Agent {
                agent: agent_name.to_string(),
                message,
            })?;
        // Wait (bounded) until every instance has registered.
        let limit = tokio::time::Instant::now() + shared.config.start_timeout;
        loop {
            let up = ids
                .iter()
                .all(|id| shared.index.agent(id).is_some_and(|h| h.available()));
            if up {
                return Ok(ids);
            }
            if tokio::time::Instant::now() >= limit {
                return Err(StartError::Agent {
                    agent: agent_name.to_string(),
                    message: format!(
                        "its instances did not all start within {:?} (the journal has their exits)",
                        shared.config.start_timeout
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Every agent instance with its capabilities, state and in-flight count.
    pub fn agents(&self) -> Vec<AgentInfo> {
        self.inner.shared.index.list()
    }

    /// Candidate instances for a capability, least-loaded first, ties by registration
    /// order, excluding `exclude`.
    pub fn candidates(&self, capability: &str, exclude: &[&str]) -> Vec<String> {
        let ex: Vec<Arc<str>> = exclude.iter().map(|s| Arc::from(*s)).collect();
        self.inner
            .shared
            .index
            .candidates(capability, &ex)
            .into_iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Routes an envelope (validated against its schema, resolved to an instance or a
    /// capability) and waits for the reply, which is checked against the capability's
    /// output schema. Every failure carries its reason and is kept as a dead letter.
    pub async fn send(&self, envelope: Envelope) -> Result<Envelope, DeliveryFailure> {
        let wait = self.inner.shared.config.send_wait;
        if std::thread::current().id() == self.inner.thread {
            // On the runtime's own thread the routing logic runs inline: the same code the
            // router actor runs, without a mailbox round trip.
            let router = crate::messaging::Router {
                shared: self.inner.shared.clone(),
            };
            return crate::messaging::router::route(router, envelope, wait).await;
        }
        let sent = match self.inner.shared.router() {
            Some(r) => r
                .send(Route {
                    envelope: envelope.clone(),
                    wait,
                })
                .await
                .map_err(|e| e.to_string()),
            None => Err("no router".to_string()),
        };
        match sent {
            Ok(r) => r,
            Err(e) => {
                let router = crate::messaging::Router {
                    shared: self.inner.shared.clone(),
                };
                Err(router.fail(
                    Arc::new(envelope),
                    crate::messaging::FailureReason::RecipientGone,
                    format!("the router is not running: {e}"),
                    None,
                ))
            }
        }
    }

    /// Submits a task: checks its input against the capability's contract (when the
    /// capability is declared), starts its owner and returns at once.
    pub async fn submit(&self, task: Task) -> Result<TaskHandle, SubmitError> {
        self.check_running().map_err(SubmitError::Stopped)?;
        let shared = &self.inner.shared;
        if task.attempts == 0 {
            return Err(SubmitError::InvalidTask {
                capability: task.capability,
                message: "attempts must be at least 1".into(),
            });
        }
        if task.timeout.is_zero() {
            return Err(SubmitError::InvalidTask {
                capability: task.capability,
                message: "timeout must be more than zero".into(),
            });
        }
        let contract = shared.index.contract(&task.capability);
        if let Some(c) = &contract {
            c.input
                .validate(&task.input)
                .map_err(|source| SubmitError::InvalidInput {
                    capability: task.capability.clone(),
                    source,
                })?;
        }
        let now = shared.clock.now_ms();
        let id = task.id.unwrap_or_else(|| shared.ids.next(now));
        // The journal's payload bound, checked where inputs enter (see `journal::check_payload`).
        let limit = shared.journal.max_payload_bytes();
        if let Err(e) = crate::journal::check_payload(id, &task.input, limit) {
            return Err(SubmitError::InvalidTask {
                capability: task.capability,
                message: e.to_string(),
            });
        }
        shared.journal(Event::TaskSubmitted {
            task: id,
            capability: Arc::from(task.capability.as_str()),
            correlation: task.correlation.unwrap_or(id),
            input: task.input.clone(),
            attempts: task.attempts,
            timeout_ms: task.timeout.as_millis() as u64,
            sender: task.sender.clone(),
        });
        shared.stats.submitted();
        let (tx, rx) = oneshot::channel();
        let fallback = TaskRecord {
            id,
            capability: task.capability.clone(),
            correlation: task.correlation.unwrap_or(id),
            status: TaskStatus::Pending,
            leases: Vec::new(),
            output: None,
            escalation: None,
            stale_rejected: 0,
            submitted_ms: now,
            ended_ms: None,
        };
        let shared2 = shared.clone();
        let Some(registry) = shared.registry() else {
            return Err(SubmitError::Stopped("the registry is not running".into()));
        };
        let make = move || {
            let owner = TaskOwner::new(shared2.clone(), registry, task, id, contract, tx);
            let addr = owner.start();
            shared2.owners.insert(id, addr);
        };
        if std::thread::current().id() == self.inner.thread {
            make();
        } else if !self.inner.arbiter.spawn_fn(make) {
            return Err(SubmitError::Stopped("the runtime's arbiter is gone".into()));
        }
        Ok(TaskHandle { id, rx, fallback })
    }

    /// Submits a task and waits for its outcome.
    pub async fn delegate(&self, task: Task) -> Result<Outcome, SubmitError> {
        Ok(self.submit(task).await?.outcome().await)
    }

    /// Cancels a live task; false if it had already ended (or is unknown).
    pub async fn cancel(&self, task: Uuid) -> bool {
        let addr = self.inner.shared.owners.get(&task).map(|a| a.clone());
        match addr {
            Some(a) => a
                .send(CancelTask {
                    reason: "cancelled by the API".into(),
                })
                .await
                .unwrap_or(false),
            None => false,
        }
    }

    /// Subscribes to registry changes (registrations, state changes, drop-outs).
    pub async fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<RegistryEvent>> {
        self.inner.shared.registry()?.send(Subscribe).await.ok()
    }

    /// The journal.
    pub fn journal(&self) -> Arc<dyn Journal> {
        self.inner.shared.journal.clone()
    }

    /// The schema store.
    pub fn schemas(&self) -> Arc<SchemaStore> {
        self.inner.shared.schemas.clone()
    }

    /// Envelopes that could not be delivered.
    pub fn dead_letters(&self) -> Vec<crate::messaging::DeadLetter> {
        self.inner.shared.dead_letters.list()
    }

    /// Task counters.
    pub fn stats(&self) -> crate::runtime::StatsSnapshot {
        self.inner.shared.stats.snapshot()
    }

    /// Live tasks.
    pub fn live_tasks(&self) -> usize {
        self.inner.shared.owners.len()
    }

    /// Kills an agent instance (simulated crash): its tasks fail over at once and its
    /// supervisor decides on a restart.
    pub fn kill_agent(&self, id: &str, reason: &str) -> bool {
        match self.inner.shared.index.agent(id) {
            Some(h) => {
                h.addr.do_send(Kill(reason.into()));
                true
            }
            None => false,
        }
    }

    /// Takes an agent type out of the runtime (a simulated drop-out): its supervisor
    /// stops its instances, which leave the registry; their tasks fail over. `register`
    /// brings it back. False if no such agent type runs.
    pub async fn unregister(&self, agent_type: &str) -> bool {
        match self.inner.shared.agents() {
            Some(a) => a
                .send(crate::supervision::supervisor::TerminateChild(Arc::from(
                    agent_type,
                )))
                .await
                .unwrap_or(false),
            None => false,
        }
    }

    /// Records a human decision at a gate where a run waits (in this process).
    pub fn approve(
        &self,
        run: Uuid,
        gate: &str,
        decision: crate::workflow::Decision,
    ) -> Result<(), crate::workflow::engine::ApproveError> {
        match self.inner.shared.gates.remove(&(run, gate.to_string())) {
            Some((_, tx)) => {
                tx.send(decision)
                    .map_err(|_| crate::workflow::engine::ApproveError::NotWaiting {
                        run,
                        gate: gate.into(),
                    })
            }
            None => Err(crate::workflow::engine::ApproveError::NotWaiting {
                run,
                gate: gate.into(),
            }),
        }
    }

    /// Delivers a result from outside this runtime's own agent instances (a remote agent,
    /// or one that held a lease before a restart) to the owner of a live task. It is
    /// fenced like any other answer: unless `epoch` is the epoch of the task's current
    /// lease, it is rejected and journaled as `result_stale` (G2). False when no live task
    /// has this id.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(muster: muster::Muster, task: uuid::Uuid) {
    /// // An agent that worked on `task` under epoch 1 before the process restarted:
    /// // the recovered task leases from epoch 2 on, so this answer is fenced.
    /// muster.deliver_result(task, "old#0", 1, serde_json::json!({"late": true}));
    /// # }
    /// ```
    pub fn deliver_result(&self, task: Uuid, agent: &str, epoch: u64, output: Value) -> bool {
        match self.inner.shared.owners.get(&task).map(|a| a.clone()) {
            Some(addr) => {
                addr.do_send(crate::agents::instance::AttemptReport {
                    task_id: task,
                    epoch,
                    agent: Arc::from(agent),
                    result: Ok(output),
                });
                true
            }
            None => false,
        }
    }

    /// Whether a run waits at a gate in this process.
    pub fn is_waiting(&self, run: Uuid, gate: &str) -> bool {
        self.inner
            .shared
            .gates
            .contains_key(&(run, gate.to_string()))
    }

    pub(crate) fn register_gate(
        &self,
        run: Uuid,
        gate: &str,
        tx: oneshot::Sender<crate::workflow::Decision>,
    ) {
        self.inner.shared.gates.insert((run, gate.to_string()), tx);
    }

    pub(crate) fn journal_event(&self, e: Event) {
        self.inner.shared.journal(e);
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.inner.shared.clock.now_ms()
    }

    pub(crate) fn new_id(&self) -> Uuid {
        self.inner.shared.ids.next(self.now_ms())
    }

    /// Why the runtime stopped, if it has (the root supervisor's escalation report).
    pub fn stopped(&self) -> Option<String> {
        self.inner.shared.stopped.borrow().clone()
    }

    /// Waits until the runtime stops; returns the report.
    pub async fn wait_stopped(&self) -> String {
        let mut rx = self.inner.shared.stopped.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return "the runtime is gone".into();
            }
        }
    }

    /// Stops the runtime: cancels live tasks (they end `cancelled`), then stops the
    /// children in reverse start order, each within its shutdown time.
    pub async fn shutdown(&self) {
        // Reverse start order: the owner supervisor (live tasks end `cancelled`), the
        // agent supervisors, the router, the registry.
        let _ = self.inner.root.send(ShutdownSupervisor).await;
        let _ = self.inner.shared.stopped.send(Some("shut down".into()));
    }
}

/// Stops a plain actor child (registry, router) by asking it to stop.
struct StopHandle(actix::Recipient<crate::supervision::supervisor::StopActor>);

impl ChildHandle for StopHandle {
    fn shutdown(&mut self) {
        self.0.do_send(crate::supervision::supervisor::StopActor);
    }

    fn kill(&mut self, _reason: &str) {
        self.0.do_send(crate::supervision::supervisor::StopActor);
    }
}

/// The supervisor of one agent type's instances, as a child of the `agents` supervisor.
/// An agent type past its restart intensity drops out (temporary), rather than being
/// restarted whole.
fn group_spec(def: AgentDef, shared: Arc<Shared>) -> ChildSpec {
    let group_id: Arc<str> = Arc::from(def.name.as_str());
    ChildSpec::new(
        group_id.clone(),
        Restart::Temporary,
        def.supervision.shutdown + Duration::from_secs(1),
        move |link: ChildLink| {
            let mut sup = Supervisor::new(group_id.clone(), def.supervision.clone())
                .with_shared(shared.clone())
                .with_parent(link);
            let caps: Vec<Arc<str>> = def
                .capabilities
                .iter()
                .map(|c| Arc::from(c.name.as_str()))
                .collect();
            for id in def.instance_ids() {
                let id: Arc<str> = Arc::from(id.as_str());
                let cfg = InstanceConfig {
                    id: id.clone(),
                    agent_type: group_id.clone(),
                    generation: 0,
                    capabilities: caps.clone(),
                    concurrency: def.concurrency.max(1),
                    mailbox: def.mailbox,
                    grace: shared.config.grace,
                    liveness: def.liveness,
                };
                let factory = def.factory.clone();
                let shared = shared.clone();
                sup = sup.child(ChildSpec::new(
                    id.clone(),
                    def.restart,
                    def.supervision.shutdown,
                    move |link: ChildLink| {
                        let Some(registry) = shared.registry() else {
                            return Err("the registry is not running".into());
                        };
                        let mut cfg = cfg.clone();
                        cfg.generation = link.generation();
                        let generation = cfg.generation;
                        let agent = factory.create(&id);
                        let handle = AgentInstance::launch(cfg, agent, registry, link);
                        Ok(Box::new(InstanceChild {
                            addr: handle.addr.clone(),
                            id: id.clone(),
                            generation,
                            shared: shared.clone(),
                        }) as Box<dyn ChildHandle>)
                    },
                ));
            }
            let addr = sup.start();
            Ok(Box::new(SupervisorHandle(addr)) as Box<dyn ChildHandle>)
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_handle_can_be_shared_across_threads() {
        fn is<T: Send + Sync + Clone>() {}
        is::<super::Muster>();
    }
}
