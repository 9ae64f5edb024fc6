//! The shipped code-review example end to end through the built binary (real clock,
//! python3 agents): the flaky tester crashes on its first task and the task is reassigned;
//! the checks fail twice, so implement runs three times with the findings as feedback,
//! and the third round passes. The review and the security scan are idempotent: a round
//! that writes the same code as the last gets their accepted verdicts back.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use muster::Event;
use muster::journal::sqlite::read_journal;
use serde_json::Value;

#[test]
fn the_code_review_example_completes_with_a_reassignment_and_three_rounds() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("journal.db");
    let out = crate::support::common::muster()
        .current_dir(root)
        .args([
            "run",
            "examples/code-review/workflow.toml",
            "--json",
            "--journal",
        ])
        .arg(&journal)
        .output()
        .expect("run muster");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
    assert_eq!(doc["status"], "completed", "{doc:#}");
    assert!(
        doc["reassignments"].as_u64().unwrap_or(0) >= 1,
        "the flaky tester's task moved to another agent: {doc:#}"
    );
    let steps = doc["steps"].as_array().cloned().unwrap_or_default();
    let implement = steps.iter().filter(|s| s["step"] == "implement").count();
    assert_eq!(implement, 3, "three implement visits: {doc:#}");
    for s in &steps {
        assert_eq!(s["outcome"], "completed", "{s:#}");
    }
}

#[test]
fn the_code_review_example_leaves_no_temporary_files_behind() {
    // Every temporary file the example's agents make (workspaces, the flaky tester's
    // marker, test reports) goes under TMPDIR: after the run, it is empty again.
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let out = crate::support::common::muster()
        .current_dir(root)
        .env("TMPDIR", &tmp)
        .args([
            "run",
            "examples/code-review/workflow.toml",
            "--json",
            "--journal",
        ])
        .arg(dir.path().join("journal.db"))
        .output()
        .expect("run muster");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<String> = std::fs::read_dir(&tmp)
        .expect("read tmp")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
}

#[test]
fn a_round_that_writes_the_same_code_reuses_the_review_and_security_verdicts() {
    // Only candidates 1 and 2: round 3 has no new candidate and writes candidate 2 again,
    // with the same digest, so its review and security scan are identical to round 2's.
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let dir = tempfile::tempdir().expect("tempdir");
    let changes = dir.path().join("changes");
    for c in ["candidate-1", "candidate-2"] {
        let from = root.join("examples/code-review/changes").join(c);
        let to = changes.join(c);
        std::fs::create_dir_all(&to).expect("candidate dir");
        for f in std::fs::read_dir(&from).expect("read candidate").flatten() {
            std::fs::copy(f.path(), to.join(f.file_name())).expect("copy candidate file");
        }
    }
    let journal = dir.path().join("journal.db");
    let out = crate::support::common::muster()
        .current_dir(root)
        .env("MUSTER_REVIEW_CHANGES", &changes)
        .args([
            "run",
            "examples/code-review/workflow.toml",
            "--json",
            "--journal",
        ])
        .arg(&journal)
        .output()
        .expect("run muster");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON document ({e}): {stdout}\n{stderr}"));
    // Round 3 still has the eval finding, so the run ends at the human gate.
    assert_eq!(doc["status"], "waiting", "{doc:#}\n{stderr}");

    let records = read_journal(&journal, 0).expect("the run's journal");
    let mut capability = HashMap::new();
    let mut ran: HashMap<String, usize> = HashMap::new();
    let mut reused: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    let mut accepted = HashMap::new();
    for r in &records {
        match &r.event {
            Event::TaskSubmitted {
                task,
                capability: c,
                ..
            } => {
                capability.insert(*task, c.to_string());
            }
            Event::ResultAccepted { task, output, .. } => {
                *ran.entry(capability[task].clone()).or_default() += 1;
                accepted.insert(*task, output.clone());
            }
            Event::TaskReused {
                task,
                original,
                output,
            } => {
                assert_eq!(
                    accepted.get(original),
                    Some(output),
                    "a reused result is the original's accepted output"
                );
                reused
                    .entry(capability[task].clone())
                    .or_default()
                    .push(output.clone());
            }
            _ => {}
        }
    }
    assert_eq!(ran.get("code.write"), Some(&3), "{ran:?}");
    // The tests always run; the review and the scan ran for rounds 1 and 2 only.
    assert_eq!(ran.get("code.test"), Some(&3), "{ran:?}");
    for cap in ["code.review", "code.security"] {
        assert_eq!(
            ran.get(cap),
            Some(&2),
            "{cap} ran in rounds 1 and 2: {ran:?}"
        );
        assert_eq!(
            reused.get(cap).map(Vec::len),
            Some(1),
            "{cap} was reused in round 3: {reused:?}"
        );
    }
}
