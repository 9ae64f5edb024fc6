//! The worker's half of the cluster: it checks its capabilities against the cluster's
//! contracts (refusing to join, by name, on any difference), publishes one key per live
//! instance and keeps it alive with heartbeats, runs the assignments it receives on its
//! own instances, and reports each attempt back with its task id and epoch.
//!
//! It must not decide anything about a task beyond running it: the owner on the control
//! node leases, fences and reassigns. Schemas are checked here too (input on arrival,
//! output before it is sent), so a bad payload is named on the node that produced it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::wire::{
    self, AssignMsg, BeatMsg, ContractRecord, ControlMsg, InstanceRecord, ReportMsg,
};
use super::{ClusterConfig, ClusterError, Outbox, Replication};
use muster_core::agents::protocol::{Assign, ReplyTo};
use muster_core::agents::{AgentState, Failure};
use muster_core::runtime::Muster;

/// Instance keys written at once in a heartbeat round.
const HEARTBEAT_PUTS: usize = 64;

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
    /// Keys published, with the generation each was published for.
    published: Mutex<HashMap<String, u64>>,
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
        let max_bytes = client.server_info().max_payload.max(1024);
        let worker = Worker {
            inner: Arc::new(Inner {
                muster,
                outbox: Outbox::start(client),
                agents,
                max_bytes,
                published: Mutex::new(HashMap::new()),
                contracts: records,
                config,
                replication,
            }),
        };
        worker.inner.heartbeat().await;
        worker.spawn_heartbeats();
        worker.spawn_assigns(assigns);
        worker.spawn_controls(controls);
        Ok(worker)
    }

    /// The buckets this worker opened when it joined (`muster_agents`,
    /// `muster_contracts`), each with its replica count and what was done about the
    /// `--replicas` setting.
    pub fn replication(&self) -> &Replication {
        &self.inner.replication
    }

    /// The keys this worker has published (one per live instance).
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.inner.published.lock().keys().cloned().collect();
        k.sort();
        k
    }

    /// Leaves the cluster: deletes its instance keys, so that control nodes reassign its
    /// tasks at once rather than at the TTL.
    pub async fn leave(&self) {
        let keys: Vec<String> = self
            .inner
            .published
            .lock()
            .drain()
            .map(|(k, _)| k)
            .collect();
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
                    Err(e) => tracing::warn!(error = %e, "an unreadable assignment was dropped"),
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
                        if let Some(h) = inner.muster.instance(&instance) {
                            h.cancel(task_id, epoch);
                        }
                    }
                    Ok(ControlMsg::Kill { instance, reason }) => {
                        inner.muster.kill_agent(&instance, &reason);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "an unreadable control message was dropped")
                    }
                }
            }
        });
    }
}

impl Inner {
    /// Publishes every live instance's key (state and load now); deletes the keys of
    /// instances that are no longer live.
    async fn heartbeat(&self) {
        let node = &self.config.node;
        let mut live: HashMap<String, (u64, InstanceRecord)> = HashMap::new();
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
                .filter_map(|c| self.contracts.get(&c.name).cloned())
                .collect();
            let rec = InstanceRecord {
                node: node.clone(),
                id: a.id.clone(),
                agent: a.agent.clone(),
                generation: a.generation,
                concurrency: h.concurrency,
                capacity: h.capacity,
                state: a.state,
                load: a.in_flight,
                capabilities,
            };
            live.insert(wire::instance_key(node, &a.id), (a.generation, rec));
        }
        let stale: Vec<String> = {
            let p = self.published.lock();
            p.keys()
                .filter(|k| !live.contains_key(*k))
                .cloned()
                .collect()
        };
        for k in stale {
            let _ = self.agents.delete(&k).await;
            self.published.lock().remove(&k);
        }
        // The puts go out together (a round must take far less than the TTL, whatever
        // the number of instances).
        let puts = futures::stream::iter(live.into_iter().filter_map(|(k, (generation, rec))| {
            let body = serde_json::to_vec(&rec).ok()?;
            Some(async move {
                let r = self.agents.put(&k, body.into()).await;
                (k, generation, r)
            })
        }))
        .buffer_unordered(HEARTBEAT_PUTS);
        futures::pin_mut!(puts);
        while let Some((k, generation, r)) = puts.next().await {
            match r {
                Ok(_) => {
                    self.published.lock().insert(k, generation);
                }
                Err(e) => tracing::warn!(key = %k, error = %e, "heartbeat not written"),
            }
        }
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
        let env = a.envelope;
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
        if !handle.available() || !handle.try_reserve() {
            let state = handle.state();
            let why = if matches!(state, AgentState::Ready | AgentState::Busy) {
                format!("instance {instance} is full")
            } else {
                format!("instance {instance} is {state}")
            };
            self.report(&a.report_to, &answer(Err(Failure::AgentGone(why))));
            return;
        }
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
        let timeout = Duration::from_millis(a.timeout_ms).min(MAX_ATTEMPT);
        handle.assign(Assign {
            envelope: env,
            deadline: tokio::time::Instant::now() + timeout,
            reply: ReplyTo::Once(tx),
            heartbeat: Some(heartbeat),
            // The task's ledger lives with its owner on the control node: an attempt here
            // gets the task's keys, and a ledger that journals nothing.
            effects: None,
        });
        let inner = self.clone();
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
