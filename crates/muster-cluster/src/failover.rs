//! Control-node failover: the journal of every control node is mirrored to a JetStream
//! stream, each run is owned through a key of a key-value bucket (its revision is the
//! fencing token of the owner), and every control node keeps a key alive with
//! heartbeats. When a control node's key expires, the others race to take its runs over
//! (a compare-and-set on each run's key: exactly one wins each run) and the winner gets
//! the runs' records from the stream, to rebuild and resume them as `muster resume` does
//! from SQLite (docs/distributed.md, "Control-node failover").
//!
//! It owns the mirror, the leases and the takeover race. It must not resume anything
//! itself: it hands [`Takeover`]s to whoever drives runs (the node of `muster serve`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{ClusterConfig, ClusterError, Replication};
use muster_core::journal::{Journal, Record};

/// The stream every control node's journal is mirrored to.
pub const JOURNAL_STREAM: &str = "MUSTER_JOURNAL";

/// The key-value bucket of run leases: one key per unfinished run, naming its owner.
pub const RUNS_BUCKET: &str = "muster_runs";

/// The key-value bucket of live control nodes: one key each, gone at the TTL.
pub const CONTROLS_BUCKET: &str = "muster_controls";

/// The subject control node `node`'s journal is mirrored on.
pub fn journal_subject(node: &str) -> String {
    format!("muster.journal.{node}")
}

/// Records mirrored per batch.
const MIRROR_BATCH: usize = 1024;

/// Attempts at writing a run's lease (500 ms apart) before giving up.
const OWN_TRIES: u32 = 20;

/// The longest a takeover reads the stream.
const READ_LIMIT: Duration = Duration::from_secs(120);

/// A run lease: the value of a run's key in [`RUNS_BUCKET`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunLease {
    /// The control node that drives the run.
    pub owner: String,
    /// The workflow's name.
    pub workflow: String,
}

impl crate::wire::WireMessage for RunLease {
    const SCHEMA: &'static str = "cluster-run-lease";
}

/// Runs taken over from a control node that left, with everything the stream holds (in
/// stream order), to be rebuilt and resumed.
#[derive(Debug)]
pub struct Takeover {
    /// The node that left.
    pub from: String,
    /// The runs this node won, each with its lease's revision (the new fencing token).
    pub runs: Vec<(Uuid, RunLease, u64)>,
    /// Every record of the journal stream, in stream order.
    pub records: Vec<Record>,
}

/// What [`Failover::compact_stream`] removed from the journal stream.
///
/// # Example
/// ```
/// use muster_cluster::failover::StreamCompaction;
///
/// let c = StreamCompaction::default();
/// assert_eq!((c.removed, c.kept_from), (0, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StreamCompaction {
    /// Messages removed from this node's subject.
    pub removed: u64,
    /// The stream sequence this node's subject is kept from (0: nothing was removed).
    pub kept_from: u64,
}

/// A control node's part in failover.
///
/// # Example
/// ```no_run
/// # async fn demo(journal: std::sync::Arc<dyn muster_core::journal::Journal>) -> Result<(), muster_cluster::ClusterError> {
/// use muster_cluster::{failover::Failover, ClusterConfig};
///
/// let (failover, mut takeovers) =
///     Failover::start(ClusterConfig::new("nats://127.0.0.1:4222", "control-1"), journal).await?;
/// println!("{}", failover.replication().text()); // replicas: 3 (--replicas auto; ...)
/// let run = uuid::Uuid::now_v7();
/// failover.own(run, "code-change").await?;
/// while let Some(t) = takeovers.recv().await {
///     println!("took {} runs over from {}", t.runs.len(), t.from);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Failover {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field("node", &self.inner.config.node)
            .field("owned", &self.owned())
            .finish()
    }
}

struct Inner {
    config: ClusterConfig,
    js: async_nats::jetstream::Context,
    runs: async_nats::jetstream::kv::Store,
    controls: async_nats::jetstream::kv::Store,
    /// The runs this node owns now.
    owned: Mutex<HashSet<Uuid>>,
    /// The stream and buckets this node opened, with their replica counts.
    replication: Replication,
}

