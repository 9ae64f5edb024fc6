//! Admission control of `muster serve` (`--max-runs`, `--max-tasks`), against the real
//! binary on a free loopback port: beyond a bound `POST /v1/runs` or `POST /v1/tasks` is
//! answered 429 with `Retry-After` and a message naming the bound and its flag, every
//! refusal is counted in `muster_admission_refused_total`, a place comes back when its run
//! or task ends, and every run or task accepted completes. The bounds are filled with work
//! that cannot end until the test lets it (runs waiting at a gate, tasks of an agent that
//! holds them until a file appears), so no outcome depends on timing; every wait has a
//! deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::common::muster_within;
use crate::support::node::{
    self as node_support, Serving, call_with, refused_total, send, serve, wait_run,
};

const TOKEN: &str = "admission-token-0123456789abcdef";

const GATED: &str = include_str!("../fixtures/workflows/gated.toml");

/// A stdio agent that answers each task once the file named by `input.release` exists.
const HOLD_AGENT: &str = r#"
import json, os, sys, threading, time

lock = threading.Lock()

def send(msg):
    with lock:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

def work(msg):
    path = msg["input"].get("release", "")
    while path and not os.path.exists(path):
        time.sleep(0.02)
    send({"type": "result", "task_id": msg["task_id"], "epoch": msg["epoch"],
          "output": {"released": True}})

for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("type") == "task":
        threading.Thread(target=work, args=(msg,), daemon=True).start()
"#;

/// A temp dir with the echo agent, the hold agent (capability `hold`) and two workflows
/// (`gated`, `plain`).
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    node_support::write_cast(p, &["workflows"], 2);
    std::fs::write(p.join("hold.py"), HOLD_AGENT).expect("agent");
    std::fs::write(
        p.join("actors/hold.toml"),
        format!(
            "name = \"hold\"\nconcurrency = 8\n[[capabilities]]\nname = \"hold\"\ninput = \"obj\"\noutput = \"obj\"\n\
             [backend]\nkind = \"command\"\nprogram = \"python3\"\nargs = [{:?}]\nmode = \"stdio\"\n",
            p.join("hold.py").display().to_string()
        ),
    )
    .expect("manifest");
    std::fs::write(p.join("workflows/gated.toml"), GATED).expect("workflow");
    std::fs::write(
        p.join("workflows/plain.toml"),
        node_support::one_step("plain", "echo", "10s", 2),
    )
    .expect("workflow");
    dir
}

fn start(dir: &Path, bounds: &[&str]) -> Serving {
    let mut args = vec!["--token-env", "ADMISSION_TEST_TOKEN"];
    args.extend_from_slice(bounds);
    serve(dir, &args, &[("ADMISSION_TEST_TOKEN", TOKEN)])
}

/// A refusal at a bound: 429, `Retry-After: 1`, the API's error shape naming the flag.
fn assert_refused(code: u16, retry_after: &Option<String>, doc: &Value, flag: &str) {
    assert_eq!(code, 429, "{doc}");
    assert_eq!(retry_after.as_deref(), Some("1"), "{doc}");
    let e = doc["error"].as_str().unwrap_or_default();
    assert!(e.contains(flag) && e.contains("in flight"), "{e}");
    assert_eq!(doc.as_object().map(|o| o.len()), Some(1), "{doc}");
}

/// Submits a run of `plain` until it is accepted, waiting `Retry-After` after each 429
/// (failing after 120 s); returns the run and the refusals seen.
async fn submit_until_accepted(url: &str, x: u64) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut refused = 0;
    loop {
        let (code, retry, doc) = send(
            "POST",
            &format!("{url}/v1/runs"),
            Some(json!({"workflow": "plain", "input": {"x": x}})),
            Some(TOKEN),
        )
        .await;
        if code == 202 {
            return (doc["run"].as_str().expect("run").to_string(), refused);
        }
        assert_refused(code, &retry, &doc, "--max-runs 2");
        refused += 1;
        assert!(Instant::now() < deadline, "run {x} was never accepted");
        let secs: u64 = retry.as_deref().and_then(|r| r.parse().ok()).unwrap_or(1);
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
}

