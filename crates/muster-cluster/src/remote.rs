//! An instance on another node as the control node holds it: a mailbox that publishes
//! assignments to the instance's worker, and the attempts in flight there, each with the
//! reply its owner waits for.
//!
//! Every attempt sent ends exactly once here: with the worker's report, with `agent_gone`
//! when the instance's key expires, or with `timeout` when its deadline and a TTL of
//! grace pass without a report (the assignment or its report was lost). Each end releases
//! the slot the owner reserved on the handle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use uuid::Uuid;

use super::Outbox;
use super::wire::{AssignMsg, ControlMsg, ReportMsg};
use muster_core::agents::protocol::{Assign, AttemptReport, Cancel, Kill, ReplyTo};
use muster_core::agents::{Failure, InstanceHandle, Mailbox};

/// An attempt sent and not yet answered.
struct Pending {
    reply: ReplyTo,
    heartbeat: Option<Arc<dyn Fn() + Send + Sync>>,
    expires: tokio::time::Instant,
    /// When the worker last gave word of it (sent, alive, heartbeat).
    heard: tokio::time::Instant,
}

/// What every remote instance of one control node shares.
pub(crate) struct Wire {
    pub(crate) outbox: Outbox,
    pub(crate) report_to: String,
    pub(crate) beat_to: String,
    /// The largest assignment sent, in bytes (the server's payload limit).
    pub(crate) max_bytes: usize,
    /// Grace after an attempt's deadline before it is given up as lost.
    pub(crate) grace: Duration,
    /// How often workers give word of a running attempt.
    pub(crate) alive_every: Duration,
    /// Where workers send the effect records of this node's attempts.
    pub(crate) effect_to: String,
    /// The ledgers of the tasks whose attempts went to workers, for their effect records.
    pub(crate) ledgers: super::effects::Ledgers,
}

/// Intervals of silence after which an attempt is given up as lost.
pub(crate) const SILENT_INTERVALS: u32 = 4;

/// One instance of a worker node.
pub(crate) struct Remote {
    /// Its id on the control node (`id@node`).
    pub(crate) id: Arc<str>,
    /// Its id on its node.
    pub(crate) local_id: String,
    pub(crate) node: Arc<str>,
    pub(crate) generation: u64,
    assign_subject: String,
    control_subject: String,
    wire: Arc<Wire>,
    live: AtomicBool,
    pending: Mutex<HashMap<(Uuid, u64), Pending>>,
    handle: OnceLock<Weak<InstanceHandle>>,
    /// Slots held on the handle for the load other control nodes place on the instance,
    /// as its worker last reported it ([`Remote::observe`]).
    others: Mutex<usize>,
}

impl Remote {
    pub(crate) fn new(
        id: Arc<str>,
        local_id: String,
        node: Arc<str>,
        generation: u64,
        wire: Arc<Wire>,
    ) -> Arc<Self> {
        Arc::new(Remote {
            assign_subject: super::wire::assign_subject(&node),
            control_subject: super::wire::control_subject(&node),
            id,
            local_id,
            node,
            generation,
            wire,
            live: AtomicBool::new(true),
            pending: Mutex::new(HashMap::new()),
            handle: OnceLock::new(),
            others: Mutex::new(0),
        })
    }

    /// Binds the handle whose slots the attempts hold.
    pub(crate) fn bind(&self, handle: &Arc<InstanceHandle>) {
        let _ = self.handle.set(Arc::downgrade(handle));
    }

    fn release(&self) {
        if let Some(h) = self.handle.get().and_then(Weak::upgrade) {
            h.release();
        }
    }

    fn answer(&self, reply: ReplyTo, report: AttemptReport) {
        self.release();
        reply.send(report);
    }

    /// The instance's load as its worker reports it (`load`: what the worker holds for it
    /// from every control node): the part that is not this node's attempts is held as
    /// slots on the handle, so that this node's owners see the instance as full as it is
    /// and pick another, or wait in the capability's line, rather than ask a full
    /// instance. The count is refreshed at each report; attempts sent meanwhile may still
    /// find the instance full, and then wait at the worker for a slot.
    pub(crate) fn observe(&self, load: usize) {
        let Some(h) = self.handle.get().and_then(Weak::upgrade) else {
            return;
        };
        let want = load.saturating_sub(self.in_flight());
        let mut others = self.others.lock();
        while *others < want && h.try_reserve() {
            *others += 1;
        }
        while *others > want {
            h.release();
            *others -= 1;
        }
    }

