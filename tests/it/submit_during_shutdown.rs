//! A task submitted while the runtime stops is never left without an end (issue 27, item
//! 14): whether it was accepted (and cancelled by the shutdown, or lost behind it in an
//! owner shard's mailbox) or refused, it has a terminal record in the journal, its handle
//! says `cancelled`, and no task stays live.
//!
//! Each round starts a runtime on two shards (the owner shard of each is started by the
//! first task submitted to it, which may race with the shutdown too), starts two threads
//! that submit until they are refused, and stops the runtime at once. Every wait is
//! bounded; no timing is asserted.

use crate::support::common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{builder, input, real};
use muster::journal::Event;
use muster::{SubmitError, Task, TaskHandle, TaskStatus};
use uuid::Uuid;

/// Runtimes stopped under submissions.
const ROUNDS: usize = 10_000;
/// A bound on one thread's submissions in a round (it stops at the first refusal).
const MAX_SUBMITS: i64 = 200;

/// Submits from a thread that is no shard's, from the moment the shutdown starts, until
/// the runtime refuses (or `MAX_SUBMITS`).
fn submitter(m: muster::Muster, go: Arc<Barrier>) -> (Vec<TaskHandle>, usize) {
    go.wait();
    let mut accepted = Vec::new();
    for i in 0..MAX_SUBMITS {
        match futures::executor::block_on(m.submit(Task::new("work", input(i)))) {
            Ok(h) => accepted.push(h),
            Err(SubmitError::Stopped(_)) => return (accepted, 1),
            Err(e) => panic!("a submission was refused for another reason: {e}"),
        }
    }
    (accepted, 0)
}

#[test]
fn every_task_submitted_while_the_runtime_stops_ends_and_none_stays_live() {
    real(async {
        let (mut accepted, mut refused) = (0usize, 0usize);
        for round in 0..ROUNDS {
            let m = builder().shards(2).start().await.expect("runtime starts");
            let go = Arc::new(Barrier::new(3));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (m, go) = (m.clone(), go.clone());
                    std::thread::spawn(move || submitter(m, go))
                })
                .collect();
            go.wait();
            m.shutdown().await;
            let mut handles = Vec::new();
            for t in threads {
                let (h, r) = t.join().expect("a submitter thread");
                handles.extend(h);
                refused += r;
            }
            accepted += handles.len();
            for h in handles {
                let id = h.id();
                let outcome = tokio::time::timeout(Duration::from_secs(10), h.outcome())
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: task {id} never ended"));
                assert_eq!(
                    outcome.status,
                    TaskStatus::Cancelled,
                    "round {round}: task {id} ended cancelled by the shutdown ({:?})",
                    outcome.escalation
                );
            }
            assert_eq!(m.live_tasks(), 0, "round {round}: no task stays live");
            // Every submission the journal knows (accepted or refused) has exactly one end.
            let mut ends: HashMap<Uuid, usize> = HashMap::new();
            for r in common::journal(&m) {
                match r.event {
                    Event::TaskSubmitted { task, .. } => {
                        ends.entry(task).or_default();
                    }
                    Event::TaskCancelled { task, .. }
                    | Event::TaskEscalated { task, .. }
                    | Event::ResultAccepted { task, .. } => *ends.entry(task).or_default() += 1,
                    _ => {}
                }
            }
            for (task, n) in ends {
                assert_eq!(n, 1, "round {round}: task {task} has {n} terminal records");
            }
            let stats = m.stats();
            assert_eq!(
                stats.submitted, stats.cancelled,
                "round {round}: every submission counted ended"
            );
        }
        eprintln!("{ROUNDS} shutdowns: {accepted} tasks accepted, {refused} submitters refused");
        assert!(
            accepted > 0 && refused > 0,
            "submissions raced the shutdowns"
        );
    });
}