#[tokio::test]
async fn a_client_faster_than_max_runs_gets_429_with_retry_after_and_every_accepted_run_completes()
{
    let dir = setup();
    let node = start(dir.path(), &["--max-runs", "2"]);
    let u = node.url.clone();
    // Two runs waiting at their gate fill the bound: nothing ends until they are decided.
    let mut gated = Vec::new();
    for x in 0..2 {
        let (code, _, doc) = send(
            "POST",
            &format!("{u}/v1/runs"),
            Some(json!({"workflow": "gated", "input": {"x": x}})),
            Some(TOKEN),
        )
        .await;
        assert_eq!(code, 202, "{doc}");
        gated.push(doc["run"].as_str().expect("run").to_string());
    }
    // A burst beyond it: every one refused, nothing started.
    let mut burst = Vec::new();
    for x in 0..8 {
        let url = format!("{u}/v1/runs");
        burst.push(tokio::spawn(async move {
            send(
                "POST",
                &url,
                Some(json!({"workflow": "plain", "input": {"x": x}})),
                Some(TOKEN),
            )
            .await
        }));
    }
    for h in burst {
        let (code, retry, doc) = h.await.expect("request task");
        assert_refused(code, &retry, &doc, "--max-runs 2");
        assert!(
            doc["error"].as_str().unwrap().contains("2 runs in flight"),
            "{doc}"
        );
    }
    let mut refused = 8;
    assert_eq!(refused_total(&u, TOKEN, "run").await, refused);
    let (_, runs) = call_with("GET", &format!("{u}/v1/runs"), None, Some(TOKEN)).await;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(2), "{runs}");
    // Deciding the gates ends those runs and frees their places.
    for run in &gated {
        wait_run(&u, TOKEN, run, |d| d["status"] == "waiting").await;
        let (code, doc) = call_with(
            "POST",
            &format!("{u}/v1/runs/{run}/gates/ask"),
            Some(json!({"decision": "approve"})),
            Some(TOKEN),
        )
        .await;
        assert_eq!(code, 200, "{doc}");
    }
    // Twelve clients at once, each retrying after Retry-After: every run is accepted in
    // the end, and every accepted run completes.
    let mut clients = Vec::new();
    for x in 0..12 {
        let u = u.clone();
        clients.push(tokio::spawn(
            async move { submit_until_accepted(&u, x).await },
        ));
    }
    let mut accepted = Vec::new();
    for h in clients {
        let (run, seen) = h.await.expect("client task");
        accepted.push(run);
        refused += seen;
    }
    for run in gated.iter().chain(&accepted) {
        wait_run(&u, TOKEN, run, |d| d["status"] == "completed").await;
    }
    let (_, runs) = call_with("GET", &format!("{u}/v1/runs?limit=500"), None, Some(TOKEN)).await;
    let all = runs["runs"].as_array().expect("runs");
    assert_eq!(all.len(), 14, "{runs}");
    assert!(all.iter().all(|r| r["status"] == "completed"), "{runs}");
    // Every refusal was counted, and only those.
    assert_eq!(refused_total(&u, TOKEN, "run").await, refused);
    assert_eq!(refused_total(&u, TOKEN, "task").await, 0);
}

#[tokio::test]
async fn bare_tasks_beyond_max_tasks_get_429_and_a_place_comes_back_when_a_task_ends() {
    let dir = setup();
    let node = start(dir.path(), &["--max-tasks", "2"]);
    let u = node.url.clone();
    let release = dir.path().join("release");
    let hold = json!({"capability": "hold", "input": {"release": release}, "timeout_ms": 120000, "attempts": 1});
    let tasks = format!("{u}/v1/tasks");
    let mut held = Vec::new();
    for _ in 0..2 {
        let (code, _, doc) = send("POST", &tasks, Some(hold.clone()), Some(TOKEN)).await;
        assert_eq!(code, 202, "{doc}");
        held.push(doc["task"].as_str().expect("task").to_string());
    }
    // The bound counts every bare task, whatever its capability.
    let (code, retry, doc) = send("POST", &tasks, Some(hold.clone()), Some(TOKEN)).await;
    assert_refused(code, &retry, &doc, "--max-tasks 2");
    let (code, retry, doc) = send(
        "POST",
        &tasks,
        Some(json!({"capability": "echo", "input": {}})),
        Some(TOKEN),
    )
    .await;
    assert_refused(code, &retry, &doc, "--max-tasks 2");
    let mut refused = 2;
    assert_eq!(refused_total(&u, TOKEN, "task").await, refused);
    // A run's tasks are not bare tasks: runs go on.
    let (code, _, doc) = send(
        "POST",
        &format!("{u}/v1/runs"),
        Some(json!({"workflow": "plain", "input": {}})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 202, "{doc}");
    let run = doc["run"].as_str().expect("run").to_string();
    wait_run(&u, TOKEN, &run, |d| d["status"] == "completed").await;
    // Released, the held tasks complete, and their places come back.
    std::fs::write(&release, "go").expect("release file");
    for task in &held {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, t) = call_with("GET", &format!("{u}/v1/tasks/{task}"), None, Some(TOKEN)).await;
            if t["status"] == "completed" {
                assert_eq!(t["output"], json!({"released": true}));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "task {task} never completed: {t}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let echo = loop {
        let (code, retry, doc) = send(
            "POST",
            &tasks,
            Some(json!({"capability": "echo", "input": {"after": "release"}})),
            Some(TOKEN),
        )
        .await;
        if code == 202 {
            break doc["task"].as_str().expect("task").to_string();
        }
        // The place is given back just after the task's end is journaled.
        assert_refused(code, &retry, &doc, "--max-tasks 2");
        refused += 1;
        assert!(Instant::now() < deadline, "no place came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, t) = call_with("GET", &format!("{u}/v1/tasks/{echo}"), None, Some(TOKEN)).await;
        if t["status"] == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "task {echo} never completed: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused_total(&u, TOKEN, "task").await, refused);
    assert_eq!(refused_total(&u, TOKEN, "run").await, 0);
}

#[test]
fn bounds_outside_one_to_ten_million_refuse_the_start_and_help_shows_the_defaults() {
    let dir = setup();
    for (flag, value) in [
        ("--max-runs", "0"),
        ("--max-runs", "10000001"),
        ("--max-runs", "many"),
        ("--max-tasks", "0"),
        ("--max-tasks", "99999999999"),
    ] {
        let out = muster_within(
            60,
            &["serve", "--workflows", "workflows", flag, value],
            dir.path(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("1 to 10000000"),
            "{flag} {value}: {stderr}"
        );
    }
    let help = muster_within(60, &["serve", "--help"], dir.path());
    let text = String::from_utf8_lossy(&help.stdout);
    assert_eq!(help.status.code(), Some(0));
    for needle in [
        "--max-runs",
        "--max-tasks",
        "[default: 10000]",
        "429",
        "token role [name]",
    ] {
        assert!(
            text.contains(needle),
            "`muster serve --help` lacks {needle}:\n{text}"
        );
    }
}
