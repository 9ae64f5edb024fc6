//! A2A, both ways, with real parts: `muster serve` is an A2A agent driven by the official
//! `a2a-sdk` client (card resolved, a capability and a workflow sent and followed to
//! completed, a run streamed, a gate answered, a run cancelled), and a remote agent served
//! by `a2a-sdk`'s server is used through `[backend] kind = "a2a"` in workflows (its data and
//! text artifacts as outputs, a failure reassigned, a failure that fails the run with the
//! remote's reason, a timed-out attempt cancelled at the remote). `a2a-sdk` is installed by
//! `scripts/a2a-sdk` when absent. Real processes on loopback, real clock, bounded waits;
//! every process is stopped by pid.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::common::{muster_within, output_within, real};
use crate::support::node as node_support;
use node_support::{Serving, call_with, serve};

const ADMIN: &str = "a2a-admin-token-0123456789abcdef";
const SUB: &str = "a2a-submitter-token-0123456789ab";
const GATED: &str = include_str!("../fixtures/workflows/gated.toml");

/// The venv `scripts/a2a-sdk` made.
fn venv() -> &'static PathBuf {
    static V: OnceLock<PathBuf> = OnceLock::new();
    V.get_or_init(|| crate::support::common::script_paths("a2a-sdk", &["venv"]).remove(0))
}

fn python() -> String {
    venv().join("bin/python").display().to_string()
}

/// Runs the a2a-sdk client script against `url` with `token`: its exit code and the JSON
/// documents it printed, one per line.
fn client(url: &str, token: &str, args: &[&str]) -> (i32, Vec<Value>) {
    let mut cmd = std::process::Command::new(python());
    cmd.arg("tests/fixtures/a2a/client.py")
        .arg(url)
        .arg(token)
        .args(args);
    let out = output_within(180, cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let docs = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{stdout}"))
        })
        .collect();
    (out.status.code().unwrap_or(-1), docs)
}

/// The one document a client command printed, which must have succeeded.
fn client_one(url: &str, token: &str, args: &[&str]) -> Value {
    let (code, docs) = client(url, token, args);
    assert_eq!(code, 0, "client {args:?} failed: {docs:?}");
    assert_eq!(docs.len(), 1, "client {args:?}: {docs:?}");
    docs.into_iter().next().unwrap_or_default()
}

/// A node with the echo agent, the slow agent, workflows `plain` and `gated`, and two
/// tokens (admin, submitter).
fn node() -> (tempfile::TempDir, Serving) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    node_support::write_cast(p, &["workflows"], 2);
    node_support::write_slow(p);
    std::fs::write(p.join("workflows/gated.toml"), GATED).expect("workflow");
    std::fs::write(
        p.join("workflows/plain.toml"),
        node_support::one_step("plain", "echo", "10s", 2),
    )
    .expect("workflow");
    std::fs::write(
        p.join("tokens.txt"),
        format!("{ADMIN}\tadmin root\n{SUB}\tsubmitter sam\n"),
    )
    .expect("tokens");
    let node = serve(p, &["--token-file", "tokens.txt"], &[]);
    (dir, node)
}

fn state(task: &Value) -> &str {
    task["status"]["state"].as_str().unwrap_or_default()
}

