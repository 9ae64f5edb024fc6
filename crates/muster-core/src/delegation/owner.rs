//! The task owner: one state machine per live task, holding its delegation record.
//!
//! It leases the task to one agent at a time, each lease under a fresh epoch, watches the
//! attempt (time bound, heartbeats, the agent's death), checks the output against the
//! contract, reassigns to a different agent on failure, and ends the task in exactly one
//! terminal state. After the end it lingers until every lease it granted has answered, so
//! a late result is still seen, and fenced as stale (G2), rather than lost.
//!
//! An owner is not an actor of its own: the [`OwnerShard`](super::shard::OwnerShard) of
//! its thread drives it (messages, timers, the end of waits it spawned) through a [`Cx`].
//! Starting a task costs a map entry, not a mailbox, a context and a spawned future.
//!
//! Its state is one [`Phase`]; each phase holds what it waits on (a timer, a lease, the
//! number of its wait in line), so a message or a timer that belongs to another phase
//! finds nothing to act on. `Pending` is never waited in: it is the phase between two
//! steps of one call.
//!
//! ```text
//!  begin ─▶ Pending ──identical work in flight──▶ Following{leader} ──its result──▶ ┐
//!             │  ▲                                    │ it ended without one       │
//!             │  └────────────────────────────────────┘                            │
//!             │ scope declared                                                     │
//!             ├──────────────▶ AwaitingScope ──granted──▶ look                    │
//!             │                                                                    │
//!             ▼                 ┌───── slot freed / backstop ─────┐                │
//!           look ──all full───▶ InLine{gen} ◀─────────────────────┘                │
//!            │ │ ──nobody─────▶ AwaitingAgent ──an agent registered──▶ look        │
//!            │ └─picked──▶ Leased{epoch, agent, timers}                            │
//!            │                 │ failure, timeout, heartbeat missed, rejected      │
//!            │                 ▼                                                   │
//!            └──◀ delay over ─ Backoff{timer} (or look at once without delay)      │
//!                                                                                  │
//!  any waiting phase ── deadline, budget spent, scope refused ──▶ escalated ─┐     │
//!  Leased ── result accepted ──▶ completed ──┐    cancel (any) ─▶ cancelled ─┤ ◀───┘
//!                                            ▼                               ▼
//!                          leases unanswered? ── yes ──▶ Lingering{timer} ── last answer
//!                                            │ no                      or timer ──▶ Done
//!                                            └─────────────────────────────────────▶ Done
//! ```
//!
//! A result whose epoch is not the `Leased` one (or that arrives once the task ended) is
//! journaled `result_stale` and never accepted.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::protocol::{
    Accepted, AcquireScope, LeaseHeartbeat, LineSlot, ReleaseScope, Wake, Woken,
};
use super::record::{Escalation, Lease, LeaseOutcome, Outcome, TaskRecord, TaskStatus};
use super::reuse::{Found, ReuseKey, Reused};
use super::shared::Shared;
use super::task::{Exhausted, OnConflict, Task};
use super::timers::{Due, TimerKey, Timers};
use crate::agents::{AttemptReport, Failure, InstanceHandle, ReplyTo};
use crate::discovery::{PickError, WaitFor};
use crate::journal::{check_payload, Event, Recorder};
use crate::messaging::{Capability, Envelope, Recipient, Scope, DEFAULT_REUSE_FOR};

/// What an owner asks of the shard driving it: its timers, and where answers to the owner
/// go (all to the shard, naming the task).
pub(super) struct Cx<'a> {
    pub(super) timers: &'a mut Timers,
    pub(super) reply: &'a actix::Recipient<AttemptReport>,
    pub(super) woken: &'a actix::Recipient<Woken>,
    pub(super) beat: &'a actix::Recipient<LeaseHeartbeat>,
    pub(super) reused: &'a actix::Recipient<Reused>,
}

/// The lease in force: its agent, its epoch and the timers watching it.
struct ActiveLease {
    handle: Arc<InstanceHandle>,
    epoch: u64,
    timer: TimerKey,
    heartbeat_check: Option<TimerKey>,
    last_heartbeat: tokio::time::Instant,
}

