//! Completed work is discoverable: a task of an idempotent capability identical (same
//! capability, contract version and canonical input) to one with an accepted result
//! returns that result, journaled `task_reused` with the original task's id, instead of
//! running again; never a rejected result nor one older than the retention; identical
//! tasks submitted at once run once.

use crate::support::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use muster::{AgentDef, CapabilitySpec, Event, Muster, Task, TaskStatus};
use serde_json::json;
use uuid::Uuid;

/// An idempotent `work` agent that counts its runs; it answers `{"value": n}` after 5 s,
/// or `{"value": -1}` for n = 13 (which the acceptance rule rejects).
async fn counting(runs: Arc<AtomicUsize>, idempotent: bool) -> Muster {
    let mut spec = CapabilitySpec::new(CAP, "in", "out").accept("output.value >= 0");
    if idempotent {
        spec = spec.idempotent(Duration::from_secs(60));
    }
    let def = AgentDef::function("w", move |input: serde_json::Value, _| {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(5)).await;
            let n = input["n"].as_i64().unwrap_or(0);
            Ok(json!({"value": if n == 13 { -1 } else { n }}))
        }
    })
    .capability(spec)
    .concurrency(8);
    builder().agent(def).start().await.expect("runtime starts")
}

fn reused_from(m: &Muster, task: Uuid) -> Option<Uuid> {
    journal(m).into_iter().find_map(|r| match r.event {
        Event::TaskReused {
            task: t, original, ..
        } if t == task => Some(original),
        _ => None,
    })
}

#[test]
fn an_identical_task_returns_the_accepted_result_without_running() {
    run_paused(|| async {
        let runs = Arc::new(AtomicUsize::new(0));
        let m = counting(runs.clone(), true).await;
        let first = within(30, "first", m.delegate(Task::new(CAP, json!({"n": 4}))))
            .await
            .unwrap();
        assert_eq!(first.status, TaskStatus::Completed);
        let h = m.submit(Task::new(CAP, json!({"n": 4}))).await.unwrap();
        let id = h.id();
        let second = within(30, "second", h.outcome()).await;
        assert_eq!(second.status, TaskStatus::Completed);
        assert_eq!(second.output, first.output);
        assert!(second.leases.is_empty(), "nothing was leased");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the agent ran once");
        assert_eq!(
            reused_from(&m, id),
            Some(first.id),
            "journaled with the original's id"
        );
        // A different input runs.
        let third = within(30, "third", m.delegate(Task::new(CAP, json!({"n": 5}))))
            .await
            .unwrap();
        assert_eq!(third.output.as_deref(), Some(&json!({"value": 5})));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn a_rejected_or_expired_result_is_never_reused() {
    run_paused(|| async {
        let runs = Arc::new(AtomicUsize::new(0));
        let m = counting(runs.clone(), true).await;
        let rejected = within(
            60,
            "rejected",
            m.delegate(Task::new(CAP, json!({"n": 13})).attempts(1)),
        )
        .await
        .unwrap();
        assert_eq!(rejected.status, TaskStatus::Escalated);
        let again = within(
            60,
            "again",
            m.delegate(Task::new(CAP, json!({"n": 13})).attempts(1)),
        )
        .await
        .unwrap();
        assert_eq!(again.status, TaskStatus::Escalated);
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "a rejected result is not reused"
        );

        let fresh = within(30, "fresh", m.delegate(Task::new(CAP, json!({"n": 1}))))
            .await
            .unwrap();
        assert_eq!(fresh.status, TaskStatus::Completed);
        pass(Duration::from_secs(61)).await; // past reuse_for = 60 s
        let h = m.submit(Task::new(CAP, json!({"n": 1}))).await.unwrap();
        let id = h.id();
        let stale = within(30, "after the retention", h.outcome()).await;
        assert_eq!(stale.status, TaskStatus::Completed);
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "an expired result runs again"
        );
        assert_eq!(reused_from(&m, id), None);
    });
}

#[test]
fn concurrent_identical_tasks_run_once() {
    run_paused(|| async {
        let runs = Arc::new(AtomicUsize::new(0));
        let m = counting(runs.clone(), true).await;
        let mut handles = Vec::new();
        for _ in 0..5 {
            // The same input, its keys written in another order.
            handles.push(m.submit(Task::new(CAP, json!({"n": 7}))).await.unwrap());
        }
        let first = handles[0].id();
        let mut outs = Vec::new();
        for h in handles {
            outs.push(within(30, "each", h.outcome()).await);
        }
        assert!(outs.iter().all(|o| o.status == TaskStatus::Completed
            && o.output.as_deref() == Some(&json!({"value": 7}))));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "five identical tasks ran once"
        );
        for o in &outs[1..] {
            assert_eq!(reused_from(&m, o.id), Some(first));
        }
    });
}

