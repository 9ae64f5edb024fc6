//! Every handoff is inspectable after the fact (G5): a workload journaled to SQLite is
//! read back by `muster inspect` as a table, JSON lines and a Mermaid diagram.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{real, within};
use muster::journal::{Durability, JournalConfig, SqliteJournal};
use muster::{AgentDef, AgentError, CapabilitySpec, Muster, SubmitError, Task, TaskStatus};
use serde_json::{json, Value};
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
    let out = Command::new(env!("CARGO_BIN_EXE_muster"))
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
        "envelope_routed",
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
    let out = Command::new(env!("CARGO_BIN_EXE_muster"))
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