impl Failover {
    /// Joins failover as control node `config.node`: opens the stream and buckets,
    /// mirrors `journal` to the stream (from where the stream's copy of this node's
    /// journal ends), keeps this node's key alive and watches the others'. Takeovers
    /// arrive on the returned receiver.
    pub async fn start(
        config: ClusterConfig,
        journal: Arc<dyn Journal>,
    ) -> Result<(Failover, mpsc::Receiver<Takeover>), ClusterError> {
        let client = config.connect().await?;
        let js = async_nats::jetstream::new(client.clone());
        let mut placer = super::replicas::Placer::new(&js, &client, &config);
        let stream = placer
            .stream(async_nats::jetstream::stream::Config {
                name: JOURNAL_STREAM.into(),
                subjects: vec!["muster.journal.>".into()],
                description: Some("muster control nodes' journals".into()),
                ..Default::default()
            })
            .await?;
        let runs = super::open_bucket(&mut placer, RUNS_BUCKET, "muster run leases", None).await?;
        let controls = super::open_bucket(
            &mut placer,
            CONTROLS_BUCKET,
            "muster control nodes (one key each, gone at the TTL)",
            Some(config.ttl),
        )
        .await?;
        let replication = placer.replication();
        // Mirror from where the stream's copy ends: the last mirrored record's seq.
        let mirrored = match stream
            .get_last_raw_message_by_subject(&journal_subject(&config.node))
            .await
        {
            Ok(m) => serde_json::from_slice::<Record>(&m.payload)
                .map(|r| r.seq)
                .unwrap_or(0),
            Err(_) => 0,
        };
        super::put_retrying(&controls, &config, &config.node, control_record()).await?;
        let failover = Failover {
            inner: Arc::new(Inner {
                config,
                js,
                runs,
                controls,
                owned: Mutex::new(HashSet::new()),
                replication,
            }),
        };
        let (tx, rx) = mpsc::channel(64);
        failover.spawn_mirror(journal, mirrored);
        failover.spawn_heartbeat();
        failover.spawn_watch(tx);
        Ok((failover, rx))
    }

