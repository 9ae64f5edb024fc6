//! The control node's half of the cluster: it publishes the cast's contracts, watches the
//! bucket of agent instances (registering each live instance with the runtime, taking it
//! out when its key expires), and hands the reports and heartbeats that come back to the
//! owners waiting for them.
//!
//! It must not pick instances or judge results: owners do, through the capability index,
//! exactly as for local instances.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures::StreamExt;
use serde::Serialize;

use super::remote::{Remote, RemoteMailbox, Wire};
use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;

use super::wire::{
    self, BeatMsg, ContractRecord, EffectMsg, InstanceRecord, ReportMsg, WIRE_VERSION, WorkerRecord,
};
use super::{ClusterConfig, ClusterError, Outbox, Replication};
use muster_core::agents::{AgentDef, InstanceHandle};
use muster_core::journal::Event;
use muster_core::runtime::Muster;

/// A running control node's view of the cluster.
///
/// # Example
/// ```no_run
/// # async fn demo(muster: muster_core::Muster, defs: Vec<muster_core::AgentDef>) -> Result<(), muster_cluster::ClusterError> {
/// use muster_cluster::{ClusterConfig, Control};
///
/// let control = Control::start(muster, &defs, ClusterConfig::new("nats://127.0.0.1:4222", "control-1")).await?;
/// println!("{} remote instances", control.instances().len());
/// println!("{}", control.replication().text()); // replicas: 3 (--replicas auto; ...)
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("node", &self.inner.config.node)
            .finish_non_exhaustive()
    }
}

struct Inner {
    muster: Muster,
    config: ClusterConfig,
    wire: Arc<Wire>,
    /// Remote instances by their id on this node (`id@node`).
    remotes: DashMap<Arc<str>, Arc<Remote>>,
    /// The instances each worker key (a part of a worker's record) carried last.
    carried: Mutex<HashMap<String, Vec<Arc<str>>>>,
    /// Keys of peers of another wire version, refused (logged once each).
    refused_keys: Mutex<HashSet<String>>,
    stats: Stats,
    /// The buckets this node opened, with their replica counts.
    replication: Replication,
}

#[derive(Default)]
struct Stats {
    late_reports: std::sync::atomic::AtomicU64,
    refused: std::sync::atomic::AtomicU64,
    swept: std::sync::atomic::AtomicU64,
    unreadable: std::sync::atomic::AtomicU64,
}

impl Stats {
    /// A peer's message that [`wire::decode`] refused: logged and counted, then dropped.
    fn unreadable(&self, what: &str, e: &wire::WireError) {
        self.unreadable
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(error = %e, "an unreadable {what} was dropped");
    }
}

/// A remote instance as the control node lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RemoteInfo {
    /// Its id here (`id@node`).
    pub id: String,
    /// Its node.
    pub node: String,
    /// Its start generation on its node.
    pub generation: u64,
    /// Attempts sent to it and not yet answered.
    pub in_flight: usize,
    /// Slots counted for the load other control nodes place on it, as its worker last
    /// reported it.
    pub others: usize,
}

