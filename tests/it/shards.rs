//! A runtime on several shards (threads): instances are spread over them, a task is owned
//! on its submitter's shard and runs on an instance there when one is free, and every
//! guarantee holds across threads (each task completes once, cancel and shutdown reach an
//! owner on any shard, a slot freed on one shard wakes an owner waiting on another).
//!
//! These run on the real clock (a paused clock is per thread); every wait is bounded.

use crate::support::common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread::ThreadId;

use common::{CAP, agent, builder, count_kind, hang, input, journal, real, within};
use muster::{Muster, Task, TaskStatus};
use parking_lot::Mutex;
use serde_json::json;

/// Where each task (by its input `n`) ran.
type Ran = Arc<Mutex<HashMap<i64, ThreadId>>>;

/// An echo agent type of `replicas` instances that notes the thread each task ran on.
fn noting(replicas: usize, ran: &Ran) -> muster::AgentDef {
    let ran = ran.clone();
    agent("noting", move |v, _ctx| {
        let ran = ran.clone();
        async move {
            let n = v["n"].as_i64().unwrap_or(-1);
            ran.lock().insert(n, std::thread::current().id());
            Ok(json!({"value": n}))
        }
    })
    .replicas(replicas)
}

/// Runs `work` on shard `s` and hands back what it returns.
async fn on_shard<T, F>(m: &Muster, s: usize, work: impl FnOnce(Muster) -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let m2 = m.clone();
    assert!(
        m.spawn_on_shard(s, move || async move {
            let _ = tx.send(work(m2).await);
        }),
        "shard {s} runs"
    );
    within(30, "the shard's work", rx)
        .await
        .expect("the shard answered")
}

#[test]
fn a_task_submitted_on_a_shard_runs_on_an_instance_of_that_shard() {
    real(async {
        let ran: Ran = Ran::default();
        let m = builder()
            .shards(2)
            .agent(noting(4, &ran))
            .start()
            .await
            .expect("starts");
        assert_eq!(m.shards(), 2);
        let mut threads = Vec::new();
        for s in 0..2 {
            let (thread, outcome) = on_shard(&m, s, move |m| async move {
                let outcome = m.delegate(Task::new(CAP, input(s as i64))).await;
                (std::thread::current().id(), outcome)
            })
            .await;
            let outcome = outcome.expect("accepted");
            assert_eq!(outcome.status, TaskStatus::Completed, "{outcome:?}");
            assert_eq!(
                ran.lock().get(&(s as i64)),
                Some(&thread),
                "the task from shard {s} ran on that shard's thread"
            );
            threads.push(thread);
        }
        assert_ne!(threads[0], threads[1], "two shards, two threads");
        m.shutdown().await;
    });
}

#[test]
fn tasks_from_every_shard_and_a_foreign_thread_each_complete_once_through_a_full_capability() {
    real(async {
        let ran: Ran = Ran::default();
        // Two slots in all (one instance per shard, one task at a time, no mailbox): most
        // owners wait in the capability's one line, woken by slots freed on either shard.
        let m = builder()
            .shards(2)
            .agent(noting(2, &ran).concurrency(1).mailbox(0))
            .start()
            .await
            .expect("starts");
        const EACH: i64 = 150;
        let submit_all = |m: Muster, from: i64| async move {
            let mut handles = Vec::new();
            for n in from..from + EACH {
                handles.push(m.submit(Task::new(CAP, input(n))).await.expect("accepted"));
            }
            let outs = futures::future::join_all(handles.into_iter().map(|h| h.outcome())).await;
            outs.iter().filter(|o| o.is_completed()).count() as i64
        };
        let foreign = {
            let m = m.clone();
            std::thread::spawn(move || futures::executor::block_on(submit_all(m, 2 * EACH)))
        };
        let a = on_shard(&m, 0, move |m| submit_all(m, 0));
        let b = on_shard(&m, 1, move |m| submit_all(m, EACH));
        let (a, b) = futures::join!(a, b);
        let c = within(30, "the foreign thread's tasks", async {
            loop {
                if foreign.is_finished() {
                    break foreign.join().expect("the foreign thread");
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        assert_eq!((a, b, c), (EACH, EACH, EACH), "every task completed");
        let events: Vec<_> = journal(&m).into_iter().map(|r| r.event).collect();
        assert_eq!(count_kind(&events, "result_accepted"), 3 * EACH as usize);
        let done: HashSet<_> = events
            .iter()
            .filter_map(|e| match e {
                muster::Event::ResultAccepted { task, .. } => Some(*task),
                _ => None,
            })
            .collect();
        assert_eq!(done.len(), 3 * EACH as usize, "no task completed twice");
        assert_eq!(ran.lock().len(), 3 * EACH as usize);
        assert_eq!(m.stats().completed, 3 * EACH as u64);
        assert_eq!(m.live_tasks(), 0);
        m.shutdown().await;
    });
}

#[test]
fn an_owner_on_another_shard_is_cancelled_from_here_and_shutdown_ends_the_rest() {
    real(async {
        let m = builder()
            .shards(2)
            .agent(agent("stuck", |_, _| hang()).replicas(2))
            .start()
            .await
            .expect("starts");
        let (first, second) = on_shard(&m, 1, |m| async move {
            let a = m.submit(Task::new(CAP, input(1))).await.expect("accepted");
            let b = m.submit(Task::new(CAP, input(2))).await.expect("accepted");
            (a, b)
        })
        .await;
        let id = first.id();
        assert!(m.cancel(id).await, "the owner on shard 1 is reached");
        let out = within(30, "the cancelled task", first.outcome()).await;
        assert_eq!(out.status, TaskStatus::Cancelled);
        m.shutdown().await;
        let out = within(30, "the task live at shutdown", second.outcome()).await;
        assert_eq!(out.status, TaskStatus::Cancelled);
    });
}
