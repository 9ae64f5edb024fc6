//! Every handoff is inspectable after the fact (G5): a workload journaled to SQLite is
//! read back by `muster inspect` as a table, JSON lines and a Mermaid diagram.

use crate::support::common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{real, within};
use muster::journal::{Durability, JournalConfig, SqliteJournal};
use muster::{AgentDef, AgentError, CapabilitySpec, Muster, SubmitError, Task, TaskStatus};
use serde_json::{Value, json};
use uuid::Uuid;

struct Workload {
    run: Uuid,
    lone: Uuid,
    flaky_task: Uuid,
}

/// Two tasks under one run id (one fails once, then is reassigned), one task on its own.
fn workload(path: &Path) -> Workload {
    let journal = Arc::new(SqliteJournal::open(path, Durability::Sync).unwrap());
    let j = journal.clone();
    let w = real(async move {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let muster = Muster::builder()
            .journal(j)
            .schema("obj", json!({"type": "object"}))
            .agent(
                AgentDef::function("flaky", move |input, _| {
                    let first = c.fetch_add(1, Ordering::SeqCst) == 0;
                    async move {
                        if first {
                            Err(AgentError::new("the first call always fails"))
                        } else {
                            Ok(json!({"seen": input}))
                        }
                    }
                })
                .capability(CapabilitySpec::new("work", "obj", "obj"))
                .replicas(2),
            )
            .agent(
                AgentDef::function("echo", |input, _| async move { Ok(input) })
                    .capability(CapabilitySpec::new("echo", "obj", "obj")),
            )
            .start()
            .await
            .unwrap();
        let run = Uuid::now_v7();
        let a = within(
            10,
            "flaky task",
            muster.delegate(
                Task::new("work", json!({"n": 1}))
                    .correlation(run)
                    .sender("orchestrator"),
            ),
        )
        .await
        .unwrap();
        assert_eq!(a.status, TaskStatus::Completed);
        assert_eq!(a.leases.len(), 2, "failed once, then reassigned");
        let b = within(
            10,
            "echo task",
            muster.delegate(
                Task::new("echo", json!({"n": 2}))
                    .correlation(run)
                    .sender("orchestrator"),
            ),
        )
        .await
        .unwrap();
        assert_eq!(b.status, TaskStatus::Completed);
        let lone = within(
            10,
            "lone task",
            muster.delegate(Task::new("echo", json!({}))),
        )
        .await
        .unwrap();
        muster.shutdown().await;
        Workload {
            run,
            lone: lone.id,
            flaky_task: a.id,
        }
    });
    journal.close().unwrap();
    w
}

