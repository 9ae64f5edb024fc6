//! muster is an MCP server: `muster mcp` over stdio and `muster serve`'s `/mcp` over
//! streamable HTTP, each driven by the official Python client (`mcp` on PyPI, installed by
//! `scripts/mcp-servers` when absent; tests/fixtures/mcp/drive_muster.py). Over one session
//! the client lists the tools, calls a capability tool and two workflow tools (one with
//! progress, one that stops at its gate), decides the gate, and follows the run to its
//! end; errors are tool errors with the HTTP API's messages. `/mcp` without a token is a
//! 401. Real processes on loopback, every wait bounded, stopped by pid.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::support::common::output_within;
use crate::support::node as node_support;
use node_support::{Serving, serve};

const GATED: &str = include_str!("../fixtures/workflows/gated.toml");
const DRIVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/mcp/drive_muster.py"
);
const ADMIN: &str = "mcp-test-admin-token-0001";
const VIEWER: &str = "mcp-test-viewer-token-0002";

/// The venv's python with the `mcp` client, installed by `scripts/mcp-servers` if absent.
fn python() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        crate::support::common::script_paths("mcp-servers", &["venv"])
            .remove(0)
            .join("bin/python")
    })
}

/// A cast with the echo agent, workflows `plain` (one echo step) and `gated` (echo, gate
/// `ask`, echo), and a token file with an admin and a viewer.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    node_support::write_cast(p, &["workflows", "j"], 2);
    std::fs::write(p.join("workflows/gated.toml"), GATED).expect("workflow");
    std::fs::write(
        p.join("workflows/plain.toml"),
        node_support::one_step("plain", "echo", "10s", 2),
    )
    .expect("workflow");
    std::fs::write(
        p.join("tokens.txt"),
        format!("{ADMIN} admin\n{VIEWER} viewer watcher\n"),
    )
    .expect("tokens");
    dir
}

/// Runs the driver with `args`, bounded; its JSON document.
fn drive(args: &[&str]) -> Value {
    let mut cmd = std::process::Command::new(python());
    cmd.arg(DRIVER).args(args);
    let out = output_within(240, cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "the MCP client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the driver printed no JSON ({e}): {stdout}"))
}

/// What both transports must show.
fn check_session(doc: &Value) {
    assert_eq!(doc["server"], "muster", "{doc}");
    let tools = doc["tools"].as_object().expect("tools");
    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cap_echo",
            "muster_decide",
            "muster_run",
            "muster_runs",
            "wf_gated",
            "wf_plain"
        ],
        "{doc}"
    );
    // The capability's contract is the tool's schemas.
    assert_eq!(tools["cap_echo"]["input"]["type"], "object", "{doc}");
    assert_eq!(tools["cap_echo"]["output"]["type"], "object", "{doc}");
    // A capability call answers the task's output, structured.
    assert_eq!(doc["echo"]["is_error"], false, "{doc}");
    assert_eq!(doc["echo"]["structured"], json!({"x": 1}), "{doc}");
    // A workflow call answers the run's outcome, with a progress notification per step.
    assert_eq!(doc["plain"]["is_error"], false, "{doc}");
    assert_eq!(doc["plain"]["structured"]["status"], "completed", "{doc}");
    assert_eq!(
        doc["plain"]["structured"]["input"],
        json!({"y": 2}),
        "{doc}"
    );
    let progress = doc["plain_progress"].as_array().expect("progress");
    assert!(!progress.is_empty(), "no progress notification: {doc}");
    assert_eq!(progress[0]["total"], 2.0, "{doc}");
    // A run that reaches a gate answers waiting there.
    assert_eq!(doc["gated"]["structured"]["status"], "waiting", "{doc}");
    assert_eq!(doc["gated"]["structured"]["gate"], "ask", "{doc}");
    assert_eq!(doc["decide"]["is_error"], false, "{doc}");
    assert_eq!(doc["decide"]["structured"]["approved"], true, "{doc}");
    // Errors are tool errors with the HTTP API's words (the second decision finds the
    // gate decided, or the run already past it and ended).
    assert_eq!(doc["decide_again"]["is_error"], true, "{doc}");
    assert!(
        doc["decide_again"]["text"].as_str().is_some_and(|t| {
            t.contains("gate `ask` of run") && t.ends_with("is already decided (approved)")
                || t.ends_with("has already ended (completed); there is nothing to decide")
        }),
        "{doc}"
    );
    assert_eq!(doc["final"]["structured"]["status"], "completed", "{doc}");
    let runs = doc["runs"]["structured"]["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{doc}");
    assert_eq!(doc["bad_run"]["is_error"], true, "{doc}");
    assert!(
        doc["bad_run"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("is not a run or task id")),
        "{doc}"
    );
    assert_eq!(doc["unknown"]["is_error"], true, "{doc}");
}

#[test]
fn muster_mcp_over_stdio_serves_capabilities_workflows_and_gates() {
    let dir = setup();
    let p = dir.path().display().to_string();
    let doc = drive(&[
        "stdio",
        &p,
        env!("CARGO_BIN_EXE_muster"),
        "mcp",
        "--workflows",
        "workflows",
        "--journal",
        "j/journal.db",
    ]);
    check_session(&doc);
    // The decision is journaled as the local user's.
    assert_eq!(
        doc["final"]["structured"]["gates"][0]["decided"]["note"], "by mcp-stdio: by mcp",
        "{doc}"
    );
}

fn start(dir: &Path) -> Serving {
    serve(dir, &["--token-file", "tokens.txt"], &[])
}

#[test]
fn muster_serve_answers_mcp_at_slash_mcp_behind_the_token() {
    let dir = setup();
    let node = start(dir.path());
    let url = format!("{}/mcp", node.url);
    let doc = drive(&["http", &url, ADMIN]);
    check_session(&doc);
}

#[test]
fn slash_mcp_refuses_a_request_without_a_token_and_a_viewer_cannot_decide() {
    let dir = setup();
    let node = start(dir.path());
    let url = format!("{}/mcp", node.url);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});
    let (code, body) = crate::support::common::real(async {
        let c = node_support::client();
        let r = c
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(init.to_string())
            .send()
            .await
            .expect("the node answers");
        let code = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (code, body)
    });
    assert_eq!(code, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("a valid token is required")),
        "{body}"
    );
    // A viewer lists and reads, and is refused what needs another role, in the API's words.
    let doc = drive(&["http", &url, VIEWER]);
    assert_eq!(doc["echo"]["is_error"], true, "{doc}");
    assert!(
        doc["echo"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("needs role `submitter`")
                && t.contains("this token (watcher) is `viewer`")),
        "{doc}"
    );
}
