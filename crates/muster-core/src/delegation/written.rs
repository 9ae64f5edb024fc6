//! Outcomes waiting for their task's terminal record to be written (G5: nothing is
//! acknowledged before it is written): one queue per shard, watched by one future.
//!
//! A future per outcome, each waiting on the journal's watermark, would all be woken by
//! every commit (a watch wakes every receiver), so `n` outcomes waiting across `c`
//! commits cost `n * c` wake-ups. Here the shard's one watcher waits for the oldest
//! outcome's record and, at each commit, hands over exactly the outcomes it covers.
//!
//! Records are numbered as they are appended, and one shard appends in order, so the
//! queue is in record order and a commit covers a prefix of it. (Were an outcome ever
//! queued behind one of a later record, it would wait for that one's commit: later, never
//! lost.)

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use super::record::TaskRecord;
use crate::journal::{Unwritten, Watermark};

/// A task's outcome, for its caller once record `seq` is written.
pub(super) struct Pending {
    /// The task's terminal record.
    pub seq: u64,
    pub task: Uuid,
    pub to: oneshot::Sender<TaskRecord>,
    pub record: TaskRecord,
}

impl Pending {
    /// Hands the outcome to its caller, or says why it cannot be: the caller gets no
    /// outcome the journal does not hold, and the journal's failure is what `flush` and
    /// the CLI report.
    fn settle(self, written: Result<(), Unwritten>) {
        match written {
            Ok(()) => {
                let _ = self.to.send(self.record);
            }
            Err(e) => {
                tracing::error!(task = %self.task, error = %e, "task outcome not acknowledged")
            }
        }
    }
}

/// One shard's outcomes waiting for the journal, in record order.
#[derive(Default)]
pub(super) struct Acknowledgements {
    inner: Rc<RefCell<Queue>>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Pending>,
    /// The watcher runs (it stops when the queue empties).
    watching: bool,
}

impl Acknowledgements {
    /// Queues `p` until the journal whose watermark is `watermark` has written its record;
    /// starts the shard's watcher (on this thread) if it is not running. A shard's owners
    /// all journal to their runtime's one journal: the watcher keeps the watermark it was
    /// started with.
    pub(super) fn push(&self, p: Pending, watermark: &watch::Receiver<Watermark>) {
        let mut q = self.inner.borrow_mut();
        q.waiting.push_back(p);
        if !q.watching {
            q.watching = true;
            actix::spawn(watch(self.inner.clone(), watermark.clone()));
        }
    }

    /// Outcomes waiting now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner.borrow().waiting.len()
    }
}

/// The watcher: waits for the oldest waiting outcome's record, hands over every outcome
/// the watermark covers, and stops when none waits. If the journal stops first, every
/// waiting outcome is settled as unwritten.
async fn watch(queue: Rc<RefCell<Queue>>, mut watermark: watch::Receiver<Watermark>) {
    loop {
        let oldest = {
            let mut q = queue.borrow_mut();
            match q.waiting.front() {
                Some(p) => p.seq,
                None => {
                    q.watching = false;
                    return;
                }
            }
        };
        let reached = watermark
            .wait_for(|w| w.covers(oldest) || w.stopped)
            .await
            .map(|w| *w)
            .unwrap_or(Watermark {
                written: 0,
                stopped: true,
            });
        loop {
            let next = {
                let mut q = queue.borrow_mut();
                match q.waiting.front() {
                    Some(p) if reached.covers(p.seq) || reached.stopped => q.waiting.pop_front(),
                    _ => None,
                }
            };
            let Some(p) = next else {
                break;
            };
            let written = match reached.covers(p.seq) {
                true => Ok(()),
                false => Err(Unwritten {
                    seq: p.seq,
                    written: reached.written,
                }),
            };
            p.settle(written);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(seq: u64) -> (Pending, oneshot::Receiver<TaskRecord>) {
        let (to, rx) = oneshot::channel();
        let task = Uuid::from_u128(seq as u128);
        let record = TaskRecord::new(task, "work".into(), task, 0);
        (
            Pending {
                seq,
                task,
                to,
                record,
            },
            rx,
        )
    }

    fn mark(written: u64, stopped: bool) -> Watermark {
        Watermark { written, stopped }
    }

    /// A journal's watermark at 0 and an empty queue.
    fn fresh() -> (
        watch::Sender<Watermark>,
        watch::Receiver<Watermark>,
        Acknowledgements,
    ) {
        let (tx, rx) = watch::channel(mark(0, false));
        (tx, rx, Acknowledgements::default())
    }

    /// Lets the watcher run (it is woken by the watermark; no time passes).
    async fn turn() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn a_commit_hands_over_exactly_the_outcomes_it_covers_in_order() {
        actix::System::new().block_on(async {
            let (tx, rx, acks) = fresh();
            let mut outcomes = Vec::new();
            for seq in [3, 5, 8] {
                let (p, out) = pending(seq);
                acks.push(p, &rx);
                outcomes.push(out);
            }
            turn().await;
            assert_eq!(acks.len(), 3, "nothing is written yet");

            tx.send_replace(mark(5, false));
            turn().await;
            assert_eq!(acks.len(), 1, "records 3 and 5 are written, 8 is not");
            let first = outcomes.remove(0).await.expect("the outcome of record 3");
            assert_eq!(first.id, Uuid::from_u128(3));
            let second = outcomes.remove(0).await.expect("the outcome of record 5");
            assert_eq!(second.id, Uuid::from_u128(5));

            // A later outcome joins the watched queue; one commit covers both.
            let (p, later) = pending(9);
            acks.push(p, &rx);
            tx.send_replace(mark(9, false));
            turn().await;
            assert_eq!(acks.len(), 0);
            assert!(outcomes.remove(0).await.is_ok());
            assert!(later.await.is_ok());
            assert!(
                !acks.inner.borrow().watching,
                "the watcher stops when nothing waits"
            );

            // It starts again for the next outcome.
            let (p, next) = pending(10);
            acks.push(p, &rx);
            tx.send_replace(mark(10, false));
            turn().await;
            assert!(next.await.is_ok());
        });
    }

    #[test]
    fn a_journal_that_stops_first_acknowledges_nothing_it_did_not_write() {
        actix::System::new().block_on(async {
            let (tx, rx, acks) = fresh();
            let (p4, out4) = pending(4);
            let (p7, out7) = pending(7);
            acks.push(p4, &rx);
            acks.push(p7, &rx);
            tx.send_replace(mark(5, true));
            turn().await;
            assert_eq!(acks.len(), 0, "every outcome is settled");
            assert!(out4.await.is_ok(), "record 4 was written");
            assert!(out7.await.is_err(), "record 7 was not: no outcome");

            // A journal dropped altogether: the same, nothing waits forever.
            let (p, out) = pending(11);
            acks.push(p, &rx);
            drop(tx);
            turn().await;
            assert_eq!(acks.len(), 0);
            assert!(out.await.is_err());
        });
    }
}
