//! The worker's half of the cluster: it checks its capabilities against the cluster's
//! contracts (refusing to join, by name, on any difference), publishes its live instances
//! in one key per worker (more only when they do not fit one message) and keeps it alive
//! with heartbeats, runs the assignments it receives on its own instances, and reports
//! each attempt back with its task id and epoch.
//!
//! It decides one thing about a task besides running it: whether its instance has a slot
//! for it now. Capacity is decided here, where the instance lives: an assignment that finds
//! its instance full waits here for a slot (word of it goes on as for a running attempt),
//! never refused, whichever control node sent it. The owner on the control node leases,
//! fences and reassigns. Schemas are checked here too (input on arrival, output before it
//! is sent), so a bad payload is named on the node that produced it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use super::effects::{Acks, SETTLE_WAIT, WorkerJournal};
use super::wire::{
    self, AssignMsg, BeatMsg, ContractRecord, ControlMsg, EffectAckMsg, InstanceRecord, ReportMsg,
    WIRE_VERSION, WorkerRecord,
};
use super::{ClusterConfig, ClusterError, Outbox, Replication};
use muster_core::agents::effects::Ledger;
use muster_core::agents::protocol::{Assign, ReplyTo};
use muster_core::agents::{AgentState, Failure, InstanceHandle};
use muster_core::messaging::Capability;
use muster_core::runtime::Muster;

/// Assignments that may wait at once for a slot on this worker's instances. Each control
/// node holds at most an instance's capacity of attempts on it, so the waits are bounded
/// by (control nodes - 1) x capacity; this bound only guards against a peer that breaks
/// that rule (an assignment beyond it is refused as `agent_gone`).
pub const MAX_WAITING: usize = 1 << 16;

/// The longest attempt a worker accepts (a larger timeout in an assignment is cut to it).
pub const MAX_ATTEMPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// A worker node: hosts the instances of a runtime for a cluster's control nodes.
///
/// # Example
/// ```no_run
/// # async fn demo(muster: muster_core::Muster) -> Result<(), muster_cluster::ClusterError> {
/// use muster_cluster::{ClusterConfig, Worker};
///
/// let worker = Worker::start(muster, ClusterConfig::new("nats://127.0.0.1:4222", "w1")).await?;
/// println!("{}", worker.replication().text()); // replicas: 3 (--replicas auto; ...)
/// // ... until asked to stop:
/// worker.leave().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("node", &self.inner.config.node)
            .finish_non_exhaustive()
    }
}

struct Inner {
    muster: Muster,
    config: ClusterConfig,
    outbox: Outbox,
    agents: async_nats::jetstream::kv::Store,
    max_bytes: usize,
    /// Which part (key) of this worker's record each instance is in, and the keys written.
    parts: Mutex<Parts>,
    /// Assignments waiting for a slot, by (task, epoch): their instance and how to cancel
    /// them.
    waiting: Mutex<HashMap<(Uuid, u64), Waiting>>,
    /// Told when an attempt ends on an instance (its slot is free), by instance id.
    freed: Mutex<HashMap<String, Arc<Notify>>>,
    /// Assignments that found their instance full and waited for a slot.
    waited: AtomicU64,
    /// Peer messages refused by [`wire::decode`].
    unreadable: AtomicU64,
    /// The answers its attempts' effect records wait for.
    acks: Arc<Acks>,
    /// Each capability's contract record, computed once at join (contracts do not change
    /// while a worker runs).
    contracts: HashMap<String, ContractRecord>,
    /// The buckets this worker opened, with their replica counts.
    replication: Replication,
}

