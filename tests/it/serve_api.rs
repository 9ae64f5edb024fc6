//! `muster serve`'s HTTP API, driven against the real binary on 127.0.0.1 with a free
//! port: every route and its error codes, a token on every route but /healthz (never in a
//! URL), the event stream resumed from an event id, a gate decided exactly once under
//! concurrent requests, a graceful stop with a run in flight and its resumption by the
//! next start, and the CLI as a client of the node. Every wait has a deadline; no timing
//! is asserted.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use node_support::{call_with, client};
use serde_json::{Value, json};

use crate::support::node as node_support;

const TOKEN: &str = "test-token-0123456789abcdef";

const GATED: &str = include_str!("../fixtures/workflows/gated.toml");

const PLAIN: &str = r#"
name = "plain"
input = "needx"
start = "one"

[steps.one]
capability = "echo"
timeout = "10s"
attempts = 2
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"
"#;

/// A temp dir with schemas, an echo agent, a slow stdio agent and three workflows.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    node_support::write_cast(p, &["workflows"], 2);
    std::fs::write(
        p.join("schemas/needx.schema.json"),
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "required": ["x"], "properties": {"x": {"type": "integer"}}}"#,
    )
    .expect("schema");
    std::fs::write(
        p.join("actors/echo.toml"),
        "name = \"echo\"\nreplicas = 2\n[[capabilities]]\nname = \"echo\"\ninput = \"obj\"\noutput = \"obj\"\n\
         [[capabilities]]\nname = \"strict\"\ninput = \"needx\"\noutput = \"obj\"\n\
         [backend]\nkind = \"function\"\nname = \"echo\"\n",
    )
    .expect("manifest");
    node_support::write_slow(p);
    std::fs::write(p.join("workflows/gated.toml"), GATED).expect("workflow");
    std::fs::write(p.join("workflows/plain.toml"), PLAIN).expect("workflow");
    std::fs::write(
        p.join("workflows/slow.toml"),
        node_support::one_step("slow", "slow", "60s", 2),
    )
    .expect("workflow");
    dir
}

/// A running `muster serve`, killed by pid when dropped.
struct Node {
    child: Child,
    url: String,
    start: Value,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_command(dir: &Path) -> Command {
    let mut c = crate::support::common::muster_cmd(dir);
    c.env("MUSTER_TEST_TOKEN", TOKEN)
        .env_remove("MUSTER_TOKEN")
        .args([
            "serve",
            "--workflows",
            "workflows",
            "--journal",
            "j/journal.db",
            "--listen",
            "127.0.0.1:0",
            "--token-env",
            "MUSTER_TEST_TOKEN",
            "--json",
        ]);
    c
}

/// Starts the node and reads its start line (failing after 60 s).
fn start(dir: &Path) -> Node {
    let mut child = serve_command(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("muster serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            panic!("muster serve printed no start line within 60 s");
        }
    };
    let start: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("start line is not JSON ({e}): {line:?}"));
    let url = start["url"].as_str().expect("url").to_string();
    Node { child, url, start }
}

/// A request with the token; returns the status and the JSON body.
async fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    call_with(method, url, body, Some(TOKEN)).await
}

/// Polls a run until `done` holds of its document (failing after 60 s).
async fn wait_run(node: &Node, run: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, doc) = call("GET", &format!("{}/v1/runs/{run}", node.url), None).await;
        assert_eq!(code, 200, "{doc}");
        if done(&doc) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} never got there: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_run(node: &Node, workflow: &str, input: Value) -> String {
    let (code, doc) = call(
        "POST",
        &format!("{}/v1/runs", node.url),
        Some(json!({"workflow": workflow, "input": input})),
    )
    .await;
    assert_eq!(code, 202, "{doc}");
    doc["run"].as_str().expect("run id").to_string()
}

