//! The router: validate, resolve, deliver or fail with a reason.
//!
//! [`Router`] is the routing logic over shared state (schema store, capability index,
//! journal); [`RouterActor`] serves envelopes sent from outside and waits for their replies.
//! Task owners call `Router::deliver` inline: a task stays on one thread from submission to
//! completion, and a hop through another actor would cost a mailbox round trip per handoff.
//! The transport seam for remote agents is `Router::deliver`: everything that reaches an
//! instance passes through it.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::dead_letter::DeadLetter;
use super::envelope::{Envelope, Recipient};
use super::ContractError;
use crate::agents::instance::{Assign, AttemptReport, ReplyTo};
use crate::discovery::{InstanceHandle, PickError};
use crate::journal::Event;
use crate::runtime::Shared;

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

/// Routing logic over the runtime's shared state.
#[derive(Clone)]
pub struct Router {
    pub(crate) shared: Arc<Shared>,
}

impl Router {
    /// Fails an envelope: journals it, keeps it as a dead letter, and returns the failure
    /// for the sender.
    pub(crate) fn fail(
        &self,
        envelope: Arc<Envelope>,
        reason: FailureReason,
        detail: String,
        contract: Option<ContractError>,
    ) -> DeliveryFailure {
        let at_ms = self.shared.clock.now_ms();
        self.shared.journal(Event::EnvelopeFailed {
            envelope: envelope.clone(),
            reason: reason.as_str().into(),
            detail: detail.clone(),
        });
        self.shared.dead_letters.push(DeadLetter {
            envelope: envelope.clone(),
            reason,
            detail: detail.clone(),
            at_ms,
        });
        tracing::debug!(envelope = %envelope.id, %reason, %detail, "dead letter");
        DeliveryFailure {
            reason,
            detail,
            contract,
            envelope,
        }
    }

    /// Resolves the recipient to one instance and reserves a slot on it.
    pub(crate) fn resolve(
        &self,
        envelope: &Envelope,
        exclude: &[Arc<str>],
    ) -> Result<Arc<InstanceHandle>, (FailureReason, String)> {
        match &envelope.recipient {
            Recipient::Agent(name) => {
                let h = self.shared.index.agent(name).ok_or_else(|| {
                    (
                        FailureReason::RecipientGone,
                        format!("no agent instance `{name}` is registered"),
                    )
                })?;
                if !h.available() {
                    return Err((
                        FailureReason::RecipientGone,
                        format!("agent `{name}` is {}", h.state()),
                    ));
                }
                if !h.try_reserve() {
                    return Err((
                        FailureReason::MailboxFull,
                        format!("agent `{name}` holds {} tasks (its bound)", h.capacity),
                    ));
                }
                Ok(h)
            }
            Recipient::Capability(cap) => match self.shared.index.pick(cap, exclude) {
                Ok((_, h)) => Ok(h),
                Err(PickError::UnknownCapability) => Err((
                    FailureReason::NoCapableAgent,
                    format!("no agent declares capability `{cap}`"),
                )),
                Err(PickError::NoCandidate) => Err((
                    FailureReason::NoCapableAgent,
                    format!("no live agent serves capability `{cap}`"),
                )),
                Err(PickError::AllFull) => Err((
                    FailureReason::MailboxFull,
                    format!("every agent serving `{cap}` is at its bound"),
                )),
            },
        }
    }

    /// Puts an envelope in a reserved instance's mailbox and journals the handoff. The
    /// payload must already be validated.
    pub(crate) fn deliver(
        &self,
        to: &InstanceHandle,
        envelope: Arc<Envelope>,
        deadline: tokio::time::Instant,
        reply: ReplyTo,
        heartbeat: Option<Arc<dyn Fn() + Send + Sync>>,
    ) {
        let _span = tracing::debug_span!(
            "envelope",
            id = %envelope.id,
            correlation = %envelope.correlation_id,
            task = ?envelope.task_id,
            epoch = envelope.epoch,
            to = %to.id,
        )
        .entered();
        tracing::debug!(topic = %envelope.topic, schema = %envelope.schema, "routed");
        self.shared.journal(Event::EnvelopeRouted {
            envelope: envelope.clone(),
            delivered_to: to.id.clone(),
        });
        to.addr.do_send(Assign {
            envelope,
            deadline,
            reply,
            heartbeat,
        });
    }
}

