//! Routing: validate, resolve, deliver, or fail with a reason.
//!
//! Owns the [`Router`] (the routing logic task owners call inline) and the
//! [`RouterActor`] that serves envelopes sent from other threads. It sits above discovery,
//! because resolving a recipient means reading the capability index, and it reaches an
//! instance only through its [`InstanceHandle`](crate::agents::InstanceHandle) and the
//! agents' protocol. Upholds the delivery half of G1 (every envelope is delivered or fails
//! with a [`FailureReason`](crate::messaging::FailureReason), journaled and kept as a dead
//! letter) and G3 at the wire (payloads and replies are validated). It decides nothing about
//! ownership: delegation does.

mod actor;
pub mod protocol;
pub mod router;
pub mod verdict;

pub(crate) use actor::RouterActor;
pub use protocol::Route;
pub use router::{Router, route};
pub use verdict::verdict;
