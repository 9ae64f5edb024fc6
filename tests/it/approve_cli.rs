//! A gate is decided across processes, exactly once: `muster run` stops at the gate with
//! exit code 3, `muster approve` appends the decision to the journal (refusing an unknown
//! run, an unknown gate and a second decision with exit code 2), and `muster resume`
//! continues the run past the gate. `muster run --wait` picks up a decision made by
//! another process.

use std::path::Path;

use crate::support::cast::{Cast, OBJECT, function_agent};
use crate::support::common;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use muster::journal::Event;
use muster::journal::sqlite::read_journal;
use serde_json::Value;
use uuid::Uuid;

const WORKFLOW: &str = include_str!("../fixtures/workflows/gated.toml");

fn setup() -> tempfile::TempDir {
    Cast::new()
        .schema("obj", OBJECT)
        .actor("echo", &function_agent("echo", "echo", "obj", "echo", ""))
        .file("gate.toml", WORKFLOW)
        .into_dir()
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = common::muster_cmd(dir);
    c.args(args);
    c
}

/// Runs a command to its end, failing the test after 30 s.
fn muster(dir: &Path, args: &[&str]) -> Output {
    common::muster_within(30, args, dir)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Starts the gated workflow; it stops at the gate with exit code 3. Returns the run id.
fn run_to_gate(dir: &Path) -> Uuid {
    let out = muster(
        dir,
        &[
            "run",
            "gate.toml",
            "--input",
            "{\"x\": 1}",
            "--journal",
            "j.db",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["status"], "waiting");
    assert_eq!(doc["gate"], "ask");
    let run: Uuid = doc["run"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("run id");
    let hint = doc["decide"].as_str().expect("how to decide");
    assert!(
        hint.contains(&format!("muster approve --journal j.db {run} ask")),
        "{hint}"
    );
    run
}

fn decisions(dir: &Path, run: Uuid) -> usize {
    read_journal(dir.join("j.db"), 0)
        .expect("journal")
        .iter()
        .filter(|r| matches!(&r.event, Event::GateDecided { run: x, .. } if *x == run))
        .count()
}

#[test]
fn approve_refuses_bad_decisions_and_resume_goes_past_the_gate() {
    let dir = setup();
    let d = dir.path();
    let run = run_to_gate(d);
    let id = run.to_string();

    // An unknown run.
    let out = muster(
        d,
        &[
            "approve",
            "--journal",
            "j.db",
            &Uuid::now_v7().to_string(),
            "ask",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no run"), "{}", text(&out));
    // An unknown gate (the run waits at `ask`).
    let out = muster(d, &["approve", "--journal", "j.db", &id, "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("waits at gate `ask`"), "{}", text(&out));
    // A gate the run is not waiting at.
    let out = muster(d, &["approve", "--journal", "j.db", &id, "finish"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        decisions(d, run),
        0,
        "nothing was decided by a refused approve"
    );

    // A valid approval, by a unique prefix of the run id.
    let out = muster(
        d,
        &[
            "approve",
            "--journal",
            "j.db",
            &id[..13],
            "ask",
            "--reason",
            "looks good",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["approved"], true);
    // A second decision.
    let out = muster(d, &["approve", "--journal", "j.db", &id, "ask", "--reject"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already decided"), "{}", text(&out));
    assert_eq!(decisions(d, run), 1, "exactly one decision");

    // Resume continues past the gate and completes the run.
    let out = muster(d, &["resume", "--journal", "j.db"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("completed"), "{}", text(&out));
    let records = read_journal(d.join("j.db"), 0).expect("journal");
    let ended: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::RunEnded { run: x, status, .. } if *x == run => Some(status.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(ended, ["completed"]);
    let finished = records.iter().any(
        |r| matches!(&r.event, Event::StepCompleted { run: x, step, .. } if *x == run && step == "finish"),
    );
    assert!(finished, "the step after the gate ran");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "gap-free");
    }

    // The run has ended: nothing more to decide or resume.
    let out = muster(d, &["approve", "--journal", "j.db", &id, "ask"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = muster(d, &["resume", "--journal", "j.db"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("nothing to resume"), "{}", text(&out));
}

#[test]
fn a_rejection_fails_the_run_on_resume() {
    let dir = setup();
    let d = dir.path();
    let run = run_to_gate(d);
    let out = muster(
        d,
        &[
            "approve",
            "--journal",
            "j.db",
            &run.to_string(),
            "ask",
            "--reject",
            "--reason",
            "no",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = muster(d, &["resume", "--journal", "j.db"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("failed at step `stop`"),
        "{}",
        text(&out)
    );
}

#[test]
fn run_wait_goes_on_when_another_process_decides() {
    let dir = setup();
    let d = dir.path();
    let mut child = command(
        d,
        &[
            "run",
            "gate.toml",
            "--input",
            "{\"x\": 1}",
            "--journal",
            "j.db",
            "--wait",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("muster run starts");
    // Wait (bounded) until the run waits at the gate, then decide from this process.
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        assert!(
            Instant::now() < deadline,
            "the run did not reach the gate within 30s"
        );
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "muster run --wait exited at the gate"
        );
        let waiting = read_journal(d.join("j.db"), 0).ok().and_then(|records| {
            records.iter().find_map(|r| match &r.event {
                Event::GateWaiting { run, .. } => Some(*run),
                _ => None,
            })
        });
        if let Some(run) = waiting {
            break run;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = muster(
        d,
        &["approve", "--journal", "j.db", &run.to_string(), "ask"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("muster run --wait did not finish within 30s of the decision");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let records = read_journal(d.join("j.db"), 0).expect("journal");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "gap-free");
    }
    assert_eq!(decisions(d, run), 1, "the decision was journaled once");
    let decided = records
        .iter()
        .position(|r| matches!(&r.event, Event::GateDecided { .. }))
        .expect("decided");
    assert!(
        records[decided..]
            .iter()
            .any(|r| matches!(&r.event, Event::RunEnded { status, .. } if status == "completed")),
        "the run completed after the decision"
    );
}
