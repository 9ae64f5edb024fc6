//! The router actor's messages.

use std::time::Duration;

use actix::prelude::*;

use crate::messaging::{DeliveryFailure, Envelope};

/// Route an envelope and wait for the recipient's reply.
#[derive(Message)]
#[rtype(result = "Result<Envelope, DeliveryFailure>")]
pub struct Route {
    /// The envelope.
    pub envelope: Envelope,
    /// How long to wait for a full mailbox, and for the reply (when the envelope has no
    /// deadline).
    pub wait: Duration,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("envelope", &self.envelope.id)
            .field("topic", &self.envelope.topic)
            .field("recipient", &self.envelope.recipient)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}