fn inspect(path: &Path, args: &[&str]) -> String {
    let out = crate::support::common::muster()
        .arg("inspect")
        .arg("--journal")
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "inspect {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn inspect_shows_correlations_timelines_ownership_and_diagrams() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".muster/journal.db");
    let w = workload(&path);
    let before = std::fs::read(&path).unwrap();
    let run = w.run.to_string();

    // No filter: one row per correlation.
    let table = inspect(&path, &[]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&run))
        .unwrap_or_else(|| panic!("the run is listed:\n{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..6], ["2", "3", "2", "0", "0"], "{row}");
    assert!(table.contains(&w.lone.to_string()), "{table}");

    let summaries = json_lines(&inspect(&path, &["--format", "json"]));
    assert_eq!(summaries.len(), 2);
    let s = summaries
        .iter()
        .find(|s| s["correlation"] == json!(run))
        .unwrap();
    assert_eq!(s["record"], "correlation");
    assert_eq!(
        (s["tasks"].as_u64(), s["handoffs"].as_u64()),
        (Some(2), Some(3))
    );

    // One run: its timeline, then ownership lease by lease.
    let timeline = inspect(&path, &["--run", &run]);
    for want in [
        "lease_granted",
        "attempt_failed",
        "result_accepted",
        "the first call always fails",
        "reassigned",
        "orchestrator",
        "ownership",
        "failed: error",
        "completed",
    ] {
        assert!(timeline.contains(want), "`{want}` in:\n{timeline}");
    }
    assert!(
        !timeline.contains(&w.lone.to_string()),
        "only the run's tasks"
    );
    let failed = timeline
        .lines()
        .find(|l| l.contains("attempt_failed"))
        .unwrap();
    assert!(failed.contains("flaky#"), "{failed}");

    // JSON lines: every line parses; events, leases and tasks.
    let lines = json_lines(&inspect(
        &path,
        &["--correlation", &run, "--format", "json"],
    ));
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    assert!(kinds.contains(&"lease_granted") && kinds.contains(&"attempt_failed"));
    let leases: Vec<&Value> = lines.iter().filter(|l| l["record"] == "lease").collect();
    assert_eq!(leases.len(), 3);
    let flaky: Vec<&&Value> = leases
        .iter()
        .filter(|l| l["task"] == json!(w.flaky_task))
        .collect();
    assert_eq!(flaky.len(), 2);
    assert_eq!(flaky[0]["epoch"], 1);
    assert!(flaky[0]["outcome"].as_str().unwrap().starts_with("failed"));
    assert_eq!(flaky[1]["epoch"], 2);
    assert_eq!(flaky[1]["outcome"], "completed");
    assert_ne!(flaky[0]["agent"], flaky[1]["agent"], "a different agent");

    // Mermaid.
    let m = inspect(&path, &["--run", &run, "--format", "mermaid"]);
    assert!(m.starts_with("sequenceDiagram"), "{m}");
    assert!(m.contains("->>"), "{m}");
    assert!(m.contains("-->>"), "{m}");
    assert!(m.contains("work (attempt 2, epoch 2)"), "{m}");
    assert!(m.contains("Note over"), "{m}");
    assert!(m.contains("participant P0 as orchestrator"), "{m}");

    // A task by a prefix of its id.
    let t = w.flaky_task.to_string();
    let by_task = inspect(&path, &["--task", &t[..30]]);
    assert!(by_task.contains("attempt_failed"), "{by_task}");

    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "inspect wrote nothing"
    );
}

#[test]
fn an_unknown_correlation_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    workload(&path);
    let out = crate::support::common::muster()
        .args([
            "inspect",
            "--json",
            "--correlation",
            "ffffffff",
            "--journal",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert!(doc["error"].as_str().unwrap().contains("ffffffff"), "{doc}");
}

#[test]
fn an_input_over_the_journal_limit_is_refused_naming_the_task_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        max_payload_bytes: 1024,
        ..JournalConfig::default()
    };
    let journal = Arc::new(
        SqliteJournal::open_with(dir.path().join("j.db"), Durability::Relaxed, config).unwrap(),
    );
    let j = journal.clone();
    real(async move {
        let muster = Muster::builder()
            .journal(j)
            .schema("obj", json!({"type": "object"}))
            .agent(
                AgentDef::function("echo", |input, _| async move { Ok(input) })
                    .capability(CapabilitySpec::new("echo", "obj", "obj")),
            )
            .start()
            .await
            .unwrap();
        let big = json!({"data": "x".repeat(2000)});
        let err = muster.submit(Task::new("echo", big)).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SubmitError::InvalidTask { .. }), "{err:?}");
        assert!(
            text.contains("2011 bytes") && text.contains("1024"),
            "{text}"
        );
        assert!(text.contains("task "), "{text}");
        let ok = within(
            5,
            "small task",
            muster.delegate(Task::new("echo", json!({"a": 1}))),
        )
        .await
        .unwrap();
        assert!(ok.is_completed());
        muster.shutdown().await;
    });
    let kinds: Vec<&'static str> = muster::Journal::read_after(&*journal, 0)
        .iter()
        .map(|r| r.event.kind())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "task_submitted").count(),
        1,
        "the refused task was never journaled: {kinds:?}"
    );
}