#[tokio::test]
async fn healthz_is_open_and_every_other_route_refuses_a_request_without_the_token() {
    let dir = setup();
    let node = start(dir.path());
    let (code, doc) = call_with("GET", &format!("{}/healthz", node.url), None, None).await;
    assert_eq!((code, doc["ok"].clone()), (200, json!(true)));
    let id = "01a21ce1-5408-70b7-9e20-3a9f7602fbc8";
    let routes = [
        ("GET", "/v1/runs".to_string()),
        ("POST", "/v1/runs".to_string()),
        ("GET", format!("/v1/runs/{id}")),
        ("POST", format!("/v1/runs/{id}/gates/ask")),
        ("POST", format!("/v1/runs/{id}/cancel")),
        ("POST", "/v1/tasks".to_string()),
        ("GET", format!("/v1/tasks/{id}")),
        ("GET", "/v1/agents".to_string()),
        ("GET", "/v1/tree".to_string()),
        ("GET", "/v1/records".to_string()),
        ("GET", "/v1/events".to_string()),
        ("GET", "/metrics".to_string()),
        ("GET", "/v1/whoami".to_string()),
        ("GET", "/v1/workflows".to_string()),
        ("GET", "/v1/workflows/gated".to_string()),
    ];
    for (method, path) in &routes {
        let url = format!("{}{path}", node.url);
        let body = (*method == "POST").then(|| json!({"workflow": "gated", "input": {}}));
        for token in [None, Some("wrong-token-0123456789")] {
            let (code, doc) = call_with(method, &url, body.clone(), token).await;
            assert_eq!(code, 401, "{method} {path} with {token:?}: {doc}");
            assert!(doc["error"].as_str().is_some_and(|e| e.contains("token")));
        }
    }
    // Nothing was started by the refused POSTs.
    let (_, runs) = call("GET", &format!("{}/v1/runs", node.url), None).await;
    assert_eq!(runs["runs"], json!([]));
    // Tokens never travel in URLs: a `token` query parameter is refused (400, naming it),
    // on the event stream as anywhere else, with or without the header.
    for path in ["/v1/events", "/v1/agents"] {
        let url = format!("{}{path}?token={TOKEN}", node.url);
        for token in [None, Some(TOKEN)] {
            let (code, doc) = call_with("GET", &url, None, token).await;
            assert_eq!(
                (code, doc["field"].clone()),
                (400, json!("token")),
                "{path}: {doc}"
            );
            let e = doc["error"].as_str().unwrap_or_default();
            assert!(e.contains("Authorization: Bearer"), "{e}");
            assert!(!e.contains(TOKEN), "{e}");
        }
    }
}

