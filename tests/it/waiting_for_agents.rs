//! G1 when nobody can serve a task yet: it waits (bounded by its deadline) for a capable
//! agent to register and then runs; if none registers it is escalated at the deadline with
//! a reason naming the capability, to the dead-letter record or to the declared gate.

use crate::support::common;

use std::time::Duration;

use common::*;
use muster::{Event, Task, TaskStatus};
use serde_json::json;

#[test]
fn a_task_waits_for_an_agent_that_registers_later() {
    run_paused(|| async {
        let m = builder().start().await.expect("runtime starts");
        let h = m
            .submit(Task::new(CAP, input(4)).deadline(Duration::from_secs(30)))
            .await
            .expect("submitted without any agent");
        pass(Duration::from_secs(5)).await;
        assert_eq!(m.live_tasks(), 1, "still waiting");
        m.register(echo("late")).await.expect("registered");
        let out = within(60, "the outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
        assert_eq!(out.output.as_deref(), Some(&json!({"value": 4})));
        assert_eq!(out.owner(), Some("late#0"));
        assert_eq!(out.leases.len(), 1);
        assert_eq!(out.leases[0].started_ms, out.submitted_ms + 5000);
        assert_eq!(m.stats().completed, 1);
    });
}

#[test]
fn a_task_nobody_can_serve_is_escalated_at_its_deadline() {
    run_paused(|| async {
        let m = builder().start().await.expect("runtime starts");
        // Another capability's agent registering must not wake it for good.
        let h = m
            .submit(Task::new("translate.klingon", input(1)).deadline(Duration::from_secs(20)))
            .await
            .expect("submitted");
        let id = h.id();
        pass(Duration::from_secs(2)).await;
        m.register(echo("other")).await.expect("registered");
        let out = within(60, "the outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Escalated, "{out:?}");
        assert!(out.leases.is_empty());
        assert_eq!(out.duration_ms(), Some(20_000), "escalated at the deadline");
        let esc = out.escalation.expect("escalation");
        assert_eq!(esc.to, "dead_letter");
        assert!(esc.reason.contains("translate.klingon"), "{}", esc.reason);
        let events = events_of(&m, id);
        assert_eq!(count_kind(&events, "task_escalated"), 1);
        assert_eq!(count_kind(&events, "lease_granted"), 0);
        assert_eq!(m.stats().escalated, 1);
        assert_eq!(m.live_tasks(), 0);
    });
}

#[test]
fn a_gate_holds_a_task_nobody_could_serve() {
    run_paused(|| async {
        let m = builder().start().await.expect("runtime starts");
        let h = m
            .submit(
                Task::new(CAP, input(1))
                    .deadline(Duration::from_secs(10))
                    .escalate_to("human"),
            )
            .await
            .expect("submitted");
        let id = h.id();
        let out = within(60, "the outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Escalated);
        let esc = out.escalation.expect("escalation");
        assert_eq!(esc.to, "human");
        assert!(esc.reason.contains(CAP), "{}", esc.reason);
        assert!(events_of(&m, id).iter().any(|e| matches!(
            e,
            Event::TaskEscalated { to, .. } if to == "human"
        )));
    });
}
