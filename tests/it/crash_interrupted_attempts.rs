//! An attempt cut short by muster's own death is not the agent's failure (issue 27, the
//! SIGKILL trials): a real `muster run` killed with SIGKILL while its one attempt runs
//! leaves a lease with no end; `muster resume` journals that attempt
//! `attempt_interrupted` (refunded) and does not count it, so a step with a budget of one
//! attempt still runs and completes. The run header a user reads names the run, and is
//! printed only once `run_started` is in the journal. `muster resume` on a journal where
//! no run started says so.
//!
//! Every wait is bounded; no timing is asserted.

use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::support::cast::{Cast, OBJECT, command_agent};
use crate::support::common;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use muster::journal::sqlite::read_journal;
use muster::journal::{Durability, Event, Journal, Record, SqliteJournal};
use uuid::Uuid;

/// One step, one attempt: counting the interrupted attempt would spend the whole budget.
const WORKFLOW: &str = r#"
name = "once"
input = "obj"
start = "a"

[steps.a]
capability = "work"
timeout = "60s"
attempts = 1
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"
"#;

/// A oneshot agent that holds its attempt while the file named by its first argument
/// exists (so that the kill lands mid-attempt), then echoes its input.
const AGENT: &str = r#"
import json, os, sys, time
task_input = json.load(sys.stdin)
deadline = time.time() + 60
while os.path.exists(sys.argv[1]) and time.time() < deadline:
    time.sleep(0.05)
json.dump({"got": task_input}, sys.stdout)
"#;

fn setup() -> tempfile::TempDir {
    let cast = Cast::new().schema("obj", OBJECT).file("hold.py", AGENT);
    let args = [cast.at("hold.py"), cast.at("hold")];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let manifest = command_agent("holder", "work", "obj", "python3", &args, "oneshot", "");
    cast.actor("holder", &manifest)
        .file("workflow.toml", WORKFLOW)
        .into_dir()
}

fn muster(dir: &Path, args: &[&str]) -> Command {
    let mut c = common::muster_cmd(dir);
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Waits for a child to exit (failing the test after `secs` seconds): its status and
/// its stdout and stderr together.
fn wait_bounded(child: Child, secs: u64, what: &str) -> (ExitStatus, String) {
    let out = common::wait_within(child, secs, what);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

fn read(path: &Path) -> Vec<Record> {
    read_journal(path, 0).expect("the journal reads")
}

/// Polls the journal (bounded) until `found` finds something in it.
fn wait_for<T>(path: &Path, what: &str, found: impl Fn(&[Record]) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if path.exists()
            && let Some(t) = read_journal(path, 0).ok().and_then(|r| found(&r))
        {
            return t;
        }
        assert!(Instant::now() < deadline, "no {what} within 30s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_attempt_killed_with_muster_is_journaled_interrupted_and_not_counted() {
    let dir = setup();
    let d = dir.path();
    std::fs::write(d.join("hold"), "").expect("hold file");
    let journal = d.join("j.db");
    let mut child = muster(
        d,
        &["run", "workflow.toml", "--input", "{}", "--journal", "j.db"],
    )
    .spawn()
    .expect("muster run starts");

    // The header: read from the run's stdout (bounded), it names the run.
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let header = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a header line within 30s");
    let run: Uuid = header
        .strip_prefix("running `once` (workflow.toml), run ")
        .unwrap_or_else(|| panic!("the header names the workflow and the run: {header:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("the header's run id: {e}: {header:?}"));
    // Printed only once the run's start is written: it is in the journal already.
    let started = read(&journal)
        .iter()
        .any(|r| matches!(r.event, Event::RunStarted { run: x, .. } if x == run));
    assert!(
        started,
        "run {run} is in the journal when its header is read"
    );

    // SIGKILL while the attempt runs: its lease is journaled, its end never will be.
    let (task, epoch) = wait_for(&journal, "lease", |records| {
        records.iter().find_map(|r| match &r.event {
            Event::LeaseGranted { task, epoch, .. } => Some((*task, *epoch)),
            _ => None,
        })
    });
    child.kill().expect("SIGKILL"); // `Child::kill` sends SIGKILL on Unix
    let _ = wait_bounded(child, 10, "the killed run");
    let before = read(&journal);
    let ended = |records: &[Record]| {
        records.iter().any(|r| {
            matches!(&r.event,
                Event::AttemptFailed { task: t, .. }
                | Event::ResultAccepted { task: t, .. }
                | Event::AttemptInterrupted { task: t, .. } if *t == task)
        })
    };
    assert!(!ended(&before), "the attempt has no end in the journal");

    // Resume, with the agent no longer holding: the budget of one attempt is not spent.
    std::fs::remove_file(d.join("hold")).expect("release the agent");
    let resume = muster(d, &["resume", "--journal", "j.db"])
        .spawn()
        .expect("muster resume starts");
    let (status, out) = wait_bounded(resume, 60, "muster resume");
    assert!(status.success(), "muster resume exited {status}: {out}");
    assert!(!out.contains("attempt budget"), "{out}");
    let after = read(&journal);
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
        vec![(epoch, true)],
        "the killed attempt is journaled interrupted, refunded"
    );
    let escalated = after
        .iter()
        .any(|r| matches!(&r.event, Event::TaskEscalated { task: t, .. } if *t == task));
    assert!(!escalated, "the task did not escalate");
    let accepted = after
        .iter()
        .filter(|r| matches!(&r.event, Event::ResultAccepted { task: t, .. } if *t == task))
        .count();
    assert_eq!(accepted, 1, "the step's task completed once");
    let completed = after.iter().any(|r| {
        matches!(&r.event, Event::RunEnded { run: x, status, .. } if *x == run && status == "completed")
    });
    assert!(completed, "the run completed: {out}");
}

#[test]
fn resume_says_no_run_was_started_when_the_journal_has_none() {
    let dir = setup();
    let d = dir.path();
    let path = d.join("empty.db");
    {
        let j = SqliteJournal::open(&path, Durability::Sync).expect("a journal");
        j.append(
            0,
            Event::Note {
                text: "no run here".into(),
            },
        );
        j.flush().expect("flush");
    }
    let resume = muster(d, &["resume", "--journal", "empty.db"])
        .spawn()
        .expect("muster resume starts");
    let (status, out) = wait_bounded(resume, 30, "muster resume");
    assert!(status.success(), "{out}");
    assert!(
        out.contains("nothing to resume: no run was started in empty.db"),
        "{out}"
    );
}
