//! The owner stepped through a fake [`Cx`]: no actors, no runtime timers, a clock moved
//! by hand. Each test drives one task through the owner's entry points and checks what a
//! user would see: the journal, the agents it was handed to, and the outcome.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

use super::super::protocol::{Accepted, Wake};
use super::super::record::{TaskRecord, TaskStatus};
use super::super::reuse::{Found, ReuseKey};
use super::super::shared::Shared;
use super::super::task::{Backoff, Task};
use super::super::timers::{Due, TimerKey, Timers};
use super::{Cx, TaskOwner, Unavailable};
use crate::agents::Assign;
use crate::agents::{AttemptReport, Cancel, Failure, InstanceHandle, Kill, Mailbox};
use crate::clock::Clock;
use crate::discovery::{CapabilityIndex, LinePlace};
use crate::ids::IdGen;
use crate::journal::{Event, HeldJournal, Journal, MemoryJournal, Recorder};
use crate::messaging::{Capability, CapabilitySpec, DeadLetters, Envelope, SchemaStore, Scope};
use crate::routing::Router;
use crate::supervision::Named;

/// A mailbox that takes everything and delivers nothing (the fake context records what
/// the owner hands over).
struct Nowhere;

impl Mailbox for Nowhere {
    fn assign(&self, _: Assign) {}
    fn cancel(&self, _: Cancel) {}
    fn kill(&self, _: Kill) {}
    fn connected(&self) -> bool {
        true
    }
}

/// The owner's surroundings in a test: a timer queue on a clock moved by hand, a fixed
/// list of agents, and a log of what the owner asked for.
struct Fake {
    now: Instant,
    timers: Timers,
    contract: Arc<Capability>,
    agents: Vec<Arc<InstanceHandle>>,
    /// (agent, epoch) of every lease handed over, in order.
    assigned: Vec<(Arc<str>, u64)>,
    /// (agent, epoch) of every attempt told it is cancelled.
    cancelled: Vec<(Arc<str>, u64)>,
    /// Waits for an agent to register.
    agent_waits: usize,
}

impl Cx for Fake {
    fn now(&self) -> Instant {
        self.now
    }
    fn arm(&mut self, at: Instant, task: Uuid, due: Due) -> TimerKey {
        self.timers.at(at, task, due)
    }
    fn disarm(&mut self, key: TimerKey) {
        self.timers.cancel(key);
    }
    fn find_agent(
        &mut self,
        _: &Arc<str>,
        exclude: &[Arc<str>],
        _: usize,
        _: Option<u32>,
    ) -> Result<(Arc<Capability>, Arc<InstanceHandle>), Unavailable> {
        self.agents
            .iter()
            .find(|h| !exclude.contains(&h.id))
            .map(|h| (self.contract.clone(), h.clone()))
            .ok_or(Unavailable::Nobody)
    }
    fn assign(
        &mut self,
        agent: &Arc<InstanceHandle>,
        e: Arc<Envelope>,
        _: Instant,
        _: bool,
        _: Arc<crate::agents::Ledger>,
    ) {
        self.assigned.push((agent.id.clone(), e.epoch));
    }
    fn cancel_attempt(&mut self, agent: &InstanceHandle, _: Uuid, epoch: u64) {
        self.cancelled.push((agent.id.clone(), epoch));
    }
    fn find_or_run(&mut self, _: &ReuseKey, _: &Arc<Value>, _: Uuid) -> Found {
        Found::Run
    }
    fn ask_scope(&mut self, _: Uuid, _: Arc<Scope>, _: bool, _: Instant) {}
    fn wait_in_line(&mut self, _: Uuid, _: u32, _: LinePlace, _: Duration) {}
    fn wait_for_agent(&mut self, _: Uuid, _: Arc<str>, _: Instant) {
        self.agent_waits += 1;
    }
    fn when_written(
        &mut self,
        p: crate::delegation::written::Pending,
        _: &tokio::sync::watch::Receiver<crate::journal::Watermark>,
    ) {
        // The fake's journal is in memory: its `append` is the write.
        let _ = p.to.send(p.record);
    }
}

impl Fake {
    /// Moves the clock to `at` and hands every timer due by then to `owner`.
    fn advance_to(&mut self, at: Instant, owner: &mut TaskOwner) {
        self.now = at;
        while let Some((_, due)) = self.timers.pop_due(at) {
            owner.on_timer(due, self);
        }
    }
}

/// One task's owner and its fake surroundings, with the journal and the outcome to come.
struct Setup {
    owner: TaskOwner,
    cx: Fake,
    journal: Arc<MemoryJournal>,
    outcome: oneshot::Receiver<TaskRecord>,
}