    /// Slots held now for other control nodes' load.
    pub(crate) fn others(&self) -> usize {
        *self.others.lock()
    }

    /// Attempts in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.lock().len()
    }

    /// Hands a report to the owner waiting for it; gives the report back when no attempt
    /// of this instance waits for it (a late answer: the caller fences it as stale).
    pub(crate) fn report(&self, msg: ReportMsg) -> Option<ReportMsg> {
        let waiting = self.pending.lock().remove(&(msg.task_id, msg.epoch));
        match waiting {
            Some(p) => {
                let mut r = AttemptReport::new(msg.task_id, msg.epoch, self.id.clone(), msg.result);
                r.usage = msg.usage;
                self.answer(p.reply, r);
                None
            }
            None => Some(msg),
        }
    }

    /// Word from the worker about a running attempt: it is alive, or (`agent`) the
    /// agent's own heartbeat, which is passed on to the owner.
    pub(crate) fn beat(&self, task_id: Uuid, epoch: u64, agent: bool) {
        let hb = {
            let mut p = self.pending.lock();
            let Some(p) = p.get_mut(&(task_id, epoch)) else {
                return;
            };
            p.heard = tokio::time::Instant::now();
            if agent { p.heartbeat.clone() } else { None }
        };
        if let Some(hb) = hb {
            hb();
        }
    }

    /// The instance left (its key expired or was deleted): every attempt on it fails now
    /// with `why`, so its owners reassign at once, and nothing more is sent to it.
    pub(crate) fn gone(&self, why: &str) {
        self.live.store(false, Ordering::Release);
        self.observe(0);
        let drained: Vec<((Uuid, u64), Pending)> = self.pending.lock().drain().collect();
        for ((task, epoch), p) in drained {
            self.answer(
                p.reply,
                AttemptReport::gone(task, epoch, self.id.clone(), why.to_string()),
            );
        }
    }

    /// Gives up the attempts whose deadline and grace have passed, or of which the worker
    /// has given no word for [`SILENT_INTERVALS`] intervals (the assignment, the worker or
    /// the report was lost): the first end as a timeout, which their owner has already
    /// acted on; the others as `agent_gone`, so their owner reassigns now.
    pub(crate) fn sweep(&self, now: tokio::time::Instant) -> usize {
        let silence = self.wire.alive_every * SILENT_INTERVALS;
        let expired: Vec<((Uuid, u64), Pending, bool)> = {
            let mut p = self.pending.lock();
            let keys: Vec<((Uuid, u64), bool)> = p
                .iter()
                .filter_map(|(k, v)| {
                    if v.expires <= now {
                        Some((*k, true))
                    } else if now.saturating_duration_since(v.heard) > silence {
                        Some((*k, false))
                    } else {
                        None
                    }
                })
                .collect();
            keys.into_iter()
                .filter_map(|(k, late)| p.remove(&k).map(|v| (k, v, late)))
                .collect()
        };
        let n = expired.len();
        for ((task, epoch), p, late) in expired {
            let result = if late {
                Err(Failure::Timeout)
            } else {
                Err(Failure::AgentGone(format!(
                    "no word of the attempt from node {} for {silence:?}: the assignment, \
                     its report or the worker was lost",
                    self.node
                )))
            };
            self.answer(
                p.reply,
                AttemptReport::new(task, epoch, self.id.clone(), result),
            );
        }
        n
    }

    fn send_control(&self, msg: &ControlMsg) {
        if let Ok(body) = serde_json::to_vec(msg) {
            self.wire
                .outbox
                .send(self.control_subject.clone(), body.into());
        }
    }
}

/// The mailbox of a [`Remote`]: assignments go over NATS to its worker.
pub(crate) struct RemoteMailbox(pub(crate) Arc<Remote>);

