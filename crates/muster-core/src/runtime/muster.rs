//! The [`Muster`] handle: what a user holds of a running runtime. Every call goes to the
//! layer that owns the concern (registration to discovery and the agents supervisor,
//! `send` to routing, `submit` to delegation); the handle adds only the hop onto the
//! runtime's thread when the caller is elsewhere.

use std::any::Any;
use std::sync::Arc;

use actix::prelude::*;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use super::config::{RuntimeConfig, StartError};
use super::extensions::Extensions;
use crate::agents::group::{self, GroupContext};
use crate::agents::{AgentDef, InstanceHandle, Presence};
use crate::delegation::{Owners, StatsSnapshot, SubmitError, Task, TaskHandle, TaskRecord};
use crate::discovery::{AgentInfo, CapabilityIndex, Declare, Registry, RegistryEvent, Subscribe};
use crate::ids::IdGen;
use crate::journal::{Journal, Recorder};
use crate::messaging::Capability;
use crate::messaging::{
    DeadLetter, DeadLetters, DeliveryFailure, Envelope, FailureReason, SchemaStore,
};
use crate::routing::{Route, Router, RouterActor, route};
use crate::supervision::{Named, ShutdownSupervisor, StartChild, Supervisor, TerminateChild};

/// What one runtime is made of; built once by [`MusterBuilder::start`].
pub(super) struct Inner {
    pub(super) schemas: Arc<SchemaStore>,
    pub(super) index: Arc<CapabilityIndex>,
    pub(super) recorder: Recorder,
    pub(super) ids: Arc<IdGen>,
    pub(super) dead_letters: Arc<DeadLetters>,
    pub(super) router: Router,
    pub(super) owners: Arc<Owners>,
    pub(super) registry: Named<Registry>,
    pub(super) router_actor: Named<RouterActor>,
    pub(super) agents: Named<Supervisor>,
    pub(super) group: GroupContext,
    pub(super) host: crate::agents::AgentHost,
    pub(super) config: RuntimeConfig,
    pub(super) stopped: watch::Sender<Option<String>>,
    pub(super) root: Addr<Supervisor>,
    pub(super) arbiter: actix_rt::ArbiterHandle,
    pub(super) shards: Arc<crate::shards::Shards>,
    pub(super) thread: std::thread::ThreadId,
    pub(super) extensions: Extensions,
}

/// The handle to a running muster runtime. Cheap to clone; `Send + Sync`.
///
/// # Example
/// ```no_run
/// use muster_core::{AgentDef, CapabilitySpec, Muster, Task};
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
///     assert_eq!(outcome.output.as_deref(), Some(&json!({"text": "HI"})));
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Muster {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Muster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muster")
            .field("agents", &self.inner.index.len())
            .finish()
    }
}

impl Muster {
    fn check_running(&self) -> Result<(), String> {
        match &*self.inner.stopped.borrow() {
            Some(r) => Err(r.clone()),
            None => Ok(()),
        }
    }

    fn on_runtime_thread(&self) -> bool {
        std::thread::current().id() == self.inner.thread
    }

    /// How many shards (threads) the runtime runs on; see [`crate::shards`].
    pub fn shards(&self) -> usize {
        self.inner.shards.len()
    }

