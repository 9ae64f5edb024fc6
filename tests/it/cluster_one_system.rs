//! The cluster as one system (issue 29), with real processes: a real nats-server on
//! loopback, control nodes (`muster serve --nats`) and workers (`muster worker`). Equal
//! work spreads: with both workers idle, a sequential run's steps go to both (the pick
//! rotates among equally loaded instances). Waits are bounded; no timing is asserted.

use crate::support::cluster as cluster_support;
use crate::support::node as node_support;

use std::collections::BTreeMap;

use cluster_support::*;
use serde_json::{Value, json};

/// A workflow of `n` sequential `echo` steps, then a gate `ship`.
fn chain(n: usize) -> String {
    let mut w = String::from("name = \"chain\"\ninput = \"obj\"\nstart = \"s1\"\n");
    for i in 1..=n {
        let next = if i == n {
            "ship".to_string()
        } else {
            format!("s{}", i + 1)
        };
        w += &format!(
            "\n[steps.s{i}]\ncapability = \"echo\"\ntimeout = \"30s\"\nattempts = 3\n\
             on_exhausted = \"fail\"\nnext = \"{next}\"\n"
        );
    }
    w += "\n[steps.ship]\ngate = \"ship it?\"\non_approve = \"done\"\non_reject = \"dropped\"\n\
          \n[steps.done]\nterminal = \"done\"\n\n[steps.dropped]\nterminal = \"fail\"\n";
    w
}

/// A temp dir with the `obj` schema, the echo agent (one instance per worker) and the
/// 12-step workflow.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    node_support::write_cast(p, &["workflows", "j"], 1);
    std::fs::write(p.join("workflows/chain.toml"), chain(12)).expect("workflow");
    dir
}

/// Waits until the node lists `n` remote echo instances.
async fn wait_echoes(node: &ControlNode, n: usize) {
    wait_for(node, "/v1/agents", 60, |d| {
        d["agents"]
            .as_array()
            .map(|a| a.iter().filter(|x| x["agent"] == json!("echo")).count() == n)
            .unwrap_or(false)
    })
    .await;
}

