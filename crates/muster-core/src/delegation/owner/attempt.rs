//! Leases and attempts: looking for an agent, granting a lease under a fresh epoch,
//! ending it, and what a result or a failure of an attempt does (G2: a result of another
//! epoch is stale).

use std::sync::Arc;

use serde_json::Value;

use super::super::record::{Lease, LeaseOutcome, TaskStatus};
use super::super::timers::Due;
use super::phase::{ActiveLease, Phase};
use super::{Cx, TaskOwner, Unavailable};
use crate::agents::{Failure, InstanceHandle};
use crate::journal::Event;
use crate::messaging::capability::LateResults;
use crate::messaging::{Envelope, Recipient};
use crate::routing::verdict;

impl TaskOwner {
    pub(super) fn try_lease(&mut self, cx: &mut dyn Cx) {
        self.look(None, cx);
    }

    /// Leases the task to the best agent now, or waits for one; `woken`: the hop count of
    /// the freed slot that woke this owner from the capability's line, if one did (if the
    /// slot is gone by the time it looks, it goes back to the head of the line; if it
    /// cannot take it, it passes it on).
    pub(super) fn look(&mut self, woken: Option<u32>, cx: &mut dyn Cx) {
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
        if self.contract.is_none()
            && let Some(c) = self.owners.router.index().contract(&self.task.capability)
        {
            if let Err(e) = c.input.validate(&self.task.input) {
                self.escalate(format!("input violates the capability's contract: {e}"), cx);
                return;
            }
            self.contract = Some(c);
        }
        let mut found = cx.find_agent(&self.topic, &self.excluded, self.shard, woken);
        if matches!(found, Err(Unavailable::Nobody)) && self.forgive_restarted() {
            found = cx.find_agent(&self.topic, &self.excluded, self.shard, woken);
        }
        match found {
            Ok((contract, handle)) => {
                self.contract = Some(contract);
                self.lease_to(handle, cx);
            }
            Err(Unavailable::Full(line)) => self.wait_in_line(line, cx),
            Err(Unavailable::Nobody) => self.wait_for_agent(cx),
            Err(Unavailable::Abandoned(gone)) => {
                self.escalate(Failure::NoCapableAgent(gone.to_string()).to_string(), cx)
            }
        }
    }

    /// Nobody outside the excluded instances can take the task: takes back into the
    /// candidates every excluded instance that has been restarted since its attempt failed
    /// (its id now names a later start generation). Whether it took any back.
    fn forgive_restarted(&mut self) -> bool {
        let index = self.owners.router.index();
        let before = self.excluded.len();
        let mut i = 0;
        while i < self.excluded.len() {
            let restarted = index
                .agent(&self.excluded[i])
                .is_some_and(|h| h.generation != self.excluded_generations[i]);
            if restarted {
                self.excluded.swap_remove(i);
                self.excluded_generations.swap_remove(i);
            } else {
                i += 1;
            }
        }
        self.excluded.len() != before
    }

    pub(super) fn lease_to(&mut self, handle: Arc<InstanceHandle>, cx: &mut dyn Cx) {
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
        let now = cx.now();
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
        let timer = cx.arm(deadline, task, Due::Attempt { epoch });
        let heartbeat_every = contract.and_then(|c| c.spec.heartbeat);
        let heartbeat_check =
            heartbeat_every.map(|every| cx.arm(now + every, task, Due::Heartbeat { epoch, every }));
        self.last_envelope = Some(envelope.id);
        self.outstanding.push(epoch);
        // Journaled above, whole, in `lease_granted`.
        let effects = self.ledger().clone();
        cx.assign(
            &handle,
            envelope,
            deadline,
            heartbeat_every.is_some(),
            effects,
        );
        self.enter(
            Phase::Leased(ActiveLease {
                handle,
                epoch,
                timer,
                heartbeat_check,
                last_heartbeat: now,
            }),
            cx,
        );
    }

