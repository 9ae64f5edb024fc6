//! Messaging: what agents share, and the contracts it must satisfy.
//!
//! Owns the [`Envelope`] (the unit of coordination), the [`SchemaStore`] of JSON Schema
//! contracts, the [`Capability`] contract an agent declares (input and output schemas,
//! acceptance rule, heartbeat), the closed set of [`FailureReason`]s, the
//! [`DeadLetters`] list and the [`Scope`] a task may touch (patterns and their overlap). Upholds G3 (no payload crosses a boundary unvalidated) and the
//! vocabulary of G1 (delivered or failed with a reason, never dropped). It is pure data
//! and validation: it knows no actor, no journal and no agent. Delivering envelopes is the
//! router's (the `routing` layer above); deciding who owns work is delegation's.

pub mod capability;
pub mod contract;
pub mod dead_letter;
pub mod envelope;
pub mod explain;
pub mod failure;
pub mod scope;
mod violation;

pub use capability::{
    AcceptRule, Capability, CapabilityError, CapabilitySpec, ContractDifference, ContractTerms,
    DEFAULT_REUSE_FOR,
};
pub use contract::{ContractError, SchemaStore, SchemaViolation};
pub use dead_letter::{DEFAULT_DEAD_LETTERS, DeadLetter, DeadLetters};
pub use envelope::{Envelope, Recipient};
pub use explain::did_you_mean;
pub use failure::{DeliveryFailure, FailureReason};
pub use scope::{Overlap, Pattern, Scope, ScopeError};