impl Mailbox for RemoteMailbox {
    fn assign(&self, mut a: Assign) {
        let r = &self.0;
        let env = a.envelope.clone();
        let key = (env.task_id.unwrap_or(env.id), env.epoch);
        let refuse = |a: &mut Assign, failure: Failure| {
            let reply = a.take_reply();
            r.answer(
                reply,
                AttemptReport::new(key.0, key.1, r.id.clone(), Err(failure)),
            );
        };
        if !r.live.load(Ordering::Acquire) {
            refuse(
                &mut a,
                Failure::AgentGone(format!("agent {} left the cluster", r.id)),
            );
            return;
        }
        let now = tokio::time::Instant::now();
        // The task's ledger goes with the attempt, and stays reachable here for its
        // effect records (held weakly: the task's owner keeps it alive).
        let (effects, effect_prefix, effect_to) = match &a.effects {
            Some(l) => {
                r.wire.ledgers.insert(key.0, Arc::downgrade(l));
                (
                    l.entries(),
                    l.prefix_if_made().map(|p| p.to_string()),
                    Some(r.wire.effect_to.clone()),
                )
            }
            None => (Vec::new(), None, None),
        };
        let msg = AssignMsg {
            instance: r.local_id.clone(),
            envelope: env,
            timeout_ms: a.deadline.saturating_duration_since(now).as_millis() as u64,
            report_to: r.wire.report_to.clone(),
            beat_to: r.wire.beat_to.clone(),
            alive_every_ms: r.wire.alive_every.as_millis() as u64,
            effect_to,
            effects,
            effect_prefix,
        };
        let body = match serde_json::to_vec(&msg) {
            Ok(b) => b,
            Err(e) => {
                refuse(
                    &mut a,
                    Failure::Protocol(format!("the assignment cannot be encoded: {e}")),
                );
                return;
            }
        };
        if body.len() > r.wire.max_bytes {
            refuse(
                &mut a,
                Failure::Protocol(format!(
                    "the assignment is {} bytes, above the cluster's bound of {} bytes; \
                     it was not sent",
                    body.len(),
                    r.wire.max_bytes
                )),
            );
            return;
        }
        r.pending.lock().insert(
            key,
            Pending {
                reply: a.take_reply(),
                heartbeat: a.heartbeat.take(),
                expires: a.deadline + r.wire.grace,
                heard: now,
            },
        );
        if !r.wire.outbox.send(r.assign_subject.clone(), body.into())
            && let Some(p) = r.pending.lock().remove(&key)
        {
            r.answer(
                p.reply,
                AttemptReport::gone(
                    key.0,
                    key.1,
                    r.id.clone(),
                    "the cluster's outbound queue is full".into(),
                ),
            );
        }
    }

    fn cancel(&self, c: Cancel) {
        self.0.send_control(&ControlMsg::Cancel {
            instance: self.0.local_id.clone(),
            task_id: c.task_id,
            epoch: c.epoch,
        });
    }

    fn kill(&self, k: Kill) {
        self.0.send_control(&ControlMsg::Kill {
            instance: self.0.local_id.clone(),
            reason: k.0,
        });
    }

