//! Gates: where a run waits for a human decision, and how the decision reaches it.
//!
//! A run waiting at a gate in this process parks a oneshot sender in the runtime's
//! [`Gates`] table (an extension of the [`Muster`] handle); [`WorkflowExt::approve`]
//! takes it out and sends the decision, so a gate is decided at most once. A decision
//! made while no process waits (`muster approve`) is journaled instead and applied when
//! the run is resumed.
//!
//! [`WorkflowExt::approve`]: super::WorkflowExt::approve

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::oneshot;
use uuid::Uuid;

#[cfg(doc)]
use muster_core::runtime::Muster;

/// A human decision at a gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Decision {
    /// Go on (`on_approve`, or complete the run).
    Approve {
        /// Why.
        reason: String,
    },
    /// Stop (`on_reject`, or fail the run).
    Reject {
        /// Why.
        reason: String,
    },
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApproveError {
    /// No run waits at that gate.
    #[error("no run {run} waits at gate `{gate}`")]
    NotWaiting {
        /// Run id.
        run: Uuid,
        /// Gate.
        gate: String,
    },
}

/// The gates runs wait at in one runtime: (run, gate) → where the decision goes.
#[derive(Debug, Default)]
pub struct Gates(DashMap<(Uuid, String), oneshot::Sender<Decision>>);

impl Gates {
    /// Parks a waiting run's decision channel.
    pub fn wait(&self, run: Uuid, gate: &str, tx: oneshot::Sender<Decision>) {
        self.0.insert((run, gate.to_string()), tx);
    }

    /// Decides a gate: at most once, and only where a run waits.
    pub fn decide(&self, run: Uuid, gate: &str, decision: Decision) -> Result<(), ApproveError> {
        let not_waiting = || ApproveError::NotWaiting {
            run,
            gate: gate.into(),
        };
        match self.0.remove(&(run, gate.to_string())) {
            Some((_, tx)) => tx.send(decision).map_err(|_| not_waiting()),
            None => Err(not_waiting()),
        }
    }

    /// Removes a gate no run waits at any more (a run dropped while it waited), so the
    /// table holds only gates that can still be decided.
    pub fn forget(&self, run: Uuid, gate: &str) {
        self.0.remove(&(run, gate.to_string()));
    }

    /// How many gates runs wait at now.
    pub fn waiting(&self) -> usize {
        self.0.len()
    }

    /// Whether a run waits at this gate.
    pub fn is_waiting(&self, run: Uuid, gate: &str) -> bool {
        self.0.contains_key(&(run, gate.to_string()))
    }
}
