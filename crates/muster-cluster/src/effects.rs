//! Effects across nodes (issue 26): an attempt on a worker journals its effects in its
//! task's journal, which lives with the task's owner on a control node.
//!
//! ```text
//!  worker                                   control node
//!  ctx.effect / stdio effect line
//!    -> Ledger (local copy) --EffectMsg-->  the task's Ledger: claim / started / done
//!                                            journaled, then written (group commit)
//!  written(seq) resolves  <--EffectAckMsg--  written: true, or why not (a refused claim
//!                                            carries the ledger's entry)
//! ```
//!
//! The worker's half ([`WorkerJournal`]) numbers each record and waits for its
//! acknowledgement; the control node's half ([`journal`]) decides every claim on the task's
//! own ledger (the one its owner hands to every attempt, local or remote), so two
//! attempts on two workers never both run one effect. A record of a stale epoch, or of a
//! task whose owner is gone, is journaled all the same (effects are facts); only a claim
//! needs a live ledger. It must not judge results or leases: owners do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::Outbox;
use super::wire::{EffectAckMsg, EffectMsg, EffectRecord};
use muster_core::agents::effects::{Claim, EffectEntry, Ledger, RemoteJournal, Unrecorded};
use muster_core::journal::{Event, Recorder};

/// How long a worker's attempt waits for the control node to acknowledge one effect
/// record before it gives up on it (the control node is gone or cut off: the attempt will
/// be reassigned anyway).
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(30);

/// How long a worker waits, once an attempt has ended, for its effect records still
/// unacknowledged before it sends the attempt's report (so that the owner judges the
/// result with the attempt's `effect_done` in its ledger).
pub(crate) const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// The acknowledgements a worker waits for, by record number (one count per worker),
/// each with the attempt (task, epoch) that sent the record.
#[derive(Default)]
pub(crate) struct Acks {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiting>>,
}

type Waiting = (Uuid, u64, oneshot::Sender<EffectAckMsg>);

impl Acks {
    /// Hands an acknowledgement to the record waiting for it; false when none waits (it
    /// gave up, or the message is not ours: another attempt's record of that number, say
    /// one this worker sent before it restarted under the same name).
    pub(crate) fn answer(&self, ack: EffectAckMsg) -> bool {
        let mut waiting = self.waiting.lock();
        match waiting.get(&ack.seq) {
            Some((task, epoch, _)) if *task == ack.task_id && *epoch == ack.epoch => {}
            _ => return false,
        }
        match waiting.remove(&ack.seq) {
            Some((_, _, tx)) => tx.send(ack).is_ok(),
            None => false,
        }
    }

    fn forget(&self, seq: u64) {
        self.waiting.lock().remove(&seq);
    }
}

/// The journal of one attempt's task as a worker reaches it: the control node that sent
/// the assignment, over NATS.
pub(crate) struct WorkerJournal {
    pub(crate) outbox: Outbox,
    /// The control node's effect subject (the assignment's `effect_to`).
    pub(crate) to: String,
    /// This worker's acknowledgement subject.
    pub(crate) ack_to: String,
    /// The instance, as the control node names it (`id@node`).
    pub(crate) instance: String,
    pub(crate) task: Uuid,
    pub(crate) epoch: u64,
    pub(crate) max_bytes: usize,
    pub(crate) acks: Arc<Acks>,
    /// The acknowledgements of this attempt's records not yet awaited.
    pub(crate) unsettled: Mutex<HashMap<u64, oneshot::Receiver<EffectAckMsg>>>,
    /// Every record number this attempt sent: forgotten in [`Acks`] once it has ended,
    /// whether or not anyone awaited the answer.
    pub(crate) sent: Mutex<Vec<u64>>,
}