const RUN_WORKFLOWS: [&str; 4] = [
    r#"
name = "ok"
input = "obj"
start = "build"
[steps.build]
capability = "echo"
timeout = "10s"
attempts = 1
on_exhausted = "fail"
next = "done"
[steps.done]
terminal = "done"
"#,
    r#"
name = "ship"
input = "obj"
start = "build"
[steps.build]
capability = "echo"
timeout = "10s"
attempts = 1
on_exhausted = "fail"
next = "test"
[steps.test]
capability = "fails"
timeout = "10s"
attempts = 1
on_exhausted = "fail"
next = "done"
[steps.done]
terminal = "done"
"#,
    r#"
name = "gated"
input = "obj"
start = "ask"
[steps.ask]
gate = "Ship it?"
on_approve = "done"
on_reject = "stop"
[steps.done]
terminal = "done"
[steps.stop]
terminal = "fail"
"#,
    r#"
name = "slow"
input = "obj"
start = "build"
[steps.build]
capability = "echo"
timeout = "10s"
attempts = 1
on_exhausted = "fail"
next = "wait"
[steps.wait]
capability = "hang"
timeout = "1h"
attempts = 1
on_exhausted = "fail"
next = "done"
[steps.done]
terminal = "done"
"#,
];

/// Four runs, on virtual time: `ok` completes, `ship` fails at `test`, `gated` stops at its
/// gate (no task at all), and `slow` is cut off in `wait` as a killed process leaves it (the
/// journal stops with its task leased, no `run_ended`). Returns the run ids in that order.
fn runs_journal(path: &Path) -> [Uuid; 4] {
    use muster::workflow::Workflow;
    use muster::workflow::engine::RunOptions;
    use muster::{Journal, MemoryJournal, WorkflowExt};

    let memory = Arc::new(MemoryJournal::default());
    let j = memory.clone();
    let (records, ids) = common::paused(async move {
        let m = Muster::builder()
            .journal(j.clone())
            .schema("obj", json!({"type": "object"}))
            .agent(
                AgentDef::function("echo", |input, _| async move { Ok(input) })
                    .capability(CapabilitySpec::new("echo", "obj", "obj")),
            )
            .agent(
                AgentDef::function("fails", |_, _| async move {
                    Err(AgentError::new("the tests do not pass"))
                })
                .capability(CapabilitySpec::new("fails", "obj", "obj")),
            )
            .agent(
                AgentDef::function("hang", |_, _| std::future::pending())
                    .capability(CapabilitySpec::new("hang", "obj", "obj")),
            )
            .start()
            .await
            .unwrap();
        let mut ids = [Uuid::nil(); 4];
        for (i, text) in RUN_WORKFLOWS.iter().enumerate() {
            let wf = Arc::new(Workflow::parse(text, Path::new("wf.toml"), &m.schemas()).unwrap());
            ids[i] = Uuid::now_v7();
            let opts = RunOptions {
                stop_at_gates: true,
                run_id: Some(ids[i]),
                ..RunOptions::default()
            };
            let run = m.run_workflow_with(wf, json!({"n": i}), opts);
            if i < 3 {
                within(60, "a run", run).await.unwrap();
            } else {
                // The process "dies" here: what is journaled so far is all there is.
                let cut = tokio::time::timeout(std::time::Duration::from_secs(60), run).await;
                assert!(cut.is_err(), "the slow run is still in its hanging step");
            }
        }
        let records = j.read_after(0);
        m.shutdown().await;
        (records, ids)
    });
    drop(memory);
    let file = SqliteJournal::open(path, Durability::Sync).unwrap();
    for r in records {
        file.append(r.at_ms, r.event);
    }
    file.close().unwrap();
    ids
}