/// The router actor: serves [`Route`] for envelopes sent through [`crate::Muster::send`].
pub struct RouterActor {
    router: Router,
    link: Option<crate::supervision::ChildLink>,
}

impl RouterActor {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        RouterActor {
            router: Router { shared },
            link: None,
        }
    }

    pub(crate) fn with_link(mut self, link: crate::supervision::ChildLink) -> Self {
        self.link = Some(link);
        self
    }
}

impl Handler<crate::supervision::supervisor::StopActor> for RouterActor {
    type Result = ();

    fn handle(&mut self, _: crate::supervision::supervisor::StopActor, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1 << 20);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(l) = self.link.take() {
            l.exit(crate::supervision::Exit::Shutdown);
        }
    }
}

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

impl Handler<Route> for RouterActor {
    type Result = ResponseFuture<Result<Envelope, DeliveryFailure>>;

    fn handle(&mut self, m: Route, _: &mut Self::Context) -> Self::Result {
        let router = self.router.clone();
        Box::pin(async move { route(router, m.envelope, m.wait).await })
    }
}

/// Validates, resolves, delivers and waits for the reply (checked against the capability's
/// output contract). Every failure is journaled and kept as a dead letter.
pub(crate) async fn route(
    router: Router,
    env: Envelope,
    wait: Duration,
) -> Result<Envelope, DeliveryFailure> {
    let shared = router.shared.clone();
    let env = Arc::new(env);
    let now_ms = shared.clock.now_ms();
    let start = tokio::time::Instant::now();
    let deadline = match env.deadline {
        Some(d) if d <= now_ms => {
            return Err(router.fail(
                env,
                FailureReason::DeadlinePassed,
                format!("deadline {d} passed before delivery (now {now_ms})"),
                None,
            ))
        }
        Some(d) => start + Duration::from_millis(d - now_ms),
        None => start + wait,
    };
    if let Err(e) = shared.schemas.validate(&env.schema, &env.payload) {
        return Err(router.fail(env, FailureReason::SchemaViolation, e.to_string(), Some(e)));
    }
    // Resolve, waiting (bounded) while every candidate's mailbox is full.
    let wait_until = (start + wait).min(deadline);
    let handle = loop {
        match router.resolve(&env, &[]) {
            Ok(h) => break h,
            Err((FailureReason::MailboxFull, detail)) => {
                if tokio::time::Instant::now() >= wait_until {
                    return Err(router.fail(env, FailureReason::MailboxFull, detail, None));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((reason, detail)) => return Err(router.fail(env, reason, detail, None)),
        }
    };
    let (tx, rx) = oneshot::channel::<AttemptReport>();
    router.deliver(&handle, env.clone(), deadline, ReplyTo::Once(tx), None);
    let report = match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => {
            return Err(router.fail(
                env,
                FailureReason::AgentFailed,
                format!("agent {} went away without answering", handle.id),
                None,
            ))
        }
        Err(_) => {
            return Err(router.fail(
                env,
                FailureReason::DeadlinePassed,
                format!("no reply from {} before the deadline", handle.id),
                None,
            ))
        }
    };
    let output = match report.result {
        Ok(v) => v,
        Err(f) => {
            let detail = format!("agent {}: {f}", report.agent);
            return Err(router.fail(env, FailureReason::AgentFailed, detail, None));
        }
    };
    // The reply crosses a boundary too: check it against the capability's output schema.
    let out_schema = match &env.recipient {
        Recipient::Capability(c) => shared.index.contract(c),
        Recipient::Agent(_) => shared.index.contract(&env.topic),
    };
    let schema_name = match &out_schema {
        Some(c) => {
            if let Err(e) = c.output.validate(&output) {
                return Err(router.fail(
                    env,
                    FailureReason::ReplyViolation,
                    e.to_string(),
                    Some(e),
                ));
            }
            c.output.name.clone()
        }
        None => Arc::from(""),
    };
    let reply = Envelope {
        id: shared.ids.next(shared.clock.now_ms()),
        correlation_id: env.correlation_id,
        causation_id: Some(env.id),
        topic: env.topic.clone(),
        sender: report.agent.clone(),
        recipient: Recipient::Agent(env.sender.clone()),
        schema: schema_name,
        payload: output,
        task_id: env.task_id,
        attempt: env.attempt,
        epoch: env.epoch,
        created_at: shared.clock.now_ms(),
        deadline: None,
    };
    Ok(reply)
}