fn agent(id: &str) -> Arc<InstanceHandle> {
    Arc::new(InstanceHandle::new(
        Arc::from(id),
        Arc::from("t"),
        0,
        vec![Arc::from("c")],
        1,
        1,
        Box::new(Nowhere),
    ))
}

/// An owner of `task` (capability `c`, any JSON in and out) with `agents` to choose from,
/// begun.
fn setup(task: Task, agents: &[&str]) -> Setup {
    let journal = Arc::new(MemoryJournal::default());
    setup_on(task, agents, journal.clone(), journal)
}

/// [`setup`] journaling to `journal`, whose records `memory` holds.
fn setup_on(
    task: Task,
    agents: &[&str],
    memory: Arc<MemoryJournal>,
    journal: Arc<dyn Journal>,
) -> Setup {
    let schemas = SchemaStore::new();
    schemas.add("s", json!({})).expect("a schema");
    let contract = Arc::new(
        CapabilitySpec::new("c", "s", "s")
            .compile(&schemas)
            .expect("a capability"),
    );
    let router = Router::new(
        Arc::new(schemas),
        Arc::new(CapabilityIndex::default()),
        Recorder::new(journal, Clock::system()),
        Arc::new(IdGen::Random),
        Arc::new(DeadLetters::with_capacity(8)),
    );
    let shared = Arc::new(Shared::new(router, Named::new(), Duration::from_secs(1)));
    let (waiter, outcome) = oneshot::channel();
    let id = Uuid::from_u128(1);
    shared.table.insert(id, 0);
    let accepted = Accepted {
        task,
        id,
        contract: Some(contract.clone()),
        waiter,
        shard: 0,
    };
    let now = Instant::now();
    let mut cx = Fake {
        now,
        timers: Timers::default(),
        contract,
        agents: agents.iter().map(|a| agent(a)).collect(),
        assigned: Vec::new(),
        cancelled: Vec::new(),
        agent_waits: 0,
    };
    let mut owner = TaskOwner::new(shared, accepted, now);
    owner.begin(&mut cx);
    Setup {
        owner,
        cx,
        journal: memory,
        outcome,
    }
}

fn task() -> Task {
    Task::new("c", json!({"n": 1})).timeout(Duration::from_secs(10))
}

fn report(s: &Setup, agent: &str, epoch: u64, result: Result<Value, Failure>) -> AttemptReport {
    AttemptReport::new(s.owner.id(), epoch, Arc::from(agent), result)
}

fn events(journal: &MemoryJournal) -> Vec<Event> {
    journal.read_after(0).into_iter().map(|r| r.event).collect()
}

#[test]
fn an_outcome_waits_for_its_own_record_not_for_later_records_of_other_tasks() {
    actix::System::new().block_on(async {
        // Each record written as appended, another task's unwritten one right behind it.
        let behind = Arc::new(HeldJournal::racing());
        let memory = behind.memory().clone();
        let mut s = setup_on(task(), &["a#0"], memory, behind.clone());
        let done = report(&s, "a#0", 1, Ok(json!({"ok": true})));
        s.owner.on_report(done, &mut s.cx);
        let accepted = s
            .journal
            .read_after(0)
            .into_iter()
            .find(|r| matches!(r.event, Event::ResultAccepted { .. }))
            .expect("the result is journaled");
        let w = behind.written();
        assert!(w.covers(accepted.seq), "its own record is written");
        assert!(!w.covers(s.journal.len()), "a later record is not");
        let outcome = s
            .outcome
            .try_recv()
            .expect("the outcome goes once its own record is written");
        assert_eq!(outcome.status, TaskStatus::Completed);
    });
}

#[test]
fn a_result_of_a_superseded_epoch_is_journaled_stale_and_not_accepted() {
    let mut s = setup(task(), &["a#0", "b#0"]);
    assert_eq!(s.cx.assigned, vec![(Arc::from("a#0"), 1)]);
    // Lease 1 times out; with no back-off the task moves to b#0 under epoch 2 at once.
    let timeout = s.cx.now + Duration::from_secs(10);
    s.cx.advance_to(timeout, &mut s.owner);
    assert_eq!(s.cx.assigned[1], (Arc::from("b#0"), 2));
    // a#0's answer for epoch 1 arrives late.
    let late = report(&s, "a#0", 1, Ok(json!({"late": true})));
    s.owner.on_report(late, &mut s.cx);
    let stale: Vec<_> = events(&s.journal)
        .into_iter()
        .filter_map(|e| match e {
            Event::ResultStale {
                epoch,
                current_epoch,
                ..
            } => Some((epoch, current_epoch)),
            _ => None,
        })
        .collect();
    assert_eq!(stale, vec![(1, 2)], "fenced against the lease in force");
    assert!(
        !events(&s.journal)
            .iter()
            .any(|e| matches!(e, Event::ResultAccepted { .. })),
        "the stale result is not accepted"
    );
    assert!(s.outcome.try_recv().is_err(), "the task has not ended");
    // The lease in force still completes the task.
    let fresh = report(&s, "b#0", 2, Ok(json!({"fresh": true})));
    s.owner.on_report(fresh, &mut s.cx);
    let outcome = s.outcome.try_recv().expect("an outcome");
    assert_eq!(outcome.status, TaskStatus::Completed);
    assert_eq!(outcome.output.as_deref(), Some(&json!({"fresh": true})));
    assert_eq!(outcome.stale_rejected, 1);
}