#[test]
fn the_a2a_sdk_client_resolves_the_card_and_runs_a_capability_and_a_workflow() {
    let (_dir, node) = node();
    let url = node.url.as_str();
    let card = client_one(url, SUB, &["card"]);
    let skills: Vec<&str> = card["skills"]
        .as_array()
        .expect("skills")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    for want in ["echo", "slow", "workflow:plain", "workflow:gated"] {
        assert!(skills.contains(&want), "skill {want} in {skills:?}");
    }
    assert_eq!(
        card["supportedInterfaces"][0]["url"],
        json!(format!("{url}/a2a"))
    );
    assert_eq!(card["supportedInterfaces"][0]["protocolBinding"], "JSONRPC");
    assert_eq!(
        card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"],
        "Bearer"
    );
    assert!(
        card["skills"][0]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("\"type\":\"object\""),
        "a capability's skill carries its schemas: {card:#}"
    );

    // A capability: one delegated task, journaled; the A2A task id is the muster task id.
    let task = client_one(url, SUB, &["send", "echo", r#"{"word": "hello"}"#]);
    assert_eq!(state(&task), "TASK_STATE_COMPLETED", "{task:#}");
    assert_eq!(
        task["artifacts"][0]["parts"][0]["data"],
        json!({"word": "hello"})
    );
    let id = task["id"].as_str().expect("id");
    let (code, view) = real(call_with(
        "GET",
        &format!("{url}/v1/tasks/{id}"),
        None,
        Some(SUB),
    ));
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["status"], "completed");
    assert_eq!(view["sender"], "a2a");
    let again = client_one(url, SUB, &["get", id]);
    assert_eq!(state(&again), "TASK_STATE_COMPLETED");

    // A workflow: a run, whose artifact is each step's output.
    let run = client_one(url, SUB, &["send", "workflow:plain", r#"{"word": "run"}"#]);
    assert_eq!(state(&run), "TASK_STATE_COMPLETED", "{run:#}");
    assert_eq!(
        run["artifacts"][0]["parts"][0]["data"]["one"],
        json!({"word": "run"})
    );
    let (code, view) = real(call_with(
        "GET",
        &format!("{url}/v1/runs/{}", run["id"].as_str().unwrap_or_default()),
        None,
        Some(SUB),
    ));
    assert_eq!((code, view["status"].as_str()), (200, Some("completed")));

    // Returned at once, then followed to completed with GetTask.
    let early = client_one(
        url,
        SUB,
        &[
            "send",
            "slow",
            r#"{"n": "x", "delay_ms": 300}"#,
            "--immediate",
        ],
    );
    assert!(
        ["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING"].contains(&state(&early)),
        "{early:#}"
    );
    let id = early["id"].as_str().expect("id").to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let t = client_one(url, SUB, &["get", &id]);
        if state(&t) == "TASK_STATE_COMPLETED" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never completed: {t:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_streamed_run_reports_its_states_until_it_completes() {
    let (_dir, node) = node();
    let (code, events) = client(
        &node.url,
        SUB,
        &["stream", "workflow:plain", r#"{"word": "streamed"}"#],
    );
    assert_eq!(code, 0, "{events:?}");
    assert!(
        events[0].get("task").is_some(),
        "the task first: {events:?}"
    );
    // A run that ends before the first event is read is shown ended in that first task.
    let last = events.last().expect("events");
    let end = last["statusUpdate"]["status"]["state"]
        .as_str()
        .or(last["task"]["status"]["state"].as_str());
    assert_eq!(end, Some("TASK_STATE_COMPLETED"), "{events:?}");
    let artifact = events
        .iter()
        .find_map(|e| e.get("artifactUpdate").map(|a| a["artifact"].clone()))
        .or_else(|| events[0]["task"]["artifacts"].get(0).cloned())
        .unwrap_or_else(|| panic!("an artifact: {events:?}"));
    assert_eq!(
        artifact["parts"][0]["data"]["one"],
        json!({"word": "streamed"})
    );
}

#[test]
fn a_run_at_a_gate_is_input_required_then_answered_or_cancelled() {
    let (_dir, node) = node();
    let url = node.url.as_str();
    let waiting = client_one(url, SUB, &["send", "workflow:gated", "{}"]);
    assert_eq!(state(&waiting), "TASK_STATE_INPUT_REQUIRED", "{waiting:#}");
    let text = waiting["status"]["message"]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("gate `ask`") && text.contains("Ship it?"),
        "{text}"
    );
    let id = waiting["id"].as_str().expect("id").to_string();
    // A submitter may not answer a gate; an operator (here admin) may.
    let (code, docs) = client(url, SUB, &["answer", &id, "approve"]);
    assert_eq!(code, 3, "{docs:?}");
    assert!(docs[0].to_string().contains("operator"), "{docs:?}");
    let done = client_one(url, ADMIN, &["answer", &id, "approve"]);
    assert_eq!(state(&done), "TASK_STATE_COMPLETED", "{done:#}");

    // Another run waits; CancelTask cancels it, and the journal says so.
    let waiting = client_one(url, SUB, &["send", "workflow:gated", "{}"]);
    assert_eq!(state(&waiting), "TASK_STATE_INPUT_REQUIRED");
    let id = waiting["id"].as_str().expect("id").to_string();
    let cancelled = client_one(url, SUB, &["cancel", &id]);
    assert_eq!(state(&cancelled), "TASK_STATE_CANCELED", "{cancelled:#}");
    let (code, view) = real(call_with(
        "GET",
        &format!("{url}/v1/runs/{id}"),
        None,
        Some(SUB),
    ));
    assert_eq!(
        (code, view["status"].as_str()),
        (200, Some("cancelled")),
        "{view}"
    );
    // Cancelling it again: it has ended.
    let (code, docs) = client(url, SUB, &["cancel", &id]);
    assert_eq!(code, 3, "{docs:?}");
    assert!(docs[0].to_string().contains("already ended"), "{docs:?}");
}

#[test]
fn bad_a2a_requests_are_json_rpc_errors_that_say_what_is_wrong() {
    let (_dir, node) = node();
    let rpc = format!("{}/a2a", node.url);
    let post = |body: Value| real(call_with("POST", &rpc, Some(body), Some(SUB)));
    let cases: Vec<(Value, i64, &str)> = vec![
        (json!([1, 2]), -32600, "batches"),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {}}),
            -32601,
            "0.3",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "Nope", "params": {}}),
            -32601,
            "SendMessage",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"data": {}}]}}}),
            -32602,
            "metadata.skill",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"data": {}}], "metadata": {"skill": "nope"}}}}),
            -32602,
            "no skill `nope`",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [], "metadata": {"skill": "echo"}}}}),
            -32602,
            "no data or text part",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": 7}}),
            -32602,
            "params",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": uuid::Uuid::now_v7().to_string()}}),
            -32001,
            "no task or run",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "not-a-uuid"}}),
            -32001,
            "UUIDs",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "CancelTask", "params": {}}),
            -32602,
            "params.id",
        ),
    ];
    for (body, code, says) in cases {
        let (status, doc) = post(body.clone());
        assert_eq!(status, 200, "{body}: {doc}");
        assert_eq!(doc["error"]["code"], json!(code), "{body}: {doc}");
        let msg = doc["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{body}: `{msg}` should say `{says}`");
    }
    // Not JSON at all.
    let resp = real(async {
        node_support::client()
            .post(&rpc)
            .bearer_auth(SUB)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("answers")
            .json::<Value>()
            .await
            .expect("JSON")
    });
    assert_eq!(resp["error"]["code"], -32700, "{resp}");
    // Without a token: refused before any JSON-RPC (the card says how to authenticate).
    let (status, _) = real(call_with("POST", &rpc, Some(json!({})), None));
    assert_eq!(status, 401);
}

