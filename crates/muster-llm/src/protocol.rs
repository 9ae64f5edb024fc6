//! The provider actor's messages: what an LLM agent sends the provider of its endpoint
//! and model ([`Acquire`] a slot in its budgets, [`Release`] it with what the call spent),
//! and the [`Grant`] it answers with. Agents import these, never the actor's file.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

/// Asks for one request's worth of the budgets (a concurrency slot, one request of the
/// requests-per-minute budget and `tokens` of the tokens-per-minute one). The grant comes
/// on `reply` once the budgets allow it and any `Retry-After` wait is over; dropping the
/// receiver withdraws the request.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Acquire {
    /// The tokens this request may spend (its estimate: `max_tokens` plus the prompt's).
    pub tokens: u64,
    /// Where the grant goes.
    pub reply: oneshot::Sender<Grant>,
}

impl std::fmt::Debug for Acquire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquire").finish_non_exhaustive()
    }
}

/// A granted request: hold it while the request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The provider incarnation that granted it (a release to a restarted provider is
    /// ignored: the new one started with fresh budgets).
    pub generation: u64,
    /// The tokens charged.
    pub tokens: u64,
}

/// Gives a granted slot back, with what the request spent and whether the server asked
/// to be left alone for a while.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct Release {
    /// The grant's provider incarnation.
    pub generation: u64,
    /// The tokens charged at the grant.
    pub charged: u64,
    /// The tokens the server reported (`None`: not reported; the charge stands).
    pub spent: Option<u64>,
    /// The server's `Retry-After` (on 429 or 503): no request starts before it passes.
    pub retry_after: Option<Duration>,
}
