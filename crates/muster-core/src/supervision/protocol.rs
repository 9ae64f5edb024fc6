//! The supervisor's messages: what parents, children and the runtime send a
//! [`Supervisor`](super::supervisor::Supervisor), and what a supervised plain actor must
//! answer. Other layers import these, never the supervisor's own file.

use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;

pub use super::child::ChildExited;
use super::child::ChildSpec;
use super::restart::Restart;

/// Adds and starts a child (appended: last in start order).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct StartChild(pub ChildSpec);

impl std::fmt::Debug for StartChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartChild").finish_non_exhaustive()
    }
}

/// Stops one child for good and removes it.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct TerminateChild(pub Arc<str>);

impl std::fmt::Debug for TerminateChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminateChild").finish_non_exhaustive()
    }
}

/// Lists the children in start order (as `supervisor:which_children/1`).
#[derive(Message)]
#[rtype(result = "Vec<ChildInfo>")]
pub struct WhichChildren;

impl std::fmt::Debug for WhichChildren {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhichChildren").finish_non_exhaustive()
    }
}

/// A child as listed by [`WhichChildren`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildInfo {
    /// Child id.
    pub id: String,
    /// Current start generation.
    pub generation: u64,
    /// Whether it is running.
    pub running: bool,
    /// Restart type.
    pub restart: Restart,
}

/// Stops every child in reverse start order (each within its shutdown time), then the
/// supervisor itself, reporting `shutdown` to its parent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShutdownSupervisor;

impl std::fmt::Debug for ShutdownSupervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownSupervisor").finish_non_exhaustive()
    }
}

/// Asks a plain actor child (registry, router) to stop; it reports `shutdown` through its
/// link as it stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopActor;

impl std::fmt::Debug for StopActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopActor").finish_non_exhaustive()
    }
}