    pub(super) fn last_failure(&self) -> String {
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
    pub(super) fn end_lease(
        &mut self,
        epoch: u64,
        outcome: LeaseOutcome,
        cx: &mut dyn Cx,
    ) -> Option<Arc<InstanceHandle>> {
        if self.leased().is_none_or(|l| l.epoch != epoch) {
            return None;
        }
        let Phase::Leased(lease) = self.enter(Phase::Pending, cx) else {
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

    pub(super) fn attempt_failed(&mut self, epoch: u64, failure: Failure, cx: &mut dyn Cx) {
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
        match self.excluded.iter().position(|x| *x == handle.id) {
            Some(i) => self.excluded_generations[i] = handle.generation,
            None => {
                self.excluded.push(handle.id.clone());
                self.excluded_generations.push(handle.generation);
            }
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
            let at = cx.now() + delay;
            let timer = cx.arm(at, self.record.id, Due::Retry);
            self.enter(Phase::Backoff { timer }, cx);
        }
    }

    /// Whether a late result of an earlier epoch may be adopted: the capability is
    /// idempotent and says `late_results = "adopt"`.
    fn adopts_late_results(&self) -> bool {
        self.contract
            .as_deref()
            .is_some_and(|c| c.spec.idempotent && c.spec.late_results == LateResults::Adopt)
    }

    /// Adopts the result of earlier epoch `epoch` while lease `current` runs, if it passes
    /// the contract: the running attempt is cancelled and the task completes with it.
    /// Returns false (nothing done) for a result that fails the contract: it is fenced.
    fn adopt(
        &mut self,
        epoch: u64,
        current: u64,
        agent: &Arc<str>,
        output: &Value,
        cx: &mut dyn Cx,
    ) -> bool {
        let limit = self.recorder.journal().max_payload_bytes();
        let verdict = verdict(
            self.record.id,
            self.contract.as_deref(),
            &self.task.input,
            output,
            self.task.scope.as_deref(),
            Some(limit),
        );
        if verdict.is_err() {
            return false;
        }
        let Some(running) = self.end_lease(current, LeaseOutcome::Cancelled, cx) else {
            return false;
        };
        cx.cancel_attempt(&running, self.record.id, current);
        tracing::debug!(task = %self.record.id, epoch, current, "late result adopted");
        // The late lease ended as a timeout (or a missed heartbeat); its result is the
        // task's after all.
        if let Some(l) = self.record.leases.iter_mut().find(|l| l.epoch == epoch) {
            l.outcome = LeaseOutcome::Completed;
        }
        self.recorder.record(Event::ResultAdopted {
            task: self.record.id,
            agent: agent.clone(),
            epoch,
            current_epoch: current,
        });
        let output = Arc::new(output.clone());
        let accepted = self.recorder.record(Event::ResultAccepted {
            task: self.record.id,
            agent: agent.clone(),
            epoch,
            output: output.clone(),
        });
        self.record.output = Some(output);
        self.finish(TaskStatus::Completed, accepted, cx);
        true
    }

    pub(super) fn on_result(
        &mut self,
        epoch: u64,
        agent: Arc<str>,
        output: Value,
        cx: &mut dyn Cx,
    ) {
        let current = self.leased().map(|l| l.epoch);
        if let Some(c) = current
            && epoch < c
            && self.adopts_late_results()
            && self.adopt(epoch, c, &agent, &output, cx)
        {
            return;
        }
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
        let limit = self.recorder.journal().max_payload_bytes();
        let verdict = verdict(
            self.record.id,
            self.contract.as_deref(),
            &self.task.input,
            &output,
            self.task.scope.as_deref(),
            Some(limit),
        );
        match verdict {
            Ok(()) => {
                // One value for the record, the journal and whoever reads the outcome.
                let output = Arc::new(output);
                self.end_lease(epoch, LeaseOutcome::Completed, cx);
                let accepted = self.recorder.record(Event::ResultAccepted {
                    task: self.record.id,
                    agent,
                    epoch,
                    output: output.clone(),
                });
                self.record.output = Some(output);
                self.finish(TaskStatus::Completed, accepted, cx);
            }
            Err(f) => self.attempt_failed(epoch, f, cx),
        }
    }
}