impl std::fmt::Debug for WorkerJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerJournal")
            .field("task", &self.task)
            .field("epoch", &self.epoch)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl WorkerJournal {
    /// A refusal of record `seq` made here (it could not be sent), answered at once.
    fn refused_here(&self, seq: u64, why: String) -> oneshot::Receiver<EffectAckMsg> {
        self.acks.forget(seq);
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(EffectAckMsg {
            task_id: self.task,
            epoch: self.epoch,
            seq,
            written: false,
            error: Some(why),
            entry: None,
        });
        rx
    }

    /// Waits (at most `within` in all) for every record of this attempt not yet
    /// acknowledged: before the attempt's report, so that the report never overtakes
    /// them.
    pub(crate) async fn settle(&self, within: Duration) {
        let waits: Vec<(u64, oneshot::Receiver<EffectAckMsg>)> =
            self.unsettled.lock().drain().collect();
        if waits.is_empty() {
            return;
        }
        let all = futures::future::join_all(waits.into_iter().map(|(_, rx)| rx));
        match tokio::time::timeout(within, all).await {
            Err(_) => tracing::warn!(
                task = %self.task,
                epoch = self.epoch,
                "effect records unacknowledged when the attempt ended"
            ),
            // A record refused (too big to send, a full queue, no owner on the control
            // node): the owner's ledger does not have it, so a later attempt sees the
            // effect's outcome as unknown. Said, not dropped in silence.
            Ok(answers) => {
                for ack in answers.into_iter().flatten().filter(|a| !a.written) {
                    tracing::warn!(
                        task = %self.task,
                        epoch = self.epoch,
                        seq = ack.seq,
                        error = ack.error.as_deref().unwrap_or("refused"),
                        "an effect record of the attempt was not journaled"
                    );
                }
            }
        }
    }

    /// Forgets every record this attempt sent: it has ended, and an answer that comes
    /// later has nobody to tell.
    pub(crate) fn forget_all(&self) {
        for s in self.sent.lock().drain(..) {
            self.acks.forget(s);
        }
    }
}

impl RemoteJournal for WorkerJournal {
    fn send(&self, event: &Event, claim: Option<Claim>) -> u64 {
        let seq = self.acks.next.fetch_add(1, Ordering::Relaxed) + 1;
        let record = match event {
            Event::EffectStarted { name, key, .. } => EffectRecord::Started {
                name: name.clone(),
                key: key.clone(),
                claim,
            },
            Event::EffectDone {
                name, key, result, ..
            } => EffectRecord::Done {
                name: name.clone(),
                key: key.clone(),
                result: result.clone(),
            },
            other => {
                let why = format!("`{}` is not an effect record", other.kind());
                let rx = self.refused_here(seq, why);
                self.unsettled.lock().insert(seq, rx);
                return seq;
            }
        };
        let msg = EffectMsg {
            instance: self.instance.clone(),
            task_id: self.task,
            epoch: self.epoch,
            seq,
            ack_to: self.ack_to.clone(),
            record,
        };
        let (tx, rx) = oneshot::channel();
        self.acks
            .waiting
            .lock()
            .insert(seq, (self.task, self.epoch, tx));
        self.sent.lock().push(seq);
        let rx = match serde_json::to_vec(&msg) {
            Ok(b) if b.len() <= self.max_bytes => {
                if self.outbox.send(self.to.clone(), b.into()) {
                    rx
                } else {
                    self.refused_here(seq, "the cluster's outbound queue is full".into())
                }
            }
            Ok(b) => self.refused_here(
                seq,
                format!(
                    "the effect record is {} bytes encoded, above the cluster's bound of {} \
                     bytes; it was not sent",
                    b.len(),
                    self.max_bytes
                ),
            ),
            Err(e) => self.refused_here(seq, format!("the effect record cannot be encoded: {e}")),
        };
        self.unsettled.lock().insert(seq, rx);
        seq
    }

    fn written(&self, seq: u64) -> BoxFuture<'static, Result<(), Unrecorded>> {
        let rx = self.unsettled.lock().remove(&seq);
        let acks = self.acks.clone();
        Box::pin(async move {
            // Nobody asks twice for one record: it was taken by `settle`, the attempt has
            // ended, and its answer is not known here.
            let Some(rx) = rx else {
                return Err(Unrecorded::Remote(
                    "the attempt ended before its effect record was answered".into(),
                ));
            };
            match tokio::time::timeout(ACK_WAIT, rx).await {
                Ok(Ok(ack)) if ack.written => Ok(()),
                Ok(Ok(ack)) => Err(match ack.entry {
                    Some(entry) => Unrecorded::Claimed(entry),
                    None => Unrecorded::Remote(
                        ack.error
                            .unwrap_or_else(|| "the control node did not journal it".into()),
                    ),
                }),
                Ok(Err(_)) => Err(Unrecorded::Remote(
                    "no answer will come: the attempt ended, or the worker stops".into(),
                )),
                Err(_) => {
                    acks.forget(seq);
                    Err(Unrecorded::Remote(format!(
                        "no answer from the task's control node within {ACK_WAIT:?}"
                    )))
                }
            }
        })
    }
}