    /// Runs the future `work` makes on shard `shard`'s thread (the number taken modulo
    /// [`Muster::shards`]); the future need not be `Send`, as it is made there. The tasks
    /// it submits are owned on that shard and prefer instances there. False when the shard
    /// has stopped. Use it to drive submissions from every core.
    ///
    /// # Example
    /// ```no_run
    /// # async fn f(m: muster_core::Muster) {
    /// for s in 0..m.shards() {
    ///     let m2 = m.clone();
    ///     m.spawn_on_shard(s, move || async move {
    ///         let _ = m2.delegate(muster_core::Task::new("echo", serde_json::json!({}))).await;
    ///     });
    /// }
    /// # }
    /// ```
    pub fn spawn_on_shard<F, Fut>(&self, shard: usize, work: F) -> bool
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        self.inner.shards.arbiter(shard).spawn_fn(move || {
            actix_rt::spawn(work());
        })
    }

    /// Registers an agent type: declares its capabilities (refusing a contract that
    /// conflicts with one already declared), starts its instances under a supervisor of
    /// their own, and returns once every instance is discoverable. If the type's
    /// supervisor gives up first (an instance that cannot start, past its restart
    /// intensity) it fails at once with the supervisor's report, rather than at
    /// [`RuntimeConfig::start_timeout`](super::RuntimeConfig::start_timeout).
    pub async fn register(&self, def: AgentDef) -> Result<Vec<String>, StartError> {
        self.check_running().map_err(StartError::Stopped)?;
        let inner = &self.inner;
        if def.replicas == 0 {
            return Err(StartError::Agent {
                agent: def.name,
                message: "replicas must be at least 1".into(),
            });
        }
        self.declare(&def).await?;
        // Subscribed before anything starts: every registration, state change and drop-out
        // from here on wakes the wait below, which reads the index after each.
        let mut events = self.subscribe().await;
        let agent_name: Arc<str> = Arc::from(def.name.as_str());
        // Shared services (an LLM endpoint's provider) start before the instances.
        def.factory
            .attach(inner.host.clone())
            .await
            .map_err(|message| StartError::Agent {
                agent: agent_name.to_string(),
                message,
            })?;
        let ids = def.instance_ids();
        let spec = group::spec(def, inner.group.clone());
        inner
            .agents
            .get()
            .send(StartChild(spec))
            .await
            .map_err(|e| StartError::Stopped(e.to_string()))?
            .map_err(|message| StartError::Agent {
                agent: agent_name.to_string(),
                message,
            })?;
        // Wait (bounded) until every instance has registered, or the type dropped out (its
        // supervisor gave up: nothing more will start), looking again at each registry
        // event rather than on a timer.
        let limit = tokio::time::Instant::now() + inner.config.start_timeout;
        // The instances before `ready` were found up: each event looks on from there, so a
        // type of N replicas costs O(N) looks in all, not O(N) per registry event.
        let mut ready = 0;
        loop {
            while ids
                .get(ready)
                .is_some_and(|id| inner.index.agent(id).is_some_and(|h| h.available()))
            {
                ready += 1;
            }
            if ready == ids.len() {
                return Ok(ids);
            }
            if let Some(reason) = inner.index.dropped_out(&agent_name) {
                return Err(StartError::Agent {
                    agent: agent_name.to_string(),
                    message: format!("dropped out before it started: {reason}"),
                });
            }
            let Some(rx) = events.as_mut() else {
                return Err(StartError::Stopped(
                    "the registry stopped while the agent started".into(),
                ));
            };
            match tokio::time::timeout_at(limit, rx.recv()).await {
                // Something changed (or so much did that some events were skipped): look.
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                // The registry restarted (a new one publishes on a new channel).
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    events = self.subscribe().await;
                }
                Err(_) => {
                    return Err(StartError::Agent {
                        agent: agent_name.to_string(),
                        message: format!(
                            "its instances did not all start within {:?} (the journal has their exits)",
                            inner.config.start_timeout
                        ),
                    });
                }
            }
        }
    }

    /// Declares an agent type's capabilities (adding its schemas, refusing a contract that
    /// conflicts with one already declared) without starting any instance of it: what a
    /// control node does for agents that run on other machines, whose instances then join
    /// through [`Muster::attach`]. [`Muster::register`] declares and starts.
    ///
    /// # Example
    /// ```
    /// # actix::System::new().block_on(async {
    /// use muster_core::{AgentDef, CapabilitySpec, Muster};
    ///
    /// let m = Muster::builder().schema("any", serde_json::json!({})).start().await.unwrap();
    /// let def = AgentDef::function("echo", |v, _| async move { Ok(v) })
    ///     .capability(CapabilitySpec::new("echo", "any", "any"));
    /// m.declare(&def).await.unwrap();
    /// assert!(m.contract("echo").is_some());
    /// assert!(m.agents().is_empty()); // declared, not started
    /// # m.shutdown().await;
    /// # });
    /// ```
    pub async fn declare(&self, def: &AgentDef) -> Result<(), StartError> {
        self.check_running().map_err(StartError::Stopped)?;
        let inner = &self.inner;
        for (name, doc) in &def.schemas {
            inner.schemas.add(name, doc.clone())?;
        }
        let mut contracts = Vec::new();
        for c in &def.capabilities {
            contracts.push(Arc::new(c.compile(&inner.schemas)?));
        }
        inner
            .registry
            .get()
            .send(Declare {
                agent: Arc::from(def.name.as_str()),
                contracts,
            })
            .await
            .map_err(|e| StartError::Stopped(e.to_string()))??;
        Ok(())
    }

    /// The contract of a declared capability.
    pub fn contract(&self, capability: &str) -> Option<Arc<Capability>> {
        self.inner.index.contract(capability)
    }

    /// The handle of a registered instance.
    pub fn instance(&self, id: &str) -> Option<Arc<InstanceHandle>> {
        self.inner.index.agent(id)
    }

    /// Registers an instance that this runtime does not run (one on another machine,
    /// reached through its handle's mailbox): it joins the capability index like a local
    /// instance once the registry has handled it. Its capabilities must have been declared
    /// ([`Muster::declare`]).
    pub fn attach(&self, handle: Arc<InstanceHandle>) {
        self.inner.registry.get().do_send(Presence::Up {
            handle,
            liveness: None,
        });
    }

    /// Takes an instance registered with [`Muster::attach`] out of the index (generation
    /// `generation` only, so a late detach cannot remove a successor), for `reason`.
    pub fn detach(&self, id: Arc<str>, generation: u64, reason: String) {
        self.inner.registry.get().do_send(Presence::Down {
            id,
            generation,
            reason,
        });
    }

    /// Every agent instance with its capabilities, state and in-flight count.
    pub fn agents(&self) -> Vec<AgentInfo> {
        self.inner.index.list()
    }

    /// Candidate instances for a capability, least-loaded first, ties by registration
    /// order, excluding `exclude`.
    pub fn candidates(&self, capability: &str, exclude: &[&str]) -> Vec<String> {
        let ex: Vec<Arc<str>> = exclude.iter().map(|s| Arc::from(*s)).collect();
        self.inner
            .index
            .candidates(capability, &ex)
            .into_iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// The instance the next task for `capability` would be leased to now: the least loaded
    /// available one below its capacity outside `exclude`, ties by registration order (what
    /// a task owner picks), without reserving anything. O(log n) in the capability's
    /// instances; `None` when every candidate is full or there is none.
    ///
    /// # Example
    /// ```
    /// # actix::System::new().block_on(async {
    /// use muster_core::{AgentDef, CapabilitySpec, Muster};
    ///
    /// let m = Muster::builder()
    ///     .schema("any", serde_json::json!({}))
    ///     .agent(
    ///         AgentDef::function("echo", |v, _| async move { Ok(v) })
    ///             .capability(CapabilitySpec::new("echo", "any", "any"))
    ///             .replicas(3),
    ///     )
    ///     .start()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(m.least_loaded("echo", &[]).as_deref(), Some("echo#0"));
    /// assert_eq!(m.least_loaded("echo", &["echo#0"]).as_deref(), Some("echo#1"));
    /// assert_eq!(m.least_loaded("nobody", &[]), None);
    /// # m.shutdown().await;
    /// # });
    /// ```
    pub fn least_loaded(&self, capability: &str, exclude: &[&str]) -> Option<String> {
        let ex: Vec<Arc<str>> = exclude.iter().map(|s| Arc::from(*s)).collect();
        self.inner
            .index
            .least_loaded(capability, &ex)
            .ok()
            .map(|h| h.id.to_string())
    }

    /// Routes an envelope (validated against its schema, resolved to an instance or a
    /// capability) and waits for the reply, which is checked against the capability's
    /// output schema. Every failure carries its reason and is kept as a dead letter.
    pub async fn send(&self, envelope: Envelope) -> Result<Envelope, DeliveryFailure> {
        let wait = self.inner.config.send_wait;
        if self.on_runtime_thread() {
            // On the runtime's own thread the routing logic runs inline: the same code the
            // router actor runs, without a mailbox round trip.
            return route(self.inner.router.clone(), envelope, wait).await;
        }
        let sent = self
            .inner
            .router_actor
            .get()
            .send(Route {
                envelope: envelope.clone(),
                wait,
            })
            .await;
        match sent {
            Ok(r) => r,
            Err(e) => Err(self.inner.router.fail(
                Arc::new(envelope),
                FailureReason::RecipientGone,
                format!("the router is not running: {e}"),
                None,
            )),
        }
    }

    /// Submits a task: checks its input against the capability's contract (when the
    /// capability is declared), starts its owner and returns at once. During a shutdown a
    /// task is either refused ([`SubmitError::Stopped`]) or accepted and ended
    /// `cancelled`: every task accepted has a terminal record.
    pub async fn submit(&self, task: Task) -> Result<TaskHandle, SubmitError> {
        self.check_running().map_err(SubmitError::Stopped)?;
        // Owned on this thread's shard (a thread that is no shard's: the shards in turn).
        self.inner.owners.submit(task)
    }

    /// Gives the scopes held when a journal ended (a crash; see
    /// [`held_at`](crate::delegation::scope_table::held_at)) back to the tasks that held
    /// them, before anything else is submitted: a task resubmitted with the same id gets
    /// its scope at once, and every other task whose scope overlaps waits for it.
    ///
    /// # Example
    /// ```no_run
    /// # async fn f(m: muster_core::Muster, records: Vec<muster_core::Record>) {
    /// m.restore_scopes(muster_core::delegation::scope_table::held_at(&records));
    /// # }
    /// ```
    pub fn restore_scopes(&self, held: Vec<(Uuid, crate::messaging::Scope)>) {
        if held.is_empty() {
            return;
        }
        let owners = self.inner.owners.clone();
        if self.on_runtime_thread() {
            owners.restore_scopes(held);
        } else {
            self.inner
                .arbiter
                .spawn_fn(move || owners.restore_scopes(held));
        }
    }

    /// Submits a task and waits for its outcome.
    pub async fn delegate(&self, task: Task) -> Result<TaskRecord, SubmitError> {
        Ok(self.submit(task).await?.outcome().await)
    }

    /// Cancels a live task; false if it had already ended (or is unknown).
    pub async fn cancel(&self, task: Uuid) -> bool {
        self.inner.owners.cancel(task, "cancelled by the API").await
    }

    /// Subscribes to registry changes (registrations, state changes, drop-outs).
    pub async fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<RegistryEvent>> {
        self.inner.registry.get().send(Subscribe).await.ok()
    }

    /// The journal.
    pub fn journal(&self) -> Arc<dyn Journal> {
        self.inner.recorder.journal().clone()
    }

    /// The journal handle of this runtime: its journal and the clock that stamps records.
    /// Front ends (the workflow engine, tools) journal what they do through it.
    pub fn recorder(&self) -> &Recorder {
        &self.inner.recorder
    }

    /// A fresh id (UUID v7) from the runtime's id generator (seeded in simulations).
    pub fn new_id(&self) -> Uuid {
        self.inner.ids.next(self.inner.recorder.now_ms())
    }

    /// The schema store.
    pub fn schemas(&self) -> Arc<SchemaStore> {
        self.inner.schemas.clone()
    }

    /// Envelopes that could not be delivered: the most recent
    /// [`RuntimeConfig::dead_letters`](super::RuntimeConfig::dead_letters) of them (every one
    /// is journaled `envelope_failed`).
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.dead_letters.list()
    }

    /// Dead letters ever, and how many of them are no longer kept in memory (older than
    /// the most recent [`RuntimeConfig::dead_letters`](super::RuntimeConfig::dead_letters)).
    ///
    /// # Example
    /// ```
    /// # actix::System::new().block_on(async {
    /// let m = muster_core::Muster::builder().start().await.unwrap();
    /// assert_eq!(m.dead_letter_counts(), (0, 0));
    /// # m.shutdown().await;
    /// # });
    /// ```
    pub fn dead_letter_counts(&self) -> (u64, u64) {
        let d = &self.inner.dead_letters;
        (d.total(), d.dropped())
    }

    /// Task counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.owners.snapshot()
    }

    /// Live tasks.
    pub fn live_tasks(&self) -> usize {
        self.inner.owners.live()
    }

    /// The runtime's value of type `T` (made with `T::default()` on first use): state that
    /// a layer above the runtime keeps per runtime, such as the workflow engine's gates.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(muster: muster_core::Muster) {
    /// #[derive(Default)]
    /// struct Counter(std::sync::atomic::AtomicU64);
    /// muster.extension::<Counter>().0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    /// # }
    /// ```
    pub fn extension<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        self.inner.extensions.get_or_default::<T>()
    }

    /// Kills an agent instance (simulated crash): its tasks fail over at once and its
    /// supervisor decides on a restart.
    pub fn kill_agent(&self, id: &str, reason: &str) -> bool {
        match self.inner.index.agent(id) {
            Some(h) => {
                h.kill(reason);
                true
            }
            None => false,
        }
    }

    /// Takes an agent type out of the runtime (a simulated drop-out): its supervisor
    /// stops its instances, which leave the registry; their tasks fail over. `register`
    /// brings it back. False if no such agent type runs.
    pub async fn unregister(&self, agent_type: &str) -> bool {
        self.inner
            .agents
            .get()
            .send(TerminateChild(Arc::from(agent_type)))
            .await
            .unwrap_or(false)
    }

    /// Delivers a result from outside this runtime's own agent instances (a remote agent,
    /// or one that held a lease before a restart) to the owner of a live task. It is
    /// fenced like any other answer: unless `epoch` is the epoch of the task's current
    /// lease, it is rejected and journaled as `result_stale` (G2). False when no live task
    /// has this id.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(muster: muster_core::Muster, task: uuid::Uuid) {
    /// // An agent that worked on `task` under epoch 1 before the process restarted:
    /// // the recovered task leases from epoch 2 on, so this answer is fenced.
    /// muster.deliver_result(task, "old#0", 1, serde_json::json!({"late": true}));
    /// # }
    /// ```
    pub fn deliver_result(&self, task: Uuid, agent: &str, epoch: u64, output: Value) -> bool {
        self.inner.owners.deliver_result(task, agent, epoch, output)
    }

    /// Why the runtime stopped, if it has (the root supervisor's escalation report).
    pub fn stopped(&self) -> Option<String> {
        self.inner.stopped.borrow().clone()
    }

    /// Stops the runtime: cancels live tasks (they end `cancelled`), then stops the
    /// children in reverse start order, each within its shutdown time.
    pub async fn shutdown(&self) {
        // Reverse start order: the owner supervisor (live tasks end `cancelled`), the
        // agent supervisors, the router, the registry.
        let _ = self.inner.root.send(ShutdownSupervisor).await;
        self.inner.shards.stop();
        let _ = self.inner.stopped.send(Some("shut down".into()));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_handle_can_be_shared_across_threads() {
        fn is<T: Send + Sync + Clone>() {}
        is::<super::Muster>();
    }
}