impl Control {
    /// Joins the cluster at `config.url` as control node `config.node` for `muster`:
    /// declares every agent type of `defs` (their instances run on workers), publishes
    /// their contracts, and starts watching for instances. Runs on the runtime's thread.
    pub async fn start(
        muster: Muster,
        defs: &[AgentDef],
        config: ClusterConfig,
    ) -> Result<Control, ClusterError> {
        let client = config.connect().await?;
        let js = async_nats::jetstream::new(client.clone());
        let nats = |what: &str, e: &dyn std::fmt::Display| {
            ClusterError::Nats(format!("{what} at {}: {e}", config.url))
        };
        super::check_control_nodes(&js, &config).await?;
        let mut placer = super::replicas::Placer::new(&js, &client, &config);
        let agents = super::open_bucket(
            &mut placer,
            wire::AGENTS_BUCKET,
            "muster agent instances (one key each, gone at the TTL)",
            Some(config.ttl),
        )
        .await?;
        let contracts = super::open_bucket(
            &mut placer,
            wire::CONTRACTS_BUCKET,
            "muster capability contracts",
            None,
        )
        .await?;
        let replication = placer.replication();
        for def in defs {
            muster
                .declare(def)
                .await
                .map_err(|e| ClusterError::Runtime(e.to_string()))?;
            for c in &def.capabilities {
                let Some(compiled) = muster.contract(&c.name) else {
                    continue;
                };
                let record = ContractRecord::of(&compiled);
                let body = serde_json::to_vec(&record)
                    .map_err(|e| ClusterError::Runtime(e.to_string()))?;
                super::put_retrying(
                    &contracts,
                    &config,
                    &wire::contract_key(&c.name),
                    body.into(),
                )
                .await?;
            }
        }
        let max_bytes = client.server_info().max_payload.max(1024);
        let wire = Arc::new(Wire {
            outbox: Outbox::start(client.clone()),
            report_to: wire::report_subject(&config.node),
            beat_to: wire::beat_subject(&config.node),
            max_bytes,
            grace: config.ttl,
            alive_every: config.ttl / 4,
            effect_to: wire::effect_subject(&config.node),
            ledgers: Default::default(),
        });
        let reports = client
            .subscribe(wire.report_to.clone())
            .await
            .map_err(|e| nats("cannot subscribe to reports", &e))?;
        let beats = client
            .subscribe(wire.beat_to.clone())
            .await
            .map_err(|e| nats("cannot subscribe to heartbeats", &e))?;
        let effects = client
            .subscribe(wire.effect_to.clone())
            .await
            .map_err(|e| nats("cannot subscribe to effect records", &e))?;
        let control = Control {
            inner: Arc::new(Inner {
                muster,
                config,
                wire,
                remotes: DashMap::new(),
                carried: Mutex::new(HashMap::new()),
                refused_keys: Mutex::new(HashSet::new()),
                stats: Stats::default(),
                replication,
            }),
        };
        control.spawn_reports(reports);
        control.spawn_beats(beats);
        control.spawn_effects(effects);
        control.spawn_watch(agents);
        control.spawn_sweep();
        Ok(control)
    }

    /// The buckets this control node opened at start (`muster_agents`,
    /// `muster_contracts`), each with its replica count and what was done about the
    /// `--replicas` setting.
    pub fn replication(&self) -> &Replication {
        &self.inner.replication
    }