/// The ledgers of the tasks whose attempts a control node sent to workers, by task: the
/// owner's own, held weakly (a task that ended drops it).
pub(crate) type Ledgers = DashMap<Uuid, Weak<Ledger>>;

/// Journals a worker's effect record `msg` on the control node (through the task's
/// ledger in `ledgers`, or straight into `recorder` when the task has none here), and
/// publishes the acknowledgement on `msg.ack_to`: for an `effect_started` once the record
/// is written (SQLite: its group commit), for an `effect_done` once it is journaled in
/// order (its group commit is the one of the attempt's result); at once with why not.
pub(crate) fn journal(ledgers: &Ledgers, recorder: &Recorder, outbox: &Outbox, msg: EffectMsg) {
    let agent: Arc<str> = Arc::from(msg.instance.as_str());
    let ledger = ledgers.get(&msg.task_id).and_then(|w| w.upgrade());
    let (task, epoch) = (msg.task_id, msg.epoch);
    let done = matches!(msg.record, EffectRecord::Done { .. });
    // The record's number in this node's journal, or why it is not there.
    let outcome: Result<u64, (String, Option<EffectEntry>)> = match (msg.record, &ledger) {
        (
            EffectRecord::Started {
                name,
                key,
                claim: Some(claim),
            },
            Some(l),
        ) => l
            .claim(
                &name,
                key.as_deref(),
                epoch,
                &agent,
                claim == Claim::Reconcile,
            )
            .map_err(|entry| {
                (
                    format!(
                        "effect `{name}` of task {task} was {} by epoch {}",
                        if entry.result.is_some() {
                            "done"
                        } else {
                            "started"
                        },
                        entry.epoch
                    ),
                    Some(entry),
                )
            }),
        (
            EffectRecord::Started {
                name,
                claim: Some(_),
                ..
            },
            None,
        ) => Err((
            format!(
                "effect `{name}` was not claimed: task {task} has no owner on this control \
                     node (it ended, or moved to another node)"
            ),
            None,
        )),
        (
            EffectRecord::Started {
                name,
                key,
                claim: None,
            },
            Some(l),
        ) => Ok(l.started(&name, key.as_deref(), epoch, &agent)),
        (EffectRecord::Done { name, key, result }, Some(l)) => {
            Ok(l.done(&name, key.as_deref(), epoch, &agent, result))
        }
        // No ledger here: the record is a fact all the same.
        (
            EffectRecord::Started {
                name,
                key,
                claim: None,
            },
            None,
        ) => Ok(recorder.record(Event::EffectStarted {
            task,
            name,
            key,
            epoch,
            agent,
        })),
        (EffectRecord::Done { name, key, result }, None) => {
            Ok(recorder.record(Event::EffectDone {
                task,
                name,
                key,
                epoch,
                agent,
                result,
            }))
        }
    };
    let ack =
        move |written: bool, error: Option<String>, entry: Option<EffectEntry>| EffectAckMsg {
            task_id: task,
            epoch,
            seq: msg.seq,
            written,
            error,
            entry,
        };
    let send = {
        let outbox = outbox.clone();
        let to = msg.ack_to;
        move |a: EffectAckMsg| {
            if let Ok(body) = serde_json::to_vec(&a) {
                outbox.send(to, body.into());
            }
        }
    };
    match outcome {
        Err((why, entry)) => send(ack(false, Some(why), entry)),
        // Nobody waits on an `effect_done` being on disk (as in one process): the worker
        // waits only so that its report comes after it. Journaled in order, it rides the
        // group commit that carries the attempt's result, rather than forcing its own.
        Ok(_) if done => send(ack(true, None, None)),
        Ok(seq) => match recorder.until_written(seq) {
            None => send(ack(true, None, None)),
            Some(w) => {
                tokio::spawn(async move {
                    match w.await {
                        Ok(()) => send(ack(true, None, None)),
                        Err(e) => send(ack(false, Some(e.to_string()), None)),
                    }
                });
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::TaskContext;
    use muster_core::agents::effects::{EffectError, EffectState};
    use muster_core::clock::Clock;
    use muster_core::journal::{HeldJournal, Journal, MemoryJournal};
    use serde_json::json;
    use tokio::sync::mpsc;

    type Sent = mpsc::Receiver<(String, bytes::Bytes)>;

    /// A worker's attempt of `task` at `epoch`, whose records go out on the returned
    /// queue, and its context.
    fn attempt(task: Uuid, epoch: u64, acks: &Arc<Acks>) -> (TaskContext, Sent) {
        let (tx, rx) = mpsc::channel(16);
        let journal = Arc::new(WorkerJournal {
            outbox: Outbox(tx),
            to: "muster.effect.c1".into(),
            ack_to: "muster.effect_ack.w1".into(),
            instance: format!("pay#{epoch}@w1"),
            task,
            epoch,
            max_bytes: 1 << 20,
            acks: acks.clone(),
            unsettled: Mutex::default(),
            sent: Mutex::default(),
        });
        let ledger = Arc::new(Ledger::remote(task, journal, Vec::new(), None));
        let ctx = TaskContext::standalone(task, epoch, "pay", "pay#0", tokio::time::Instant::now())
            .with_ledger(ledger);
        (ctx, rx)
    }

    /// Carries one record from the worker's queue to the control node and its answer back.
    async fn relay(from: &mut Sent, ledgers: &Ledgers, recorder: &Recorder, acks: &Acks) {
        let (subject, body) = from.recv().await.expect("a record was sent");
        assert_eq!(subject, "muster.effect.c1");
        let msg: EffectMsg = crate::wire::decode(&body).expect("a valid record");
        let (tx, mut answers) = mpsc::channel(4);
        journal(ledgers, recorder, &Outbox(tx), msg);
        let (to, body) = answers.recv().await.expect("answered");
        assert_eq!(to, "muster.effect_ack.w1");
        let ack: EffectAckMsg = crate::wire::decode(&body).expect("a valid answer");
        assert!(acks.answer(ack), "someone waited for it");
    }

    /// Two attempts of one task on two workers, each with its own copy of the ledger, race
    /// for one effect: the owner's ledger decides, so the second is refused and told the
    /// outcome is unknown; its closure never runs. A later attempt is handed it done.
    #[tokio::test]
    async fn two_attempts_on_two_workers_never_both_run_one_effect() {
        let task = Uuid::now_v7();
        let mem = Arc::new(MemoryJournal::default());
        let recorder = Recorder::new(mem.clone(), Clock::fixed(0));
        let owners = Arc::new(Ledger::new(task, recorder.clone(), Vec::new(), None));
        let ledgers = Ledgers::default();
        ledgers.insert(task, Arc::downgrade(&owners));
        let acks = Arc::new(Acks::default());
        let (first, mut q1) = attempt(task, 1, &acks);
        let (second, mut q2) = attempt(task, 2, &acks);
        let key = first.effect_key("refund");
        assert_eq!(key, second.effect_key("refund"));
        let ran = Arc::new(AtomicU64::new(0));
        let run = |ctx: TaskContext, ran: Arc<AtomicU64>, key: String| async move {
            ctx.effect("refund", Some(&key), || async move {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, muster_core::AgentError>(json!({"charge": "ch_1"}))
            })
            .await
        };
        let one = tokio::spawn(run(first.clone(), ran.clone(), key.clone()));
        let two = tokio::spawn(run(second, ran.clone(), key.clone()));
        // Both claims are out before either is decided: epoch 1's reaches the owner first.
        tokio::task::yield_now().await;
        relay(&mut q1, &ledgers, &recorder, &acks).await;
        relay(&mut q2, &ledgers, &recorder, &acks).await;
        relay(&mut q1, &ledgers, &recorder, &acks).await; // epoch 1's effect_done
        let one = one.await.expect("joined");
        let two = two.await.expect("joined");
        assert_eq!(one, Ok(json!({"charge": "ch_1"})));
        assert!(
            matches!(two, Err(EffectError::Unknown { epoch: 1, .. })),
            "{two:?}"
        );
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the effect ran once");
        let entry = owners.get("refund").expect("in the owner's ledger");
        assert_eq!(entry.state(), EffectState::Done);
        assert_eq!(
            mem.len(),
            2,
            "effect_started and effect_done, journaled once each"
        );
        // A third attempt, handed the owner's ledger, skips it.
        let (tx, _q3) = mpsc::channel(4);
        let third = Ledger::remote(
            task,
            Arc::new(WorkerJournal {
                outbox: Outbox(tx),
                to: "muster.effect.c1".into(),
                ack_to: "muster.effect_ack.w2".into(),
                instance: "pay#0@w2".into(),
                task,
                epoch: 3,
                max_bytes: 1 << 20,
                acks: acks.clone(),
                unsettled: Mutex::default(),
                sent: Mutex::default(),
            }),
            owners.entries(),
            None,
        );
        let ctx = TaskContext::standalone(task, 3, "pay", "pay#0", tokio::time::Instant::now())
            .with_ledger(Arc::new(third));
        let again: serde_json::Value = ctx
            .effect("refund", Some(&key), || async {
                Err(muster_core::AgentError::new("must not run"))
            })
            .await
            .expect("the recorded result");
        assert_eq!(again, json!({"charge": "ch_1"}));
    }

    /// A claim for a task this control node holds no ledger of is refused (the effect is
    /// not run); a declaration or a `done` of such a task is journaled all the same.
    #[tokio::test]
    async fn records_of_a_task_without_an_owner_here_are_facts_but_claims_are_refused() {
        let task = Uuid::now_v7();
        let mem = Arc::new(MemoryJournal::default());
        let recorder = Recorder::new(mem.clone(), Clock::fixed(0));
        let ledgers = Ledgers::default();
        let acks = Arc::new(Acks::default());
        let (ctx, mut q) = attempt(task, 4, &acks);
        let ran = Arc::new(AtomicU64::new(0));
        let r = ran.clone();
        let effect = tokio::spawn(async move {
            ctx.effect("mail", None, || async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<_, muster_core::AgentError>(1u32)
            })
            .await
        });
        relay(&mut q, &ledgers, &recorder, &acks).await;
        let refused = effect.await.expect("joined");
        assert!(
            matches!(&refused, Err(EffectError::Unwritten { source: Unrecorded::Remote(why), .. }) if why.contains("no owner")),
            "{refused:?}"
        );
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert_eq!(mem.len(), 0);
        let (ctx, mut q) = attempt(task, 4, &acks);
        let seq = ctx
            .ledger()
            .started("mail", None, 4, &Arc::from("pay#0@w1"));
        relay(&mut q, &ledgers, &recorder, &acks).await;
        assert_eq!(ctx.ledger().written(seq).await, Ok(()));
        ctx.effect_done("mail", None, json!(1));
        relay(&mut q, &ledgers, &recorder, &acks).await;
        assert_eq!(mem.len(), 2, "both journaled");
    }

    /// An answer is handed only to the attempt that sent its record (a record number alone
    /// may be another attempt's: a worker restarted under its name counts from 1 again),
    /// and an attempt that ended forgets what it sent, answered or not.
    #[tokio::test]
    async fn an_answer_reaches_only_the_attempt_that_sent_the_record_and_an_ended_one_forgets() {
        let acks = Arc::new(Acks::default());
        let task = Uuid::now_v7();
        let (tx, _q) = mpsc::channel(16);
        let journal = WorkerJournal {
            outbox: Outbox(tx),
            to: "muster.effect.c1".into(),
            ack_to: "muster.effect_ack.w1".into(),
            instance: "pay#0@w1".into(),
            task,
            epoch: 2,
            max_bytes: 1 << 20,
            acks: acks.clone(),
            unsettled: Mutex::default(),
            sent: Mutex::default(),
        };
        let started = Event::EffectStarted {
            task,
            name: "charge".into(),
            key: Some("k".into()),
            epoch: 2,
            agent: "pay#0".into(),
        };
        let seq = journal.send(&started, None);
        let ack = |task_id, epoch| EffectAckMsg {
            task_id,
            epoch,
            seq,
            written: true,
            error: None,
            entry: None,
        };
        assert!(
            !acks.answer(ack(Uuid::now_v7(), 2)),
            "another task's record"
        );
        assert!(!acks.answer(ack(task, 1)), "another epoch's record");
        assert_eq!(acks.waiting.lock().len(), 1, "the record still waits");
        journal.forget_all();
        assert!(
            acks.waiting.lock().is_empty(),
            "the ended attempt forgot it"
        );
        assert!(!acks.answer(ack(task, 2)), "nobody waits any more");
        let late = journal.written(seq).await;
        assert!(
            matches!(late, Err(Unrecorded::Remote(_))),
            "a record whose answer is unknown is not called written: {late:?}"
        );
    }

    /// A claim is answered only once its `effect_started` is on disk (the worker runs the
    /// effect on that answer, so a crash of the control node cannot forget a started
    /// effect); a writer that stops first answers "not written" and the effect never runs.
    #[tokio::test(start_paused = true)]
    async fn a_claim_is_answered_once_its_record_is_written_and_refused_if_never() {
        for stops in [false, true] {
            let task = Uuid::now_v7();
            let held = Arc::new(HeldJournal::new());
            let recorder = Recorder::new(held.clone(), Clock::fixed(0));
            let owners = Arc::new(Ledger::new(task, recorder.clone(), Vec::new(), None));
            let ledgers = Ledgers::default();
            ledgers.insert(task, Arc::downgrade(&owners));
            let acks = Arc::new(Acks::default());
            let (ctx, mut q) = attempt(task, 1, &acks);
            let ran = Arc::new(AtomicU64::new(0));
            let r = ran.clone();
            let effect = tokio::spawn(async move {
                ctx.effect("charge", None, || async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, muster_core::AgentError>(1u32)
                })
                .await
            });
            let (_, body) = q.recv().await.expect("the claim was sent");
            let msg: EffectMsg = crate::wire::decode(&body).expect("a valid record");
            let (tx, mut answers) = mpsc::channel(4);
            journal(&ledgers, &recorder, &Outbox(tx), msg);
            assert_eq!(held.len(), 1, "the claim is journaled");
            tokio::time::sleep(ACK_WAIT / 2).await;
            assert!(
                answers.try_recv().is_err(),
                "no answer while the record is not written"
            );
            assert_eq!(ran.load(Ordering::SeqCst), 0, "the effect waits");
            if stops {
                held.stop();
            } else {
                held.write_up_to(1);
            }
            let (_, body) = answers.recv().await.expect("answered");
            let ack: EffectAckMsg = crate::wire::decode(&body).expect("a valid answer");
            assert_eq!(ack.written, !stops, "{ack:?}");
            assert!(acks.answer(ack), "the attempt waited for it");
            let done = effect.await.expect("joined");
            assert_eq!(done.is_ok(), !stops, "{done:?}");
            assert_eq!(ran.load(Ordering::SeqCst), u64::from(!stops));
        }
    }

    /// Before its report, an ended attempt waits for the answers to every record it sent
    /// (so the report never overtakes its `effect_done`), but no longer than its bound.
    #[tokio::test(start_paused = true)]
    async fn an_ended_attempt_settles_its_records_before_it_reports_within_a_bound() {
        let task = Uuid::now_v7();
        let acks = Arc::new(Acks::default());
        let (tx, _q) = mpsc::channel(16);
        let journal = Arc::new(WorkerJournal {
            outbox: Outbox(tx),
            to: "muster.effect.c1".into(),
            ack_to: "muster.effect_ack.w1".into(),
            instance: "pay#0@w1".into(),
            task,
            epoch: 1,
            max_bytes: 1 << 20,
            acks: acks.clone(),
            unsettled: Mutex::default(),
            sent: Mutex::default(),
        });
        let done = Event::EffectDone {
            task,
            name: "charge".into(),
            key: None,
            epoch: 1,
            agent: "pay#0".into(),
            result: json!(1),
        };
        let seq = journal.send(&done, None);
        let j = journal.clone();
        let settled = tokio::spawn(async move { j.settle(SETTLE_WAIT).await });
        tokio::time::sleep(SETTLE_WAIT / 2).await;
        assert!(!settled.is_finished(), "it waits for the answer");
        assert!(acks.answer(EffectAckMsg {
            task_id: task,
            epoch: 1,
            seq,
            written: true,
            error: None,
            entry: None,
        }));
        tokio::time::timeout(Duration::from_millis(1), settled)
            .await
            .expect("settled as soon as it was answered")
            .expect("joined");
        // A record nobody answers holds the report back no longer than the bound.
        journal.send(&done, None);
        let start = tokio::time::Instant::now();
        journal.settle(SETTLE_WAIT).await;
        assert_eq!(start.elapsed(), SETTLE_WAIT);
    }
}