#[test]
fn followers_run_themselves_when_the_task_they_attached_to_fails() {
    run_paused(|| async {
        let runs = Arc::new(AtomicUsize::new(0));
        let m = counting(runs.clone(), true).await;
        let a = m
            .submit(Task::new(CAP, json!({"n": 13})).attempts(1))
            .await
            .unwrap();
        let b = m
            .submit(Task::new(CAP, json!({"n": 13})).attempts(1))
            .await
            .unwrap();
        assert_eq!(
            within(30, "a", a.outcome()).await.status,
            TaskStatus::Escalated
        );
        assert_eq!(
            within(30, "b", b.outcome()).await.status,
            TaskStatus::Escalated
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2, "the follower ran itself");
    });
}

#[test]
fn reuse_is_off_by_default() {
    run_paused(|| async {
        let runs = Arc::new(AtomicUsize::new(0));
        let m = counting(runs.clone(), false).await;
        for _ in 0..2 {
            within(30, "each", m.delegate(Task::new(CAP, json!({"n": 2}))))
                .await
                .unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    });
}

/// A reused result is the original's output itself, not a copy: the original's outcome,
/// its `result_accepted` record, and each reusing task's `task_reused` record and outcome
/// (a task that found the result done, and tasks attached while it ran) share it.
#[test]
fn a_reused_result_is_the_originals_output_shared_not_copied() {
    run_paused(|| async {
        let runs = Arc::new(AtomicUsize::new(0));
        let m = counting(runs.clone(), true).await;
        let mut handles = Vec::new();
        for _ in 0..3 {
            handles.push(m.submit(Task::new(CAP, json!({"n": 9}))).await.unwrap());
        }
        let mut outs = Vec::new();
        for h in handles {
            outs.push(within(30, "each", h.outcome()).await);
        }
        // One more, after the first ended: it finds the result done.
        let later = within(30, "later", m.delegate(Task::new(CAP, json!({"n": 9}))))
            .await
            .unwrap();
        outs.push(later);
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the agent ran once");
        let original = outs[0].output.clone().expect("the original completed");
        let records = journal(&m);
        let accepted = records.iter().find_map(|r| match &r.event {
            Event::ResultAccepted { task, output, .. } if *task == outs[0].id => {
                Some(output.clone())
            }
            _ => None,
        });
        let accepted = accepted.expect("the original's result_accepted");
        assert!(Arc::ptr_eq(&original, &accepted), "the outcome is a copy");
        for o in &outs[1..] {
            let output = o.output.clone().expect("a reusing task completed");
            assert!(Arc::ptr_eq(&output, &accepted), "task {}: a copy", o.id);
            let reused = records.iter().find_map(|r| match &r.event {
                Event::TaskReused { task, output, .. } if *task == o.id => Some(output.clone()),
                _ => None,
            });
            let reused = reused.expect("the task_reused record");
            assert!(
                Arc::ptr_eq(&reused, &accepted),
                "task {}: journaled a copy",
                o.id
            );
        }
    });
}
