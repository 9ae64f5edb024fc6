//! The router: validate, resolve, deliver or fail with a reason.
//!
//! [`Router`] is the routing logic over the handles it is given (schema store, capability index,
//! journal, dead letters); [`RouterActor`](super::actor::RouterActor) serves envelopes sent
//! from other threads and waits for their replies.
//! Task owners call `Router::deliver` inline: a task stays on one thread from submission to
//! completion, and a hop through another actor would cost a mailbox round trip per handoff.
//! The transport seam for remote agents is the instance's
//! [`Mailbox`](crate::agents::Mailbox) port behind its [`InstanceHandle`]: the router
//! delivers to a handle, and a handle whose mailbox is a remote instance (the cluster's
//! `RemoteMailbox`) or a simulated network node (the simulator's `NodeMailbox`) carries the
//! assignment there; the router does not know which.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::verdict::verdict;
use crate::agents::{Assign, AttemptReport, Failure, InstanceHandle, Ledger, ReplyTo};
use crate::discovery::{CapabilityIndex, PickError};
use crate::ids::IdGen;
use crate::journal::{Event, Recorder};
use crate::messaging::{
    ContractError, DeadLetter, DeadLetters, DeliveryFailure, Envelope, FailureReason, Recipient,
    SchemaStore,
};

/// Routing logic: the handles it reads (schemas, the capability index) and writes (the
/// journal, the dead letters). Cheap to clone.
#[derive(Clone)]
pub struct Router {
    schemas: Arc<SchemaStore>,
    index: Arc<CapabilityIndex>,
    recorder: Recorder,
    ids: Arc<IdGen>,
    dead_letters: Arc<DeadLetters>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    /// A router over these handles.
    pub fn new(
        schemas: Arc<SchemaStore>,
        index: Arc<CapabilityIndex>,
        recorder: Recorder,
        ids: Arc<IdGen>,
        dead_letters: Arc<DeadLetters>,
    ) -> Self {
        Router {
            schemas,
            index,
            recorder,
            ids,
            dead_letters,
        }
    }

    /// The journal handle it writes through.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// The capability index it resolves against.
    pub fn index(&self) -> &Arc<CapabilityIndex> {
        &self.index
    }

    /// The id generator envelopes take their ids from.
    pub fn ids(&self) -> &Arc<IdGen> {
        &self.ids
    }

