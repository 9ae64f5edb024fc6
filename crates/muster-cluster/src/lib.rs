//! The cluster: agents on many machines over NATS JetStream, with the guarantees of one
//! process (docs/distributed.md).
//!
//! A **control node** ([`control::Control`], behind `muster serve --nats`) owns runs and
//! task owners; it declares the cast's contracts in a key-value bucket, watches the
//! bucket of agent instances and registers every live one as an instance whose mailbox is
//! a NATS subject. A **worker** ([`worker::Worker`], behind `muster worker`) hosts agent
//! instances of any backend, publishes one key per instance (kept alive by heartbeats,
//! gone at the TTL), runs the assignments it receives and reports back with task id and
//! epoch. Owners fence stale epochs exactly as in process; every lost message is covered
//! by the owner's lease timer.
//!
//! This module owns the connection, the wire ([`wire`]) and both roles' loops. It must
//! not decide anything an owner decides (who gets a task, whether a result counts): it
//! only carries assignments and reports between owners and instances.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod control;
mod effects;
pub mod failover;
pub mod peers;
mod remote;
pub mod replicas;
pub mod wire;
pub mod worker;

use std::time::Duration;

pub use control::Control;
pub use replicas::{Replicas, Replication};
pub use worker::Worker;

/// The default time a worker's instance keys live without a heartbeat.
pub const DEFAULT_TTL: Duration = Duration::from_millis(1500);

/// The shortest TTL accepted (JetStream's delete markers need at least a second).
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// The longest TTL accepted.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// How a node joins the cluster.
///
/// # Example
/// ```
/// use muster_cluster::ClusterConfig;
///
/// let mut c = ClusterConfig::new("nats://127.0.0.1:4222", "control-1");
/// assert_eq!(c.ttl, muster_cluster::DEFAULT_TTL);
/// assert_eq!(c.replicas, muster_cluster::Replicas::Auto);
/// assert!(c.check().is_ok());
/// // Several servers of one cluster, comma-separated: the first reachable is used.
/// c.url = "nats://127.0.0.1:4222,nats://127.0.0.1:4223".into();
/// assert!(c.check().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The NATS server(s), e.g. `nats://127.0.0.1:4222`, or several servers of one
    /// cluster separated by commas (`nats://a:4222,nats://b:4222`): the client connects
    /// to one and reconnects to the others when it goes.
    pub url: String,
    /// This node's name (a subject token: letters, digits, `_`, `-`).
    pub node: String,
    /// How long an instance key lives without a heartbeat (the control node sets it on
    /// the bucket; workers heartbeat at a quarter of it).
    pub ttl: Duration,
    /// How long a worker waits for the cluster's contracts when it joins (and how long
    /// any node retries opening its buckets and stream while the servers elect leaders).
    pub join_timeout: Duration,
    /// How many replicas the buckets and the journal stream have ([`replicas`]).
    pub replicas: Replicas,
}

impl ClusterConfig {
    /// A node named `node` on the NATS server at `url`, with the default TTL.
    pub fn new(url: &str, node: &str) -> Self {
        ClusterConfig {
            url: url.to_string(),
            node: node.to_string(),
            ttl: DEFAULT_TTL,
            join_timeout: Duration::from_secs(30),
            replicas: Replicas::Auto,
        }
    }

    /// Checks the node name, the TTL's bounds and the server URLs.
    pub fn check(&self) -> Result<(), ClusterError> {
        wire::check_node_name(&self.node).map_err(ClusterError::Config)?;
        if self.ttl < MIN_TTL || self.ttl > MAX_TTL {
            return Err(ClusterError::Config(format!(
                "ttl {:?} is outside {:?}..={:?}",
                self.ttl, MIN_TTL, MAX_TTL
            )));
        }
        if self.url.trim().is_empty() {
            return Err(ClusterError::Config("the NATS url is empty".into()));
        }
        for u in self.urls() {
            u.parse::<async_nats::ServerAddr>().map_err(|e| {
                ClusterError::Config(format!("`{u}` (in the NATS url `{}`): {e}", self.url))
            })?;
        }
        Ok(())
    }

