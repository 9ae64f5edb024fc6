//! Exactly-once effects across a cluster (issue 26; docs/distributed.md, "Effects across
//! nodes"), with real processes: a nats-server on loopback, one control node and two
//! workers, each hosting one instance of a stdio agent that charges an order through the
//! effect protocol (`tests/fixtures/agents/effect_once_stdio.py`; the "payment service" is
//! a file with one line per charge performed).
//!
//! The worker holding the attempt is SIGKILLed after the agent's `effect_done` (and, in the
//! second test, after its `effect_started` only). The task is reassigned to the other
//! worker, whose attempt is handed the ledger the control node journaled: the effect is
//! skipped with its recorded result, or reported as of unknown outcome and reconciled by
//! its key. The charge is performed once. Waits are bounded; no timing is asserted.

use crate::support::cluster as cluster_support;
use crate::support::node as node_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cluster_support::*;
use serde_json::{Value, json};

/// Writes the `pay` agent (one instance, the fixture, told its node and the state dir)
/// into `dir`, with the cast every node shares.
fn write_node(dir: &Path, node: &str, state: &Path) {
    node_support::write_cast(dir, &["workflows", "j"], 1);
    let agent = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("tests/fixtures/agents/effect_once_stdio.py");
    std::fs::write(
        dir.join("actors/pay.toml"),
        format!(
            "name = \"pay\"\n[[capabilities]]\nname = \"pay\"\ninput = \"obj\"\noutput = \"obj\"\n\
             [backend]\nkind = \"command\"\nprogram = \"python3\"\nargs = [{:?}, {node:?}, {:?}]\n\
             mode = \"stdio\"\n",
            agent.display().to_string(),
            state.display().to_string()
        ),
    )
    .expect("manifest");
}

/// A cluster of one control node `c1` and workers `w1`, `w2`, each node in a directory of
/// its own (the agent is told which node it runs on), sharing the state dir.
struct Cluster {
    _root: tempfile::TempDir,
    state: PathBuf,
    _nats: Nats,
    control: ControlNode,
    workers: Vec<(String, Proc)>,
}

async fn cluster() -> Cluster {
    let root = tempfile::tempdir().expect("tempdir");
    let state = root.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let nats = Nats::start(root.path());
    let mut dirs = Vec::new();
    for node in ["c1", "w1", "w2"] {
        let d = root.path().join(node);
        write_node(&d, node, &state);
        dirs.push(d);
    }
    let control = control(&dirs[0], &nats.url(), "c1", "j/c1.db");
    let workers = vec![
        ("w1".to_string(), worker(&dirs[1], &nats.url(), "w1")),
        ("w2".to_string(), worker(&dirs[2], &nats.url(), "w2")),
    ];
    wait_for(&control, "/v1/agents", 60, |d| {
        d["agents"]
            .as_array()
            .map(|a| a.iter().filter(|x| x["agent"] == json!("pay")).count() == 2)
            .unwrap_or(false)
    })
    .await;
    Cluster {
        _root: root,
        state,
        _nats: nats,
        control,
        workers,
    }
}

