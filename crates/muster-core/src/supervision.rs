//! Supervision: Erlang/OTP semantics for a tree of actors.
//!
//! Owns the [`Supervisor`] actor and its vocabulary: strategies (`one_for_one`,
//! `one_for_all`, `rest_for_one`), restart types (`permanent`, `transient`, `temporary`),
//! restart intensity within a sliding period, restart backoff, and shutdown in reverse start
//! order with a time bound per child. Past its intensity a supervisor stops its children and
//! escalates to its parent; the root escalating stops the runtime with a report (G4).
//!
//! actix gives mailboxes, not supervision: `actix::Supervised` restarts only after a clean
//! stop and reuses the same struct. Here every child reports its exit through a
//! [`ChildLink`], whose `Drop` reports too, so no exit goes unseen; a restarted actor that
//! others address is reached through its [`Named`] handle. This module does not know what
//! its children do and never touches tasks: task owners reassign work. It needs nothing of
//! the runtime but what it is given: child specs and, optionally, a journal
//! [`Recorder`](crate::journal::Recorder) for restarts and escalations.

pub mod child;
pub mod named;
pub mod protocol;
pub mod restart;
mod supervisor;

pub use child::{ChildHandle, ChildLink, ChildSpec};
pub use named::Named;
pub use protocol::{
    ChildExited, ChildInfo, ShutdownSupervisor, StartChild, StopActor, TerminateChild,
    WhichChildren,
};
pub use restart::{Exit, Restart, Strategy, Supervision};
pub use supervisor::{Supervisor, SupervisorHandle};