#[tokio::test]
async fn bad_input_is_answered_400_404_409_413_or_422_naming_the_field_never_500() {
    let dir = setup();
    let node = start(dir.path());
    let u = &node.url;
    let runs = format!("{u}/v1/runs");
    // Not JSON, a missing field, an unknown field.
    let resp = client()
        .post(&runs)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 400);
    let (code, doc) = call("POST", &runs, Some(json!({"workflow": "plain"}))).await;
    assert_eq!((code, doc["field"].clone()), (400, json!("input")), "{doc}");
    let (code, doc) = call(
        "POST",
        &runs,
        Some(json!({"workflow": "plain", "input": {"x": 1}, "priority": 9})),
    )
    .await;
    assert_eq!(
        (code, doc["field"].clone()),
        (400, json!("priority")),
        "{doc}"
    );
    // An unknown workflow; an input that breaks the workflow's schema.
    let (code, doc) = call(
        "POST",
        &runs,
        Some(json!({"workflow": "nope", "input": {}})),
    )
    .await;
    assert_eq!(
        (code, doc["field"].clone()),
        (404, json!("workflow")),
        "{doc}"
    );
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("gated, plain, slow")
    );
    let (code, doc) = call(
        "POST",
        &runs,
        Some(json!({"workflow": "plain", "input": {"x": "one"}})),
    )
    .await;
    assert_eq!((code, doc["field"].clone()), (422, json!("input")), "{doc}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("the run input does not fit schema `needx`")
    );
    // Ids, queries.
    let (code, doc) = call("GET", &format!("{runs}/not-a-uuid"), None).await;
    assert_eq!((code, doc["field"].clone()), (400, json!("id")));
    let unknown = "01a21ce1-5408-70b7-9e20-3a9f7602fbc8";
    for path in [
        format!("{runs}/{unknown}"),
        format!("{u}/v1/tasks/{unknown}"),
    ] {
        let (code, _) = call("GET", &path, None).await;
        assert_eq!(code, 404, "{path}");
    }
    let (code, doc) = call("GET", &format!("{runs}?status=lost"), None).await;
    assert_eq!((code, doc["field"].clone()), (400, json!("status")));
    let (code, doc) = call("GET", &format!("{runs}?limit=0"), None).await;
    assert_eq!((code, doc["field"].clone()), (400, json!("limit")));
    let (code, _) = call("GET", &format!("{runs}?colour=red"), None).await;
    assert_eq!(code, 400);
    let (code, _) = call("GET", &format!("{u}/v1/records?after=-1"), None).await;
    assert_eq!(code, 400);
    // Gates and cancel on an unknown run; a bad decision.
    let (code, _) = call(
        "POST",
        &format!("{runs}/{unknown}/gates/ask"),
        Some(json!({"decision": "approve"})),
    )
    .await;
    assert_eq!(code, 404);
    let (code, doc) = call(
        "POST",
        &format!("{runs}/{unknown}/gates/ask"),
        Some(json!({"decision": "maybe"})),
    )
    .await;
    assert_eq!((code, doc["field"].clone()), (400, json!("decision")));
    let (code, _) = call("POST", &format!("{runs}/{unknown}/cancel"), None).await;
    assert_eq!(code, 404);
    // Tasks: an undeclared capability, bounds, a contract violation.
    let tasks = format!("{u}/v1/tasks");
    let (code, doc) = call(
        "POST",
        &tasks,
        Some(json!({"capability": "fly", "input": {}})),
    )
    .await;
    assert_eq!((code, doc["field"].clone()), (404, json!("capability")));
    let (code, doc) = call(
        "POST",
        &tasks,
        Some(json!({"capability": "echo", "input": {}, "attempts": 0})),
    )
    .await;
    assert_eq!((code, doc["field"].clone()), (422, json!("attempts")));
    let (code, doc) = call(
        "POST",
        &tasks,
        Some(json!({"capability": "echo", "input": {}, "timeout_ms": 999_999_999_999u64})),
    )
    .await;
    assert_eq!((code, doc["field"].clone()), (422, json!("timeout_ms")));
    let (code, doc) = call(
        "POST",
        &tasks,
        Some(json!({"capability": "strict", "input": {"x": "one"}})),
    )
    .await;
    assert_eq!((code, doc["field"].clone()), (422, json!("input")), "{doc}");
    // Over the body limit.
    let big = json!({"workflow": "plain", "input": {"x": 1, "pad": "x".repeat(2 << 20)}});
    let (code, _) = call("POST", &runs, Some(big)).await;
    assert_eq!(code, 413);
    // Unknown routes.
    let (code, _) = call("GET", &format!("{u}/v2/things"), None).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_run_submitted_over_http_completes_and_its_detail_names_owners_attempts_and_outputs() {
    let dir = setup();
    let node = start(dir.path());
    let mut ids = Vec::new();
    for x in 0..3 {
        ids.push(start_run(&node, "plain", json!({"x": x})).await);
    }
    for id in &ids {
        let doc = wait_run(&node, id, |d| d["status"] == "completed").await;
        let step = &doc["steps"][0];
        assert_eq!(step["step"], "one");
        assert_eq!(step["status"], "completed");
        assert!(
            step["owner"]
                .as_str()
                .is_some_and(|o| o.starts_with("echo#"))
        );
        assert_eq!(step["attempts"], 1);
        assert_eq!(step["reassignments"], 0);
        assert_eq!(step["output"], step["input"]);
        assert_eq!(doc["outcome"]["status"], "completed");
        assert_eq!(doc["input"]["x"], step["input"]["x"]);
    }
    // Newest first, two per page.
    let (code, page) = call("GET", &format!("{}/v1/runs?limit=2", node.url), None).await;
    assert_eq!(code, 200);
    let listed: Vec<&str> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[2].as_str(), ids[1].as_str()]);
    let next = page["next"].as_str().expect("a next page");
    let (_, page2) = call(
        "GET",
        &format!("{}/v1/runs?limit=2&after={next}", node.url),
        None,
    )
    .await;
    assert_eq!(page2["runs"][0]["run"], json!(ids[0]));
    assert_eq!(page2["next"], Value::Null);
    let (_, filtered) = call(
        "GET",
        &format!("{}/v1/runs?status=completed&workflow=gated", node.url),
        None,
    )
    .await;
    assert_eq!(filtered["runs"], json!([]));
}