/// Accepted results per worker node (`echo#0@w1` is w1's).
fn results_per_worker(recs: &[Value]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for e in recs.iter().map(|r| &r["event"]) {
        if e["type"] == json!("result_accepted")
            && let Some((_, node)) = e["agent"].as_str().and_then(|a| a.rsplit_once('@'))
        {
            *n.entry(node.to_string()).or_default() += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_workers_idle_a_twelve_step_run_uses_both_workers() {
    let dir = setup();
    let p = dir.path();
    let nats = Nats::start(p);
    let c1 = control(p, &nats.url(), "c1", "j/c1.db");
    let _w1 = worker(p, &nats.url(), "w1");
    let _w2 = worker(p, &nats.url(), "w2");
    wait_echoes(&c1, 2).await;
    let run = start_run(&c1, "chain", json!({})).await;
    wait_for(&c1, &format!("/v1/runs/{run}"), 120, |d| {
        d["status"] == json!("waiting")
    })
    .await;
    let per = results_per_worker(&records(&c1).await);
    assert_eq!(per.values().sum::<usize>(), 12, "{per:?}");
    // One step at a time on two idle instances: they take turns.
    assert_eq!(
        per.keys().cloned().collect::<Vec<_>>(),
        ["w1", "w2"],
        "steps per worker: {per:?}"
    );
}

/// Reads `url`'s event stream until an event of type `kind` arrives (at most `secs`);
/// every event type seen, in order.
async fn events_until(url: &str, kind: &str, secs: u64) -> Vec<String> {
    let resp = node_support::client()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the stream answers");
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    let mut resp = resp;
    let mut seen = Vec::new();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no `{kind}` event within {secs} s; seen {seen:?}"))
            .expect("the stream reads");
        let Some(chunk) = chunk else {
            panic!("the stream ended before a `{kind}` event; seen {seen:?}");
        };
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = text.find("\n\n") {
            let event: String = text.drain(..i + 2).collect();
            if let Some(t) = event.lines().find_map(|l| l.strip_prefix("event: ")) {
                seen.push(t.to_string());
                if t == kind {
                    return seen;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_on_one_control_node_is_listed_read_streamed_and_decided_once_on_the_other() {
    let dir = setup();
    let p = dir.path();
    let nats = Nats::start(p);
    let c1 = control(p, &nats.url(), "c1", "j/c1.db");
    let c2 = control(p, &nats.url(), "c2", "j/c2.db");
    let _w1 = worker(p, &nats.url(), "w1");
    let _w2 = worker(p, &nats.url(), "w2");
    wait_echoes(&c1, 2).await;
    wait_echoes(&c2, 2).await;
    let run = start_run(&c1, "chain", json!({})).await;
    wait_for(&c1, &format!("/v1/runs/{run}"), 120, |d| {
        d["status"] == json!("waiting")
    })
    .await;

    // Listed on the other node, with its owner.
    let list = wait_for(&c2, "/v1/runs", 30, |d| {
        d["runs"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["run"] == json!(run)))
    })
    .await;
    let entry = list["runs"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["run"] == json!(run)))
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry["owner_node"], json!("c1"), "{list}");
    assert_eq!(entry["status"], json!("waiting"), "{list}");

    // Read on the other node: the run and one of its tasks.
    let (code, doc) = call("GET", &format!("{}/v1/runs/{run}", c2.url), None).await;
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["owner_node"], json!("c1"), "{doc}");
    assert_eq!(doc["status"], json!("waiting"), "{doc}");
    assert_eq!(doc["gates"][0]["gate"], json!("ship"), "{doc}");
    let recs = records(&c1).await;
    let task = recs
        .iter()
        .map(|r| &r["event"])
        .find(|e| e["type"] == json!("task_submitted"))
        .and_then(|e| e["task"].as_str())
        .expect("a task of the run")
        .to_string();
    let (code, doc) = call("GET", &format!("{}/v1/tasks/{task}", c2.url), None).await;
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["owner_node"], json!("c1"), "{doc}");
    // Without a token the other node refuses, as for its own runs (the caller is
    // checked where it asks, before anything is forwarded).
    for path in [format!("/v1/runs/{run}"), format!("/v1/tasks/{task}")] {
        let (code, doc) =
            crate::support::node::call_with("GET", &format!("{}{path}", c2.url), None, None).await;
        assert_eq!(code, 401, "{path}: {doc}");
    }
    // The other node's own runs are still its own.
    let (code, doc) = call("GET", &format!("{}/v1/runs/{run}", c1.url), None).await;
    assert_eq!((code, &doc["owner_node"]), (200, &json!("c1")), "{doc}");

    // The event stream on the other node carries the run's records.
    let seen = events_until(
        &format!("{}/v1/events?run={run}", c2.url),
        "gate_waiting",
        60,
    )
    .await;
    assert_eq!(
        seen.first().map(String::as_str),
        Some("run_started"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|k| k == "result_accepted"), "{seen:?}");

    // Both nodes are asked to decide the gate at the same moment: decided once.
    let decide = |url: String| {
        let gate = format!("{url}/v1/runs/{run}/gates/ship");
        async move {
            call(
                "POST",
                &gate,
                Some(json!({"decision": "approve", "note": url})),
            )
            .await
        }
    };
    let ((a, da), (b, db)) = tokio::join!(decide(c1.url.clone()), decide(c2.url.clone()));
    let mut codes = [a, b];
    codes.sort();
    assert_eq!(codes, [200, 409], "c1: {a} {da}; c2: {b} {db}");
    let refused = if a == 409 { &da } else { &db };
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("already decided")),
        "{refused}"
    );
    // The run completes; the other node reads its end (its lease is gone by then).
    let done = wait_for(&c2, &format!("/v1/runs/{run}"), 60, |d| {
        d["status"] == json!("completed")
    })
    .await;
    assert_eq!(done["owner_node"], json!("c1"), "{done}");
    let decided = records(&c1)
        .await
        .iter()
        .filter(|r| r["event"]["type"] == json!("gate_decided"))
        .count();
    assert_eq!(decided, 1, "the gate was decided once");
    // Cancelling it through the other node gets the owner's answer: it has ended.
    let (code, doc) = call("POST", &format!("{}/v1/runs/{run}/cancel", c2.url), None).await;
    assert_eq!(code, 409, "{doc}");
    assert!(
        doc["error"]
            .as_str()
            .is_some_and(|e| e.contains("already ended")),
        "{doc}"
    );
    // `muster inspect --server` on the other node shows the run.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["inspect", "--server", &c2.url, "--run", &run, "--json"])
        .env("MUSTER_TOKEN", TOKEN)
        .output()
        .expect("muster inspect runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["record"] == json!("run"))
        .unwrap_or_else(|| panic!("no run line: {stdout}"));
    assert_eq!(summary["run"], json!(run), "{summary}");
    assert_eq!(summary["status"], json!("completed"), "{summary}");
}
