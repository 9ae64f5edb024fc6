//! A resumed run continues where the journal says it was: a task in flight keeps what is
//! left of its attempt budget (attempts journaled before the crash count), and the run's
//! outcome covers the whole run, the step visits before the crash included.

use crate::support::common;

use std::sync::Arc;

use common::{builder, echo, paused, within};
use muster::journal::{Event, Journal, MemoryJournal, Record};
use muster::workflow::recovery;
use muster::workflow::{RunOptions, RunStatus, Workflow};
use muster::{AgentError, Muster, WorkflowExt};
use serde_json::json;
use uuid::Uuid;

const FLAKY: &str = r#"
name = "budget"
input = "in"
start = "a"

[steps.a]
capability = "work"
input = "{'n': run.input.n}"
timeout = "5s"
attempts = 3
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"
"#;

const TWO_STEPS: &str = r#"
name = "pair"
input = "in"
start = "a"

[steps.a]
capability = "work"
input = "{'n': run.input.n}"
timeout = "5s"
attempts = 2
next = "b"

[steps.b]
capability = "work"
input = "{'n': steps.a.output.value + 1}"
timeout = "5s"
attempts = 2
next = "done"

[steps.done]
terminal = "done"
"#;

fn workflow(m: &Muster, text: &str) -> Arc<Workflow> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wf.toml");
    std::fs::write(&path, text).expect("write workflow");
    Arc::new(Workflow::load(&path, &m.schemas()).expect("workflow loads"))
}

/// A runtime on `journal` whose `work` agents (three of them) always fail.
async fn failing(journal: Arc<MemoryJournal>) -> Muster {
    builder()
        .journal(journal)
        .agent(
            common::agent("broken", |_input, _ctx| async move {
                Err::<serde_json::Value, _>(AgentError::new("always broken"))
            })
            .replicas(3),
        )
        .start()
        .await
        .expect("runtime starts")
}

/// A journal holding exactly `records`.
fn journal_of(records: &[Record]) -> Arc<MemoryJournal> {
    let j = Arc::new(MemoryJournal::default());
    for r in records {
        j.append(r.at_ms, r.event.clone());
    }
    j
}

fn leases_of(records: &[Record], task: Uuid) -> usize {
    records
        .iter()
        .filter(|r| matches!(&r.event, Event::LeaseGranted { task: t, .. } if *t == task))
        .count()
}

#[test]
fn a_resumed_task_continues_with_the_attempts_it_has_left() {
    paused(async {
        // The original run: every attempt fails; the process "dies" after the second.
        let original = Arc::new(MemoryJournal::default());
        let m = failing(original.clone()).await;
        let wf = workflow(&m, FLAKY);
        let o = within(
            60,
            "the original run",
            m.run_workflow(wf.clone(), json!({"n": 1})),
        )
        .await
        .expect("run");
        assert!(matches!(o.status, RunStatus::Failed { .. }), "{o:?}");
        m.shutdown().await;
        let records = original.read_after(0);
        let second_failure = records
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.event, Event::AttemptFailed { .. }))
            .nth(1)
            .map(|(i, _)| i + 1)
            .expect("two failed attempts");
        let survived = &records[..second_failure];

        // Resume on what survived: the task has one attempt left of its three.
        let rec = recovery::recover(survived)
            .pop()
            .expect("one unfinished run");
        let task = match rec.at.as_ref().and_then(|p| p.tasks.get("a")) {
            Some(recovery::StepProgress::InFlight(p)) => {
                assert_eq!(p.leases, 2, "two attempts journaled before the crash");
                p.task
            }
            other => panic!("step a should be in flight, got {other:?}"),
        };
        let j = journal_of(survived);
        let m = failing(j.clone()).await;
        let wf = workflow(&m, FLAKY);
        let o = within(
            60,
            "the resumed run",
            m.resume_run(wf, rec, RunOptions::default()),
        )
        .await
        .expect("resume");
        assert!(matches!(o.status, RunStatus::Failed { .. }), "{o:?}");
        let after = j.read_after(survived.len() as u64);
        assert_eq!(
            leases_of(&after, task),
            1,
            "only the attempt left of the budget is leased after the restart"
        );
        let escalation = after
            .iter()
            .find_map(|r| match &r.event {
                Event::TaskEscalated {
                    task: t, reason, ..
                } if *t == task => Some(reason.clone()),
                _ => None,
            })
            .expect("the task escalates once its budget is spent");
        assert!(
            escalation.contains("attempt budget of 3 spent"),
            "{escalation}"
        );
        m.shutdown().await;
    })
}

#[test]
fn a_task_whose_budget_was_spent_before_the_crash_escalates_without_a_lease() {
    paused(async {
        let original = Arc::new(MemoryJournal::default());
        let m = failing(original.clone()).await;
        let wf = workflow(&m, FLAKY);
        within(60, "the original run", m.run_workflow(wf, json!({"n": 1})))
            .await
            .expect("run");
        m.shutdown().await;
        let records = original.read_after(0);
        // Cut just after the third failure: all three attempts are journaled as failed (a
        // lease with no end would be an attempt the crash interrupted, which is refunded:
        // `crash_interrupted_attempts`).
        let third_failure = records
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.event, Event::AttemptFailed { .. }))
            .nth(2)
            .map(|(i, _)| i + 1)
            .expect("three failures");
        let survived = &records[..third_failure];
        let rec = recovery::recover(survived).pop().expect("unfinished run");
        let j = journal_of(survived);
        let m = failing(j.clone()).await;
        let wf = workflow(&m, FLAKY);
        let o = within(
            60,
            "the resumed run",
            m.resume_run(wf, rec, RunOptions::default()),
        )
        .await
        .expect("resume");
        assert!(matches!(o.status, RunStatus::Failed { .. }), "{o:?}");
        let after = j.read_after(survived.len() as u64);
        let leased = after
            .iter()
            .filter(|r| matches!(r.event, Event::LeaseGranted { .. }))
            .count();
        assert_eq!(leased, 0, "no attempt is left to lease");
        m.shutdown().await;
    })
}

