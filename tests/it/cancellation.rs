//! G1's third terminal state: `cancel` ends a running task `cancelled`, the agent's work is
//! dropped (not left running), and the agent is free for the next task.

use crate::support::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use muster::{LeaseOutcome, Task, TaskStatus};
use serde_json::json;

#[test]
fn cancel_ends_a_running_task_and_drops_the_agents_work() {
    run_paused(|| async {
        let dropped = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let (d, s) = (dropped.clone(), started.clone());
        let m = builder()
            .agent(agent("w", move |input, _| {
                let (d, s) = (d.clone(), s.clone());
                async move {
                    if input["n"] == 1 {
                        let _guard = DropGuard(d);
                        s.store(true, Ordering::SeqCst);
                        return hang().await;
                    }
                    Ok(json!({"value": input["n"]}))
                }
            }))
            .start()
            .await
            .expect("runtime starts");
        let h = m
            .submit(Task::new(CAP, input(1)).timeout(Duration::from_secs(60)))
            .await
            .expect("submitted");
        let id = h.id();
        pass(Duration::from_secs(1)).await;
        assert!(started.load(Ordering::SeqCst), "the agent is working on it");
        assert!(!dropped.load(Ordering::SeqCst));

        assert!(m.cancel(id).await, "a live task can be cancelled");
        let out = within(5, "the outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Cancelled, "{out:?}");
        assert_eq!(out.leases.len(), 1);
        assert_eq!(out.leases[0].outcome, LeaseOutcome::Cancelled);
        assert_eq!(out.output, None);
        assert!(
            !m.cancel(id).await,
            "an ended task cannot be cancelled again"
        );

        pass(Duration::from_millis(10)).await;
        assert!(
            dropped.load(Ordering::SeqCst),
            "the agent's future was dropped"
        );
        let events = events_of(&m, id);
        assert_eq!(count_kind(&events, "task_cancelled"), 1);
        assert_eq!(count_kind(&events, "result_accepted"), 0);
        assert_eq!(count_kind(&events, "attempt_failed"), 0);
        let info = &m.agents()[0];
        assert_eq!(info.in_flight, 0, "the slot was released");

        // The one agent (concurrency 1) takes the next task at once.
        let next = within(5, "the next task", async {
            m.delegate(Task::new(CAP, input(2)).timeout(Duration::from_secs(60)))
                .await
                .expect("submitted")
        })
        .await;
        assert_eq!(next.status, TaskStatus::Completed);
        assert_eq!(next.owner(), Some("w#0"));
        let s = m.stats();
        assert_eq!((s.submitted, s.completed, s.cancelled), (2, 1, 1));
    });
}

#[test]
fn cancel_ends_a_task_that_is_waiting_for_an_agent() {
    run_paused(|| async {
        let m = builder().start().await.expect("runtime starts");
        let h = m
            .submit(Task::new(CAP, input(1)).deadline(Duration::from_secs(60)))
            .await
            .expect("submitted");
        pass(Duration::from_secs(1)).await;
        assert!(m.cancel(h.id()).await);
        let out = within(5, "the outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Cancelled);
        assert!(out.leases.is_empty());
        // Nothing more happens to it when an agent turns up or the deadline passes.
        m.register(echo("w")).await.expect("registered");
        pass(Duration::from_secs(120)).await;
        let s = m.stats();
        assert_eq!(
            (s.submitted, s.cancelled, s.escalated, s.completed),
            (1, 1, 0, 0)
        );
        assert_eq!(m.live_tasks(), 0);
    });
}

/// Shutdown stops the root's children in reverse start order: the owner supervisor first,
/// so every live task ends `cancelled` (nothing is left without a terminal state).
#[test]
fn shutdown_cancels_every_live_task_first() {
    common::run_paused(|| async {
        let m = muster::Muster::builder()
            .schema("any", serde_json::json!({"type": "object"}))
            .agent(
                muster::AgentDef::function("slow", |v, _| async move {
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    Ok(v)
                })
                .capability(muster::CapabilitySpec::new("slow", "any", "any"))
                .concurrency(4),
            )
            .start()
            .await
            .unwrap();
        let mut handles = Vec::new();
        for _ in 0..3 {
            handles.push(
                m.submit(
                    muster::Task::new("slow", serde_json::json!({}))
                        .timeout(std::time::Duration::from_secs(7200)),
                )
                .await
                .unwrap(),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        common::within(60, "shutdown", m.shutdown()).await;
        for h in handles {
            let o = common::within(60, "outcome", h.outcome()).await;
            assert_eq!(o.status, muster::TaskStatus::Cancelled);
        }
    });
}
