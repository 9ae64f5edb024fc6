//! Discovery: who is available.
//!
//! Owns the [`Registry`] actor (agents register on start-up, failed agents drop out, every
//! change is published as an event and journaled) and the [`CapabilityIndex`] the router
//! and task owners read without a round trip. The index is written only through the
//! registry actor; readers never block it for longer than a shard read. It knows agents
//! only by their protocol (the [`Presence`](crate::agents::Presence) they report and the
//! [`InstanceHandle`](crate::agents::InstanceHandle) they publish), never the instance
//! actor. It does not deliver anything (routing does) and does not decide what to do when
//! an agent fails (supervision does).

mod dropped_out;
pub mod index;
mod line;
mod load_order;
pub mod protocol;
mod registry;

pub use crate::messaging::capability::{Capability, CapabilitySpec};
pub use dropped_out::Abandoned;
pub use index::{AgentInfo, CapabilityIndex, PickError};
pub(crate) use line::LinePlace;
pub use protocol::{Declare, RegistryEvent, Subscribe, WaitFor};
pub(crate) use registry::Registry;
