//! Failure reasons: why an envelope was not delivered, from a closed set (G1: delivered or
//! failed with a reason, never dropped).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::contract::ContractError;
use super::envelope::Envelope;

/// Why an envelope was not delivered (or its reply not accepted). A closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The payload broke its schema.
    SchemaViolation,
    /// No instance declares the capability, or none is alive.
    NoCapableAgent,
    /// The named recipient is not registered or has stopped.
    RecipientGone,
    /// Every candidate's mailbox stayed full for the bounded wait.
    MailboxFull,
    /// The envelope's deadline passed before delivery or reply.
    DeadlinePassed,
    /// Delivered, but the agent failed (error, panic, exit...).
    AgentFailed,
    /// Delivered, but the reply broke the capability's output contract.
    ReplyViolation,
}

impl FailureReason {
    /// The snake_case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureReason::SchemaViolation => "schema_violation",
            FailureReason::NoCapableAgent => "no_capable_agent",
            FailureReason::RecipientGone => "recipient_gone",
            FailureReason::MailboxFull => "mailbox_full",
            FailureReason::DeadlinePassed => "deadline_passed",
            FailureReason::AgentFailed => "agent_failed",
            FailureReason::ReplyViolation => "reply_violation",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An envelope that failed, returned to its sender (and kept as a dead letter).
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[error("envelope {} ({}) to {} failed: {reason}: {detail}", envelope.id, envelope.topic, envelope.recipient)]
pub struct DeliveryFailure {
    /// Why.
    pub reason: FailureReason,
    /// Details (validator errors, agent failure...).
    pub detail: String,
    /// The validator's errors, for schema violations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<ContractError>,
    /// The envelope.
    pub envelope: Arc<Envelope>,
}
