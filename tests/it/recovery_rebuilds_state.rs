//! Crash recovery rebuilds a run's exact state from the journal, and finishing the run
//! from there loses no step and accepts no result twice (G1, G2).
//!
//! A complete run of a workflow (task step, parallel join, gate, task step) is journaled
//! once. Every prefix of that journal is what a process killed at that moment leaves
//! behind: before a lease, during one, after a result before the next step, at the gate,
//! inside the join. For chosen prefixes the recovered state is checked field by field; for
//! every prefix a fresh runtime finishes the run, and its journal then holds exactly one
//! `step_completed` per step visit and one `result_accepted` per task. A result carrying
//! the pre-crash epoch, delivered after recovery, is fenced as `result_stale`.

use crate::support::common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{paused, within};
use muster::WorkflowExt;
use muster::journal::{Event, Journal, MemoryJournal, Record};
use muster::workflow::engine::RunOptions;
use muster::workflow::recovery::{self, PendingTask, RecoveredRun, StepProgress};
use muster::workflow::{RunStatus, Workflow};
use muster::{AgentDef, CapabilitySpec, Muster};
use serde_json::{Value, json};
use uuid::Uuid;

const WORKFLOW: &str = r#"
name = "flow"
input = "obj"
start = "a"

[steps.a]
capability = "work"
timeout = "10s"
attempts = 2
on_exhausted = "fail"
next = "checks"

[steps.checks]
parallel = ["b", "c"]
next = "ask"

[steps.b]
capability = "work"
input = "{'from': 'b', 'a': steps.a.output}"
timeout = "10s"
attempts = 2
on_exhausted = "fail"

[steps.c]
capability = "work"
input = "{'from': 'c', 'a': steps.a.output}"
timeout = "10s"
attempts = 2
on_exhausted = "fail"

[steps.ask]
gate = "Go on?"
on_approve = "z"
on_reject = "stop"

[steps.z]
capability = "work"
input = "{'from': 'z', 'b': steps.b.output, 'c': steps.c.output}"
timeout = "10s"
attempts = 2
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"

[steps.stop]
terminal = "fail"
"#;

/// A worker that answers `{"got": input}`; while `hold` is set it never answers.
fn worker(hold: Arc<AtomicBool>) -> AgentDef {
    AgentDef::function("worker", move |input: Value, _ctx| {
        let hold = hold.clone();
        async move {
            while hold.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(json!({"got": input}))
        }
    })
    .capability(CapabilitySpec::new("work", "obj", "obj"))
    .replicas(2)
}

async fn runtime(journal: Arc<dyn Journal>, hold: Arc<AtomicBool>) -> Muster {
    Muster::builder()
        .journal(journal)
        .schema("obj", json!({"type": "object"}))
        .agent(worker(hold))
        .start()
        .await
        .expect("runtime starts")
}

fn load(dir: &std::path::Path, m: &Muster) -> Arc<Workflow> {
    let path = dir.join("flow.toml");
    std::fs::write(&path, WORKFLOW).expect("write workflow");
    Arc::new(Workflow::load(&path, &m.schemas()).expect("workflow loads"))
}

/// The journal of one complete run (approved at the gate), and the run id.
fn complete_run(dir: &std::path::Path) -> (Vec<Record>, Uuid) {
    paused(async {
        let j = Arc::new(MemoryJournal::default());
        let m = runtime(j.clone(), Arc::new(AtomicBool::new(false))).await;
        let wf = load(dir, &m);
        let run = Uuid::now_v7();
        let approver = {
            let m = m.clone();
            actix::spawn(async move {
                while !m.is_waiting(run, "ask") {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                m.approve(
                    run,
                    "ask",
                    muster::workflow::Decision::Approve {
                        reason: "fine".into(),
                    },
                )
                .expect("approve");
            })
        };
        let opts = RunOptions {
            run_id: Some(run),
            ..RunOptions::default()
        };
        let o = within(
            60,
            "the complete run",
            m.run_workflow_with(wf, json!({"n": 1}), opts),
        )
        .await
        .expect("run");
        assert_eq!(o.status, RunStatus::Completed, "{o:?}");
        within(5, "the approver", approver).await.expect("approver");
        m.shutdown().await;
        (j.read_after(0), run)
    })
}

/// A journal holding exactly `records` (what survived the crash).
fn journal_of(records: &[Record]) -> Arc<MemoryJournal> {
    let j = Arc::new(MemoryJournal::default());
    for r in records {
        let seq = j.append(r.at_ms, r.event.clone());
        assert_eq!(seq, r.seq, "the copy keeps sequence numbers");
    }
    j
}

/// The index just after the first record matching `f`.
fn cut_after(records: &[Record], f: impl Fn(&Event) -> bool) -> usize {
    records
        .iter()
        .position(|r| f(&r.event))
        .map(|i| i + 1)
        .expect("the journal has the event")
}

fn only(runs: Vec<RecoveredRun>) -> RecoveredRun {
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.into_iter().next().expect("one run")
}

/// Task id → step, from `task_submitted` senders.
fn step_tasks(records: &[Record]) -> HashMap<Uuid, String> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::TaskSubmitted { task, sender, .. } => {
                sender.strip_prefix("flow/").map(|s| (*task, s.to_string()))
            }
            _ => None,
        })
        .collect()
}