    /// Takes the lease of a new run: this node drives it until it ends (or until this
    /// node's key expires and another takes it over). Returns the lease's revision.
    pub async fn own(&self, run: Uuid, workflow: &str) -> Result<u64, ClusterError> {
        let lease = RunLease {
            owner: self.inner.config.node.clone(),
            workflow: workflow.to_string(),
        };
        let body = serde_json::to_vec(&lease).map_err(|e| ClusterError::Runtime(e.to_string()))?;
        // The server may be away for a moment (a restart): try for a while.
        let body = bytes::Bytes::from(body);
        let mut tries = 0;
        let rev = loop {
            match self.inner.runs.put(run.to_string(), body.clone()).await {
                Ok(rev) => break rev,
                Err(e) if tries >= OWN_TRIES => {
                    return Err(ClusterError::Nats(format!(
                        "cannot write the lease of run {run}: {e}"
                    )));
                }
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        self.inner.owned.lock().insert(run);
        Ok(rev)
    }

    /// Whether this node may drive `run` after a restart: its lease names this node, or it
    /// has none (it was never leased). False when another control node took it over.
    pub async fn holds(&self, run: Uuid) -> bool {
        match self.inner.runs.get(run.to_string()).await {
            Ok(Some(body)) => crate::wire::decode::<RunLease>(&body)
                .map(|l| l.owner == self.inner.config.node)
                .unwrap_or(false),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Marks runs taken over as owned here.
    pub fn adopted(&self, runs: &[Uuid]) {
        self.inner.owned.lock().extend(runs.iter().copied());
    }

    /// Gives a run's lease up: it ended.
    pub async fn release(&self, run: Uuid) {
        self.inner.owned.lock().remove(&run);
        let _ = self.inner.runs.delete(run.to_string()).await;
    }

    /// The stream and buckets this node opened at start (`MUSTER_JOURNAL`,
    /// `muster_runs`, `muster_controls`), each with its replica count and what was done
    /// about the `--replicas` setting.
    pub fn replication(&self) -> &Replication {
        &self.inner.replication
    }

    /// Compacts this node's history in the journal stream after its journal's retention
    /// compaction (`muster serve --retain`): removes from this node's subject every
    /// message before the first one that carries a record at or after `keep_from` (the
    /// oldest record the node's journal still holds: what retention removed from the
    /// journal goes from the stream too, and whatever the journal keeps, the stream
    /// keeps). Only acknowledged history is removed (a message in the stream was
    /// acknowledged by it); the subject's last message always stays (a restarted node
    /// mirrors on from it); a message that is not a record stops the scan (kept). Reads
    /// for at most two minutes; other nodes' subjects are never touched.
    pub async fn compact_stream(&self, keep_from: u64) -> Result<StreamCompaction, ClusterError> {
        use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
        let nats = |e: &dyn std::fmt::Display| {
            ClusterError::Nats(format!("cannot compact the journal stream: {e}"))
        };
        let subject = journal_subject(&self.inner.config.node);
        let stream = self
            .inner
            .js
            .get_stream(JOURNAL_STREAM)
            .await
            .map_err(|e| nats(&e))?;
        let Ok(last) = stream.get_last_raw_message_by_subject(&subject).await else {
            // Nothing of this node's in the stream.
            return Ok(StreamCompaction::default());
        };
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                filter_subject: subject.clone(),
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .map_err(|e| nats(&e))?;
        // Everything on the subject before `cut` was read and may go; `cut` never passes
        // the subject's last message.
        let mut cut: Option<u64> = None;
        let limit = tokio::time::Instant::now() + READ_LIMIT;
        'scan: while tokio::time::Instant::now() < limit {
            let mut batch = consumer
                .fetch()
                .max_messages(1000)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .map_err(|e| nats(&e))?;
            let mut got = false;
            while let Some(m) = batch.next().await {
                let Ok(m) = m else { break 'scan };
                let Ok(at) = m.info().map(|i| i.stream_sequence) else {
                    break 'scan;
                };
                got = true;
                let seq = serde_json::from_slice::<Record>(&m.payload).map_or(0, |r| r.seq);
                if at >= last.sequence || seq == 0 || seq >= keep_from {
                    break 'scan;
                }
                cut = Some(at + 1);
            }
            if !got {
                break;
            }
        }
        let _ = stream
            .delete_consumer(consumer.cached_info().name.as_str())
            .await;
        let Some(cut) = cut.map(|c| c.min(last.sequence)) else {
            return Ok(StreamCompaction::default());
        };
        let purged = stream
            .purge()
            .filter(subject)
            .sequence(cut)
            .await
            .map_err(|e| nats(&e))?;
        Ok(StreamCompaction {
            removed: purged.purged,
            kept_from: cut,
        })
    }

    /// What [`Peers::of`](super::peers::Peers::of) is made of: this node's name, its
    /// JetStream context and the runs' and control nodes' buckets.
    pub(crate) fn parts(
        &self,
    ) -> (
        String,
        async_nats::jetstream::Context,
        async_nats::jetstream::kv::Store,
        async_nats::jetstream::kv::Store,
    ) {
        (
            self.inner.config.node.clone(),
            self.inner.js.clone(),
            self.inner.runs.clone(),
            self.inner.controls.clone(),
        )
    }

    /// The runs this node owns now.
    pub fn owned(&self) -> usize {
        self.inner.owned.lock().len()
    }

    fn spawn_mirror(&self, journal: Arc<dyn Journal>, mut after: u64) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let subject = journal_subject(&inner.config.node);
            loop {
                let j = journal.clone();
                let batch = tokio::task::spawn_blocking(move || j.read_batch(after, MIRROR_BATCH))
                    .await
                    .unwrap_or_default();
                if batch.is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let mut acks = Vec::with_capacity(batch.len());
                let mut failed = false;
                for r in &batch {
                    let Ok(body) = serde_json::to_vec(r) else {
                        continue;
                    };
                    match inner.js.publish(subject.clone(), body.into()).await {
                        Ok(ack) => acks.push(ack),
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                let mut last_ok = after;
                for (r, ack) in batch.iter().zip(acks) {
                    match ack.await {
                        Ok(_) => last_ok = r.seq,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                after = last_ok;
                if failed {
                    // The server is away: try again from the last acknowledged record.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        });
    }

    fn spawn_heartbeat(&self) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut every = super::quarter_ttl(&inner.config);
            loop {
                every.tick().await;
                if let Err(e) = inner
                    .controls
                    .put(&inner.config.node, control_record())
                    .await
                {
                    tracing::warn!(error = %e, "control node heartbeat not written");
                }
            }
        });
    }

    fn spawn_watch(&self, tx: mpsc::Sender<Takeover>) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            use async_nats::jetstream::kv::Operation;
            loop {
                if let Ok(mut w) = inner.controls.watch(">").await {
                    while let Some(Ok(e)) = w.next().await {
                        if matches!(e.operation, Operation::Delete | Operation::Purge)
                            && e.key != inner.config.node
                        {
                            if inner.alive_again(&e.key).await {
                                continue;
                            }
                            match inner.take_over(&e.key).await {
                                Ok(Some(t)) => {
                                    if tx.send(t).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => {}
                                Err(err) => {
                                    tracing::warn!(from = %e.key, error = %err, "takeover failed")
                                }
                            }
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
}

/// The value of this control node's key in [`CONTROLS_BUCKET`]: its wire version.
fn control_record() -> bytes::Bytes {
    serde_json::to_vec(&crate::wire::ControlRecord {
        wire: crate::wire::WIRE_VERSION,
    })
    .unwrap_or_default()
    .into()
}

impl Inner {
    /// Whether control node `node`, whose key has just expired, writes it again within
    /// one TTL. A live node's key expires too when its heartbeats could not be written
    /// for a TTL: while the bucket elects a leader (a replicated bucket that lost the
    /// server leading it) or while the server restarts. Such a node writes its key at its
    /// next heartbeat (every TTL/4) once the bucket takes writes again; a node that died
    /// never does.
    async fn alive_again(&self, node: &str) -> bool {
        tokio::time::sleep(self.config.ttl).await;
        match self.controls.get(node).await {
            Ok(Some(_)) => {
                tracing::warn!(%node, "control node's key expired and was written again within a TTL: it is alive; its runs stay with it");
                true
            }
            _ => false,
        }
    }

    /// Races for every run of `from`: a compare-and-set of each run's key from its
    /// revision to this node; exactly one control node wins each run.
    async fn take_over(&self, from: &str) -> Result<Option<Takeover>, ClusterError> {
        let nats = |e: &dyn std::fmt::Display| ClusterError::Nats(e.to_string());
        let mut keys = self.runs.keys().await.map_err(|e| nats(&e))?;
        let mut won = Vec::new();
        while let Some(k) = keys.next().await {
            let Ok(k) = k else { continue };
            let Ok(Some(entry)) = self.runs.entry(k.clone()).await else {
                continue;
            };
            let Ok(lease) = crate::wire::decode::<RunLease>(&entry.value) else {
                continue;
            };
            if lease.owner != from {
                continue;
            }
            let Ok(run) = Uuid::parse_str(&k) else {
                continue;
            };
            let mine = RunLease {
                owner: self.config.node.clone(),
                workflow: lease.workflow.clone(),
            };
            let Ok(body) = serde_json::to_vec(&mine) else {
                continue;
            };
            if let Ok(rev) = self.runs.update(&k, body.into(), entry.revision).await {
                won.push((run, mine, rev));
            }
        }
        if won.is_empty() {
            return Ok(None);
        }
        let records = self.read_stream().await?;
        Ok(Some(Takeover {
            from: from.to_string(),
            runs: won,
            records,
        }))
    }

    /// Every record of the journal stream, in stream order.
    async fn read_stream(&self) -> Result<Vec<Record>, ClusterError> {
        use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
        let nats = |e: &dyn std::fmt::Display| {
            ClusterError::Nats(format!("cannot read the journal stream: {e}"))
        };
        let mut stream = self
            .js
            .get_stream(JOURNAL_STREAM)
            .await
            .map_err(|e| nats(&e))?;
        let total = stream.info().await.map_err(|e| nats(&e))?.state.messages;
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .map_err(|e| nats(&e))?;
        let mut out = Vec::new();
        // A record published again after its acknowledgement was lost (a leader election
        // of a replicated stream, a reconnect) is in the stream twice: only its first copy
        // counts, by node (subject) and journal sequence.
        let mut seen: HashSet<(String, u64)> = HashSet::new();
        let mut read = 0u64;
        let limit = tokio::time::Instant::now() + READ_LIMIT;
        while read < total {
            if tokio::time::Instant::now() >= limit {
                return Err(ClusterError::Nats(format!(
                    "the journal stream was not read within {READ_LIMIT:?}"
                )));
            }
            let mut batch = consumer
                .fetch()
                .max_messages(1000)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .map_err(|e| nats(&e))?;
            let before = read;
            while let Some(m) = batch.next().await {
                let Ok(m) = m else { break };
                read += 1;
                if let Ok(r) = serde_json::from_slice::<Record>(&m.payload) {
                    if r.seq == 0 || seen.insert((m.subject.to_string(), r.seq)) {
                        out.push(r);
                    }
                } else {
                    out.push(Record {
                        seq: 0,
                        at_ms: 0,
                        event: muster_core::journal::Event::Note {
                            text: "unreadable record in the journal stream".into(),
                        },
                    });
                }
            }
            if read == before {
                break;
            }
        }
        Ok(out)
    }
}