#[test]
fn a_resumed_runs_outcome_covers_the_steps_before_the_crash() {
    paused(async {
        let original = Arc::new(MemoryJournal::default());
        let m = builder()
            .journal(original.clone())
            .agent(echo("echo"))
            .start()
            .await
            .expect("runtime starts");
        let wf = workflow(&m, TWO_STEPS);
        let full = within(60, "the original run", m.run_workflow(wf, json!({"n": 1})))
            .await
            .expect("run");
        assert!(full.is_completed(), "{full:?}");
        m.shutdown().await;
        let records = original.read_after(0);
        // Crash right after step `a` completed.
        let cut = records
            .iter()
            .position(|r| matches!(&r.event, Event::StepCompleted { step, .. } if step == "a"))
            .map(|i| i + 1)
            .expect("step a completed");
        let survived = &records[..cut];
        let rec = recovery::recover(survived).pop().expect("unfinished run");
        let m = builder()
            .journal(journal_of(survived))
            .agent(echo("echo"))
            .start()
            .await
            .expect("runtime starts");
        let wf = workflow(&m, TWO_STEPS);
        let o = within(
            60,
            "the resumed run",
            m.resume_run(wf, rec, RunOptions::default()),
        )
        .await
        .expect("resume");
        assert!(o.is_completed(), "{o:?}");
        let steps: Vec<&str> = o.steps.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(
            steps,
            ["a", "b"],
            "both steps, the one before the crash included"
        );
        assert_eq!(o.handoffs, full.handoffs);
        assert_eq!(o.outputs, full.outputs);
        m.shutdown().await;
    })
}

#[test]
fn interrupted_attempts_are_refunded_at_most_the_bound_per_task() {
    paused(async {
        let original = Arc::new(MemoryJournal::default());
        let m = failing(original.clone()).await;
        let wf = workflow(&m, FLAKY);
        within(60, "the original run", m.run_workflow(wf, json!({"n": 1})))
            .await
            .expect("run");
        m.shutdown().await;
        let records = original.read_after(0);
        // The process "dies" during the first attempt: its lease has no end.
        let first_lease = records
            .iter()
            .position(|r| matches!(r.event, Event::LeaseGranted { .. }))
            .expect("a lease");
        let (task, agent, epoch) = match &records[first_lease].event {
            Event::LeaseGranted {
                task, agent, epoch, ..
            } => (*task, agent.clone(), *epoch),
            _ => unreachable!("found as a lease"),
        };
        let mut survived = records[..=first_lease].to_vec();
        // Earlier restarts had already refunded as many interrupted attempts as a task gets.
        let at = survived.last().map_or(0, |r| r.at_ms);
        for k in 0..recovery::MAX_REFUNDED_INTERRUPTIONS {
            let e = epoch + 100 + u64::from(k);
            for event in [
                Event::LeaseGranted {
                    task,
                    agent: agent.clone(),
                    epoch: e,
                    attempt: 1,
                    envelope: Uuid::now_v7(),
                    routed: None,
                },
                Event::AttemptInterrupted {
                    task,
                    agent: agent.clone(),
                    epoch: e,
                    refunded: true,
                },
            ] {
                survived.push(Record {
                    seq: survived.len() as u64 + 1,
                    at_ms: at,
                    event,
                });
            }
        }
        let rec = recovery::recover(&survived).pop().expect("unfinished run");
        match rec.at.as_ref().and_then(|p| p.tasks.get("a")) {
            Some(recovery::StepProgress::InFlight(p)) => {
                assert_eq!(p.interrupted, vec![(epoch, agent.to_string())]);
                assert_eq!(p.refunded, recovery::MAX_REFUNDED_INTERRUPTIONS);
            }
            other => panic!("step a should be in flight, got {other:?}"),
        }
        let j = journal_of(&survived);
        let m = failing(j.clone()).await;
        let wf = workflow(&m, FLAKY);
        let o = within(
            60,
            "the resumed run",
            m.resume_run(wf, rec, RunOptions::default()),
        )
        .await
        .expect("resume");
        assert!(matches!(o.status, RunStatus::Failed { .. }), "{o:?}");
        let after = j.read_after(survived.len() as u64);
        let interrupted: Vec<(u64, bool)> = after
            .iter()
            .filter_map(|r| match &r.event {
                Event::AttemptInterrupted {
                    task: t,
                    epoch,
                    refunded,
                    ..
                } if *t == task => Some((*epoch, *refunded)),
                _ => None,
            })
            .collect();
        assert_eq!(
            interrupted,
            vec![(epoch, false)],
            "journaled interrupted, and counted: the bound is reached"
        );
        // Four leases, three of them refunded: one attempt spent, two left of three.
        assert_eq!(leases_of(&after, task), 2, "two attempts left to lease");
        m.shutdown().await;
    })
}