/// Finishes every unfinished run of `j` in a fresh runtime, approving gates as they come.
fn finish(dir: &std::path::Path, j: Arc<MemoryJournal>) {
    paused(async {
        let m = runtime(j.clone(), Arc::new(AtomicBool::new(false))).await;
        let wf = load(dir, &m);
        for _round in 0..4 {
            let open = recovery::recover(&j.read_after(0));
            if open.is_empty() {
                break;
            }
            for rec in open {
                let run = rec.run;
                let opts = RunOptions {
                    stop_at_gates: true,
                    ..RunOptions::default()
                };
                let o = within(60, "resume", m.resume_run(wf.clone(), rec, opts))
                    .await
                    .expect("resume");
                match o.status {
                    RunStatus::Completed => {}
                    RunStatus::Waiting { gate, .. } => {
                        j.append(
                            0,
                            Event::GateDecided {
                                run,
                                gate,
                                approved: true,
                                reason: "ok".into(),
                            },
                        );
                    }
                    other => panic!("the resumed run did not complete: {other:?}"),
                }
            }
        }
        m.shutdown().await;
    });
}

/// Exactly once: every step visit completed once, every task accepted once, the run ended
/// completed once.
fn assert_exactly_once(records: &[Record], run: Uuid, what: &str) {
    let mut entered: BTreeMap<(String, u32), u32> = BTreeMap::new();
    let mut completed: BTreeMap<String, u32> = BTreeMap::new();
    let mut accepted: HashMap<Uuid, u32> = HashMap::new();
    let mut ended = Vec::new();
    for r in records {
        match &r.event {
            Event::StepEntered {
                run: x,
                step,
                visit,
            } if *x == run => {
                *entered.entry((step.clone(), *visit)).or_default() += 1;
            }
            Event::StepCompleted { run: x, step, .. } if *x == run => {
                *completed.entry(step.clone()).or_default() += 1;
            }
            Event::ResultAccepted { task, .. } => *accepted.entry(*task).or_default() += 1,
            Event::RunEnded { run: x, status, .. } if *x == run => ended.push(status.clone()),
            _ => {}
        }
    }
    assert_eq!(
        ended,
        vec!["completed".to_string()],
        "{what}: one run_ended"
    );
    assert!(
        entered.values().all(|n| *n == 1),
        "{what}: a step visit entered twice: {entered:?}"
    );
    for s in ["a", "b", "c", "z"] {
        assert_eq!(completed.get(s), Some(&1), "{what}: step `{s}` completions");
    }
    let tasks = step_tasks(records);
    for (t, step) in &tasks {
        assert_eq!(
            accepted.get(t),
            Some(&1),
            "{what}: task {t} of step `{step}` accepted once"
        );
    }
    let mut steps: Vec<&String> = tasks.values().collect();
    steps.sort();
    assert_eq!(steps, ["a", "b", "c", "z"], "{what}: one task per step");
}