#[test]
fn inspect_lists_runs_with_workflow_status_and_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let [ok, ship, gated, slow] = runs_journal(&path);

    // The table: one row per run, with its workflow, status and step.
    let table = inspect(&path, &[]);
    let row = |id: Uuid| {
        table
            .lines()
            .find(|l| l.starts_with(&id.to_string()))
            .unwrap_or_else(|| panic!("run {id} is listed:\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(&row(ok)[1..5], ["ok", "completed", "done", "1"], "{table}");
    assert_eq!(&row(ship)[1..5], ["ship", "failed", "test", "2"], "{table}");
    assert_eq!(
        &row(gated)[1..5],
        ["gated", "waiting", "ask", "0"],
        "{table}"
    );
    assert_eq!(
        &row(slow)[1..5],
        ["slow", "unfinished", "wait", "2"],
        "{table}"
    );
    let ship_row = row(ship).join(" ");
    assert!(ship_row.contains("the tests do not pass"), "{ship_row}");
    assert!(row(gated).join(" ").contains("Ship it?"), "{table}");
    assert!(table.contains("4 runs"), "{table}");
    assert!(
        table.contains("correlations"),
        "correlations still listed:\n{table}"
    );

    // JSON lines: a `run` record per run with the status fields.
    let lines = json_lines(&inspect(&path, &["--format", "json"]));
    let run = |id: Uuid| {
        lines
            .iter()
            .find(|l| l["record"] == "run" && l["run"] == json!(id))
            .unwrap_or_else(|| panic!("a run record for {id}: {lines:?}"))
    };
    let r = run(ok);
    assert_eq!(
        (&r["workflow"], &r["status"], &r["step"]),
        (&json!("ok"), &json!("completed"), &json!("done"))
    );
    let r = run(ship);
    assert_eq!(
        (&r["status"], &r["step"]),
        (&json!("failed"), &json!("test"))
    );
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("the tests do not pass"),
        "{r}"
    );
    assert!(r["ended_ms"].is_u64());
    let r = run(gated);
    assert_eq!(
        (&r["status"], &r["gate"], &r["question"]),
        (&json!("waiting"), &json!("ask"), &json!("Ship it?"))
    );
    let r = run(slow);
    assert_eq!(
        (&r["status"], &r["step"]),
        (&json!("unfinished"), &json!("wait"))
    );
    assert!(r.get("ended_ms").is_none(), "{r}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["record"] == "correlation")
            .count(),
        4
    );

    // One run: its status opens the timeline; in JSON, a `run` record first.
    let one = inspect(&path, &["--run", &ship.to_string()]);
    assert!(
        one.contains("run ship (wf.toml): failed at step `test`: "),
        "{one}"
    );
    let one = json_lines(&inspect(
        &path,
        &["--run", &gated.to_string(), "--format", "json"],
    ));
    assert_eq!(
        (&one[0]["record"], &one[0]["status"]),
        (&json!("run"), &json!("waiting"))
    );
}

#[test]
fn inspect_shows_model_usage_per_run_and_agent_with_unknown_never_zero() {
    use muster::journal::{Event, Journal, Usage};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let run = Uuid::now_v7();
    {
        let j = SqliteJournal::open(&path, Durability::Sync).unwrap();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        for t in [a, b] {
            j.append(
                1,
                Event::TaskSubmitted {
                    task: t,
                    capability: "triage".into(),
                    correlation: run,
                    input: json!({}).into(),
                    attempts: 1,
                    timeout_ms: 1000,
                    sender: String::new(),
                },
            );
        }
        j.append(
            2,
            Event::ModelUsage {
                task: a,
                agent: "classifier#0".into(),
                epoch: 1,
                usage: Usage::known("m", 30, 7),
            },
        );
        j.append(
            3,
            Event::ModelUsage {
                task: b,
                agent: "responder#0".into(),
                epoch: 1,
                usage: Usage::unknown("m"),
            },
        );
        j.flush().unwrap();
    }
    let table = inspect(&path, &[]);
    assert!(table.contains("model usage"), "{table}");
    let responder = table
        .lines()
        .find(|l| l.contains("responder"))
        .expect("a usage line per agent type");
    assert!(responder.contains("unknown"), "{responder}");
    let json = json_lines(&inspect(&path, &["--json"]));
    let total = json
        .iter()
        .find(|v| v["record"] == "usage" && v["agent"] == "*")
        .expect("the run's total");
    assert_eq!(total["correlation"], run.to_string());
    assert_eq!(total["total_tokens"], 37);
    assert_eq!(total["unknown_attempts"], 1);
}
