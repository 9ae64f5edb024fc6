//! Discovery: who is available.
//!
//! Owns the [`Registry`] actor (agents register on start-up, failed agents drop out, every
//! change is published as an event) and the [`CapabilityIndex`] the router and task owners
//! read without a round trip. The index is written only through the registry actor; readers
//! never block it for longer than a shard read. It does not deliver anything (messaging
//! does) and does not decide what to do when an agent fails (supervision does).

pub mod capability;
pub mod index;
pub mod registry;

pub use capability::{Capability, CapabilitySpec};
pub use index::{AgentInfo, CapabilityIndex, InstanceHandle, PickError};
pub use registry::{Registry, RegistryEvent};