impl Worker {
    /// Joins the cluster at `config.url` as worker `config.node` with the instances of
    /// `muster`: waits (at most `config.join_timeout`) for the cluster's contracts, refuses
    /// to join if any capability differs, then publishes its instances and serves.
    pub async fn start(muster: Muster, config: ClusterConfig) -> Result<Worker, ClusterError> {
        let client = config.connect().await?;
        let js = async_nats::jetstream::new(client.clone());
        let limit = tokio::time::Instant::now() + config.join_timeout;
        let (agents, contracts) = loop {
            let a = js.get_key_value(wire::AGENTS_BUCKET).await;
            let c = js.get_key_value(wire::CONTRACTS_BUCKET).await;
            if let (Ok(a), Ok(c)) = (a, c) {
                break (a, c);
            }
            if tokio::time::Instant::now() >= limit {
                return Err(ClusterError::Nats(format!(
                    "no control node has opened the cluster at {} within {:?} (buckets {} and {})",
                    config.url,
                    config.join_timeout,
                    wire::AGENTS_BUCKET,
                    wire::CONTRACTS_BUCKET
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // Every capability served here must be the cluster's contract.
        let mut names: Vec<String> = muster
            .agents()
            .into_iter()
            .flat_map(|a| a.capabilities.into_iter().map(|c| c.name))
            .collect();
        names.sort();
        names.dedup();
        let mut records = HashMap::new();
        for name in names {
            let Some(ours) = muster.contract(&name) else {
                continue;
            };
            let ours = ContractRecord::of(&ours);
            let theirs = loop {
                match contracts.get(wire::contract_key(&name)).await {
                    Ok(Some(body)) => break body,
                    Ok(None) | Err(_) if tokio::time::Instant::now() < limit => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    _ => {
                        return Err(ClusterError::ContractMismatch {
                            capability: name,
                            why: format!(
                                "the cluster declares no such capability (no control node's \
                                 cast declared it within {:?})",
                                config.join_timeout
                            ),
                        });
                    }
                }
            };
            let theirs: ContractRecord =
                wire::decode(&theirs).map_err(|e| ClusterError::ContractMismatch {
                    capability: name.clone(),
                    why: format!("the cluster's record of it is unreadable: {e}"),
                })?;
            theirs
                .differs(&ours)
                .map_err(|why| ClusterError::ContractMismatch {
                    capability: name.clone(),
                    why,
                })?;
            records.insert(name, ours);
        }
        // Every live control node must speak this wire version.
        super::check_control_nodes(&js, &config).await?;
        // The buckets' replica counts: as the control node made them, or, with
        // `--replicas N` here and another count there, updated to N.
        let mut placer = super::replicas::Placer::new(&js, &client, &config);
        let agents = placer.adjust(agents).await?;
        placer.adjust(contracts).await?;
        let replication = placer.replication();
        // Heartbeats follow the TTL the control node set on the bucket, whatever this
        // worker was told.
        let mut config = config;
        if let Ok(status) = agents.status().await {
            let ttl = status.max_age();
            if (super::MIN_TTL..=super::MAX_TTL).contains(&ttl) {
                config.ttl = ttl;
            }
        }
        let assigns = client
            .subscribe(wire::assign_subject(&config.node))
            .await
            .map_err(|e| ClusterError::Nats(format!("cannot subscribe to assignments: {e}")))?;
        let controls = client
            .subscribe(wire::control_subject(&config.node))
            .await
            .map_err(|e| ClusterError::Nats(format!("cannot subscribe to controls: {e}")))?;
        let effect_acks = client
            .subscribe(wire::effect_ack_subject(&config.node))
            .await
            .map_err(|e| ClusterError::Nats(format!("cannot subscribe to effect answers: {e}")))?;
        let max_bytes = client.server_info().max_payload.max(1024);
        let worker = Worker {
            inner: Arc::new(Inner {
                muster,
                outbox: Outbox::start(client),
                agents,
                max_bytes,
                parts: Mutex::new(Parts::default()),
                waiting: Mutex::new(HashMap::new()),
                freed: Mutex::new(HashMap::new()),
                waited: AtomicU64::new(0),
                unreadable: AtomicU64::new(0),
                acks: Arc::new(Acks::default()),
                contracts: records,
                config,
                replication,
            }),
        };
        worker.inner.heartbeat().await;
        worker.spawn_heartbeats();
        worker.spawn_assigns(assigns);
        worker.spawn_controls(controls);
        worker.spawn_effect_acks(effect_acks);
        Ok(worker)
    }

    /// The buckets this worker opened when it joined (`muster_agents`,
    /// `muster_contracts`), each with its replica count and what was done about the
    /// `--replicas` setting.
    pub fn replication(&self) -> &Replication {
        &self.inner.replication
    }

    /// The keys this worker has published (one per part of its record: one unless its
    /// instances do not fit the server's payload limit).
    pub fn keys(&self) -> Vec<String> {
        let node = &self.inner.config.node;
        let p = self.inner.parts.lock();
        p.written
            .iter()
            .map(|n| wire::worker_key(node, *n))
            .collect()
    }

    /// The instances this worker has published, by their id on this node.
    pub fn instances(&self) -> Vec<String> {
        let p = self.inner.parts.lock();
        let mut ids: Vec<String> = p.of.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Assignments that found their instance full and waited here for a slot (rather than
    /// being refused), since the worker joined.
    pub fn waited(&self) -> u64 {
        self.inner.waited.load(Ordering::Relaxed)
    }

    /// Peer messages refused by [`wire::decode`] (not JSON, or not what their published
    /// schema allows): assignments, control messages and effect answers. Each was logged and dropped;
    /// none reached an instance.
    pub fn unreadable(&self) -> u64 {
        self.inner.unreadable.load(Ordering::Relaxed)
    }

    /// Leaves the cluster: deletes its keys, so that control nodes reassign its tasks at
    /// once rather than at the TTL.
    pub async fn leave(&self) {
        let keys = self.keys();
        self.inner.parts.lock().written.clear();
        for k in keys {
            let _ = self.inner.agents.delete(&k).await;
        }
    }

    fn spawn_heartbeats(&self) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut every = super::quarter_ttl(&inner.config);
            loop {
                every.tick().await;
                if inner.muster.stopped().is_some() {
                    break;
                }
                inner.heartbeat().await;
            }
        });
    }

    fn spawn_assigns(&self, mut sub: async_nats::Subscriber) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                match wire::decode::<AssignMsg>(&m.payload) {
                    Ok(a) => inner.on_assign(a),
                    Err(e) => {
                        inner.unreadable.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "an unreadable assignment was dropped")
                    }
                }
            }
        });
    }

    /// Hands each control node's answer to the effect record waiting for it.
    fn spawn_effect_acks(&self, mut sub: async_nats::Subscriber) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                match wire::decode::<EffectAckMsg>(&m.payload) {
                    Ok(a) => {
                        inner.acks.answer(a);
                    }
                    Err(e) => {
                        inner.unreadable.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "an unreadable effect answer was dropped")
                    }
                }
            }
        });
    }

    fn spawn_controls(&self, mut sub: async_nats::Subscriber) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                match wire::decode::<ControlMsg>(&m.payload) {
                    Ok(ControlMsg::Cancel {
                        instance,
                        task_id,
                        epoch,
                    }) => {
                        // Waiting for a slot here, or running (or queued) on the instance.
                        let waiting = inner.waiting.lock().remove(&(task_id, epoch));
                        match waiting {
                            Some(w) => {
                                let _ = w.cancel.send(());
                            }
                            None => {
                                if let Some(h) = inner.muster.instance(&instance) {
                                    h.cancel(task_id, epoch);
                                }
                            }
                        }
                    }
                    Ok(ControlMsg::Kill { instance, reason }) => {
                        inner.muster.kill_agent(&instance, &reason);
                    }
                    Err(e) => {
                        inner.unreadable.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "an unreadable control message was dropped")
                    }
                }
            }
        });
    }
}