    fn connected(&self) -> bool {
        self.0.live.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::agents::effects::Ledger;
    use muster_core::messaging::{Envelope, Recipient};
    use serde_json::json;
    use tokio::sync::{mpsc, oneshot};

    type Sent = mpsc::Receiver<(String, bytes::Bytes)>;

    fn remote(max_bytes: usize) -> (Arc<Remote>, Arc<InstanceHandle>, Sent) {
        let (tx, rx) = mpsc::channel(16);
        let wire = Arc::new(Wire {
            outbox: Outbox(tx),
            report_to: "muster.report.c1".into(),
            beat_to: "muster.beat.c1".into(),
            max_bytes,
            grace: Duration::from_secs(1),
            alive_every: Duration::from_millis(250),
            effect_to: "muster.effect.c1".into(),
            ledgers: Default::default(),
        });
        let r = Remote::new("echo#0@w1".into(), "echo#0".into(), "w1".into(), 0, wire);
        let h = Arc::new(InstanceHandle::new(
            r.id.clone(),
            "echo".into(),
            0,
            vec!["echo".into()],
            1,
            2,
            Box::new(RemoteMailbox(r.clone())),
        ));
        r.bind(&h);
        (r, h, rx)
    }

    fn assign(h: &InstanceHandle, payload: serde_json::Value) -> oneshot::Receiver<AttemptReport> {
        assign_with(h, payload, None)
    }

    fn assign_with(
        h: &InstanceHandle,
        payload: serde_json::Value,
        effects: Option<Arc<Ledger>>,
    ) -> oneshot::Receiver<AttemptReport> {
        let (tx, rx) = oneshot::channel();
        let mut env = Envelope::new("echo", Recipient::Agent(h.id.clone()), "obj", payload);
        env.task_id = Some(Uuid::now_v7());
        env.epoch = 1;
        assert!(h.try_reserve());
        h.assign(Assign {
            envelope: Arc::new(env),
            deadline: tokio::time::Instant::now() + Duration::from_secs(60),
            reply: ReplyTo::Once(tx),
            heartbeat: None,
            effects,
        });
        rx
    }

    /// A task's assignment names where its effect records go; a plain message's does not
    /// (it has no ledger on the control node: its agent's effects run unrecorded, as they
    /// would on the control node, instead of being refused there).
    #[tokio::test(start_paused = true)]
    async fn only_a_tasks_assignment_sends_effect_records_to_the_control_node() {
        let (_r, h, mut sent) = remote(1 << 20);
        let _plain = assign(&h, json!({"x": 1}));
        let (_, body) = sent.try_recv().expect("published");
        let msg: AssignMsg = crate::wire::decode(&body).expect("an assignment");
        assert_eq!(msg.effect_to, None, "a plain message");
        let ledger = Arc::new(Ledger::detached(Uuid::now_v7()));
        let _task = assign_with(&h, json!({"x": 2}), Some(ledger));
        let (_, body) = sent.try_recv().expect("published");
        let msg: AssignMsg = crate::wire::decode(&body).expect("an assignment");
        assert_eq!(msg.effect_to.as_deref(), Some("muster.effect.c1"), "a task");
    }

    #[tokio::test(start_paused = true)]
    async fn an_assignment_above_the_bound_is_refused_before_it_is_sent_and_frees_its_slot() {
        let (_r, h, mut sent) = remote(512);
        let rx = assign(&h, json!({"blob": "x".repeat(4096)}));
        let report = rx.await.expect("answered at once");
        match report.result {
            Err(Failure::Protocol(why)) => assert!(why.contains("512"), "{why}"),
            other => panic!("refused as a protocol failure, got {other:?}"),
        }
        assert!(sent.try_recv().is_err(), "nothing was published");
        assert_eq!(h.load(), 0, "the slot is free again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_answers_its_attempt_once_and_a_second_is_handed_back_as_late() {
        let (r, h, mut sent) = remote(1 << 20);
        let rx = assign(&h, json!({"x": 1}));
        let (subject, body) = sent.try_recv().expect("published");
        assert_eq!(subject, "muster.assign.w1");
        let msg: AssignMsg = serde_json::from_slice(&body).expect("an assignment");
        let report = ReportMsg {
            task_id: msg.envelope.task_id.expect("task"),
            epoch: 1,
            instance: r.id.to_string(),
            result: Ok(json!({"x": 1})),
            usage: None,
        };
        assert!(
            r.report(report.clone()).is_none(),
            "taken by the waiting owner"
        );
        assert_eq!(rx.await.expect("answered").result, Ok(json!({"x": 1})));
        assert_eq!(h.load(), 0);
        assert!(
            r.report(report).is_some(),
            "a second answer is late, never delivered twice"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_fail_over_at_once_when_their_instance_leaves_and_when_they_fall_silent() {
        let (r, h, _sent) = remote(1 << 20);
        let first = assign(&h, json!({"x": 1}));
        r.gone("its key expired");
        match first.await.expect("answered").result {
            Err(Failure::AgentGone(why)) => assert!(why.contains("key expired"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(!h.available(), "nothing more is sent to it");
        let (r, h, _sent) = remote(1 << 20);
        let silent = assign(&h, json!({"x": 2}));
        tokio::time::advance(Duration::from_millis(250 * SILENT_INTERVALS as u64 - 10)).await;
        assert_eq!(
            r.sweep(tokio::time::Instant::now()),
            0,
            "not yet silent long enough"
        );
        tokio::time::advance(Duration::from_millis(20)).await;
        assert_eq!(r.sweep(tokio::time::Instant::now()), 1);
        match silent.await.expect("answered").result {
            Err(Failure::AgentGone(why)) => assert!(why.contains("no word"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(h.load(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_load_of_other_control_nodes_fills_the_handle_and_frees_it_when_reported_gone() {
        let (r, h, _sent) = remote(1 << 20);
        let _mine = assign(&h, json!({"x": 1}));
        // The worker holds 2 for this instance: this node's attempt and another node's.
        r.observe(2);
        assert_eq!((r.others(), h.load()), (1, 2), "full: capacity 2");
        assert!(!h.try_reserve(), "no owner here asks a full instance");
        // A report above the capacity holds only what is free.
        r.observe(5);
        assert_eq!((r.others(), h.load()), (1, 2));
        // The other node's attempt ended: its slot is free again here.
        r.observe(1);
        assert_eq!((r.others(), h.load()), (0, 1));
        assert!(h.try_reserve());
        r.observe(3);
        r.gone("its key expired");
        assert_eq!(r.others(), 0, "nothing held for a departed instance");
    }
}
