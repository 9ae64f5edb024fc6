//! The task owner: one state machine per live task, holding its delegation record.
//!
//! It leases the task to one agent at a time, each lease under a fresh epoch, watches the
//! attempt (time bound, heartbeats, the agent's death), checks the output against the
//! contract, reassigns to a different agent on failure, and ends the task in exactly one
//! terminal state. After the end it lingers until every lease it granted has answered, so
//! a late result is still seen, and fenced as stale (G2), rather than lost.
//!
//! An owner is not an actor of its own: the [`OwnerShard`](super::shard::OwnerShard) of
//! its thread drives it (messages, timers, the end of waits it spawned), and the owner asks
//! what it needs of its surroundings through a [`Cx`] ([`context`]): a unit test steps it
//! with a fake one, without actors or clocks.
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
//!
//! This file holds the owner's state and the entry points its shard calls; each concern
//! has a file of its own: [`phase`] (the states), [`attempt`] (looking for an agent,
//! leases, results and failures, with the one [`verdict`](crate::routing::verdict) on an
//! output), [`waits`]
//! (in the capability's line, or for an agent), [`scope`] (the write scope),
//! [`following`] (reuse of identical work) and [`ending`] (escalation, cancellation, the
//! end and the lingering after it).
mod attempt;
mod context;
mod ending;
mod following;
mod phase;
mod scope;
#[cfg(test)]
mod tests;
mod waits;

use std::sync::Arc;

use tokio::sync::oneshot;
use uuid::Uuid;

pub(super) use self::context::{Cx, Unavailable};
use self::phase::{ActiveLease, Phase};
use super::protocol::{Accepted, Wake};
use super::record::TaskRecord;
use super::reuse::ReuseKey;
use super::shared::Shared;
use super::task::Task;
use super::timers::{Due, Timers};
use crate::agents::{AttemptReport, Failure, Ledger};
use crate::journal::{Event, Recorder};
use crate::messaging::Capability;

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
    /// The instances failed attempts ran on, passed over by later picks while another
    /// candidate is available.
    excluded: Vec<Arc<str>>,
    /// The start generation of each of `excluded` when its attempt failed: an instance
    /// restarted since (a fresh start of the same id) is a candidate again when nobody
    /// else is (with one replica, the task would otherwise wait for its deadline).
    excluded_generations: Vec<u64>,
    waiter: Option<oneshot::Sender<TaskRecord>>,
    deadline: tokio::time::Instant,
    last_envelope: Option<Uuid>,
    /// Consecutive waits (in line or for an agent) without a lease (the backstop doubles
    /// with each, see [`LINE_BACKSTOP`]).
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
    /// The task's effect ledger, made at its first lease and shared by every attempt.
    effects: Option<Arc<Ledger>>,
}

impl TaskOwner {
    /// The owner of an accepted task, started at `now`.
    pub(super) fn new(owners: Arc<Shared>, a: Accepted, started: tokio::time::Instant) -> Self {
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
            deadline: started + task.overall(),
            epoch: task.min_epoch,
            last_envelope: task.causation,
            task,
            contract,
            record,
            phase: Phase::Pending,
            outstanding: Vec::new(),
            excluded: Vec::new(),
            excluded_generations: Vec::new(),
            waiter: Some(waiter),
            topic,
            sender,
            line_waits: 0,
            line_gen: 0,
            scope_asked: false,
            reuse_key: None,
            effects: None,
        }
    }

    /// The task's effect ledger (made on first use from the entries the task was
    /// submitted with: those recovered from the journal after a crash).
    fn ledger(&mut self) -> &Arc<Ledger> {
        let (id, recorder, task) = (self.record.id, &self.recorder, &mut self.task);
        self.effects.get_or_insert_with(|| {
            Arc::new(Ledger::new(
                id,
                recorder.clone(),
                std::mem::take(&mut task.effects),
                task.effect_prefix.clone(),
            ))
        })
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
        self.phase.cancel_timers(&mut |k| timers.cancel(k));
    }

    /// Moves to `next`, cancelling the timers of the phase it leaves; returns that phase.
    fn enter(&mut self, next: Phase, cx: &mut dyn Cx) -> Phase {
        let old = std::mem::replace(&mut self.phase, next);
        old.cancel_timers(&mut |k| cx.disarm(k));
        old
    }

    /// Starts the task: reuse of identical work, else its scope, then its first lease.
    pub(super) fn begin(&mut self, cx: &mut dyn Cx) {
        if self.try_reuse(cx) {
            return;
        }
        self.acquire_then_lease(cx);
    }

    /// What the owner waited for outside the shard has happened.
    pub(super) fn on_woken(&mut self, wake: Wake, cx: &mut dyn Cx) {
        match wake {
            Wake::Scope(answer) => {
                if !matches!(self.phase, Phase::AwaitingScope) {
                    return; // cancelled while it waited
                }
                self.enter(Phase::Pending, cx);
                match answer {
                    Ok(()) => self.try_lease(cx),
                    Err(reason) => self.escalate(reason, cx),
                }
            }
            Wake::Line {
                generation,
                mut slot,
            } => {
                if !matches!(self.phase, Phase::InLine { generation: g } if g == generation) {
                    return; // an older wait's slot: `slot` passes it on
                }
                self.enter(Phase::Pending, cx);
                self.look(slot.take(), cx);
            }
            Wake::Agent => {
                if !matches!(self.phase, Phase::AwaitingAgent) {
                    return; // cancelled while it waited
                }
                self.enter(Phase::Pending, cx);
                self.try_lease(cx);
            }
        }
    }

    /// A timer this owner set is due.
    pub(super) fn on_timer(&mut self, due: Due, cx: &mut dyn Cx) {
        match due {
            Due::Attempt { epoch } => {
                self.attempt_failed(epoch, Failure::Timeout, cx);
            }
            Due::Heartbeat { epoch, every } => {
                let now = cx.now();
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
                    l.heartbeat_check =
                        Some(cx.arm(now + every, self.record.id, Due::Heartbeat { epoch, every }));
                }
            }
            Due::Retry => {
                if matches!(self.phase, Phase::Backoff { .. }) {
                    self.enter(Phase::Pending, cx);
                    self.try_lease(cx);
                }
            }
            Due::Linger => {
                if matches!(self.phase, Phase::Lingering { .. }) {
                    self.enter(Phase::Done, cx);
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

    /// How an attempt ended.
    pub(super) fn on_report(&mut self, mut r: AttemptReport, cx: &mut dyn Cx) {
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
    pub(super) fn on_heartbeat(&mut self, epoch: u64, now: tokio::time::Instant) {
        if let Phase::Leased(l) = &mut self.phase
            && l.epoch == epoch
        {
            l.last_heartbeat = now;
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
}