    /// The server URLs of [`ClusterConfig::url`], split at commas.
    fn urls(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// Connects to NATS, retrying the first connection for at most `join_timeout`.
    pub(crate) async fn connect(&self) -> Result<async_nats::Client, ClusterError> {
        self.check()?;
        let opts = async_nats::ConnectOptions::new()
            .name(format!("muster {}", self.node))
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect();
        let url = self.url.clone();
        let deadline = tokio::time::Instant::now() + self.join_timeout;
        let late = || {
            ClusterError::Nats(format!(
                "cannot connect to {url} within {:?}",
                self.join_timeout
            ))
        };
        let client = match tokio::time::timeout_at(deadline, opts.connect(self.urls())).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(ClusterError::Nats(format!("cannot connect to {url}: {e}"))),
            Err(_) => return Err(late()),
        };
        // With retries on the first connection the client comes back at once; the
        // server's INFO (its payload limit, whether it is part of a cluster) is known
        // only once it is connected.
        while client.try_server_info().is_none() {
            if tokio::time::Instant::now() >= deadline {
                return Err(late());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(client)
    }
}

/// Why a node could not join or stay in the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A bad setting (node name, TTL, url).
    #[error("cluster configuration: {0}")]
    Config(String),
    /// The NATS server refused or failed a request.
    #[error("NATS: {0}")]
    Nats(String),
    /// A worker's capability does not match the cluster's contract.
    #[error("capability `{capability}` is refused by the cluster: {why}")]
    ContractMismatch {
        /// The capability.
        capability: String,
        /// What differs.
        why: String,
    },
    /// The server cannot give a bucket or the stream the replica count asked for (more
    /// replicas than JetStream servers, or more than 1 outside a cluster).
    #[error("replicas: {0}")]
    Replicas(String),
    /// A peer speaks another version of the cluster's wire (docs/distributed.md,
    /// "Wire versions"): every node of a cluster must run the same wire version.
    #[error("wire version: {0}")]
    Version(String),
    /// The runtime refused a declaration.
    #[error("{0}")]
    Runtime(String),
}

/// Refuses to join a cluster where a live control node (other than `config.node`) speaks
/// another wire version, naming it. No bucket of control nodes yet: nobody to check.
pub(crate) async fn check_control_nodes(
    js: &async_nats::jetstream::Context,
    config: &ClusterConfig,
) -> Result<(), ClusterError> {
    use futures::StreamExt;
    let Ok(controls) = js.get_key_value(failover::CONTROLS_BUCKET).await else {
        return Ok(());
    };
    let Ok(mut keys) = controls.keys().await else {
        return Ok(());
    };
    while let Some(Ok(key)) = keys.next().await {
        if key == config.node {
            continue;
        }
        if let Ok(Some(body)) = controls.get(&key).await {
            let v = wire::version_of(&body);
            if v != wire::WIRE_VERSION {
                return Err(ClusterError::Version(wire::version_refusal(
                    &format!("control node `{key}` (at {})", config.url),
                    v,
                )));
            }
        }
    }
    Ok(())
}

/// Opens (creating or updating) key-value bucket `bucket` with history 1 and the replica
/// setting ([`replicas`]); with `ttl`, a key is gone `ttl` after its last write, with a
/// delete marker that watchers see.
pub(crate) async fn open_bucket(
    placer: &mut replicas::Placer<'_>,
    bucket: &str,
    description: &str,
    ttl: Option<Duration>,
) -> Result<async_nats::jetstream::kv::Store, ClusterError> {
    placer
        .bucket(async_nats::jetstream::kv::Config {
            bucket: bucket.into(),
            description: description.into(),
            history: 1,
            max_age: ttl.unwrap_or_default(),
            limit_markers: ttl,
            ..Default::default()
        })
        .await
}

/// Writes `key` in `store`, retrying every 250 ms for at most the join timeout while the
/// bucket takes no writes (it elects a leader, or its replicas are being changed).
pub(crate) async fn put_retrying(
    store: &async_nats::jetstream::kv::Store,
    config: &ClusterConfig,
    key: &str,
    body: bytes::Bytes,
) -> Result<u64, ClusterError> {
    let deadline = tokio::time::Instant::now() + config.join_timeout;
    loop {
        match store.put(key, body.clone()).await {
            Ok(rev) => return Ok(rev),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(ClusterError::Nats(format!(
                    "cannot write key {key} of bucket {} at {} within {:?}: {e}",
                    store.name, config.url, config.join_timeout
                )));
            }
            Err(e) => {
                tracing::debug!(%key, error = %e, "writing it again in 250 ms");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// A ticker every quarter of the TTL (heartbeats and sweeps) that skips missed ticks.
pub(crate) fn quarter_ttl(config: &ClusterConfig) -> tokio::time::Interval {
    let mut every = tokio::time::interval(config.ttl / 4);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every
}

/// Publishes what the cluster loops hand it, in order, from one task: the synchronous
/// mailbox calls enqueue without waiting; a full queue refuses at once.
#[derive(Clone)]
pub(crate) struct Outbox(tokio::sync::mpsc::Sender<(String, bytes::Bytes)>);

/// Messages waiting for the connection at most.
pub(crate) const OUTBOX_CAPACITY: usize = 1 << 16;

impl Outbox {
    /// Starts the publishing task on the current runtime.
    pub(crate) fn start(client: async_nats::Client) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, bytes::Bytes)>(OUTBOX_CAPACITY);
        tokio::spawn(async move {
            while let Some((subject, body)) = rx.recv().await {
                if let Err(e) = client.publish(subject.clone(), body).await {
                    tracing::warn!(%subject, error = %e, "cluster publish failed; the lease timer covers it");
                }
            }
        });
        Outbox(tx)
    }

    /// Enqueues `body` for `subject`; false when the queue is full or closed.
    pub(crate) fn send(&self, subject: String, body: bytes::Bytes) -> bool {
        self.0.try_send((subject, body)).is_ok()
    }
}
