//! The shipped code-review example end to end through the built binary (real clock,
//! python3 agents): the flaky tester crashes on its first task and the task is reassigned;
//! the checks fail twice, so implement runs three times with the findings as feedback,
//! and the third round passes.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn the_code_review_example_completes_with_a_reassignment_and_three_rounds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("journal.db");
    let out = Command::new(env!("CARGO_BIN_EXE_muster"))
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
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_muster"))
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