    /// The remote instances registered now.
    pub fn instances(&self) -> Vec<RemoteInfo> {
        let mut out: Vec<RemoteInfo> = self
            .inner
            .remotes
            .iter()
            .map(|r| RemoteInfo {
                id: r.id.to_string(),
                node: r.node.to_string(),
                generation: r.generation,
                in_flight: r.in_flight(),
                others: r.others(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Reports that arrived for no attempt in flight (handed to owners as late answers),
    /// instances refused (a contract mismatch, or a worker of another wire version), and
    /// attempts given up as lost.
    pub fn counts(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.inner.stats;
        (
            s.late_reports.load(Relaxed),
            s.refused.load(Relaxed),
            s.swept.load(Relaxed),
        )
    }

    /// Peer messages refused by [`wire::decode`] (not JSON, or not what their published
    /// schema allows): attempt reports, beats, effect records and worker records. Each was logged and
    /// dropped; none reached an owner or the registry.
    pub fn unreadable(&self) -> u64 {
        self.inner
            .stats
            .unreadable
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn spawn_reports(&self, mut sub: async_nats::Subscriber) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let msg: ReportMsg = match wire::decode(&m.payload) {
                    Ok(r) => r,
                    Err(e) => {
                        inner.stats.unreadable("attempt report", &e);
                        continue;
                    }
                };
                let late = match inner.remotes.get(msg.instance.as_str()).map(|r| r.clone()) {
                    Some(r) => r.report(msg),
                    None => Some(msg),
                };
                if let Some(msg) = late {
                    // No attempt waits for it: its instance left, or the attempt was given
                    // up. The task's owner fences it (journaled as stale unless its epoch
                    // is current, which a reassigned task's is not).
                    inner
                        .stats
                        .late_reports
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let delivered = match msg.result {
                        Ok(output) => inner.muster.deliver_result(
                            msg.task_id,
                            &msg.instance,
                            msg.epoch,
                            output,
                        ),
                        Err(_) => true, // a late failure changes nothing
                    };
                    if !delivered {
                        // The task has ended (or lives on no node here): the answer is
                        // fenced all the same, and journaled so.
                        inner.muster.recorder().record(Event::ResultStale {
                            task: msg.task_id,
                            agent: Arc::from(msg.instance.as_str()),
                            epoch: msg.epoch,
                            current_epoch: 0,
                        });
                    }
                }
            }
        });
    }

    fn spawn_beats(&self, mut sub: async_nats::Subscriber) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let beat = match wire::decode::<BeatMsg>(&m.payload) {
                    Ok(b) => b,
                    Err(e) => {
                        inner.stats.unreadable("beat", &e);
                        continue;
                    }
                };
                if let Some(r) = inner.remotes.get(beat.instance.as_str()).map(|r| r.clone()) {
                    r.beat(beat.task_id, beat.epoch, beat.agent);
                }
            }
        });
    }

    /// Journals the effect records of attempts on workers (docs/distributed.md, "Effects
    /// across nodes"), in the order they arrive.
    fn spawn_effects(&self, mut sub: async_nats::Subscriber) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                match wire::decode::<EffectMsg>(&m.payload) {
                    Ok(msg) => super::effects::journal(
                        &inner.wire.ledgers,
                        inner.muster.recorder(),
                        &inner.wire.outbox,
                        msg,
                    ),
                    Err(e) => inner.stats.unreadable("effect record", &e),
                }
            }
        });
    }

    fn spawn_sweep(&self) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut every = super::quarter_ttl(&inner.config);
            loop {
                every.tick().await;
                if inner.muster.stopped().is_some() {
                    break;
                }
                let now = tokio::time::Instant::now();
                let remotes: Vec<Arc<Remote>> =
                    inner.remotes.iter().map(|r| r.value().clone()).collect();
                let n: usize = remotes.iter().map(|r| r.sweep(now)).sum();
                // Tasks that ended dropped their ledgers.
                inner.wire.ledgers.retain(|_, l| l.strong_count() > 0);
                inner
                    .stats
                    .swept
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }

    fn spawn_watch(&self, bucket: async_nats::jetstream::kv::Store) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            loop {
                match bucket.watch_with_history(">").await {
                    Ok(mut w) => {
                        while let Some(entry) = w.next().await {
                            match entry {
                                Ok(e) => inner.on_entry(e),
                                Err(err) => {
                                    tracing::warn!(error = %err, "agents bucket watch failed");
                                    break;
                                }
                            }
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot watch the agents bucket"),
                }
                if inner.muster.stopped().is_some() {
                    break;
                }
                // The watch ended (the server restarted, or the connection dropped): watch
                // again from each key's last value once the client has reconnected.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
}

impl Inner {
    fn on_entry(&self, e: async_nats::jetstream::kv::Entry) {
        use async_nats::jetstream::kv::Operation;
        match e.operation {
            Operation::Put => {
                let Some((node, _)) = wire::parse_worker_key(&e.key) else {
                    // A key of one instance: a worker of wire version 1.
                    self.refuse_key(&e.key, wire::version_of(&e.value).min(1));
                    return;
                };
                let version = wire::version_of(&e.value);
                if version != WIRE_VERSION {
                    self.refuse_key(&e.key, version);
                    return;
                }
                match wire::decode::<WorkerRecord>(&e.value) {
                    Ok(rec) if rec.node == node => self.on_worker(&e.key, rec),
                    Ok(rec) => {
                        tracing::warn!(key = %e.key, node = %rec.node, "a worker record under another node's key was ignored")
                    }
                    Err(err) => self
                        .stats
                        .unreadable(&format!("worker record ({})", e.key), &err),
                }
            }
            Operation::Delete | Operation::Purge => {
                let ids = self.carried.lock().remove(&e.key).unwrap_or_default();
                for id in ids {
                    if let Some(r) = self.remotes.get(&id).map(|r| r.clone()) {
                        self.drop_remote(
                            &r,
                            format!(
                                "its worker's key expired or was deleted on node {} (no heartbeat within {:?})",
                                r.node, self.config.ttl
                            ),
                        );
                    }
                }
            }
        }
    }

    /// A peer of another wire version: refused by name, logged once per key.
    fn refuse_key(&self, key: &str, version: u32) {
        if self.refused_keys.lock().insert(key.to_string()) {
            self.stats
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let why = wire::version_refusal(
                &format!("worker `{}` (key {key})", wire::key_node(key)),
                version,
            );
            tracing::error!(%key, "refused: {why}");
        }
    }

    /// One part of a worker's record: its instances are registered or refreshed; those
    /// it carried last time and no longer does have left.
    fn on_worker(&self, key: &str, rec: WorkerRecord) {
        let contracts: HashMap<&str, &ContractRecord> =
            rec.contracts.iter().map(|c| (c.name.as_str(), c)).collect();
        let now: Vec<Arc<str>> = rec
            .instances
            .iter()
            .filter_map(|inst| self.on_put(&rec.node, inst, &contracts))
            .collect();
        let before = self
            .carried
            .lock()
            .insert(key.to_string(), now.clone())
            .unwrap_or_default();
        let kept: HashSet<&Arc<str>> = now.iter().collect();
        for id in before.iter().filter(|id| !kept.contains(id)) {
            if let Some(r) = self.remotes.get(id).map(|r| r.clone()) {
                self.drop_remote(
                    &r,
                    format!(
                        "it is no longer in the record of node {} (it stopped or failed there)",
                        r.node
                    ),
                );
            }
        }
    }

    fn drop_remote(&self, r: &Arc<Remote>, why: String) {
        self.remotes.remove(&r.id);
        r.gone(&format!("agent {} left the cluster: {why}", r.id));
        self.muster.detach(r.id.clone(), r.generation, why);
    }

    /// An instance of worker `node`'s record: registered when new (or of a new
    /// generation), its load observed when known. Its id here, or `None` when refused.
    fn on_put(
        &self,
        node: &str,
        rec: &InstanceRecord,
        contracts: &HashMap<&str, &ContractRecord>,
    ) -> Option<Arc<str>> {
        let id: Arc<str> = Arc::from(wire::remote_id(node, &rec.id));
        if let Some(r) = self.remotes.get(&id).map(|r| r.clone()) {
            if r.generation == rec.generation {
                r.observe(rec.load); // a heartbeat
                return Some(id);
            }
            self.drop_remote(&r, format!("restarted as generation {}", rec.generation));
        }
        // Every capability must be the cluster's contract, or the instance is refused.
        for name in &rec.capabilities {
            let verdict = match (self.muster.contract(name), contracts.get(name.as_str())) {
                (Some(ours), Some(theirs)) => ContractRecord::of(&ours).differs(theirs),
                (None, _) => Err("the control node's cast does not declare it".into()),
                (Some(_), None) => Err("the worker's record carries no contract for it".into()),
            };
            if let Err(why) = verdict {
                self.stats
                    .refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(instance = %id, capability = %name, %why, "instance refused");
                return None;
            }
        }
        let remote = Remote::new(
            id.clone(),
            rec.id.clone(),
            Arc::from(node),
            rec.generation,
            self.wire.clone(),
        );
        let handle = Arc::new(
            InstanceHandle::new(
                id.clone(),
                Arc::from(rec.agent.as_str()),
                rec.generation,
                rec.capabilities
                    .iter()
                    .map(|c| Arc::from(c.as_str()))
                    .collect(),
                rec.concurrency.max(1),
                rec.capacity.max(rec.concurrency).max(1),
                Box::new(RemoteMailbox(remote.clone())),
            )
            .on_node(remote.node.clone()),
        );
        remote.bind(&handle);
        self.remotes.insert(id.clone(), remote.clone());
        self.muster.attach(handle);
        remote.observe(rec.load);
        Some(id)
    }
}