/// A remote A2A agent served by a2a-sdk (tests/fixtures/a2a/remote_agent.py), killed by
/// pid when dropped.
struct Remote {
    child: std::process::Child,
    card: String,
    cancel_log: PathBuf,
    started_log: PathBuf,
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn remote(dir: &Path) -> Remote {
    use std::process::{Command, Stdio};
    let cancel_log = dir.join("cancelled.txt");
    let started_log = dir.join("started.txt");
    let mut child = Command::new(python())
        .arg("tests/fixtures/a2a/remote_agent.py")
        .arg("--cancel-log")
        .arg(&cancel_log)
        .arg("--started-log")
        .arg(&started_log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the remote agent starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the remote agent printed no start line within 60 s");
        }
    };
    let doc: Value = serde_json::from_str(&line).expect("its start line is JSON");
    Remote {
        card: doc["card"].as_str().expect("card").to_string(),
        child,
        cancel_log,
        started_log,
    }
}

/// Waits (bounded) until `path` has some text.
fn wait_for_text(path: &Path, what: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if !text.trim().is_empty() {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never happened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const TEXT_SCHEMA: &str = r#"{"$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}"#;

/// A cast in `dir`: schemas `obj` and `text`, and the `remote` agent (`kind = "a2a"`).
fn remote_cast(dir: &Path, card: &str) {
    for d in ["actors", "schemas", "workflows"] {
        std::fs::create_dir_all(dir.join(d)).expect("dir");
    }
    std::fs::write(
        dir.join("schemas/obj.schema.json"),
        node_support::OBJ_SCHEMA,
    )
    .expect("schema");
    std::fs::write(dir.join("schemas/text.schema.json"), TEXT_SCHEMA).expect("schema");
    std::fs::write(
        dir.join("actors/remote.toml"),
        format!(
            "name = \"remote\"\nreplicas = 2\nconcurrency = 4\n\
             [[capabilities]]\nname = \"shout\"\nskill = \"upper\"\ninput = \"text\"\noutput = \"text\"\n\
             [[capabilities]]\nname = \"words\"\ninput = \"text\"\noutput = \"text\"\n\
             [[capabilities]]\nname = \"flaky\"\ninput = \"obj\"\noutput = \"obj\"\n\
             [[capabilities]]\nname = \"fail\"\ninput = \"obj\"\noutput = \"obj\"\n\
             [[capabilities]]\nname = \"slow\"\ninput = \"obj\"\noutput = \"obj\"\n\
             [backend]\nkind = \"a2a\"\ncard = \"{card}\"\npoll = \"50ms\"\n"
        ),
    )
    .expect("manifest");
}

/// `muster run WORKFLOW --input INPUT --json` in `dir`: its exit code and its document.
fn run(dir: &Path, workflow: &str, input: &str) -> (i32, Value) {
    let out = muster_within(
        180,
        &[
            "run",
            workflow,
            "--actors",
            "actors",
            "--schemas",
            "schemas",
            "--input",
            input,
            "--json",
        ],
        dir,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| {
        panic!(
            "one JSON document ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), doc)
}

#[test]
fn a_remote_a2a_agent_serves_workflow_steps_with_its_artifacts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let remote = remote(dir.path());
    remote_cast(dir.path(), &remote.card);
    std::fs::write(
        dir.path().join("workflows/loud.toml"),
        "name = \"loud\"\ninput = \"text\"\nstart = \"shout\"\n\n\
         [steps.shout]\ncapability = \"shout\"\ntimeout = \"30s\"\nattempts = 1\non_exhausted = \"fail\"\nnext = \"split\"\n\n\
         [steps.split]\ncapability = \"words\"\ninput = \"steps.shout.output\"\ntimeout = \"30s\"\nattempts = 1\non_exhausted = \"fail\"\nnext = \"done\"\n\n\
         [steps.done]\nterminal = \"done\"\n",
    )
    .expect("workflow");
    let (code, doc) = run(
        dir.path(),
        "workflows/loud.toml",
        r#"{"text": "hello a2a world"}"#,
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["status"], "completed", "{doc:#}");
    // A data artifact is the output; a text artifact is wrapped as {"text": ...}.
    assert_eq!(doc["outputs"]["shout"], json!({"text": "HELLO A2A WORLD"}));
    assert_eq!(
        doc["outputs"]["split"],
        json!({"text": "HELLO\nA2A\nWORLD"})
    );
    assert!(
        doc["owners"].to_string().contains("remote#"),
        "the remote's instance owns the steps: {doc:#}"
    );
}

#[test]
fn a_remote_failure_is_reassigned_or_fails_the_step_with_the_remotes_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let remote = remote(dir.path());
    remote_cast(dir.path(), &remote.card);
    let step = |cap: &str| {
        format!(
            "name = \"{cap}\"\ninput = \"obj\"\nstart = \"one\"\n\n\
             [steps.one]\ncapability = \"{cap}\"\ntimeout = \"30s\"\nattempts = 2\non_exhausted = \"fail\"\nnext = \"done\"\n\n\
             [steps.done]\nterminal = \"done\"\n"
        )
    };
    std::fs::write(dir.path().join("workflows/flaky.toml"), step("flaky")).expect("workflow");
    std::fs::write(dir.path().join("workflows/fail.toml"), step("fail")).expect("workflow");

    // The first remote task fails; the second attempt (a new remote task) completes.
    let (code, doc) = run(dir.path(), "workflows/flaky.toml", r#"{"key": "k1"}"#);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        doc["outputs"]["one"],
        json!({"key": "k1", "ok": true}),
        "{doc:#}"
    );
    assert_eq!(doc["reassignments"], 1, "{doc:#}");

    // Every remote task fails: the run fails, and says what the remote said.
    let (code, doc) = run(
        dir.path(),
        "workflows/fail.toml",
        r#"{"why": "no disk left"}"#,
    );
    assert_ne!(code, 0, "{doc:#}");
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let text = doc.to_string();
    assert!(
        text.contains("the remote cannot do this: no disk left"),
        "the remote's reason: {doc:#}"
    );
}

#[test]
fn a_timed_out_attempt_cancels_its_remote_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let remote = remote(dir.path());
    remote_cast(dir.path(), &remote.card);
    std::fs::write(
        dir.path().join("workflows/slow.toml"),
        "name = \"slow\"\ninput = \"obj\"\nstart = \"one\"\n\n\
         [steps.one]\ncapability = \"slow\"\ntimeout = \"2s\"\nattempts = 2\non_exhausted = \"fail\"\nnext = \"done\"\n\n\
         [steps.done]\nterminal = \"done\"\n",
    )
    .expect("workflow");
    let (code, doc) = run(dir.path(), "workflows/slow.toml", r#"{"delay_ms": 120000}"#);
    assert_ne!(code, 0, "{doc:#}");
    assert!(doc.to_string().contains("timeout"), "{doc:#}");
    // The remote was told: its executor logged the cancelled task (bounded wait).
    let started = wait_for_text(&remote.started_log, "a remote task");
    let cancelled = wait_for_text(&remote.cancel_log, "a CancelTask at the remote");
    let first = cancelled.lines().next().unwrap_or_default();
    assert!(
        started.lines().any(|l| l.starts_with(first)),
        "the cancelled task {first} is one muster started: {started}"
    );
}

#[test]
fn an_unreachable_remote_ends_the_attempt_agent_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut remote = remote(dir.path());
    remote_cast(dir.path(), &remote.card);
    std::fs::write(
        dir.path().join("workflows/slow.toml"),
        "name = \"slow\"\ninput = \"obj\"\nstart = \"one\"\n\n\
         [steps.one]\ncapability = \"slow\"\ntimeout = \"10s\"\nattempts = 1\non_exhausted = \"fail\"\nnext = \"done\"\n\n\
         [steps.done]\nterminal = \"done\"\n",
    )
    .expect("workflow");
    let mut cmd = crate::support::common::muster_cmd(dir.path());
    cmd.args([
        "run",
        "workflows/slow.toml",
        "--actors",
        "actors",
        "--schemas",
        "schemas",
        "--input",
        r#"{"delay_ms": 120000}"#,
        "--json",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("muster run starts");
    // Once the remote task runs, the remote goes away (killed by pid).
    wait_for_text(&remote.started_log, "the remote task");
    let _ = remote.child.kill();
    let _ = remote.child.wait();
    let out = crate::support::common::wait_within(child, 120, "muster run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let doc: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("one JSON document ({e}):\n{stdout}"));
    let text = doc.to_string();
    assert!(
        text.contains("agent_gone") && text.contains("the A2A agent at"),
        "the attempt ended agent_gone, naming the remote: {doc:#}"
    );
}
