//! Simulation: agents whose latency and faults come from seeded distributions, so a
//! workflow can be tried against crashes, hangs, errors, contract violations and late
//! answers on virtual time before it is trusted to real models.
//!
//! Owns the simulated-agent backend: [`FaultModel`] and [`Distribution`] (what a manifest's
//! `kind = "sim"` backend says), [`SimAgent`] / [`SimFactory`] (the [`muster_core::Agent`] that
//! acts it out), [`generate`] / [`violate`] (outputs made to measure for, or against, the
//! capability's output schema), [`SimNetwork`] (the network between the runtime and agents
//! on other nodes: delay, loss, partitions) and [`SimRng`] (the seeded PRNG behind every draw).
//! Determinism (G6): a task's behaviour depends only on the seed, the instance name, the
//! task id and the epoch, never on scheduling or the wall clock; on tokio's paused clock
//! the same seed gives the same journal. It must not bypass the runtime: simulated faults
//! reach owners and supervisors exactly as real ones do.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod agent;
mod distribution;
mod fault;
mod generate;
mod network;
mod pattern;
mod rng;

pub use agent::{
    CRASH_AFTER_EFFECT_MESSAGE, CRASH_MESSAGE, SimAgent, SimFactory, is_simulated_crash,
};
pub use distribution::Distribution;
pub use fault::{Fault, FaultModel};
pub use generate::{generate, violate};
pub use network::{MAX_PARTITIONS, NetworkCounts, NetworkModel, Partition, SimNetwork};
pub use rng::SimRng;

/// A parameter of a fault model or distribution that is out of range.
///
/// `field` is a dotted path inside the model (`latency.std_dev`, `crash`; empty for the
/// model as a whole); manifests report it as a JSON pointer under `/backend`.
///
/// # Example
/// ```
/// use muster_sim::FaultModel;
/// let m = FaultModel { crash: 1.5, ..FaultModel::default() };
/// let e = m.validate().unwrap_err();
/// assert_eq!((e.field.as_str(), e.message.as_str()), ("crash", "1.5 is above 1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{}", if .field.is_empty() { .message.clone() } else { format!("{}: {}", .field, .message) })]
pub struct InvalidModel {
    /// The field, dotted (`latency.std_dev`); empty for the whole model.
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl InvalidModel {
    pub(crate) fn new(field: &str, message: String) -> Self {
        InvalidModel {
            field: field.to_string(),
            message,
        }
    }

    /// The field as a JSON pointer, e.g. `/latency/std_dev` (`` for the whole model).
    pub fn pointer(&self) -> String {
        if self.field.is_empty() {
            String::new()
        } else {
            format!("/{}", self.field.replace('.', "/"))
        }
    }
}

/// Runs `f` on a current-thread tokio runtime whose clock starts paused (the unit tests of
/// the simulated backend).
#[cfg(test)]
pub(crate) fn run_paused<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}
