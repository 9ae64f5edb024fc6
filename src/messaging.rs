//! Messaging: what agents share.
//!
//! Owns the [`Envelope`] (the unit of coordination), the [`SchemaStore`] of JSON Schema
//! contracts, and the [`Router`] that validates, resolves and delivers envelopes or fails
//! them with a [`FailureReason`] from a closed set. Upholds G3 (no payload crosses a
//! boundary unvalidated) and the messaging half of G1 (delivered or failed, never dropped).
//! It does not decide who owns work: that is delegation's.

pub mod contract;
pub mod dead_letter;
pub mod envelope;
pub mod router;

pub use contract::{ContractError, SchemaStore, SchemaViolation};
pub use dead_letter::{DeadLetter, DeadLetters};
pub use envelope::{Envelope, Recipient};
pub use router::{DeliveryFailure, FailureReason, Router, RouterActor};
