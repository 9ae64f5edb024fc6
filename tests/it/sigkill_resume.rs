//! A real `muster run` killed with SIGKILL at random moments finishes after
//! `muster resume`: no step lost, no step's result accepted twice, nothing journaled
//! before the kill lost or changed (G1, G2, G5).
//!
//! Each trial starts the built binary on a workflow of slow command agents (a chain, a
//! parallel join, a chain), waits until the run has started, kills the process after a
//! delay drawn from a seeded generator, reads the journal, runs `muster resume` on it and
//! reads the journal again. Every wait is bounded; no timing is asserted.

use crate::support::cast::{Cast, OBJECT, command_agent, fixture_agent};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use muster::journal::sqlite::read_journal;
use muster::journal::{Event, Record};
use uuid::Uuid;

const WORKFLOW: &str = r#"
name = "slow"
input = "obj"
start = "a"

[steps.a]
capability = "work"
timeout = "20s"
attempts = 2
on_exhausted = "fail"
next = "checks"

[steps.checks]
parallel = ["b", "c"]
next = "d"

[steps.b]
capability = "work"
input = "{'from': 'b', 'a': steps.a.output.got}"
timeout = "20s"
attempts = 2
on_exhausted = "fail"

[steps.c]
capability = "work"
input = "{'from': 'c', 'a': steps.a.output.got}"
timeout = "20s"
attempts = 2
on_exhausted = "fail"

[steps.d]
capability = "work"
input = "{'from': 'd', 'b': steps.b.output.got, 'c': steps.c.output.got}"
timeout = "20s"
attempts = 2
on_exhausted = "fail"
next = "e"

[steps.e]
capability = "work"
input = "{'from': 'e', 'd': steps.d.output.got}"
timeout = "20s"
attempts = 2
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"
"#;

/// A small deterministic generator (xorshift64*), so that the kill delays are seeded.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A temp dir with the cast (one slow oneshot agent, two replicas), schemas and workflow.
fn setup() -> tempfile::TempDir {
    let agent = fixture_agent("sleepy_oneshot.py");
    let extra = "replicas = 2\nconcurrency = 1";
    let manifest = command_agent(
        "sleepy",
        "work",
        "obj",
        "python3",
        &[&agent],
        "oneshot",
        extra,
    );
    Cast::new()
        .schema("obj", OBJECT)
        .actor("sleepy", &manifest)
        .file("workflow.toml", WORKFLOW)
        .into_dir()
}

fn muster(dir: &Path, args: &[&str]) -> Command {
    let mut c = crate::support::common::muster_cmd(dir);
    c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Waits for a child to exit, failing the test after `secs` seconds.
fn wait_bounded(child: Child, secs: u64, what: &str) -> ExitStatus {
    crate::support::common::wait_within(child, secs, what).status
}

fn read(path: &Path) -> Vec<Record> {
    read_journal(path, 0).expect("the journal reads")
}

fn has_run_started(path: &Path) -> bool {
    path.exists()
        && read_journal(path, 0)
            .map(|r| {
                r.iter()
                    .any(|r| matches!(r.event, Event::RunStarted { .. }))
            })
            .unwrap_or(false)
}

/// Every run completed once; every step visit was entered once, completed once, with a
/// task whose result was accepted exactly once.
fn assert_exactly_once(records: &[Record], trial: usize) {
    let mut runs: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    let mut entered: BTreeMap<(Uuid, String, u32), u32> = BTreeMap::new();
    let mut completed: BTreeMap<(Uuid, String), Vec<Uuid>> = BTreeMap::new();
    let mut accepted: HashMap<Uuid, u32> = HashMap::new();
    for r in records {
        match &r.event {
            Event::RunStarted { run, .. } => {
                runs.entry(*run).or_default();
            }
            Event::RunEnded { run, status, .. } => {
                runs.entry(*run).or_default().push(status.clone())
            }
            Event::StepEntered { run, step, visit } => {
                *entered.entry((*run, step.clone(), *visit)).or_default() += 1;
            }
            Event::StepCompleted {
                run, step, task, ..
            } => {
                completed
                    .entry((*run, step.clone()))
                    .or_default()
                    .push(*task);
            }
            Event::ResultAccepted { task, .. } => *accepted.entry(*task).or_default() += 1,
            _ => {}
        }
    }
    assert_eq!(runs.len(), 1, "trial {trial}: one run");
    for (run, ended) in &runs {
        assert_eq!(
            ended,
            &vec!["completed".to_string()],
            "trial {trial}: run {run} ended once, completed"
        );
    }
    for (k, n) in &entered {
        assert_eq!(*n, 1, "trial {trial}: {k:?} entered {n} times");
    }
    for run in runs.keys() {
        for step in ["a", "b", "c", "d", "e"] {
            let tasks = completed
                .get(&(*run, step.to_string()))
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                tasks.len(),
                1,
                "trial {trial}: step `{step}` completed {} times",
                tasks.len()
            );
            assert_eq!(
                accepted.get(&tasks[0]),
                Some(&1),
                "trial {trial}: the task of step `{step}` has exactly one accepted result"
            );
        }
    }
    for (task, n) in &accepted {
        assert_eq!(*n, 1, "trial {trial}: task {task} accepted {n} times");
    }
}

