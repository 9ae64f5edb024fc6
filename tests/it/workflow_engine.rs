//! The workflow engine, in process on virtual time: transitions follow the CEL rules,
//! loops stop at their bound and carry the failures back, parallel branches run at once
//! and the join sees them all, gates wait for a human, and every step's task carries the
//! run id as its correlation id.

use crate::support::common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{paused, within};
use muster::WorkflowExt;
use muster::journal::{HeldJournal, Journal, MemoryJournal, Record};
use muster::workflow::engine::RunOptions;
use muster::workflow::{Decision, RunStatus, Workflow};
use muster::{AgentDef, AgentError, CapabilitySpec, Event, Muster, MusterBuilder};
use serde_json::{Value, json};
use uuid::Uuid;

fn builder() -> MusterBuilder {
    Muster::builder().schema("any", json!({"type": "object"}))
}

fn cap(name: &str) -> CapabilitySpec {
    CapabilitySpec::new(name, "any", "any")
}

fn echo(name: &str, capability: &str) -> AgentDef {
    AgentDef::function(name, |v: Value, _| async move { Ok(v) }).capability(cap(capability))
}

fn parse(m: &Muster, text: &str) -> Arc<Workflow> {
    match Workflow::parse(text, Path::new("test.toml"), &m.schemas()) {
        Ok(wf) => Arc::new(wf),
        Err(e) => panic!("workflow does not parse: {e:?}"),
    }
}

fn visited(o: &muster::workflow::RunOutcome) -> Vec<String> {
    o.steps.iter().map(|s| s.step.clone()).collect()
}

#[test]
fn transitions_are_taken_exactly_as_the_rules_say() {
    paused(async {
        let m = builder()
            .agent(echo("scorer", "score"))
            .agent(echo("marker", "mark"))
            .start()
            .await
            .unwrap();
        let wf = parse(
            &m,
            r#"
name = "route"
input = "any"
start = "score"
[steps.score]
capability = "score"
timeout = "5s"
attempts = 1
on_exhausted = "fail"
next = [
  { when = "steps.score.output.n > 10", goto = "high" },
  { when = "steps.score.output.n > 5", goto = "mid" },
  { otherwise = true, goto = "low" },
]
[steps.high]
capability = "mark"
next = "done"
[steps.mid]
capability = "mark"
next = "done"
[steps.low]
capability = "mark"
next = "done"
[steps.done]
terminal = "done"
"#,
        );
        for (n, expect) in [(20, "high"), (7, "mid"), (1, "low"), (10, "mid")] {
            let o = within(30, "run", m.run_workflow(wf.clone(), json!({"n": n})))
                .await
                .unwrap();
            assert_eq!(o.status, RunStatus::Completed);
            assert_eq!(visited(&o), vec!["score", expect], "n = {n}");
        }
        m.shutdown().await;
    });
}

const LOOP: &str = r#"
name = "loop"
input = "any"
start = "implement"
[steps.implement]
capability = "write"
input = "{'feedback': has(steps.check) ? steps.check.output.failures : []}"
timeout = "5s"
attempts = 1
on_exhausted = "fail"
next = "check"
[steps.check]
capability = "check"
input = "{'round': steps.implement.output.round}"
timeout = "5s"
attempts = 1
on_exhausted = "fail"
next = [
  { when = "size(steps.check.output.failures) == 0", goto = "done" },
  { otherwise = true, goto = "implement", max_visits = 3 },
  { otherwise = true, goto = "gave_up" },
]
[steps.done]
terminal = "done"
[steps.gave_up]
terminal = "fail"
"#;