/// Where an owner is in its task's life: the one place its state is kept. Each variant
/// holds what that phase waits on; see the module's diagram.
enum Phase {
    /// Between two steps of one call (and before `begin`): nothing is awaited.
    Pending,
    /// Waits for the identical idempotent task `leader` in flight to end, bounded by the
    /// task's deadline (`timer`).
    Following { leader: Uuid, timer: TimerKey },
    /// Asked the scope table for the task's scope; waits for its answer.
    AwaitingScope,
    /// Every capable agent is at its bound: waits in the capability's line, this owner's
    /// `gen`-th wait there (the wake of an older one is passed on to the next in line).
    InLine { gen: u32 },
    /// Nobody serves the capability (or everybody failed it): waits for an agent to
    /// register, bounded by the deadline.
    AwaitingAgent,
    /// A failed attempt's back-off runs; the owner looks for an agent when `timer` fires.
    Backoff { timer: TimerKey },
    /// Leased to one agent under one epoch.
    Leased(ActiveLease),
    /// The task ended; waits for the leases it granted to answer, at most until `timer`.
    Lingering { timer: TimerKey },
    /// The task ended and nothing is left to wait for: the shard drops this owner.
    Done,
}

impl Phase {
    /// Cancels the timers this phase set.
    fn cancel_timers(&self, timers: &mut Timers) {
        match self {
            Phase::Following { timer, .. }
            | Phase::Backoff { timer }
            | Phase::Lingering { timer } => timers.cancel(*timer),
            Phase::Leased(l) => {
                timers.cancel(l.timer);
                if let Some(h) = l.heartbeat_check {
                    timers.cancel(h);
                }
            }
            Phase::Pending | Phase::AwaitingScope | Phase::InLine { .. } | Phase::AwaitingAgent => {
            }
            Phase::Done => {}
        }
    }
}

/// The owner of one task: a state machine driven by its shard.
pub(super) struct TaskOwner {
    owners: Arc<Shared>,
    /// The shard it runs on: its picks prefer instances there.
    shard: usize,
    recorder: Recorder,
    task: Task,
    contract: Option<Arc<Capability>>,
    record: TaskRecord,
    /// Where the owner is (see [`Phase`]).
    phase: Phase,
    /// The last epoch granted (or the task's first epoch less one).
    epoch: u64,
    /// Epochs granted whose agent has not answered yet.
    outstanding: Vec<u64>,
    excluded: Vec<Arc<str>>,
    waiter: Option<oneshot::Sender<Outcome>>,
    deadline: tokio::time::Instant,
    last_envelope: Option<Uuid>,
    /// Consecutive waits in line without a lease (the backstop doubles with each, see
    /// [`LINE_BACKSTOP`]).
    line_waits: u32,
    /// Waits in line so far (numbers them, see [`Phase::InLine`]).
    line_gen: u32,
    /// The capability and the sender as envelopes carry them, allocated once per task.
    topic: Arc<str>,
    sender: Arc<str>,
    /// Whether the task asked the scope table for its scope (and must free it at its end):
    /// held from `AwaitingScope` to the task's end, across phases.
    scope_asked: bool,
    /// Set while this task is the one running identical idempotent work (across phases,
    /// until its end).
    reuse_key: Option<ReuseKey>,
}

/// How long an owner waiting in line waits for its wake before it looks again anyway (a
/// backstop: wakes are not expected to be lost); it doubles up to [`LINE_BACKSTOP_MAX`].
const LINE_BACKSTOP: Duration = Duration::from_secs(1);
const LINE_BACKSTOP_MAX: Duration = Duration::from_secs(32);

/// An owner's place in a capability's line while its wait runs: a wake that arrives as
/// the backstop fires is passed on.
struct InLine {
    rx: oneshot::Receiver<u32>,
    index: Arc<crate::discovery::CapabilityIndex>,
    capability: Arc<str>,
}

impl Drop for InLine {
    fn drop(&mut self) {
        if let Ok(hops) = self.rx.try_recv() {
            self.index.pass_on(&self.capability, hops);
        }
    }
}

impl TaskOwner {
    pub(super) fn new(owners: Arc<Shared>, a: Accepted) -> Self {
        let Accepted {
            task,
            id,
            contract,
            waiter,
            shard,
        } = a;
        let recorder = owners.router.recorder().clone();
        let now = recorder.now_ms();
        let record = TaskRecord::new(
            id,
            task.capability.clone(),
            task.correlation.unwrap_or(id),
            now,
        );
        let topic: Arc<str> = Arc::from(task.capability.as_str());
        let sender: Arc<str> = Arc::from(task.sender.as_str());
        TaskOwner {
            owners,
            shard,
            recorder,
            deadline: tokio::time::Instant::now() + task.overall(),
            epoch: task.min_epoch,
            last_envelope: task.causation,
            task,
            contract,
            record,
            phase: Phase::Pending,
            outstanding: Vec::new(),
            excluded: Vec::new(),
            waiter: Some(waiter),
            topic,
            sender,
            line_waits: 0,
            line_gen: 0,
            scope_asked: false,
            reuse_key: None,
        }
    }