#[test]
fn recovery_rebuilds_the_exact_state_at_each_kind_of_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (records, run) = complete_run(dir.path());
    let tasks = step_tasks(&records);
    let task_of = |step: &str| {
        tasks
            .iter()
            .find(|(_, s)| s.as_str() == step)
            .map(|(t, _)| *t)
            .expect("the step has a task")
    };
    let (ta, tb, tc) = (task_of("a"), task_of("b"), task_of("c"));
    let accepted: HashMap<Uuid, (String, Arc<Value>)> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::ResultAccepted {
                task,
                agent,
                output,
                ..
            } => Some((*task, (agent.to_string(), output.clone()))),
            _ => None,
        })
        .collect();
    let submitted_input = |task: Uuid| {
        records
            .iter()
            .find_map(|r| match &r.event {
                Event::TaskSubmitted { task: t, input, .. } if *t == task => Some(input.clone()),
                _ => None,
            })
            .expect("submitted")
    };

    // Before the lease: submitted, not leased.
    let n = cut_after(
        &records,
        |e| matches!(e, Event::TaskSubmitted { task, .. } if *task == ta),
    );
    let r = only(recovery::recover(&records[..n]));
    assert_eq!(r.run, run);
    assert_eq!(r.input, json!({"n": 1}));
    assert_eq!(r.file, dir.path().join("flow.toml").display().to_string());
    assert!(r.steps.is_empty());
    assert_eq!(r.visits, BTreeMap::from([("a".to_string(), 1)]));
    let at = r.at.expect("at a step");
    assert_eq!((at.step.as_str(), at.visit), ("a", 1));
    assert_eq!(
        at.tasks,
        BTreeMap::from([(
            "a".to_string(),
            StepProgress::InFlight(PendingTask {
                task: ta,
                epoch: 0,
                leases: 0,
                input: json!({"n": 1}),
                interrupted: vec![],
                refunded: 0,
                effects: vec![],
            })
        )])
    );

    // During the lease: leased under epoch 1, no answer.
    let n = cut_after(
        &records,
        |e| matches!(e, Event::LeaseGranted { task, .. } if *task == ta),
    );
    let at = only(recovery::recover(&records[..n])).at.expect("at");
    let leased_to = records[..n]
        .iter()
        .find_map(|r| match &r.event {
            Event::LeaseGranted { task, agent, .. } if *task == ta => Some(agent.to_string()),
            _ => None,
        })
        .expect("leased");
    assert_eq!(
        at.tasks["a"],
        StepProgress::InFlight(PendingTask {
            task: ta,
            epoch: 1,
            leases: 1,
            input: json!({"n": 1}),
            // The lease has no end: the crash interrupted that attempt.
            interrupted: vec![(1, leased_to)],
            refunded: 0,
            effects: vec![],
        })
    );

    // After the result, before the step's completion was journaled.
    let n = cut_after(
        &records,
        |e| matches!(e, Event::ResultAccepted { task, .. } if *task == ta),
    );
    let (agent_a, out_a) = accepted[&ta].clone();
    let r = only(recovery::recover(&records[..n]));
    assert_eq!(
        r.at.expect("at").tasks["a"],
        StepProgress::Accepted {
            task: ta,
            agent: agent_a.clone(),
            epoch: 1,
            output: out_a.clone(),
            leases: 1,
        }
    );
    assert!(r.steps.is_empty());

    // After the step completed, before the next step was entered: the engine's record.
    let n = cut_after(
        &records,
        |e| matches!(e, Event::StepCompleted { step, .. } if step == "a"),
    );
    let r = only(recovery::recover(&records[..n]));
    assert_eq!(
        r.steps["a"],
        json!({"output": out_a, "attempts": 1, "error": null, "agent": agent_a})
    );
    assert_eq!(r.at.expect("at").tasks["a"], StepProgress::Completed);

    // Inside the join: the first branch completed, the other not yet.
    let n = cut_after(
        &records,
        |e| matches!(e, Event::StepCompleted { step, .. } if step == "b" || step == "c"),
    );
    let r = only(recovery::recover(&records[..n]));
    assert_eq!(r.visits.get("b"), Some(&1));
    assert_eq!(r.visits.get("c"), Some(&1));
    let at = r.at.expect("at");
    assert_eq!((at.step.as_str(), at.visit), ("checks", 1));
    assert_eq!(at.tasks.len(), 2, "the two branches: {:?}", at.tasks);
    let (first, second, t_second) = if at.tasks["b"] == StepProgress::Completed {
        ("b", "c", tc)
    } else {
        ("c", "b", tb)
    };
    assert_eq!(at.tasks[first], StepProgress::Completed);
    assert!(r.steps.contains_key(first) && !r.steps.contains_key(second));
    match &at.tasks[second] {
        StepProgress::InFlight(p) => {
            assert_eq!(p.task, t_second);
            assert_eq!(p.input, *submitted_input(t_second));
        }
        StepProgress::Accepted { task, .. } => assert_eq!(*task, t_second),
        other => panic!("the second branch: {other:?}"),
    }

    // At the gate: waiting, no decision; then decided.
    let n = cut_after(&records, |e| matches!(e, Event::GateWaiting { .. }));
    let r = only(recovery::recover(&records[..n]));
    assert_eq!(r.waiting_at(), Some("ask"));
    assert_eq!(r.steps.len(), 3, "a, b and c are done");
    let at = r.at.expect("at");
    assert!(at.gate_waiting && at.decision.is_none() && at.tasks.is_empty());
    let n = cut_after(&records, |e| matches!(e, Event::GateDecided { .. }));
    let r = only(recovery::recover(&records[..n]));
    assert_eq!(r.waiting_at(), None);
    let d = r.at.expect("at").decision.expect("decided");
    assert!(d.approved);
    assert_eq!(d.reason, "fine");

    // The whole journal: nothing to recover.
    assert!(recovery::recover(&records).is_empty());
}