#[test]
fn a_loop_stops_at_max_visits_and_carries_the_failures_back() {
    paused(async {
        let inputs: Arc<Mutex<Vec<Value>>> = Arc::default();
        let seen = inputs.clone();
        let m = builder()
            .agent(
                AgentDef::function("writer", move |v: Value, _| {
                    let seen = seen.clone();
                    async move {
                        let mut s = seen.lock().unwrap();
                        s.push(v);
                        Ok(json!({"round": s.len()}))
                    }
                })
                .capability(cap("write")),
            )
            .agent(
                AgentDef::function("checker", |v: Value, _| async move {
                    let round = v["round"].as_i64().unwrap_or(0);
                    Ok(json!({"failures": [format!("round {round} failed")]}))
                })
                .capability(cap("check")),
            )
            .start()
            .await
            .unwrap();
        let o = within(60, "run", m.run_workflow(parse(&m, LOOP), json!({})))
            .await
            .unwrap();
        assert_eq!(
            visited(&o),
            vec![
                "implement",
                "check",
                "implement",
                "check",
                "implement",
                "check"
            ]
        );
        assert_eq!(
            o.status,
            RunStatus::Failed {
                step: "gave_up".into(),
                reason: "reached fail terminal `gave_up` from step `check`".into()
            },
            "after the third implement visit the loop rule is skipped: the exhaustion route"
        );
        let inputs = inputs.lock().unwrap().clone();
        assert_eq!(inputs[0], json!({"feedback": []}));
        assert_eq!(inputs[1], json!({"feedback": ["round 1 failed"]}));
        assert_eq!(inputs[2], json!({"feedback": ["round 2 failed"]}));
        m.shutdown().await;
    });
}

#[test]
fn a_loop_that_passes_leaves_early() {
    paused(async {
        let m = builder()
            .agent(
                AgentDef::function(
                    "writer",
                    |_v: Value, _| async move { Ok(json!({"round": 1})) },
                )
                .capability(cap("write")),
            )
            .agent(
                AgentDef::function("checker", |_v: Value, _| async move {
                    Ok(json!({"failures": []}))
                })
                .capability(cap("check")),
            )
            .start()
            .await
            .unwrap();
        let o = within(60, "run", m.run_workflow(parse(&m, LOOP), json!({})))
            .await
            .unwrap();
        assert_eq!(o.status, RunStatus::Completed);
        assert_eq!(visited(&o), vec!["implement", "check"]);
        m.shutdown().await;
    });
}

const FAN: &str = r#"
name = "fan"
input = "any"
start = "fan"
[steps.fan]
parallel = ["a", "b", "c"]
OPTIONAL
next = [
  { when = "steps.a.output.n + steps.b.output.n + steps.c.output.n == 6", goto = "done" },
  { otherwise = true, goto = "wrong" },
]
[steps.a]
capability = "slow"
input = "{'n': 1}"
timeout = "60s"
attempts = 1
on_exhausted = "fail"
[steps.b]
capability = "slow"
input = "{'n': 2}"
timeout = "60s"
attempts = 1
on_exhausted = "fail"
[steps.c]
capability = "CAP_C"
input = "{'n': 3}"
timeout = "60s"
attempts = 2
on_exhausted = "fail"
[steps.done]
terminal = "done"
[steps.wrong]
terminal = "fail"
"#;

fn slow() -> AgentDef {
    AgentDef::function("slow", |v: Value, _| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(v)
    })
    .capability(cap("slow"))
    .replicas(3)
}

#[test]
fn parallel_branches_run_at_once_and_the_join_sees_every_output() {
    paused(async {
        let m = builder().agent(slow()).start().await.unwrap();
        let wf = parse(&m, &FAN.replace("OPTIONAL", "").replace("CAP_C", "slow"));
        let t0 = tokio::time::Instant::now();
        let o = within(60, "run", m.run_workflow(wf, json!({})))
            .await
            .unwrap();
        let took = t0.elapsed();
        assert_eq!(o.status, RunStatus::Completed, "{o:?}");
        assert_eq!(o.outputs["a"], json!({"n": 1}));
        assert_eq!(o.outputs["b"], json!({"n": 2}));
        assert_eq!(o.outputs["c"], json!({"n": 3}));
        // Virtual time: three 10 s branches at once take 10 s, not 30 s.
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_secs(20),
            "{took:?}"
        );
        m.shutdown().await;
    });
}

fn broken() -> AgentDef {
    AgentDef::function("broken", |_v: Value, _| async move {
        Err::<Value, _>(AgentError::new("cannot do it"))
    })
    .capability(cap("broken"))
    .replicas(2)
}

#[test]
fn a_failed_branch_fails_the_join() {
    paused(async {
        let m = builder()
            .agent(slow())
            .agent(broken())
            .start()
            .await
            .unwrap();
        let wf = parse(&m, &FAN.replace("OPTIONAL", "").replace("CAP_C", "broken"));
        let o = within(120, "run", m.run_workflow(wf, json!({})))
            .await
            .unwrap();
        match &o.status {
            RunStatus::Failed { step, reason } => {
                assert_eq!(step, "c");
                assert!(reason.contains("branch failed the join"), "{reason}");
            }
            other => panic!("expected the join to fail, got {other:?}"),
        }
        let c = o.steps.iter().find(|s| s.step == "c").unwrap();
        assert_eq!(c.outcome, "escalated");
        assert_eq!(c.attempts, 2, "its attempt budget was spent first");
        m.shutdown().await;
    });
}