#[test]
fn a_failure_reassigns_to_a_different_agent_after_the_backoff() {
    let backoff = Backoff::exponential(Duration::from_secs(2), Duration::from_secs(8));
    let mut s = setup(task().attempts(3).backoff(backoff), &["a#0", "b#0"]);
    let failed = report(&s, "a#0", 1, Err(Failure::Error("boom".into())));
    s.owner.on_report(failed, &mut s.cx);
    assert_eq!(
        s.cx.assigned.len(),
        1,
        "nothing is leased during the back-off"
    );
    let just_before = s.cx.now + Duration::from_millis(1999);
    s.cx.advance_to(just_before, &mut s.owner);
    assert_eq!(s.cx.assigned.len(), 1, "still backing off");
    let after = s.cx.now + Duration::from_millis(1);
    s.cx.advance_to(after, &mut s.owner);
    assert_eq!(
        s.cx.assigned,
        vec![(Arc::from("a#0"), 1), (Arc::from("b#0"), 2)],
        "the failed agent is excluded; a fresh epoch"
    );
}

#[test]
fn an_exhausted_attempt_budget_escalates() {
    let mut s = setup(task().attempts(2), &["a#0", "b#0", "c#0"]);
    let first = report(&s, "a#0", 1, Err(Failure::Error("one".into())));
    s.owner.on_report(first, &mut s.cx);
    let second = report(&s, "b#0", 2, Err(Failure::Error("two".into())));
    s.owner.on_report(second, &mut s.cx);
    assert_eq!(s.cx.assigned.len(), 2, "no third lease: the budget is two");
    let outcome = s.outcome.try_recv().expect("an outcome");
    assert_eq!(outcome.status, TaskStatus::Escalated);
    let reason = outcome.escalation.expect("an escalation").reason;
    assert!(reason.contains("attempt budget of 2 spent"), "{reason}");
    let escalated = events(&s.journal)
        .iter()
        .filter(|e| matches!(e, Event::TaskEscalated { .. }))
        .count();
    assert_eq!(escalated, 1);
    assert!(s.owner.stopped(), "no lease is left to answer");
}

#[test]
fn cancel_ends_the_task_exactly_once() {
    let mut s = setup(task(), &["a#0"]);
    assert!(s.owner.cancel("first".into(), &mut s.cx));
    assert!(!s.owner.cancel("second".into(), &mut s.cx), "already ended");
    assert_eq!(s.cx.cancelled, vec![(Arc::from("a#0"), 1)]);
    // The agent's answer to the cancel is not a second end.
    let answer = report(&s, "a#0", 1, Err(Failure::Cancelled));
    s.owner.on_report(answer, &mut s.cx);
    let cancelled: Vec<_> = events(&s.journal)
        .into_iter()
        .filter_map(|e| match e {
            Event::TaskCancelled { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, vec!["first".to_string()]);
    let outcome = s.outcome.try_recv().expect("an outcome");
    assert_eq!(outcome.status, TaskStatus::Cancelled);
    assert!(s.owner.stopped(), "every lease answered: the owner is done");
    assert_eq!(s.owner.owners.stats.snapshot().cancelled, 1);
}

#[test]
fn a_late_wake_for_a_phase_that_was_left_is_ignored() {
    let mut s = setup(task(), &[]);
    assert_eq!(
        s.cx.agent_waits, 1,
        "nobody serves it: it waits for an agent"
    );
    s.cx.agents.push(agent("a#0"));
    s.owner.on_woken(Wake::Agent, &mut s.cx);
    assert_eq!(s.cx.assigned, vec![(Arc::from("a#0"), 1)]);
    // Wakes of waits it has left: a second registration, a scope answer it never asked
    // for. Neither leases again nor ends the task.
    s.owner.on_woken(Wake::Agent, &mut s.cx);
    s.owner
        .on_woken(Wake::Scope(Err("refused".into())), &mut s.cx);
    assert_eq!(s.cx.assigned.len(), 1);
    assert!(s.outcome.try_recv().is_err(), "the task has not ended");
    let done = report(&s, "a#0", 1, Ok(json!({})));
    s.owner.on_report(done, &mut s.cx);
    assert_eq!(
        s.outcome.try_recv().expect("an outcome").status,
        TaskStatus::Completed
    );
}
