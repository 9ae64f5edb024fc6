//! Runtime-wide settings and the errors of starting a runtime.

use std::time::Duration;

use crate::messaging::CapabilityError;
use crate::messaging::contract::SchemaError;

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
    /// How many dead letters [`Muster::dead_letters`](super::Muster::dead_letters) keeps
    /// (the most recent; default 1,000). Every one is journaled regardless.
    pub dead_letters: usize,
    /// How many shards (arbiters, each a thread) the runtime runs on: agent instances are
    /// spread over them and a task's owner runs on its submitter's (see
    /// [`shards`](crate::shards)). Default 1: one thread, deterministic, what tests with a
    /// paused clock and the simulator need; [`RuntimeConfig::all_cores`] uses every core.
    pub shards: usize,
}

impl RuntimeConfig {
    /// The defaults, on one shard per core this process may use.
    ///
    /// # Example
    /// ```
    /// let c = muster_core::RuntimeConfig::all_cores();
    /// assert_eq!(c.shards, muster_core::shards::available());
    /// ```
    pub fn all_cores() -> Self {
        RuntimeConfig {
            shards: crate::shards::available(),
            ..RuntimeConfig::default()
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            grace: Duration::from_secs(1),
            start_timeout: Duration::from_secs(10),
            send_wait: Duration::from_secs(30),
            dead_letters: crate::messaging::DEFAULT_DEAD_LETTERS,
            shards: 1,
        }
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
    /// Its shards did not start.
    #[error(transparent)]
    Shards(#[from] crate::shards::ShardError),
}