/// Submits one `pay` task holding at `hold`, waits until the agent holds (the node that
/// runs it), SIGKILLs that node's worker, and waits for the task to end: its document and
/// the node that was killed.
async fn charge_and_kill_the_holder(c: &mut Cluster, hold: &str) -> (Value, String) {
    let (code, doc) = call(
        "POST",
        &format!("{}/v1/tasks", c.control.url),
        Some(json!({
            "capability": "pay",
            "input": {"order": "A-1001", "hold": hold},
            "timeout_ms": 120_000,
            "attempts": 3,
        })),
    )
    .await;
    assert_eq!(code, 202, "{doc}");
    let task = doc["task"].as_str().expect("task id").to_string();
    let marker = c.state.join("holding");
    let limit = Instant::now() + Duration::from_secs(60);
    let holder = loop {
        if let Ok(n) = std::fs::read_to_string(&marker) {
            break n;
        }
        assert!(
            Instant::now() < limit,
            "the agent did not reach its hold point within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The kill comes once the control node has journaled the record the agent held
    // after: `effect_started` is journaled before the agent's ack (so before its charge);
    // `effect_done` is sent without one, so wait until it is there.
    let want = if hold == "done" {
        "effect_done"
    } else {
        "effect_started"
    };
    let limit = Instant::now() + Duration::from_secs(60);
    while !effect_records(&c.control, &task)
        .await
        .iter()
        .any(|e| e["type"] == json!(want))
    {
        assert!(
            Instant::now() < limit,
            "the control node did not journal the attempt's {want} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, proc) = c
        .workers
        .iter_mut()
        .find(|(n, _)| *n == holder)
        .unwrap_or_else(|| panic!("no worker {holder}"));
    proc.kill();
    let doc = wait_for(&c.control, &format!("/v1/tasks/{task}"), 120, |d| {
        matches!(
            d["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
    })
    .await;
    (doc, holder)
}

/// Charges performed, as the "payment service" counts them.
fn charges(state: &Path) -> Vec<String> {
    std::fs::read_to_string(state.join("charges.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The control node's `effect_*` records of task `task`.
async fn effect_records(node: &ControlNode, task: &str) -> Vec<Value> {
    records(node)
        .await
        .into_iter()
        .map(|r| r["event"].clone())
        .filter(|e| {
            e["task"] == json!(task)
                && matches!(e["type"].as_str(), Some("effect_started" | "effect_done"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassigned_task_skips_an_effect_its_killed_worker_reported_done() {
    let mut c = cluster().await;
    let (doc, killed) = charge_and_kill_the_holder(&mut c, "done").await;
    assert_eq!(doc["status"], json!("completed"), "{doc}");
    let out = &doc["output"];
    assert_ne!(
        out["node"],
        json!(killed),
        "the other worker finished it: {doc}"
    );
    assert_eq!(
        out["seen"],
        json!("done"),
        "the second attempt was handed the effect done, with its result: {doc}"
    );
    let key = out["key"].as_str().expect("key").to_string();
    assert_eq!(
        out["charge"],
        json!({"charge": format!("ch-{}", &key[key.len() - 12..])})
    );
    assert_eq!(charges(&c.state), vec![key], "charged exactly once");
    let task = doc["task"].as_str().or(doc["id"].as_str()).unwrap_or("");
    let effects = effect_records(&c.control, task).await;
    let kinds: Vec<&str> = effects.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        ["effect_started", "effect_done"],
        "journaled on the control node, once each: {effects:?}"
    );
    assert!(
        effects.iter().all(|e| e["agent"]
            .as_str()
            .is_some_and(|a| a.ends_with(&format!("@{killed}")))),
        "both by the killed worker's attempt: {effects:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassigned_task_sees_an_effect_its_killed_worker_only_started_as_unknown() {
    let mut c = cluster().await;
    let (doc, killed) = charge_and_kill_the_holder(&mut c, "started").await;
    assert_eq!(doc["status"], json!("completed"), "{doc}");
    let out = &doc["output"];
    assert_ne!(
        out["node"],
        json!(killed),
        "the other worker finished it: {doc}"
    );
    assert_eq!(
        out["seen"],
        json!("unknown"),
        "the second attempt was handed the effect as of unknown outcome: {doc}"
    );
    assert_eq!(out["reconciled"], json!(true), "{doc}");
    let key = out["key"].as_str().expect("key").to_string();
    assert_eq!(charges(&c.state), vec![key], "charged exactly once");
    let task = doc["task"].as_str().or(doc["id"].as_str()).unwrap_or("");
    let effects = effect_records(&c.control, task).await;
    let kinds: Vec<&str> = effects.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["effect_started", "effect_done"], "{effects:?}");
    assert!(
        effects[0]["agent"]
            .as_str()
            .is_some_and(|a| a.ends_with(&format!("@{killed}"))),
        "started by the killed worker's attempt: {effects:?}"
    );
    assert!(
        effects[1]["epoch"].as_u64() > effects[0]["epoch"].as_u64(),
        "reported done by the later attempt, after reconciling: {effects:?}"
    );
}
