//! G3: contracts at every boundary. An output that breaks the output schema is a
//! `contract_violation` carrying the validator's path, and the owner reassigns the task; a
//! false acceptance rule is `rejected`; an invalid input is refused at submission and no
//! agent ever sees it.

use crate::support::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use muster::{AgentDef, CapabilitySpec, Event, LeaseOutcome, SubmitError, Task, TaskStatus};
use serde_json::json;

fn attempt_failures(m: &muster::Muster, id: uuid::Uuid) -> Vec<(String, String)> {
    events_of(m, id)
        .into_iter()
        .filter_map(|e| match e {
            Event::AttemptFailed { reason, detail, .. } => Some((reason, detail)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_schema_violation_fails_the_attempt_and_the_task_moves_on() {
    run_paused(|| async {
        let m = builder()
            .agent(
                agent("w", |input, ctx| async move {
                    if ctx.attempt == 1 {
                        Ok(json!({"value": "not a number"}))
                    } else {
                        Ok(json!({"value": input["n"]}))
                    }
                })
                .replicas(2),
            )
            .start()
            .await
            .expect("runtime starts");
        let h = m.submit(Task::new(CAP, input(5))).await.expect("submitted");
        let id = h.id();
        let out = within(60, "the outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
        assert_eq!(out.output.as_deref(), Some(&json!({"value": 5})));
        assert_eq!(out.leases.len(), 2);
        assert_ne!(out.leases[0].agent, out.leases[1].agent);
        match &out.leases[0].outcome {
            LeaseOutcome::Failed {
                failure: muster::Failure::ContractViolation(c),
            } => {
                assert_eq!(c.schema, "out");
                assert_eq!(c.errors[0].instance_path, "/value");
            }
            other => panic!("expected a contract violation, got {other:?}"),
        }
        let failures = attempt_failures(&m, id);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].0, "contract_violation");
        assert!(failures[0].1.contains("/value"), "{}", failures[0].1);
        assert_eq!(count_kind(&events_of(&m, id), "result_accepted"), 1);
    });
}

#[test]
fn a_task_whose_every_candidate_violates_is_escalated_with_its_history() {
    run_paused(|| async {
        let m = builder()
            .agent(agent("w", |_, _| async { Ok(json!({"wrong": true})) }).replicas(2))
            .start()
            .await
            .expect("runtime starts");
        let h = m
            .submit(
                Task::new(CAP, input(1))
                    .timeout(Duration::from_secs(5))
                    .attempts(3),
            )
            .await
            .expect("submitted");
        let id = h.id();
        let out = within(60, "the outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Escalated, "{out:?}");
        assert_eq!(out.output, None);
        assert_eq!(out.leases.len(), 2, "one lease per candidate");
        for l in &out.leases {
            assert!(
                matches!(&l.outcome, LeaseOutcome::Failed { failure } if failure.reason() == "contract_violation"),
                "{l:?}"
            );
        }
        let esc = out.escalation.expect("escalation");
        assert_eq!(esc.to, "dead_letter");
        assert!(esc.reason.contains("contract_violation"), "{}", esc.reason);
        let failures = attempt_failures(&m, id);
        assert_eq!(failures.len(), 2);
        assert!(
            failures
                .iter()
                .all(|(r, d)| r == "contract_violation" && d.contains("value"))
        );
        assert_eq!(count_kind(&events_of(&m, id), "task_escalated"), 1);
        assert_eq!(count_kind(&events_of(&m, id), "result_accepted"), 0);
        assert_eq!(m.stats().escalated, 1);
    });
}

#[test]
fn a_false_acceptance_rule_rejects_the_output() {
    run_paused(|| async {
        let m = builder()
            .agent(
                AgentDef::function(
                    "w",
                    |input, _| async move { Ok(json!({"value": input["n"]})) },
                )
                .capability(
                    CapabilitySpec::new("strict", "in", "out").accept("output.value > input.n"),
                ),
            )
            .start()
            .await
            .expect("runtime starts");
        let h = m
            .submit(Task::new("strict", input(3)).attempts(1))
            .await
            .expect("submitted");
        let id = h.id();
        let out = within(60, "the outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Escalated, "{out:?}");
        assert!(matches!(
            &out.leases[0].outcome,
            LeaseOutcome::Failed { failure } if failure.reason() == "rejected"
        ));
        let failures = attempt_failures(&m, id);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].0, "rejected");
        assert!(
            failures[0].1.contains("output.value > input.n"),
            "{}",
            failures[0].1
        );
        assert_eq!(count_kind(&events_of(&m, id), "result_accepted"), 0);
    });
}

#[test]
fn an_invalid_input_is_refused_at_submit_and_never_reaches_an_agent() {
    run_paused(|| async {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let m = builder()
            .agent(agent("w", move |input, _| {
                c.fetch_add(1, Ordering::SeqCst);
                async move { Ok(json!({"value": input["n"]})) }
            }))
            .start()
            .await
            .expect("runtime starts");
        let err = m
            .submit(Task::new(CAP, json!({"n": "seven"})))
            .await
            .expect_err("refused");
        match &err {
            SubmitError::InvalidInput { capability, source } => {
                assert_eq!(capability, CAP);
                assert_eq!(source.schema, "in");
                assert_eq!(source.errors[0].instance_path, "/n");
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
        assert!(err.to_string().contains("/n"), "{err}");
        pass(Duration::from_secs(5)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let kinds: Vec<_> = journal(&m).iter().map(|r| r.event.kind()).collect();
        assert!(!kinds.contains(&"task_submitted"), "{kinds:?}");
        assert!(!kinds.contains(&"lease_granted"), "{kinds:?}");
        assert!(!kinds.contains(&"envelope_routed"), "{kinds:?}");
        assert_eq!(m.stats().submitted, 0);
    });
}

#[test]
fn an_invalid_input_for_a_capability_declared_later_never_reaches_an_agent() {
    run_paused(|| async {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let m = builder().start().await.expect("runtime starts");
        let h = m
            .submit(Task::new(CAP, json!({"n": "seven"})).deadline(Duration::from_secs(30)))
            .await
            .expect("the contract is not known yet");
        pass(Duration::from_secs(1)).await;
        m.register(agent("w", move |input, _| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { Ok(json!({"value": input["n"]})) }
        }))
        .await
        .expect("registered");
        let out = within(60, "the outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Escalated, "{out:?}");
        assert!(out.leases.is_empty());
        let esc = out.escalation.expect("escalation");
        assert!(esc.reason.contains("/n"), "{}", esc.reason);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    });
}
