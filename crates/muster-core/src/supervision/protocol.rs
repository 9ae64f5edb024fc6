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
        f.debug_tuple("StartChild").field(&self.0).finish()
    }
}

/// Stops one child for good and removes it.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct TerminateChild(pub Arc<str>);

/// Lists the children in start order (as `supervisor:which_children/1`).
#[derive(Debug, Message)]
#[rtype(result = "Vec<ChildInfo>")]
pub struct WhichChildren;

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
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ShutdownSupervisor;

/// Asks a plain actor child (registry, router) to stop; it reports `shutdown` through its
/// link as it stops.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopActor;
