//! What `muster run` says when a run fails, and how it stops when asked to: a failed run
//! names the step that failed and its last error (an agent's error text, a contract
//! violation with its path, a CEL error), in the summary and in `--json`; SIGTERM, like
//! Ctrl-C, cancels the running tasks, flushes the journal and exits 143.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use muster::journal::Event;
use muster::journal::sqlite::read_journal;
use serde_json::Value;

fn setup(workflow: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::create_dir_all(p.join("actors")).expect("actors dir");
    std::fs::create_dir_all(p.join("schemas")).expect("schemas dir");
    std::fs::write(
        p.join("schemas/obj.schema.json"),
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}"#,
    )
    .expect("schema");
    std::fs::write(
        p.join("schemas/answer.schema.json"),
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "required": ["answer"], "properties": {"answer": {"type": "string"}}}"#,
    )
    .expect("schema");
    let fixtures =
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("tests/fixtures/agents");
    std::fs::write(
        p.join("actors/echo.toml"),
        "name = \"echo\"\nreplicas = 2\n[[capabilities]]\nname = \"echo\"\ninput = \"obj\"\noutput = \"obj\"\n[[capabilities]]\nname = \"answer\"\ninput = \"obj\"\noutput = \"answer\"\n[backend]\nkind = \"function\"\nname = \"echo\"\n",
    )
    .expect("manifest");
    for (name, script) in [
        ("failing", "fail_oneshot.py"),
        ("sleepy", "sleepy_oneshot.py"),
    ] {
        std::fs::write(
            p.join(format!("actors/{name}.toml")),
            format!(
                "name = \"{name}\"\nreplicas = 2\n[[capabilities]]\nname = \"{name}\"\ninput = \"obj\"\noutput = \"obj\"\n[backend]\nkind = \"command\"\nprogram = \"python3\"\nargs = [{:?}]\nmode = \"oneshot\"\n",
                fixtures.join(script).display().to_string()
            ),
        )
        .expect("manifest");
    }
    std::fs::write(p.join("wf.toml"), workflow).expect("workflow");
    dir
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = crate::support::common::muster_cmd(dir);
    c.args(args).stdin(Stdio::null());
    c
}

fn finish(child: Child) -> Output {
    crate::support::common::wait_within(child, 60, "muster")
}

/// Runs muster with `args` to its end, stdout and stderr captured.
fn captured(dir: &Path, args: &[&str]) -> Output {
    finish(
        command(dir, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("muster starts"),
    )
}

/// Runs `wf.toml` with `--json`; returns the exit code and the document.
fn run_json(dir: &Path) -> (Option<i32>, Value, String) {
    run_json_with(dir, &[])
}

/// As [`run_json`], with more arguments.
fn run_json_with(dir: &Path, more: &[&str]) -> (Option<i32>, Value, String) {
    let mut args = vec![
        "run",
        "wf.toml",
        "--input",
        "{\"n\": 1}",
        "--journal",
        "j.db",
        "--json",
    ];
    args.extend_from_slice(more);
    let out = captured(dir, &args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("one JSON document ({e}); stderr: {stderr}"));
    (out.status.code(), doc, stderr)
}

fn through_fail_terminal(capability: &str) -> String {
    format!(
        r#"
name = "doomed"
input = "obj"
start = "work"

[steps.work]
capability = "{capability}"
timeout = "10s"
attempts = 2
on_exhausted = "stop"
next = "done"

[steps.done]
terminal = "done"

[steps.stop]
terminal = "fail"
"#
    )
}

#[test]
fn a_failed_run_names_the_step_that_failed_and_the_agents_error() {
    let dir = setup(&through_fail_terminal("failing"));
    let (code, doc, stderr) = run_json(dir.path());
    assert_eq!(code, Some(1), "{doc} {stderr}");
    assert_eq!(doc["status"], "failed");
    assert_eq!(
        doc["step"], "work",
        "the step that failed, not the terminal: {doc}"
    );
    let reason = doc["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the input makes no sense to me"),
        "the agent's own error text: {reason}"
    );
}

#[test]
fn a_failed_run_names_the_contract_violation_and_its_path() {
    let dir = setup(&through_fail_terminal("answer"));
    let (code, doc, _) = run_json(dir.path());
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(doc["step"], "work");
    let reason = doc["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("contract_violation"), "{reason}");
    assert!(
        reason.contains("answer"),
        "names what the output lacks: {reason}"
    );
}

#[test]
fn a_failed_run_names_a_cel_error_in_a_transition() {
    let dir = setup(
        r#"
name = "divides"
input = "obj"
start = "work"

[steps.work]
capability = "echo"
timeout = "10s"
attempts = 1
on_exhausted = "fail"
next = [
  { when = "1 / (run.input.n - run.input.n) > 0", goto = "done" },
  { otherwise = true, goto = "done" },
]

[steps.done]
terminal = "done"
"#,
    );
    let (code, doc, _) = run_json(dir.path());
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(doc["step"], "work");
    let reason = doc["reason"].as_str().unwrap_or_default();
    assert!(
        reason.to_lowercase().contains("divi"),
        "the CEL error: {reason}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_cancels_the_running_tasks_flushes_and_exits_143() {
    let dir = setup(
        r#"
name = "slow"
input = "obj"
start = "a"

[steps.a]
capability = "sleepy"
timeout = "30s"
attempts = 1
on_exhausted = "fail"
next = "b"

[steps.b]
capability = "sleepy"
timeout = "30s"
attempts = 1
on_exhausted = "fail"
next = "c"

[steps.c]
capability = "sleepy"
timeout = "30s"
attempts = 1
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"
"#,
    );
    let child = command(
        dir.path(),
        &["run", "wf.toml", "--input", "{}", "--journal", "j.db"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("muster starts");
    // Wait (bounded) until a task is leased, then ask the process to stop.
    let path = dir.path().join("j.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leased = read_journal(&path, 0)
            .map(|r| {
                r.iter()
                    .any(|r| matches!(r.event, Event::LeaseGranted { .. }))
            })
            .unwrap_or(false);
        if leased {
            break;
        }
        assert!(Instant::now() < deadline, "no lease within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: `kill` with a pid we own and a valid signal number has no memory effects.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let out = finish(child);
    assert_eq!(
        out.status.code(),
        Some(143),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = read_journal(&path, 0).expect("the journal opens");
    let ended = records.iter().any(|r| {
        matches!(
            r.event,
            Event::TaskCancelled { .. } | Event::ResultAccepted { .. }
        )
    });
    assert!(
        ended,
        "the task in flight was cancelled (or had finished), and journaled"
    );
}

#[test]
fn a_shard_count_out_of_range_is_refused_with_exit_2_and_any_valid_count_runs_the_workflow() {
    let dir = setup(&through_fail_terminal("echo"));
    for bad in ["0", "257", "many"] {
        let out = captured(
            dir.path(),
            &["run", "wf.toml", "--journal", "j.db", "--shards", bad],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--shards {bad}: {stderr}");
        assert!(
            stderr.contains("--shards") && stderr.contains("not a shard count"),
            "--shards {bad}: {stderr}"
        );
    }
    for good in ["1", "3", "auto"] {
        let (code, doc, stderr) = run_json_with(dir.path(), &["--shards", good]);
        assert_eq!(code, Some(0), "--shards {good}: {stderr}");
        assert_eq!(doc["status"], "completed", "--shards {good}: {doc}");
    }
}