/// An assignment waiting at this worker for a slot of its instance.
struct Waiting {
    instance: String,
    cancel: oneshot::Sender<()>,
}

/// How the worker's instances are split into parts (keys) of its record. An instance
/// stays in the part it was first put in while it lives, so that a control node never
/// sees it leave one part and join another.
#[derive(Default)]
struct Parts {
    /// The part of each instance (by its id on this node).
    of: HashMap<String, usize>,
    /// The encoded size of each part's instances, as they were placed.
    bytes: BTreeMap<usize, usize>,
    /// The parts whose key is written now.
    written: HashSet<usize>,
}

impl Parts {
    /// Places instance `id` of `size` encoded bytes: the part it is in, or the first
    /// part with room under `budget`.
    fn place(&mut self, id: &str, size: usize, budget: usize) -> usize {
        if let Some(p) = self.of.get(id) {
            return *p;
        }
        let mut part = 0;
        while self.bytes.get(&part).is_some_and(|b| *b + size > budget) {
            part += 1;
        }
        *self.bytes.entry(part).or_default() += size;
        self.of.insert(id.to_string(), part);
        part
    }

    /// Forgets every instance not in `live` (it left: its part's room is free again).
    fn keep(&mut self, live: &HashSet<&str>, sizes: &HashMap<String, usize>) {
        let gone: Vec<(String, usize)> = self
            .of
            .iter()
            .filter(|(id, _)| !live.contains(id.as_str()))
            .map(|(id, p)| (id.clone(), *p))
            .collect();
        for (id, p) in gone {
            self.of.remove(&id);
            let size = sizes.get(&id).copied().unwrap_or(0);
            if let Some(b) = self.bytes.get_mut(&p) {
                *b = b.saturating_sub(size);
            }
        }
    }
}

