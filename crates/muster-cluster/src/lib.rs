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
pub mod failover;
mod remote;
pub mod wire;
pub mod worker;

use std::time::Duration;

pub use control::Control;
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
/// let c = ClusterConfig::new("nats://127.0.0.1:4222", "control-1");
/// assert_eq!(c.ttl, muster_cluster::DEFAULT_TTL);
/// assert!(c.check().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The NATS server(s), e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// This node's name (a subject token: letters, digits, `_`, `-`).
    pub node: String,
    /// How long an instance key lives without a heartbeat (the control node sets it on
    /// the bucket; workers heartbeat at a quarter of it).
    pub ttl: Duration,
    /// How long a worker waits for the cluster's contracts when it joins.
    pub join_timeout: Duration,
}

impl ClusterConfig {
    /// A node named `node` on the NATS server at `url`, with the default TTL.
    pub fn new(url: &str, node: &str) -> Self {
        ClusterConfig {
            url: url.to_string(),
            node: node.to_string(),
            ttl: DEFAULT_TTL,
            join_timeout: Duration::from_secs(30),
        }
    }

    /// Checks the node name and the TTL's bounds.
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
        Ok(())
    }

    /// Connects to NATS, retrying the first connection for at most `join_timeout`.
    pub(crate) async fn connect(&self) -> Result<async_nats::Client, ClusterError> {
        self.check()?;
        let opts = async_nats::ConnectOptions::new()
            .name(format!("muster {}", self.node))
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect();
        let url = self.url.clone();
        match tokio::time::timeout(self.join_timeout, opts.connect(url.as_str())).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(ClusterError::Nats(format!("cannot connect to {url}: {e}"))),
            Err(_) => Err(ClusterError::Nats(format!(
                "cannot connect to {url} within {:?}",
                self.join_timeout
            ))),
        }
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
    /// The runtime refused a declaration.
    #[error("{0}")]
    Runtime(String),
}

/// Opens (creating or updating) key-value bucket `bucket` with history 1; with `ttl`, a key
/// is gone `ttl` after its last write, with a delete marker that watchers see.
pub(crate) async fn open_bucket(
    js: &async_nats::jetstream::Context,
    config: &ClusterConfig,
    bucket: &str,
    description: &str,
    ttl: Option<Duration>,
) -> Result<async_nats::jetstream::kv::Store, ClusterError> {
    js.create_or_update_key_value(async_nats::jetstream::kv::Config {
        bucket: bucket.into(),
        description: description.into(),
        history: 1,
        max_age: ttl.unwrap_or_default(),
        limit_markers: ttl,
        ..Default::default()
    })
    .await
    .map_err(|e| {
        ClusterError::Nats(format!(
            "cannot open the {bucket} bucket at {}: {e}",
            config.url
        ))
    })
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