    /// The task's id.
    pub(super) fn id(&self) -> Uuid {
        self.record.id
    }

    /// Whether the shard should drop this owner: the task ended and nothing it granted
    /// is still to answer (or its lingering is over).
    pub(super) fn stopped(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Cancels the timers this owner set (it is being dropped).
    pub(super) fn cancel_timers(&mut self, timers: &mut Timers) {
        self.phase.cancel_timers(timers);
    }

    /// Moves to `next`, cancelling the timers of the phase it leaves; returns that phase.
    fn enter(&mut self, next: Phase, timers: &mut Timers) -> Phase {
        let old = std::mem::replace(&mut self.phase, next);
        old.cancel_timers(timers);
        old
    }

    /// Starts the task: reuse of identical work, else its scope, then its first lease.
    pub(super) fn begin(&mut self, cx: &mut Cx) {
        if self.try_reuse(cx) {
            return;
        }
        self.acquire_then_lease(cx);
    }

    /// An idempotent task first looks for identical work: an accepted result ends it at
    /// once (`task_reused`), a task in flight takes it on as a follower. True when it
    /// must not run now.
    fn try_reuse(&mut self, cx: &mut Cx) -> bool {
        let Some(c) = self.contract.as_ref().filter(|c| c.spec.idempotent) else {
            return false;
        };
        let key = ReuseKey::new(&c.name, &c.spec.version, &self.task.input);
        match self.owners.reuse.find_or_run(
            &key,
            &self.task.input,
            self.record.id,
            cx.reused.clone(),
        ) {
            Found::Done { task, output } => {
                self.reused(task, output, cx);
                true
            }
            Found::InFlight(leader) => {
                tracing::debug!(task = %self.record.id, %leader, "attached to an identical task in flight");
                // Bounded like any wait: past the deadline the task escalates.
                let timer = cx.timers.at(self.deadline, self.record.id, Due::Follow);
                self.enter(Phase::Following { leader, timer }, cx.timers);
                true
            }
            Found::Run => {
                self.reuse_key = Some(key);
                false
            }
        }
    }

    fn reused(&mut self, original: Uuid, output: Arc<Value>, cx: &mut Cx) {
        self.recorder.record(Event::TaskReused {
            task: self.record.id,
            original,
            output: output.clone(),
        });
        self.record.output = Some(output);
        self.finish(TaskStatus::Completed, cx);
    }

    /// Takes the task's scope, if it declares one, then leases. A task without a scope
    /// goes straight to its lease (no round trip to the scope table).
    fn acquire_then_lease(&mut self, cx: &mut Cx) {
        let Some(scope) = self.task.scope.clone().filter(|s| !s.is_empty()) else {
            self.try_lease(cx);
            return;
        };
        self.scope_asked = true;
        self.enter(Phase::AwaitingScope, cx.timers);
        let (tx, rx) = oneshot::channel();
        self.owners.scope_table().do_send(AcquireScope {
            task: self.record.id,
            scope,
            fail: self.task.on_conflict == OnConflict::Fail,
            granted: tx,
        });
        let deadline = self.deadline;
        let (shard, task) = (cx.woken.clone(), self.record.id);
        actix::spawn(async move {
            let answer = match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(refused))) => Err(refused.to_string()),
                Ok(Err(_)) => Err("the scope table stopped".into()),
                Err(_) => Err("its scope stayed held by another task until the deadline".into()),
            };
            shard.do_send(Woken {
                task,
                wake: Wake::Scope(answer),
            });
        });
    }

    fn release_scope(&mut self) {
        if std::mem::take(&mut self.scope_asked) {
            if let Some(t) = self.owners.scopes.get() {
                t.do_send(ReleaseScope {
                    task: self.record.id,
                });
            }
        }
    }

    /// What the owner waited for outside the shard has happened.
    pub(super) fn on_woken(&mut self, wake: Wake, cx: &mut Cx) {
        match wake {
            Wake::Scope(answer) => {
                if !matches!(self.phase, Phase::AwaitingScope) {
                    return; // cancelled while it waited
                }
                self.enter(Phase::Pending, cx.timers);
                match answer {
                    Ok(()) => self.try_lease(cx),
                    Err(reason) => self.escalate(reason, cx),
                }
            }
            Wake::Line { gen, mut slot } => {
                if !matches!(self.phase, Phase::InLine { gen: g } if g == gen) {
                    return; // an older wait's slot: `slot` passes it on
                }
                self.enter(Phase::Pending, cx.timers);
                self.look(slot.take(), cx);
            }
            Wake::Agent => {
                if !matches!(self.phase, Phase::AwaitingAgent) {
                    return; // cancelled while it waited
                }
                self.enter(Phase::Pending, cx.timers);
                self.try_lease(cx);
            }
        }
    }

    /// A timer this owner set is due.
    pub(super) fn on_timer(&mut self, due: Due, cx: &mut Cx) {
        match due {
            Due::Attempt { epoch } => {
                self.attempt_failed(epoch, Failure::Timeout, cx);
            }
            Due::Heartbeat { epoch, every } => {
                let now = tokio::time::Instant::now();
                let Phase::Leased(l) = &mut self.phase else {
                    return;
                };
                if l.epoch != epoch {
                    return;
                }
                if now.saturating_duration_since(l.last_heartbeat) > every {
                    l.heartbeat_check = None;
                    self.attempt_failed(epoch, Failure::HeartbeatMissed, cx);
                } else {
                    l.heartbeat_check = Some(cx.timers.at(
                        now + every,
                        self.record.id,
                        Due::Heartbeat { epoch, every },
                    ));
                }
            }
            Due::Retry => {
                if matches!(self.phase, Phase::Backoff { .. }) {
                    self.enter(Phase::Pending, cx.timers);
                    self.try_lease(cx);
                }
            }
            Due::Linger => {
                if matches!(self.phase, Phase::Lingering { .. }) {
                    self.enter(Phase::Done, cx.timers);
                }
            }
            Due::Follow => {
                if let Phase::Following { leader, .. } = self.phase {
                    self.escalate(
                        format!("the identical task {leader} it attached to did not end before the deadline"),
                        cx,
                    );
                }
            }
        }
    }

    /// Attempts counted against the budget: those before a restart and this owner's leases.
    fn attempts_used(&self) -> u32 {
        self.task.spent + self.record.leases.len() as u32
    }

    /// Whether the task ended (the owner may still linger).
    fn done(&self) -> bool {
        matches!(self.phase, Phase::Lingering { .. } | Phase::Done)
    }

    fn leased(&self) -> Option<&ActiveLease> {
        match &self.phase {
            Phase::Leased(l) => Some(l),
            _ => None,
        }
    }

    fn try_lease(&mut self, cx: &mut Cx) {
        self.look(None, cx);
    }

    /// Leases the task to the best agent now, or waits for one; `woken`: the hop count of
    /// the freed slot that woke this owner from the capability's line, if one did (if the
    /// slot is gone by the time it looks, it goes back to the head of the line; if it
    /// cannot take it, it passes it on).
    fn look(&mut self, woken: Option<u32>, cx: &mut Cx) {
        if self.done() || self.leased().is_some() {
            return;
        }
        if self.attempts_used() >= self.task.attempts {
            let reason = format!(
                "attempt budget of {} spent; last failure: {}",
                self.task.attempts,
                self.last_failure()
            );
            self.escalate(reason, cx);
            return;
        }
        // The contract may be unknown if the task was submitted before any agent declared
        // the capability: check the input now, before anything is leased (G3).
        if self.contract.is_none() {
            if let Some(c) = self.owners.router.index().contract(&self.task.capability) {
                if let Err(e) = c.input.validate(&self.task.input) {
                    self.escalate(format!("input violates the capability's contract: {e}"), cx);
                    return;
                }
                self.contract = Some(c);
            }
        }
        let index = self.owners.router.index().clone();
        let picked = match index.pick(&self.task.capability, &self.excluded, self.shard) {
            Err(PickError::AllFull) => {
                // Look again with a place in line, atomically: a slot freed since the
                // first look is taken now, and one freed later wakes this owner.
                let (tx, rx) = oneshot::channel();
                let line = InLine {
                    rx,
                    index: index.clone(),
                    capability: self.topic.clone(),
                };
                match index.pick_or_wait(
                    &self.task.capability,
                    &self.excluded,
                    self.shard,
                    tx,
                    woken,
                ) {
                    Err(PickError::AllFull) => return self.wait_in_line(line, cx),
                    other => other,
                }
            }
            other => other,
        };
        match picked {
            Ok((contract, handle)) => {
                self.contract = Some(contract);
                self.lease_to(handle, cx);
            }
            // Nobody serves it (a full capability waited in line above).
            Err(_) => self.wait_for_agent(cx),
        }
    }

    /// Every candidate is at its bound: waits in the capability's line until a freed slot
    /// wakes this owner (a backstop looks anyway), bounded by the task's deadline.
    fn wait_in_line(&mut self, mut line: InLine, cx: &mut Cx) {
        let now = tokio::time::Instant::now();
        if now >= self.deadline {
            self.escalate(
                "every capable agent stayed at its bound until the deadline".into(),
                cx,
            );
            return;
        }
        let backstop = LINE_BACKSTOP
            .saturating_mul(1 << self.line_waits.min(5))
            .min(LINE_BACKSTOP_MAX)
            .min(self.deadline.saturating_duration_since(now));
        self.line_waits = self.line_waits.saturating_add(1);
        self.line_gen = self.line_gen.wrapping_add(1);
        let gen = self.line_gen;
        self.enter(Phase::InLine { gen }, cx.timers);
        let (shard, task) = (cx.woken.clone(), self.record.id);
        actix::spawn(async move {
            let hops = tokio::select! {
                r = &mut line.rx => r.ok(),
                _ = tokio::time::sleep(backstop) => None,
            };
            let slot = LineSlot::new(hops, line.index.clone(), line.capability.clone());
            // A wake that arrives as the backstop fires is passed on.
            drop(line);
            shard.do_send(Woken {
                task,
                wake: Wake::Line { gen, slot },
            });
        });
    }

    fn wait_for_agent(&mut self, cx: &mut Cx) {
        if tokio::time::Instant::now() >= self.deadline {
            let reason = if self.excluded.is_empty() {
                format!(
                    "no agent serving `{}` registered before the deadline",
                    self.task.capability
                )
            } else {
                format!(
                    "every agent serving `{}` failed this task ({}); last failure: {}",
                    self.task.capability,
                    self.excluded.join(", "),
                    self.last_failure()
                )
            };
            self.escalate(reason, cx);
            return;
        }
        if matches!(self.phase, Phase::AwaitingAgent) {
            return;
        }
        self.enter(Phase::AwaitingAgent, cx.timers);
        let (tx, rx) = oneshot::channel();
        self.owners.registry.get().do_send(WaitFor {
            capability: Arc::from(self.task.capability.as_str()),
            tx,
        });
        let deadline = self.deadline;
        let (shard, task) = (cx.woken.clone(), self.record.id);
        actix::spawn(async move {
            tokio::select! {
                _ = rx => {},
                _ = tokio::time::sleep_until(deadline) => {},
            }
            shard.do_send(Woken {
                task,
                wake: Wake::Agent,
            });
        });
    }

    fn lease_to(&mut self, handle: Arc<InstanceHandle>, cx: &mut Cx) {
        self.line_waits = 0;
        self.epoch += 1;
        let epoch = self.epoch;
        let attempt = self.attempts_used() + 1;
        if attempt > 1 {
            // Counted when the task actually moves to another agent, not when an attempt
            // fails (it may then wait, or be escalated, instead).
            self.owners.stats.reassigned();
        }
        let _span = tracing::debug_span!(
            "lease",
            run = %self.record.correlation,
            task = %self.record.id,
            epoch = self.epoch,
            agent = %handle.id,
        )
        .entered();
        tracing::debug!(attempt, "lease granted");
        // One clock read for the whole lease.
        let now = tokio::time::Instant::now();
        let now_ms = self.recorder.clock().at_ms(now);
        let deadline = now + self.task.timeout;
        let contract = self.contract.as_ref();
        let envelope = Arc::new(Envelope {
            id: self.owners.router.ids().next(now_ms),
            correlation_id: self.record.correlation,
            causation_id: self.last_envelope,
            topic: self.topic.clone(),
            sender: self.sender.clone(),
            recipient: Recipient::Agent(handle.id.clone()),
            schema: contract
                .map(|c| c.input.name.clone())
                .unwrap_or_else(|| Arc::from("")),
            payload: self.task.input.clone(),
            task_id: Some(self.record.id),
            attempt,
            epoch,
            created_at: now_ms,
            deadline: Some(now_ms + self.task.timeout.as_millis() as u64),
            scope: self.task.scope.clone(),
        });
        self.record.status = TaskStatus::Leased;
        self.record.leases.push(Lease {
            agent: handle.id.clone(),
            epoch,
            attempt,
            started_ms: now_ms,
            ended_ms: None,
            outcome: LeaseOutcome::Running,
            envelope: Some(envelope.id),
        });
        self.recorder.record_at(
            now_ms,
            Event::LeaseGranted {
                task: self.record.id,
                agent: handle.id.clone(),
                epoch,
                attempt,
                envelope: envelope.id,
                routed: Some(envelope.clone()),
            },
        );
        let task = self.record.id;
        let timer = cx.timers.at(deadline, task, Due::Attempt { epoch });
        let heartbeat_every = contract.and_then(|c| c.spec.heartbeat);
        let (heartbeat, heartbeat_check) = match heartbeat_every {
            Some(every) => {
                let to = cx.beat.clone();
                let beat: Arc<dyn Fn() + Send + Sync> =
                    Arc::new(move || to.do_send(LeaseHeartbeat { task, epoch }));
                let check = cx
                    .timers
                    .at(now + every, task, Due::Heartbeat { epoch, every });
                (Some(beat), Some(check))
            }
            None => (None, None),
        };
        self.last_envelope = Some(envelope.id);
        self.outstanding.push(epoch);
        // Journaled above, whole, in `lease_granted`.
        self.owners.router.hand_over(
            &handle,
            envelope,
            deadline,
            ReplyTo::Owner(cx.reply.clone()),
            heartbeat,
        );
        self.enter(
            Phase::Leased(ActiveLease {
                handle,
                epoch,
                timer,
                heartbeat_check,
                last_heartbeat: now,
            }),
            cx.timers,
        );
    }

    fn last_failure(&self) -> String {
        self.record
            .leases
            .iter()
            .rev()
            .find_map(|l| match &l.outcome {
                LeaseOutcome::Failed { failure } => Some(format!("{} on {}", failure, l.agent)),
                _ => None,
            })
            .unwrap_or_else(|| "none".into())
    }

    /// Ends the current lease; returns its agent if `epoch` is the current lease.
    fn end_lease(
        &mut self,
        epoch: u64,
        outcome: LeaseOutcome,
        cx: &mut Cx,
    ) -> Option<Arc<InstanceHandle>> {
        if self.leased().is_none_or(|l| l.epoch != epoch) {
            return None;
        }
        let Phase::Leased(lease) = self.enter(Phase::Pending, cx.timers) else {
            return None;
        };
        let now = self.recorder.now_ms();
        if let Some(l) = self
            .record
            .leases
            .iter_mut()
            .rev()
            .find(|l| l.epoch == epoch)
        {
            l.ended_ms = Some(now);
            l.outcome = outcome;
        }
        self.record.status = TaskStatus::Pending;
        Some(lease.handle)
    }

    fn attempt_failed(&mut self, epoch: u64, failure: Failure, cx: &mut Cx) {
        if self.done() {
            return;
        }
        let Some(handle) = self.end_lease(
            epoch,
            LeaseOutcome::Failed {
                failure: failure.clone(),
            },
            cx,
        ) else {
            return; // a failure of a superseded lease changes nothing
        };
        tracing::debug!(task = %self.record.id, agent = %handle.id, epoch, %failure, "attempt failed");
        self.recorder.record(Event::AttemptFailed {
            task: self.record.id,
            agent: handle.id.clone(),
            epoch,
            reason: failure.reason().into(),
            detail: failure.detail(),
        });
        self.owners.stats.attempt_failed();
        if !self.excluded.contains(&handle.id) {
            self.excluded.push(handle.id.clone());
        }
        let failures = self.attempts_used();
        if failures >= self.task.attempts {
            self.try_lease(cx); // escalates with the budget message
            return;
        }
        let delay = self.task.backoff.delay(failures);
        if delay.is_zero() {
            self.try_lease(cx);
        } else {
            let at = tokio::time::Instant::now() + delay;
            let timer = cx.timers.at(at, self.record.id, Due::Retry);
            self.enter(Phase::Backoff { timer }, cx.timers);
        }
    }

    fn on_result(&mut self, epoch: u64, agent: Arc<str>, output: Value, cx: &mut Cx) {
        let current = self.leased().map(|l| l.epoch);
        if current != Some(epoch) || self.done() {
            // A result from a superseded epoch: fenced (G2).
            self.record.stale_rejected += 1;
            self.owners.stats.stale();
            self.recorder.record(Event::ResultStale {
                task: self.record.id,
                agent,
                epoch,
                current_epoch: current.unwrap_or(if self.done() { 0 } else { self.epoch }),
            });
            return;
        }
        // An output larger than the journal's payload bound would be stored only in part
        // (or not at all): it is refused like any other contract breach.
        let limit = self.recorder.journal().max_payload_bytes();
        let verdict = check_payload(self.record.id, &output, limit)
            .map_err(|e| Failure::Rejected(e.to_string()))
            .and_then(|()| match &self.contract {
                Some(c) => check_output(c, &self.task.input, &output),
                None => Ok(()),
            })
            .and_then(|()| match &self.task.scope {
                Some(scope) => check_touched(scope, self.contract.as_deref(), &output),
                None => Ok(()),
            });
        match verdict {
            Ok(()) => {
                // One value for the record, the journal and whoever reads the outcome.
                let output = Arc::new(output);
                self.end_lease(epoch, LeaseOutcome::Completed, cx);
                self.recorder.record(Event::ResultAccepted {
                    task: self.record.id,
                    agent,
                    epoch,
                    output: output.clone(),
                });
                self.record.output = Some(output);
                self.finish(TaskStatus::Completed, cx);
            }
            Err(f) => self.attempt_failed(epoch, f, cx),
        }
    }

    fn escalate(&mut self, reason: String, cx: &mut Cx) {
        let to = match &self.task.on_exhausted {
            Exhausted::Fail => "dead_letter".to_string(),
            Exhausted::Gate(g) => g.clone(),
        };
        tracing::info!(task = %self.record.id, %to, %reason, "task escalated");
        self.recorder.record(Event::TaskEscalated {
            task: self.record.id,
            to: to.clone(),
            reason: reason.clone(),
        });
        self.record.escalation = Some(Escalation { to, reason });
        self.finish(TaskStatus::Escalated, cx);
    }

    fn finish(&mut self, status: TaskStatus, cx: &mut Cx) {
        // Whatever it waited on is over (a lease was ended before).
        self.enter(Phase::Done, cx.timers);
        self.record.status = status;
        self.record.ended_ms = Some(self.recorder.now_ms());
        self.owners.stats.ended(status);
        self.owners.table.remove(&self.record.id);
        self.release_scope();
        if let Some(key) = self.reuse_key.take() {
            let keep = self
                .contract
                .as_ref()
                .and_then(|c| c.spec.reuse_for)
                .unwrap_or(DEFAULT_REUSE_FOR);
            let output = self
                .record
                .output
                .as_ref()
                .filter(|_| status == TaskStatus::Completed);
            self.owners.reuse.finish(&key, self.record.id, output, keep);
        }
        if let Some(w) = self.waiter.take() {
            // With no lease left to answer, nothing reads the record again but `done()`:
            // hand the output and the history over instead of copying them.
            let record = if self.outstanding.is_empty() {
                let mut shell = self.record.clone_header();
                std::mem::swap(&mut shell, &mut self.record);
                shell
            } else {
                self.record.clone()
            };
            // Nothing is acknowledged before it is written: the outcome goes to its caller
            // once the journal has written the terminal event (the last one appended, or
            // an earlier one); a journal whose `append` is the write answers at once.
            let seq = self.recorder.journal().len();
            let wait = match self.task.early_outcome {
                true => None,
                false => self.recorder.until_written(seq),
            };
            match wait {
                None => {
                    let _ = w.send(record);
                }
                Some(written) => {
                    let task = self.record.id;
                    actix::spawn(async move {
                        match written.await {
                            Ok(()) => {
                                let _ = w.send(record);
                            }
                            // The caller gets no outcome the journal does not hold; the
                            // journal's failure is what `flush` and the CLI report.
                            Err(e) => {
                                tracing::error!(%task, error = %e, "task outcome not acknowledged")
                            }
                        }
                    });
                }
            }
        }
        if !self.outstanding.is_empty() {
            // Bound the lingering: every agent answers by its deadline plus grace.
            let linger = self.task.timeout + self.owners.grace + Duration::from_secs(1);
            let at = tokio::time::Instant::now() + linger;
            let timer = cx.timers.at(at, self.record.id, Due::Linger);
            self.enter(Phase::Lingering { timer }, cx.timers);
        }
    }

    /// A lingering owner whose every lease has answered is done.
    fn maybe_stop(&mut self, cx: &mut Cx) {
        if matches!(self.phase, Phase::Lingering { .. }) && self.outstanding.is_empty() {
            self.enter(Phase::Done, cx.timers);
        }
    }

    /// How an attempt ended.
    pub(super) fn on_report(&mut self, mut r: AttemptReport, cx: &mut Cx) {
        self.outstanding.retain(|e| *e != r.epoch);
        // Tokens spent are journaled however the attempt ended, before its verdict.
        if let Some(usage) = r.usage.take() {
            self.record.usage.add(&usage);
            self.recorder.record(Event::ModelUsage {
                task: self.record.id,
                agent: r.agent.clone(),
                epoch: r.epoch,
                usage,
            });
        }
        match r.result {
            Ok(v) => self.on_result(r.epoch, r.agent, v, cx),
            Err(Failure::Cancelled) => {}
            Err(f) => self.attempt_failed(r.epoch, f, cx),
        }
        self.maybe_stop(cx);
    }

    /// A heartbeat from the agent holding lease `epoch`.
    pub(super) fn on_heartbeat(&mut self, epoch: u64) {
        if let Phase::Leased(l) = &mut self.phase {
            if l.epoch == epoch {
                l.last_heartbeat = tokio::time::Instant::now();
            }
        }
    }

    /// Cancels the task; false if it had already ended.
    pub(super) fn cancel(&mut self, reason: String, cx: &mut Cx) -> bool {
        if self.done() {
            return false;
        }
        let epoch = self.epoch;
        if let Some(h) = self.end_lease(epoch, LeaseOutcome::Cancelled, cx) {
            h.cancel(self.record.id, epoch);
        }
        self.recorder.record(Event::TaskCancelled {
            task: self.record.id,
            reason,
        });
        self.finish(TaskStatus::Cancelled, cx);
        true
    }

    /// The identical task this one follows ended.
    pub(super) fn on_reused(&mut self, r: Reused, cx: &mut Cx) {
        if !matches!(self.phase, Phase::Following { leader, .. } if leader == r.original) {
            return;
        }
        self.enter(Phase::Pending, cx.timers);
        match r.output {
            Some(output) => self.reused(r.original, output, cx),
            // The task it attached to ended without a result: this one runs (or attaches
            // to another identical task that started since).
            None => {
                if !self.try_reuse(cx) {
                    self.acquire_then_lease(cx);
                }
            }
        }
    }
}