#[test]
fn an_optional_branch_may_fail_without_failing_the_join() {
    paused(async {
        let m = builder()
            .agent(slow())
            .agent(broken())
            .start()
            .await
            .unwrap();
        let text = FAN
            .replace("OPTIONAL", "optional = [\"c\"]")
            .replace("CAP_C", "broken")
            .replace(
                "steps.a.output.n + steps.b.output.n + steps.c.output.n == 6",
                "steps.a.output.n + steps.b.output.n == 3 && steps.c.output == null",
            );
        let o = within(120, "run", m.run_workflow(parse(&m, &text), json!({})))
            .await
            .unwrap();
        assert_eq!(o.status, RunStatus::Completed, "{o:?}");
        m.shutdown().await;
    });
}

const GATED: &str = r#"
name = "gated"
input = "any"
start = "ask"
[steps.ask]
gate = "Ship it?"
on_approve = "ship"
[steps.ship]
capability = "ship"
timeout = "5s"
attempts = 1
on_exhausted = "fail"
next = "done"
[steps.done]
terminal = "done"
"#;

/// Starts a gated run in the background, waits until it waits at `ask`, decides, and
/// returns the outcome.
async fn gated(decision: Decision) -> muster::workflow::RunOutcome {
    let m = builder()
        .agent(echo("shipper", "ship"))
        .start()
        .await
        .unwrap();
    let wf = parse(&m, GATED);
    let id = Uuid::from_u128(0x5eed);
    let runner = m.clone();
    let run = actix::spawn(async move {
        let opts = RunOptions {
            run_id: Some(id),
            ..RunOptions::default()
        };
        runner.run_workflow_with(wf, json!({}), opts).await
    });
    within(10, "the gate", async {
        while !m.is_waiting(id, "ask") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // It stays there: an hour of virtual time later it still waits.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(m.is_waiting(id, "ask"));
    assert!(m.approve(id, "nope", decision.clone()).is_err());
    m.approve(id, "ask", decision).unwrap();
    let o = within(30, "the run", run).await.unwrap().unwrap();
    assert!(!m.is_waiting(id, "ask"));
    m.shutdown().await;
    o
}

#[test]
fn a_gate_waits_and_resumes_on_approval() {
    paused(async {
        let o = gated(Decision::Approve {
            reason: "looks good".into(),
        })
        .await;
        assert_eq!(o.status, RunStatus::Completed);
        assert_eq!(visited(&o), vec!["ship"]);
    });
}

#[test]
fn a_gate_rejection_ends_the_run_failed() {
    paused(async {
        let o = gated(Decision::Reject {
            reason: "too risky".into(),
        })
        .await;
        match &o.status {
            RunStatus::Failed { step, reason } => {
                assert_eq!(step, "ask");
                assert!(reason.contains("too risky"), "{reason}");
            }
            other => panic!("expected failed, got {other:?}"),
        }
        assert!(o.steps.is_empty(), "nothing ran after the rejection");
    });
}

#[test]
fn step_tasks_carry_the_run_id_as_correlation_id() {
    paused(async {
        let m = builder()
            .agent(
                AgentDef::function(
                    "writer",
                    |_v: Value, _| async move { Ok(json!({"round": 1})) },
                )
                .capability(cap("write")),
            )
            .agent(
                AgentDef::function("checker", |_v: Value, _| async move {
                    Ok(json!({"failures": []}))
                })
                .capability(cap("check")),
            )
            .start()
            .await
            .unwrap();
        let o = within(60, "run", m.run_workflow(parse(&m, LOOP), json!({})))
            .await
            .unwrap();
        assert_eq!(o.status, RunStatus::Completed);
        let records = m.journal().read_after(0);
        let tasks: Vec<(Uuid, Uuid)> = records
            .iter()
            .filter_map(|r| match &r.event {
                Event::TaskSubmitted {
                    task, correlation, ..
                } => Some((*task, *correlation)),
                _ => None,
            })
            .collect();
        assert_eq!(tasks.len(), 2, "one task per step");
        assert!(tasks.iter().all(|(_, c)| *c == o.run), "{tasks:?}");
        let leased: Vec<Uuid> = records
            .iter()
            .filter_map(|r| match &r.event {
                Event::LeaseGranted { task, .. } => Some(*task),
                _ => None,
            })
            .collect();
        for (t, _) in &tasks {
            assert!(leased.contains(t), "task {t} was leased");
        }
        // Each step's envelope is caused by the envelope that carried the step before it.
        let routed: Vec<(Uuid, Option<Uuid>)> = records
            .iter()
            .filter_map(|r| match &r.event {
                Event::LeaseGranted {
                    routed: Some(envelope),
                    ..
                } => Some((envelope.id, envelope.causation_id)),
                _ => None,
            })
            .collect();
        assert_eq!(routed.len(), 2, "{routed:?}");
        assert_eq!(routed[0].1, None, "the first step has no cause in the run");
        assert_eq!(
            routed[1].1,
            Some(routed[0].0),
            "the second is caused by the first"
        );
        m.shutdown().await;
    });
}

const SCOPED: &str = r#"
name = "scoped"
input = "any"
start = "both"
[steps.both]
parallel = ["first", "second"]
next = "done"
[steps.first]
capability = "slow"
input = "{'module': 'user', 'n': 1}"
timeout = "30s"
attempts = 1
on_exhausted = "fail"
scope = "{'write': ['src/' + input.module + '/**'], 'read': ['spec/**']}"
[steps.second]
capability = "slow"
input = "{'module': 'MODULE', 'n': 2}"
timeout = "30s"
attempts = 1
on_exhausted = "fail"
ON_CONFLICT
scope = "{'write': ['src/' + input.module + '/**'], 'read': ['spec/**']}"
[steps.done]
terminal = "done"
"#;

#[test]
fn branches_with_overlapping_rendered_scopes_run_one_after_the_other() {
    paused(async {
        let m = builder().agent(slow()).start().await.unwrap();
        let wf = parse(
            &m,
            &SCOPED.replace("MODULE", "user").replace("ON_CONFLICT", ""),
        );
        let t0 = tokio::time::Instant::now();
        let o = within(120, "run", m.run_workflow(wf, json!({})))
            .await
            .unwrap();
        assert_eq!(o.status, RunStatus::Completed, "{o:?}");
        // Both write src/user/**: the second waited for the first's scope (10 s + 10 s).
        assert!(
            t0.elapsed() >= Duration::from_secs(20),
            "{:?}",
            t0.elapsed()
        );
        let records = m.journal().read_after(0);
        assert!(records.iter().any(|r| r.event.kind() == "scope_waiting"));

        // Rendered from different inputs, the scopes are disjoint: the branches run at once.
        let wf = parse(
            &m,
            &SCOPED
                .replace("MODULE", "billing")
                .replace("ON_CONFLICT", ""),
        );
        let t0 = tokio::time::Instant::now();
        let o = within(120, "run", m.run_workflow(wf, json!({})))
            .await
            .unwrap();
        assert_eq!(o.status, RunStatus::Completed, "{o:?}");
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());

        // on_conflict = "fail": the second branch fails at once, naming the overlap.
        let wf = parse(
            &m,
            &SCOPED
                .replace("MODULE", "user")
                .replace("ON_CONFLICT", "on_conflict = \"fail\""),
        );
        let o = within(120, "run", m.run_workflow(wf, json!({})))
            .await
            .unwrap();
        assert!(matches!(o.status, RunStatus::Failed { .. }), "{o:?}");
        let reasons: Vec<String> = m
            .journal()
            .read_after(0)
            .into_iter()
            .filter_map(|r| match r.event {
                Event::StepFailed { step, reason, .. } if step == "second" => Some(reason),
                _ => None,
            })
            .collect();
        assert!(
            reasons.iter().any(|r| r.contains("src/user/**")),
            "{reasons:?}"
        );
        m.shutdown().await;
    });
}

/// Runs the two-step workflow `pair` (step b's input maps `steps.a.output`) to its end;
/// returns the runtime and the run's outcome.
async fn ran_pair() -> (Muster, muster::workflow::RunOutcome) {
    let m = builder()
        .agent(echo("first", "one"))
        .agent(echo("second", "two"))
        .start()
        .await
        .unwrap();
    let wf = parse(
        &m,
        r#"
name = "pair"
input = "any"
start = "a"
[steps.a]
capability = "one"
timeout = "5s"
next = "b"
[steps.b]
capability = "two"
input = "steps.a.output"
timeout = "5s"
next = "done"
[steps.done]
terminal = "done"
"#,
    );
    let out = within(5, "run", m.run_workflow(wf, json!({"k": [1, 2]})))
        .await
        .unwrap();
    assert!(out.is_completed(), "{:?}", out.status);
    (m, out)
}

/// A step's input is one value: the `task_submitted` record and the envelope of every
/// lease hold the same allocation (it is shared, not copied per record).
#[test]
fn a_steps_input_is_shared_by_its_journal_record_and_its_envelopes() {
    paused(async {
        let (m, out) = ran_pair().await;
        assert_eq!(out.outputs["b"], json!({"k": [1, 2]}));
        let records = m.journal().read_after(0);
        let mut shared = 0;
        for r in &records {
            if let Event::TaskSubmitted { task, input, .. } = &r.event {
                let routed = records.iter().find_map(|r| match &r.event {
                    Event::LeaseGranted {
                        task: t,
                        routed: Some(envelope),
                        ..
                    } if t == task => Some(envelope.payload.clone()),
                    _ => None,
                });
                let routed = routed.expect("every task was routed");
                assert!(
                    Arc::ptr_eq(input, &routed),
                    "task {task}: the envelope holds a copy"
                );
                shared += 1;
            }
        }
        assert_eq!(shared, 2);
    });
}

/// A step's accepted output is one value: the task's record (the outcome the engine reads),
/// its `result_accepted` record, the step's `step_completed` record and the input of the
/// next step that maps `steps.<name>.output` all hold the same allocation (none copies it).
#[test]
fn a_steps_output_is_shared_by_its_journal_records_and_the_next_steps_input() {
    paused(async {
        let (m, _) = ran_pair().await;
        let records = m.journal().read_after(0);
        let accepted = |task: Uuid| {
            records.iter().find_map(|r| match &r.event {
                Event::ResultAccepted {
                    task: t, output, ..
                } if *t == task => Some(output.clone()),
                _ => None,
            })
        };
        let submitted = |step: &str| {
            records.iter().find_map(|r| match &r.event {
                Event::TaskSubmitted {
                    task,
                    sender,
                    input,
                    ..
                } if sender == &format!("pair/{step}") => Some((*task, input.clone())),
                _ => None,
            })
        };
        let mut completed = 0;
        for r in &records {
            if let Event::StepCompleted { task, output, .. } = &r.event {
                let accepted = accepted(*task).expect("a completed step's result was accepted");
                assert!(
                    Arc::ptr_eq(output, &accepted),
                    "task {task}: step_completed holds a copy of the accepted output"
                );
                completed += 1;
            }
        }
        assert_eq!(completed, 2);
        let (a, _) = submitted("a").expect("step a's task was submitted");
        let (_, b_input) = submitted("b").expect("step b's task was submitted");
        let a_output = accepted(a).expect("step a's result was accepted");
        assert!(
            Arc::ptr_eq(&b_input, &a_output),
            "step b's input (steps.a.output) is a copy of a's accepted output"
        );
    });
}

/// A delegated task's outcome holds the very output its `result_accepted` record holds.
#[test]
fn a_tasks_outcome_output_is_the_journals_accepted_output() {
    paused(async {
        let m = builder().agent(echo("first", "one")).start().await.unwrap();
        let t = muster::Task::new("one", json!({"k": "v"}));
        let outcome = within(5, "delegate", m.delegate(t)).await.unwrap();
        assert!(outcome.is_completed(), "{:?}", outcome.status);
        let output = outcome.output.expect("a completed task has an output");
        let journaled = m
            .journal()
            .read_after(0)
            .into_iter()
            .find_map(|r| match r.event {
                Event::ResultAccepted { task, output, .. } if task == outcome.id => Some(output),
                _ => None,
            });
        let journaled = journaled.expect("the result_accepted record");
        assert!(
            Arc::ptr_eq(&output, &journaled),
            "the outcome holds a copy of the journaled output"
        );
    });
}

/// A runtime journaling to `journal`, with an echo agent per (name, capability).
async fn held(journal: &Arc<HeldJournal>, agents: &[(&str, &str)]) -> Muster {
    let mut b = builder().journal(journal.clone());
    for (name, capability) in agents {
        b = b.agent(echo(name, capability));
    }
    b.start().await.unwrap()
}

#[test]
fn a_run_waits_for_its_own_records_not_for_later_records_of_other_runs() {
    paused(async {
        // Each record written as appended, another run's unwritten one right behind it.
        let journal = Arc::new(HeldJournal::racing());
        let m = held(&journal, &[("writer", "write"), ("checker", "check")]).await;
        let wf = parse(
            &m,
            r#"
name = "two"
input = "any"
start = "write"
[steps.write]
capability = "write"
timeout = "5s"
attempts = 1
on_exhausted = "fail"
next = "check"
[steps.check]
capability = "check"
timeout = "5s"
attempts = 1
on_exhausted = "fail"
next = "done"
[steps.done]
terminal = "done"
"#,
        );
        // Before, each step waited for the journal's latest record, which is never
        // written here: the run hung at its first step.
        let o = within(30, "the run", m.run_workflow(wf, json!({"x": 1})))
            .await
            .unwrap();
        assert_eq!(o.status, RunStatus::Completed);
        assert_eq!(visited(&o), vec!["write", "check"]);
        let w = journal.written();
        assert!(
            !w.covers(journal.len()),
            "the journal's latest record is unwritten"
        );
        m.shutdown().await;
    });
}

/// A one-step run on a journal that writes nothing until told: its start is written, and
/// once it has journaled its end (without its last step's record being written), `finish`
/// decides what the journal does; returns the run's status.
async fn a_run_ended_before_its_last_step_is_written(finish: fn(&HeldJournal)) -> RunStatus {
    let journal = Arc::new(HeldJournal::new());
    let m = held(&journal, &[("writer", "write")]).await;
    let wf = parse(
        &m,
        &crate::support::cast::one_step_workflow("one", "any", "write", "5s", 1),
    );
    let run = actix::spawn({
        let m = m.clone();
        async move { m.run_workflow(wf, json!({"x": 1})).await }
    });
    let seq_of = |kind: &'static str| {
        let j = journal.clone();
        async move {
            loop {
                let found = j
                    .memory()
                    .read_after(0)
                    .into_iter()
                    .find(|r| r.event.kind() == kind);
                if let Some(r) = found {
                    return r.seq;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    // The run is announced once its start is written.
    let started = within(30, "run_started", seq_of("run_started")).await;
    journal.write_up_to(started);
    let completed = within(30, "step_completed", seq_of("step_completed")).await;
    // Before, the run waited here for `step_completed` to be written, and journaled its
    // end only after.
    let ended = within(
        30,
        "run_ended before step_completed is written",
        seq_of("run_ended"),
    )
    .await;
    assert!(ended > completed);
    assert!(
        !journal.written().covers(completed),
        "nothing written past the start"
    );
    assert!(
        !run.is_finished(),
        "the outcome waits for the run's records"
    );
    finish(&journal);
    let o = within(30, "the run", run).await.unwrap().unwrap();
    m.shutdown().await;
    o.status
}

/// A run whose last task step completed goes on to its terminal step without waiting for
/// the step's record alone: nothing is acted on before the run's end, and the end waits for
/// every record of the run. On a durable journal that is one commit instead of two.
#[test]
fn a_run_that_ends_after_its_last_step_waits_once_for_its_records() {
    paused(async {
        let status = a_run_ended_before_its_last_step_is_written(|j| j.write_up_to(j.len())).await;
        assert_eq!(status, RunStatus::Completed);
    });
}

/// The same run, its journal stopping before its last records are written: it is not
/// reported completed (its last step's own wait would have failed it).
#[test]
fn a_run_whose_journal_stops_before_its_end_is_written_does_not_complete() {
    paused(async {
        let status = a_run_ended_before_its_last_step_is_written(HeldJournal::stop).await;
        match status {
            RunStatus::Failed { reason, .. } => {
                assert!(reason.contains("journal stopped"), "{reason}")
            }
            other => panic!("the run ended {other:?}"),
        }
    });
}

/// A resumed run that waits at a gate it already announced journals nothing before it
/// waits for its own records to be written: it must not wait for other runs' records.
#[test]
fn a_resumed_run_at_its_gate_does_not_wait_for_other_runs_records() {
    paused(async {
        // Each record written as appended, another run's unwritten one right behind it.
        let journal = Arc::new(HeldJournal::racing());
        let m = held(&journal, &[("shipper", "ship")]).await;
        let wf = parse(&m, GATED);
        let stop = || RunOptions {
            stop_at_gates: true,
            ..RunOptions::default()
        };
        let o = within(
            30,
            "the run to its gate",
            m.run_workflow_with(wf.clone(), json!({}), stop()),
        )
        .await
        .unwrap();
        assert!(
            matches!(o.status, RunStatus::Waiting { .. }),
            "{:?}",
            o.status
        );
        let rec = muster::workflow::recovery::runs(&journal.read_after(0))
            .into_iter()
            .next()
            .expect("the run, rebuilt from its records");
        // Before, the resumed run started out waiting for the journal's latest record,
        // which is never written here.
        let o = within(30, "the resumed run", m.resume_run(wf, rec, stop()))
            .await
            .unwrap();
        assert!(
            matches!(o.status, RunStatus::Waiting { .. }),
            "{:?}",
            o.status
        );
        m.shutdown().await;
    });
}

/// A memory journal that remembers the kinds of the records of each group appended to it.
#[derive(Debug, Default)]
struct Groups {
    memory: MemoryJournal,
    groups: Mutex<Vec<Vec<&'static str>>>,
}

impl Journal for Groups {
    fn append(&self, at_ms: u64, event: Event) -> u64 {
        self.memory.append(at_ms, event)
    }
    fn append_group(&self, at_ms: u64, events: Vec<Event>) -> u64 {
        let kinds = events.iter().map(|e| e.kind()).collect();
        self.groups.lock().unwrap().push(kinds);
        self.memory.append_group(at_ms, events)
    }
    fn read_after(&self, after: u64) -> Vec<Record> {
        self.memory.read_after(after)
    }
    fn len(&self) -> u64 {
        self.memory.len()
    }
}

/// A retry's state is the one a restart would rebuild from the retry's records: a step it
/// carries from the failed run reads the same in the live retry as in its journal. Its
/// first records, and the failed run's `run_retried`, are appended as one group (one
/// commit: a crash leaves all of them or none).
#[test]
fn a_retry_carries_its_steps_as_a_restart_would_rebuild_them() {
    paused(async {
        let journal = Arc::new(Groups::default());
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = calls.clone();
        let fragile = AgentDef::function("fragile", move |v: Value, _| {
            let first = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            async move {
                if first {
                    Err(AgentError::new("broken the first time"))
                } else {
                    Ok(v)
                }
            }
        })
        .capability(cap("fragile"));
        let m = builder()
            .journal(journal.clone())
            .agent(echo("preparer", "prep"))
            .agent(fragile)
            .start()
            .await
            .unwrap();
        let wf = parse(
            &m,
            r#"
name = "retry-me"
input = "any"
start = "prep"
[steps.prep]
capability = "prep"
next = "fragile"
[steps.fragile]
capability = "fragile"
attempts = 1
on_exhausted = "fail"
next = "done"
[steps.done]
terminal = "done"
"#,
        );
        let failed = within(30, "the run", m.run_workflow(wf.clone(), json!({"n": 1})))
            .await
            .unwrap();
        assert!(
            matches!(failed.status, RunStatus::Failed { .. }),
            "{:?}",
            failed.status
        );
        let plan =
            muster::workflow::retry::plan(&wf, &m.journal().records_of(failed.run), failed.run)
                .unwrap();
        assert_eq!(plan.step, "fragile");
        let retry = within(
            30,
            "the retry",
            m.retry_run(wf, plan, RunOptions::default()),
        )
        .await
        .unwrap();
        assert_eq!(retry.status, RunStatus::Completed, "{:?}", retry.status);
        assert_eq!(
            *journal.groups.lock().unwrap(),
            [[
                "run_started",
                "retry_started",
                "step_completed",
                "run_retried"
            ]]
        );
        assert_eq!(visited(&retry), ["prep", "fragile"]);
        let rebuilt = muster::workflow::recovery::runs(&m.journal().records_of(retry.run))
            .into_iter()
            .find(|r| r.run == retry.run)
            .expect("the retry, rebuilt from its records");
        // Before, the live retry counted the failed run's lease and owner for `prep`
        // while its records (what a restart reads) do not hold them.
        assert_eq!(retry.steps[0], rebuilt.summaries[0]);
        assert_eq!(retry.steps[0].attempts, 0);
        // Not the time since the Unix epoch, as when the task's submission was not read.
        assert_eq!(retry.steps[0].duration_ms, 0);
        assert!(
            !retry.owners.iter().any(|o| o.starts_with("preparer")),
            "{:?}",
            retry.owners
        );
        m.shutdown().await;
    });
}