#[tokio::test]
async fn a_gate_is_decided_exactly_once_under_sixteen_concurrent_requests() {
    let dir = setup();
    let node = start(dir.path());
    let run = start_run(&node, "gated", json!({"x": 1})).await;
    wait_run(&node, &run, |d| d["status"] == "waiting").await;
    let url = format!("{}/v1/runs/{run}/gates/ask", node.url);
    let mut all = Vec::new();
    for i in 0..16 {
        let url = url.clone();
        let decision = if i % 2 == 0 { "approve" } else { "reject" };
        all.push(tokio::spawn(async move {
            call(
                "POST",
                &url,
                Some(json!({"decision": decision, "note": i.to_string()})),
            )
            .await
        }));
    }
    let mut ok = Vec::new();
    let mut conflicts = 0;
    for h in all {
        let (code, doc) = h.await.expect("request task");
        match code {
            200 => ok.push(doc),
            409 => conflicts += 1,
            other => panic!("unexpected {other}: {doc}"),
        }
    }
    assert_eq!((ok.len(), conflicts), (1, 15));
    let approved = ok[0]["approved"].as_bool().unwrap();
    let doc = wait_run(&node, &run, |d| {
        d["status"] != "waiting" && d["status"] != "running"
    })
    .await;
    assert_eq!(doc["status"], if approved { "completed" } else { "failed" });
    let decided: Vec<&Value> = doc["gates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| !g["decided"].is_null())
        .collect();
    assert_eq!(decided.len(), 1, "one decision in the journal: {doc}");
    let (code, _) = call("POST", &url, Some(json!({"decision": "approve"}))).await;
    assert_eq!(code, 409);
}

#[tokio::test]
async fn a_cancelled_run_ends_cancelled_and_a_second_cancel_is_refused() {
    let dir = setup();
    let node = start(dir.path());
    let run = start_run(&node, "slow", json!({"delay_ms": 30000})).await;
    wait_run(&node, &run, |d| {
        d["steps"][0]["status"] == "running"
            && d["steps"][0]["leases"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
    })
    .await;
    let cancel = format!("{}/v1/runs/{run}/cancel", node.url);
    let (code, doc) = call("POST", &cancel, Some(json!({"reason": "no longer needed"}))).await;
    assert_eq!(
        (code, doc["status"].clone()),
        (200, json!("cancelled")),
        "{doc}"
    );
    let doc = wait_run(&node, &run, |d| d["steps"][0]["status"] == "cancelled").await;
    assert_eq!(doc["status"], "cancelled");
    assert!(doc["reason"].as_str().unwrap().contains("no longer needed"));
    let (code, _) = call("POST", &cancel, None).await;
    assert_eq!(code, 409);
}

#[tokio::test]
async fn a_bare_task_completes_and_agents_and_tree_show_the_cast() {
    let dir = setup();
    let node = start(dir.path());
    let (code, doc) = call(
        "POST",
        &format!("{}/v1/tasks", node.url),
        Some(json!({"capability": "echo", "input": {"hello": "world"}, "timeout_ms": 5000, "attempts": 2})),
    )
    .await;
    assert_eq!(code, 202, "{doc}");
    let task = doc["task"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let t = loop {
        let (code, t) = call("GET", &format!("{}/v1/tasks/{task}", node.url), None).await;
        if code == 200 && t["status"] == "completed" {
            break t;
        }
        assert!(Instant::now() < deadline, "the task never completed: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(t["output"], json!({"hello": "world"}));
    assert_eq!(t["capability"], "echo");
    assert!(t["owner"].as_str().unwrap().starts_with("echo#"));
    let (_, agents) = call("GET", &format!("{}/v1/agents", node.url), None).await;
    let ids: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{agents}");
    assert!(ids.contains(&"echo#1") && ids.contains(&"slow#0"));
    assert_eq!(agents["capabilities"], json!(["echo", "slow", "strict"]));
    let (_, tree) = call("GET", &format!("{}/v1/tree", node.url), None).await;
    assert_eq!(tree["id"], "root");
    let agents_sup = tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "agents")
        .expect("the agents supervisor");
    let echo = agents_sup["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "echo")
        .expect("the echo group");
    assert_eq!(echo["strategy"], "one_for_one");
    assert_eq!(echo["children"][1]["id"], "echo#1");
    assert_eq!(echo["children"][1]["restart"], "permanent");
    assert_eq!(echo["children"][1]["state"], "ready");
    assert_eq!(echo["children"][1]["restarts"], 0);
    // The task is counted in the node's metrics.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = client()
            .get(format!("{}/metrics", node.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("metrics");
        assert_eq!(resp.status().as_u16(), 200);
        let text = resp.text().await.expect("text");
        if text.contains("muster_tasks_submitted_total 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the task was never counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads an event stream until `stop` holds of the ids read (failing after 60 s).
async fn read_events(
    url: &str,
    last_event_id: Option<u64>,
    stop: impl Fn(&[(u64, Value)]) -> bool,
) -> Vec<(u64, Value)> {
    let mut req = client().get(url).bearer_auth(TOKEN);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let mut resp = req.send().await.expect("events");
    assert_eq!(resp.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    let mut events = Vec::new();
    while !stop(&events) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("the stream stopped short: {events:?}"))
            .expect("chunk")
            .expect("the stream ended early");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse::<u64>().ok();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str::<Value>(v).ok();
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id, data));
            }
        }
    }
    events
}

#[tokio::test]
async fn the_event_stream_resumes_after_last_event_id_with_no_gap_and_no_duplicate() {
    let dir = setup();
    let node = start(dir.path());
    let first = start_run(&node, "plain", json!({"x": 1})).await;
    wait_run(&node, &first, |d| d["status"] == "completed").await;
    let (_, page) = call("GET", &format!("{}/v1/records?limit=10000", node.url), None).await;
    let records = page["records"].as_array().unwrap();
    let last = records.last().unwrap()["seq"].as_u64().unwrap();
    assert!(last > 6);
    let resume_at = last / 2;
    // Resumed mid-history, then live: a second run's records follow with no gap.
    let url = format!("{}/v1/events", node.url);
    let reader = tokio::spawn({
        let url = url.clone();
        async move {
            read_events(&url, Some(resume_at), |ev| {
                ev.iter().any(|(_, d)| {
                    d["event"]["type"] == "run_ended" && d["seq"].as_u64() > Some(last)
                })
            })
            .await
        }
    });
    let second = start_run(&node, "plain", json!({"x": 2})).await;
    wait_run(&node, &second, |d| d["status"] == "completed").await;
    let events = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the stream delivered the second run")
        .expect("reader");
    let ids: Vec<u64> = events.iter().map(|(id, _)| *id).collect();
    let expected: Vec<u64> = (resume_at + 1..=resume_at + ids.len() as u64).collect();
    assert_eq!(
        ids, expected,
        "every record after the resume point, once, in order"
    );
    for (id, data) in &events {
        assert_eq!(data["seq"].as_u64(), Some(*id));
    }
    // Kept to one run: its records only (run records, and its tasks').
    let run_events = read_events(&format!("{url}?run={second}"), None, |ev| {
        ev.iter().any(|(_, d)| d["event"]["type"] == "run_ended")
    })
    .await;
    assert!(run_events.len() >= 5);
    for (_, d) in &run_events {
        let e = &d["event"];
        let mine = e["run"] == json!(second)
            || e["correlation"] == json!(second)
            || e["envelope"]["correlation_id"] == json!(second)
            || e["task"].is_string();
        assert!(mine, "a record of another run: {d}");
        assert_ne!(e["run"], json!(first));
    }
}

/// The dashboard's stream (`?after=now`) replays nothing: its first event names the
/// point it starts after, and every record written after it follows, once, in order.
#[tokio::test]
async fn a_stream_asked_to_start_now_replays_no_history_and_misses_nothing_after() {
    let dir = setup();
    let node = start(dir.path());
    let first = start_run(&node, "plain", json!({"x": 1})).await;
    wait_run(&node, &first, |d| d["status"] == "completed").await;
    let (_, page) = call("GET", &format!("{}/v1/records?limit=10000", node.url), None).await;
    let last = page["records"].as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    let url = format!("{}/v1/events?after=now", node.url);
    let (opened, mut open) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(async move {
        read_events(&url, None, |ev| {
            // The stream is open once its `start` event is out.
            if !ev.is_empty() {
                opened.send_replace(true);
            }
            ev.iter().any(|(_, d)| d["event"]["type"] == "run_ended")
        })
        .await
    });
    // A run started once the stream is open shows on it.
    tokio::time::timeout(Duration::from_secs(60), open.wait_for(|o| *o))
        .await
        .expect("the stream opened")
        .expect("the reader is alive");
    let second = start_run(&node, "plain", json!({"x": 2})).await;
    wait_run(&node, &second, |d| d["status"] == "completed").await;
    let events = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the stream delivered the second run")
        .expect("reader");
    let (start_id, start) = &events[0];
    assert_eq!(start["after"].as_u64(), Some(*start_id), "{start}");
    assert!(
        *start_id >= last,
        "started at {start_id}, before the first run's end {last}"
    );
    let ids: Vec<u64> = events[1..].iter().map(|(id, _)| *id).collect();
    let expected: Vec<u64> = (start_id + 1..=start_id + ids.len() as u64).collect();
    assert_eq!(
        ids, expected,
        "every record after the start, once, in order"
    );
    assert!(
        events[1..]
            .iter()
            .all(|(_, d)| d["event"]["run"] != json!(first)),
        "no record of the run that ended before the stream opened"
    );
    // A bad `after` is a 400 naming the field's forms.
    let (status, body) = call("GET", &format!("{}/v1/events?after=soon", node.url), None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("`now`"),
        "{body}"
    );
}

#[tokio::test]
async fn a_stream_resumed_from_zero_replays_a_journal_larger_than_its_batch_in_order() {
    let dir = setup();
    let node = start(dir.path());
    // Enough runs that the journal holds several replay batches.
    let mut runs = Vec::new();
    for x in 0..300 {
        runs.push(start_run(&node, "plain", json!({"x": x})).await);
    }
    for run in &runs {
        wait_run(&node, run, |d| d["status"] == "completed").await;
    }
    let (_, page) = call("GET", &format!("{}/v1/records?limit=10000", node.url), None).await;
    let last = page["records"].as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert!(
        last > 2 * muster::serve::events::REPLAY_BATCH as u64,
        "the journal holds {last} records, not several batches"
    );
    let events = read_events(&format!("{}/v1/events", node.url), Some(0), |ev| {
        ev.last().is_some_and(|(id, _)| *id >= last)
    })
    .await;
    let ids: Vec<u64> = events.iter().map(|(id, _)| *id).collect();
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(
        ids, expected,
        "every record, once, in order, across batches"
    );
}

#[cfg(unix)]
fn sigterm(child: &Child) {
    // SAFETY: kill(2) with a pid this test started; no memory is shared.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

/// Waits for the node to exit (failing after 60 s); returns its exit code.
fn wait_exit(node: &mut Node) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = node.child.try_wait().expect("try_wait") {
            return s.code();
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_stops_gracefully_with_a_run_in_flight_and_the_next_start_finishes_it() {
    use muster::journal::inspect::{RunState, runs};
    use muster::journal::sqlite::read_journal;

    let dir = setup();
    let mut node = start(dir.path());
    let run = start_run(&node, "slow", json!({"delay_ms": 1500})).await;
    wait_run(&node, &run, |d| {
        d["steps"][0]["leases"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    })
    .await;
    sigterm(&node.child);
    assert_eq!(wait_exit(&mut node), Some(0), "a graceful stop exits 0");
    // The run is unfinished in the journal: not failed, not cancelled.
    let records = read_journal(dir.path().join("j/journal.db"), 0).expect("journal");
    let summary = runs(&records)
        .into_iter()
        .find(|r| r.run.to_string() == run)
        .expect("the run is journaled");
    assert_eq!(summary.status, RunState::Unfinished);
    drop(node);
    // The next start resumes it and finishes it.
    let node = start(dir.path());
    assert_eq!(node.start["resumed"], 1, "{}", node.start);
    let doc = wait_run(&node, &run, |d| d["status"] == "completed").await;
    assert_eq!(doc["steps"][0]["status"], "completed");
    assert!(doc["steps"][0]["attempts"].as_u64() >= Some(2), "{doc}");
}

/// Runs a CLI command to its end (failing after 60 s).
fn muster(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut c = crate::support::common::muster_cmd(dir);
    c.env("MUSTER_TOKEN", TOKEN).args(args);
    crate::support::common::output_within(60, c)
}

fn stdout_json(o: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[tokio::test]
async fn the_cli_runs_approves_inspects_and_lists_agents_against_the_node() {
    let dir = setup();
    let node = start(dir.path());
    let d = dir.path();
    let u = node.url.as_str();
    let agents = muster(d, &["agents", "--server", u, "--json"]);
    assert_eq!(agents.status.code(), Some(0));
    assert_eq!(
        stdout_json(&agents)["agents"].as_array().map(Vec::len),
        Some(3)
    );
    let text = muster(d, &["agents", "--server", u]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("echo#1"));
    // A run stops at its gate: exit code 3, as locally.
    let run = muster(
        d,
        &[
            "run",
            "workflows/gated.toml",
            "--server",
            u,
            "--input",
            "{\"x\": 1}",
            "--json",
        ],
    );
    assert_eq!(
        run.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let doc = stdout_json(&run);
    assert_eq!(doc["status"], "waiting");
    let id = doc["run"].as_str().unwrap().to_string();
    assert!(doc["decide"].as_str().unwrap().contains("--server"));
    // Approved by a prefix of its id; the node goes on with the run.
    let approve = muster(d, &["approve", "--server", u, &id[..24], "ask", "--json"]);
    assert_eq!(
        approve.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&approve.stdout)
    );
    assert_eq!(stdout_json(&approve)["approved"], true);
    let again = muster(d, &["approve", "--server", u, &id, "ask"]);
    assert_eq!(again.status.code(), Some(2), "a second decision is refused");
    wait_run(&node, &id, |d| d["status"] == "completed").await;
    // A run to its end by name, with the summary table.
    let plain = muster(d, &["run", "plain", "--server", u, "--input", "{\"x\": 5}"]);
    assert_eq!(plain.status.code(), Some(0));
    let out = String::from_utf8_lossy(&plain.stdout);
    assert!(out.contains("completed") && out.contains("echo#"), "{out}");
    let bad = muster(
        d,
        &[
            "run",
            "plain",
            "--server",
            u,
            "--input",
            "{\"x\": \"five\"}",
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
    // Inspect reads the node's journal: the same lines as reading its file.
    let inspect = muster(d, &["inspect", "--server", u, "--run", &id, "--json"]);
    assert_eq!(inspect.status.code(), Some(0));
    let local = muster(
        d,
        &[
            "inspect",
            "--journal",
            "j/journal.db",
            "--run",
            &id,
            "--json",
        ],
    );
    assert_eq!(local.status.code(), Some(0));
    let remote = String::from_utf8_lossy(&inspect.stdout).to_string();
    assert!(
        remote.contains(&id) && remote.lines().count() > 3,
        "{remote}"
    );
    assert_eq!(remote, String::from_utf8_lossy(&local.stdout));
    // Without a token, the node refuses and the CLI says so (exit 2).
    let out = muster(
        d,
        &["agents", "--server", u, "--token-env", "NO_SUCH_VAR_HERE"],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn a_workflow_is_served_as_a_graph_with_its_input_schema() {
    let dir = setup();
    let node = start(dir.path());
    let (code, list) = call("GET", &format!("{}/v1/workflows", node.url), None).await;
    assert_eq!(code, 200, "{list}");
    let names: Vec<&str> = list["workflows"]
        .as_array()
        .expect("workflows")
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, ["gated", "plain", "slow"]);
    let (code, wf) = call("GET", &format!("{}/v1/workflows/plain", node.url), None).await;
    assert_eq!(code, 200, "{wf}");
    assert_eq!(wf["start"], "one");
    assert_eq!(wf["input_schema"]["required"], json!(["x"]));
    let edges = wf["edges"].as_array().expect("edges");
    assert!(
        edges
            .iter()
            .any(|e| e["from"] == "one" && e["to"] == "done" && e["kind"] == "next"),
        "{wf}"
    );
    assert!(
        edges
            .iter()
            .any(|e| e["from"] == "one" && e["to"] == "fail" && e["kind"] == "exhausted"),
        "{wf}"
    );
    // `fail` is no step of the file: it is listed as an implicit end.
    let fail = wf["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == "fail")
        .cloned();
    assert_eq!(
        fail,
        Some(json!({"name": "fail", "kind": "fail", "implicit": true}))
    );
    let (code, doc) = call("GET", &format!("{}/v1/workflows/nope", node.url), None).await;
    assert_eq!((code, doc["field"].clone()), (404, json!("name")), "{doc}");
    assert!(doc["error"].as_str().is_some_and(|e| e.contains("plain")));
}

#[test]
fn under_strict_a_workflow_with_findings_refuses_the_start_with_them() {
    let dir = setup();
    std::fs::write(
        dir.path().join("workflows/broken.toml"),
        PLAIN
            .replace("name = \"plain\"", "name = \"broken\"")
            .replace(
                "capability = \"echo\"",
                "capability = \"nobody.serves.this\"",
            ),
    )
    .expect("workflow");
    let mut child = serve_command(dir.path())
        .arg("--strict")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("muster serve started with a broken workflow");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nobody.serves.this"));
}