/// What the output reports it touched (the capability's `touched` field, `touched` by
/// default) must lie inside the task's write scope.
fn check_touched(scope: &Scope, c: Option<&Capability>, output: &Value) -> Result<(), Failure> {
    let field = c
        .and_then(|c| c.spec.touched.as_deref())
        .unwrap_or("touched");
    match output.get(field) {
        Some(touched) => scope
            .check_touched(field, touched)
            .map_err(Failure::ContractViolation),
        None => Ok(()),
    }
}

/// The output must satisfy the output schema and the acceptance rule.
fn check_output(c: &Capability, input: &Value, output: &Value) -> Result<(), Failure> {
    c.output
        .validate(output)
        .map_err(Failure::ContractViolation)?;
    if let Some(rule) = &c.accept {
        match rule.accepts(input, output) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Failure::Rejected(format!(
                    "acceptance rule `{}` is false for this output",
                    rule.source()
                )))
            }
            Err(e) => return Err(Failure::Rejected(e)),
        }
    }
    Ok(())
}

impl Drop for TaskOwner {
    fn drop(&mut self) {
        // An owner that goes away before its task ended (a bug in the runtime) must not
        // lose the task silently: the record says so.
        if !self.done() {
            let reason = "the task's owner stopped before the task ended".to_string();
            self.recorder.record(Event::TaskEscalated {
                task: self.record.id,
                to: "dead_letter".into(),
                reason: reason.clone(),
            });
            self.record.status = TaskStatus::Escalated;
            self.record.escalation = Some(Escalation {
                to: "dead_letter".into(),
                reason,
            });
            self.owners.stats.ended(TaskStatus::Escalated);
            self.owners.table.remove(&self.record.id);
            self.release_scope();
            if let Some(key) = self.reuse_key.take() {
                self.owners
                    .reuse
                    .finish(&key, self.record.id, None, Duration::ZERO);
            }
            if let Some(w) = self.waiter.take() {
                let _ = w.send(self.record.clone());
            }
        }
    }
}