#[test]
fn a_run_killed_at_random_moments_finishes_after_resume() {
    let dir = setup();
    let mut rng = Rng(0x5eed_0fc0_ffee);
    let mut killed_mid_run = 0;
    for trial in 0..5 {
        let journal: PathBuf = dir.path().join(format!("journal-{trial}.db"));
        let jarg = journal.display().to_string();
        let child = muster(
            dir.path(),
            &[
                "run",
                "workflow.toml",
                "--input",
                &format!("{{\"n\": {trial}}}"),
                "--journal",
                &jarg,
            ],
        )
        .spawn()
        .expect("muster run starts");
        let mut child = child;
        // Kill only once the run has started, after a seeded delay within its length.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !has_run_started(&journal) {
            assert!(
                Instant::now() < deadline,
                "trial {trial}: the run did not start within 20s"
            );
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("trial {trial}: muster run exited before the run started: {status}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let delay = rng.below(900);
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().expect("SIGKILL"); // `Child::kill` sends SIGKILL on Unix
        let _ = wait_bounded(child, 10, "the killed run");

        let before = read(&journal);
        let ended = before
            .iter()
            .any(|r| matches!(r.event, Event::RunEnded { .. }));
        if !ended {
            killed_mid_run += 1;
        }
        let resume = muster(dir.path(), &["resume", "--journal", &jarg])
            .spawn()
            .expect("muster resume starts");
        let status = wait_bounded(resume, 30, "muster resume");
        assert!(
            status.success(),
            "trial {trial}: muster resume exited with {status}"
        );
        let after = read(&journal);

        // Gap-free sequence numbers, and the journal read right after the kill is still
        // there, record for record.
        for (i, r) in after.iter().enumerate() {
            assert_eq!(
                r.seq,
                i as u64 + 1,
                "trial {trial}: sequence numbers are gap-free"
            );
        }
        assert!(after.len() >= before.len());
        assert_eq!(
            &after[..before.len()],
            &before[..],
            "trial {trial}: nothing before the kill was lost"
        );
        assert_exactly_once(&after, trial);
        // A task in flight at the kill is resubmitted with its id, leasing above its epochs.
        let mut submitted: HashMap<Uuid, u32> = HashMap::new();
        for r in &after {
            if let Event::TaskSubmitted { task, .. } = &r.event {
                *submitted.entry(*task).or_default() += 1;
            }
        }
        let resubmitted = submitted.values().filter(|n| **n > 1).count();
        eprintln!(
            "trial {trial}: killed {delay} ms after the start, {} records before, {} after, {resubmitted} task(s) resubmitted{}",
            before.len(),
            after.len(),
            if ended {
                " (the run had already ended)"
            } else {
                ""
            }
        );
    }
    assert!(
        killed_mid_run >= 1,
        "at least one trial killed the run mid-way"
    );
}