#[test]
fn resuming_from_every_point_completes_the_run_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (records, run) = complete_run(dir.path());
    let start = cut_after(&records, |e| matches!(e, Event::RunStarted { .. }));
    // Up to `run_ended` (excluded): after it, there is nothing left to do.
    let end = cut_after(&records, |e| matches!(e, Event::RunEnded { .. })) - 1;
    let kinds: std::collections::BTreeSet<&str> =
        records[start..end].iter().map(|r| r.event.kind()).collect();
    for k in [
        "task_submitted",
        "lease_granted",
        "result_accepted",
        "step_completed",
        "gate_waiting",
        "gate_decided",
    ] {
        assert!(kinds.contains(k), "the run journals {k}: {kinds:?}");
    }
    eprintln!("{} crash points", end + 1 - start);
    for n in start..=end {
        let j = journal_of(&records[..n]);
        finish(dir.path(), j.clone());
        let all = j.read_after(0);
        let what = format!(
            "crash after seq {} ({})",
            records[n - 1].seq,
            records[n - 1].event.kind()
        );
        assert_exactly_once(&all, run, &what);
        // Nothing before the crash was lost or changed.
        assert_eq!(&all[..n], &records[..n], "{what}: the prefix is intact");
    }
}

#[test]
fn a_result_from_the_pre_crash_epoch_is_fenced_after_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (records, _run) = complete_run(dir.path());
    let ta = step_tasks(&records)
        .into_iter()
        .find(|(_, s)| s == "a")
        .map(|(t, _)| t)
        .expect("task a");
    let n = cut_after(
        &records,
        |e| matches!(e, Event::LeaseGranted { task, .. } if *task == ta),
    );
    let j = journal_of(&records[..n]);
    paused(async {
        let hold = Arc::new(AtomicBool::new(true));
        let m = runtime(j.clone(), hold.clone()).await;
        let wf = load(dir.path(), &m);
        let rec = only(recovery::recover(&j.read_after(0)));
        let resumed = {
            let m = m.clone();
            let wf = wf.clone();
            actix::spawn(async move {
                let opts = RunOptions {
                    stop_at_gates: true,
                    ..RunOptions::default()
                };
                m.resume_run(wf, rec, opts).await
            })
        };
        // The resubmitted task keeps its id and leases above the journaled epoch 1 plus its
        // attempt budget (2): epoch 4.
        within(10, "the new lease", async {
            loop {
                let leased = j.read_after(n as u64).iter().any(|r| {
                    matches!(&r.event, Event::LeaseGranted { task, epoch: 4, .. } if *task == ta)
                });
                if leased {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        // The agent of the dead process answers under its old epoch.
        assert!(m.deliver_result(ta, "worker#0", 1, json!({"got": "late"})));
        within(10, "the stale result", async {
            loop {
                let stale = j.read_after(n as u64).iter().any(|r| {
                    matches!(&r.event, Event::ResultStale { task, epoch: 1, current_epoch: 4, .. } if *task == ta)
                });
                if stale {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        hold.store(false, Ordering::SeqCst);
        let o = within(60, "the resumed run", resumed)
            .await
            .expect("join")
            .expect("resume");
        assert!(matches!(o.status, RunStatus::Waiting { .. }), "{o:?}");
        let all = j.read_after(0);
        let accepted: Vec<(u64, Arc<Value>)> = all
            .iter()
            .filter_map(|r| match &r.event {
                Event::ResultAccepted {
                    task,
                    epoch,
                    output,
                    ..
                } if *task == ta => Some((*epoch, output.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(accepted, vec![(4, Arc::new(json!({"got": {"n": 1}})))]);
        m.shutdown().await;
    });
}