impl Inner {
    /// Publishes the worker's live instances (state and load now) in one write per part
    /// of its record; deletes the keys of parts left empty.
    async fn heartbeat(&self) {
        let node = &self.config.node;
        // Assignments waiting here count in their instance's load.
        let mut waiting: HashMap<String, usize> = HashMap::new();
        for w in self.waiting.lock().values() {
            *waiting.entry(w.instance.clone()).or_default() += 1;
        }
        let mut live: Vec<InstanceRecord> = Vec::new();
        for a in self.muster.agents() {
            if a.node.is_some() {
                continue;
            }
            let Some(h) = self.muster.instance(&a.id) else {
                continue;
            };
            if !h.available() {
                continue;
            }
            let capabilities = a
                .capabilities
                .iter()
                .filter(|c| self.contracts.contains_key(c.name.as_str()))
                .map(|c| c.name.to_string())
                .collect();
            live.push(InstanceRecord {
                id: a.id.to_string(),
                agent: a.agent.to_string(),
                generation: a.generation,
                concurrency: h.concurrency,
                capacity: h.capacity,
                state: a.state,
                load: h.load() + waiting.get(&*a.id).copied().unwrap_or(0),
                capabilities,
            });
        }
        live.sort_by(|a, b| a.id.cmp(&b.id));
        // Room for a part's instances: the payload limit less every contract (a part
        // carries those of its instances) and a margin for the load's digits.
        let contracts_bytes: usize = self
            .contracts
            .values()
            .map(|c| serde_json::to_vec(c).map_or(0, |b| b.len() + 1))
            .sum();
        let budget = (self.max_bytes * 3 / 4)
            .saturating_sub(contracts_bytes)
            .max(1);
        let sizes: HashMap<String, usize> = live
            .iter()
            .map(|r| {
                (
                    r.id.clone(),
                    serde_json::to_vec(r).map_or(0, |b| b.len() + 1),
                )
            })
            .collect();
        let mut records: BTreeMap<usize, WorkerRecord> = BTreeMap::new();
        let stale: Vec<usize> = {
            let mut parts = self.parts.lock();
            let ids: HashSet<&str> = live.iter().map(|r| r.id.as_str()).collect();
            parts.keep(&ids, &sizes);
            for rec in &live {
                let part = parts.place(&rec.id, sizes.get(&rec.id).copied().unwrap_or(0), budget);
                let r = records.entry(part).or_insert_with(|| WorkerRecord {
                    wire: WIRE_VERSION,
                    node: node.clone(),
                    part,
                    contracts: Vec::new(),
                    instances: Vec::new(),
                });
                for c in &rec.capabilities {
                    if !r.contracts.iter().any(|k| &k.name == c)
                        && let Some(k) = self.contracts.get(c)
                    {
                        r.contracts.push(k.clone());
                    }
                }
                r.instances.push(rec.clone());
            }
            parts
                .written
                .iter()
                .filter(|p| !records.contains_key(p))
                .copied()
                .collect()
        };
        for p in stale {
            let _ = self.agents.delete(wire::worker_key(node, p)).await;
            self.parts.lock().written.remove(&p);
        }
        for (part, rec) in records {
            let body = match serde_json::to_vec(&rec) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(part, error = %e, "heartbeat not encoded");
                    continue;
                }
            };
            if body.len() > self.max_bytes {
                tracing::warn!(
                    part,
                    bytes = body.len(),
                    limit = self.max_bytes,
                    "a part of the worker's record is above the payload limit"
                );
            }
            match self
                .agents
                .put(wire::worker_key(node, part), body.into())
                .await
            {
                Ok(_) => {
                    self.parts.lock().written.insert(part);
                }
                Err(e) => tracing::warn!(part, error = %e, "heartbeat not written"),
            }
        }
    }

    /// The notification of a freed slot on instance `id`.
    fn freed(&self, id: &str) -> Arc<Notify> {
        self.freed
            .lock()
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    fn report(&self, to: &str, msg: &ReportMsg) {
        let body = match serde_json::to_vec(msg) {
            Ok(b) if b.len() <= self.max_bytes => b,
            Ok(b) => {
                let too_big = ReportMsg {
                    result: Err(Failure::Protocol(format!(
                        "the output is {} bytes encoded, above the cluster's bound of {} bytes; \
                         it was not sent",
                        b.len(),
                        self.max_bytes
                    ))),
                    usage: None,
                    ..msg.clone()
                };
                match serde_json::to_vec(&too_big) {
                    Ok(b) => b,
                    Err(_) => return,
                }
            }
            Err(_) => return,
        };
        if !self.outbox.send(to.to_string(), body.into()) {
            tracing::warn!(task = %msg.task_id, "report not queued (outbox full); the lease timer covers it");
        }
    }

    fn on_assign(self: &Arc<Self>, a: AssignMsg) {
        let env = a.envelope.clone();
        let task_id = env.task_id.unwrap_or(env.id);
        let epoch = env.epoch;
        let instance = wire::remote_id(&self.config.node, &a.instance);
        let answer = |result: Result<serde_json::Value, Failure>| ReportMsg {
            task_id,
            epoch,
            instance: instance.clone(),
            result,
            usage: None,
        };
        let Some(handle) = self.muster.instance(&a.instance) else {
            self.report(
                &a.report_to,
                &answer(Err(Failure::AgentGone(format!(
                    "no instance {} on node {}",
                    a.instance, self.config.node
                )))),
            );
            return;
        };
        let contract = self.muster.contract(&env.topic);
        if let Some(c) = &contract
            && let Err(e) = c.input.validate(&env.payload)
        {
            self.report(&a.report_to, &answer(Err(Failure::ContractViolation(e))));
            return;
        }
        if !handle.available() {
            let why = format!("instance {instance} is {}", handle.state());
            self.report(&a.report_to, &answer(Err(Failure::AgentGone(why))));
            return;
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(a.timeout_ms).min(MAX_ATTEMPT);
        if handle.try_reserve() {
            self.start(handle, a, contract, deadline);
            return;
        }
        // Full: the slot is granted here when one frees, whichever control node asked.
        let (cancel, cancelled) = oneshot::channel();
        {
            let mut w = self.waiting.lock();
            if w.len() >= MAX_WAITING {
                drop(w);
                let why = format!(
                    "instance {instance} is full and {MAX_WAITING} assignments wait on node {}",
                    self.config.node
                );
                self.report(&a.report_to, &answer(Err(Failure::AgentGone(why))));
                return;
            }
            w.insert(
                (task_id, epoch),
                Waiting {
                    instance: a.instance.clone(),
                    cancel,
                },
            );
        }
        self.waited.fetch_add(1, Ordering::Relaxed);
        let inner = self.clone();
        tokio::spawn(async move {
            inner
                .wait_for_slot(handle, a, contract, deadline, cancelled)
                .await
        });
    }

    /// Holds assignment `a` until its instance has a free slot (then runs it), telling
    /// its control node meanwhile that it lives, as for a running attempt. It ends
    /// without running when the instance goes (`agent_gone`), the deadline passes
    /// (`timeout`: the owner has already acted) or the owner cancels it.
    async fn wait_for_slot(
        self: Arc<Self>,
        handle: Arc<InstanceHandle>,
        a: AssignMsg,
        contract: Option<Arc<Capability>>,
        deadline: tokio::time::Instant,
        mut cancelled: oneshot::Receiver<()>,
    ) {
        let task_id = a.envelope.task_id.unwrap_or(a.envelope.id);
        let epoch = a.envelope.epoch;
        let instance = wire::remote_id(&self.config.node, &a.instance);
        let alive: bytes::Bytes = serde_json::to_vec(&BeatMsg {
            instance: instance.clone(),
            task_id,
            epoch,
            agent: false,
        })
        .unwrap_or_default()
        .into();
        let freed = self.freed(&a.instance);
        let mut every =
            tokio::time::interval(Duration::from_millis(a.alive_every_ms.clamp(10, 60_000)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            let notified = freed.notified();
            tokio::pin!(notified);
            // Registered before the look, so that a slot freed after it wakes this wait.
            notified.as_mut().enable();
            let same = self
                .muster
                .instance(&a.instance)
                .is_some_and(|h| Arc::ptr_eq(&h, &handle));
            if !same || !handle.available() {
                break Err(Failure::AgentGone(format!(
                    "instance {instance} is {} (the assignment waited for a slot)",
                    if same {
                        handle.state()
                    } else {
                        AgentState::Stopped
                    }
                )));
            }
            if handle.try_reserve() {
                break Ok(());
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = every.tick() => {
                    self.outbox.send(a.beat_to.clone(), alive.clone());
                }
                _ = tokio::time::sleep_until(deadline) => break Err(Failure::Timeout),
                _ = &mut cancelled => break Err(Failure::Cancelled),
            }
        };
        let still_waiting = self.waiting.lock().remove(&(task_id, epoch)).is_some();
        let result = match outcome {
            Ok(()) if still_waiting => {
                self.start(handle, a, contract, deadline);
                return;
            }
            Ok(()) => {
                // Cancelled as the slot was granted.
                handle.release();
                Err(Failure::Cancelled)
            }
            Err(f) => Err(f),
        };
        let msg = ReportMsg {
            task_id,
            epoch,
            instance,
            result,
            usage: None,
        };
        self.report(&a.report_to, &msg);
    }

    /// Runs assignment `a` on `handle`, whose slot it holds, and reports how it ended.
    fn start(
        self: &Arc<Self>,
        handle: Arc<InstanceHandle>,
        a: AssignMsg,
        contract: Option<Arc<Capability>>,
        deadline: tokio::time::Instant,
    ) {
        let env = a.envelope;
        let task_id = env.task_id.unwrap_or(env.id);
        let epoch = env.epoch;
        let instance = wire::remote_id(&self.config.node, &a.instance);
        // The task's ledger lives with its owner on the control node: the attempt gets a
        // copy as the owner held it, whose records go back there (docs/distributed.md,
        // "Effects across nodes"). A plain message has no task and no ledger: its agent's
        // effects run unrecorded, as on a control node.
        let journal = a.effect_to.map(|to| {
            Arc::new(WorkerJournal {
                outbox: self.outbox.clone(),
                to,
                ack_to: wire::effect_ack_subject(&self.config.node),
                instance: instance.clone(),
                task: task_id,
                epoch,
                max_bytes: self.max_bytes,
                acks: self.acks.clone(),
                unsettled: Mutex::default(),
                sent: Mutex::default(),
            })
        });
        let ledger = Arc::new(match &journal {
            Some(j) => Ledger::remote(
                task_id,
                j.clone(),
                a.effects,
                a.effect_prefix.map(Arc::from),
            ),
            None => Ledger::detached(task_id),
        });
        let (tx, rx) = oneshot::channel();
        let beat = |agent: bool| -> bytes::Bytes {
            let b = BeatMsg {
                instance: instance.clone(),
                task_id,
                epoch,
                agent,
            };
            serde_json::to_vec(&b).unwrap_or_default().into()
        };
        let (agent_beat, alive_beat) = (beat(true), beat(false));
        let outbox = self.outbox.clone();
        let beat_to = a.beat_to.clone();
        let heartbeat: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            outbox.send(beat_to.clone(), agent_beat.clone());
        });
        handle.assign(Assign {
            envelope: env,
            deadline,
            reply: ReplyTo::Once(tx),
            heartbeat: Some(heartbeat),
            effects: Some(ledger),
        });
        let inner = self.clone();
        let local_id = a.instance;
        let report_to = a.report_to;
        let alive_every = Duration::from_millis(a.alive_every_ms.clamp(10, 60_000));
        let beat_to = a.beat_to;
        tokio::spawn(async move {
            // Word that the attempt runs, until it ends, so that a lost assignment or
            // worker is told from a running attempt within a few intervals.
            let mut rx = rx;
            let mut every = tokio::time::interval(alive_every);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let answer = loop {
                tokio::select! {
                    r = &mut rx => break r,
                    _ = every.tick() => {
                        inner.outbox.send(beat_to.clone(), alive_beat.clone());
                    }
                }
            };
            // The slot is free again: an assignment waiting for one here takes it.
            inner.freed(&local_id).notify_waiters();
            // The report must not overtake the attempt's effect records: its owner judges
            // the result with them in the ledger.
            if let Some(journal) = &journal {
                journal.settle(SETTLE_WAIT).await;
                journal.forget_all();
            }
            let mut msg = match answer {
                Ok(r) => ReportMsg {
                    task_id,
                    epoch,
                    instance,
                    result: r.result,
                    usage: r.usage,
                },
                Err(_) => ReportMsg {
                    task_id,
                    epoch,
                    instance,
                    result: Err(Failure::AgentGone("the instance dropped the task".into())),
                    usage: None,
                },
            };
            if let (Ok(out), Some(c)) = (&msg.result, &contract)
                && let Err(e) = c.output.validate(out)
            {
                msg.result = Err(Failure::ContractViolation(e));
            }
            inner.report(&report_to, &msg);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_fill_parts_under_the_budget_and_stay_in_theirs_while_they_live() {
        let mut p = Parts::default();
        let sizes: HashMap<String, usize> = (0..5).map(|i| (format!("a#{i}"), 40)).collect();
        let parts: Vec<usize> = (0..5)
            .map(|i| p.place(&format!("a#{i}"), 40, 100))
            .collect();
        assert_eq!(parts, [0, 0, 1, 1, 2], "two of 40 bytes fit 100");
        // a#0 leaves: a newcomer takes its room, the others keep their parts.
        let live: HashSet<&str> = ["a#1", "a#2", "a#3", "a#4"].into_iter().collect();
        p.keep(&live, &sizes);
        assert_eq!(p.place("b#0", 40, 100), 0);
        for (i, want) in [(1, 0), (2, 1), (3, 1), (4, 2)] {
            assert_eq!(p.place(&format!("a#{i}"), 40, 100), want, "a#{i} stays");
        }
    }
}