    /// Fails an envelope: journals it, keeps it as a dead letter, and returns the failure
    /// for the sender.
    pub fn fail(
        &self,
        envelope: Arc<Envelope>,
        reason: FailureReason,
        detail: String,
        contract: Option<ContractError>,
    ) -> DeliveryFailure {
        let at_ms = self.recorder.now_ms();
        self.recorder.record_at(
            at_ms,
            Event::EnvelopeFailed {
                envelope: envelope.clone(),
                reason: reason.as_str().into(),
                detail: detail.clone(),
            },
        );
        self.dead_letters.push(DeadLetter {
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
    pub fn resolve(
        &self,
        envelope: &Envelope,
        exclude: &[Arc<str>],
    ) -> Result<Arc<InstanceHandle>, (FailureReason, String)> {
        match &envelope.recipient {
            Recipient::Agent(name) => {
                let h = self.index.agent(name).ok_or_else(|| {
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
            Recipient::Capability(cap) => match self.index.pick(cap, exclude, 0) {
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

    /// Puts an envelope in a reserved instance's mailbox and journals the handoff
    /// (`envelope_routed`). The payload must already be validated.
    pub fn deliver(
        &self,
        to: &InstanceHandle,
        envelope: Arc<Envelope>,
        deadline: tokio::time::Instant,
        reply: ReplyTo,
        heartbeat: Option<Arc<dyn Fn() + Send + Sync>>,
    ) {
        self.recorder.record(Event::EnvelopeRouted {
            envelope: envelope.clone(),
            delivered_to: to.id.clone(),
        });
        self.hand_over(to, envelope, deadline, reply, heartbeat, None);
    }

    /// As [`Router::deliver`], for a caller that has journaled the handoff itself (a task
    /// owner's `lease_granted` carries its envelope whole), handing the attempt its
    /// task's effect ledger.
    pub fn hand_over(
        &self,
        to: &InstanceHandle,
        envelope: Arc<Envelope>,
        deadline: tokio::time::Instant,
        reply: ReplyTo,
        heartbeat: Option<Arc<dyn Fn() + Send + Sync>>,
        effects: Option<Arc<Ledger>>,
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
        to.assign(Assign {
            envelope,
            deadline,
            reply,
            heartbeat,
            effects,
        });
    }
}

/// How long a sender waiting for a slot sleeps at most before it looks again on its own:
/// a backstop only, as every freed slot wakes it.
const SLOT_BACKSTOP: Duration = Duration::from_secs(1);

/// Resolves the envelope's recipient and reserves a slot on it; while every candidate is
/// at its bound, waits until `until` for a slot to free, woken as task owners are (a
/// capability's line, or the addressed instance's own wake) rather than by polling.
async fn resolve_waiting(
    router: &Router,
    env: &Envelope,
    until: tokio::time::Instant,
) -> Result<Arc<InstanceHandle>, (FailureReason, String)> {
    // The hop count of the last wake (see `CapabilityIndex::pick_or_wait`).
    let mut woken = None;
    loop {
        let full = match router.resolve(env, &[]) {
            Ok(h) => return Ok(h),
            Err((FailureReason::MailboxFull, detail)) => detail,
            Err(other) => return Err(other),
        };
        let now = tokio::time::Instant::now();
        if now >= until {
            return Err((FailureReason::MailboxFull, full));
        }
        let backstop = (until - now).min(SLOT_BACKSTOP);
        match &env.recipient {
            Recipient::Capability(cap) => {
                // A place in line, taken atomically with a second look: a slot freed since
                // the first is taken now, and one freed later wakes this sender.
                let Some((tx, mut place)) = router.index.join_line(cap) else {
                    continue; // no longer declared: the next look says so
                };
                match router.index.pick_or_wait(cap, &[], 0, tx, woken) {
                    Ok((_, h)) => return Ok(h),
                    Err(PickError::AllFull) => {
                        place.woken(backstop).await;
                        woken = place.take();
                    }
                    Err(_) => {} // nobody serves it any more: the next look says so
                }
            }
            Recipient::Agent(name) => {
                // Gone: the next look says so.
                if let Some(h) = router.index.agent(name) {
                    h.slot_freed(backstop).await;
                }
            }
        }
    }
}

/// Validates, resolves, delivers and waits for the reply (checked against the capability's
/// output contract). Every failure is journaled and kept as a dead letter.
pub async fn route(
    router: Router,
    env: Envelope,
    wait: Duration,
) -> Result<Envelope, DeliveryFailure> {
    let env = Arc::new(env);
    let now_ms = router.recorder.now_ms();
    let start = tokio::time::Instant::now();
    let deadline = match env.deadline {
        Some(d) if d <= now_ms => {
            return Err(router.fail(
                env,
                FailureReason::DeadlinePassed,
                format!("deadline {d} passed before delivery (now {now_ms})"),
                None,
            ));
        }
        Some(d) => start + Duration::from_millis(d - now_ms),
        None => start + wait,
    };
    if let Err(e) = router.schemas.validate(&env.schema, &env.payload) {
        return Err(router.fail(env, FailureReason::SchemaViolation, e.to_string(), Some(e)));
    }
    // Resolve, waiting (bounded) while every candidate's mailbox is full.
    let wait_until = (start + wait).min(deadline);
    let handle = match resolve_waiting(&router, &env, wait_until).await {
        Ok(h) => h,
        Err((reason, detail)) => return Err(router.fail(env, reason, detail, None)),
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
            ));
        }
        Err(_) => {
            return Err(router.fail(
                env,
                FailureReason::DeadlinePassed,
                format!("no reply from {} before the deadline", handle.id),
                None,
            ));
        }
    };
    let output = match report.result {
        Ok(v) => v,
        Err(f) => {
            let detail = format!("agent {}: {f}", report.agent);
            return Err(router.fail(env, FailureReason::AgentFailed, detail, None));
        }
    };
    // The reply crosses a boundary too: it gets the verdict a task's result gets (a routed
    // reply is not journaled whole, so the payload bound does not apply).
    let contract = match &env.recipient {
        Recipient::Capability(c) => router.index.contract(c),
        Recipient::Agent(_) => router.index.contract(&env.topic),
    };
    let task = env.task_id.unwrap_or(env.id);
    let judged = verdict(
        task,
        contract.as_deref(),
        &env.payload,
        &output,
        env.scope.as_deref(),
        None,
    );
    if let Err(f) = judged {
        let (detail, error) = match f {
            Failure::ContractViolation(e) => (e.to_string(), Some(e)),
            other => (other.detail(), None),
        };
        return Err(router.fail(env, FailureReason::ReplyViolation, detail, error));
    }
    let schema_name = contract.map_or_else(|| Arc::from(""), |c| c.output.name.clone());
    let reply = Envelope {
        id: router.ids.next(router.recorder.now_ms()),
        correlation_id: env.correlation_id,
        causation_id: Some(env.id),
        topic: env.topic.clone(),
        sender: report.agent.clone(),
        recipient: Recipient::Agent(env.sender.clone()),
        schema: schema_name,
        payload: Arc::new(output),
        task_id: env.task_id,
        attempt: env.attempt,
        epoch: env.epoch,
        created_at: router.recorder.now_ms(),
        deadline: None,
        scope: None,
    };
    Ok(reply)
}
