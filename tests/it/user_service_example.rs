//! The user-service example end to end through the built binary (real clock, python3
//! agents): two implementers given different slices of one spec would both write
//! `UserService`. `muster check` reports the overlap of their write scopes before anything
//! runs; at run time the second waits for the first's scope and then builds on the class
//! the first wrote, so there is one `UserService` with every method of both slices.

use crate::support::common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn muster(root: &Path) -> Command {
    crate::support::common::muster_cmd(root)
}

#[test]
fn check_reports_the_two_implementers_overlapping_write_scopes() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let mut cmd = muster(root);
    cmd.args([
        "check",
        "examples/user-service/conflict.toml",
        "--actors",
        "examples/user-service/actors",
        "--json",
    ]);
    let out = common::output_within(60, cmd);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let findings = doc["findings"].as_array().cloned().unwrap_or_default();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f["concern"], "scope");
    assert_eq!(f["step"], "implement");
    let message = f["message"].as_str().unwrap_or("");
    assert!(message.contains("`accounts` and `auth`"), "{message}");
    assert!(
        message.contains("src/user_service/x.py"),
        "an example path: {message}"
    );

    // The runnable workflow accepts waiting: clean.
    let mut cmd = muster(root);
    cmd.args([
        "check",
        "examples/user-service/workflow.toml",
        "--actors",
        "examples/user-service/actors",
    ]);
    let out = common::output_within(60, cmd);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_second_implementer_waits_for_the_first_and_builds_on_its_user_service() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let dir = tempfile::tempdir().expect("tempdir");
    let workspace = dir.path().join("ws");
    std::fs::create_dir_all(&workspace).expect("workspace");
    let journal = dir.path().join("journal.db");
    let input = serde_json::json!({"workspace": workspace}).to_string();
    let mut cmd = muster(root);
    cmd.env("IMPLEMENTER_DELAY", "0.3")
        .args([
            "run",
            "examples/user-service/workflow.toml",
            "--actors",
            "examples/user-service/actors",
            "--json",
            "--input",
            &input,
            "--journal",
        ])
        .arg(&journal);
    let out = common::output_within(120, cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
    assert_eq!(doc["status"], "completed", "{doc:#}");
    let outputs = &doc["outputs"];
    let (first, second) = if outputs["accounts"]["built_on"] == true {
        (&outputs["auth"], &outputs["accounts"])
    } else {
        (&outputs["accounts"], &outputs["auth"])
    };
    assert_eq!(first["built_on"], false, "{doc:#}");
    assert_eq!(
        second["built_on"], true,
        "the second built on the first's class: {doc:#}"
    );
    assert_eq!(second["classes"], 1, "one UserService: {doc:#}");
    let methods: Vec<&str> = second["methods"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for m in ["create_user", "get_user", "set_password", "check_password"] {
        assert!(methods.contains(&m), "{m} in {methods:?}");
    }
    let source = std::fs::read_to_string(workspace.join("src/user_service/service.py"))
        .expect("the service file");
    assert_eq!(source.matches("class UserService").count(), 1, "{source}");

    // The journal shows the wait.
    let run = doc["run"].as_str().unwrap_or_default().to_string();
    let mut cmd = muster(root);
    cmd.args(["inspect", "--format", "json", "--run", &run, "--journal"])
        .arg(&journal);
    let out = common::output_within(60, cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("scope_waiting"), "{text}");
}
