//! Scale-out over NATS JetStream with real processes: a real nats-server on loopback
//! (temp store dir, free ports), a control node (`muster serve --nats`) and worker
//! processes (`muster worker`). Each test proves one guarantee of docs/distributed.md's
//! failure table: agents only on workers complete a workflow; a worker killed mid-task
//! has its tasks reassigned (nothing lost, nothing accepted twice); a worker paused past
//! its lease has its late result journaled as stale, never accepted; a restarted NATS
//! server loses nothing. Waits are bounded; no timing is asserted.

use crate::support::cluster as cluster_support;
use crate::support::node as node_support;

use std::collections::HashMap;

use cluster_support::*;
use serde_json::{Value, json};

const PLAIN: &str = r#"
name = "plain"
input = "obj"
start = "one"

[steps.one]
capability = "echo"
timeout = "30s"
attempts = 3
on_exhausted = "fail"
next = "two"

[steps.two]
capability = "echo"
timeout = "30s"
attempts = 3
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"
"#;

/// A temp dir with a schema, an echo agent, a slow stdio agent and two workflows.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    node_support::write_cast(p, &["workflows", "j"], 2);
    node_support::write_slow(p);
    std::fs::write(p.join("workflows/plain.toml"), PLAIN).expect("workflow");
    std::fs::write(
        p.join("workflows/slow.toml"),
        node_support::one_step("slow", "slow", "120s", 4),
    )
    .expect("workflow");
    dir
}

/// Waits until the node lists `n` remote instances of agent `agent`.
async fn wait_agents(node: &ControlNode, agent: &str, n: usize) -> Value {
    wait_for(node, "/v1/agents", 60, |d| {
        d["agents"]
            .as_array()
            .map(|a| a.iter().filter(|x| x["agent"] == json!(agent)).count() == n)
            .unwrap_or(false)
    })
    .await
}

/// The events of type `kind` in `recs`.
fn events<'a>(recs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    recs.iter()
        .map(|r| &r["event"])
        .filter(|e| e["type"] == json!(kind))
        .collect()
}

/// Accepted results per task: every task at most once.
fn accepted_once(recs: &[Value]) -> HashMap<String, usize> {
    let mut n: HashMap<String, usize> = HashMap::new();
    for e in events(recs, "result_accepted") {
        *n.entry(e["task"].to_string()).or_default() += 1;
    }
    for (task, count) in &n {
        assert_eq!(*count, 1, "task {task} had {count} accepted results");
    }
    n
}

/// Waits (at most 60 s) until the journal stream holds control node `node`'s record
/// `seq`.
async fn mirrored_up_to(url: &str, node: &str, seq: u64) {
    let client = async_nats::connect(url)
        .await
        .expect("the test connects to NATS");
    let js = async_nats::jetstream::new(client);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let at = match js.get_stream("MUSTER_JOURNAL").await {
            Ok(stream) => stream
                .get_last_raw_message_by_subject(&format!("muster.journal.{node}"))
                .await
                .ok()
                .and_then(|m| serde_json::from_slice::<Value>(&m.payload).ok())
                .and_then(|r| r["seq"].as_u64())
                .unwrap_or(0),
            Err(_) => 0,
        };
        if at >= seq {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{node}'s journal was mirrored only up to {at} of {seq}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The worker node holding a task now, from the node's agents list.
async fn holder(node: &ControlNode) -> Option<String> {
    let (_, doc) = call("GET", &format!("{}/v1/agents", node.url), None).await;
    doc["agents"].as_array()?.iter().find_map(|a| {
        (a["in_flight"].as_u64().unwrap_or(0) > 0).then(|| a["node"].as_str().map(String::from))?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_whose_agents_are_only_on_two_workers_completes_and_agents_lists_their_node() {
    let dir = setup();
    let nats = Nats::start(dir.path());
    let node = control(dir.path(), &nats.url(), "c1", "j/journal.db");
    // Before any worker joins, the control node runs no agent of its own.
    let (_, doc) = call("GET", &format!("{}/v1/agents", node.url), None).await;
    assert_eq!(
        doc["agents"],
        json!([]),
        "a control node hosts no agents: {doc}"
    );
    let _w1 = worker(dir.path(), &nats.url(), "w1");
    let _w2 = worker(dir.path(), &nats.url(), "w2");
    let agents = wait_agents(&node, "echo", 4).await;
    let mut nodes: Vec<&str> = agents["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter(|a| a["agent"] == json!("echo"))
        .map(|a| {
            a["node"]
                .as_str()
                .expect("each remote instance names its node")
        })
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["w1", "w1", "w2", "w2"]);
    let mut runs = Vec::new();
    for i in 0..20 {
        runs.push(start_run(&node, "plain", json!({"i": i})).await);
    }
    let mut owners = Vec::new();
    for run in &runs {
        let doc = wait_run(&node, run, 60).await;
        assert_eq!(doc["status"], json!("completed"), "{doc}");
        for s in doc["steps"].as_array().expect("steps") {
            assert_eq!(
                s["output"]["i"], doc["input"]["i"],
                "echoed through a worker: {s}"
            );
            owners.push(s["owner"].as_str().expect("owner").to_string());
        }
    }
    assert!(
        owners
            .iter()
            .all(|o| o.ends_with("@w1") || o.ends_with("@w2")),
        "{owners:?}"
    );
    accepted_once(&records(&node).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_has_its_tasks_reassigned_to_the_other_and_none_is_lost_or_doubled()
 {
    let dir = setup();
    let nats = Nats::start(dir.path());
    let node = control(dir.path(), &nats.url(), "c1", "j/journal.db");
    let mut w1 = worker(dir.path(), &nats.url(), "w1");
    let _w2 = worker(dir.path(), &nats.url(), "w2");
    wait_agents(&node, "slow", 2).await;
    let mut runs = Vec::new();
    for n in 0..8 {
        runs.push(start_run(&node, "slow", json!({"n": n, "delay_ms": 1500})).await);
    }
    // Wait until w1 holds work, then kill it without warning.
    wait_for(&node, "/v1/agents", 60, |d| {
        d["agents"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["node"] == json!("w1") && x["in_flight"].as_u64().unwrap_or(0) > 0)
        })
    })
    .await;
    w1.kill();
    for run in &runs {
        let doc = wait_run(&node, run, 120).await;
        assert_eq!(doc["status"], json!("completed"), "{doc}");
        assert_eq!(doc["steps"][0]["output"]["n"], doc["input"]["n"]);
        assert!(
            doc["steps"][0]["owner"]
                .as_str()
                .unwrap_or("")
                .ends_with("@w2"),
            "every run ends on the surviving worker: {doc}"
        );
    }
    let recs = records(&node).await;
    assert_eq!(
        accepted_once(&recs).len(),
        runs.len(),
        "every task accepted once"
    );
    // The killed worker's attempts failed as `agent_gone` (not at the 120 s attempt
    // deadline) and were reassigned: when its keys expired, or when its attempts fell
    // silent, whichever the owner saw first (on a busy machine either can be first).
    let gone: Vec<&Value> = events(&recs, "attempt_failed")
        .into_iter()
        .filter(|e| {
            let detail = e["detail"].as_str().unwrap_or("");
            e["agent"].as_str().unwrap_or("").ends_with("@w1")
                && e["reason"] == json!("agent_gone")
                && (detail.contains("left the cluster")
                    || detail.contains("no word of the attempt from node w1"))
        })
        .collect();
    assert!(
        !gone.is_empty(),
        "w1's attempts failed as agent_gone when it left: {:?}",
        events(&recs, "attempt_failed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_has_its_late_result_journaled_stale_never_accepted() {
    let dir = setup();
    let nats = Nats::start(dir.path());
    let node = control(dir.path(), &nats.url(), "c1", "j/journal.db");
    let w1 = worker(dir.path(), &nats.url(), "w1");
    let w2 = worker(dir.path(), &nats.url(), "w2");
    wait_agents(&node, "slow", 2).await;
    let run = start_run(&node, "slow", json!({"n": 7, "delay_ms": 2500})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let held_by = loop {
        if let Some(n) = holder(&node).await {
            break n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no worker took the task"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let (paused, other) = if held_by == "w1" {
        (&w1, "w2")
    } else {
        (&w2, "w1")
    };
    paused.signal(libc::SIGSTOP);
    let doc = wait_run(&node, &run, 120).await;
    paused.signal(libc::SIGCONT);
    assert_eq!(doc["status"], json!("completed"), "{doc}");
    let step = &doc["steps"][0];
    assert!(
        step["owner"]
            .as_str()
            .unwrap_or("")
            .ends_with(&format!("@{other}")),
        "the task completed on the other worker: {step}"
    );
    let task = step["task"].as_str().expect("task id").to_string();
    // Once resumed, the paused worker answers for its old epoch: journaled as stale.
    let t = wait_for(&node, &format!("/v1/tasks/{task}"), 60, |d| {
        d["stale_rejected"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let recs = records(&node).await;
    let stale = events(&recs, "result_stale");
    assert!(
        stale.iter().any(|e| e["task"] == json!(task)
            && e["agent"]
                .as_str()
                .unwrap_or("")
                .ends_with(&format!("@{held_by}"))),
        "the late answer of {held_by} is stale: {stale:?} {t}"
    );
    let accepted: Vec<&Value> = events(&recs, "result_accepted")
        .into_iter()
        .filter(|e| e["task"] == json!(task))
        .collect();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert!(
        accepted[0]["agent"]
            .as_str()
            .unwrap_or("")
            .ends_with(&format!("@{other}"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_continue_after_the_nats_server_restarts_mid_run_with_nothing_lost_or_doubled() {
    let dir = setup();
    let mut nats = Nats::start(dir.path());
    let (port, monitor) = (nats.port, nats.monitor);
    let node = control(dir.path(), &nats.url(), "c1", "j/journal.db");
    let _w1 = worker(dir.path(), &nats.url(), "w1");
    let _w2 = worker(dir.path(), &nats.url(), "w2");
    wait_agents(&node, "slow", 2).await;
    let mut runs = Vec::new();
    for n in 0..6 {
        runs.push(start_run(&node, "slow", json!({"n": n, "delay_ms": 1000})).await);
    }
    nats.proc.kill();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let _nats = Nats::start_on(dir.path(), port, monitor);
    for run in &runs {
        let doc = wait_run(&node, run, 120).await;
        assert_eq!(doc["status"], json!("completed"), "{doc}");
        assert_eq!(doc["steps"][0]["output"]["n"], doc["input"]["n"]);
    }
    let recs = records(&node).await;
    assert_eq!(accepted_once(&recs).len(), runs.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_node_killed_mid_run_has_its_runs_finished_by_another_with_epochs_above_the_journaled()
 {
    let dir = setup();
    let nats = Nats::start(dir.path());
    let mut c1 = control(dir.path(), &nats.url(), "c1", "j/c1.db");
    let c2 = control(dir.path(), &nats.url(), "c2", "j/c2.db");
    let _w1 = worker(dir.path(), &nats.url(), "w1");
    let _w2 = worker(dir.path(), &nats.url(), "w2");
    wait_agents(&c1, "slow", 2).await;
    wait_agents(&c2, "slow", 2).await;
    let mut runs = Vec::new();
    for n in 0..4 {
        runs.push(start_run(&c1, "slow", json!({"n": n, "delay_ms": 2000})).await);
    }
    // Every run's task is leased (and so journaled) by c1 before it dies.
    for run in &runs {
        wait_for(&c1, &format!("/v1/runs/{run}"), 60, |d| {
            d["steps"][0]["leases"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        })
        .await;
    }
    // ... and mirrored to the journal stream: wait (bounded) until the stream holds c1's
    // records up to its last one now, rather than for some time.
    let last = records(&c1)
        .await
        .last()
        .and_then(|r| r["seq"].as_u64())
        .expect("c1's records");
    mirrored_up_to(&nats.url(), "c1", last).await;
    // Both control nodes are live, as c2 tells (the dashboard's cluster panel).
    let live = |doc: &Value, node: &str| {
        doc["control_nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["node"] == json!(node)))
            .map(|n| n["live"] == json!(true))
    };
    let (code, doc) = call("GET", &format!("{}/v1/cluster", c2.url), None).await;
    assert_eq!(code, 200, "{doc}");
    assert_eq!(
        (live(&doc, "c1"), live(&doc, "c2")),
        (Some(true), Some(true)),
        "{doc}"
    );
    assert_eq!(doc["node"], json!("c2"), "{doc}");
    c1.proc.kill();
    for run in &runs {
        let doc = wait_run(&c2, run, 120).await;
        assert_eq!(doc["status"], json!("completed"), "{doc}");
        assert_eq!(doc["steps"][0]["output"]["n"], doc["input"]["n"]);
        let leases = doc["steps"][0]["leases"]
            .as_array()
            .expect("leases")
            .clone();
        let first = leases.first().expect("c1's lease, copied from the stream");
        let last = leases.last().expect("a lease");
        assert_eq!(last["outcome"], json!("completed"), "{leases:?}");
        assert!(
            last["epoch"].as_u64() > first["epoch"].as_u64(),
            "c2 leased above c1's journaled epoch: {leases:?}"
        );
    }
    let recs = records(&c2).await;
    assert_eq!(accepted_once(&recs).len(), runs.len());
    assert!(
        events(&recs, "note").iter().any(|e| e["text"]
            .as_str()
            .unwrap_or("")
            .contains("taken over from control node c1")),
        "the takeover is journaled"
    );
    // On each run's own records too (its timeline), with both nodes and the revision.
    for run in &runs {
        let (code, doc) = call(
            "GET",
            &format!("{}/v1/records?run={run}&limit=10000", c2.url),
            None,
        )
        .await;
        assert_eq!(code, 200, "{doc}");
        let recs = doc["records"].as_array().cloned().unwrap_or_default();
        let taken = events(&recs, "run_taken_over");
        assert_eq!(taken.len(), 1, "{recs:?}");
        assert_eq!(
            (&taken[0]["from"], &taken[0]["to"]),
            (&json!("c1"), &json!("c2"))
        );
        assert!(taken[0]["revision"].as_u64().is_some_and(|r| r > 0));
    }
    // c1 is shown gone.
    let (_, doc) = call("GET", &format!("{}/v1/cluster", c2.url), None).await;
    assert_eq!(
        (live(&doc, "c1"), live(&doc, "c2")),
        (Some(false), Some(true)),
        "{doc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_schema_differs_from_the_clusters_is_refused_by_name_and_never_listed() {
    let dir = setup();
    let nats = Nats::start(dir.path());
    let node = control(dir.path(), &nats.url(), "c1", "j/journal.db");
    // The same cast with a stricter `obj` schema: the `echo` and `slow` contracts differ.
    let other = tempfile::tempdir().expect("tempdir");
    for d in ["actors", "schemas"] {
        std::fs::create_dir_all(other.path().join(d)).expect("dir");
        for f in std::fs::read_dir(dir.path().join(d)).expect("read") {
            let f = f.expect("entry").path();
            std::fs::copy(&f, other.path().join(d).join(f.file_name().expect("name")))
                .expect("copy");
        }
    }
    std::fs::write(
        other.path().join("schemas/obj.schema.json"),
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "required": ["n"]}"#,
    )
    .expect("schema");
    let out = tokio::task::spawn_blocking({
        let (dir, url) = (other.path().to_path_buf(), nats.url());
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
                .current_dir(dir)
                .args(["worker", "--nats", &url, "--node", "odd", "--json"])
                .args(["--join-timeout", "20s"])
                .output()
                .expect("muster worker runs")
        }
    })
    .await
    .expect("joined");
    assert_eq!(out.status.code(), Some(2), "refused as bad input");
    let err: Value = serde_json::from_slice(&out.stdout)
        .or_else(|_| serde_json::from_slice(&out.stderr))
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&out.stderr)}));
    let text = err.to_string();
    assert!(
        text.contains("capability `echo`") || text.contains("capability `slow`"),
        "the refusal names the capability: {text}"
    );
    assert!(text.contains("`obj`"), "and the schema: {text}");
    let (_, doc) = call("GET", &format!("{}/v1/agents", node.url), None).await;
    assert_eq!(
        doc["agents"],
        json!([]),
        "the refused worker never joined: {doc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_node_and_a_worker_killed_together_mid_run_leave_every_run_finished_once_on_the_survivors()
 {
    let dir = setup();
    let nats = Nats::start(dir.path());
    let mut c1 = control(dir.path(), &nats.url(), "c1", "j/c1.db");
    let c2 = control(dir.path(), &nats.url(), "c2", "j/c2.db");
    let mut w1 = worker(dir.path(), &nats.url(), "w1");
    let _w2 = worker(dir.path(), &nats.url(), "w2");
    wait_agents(&c1, "slow", 2).await;
    wait_agents(&c2, "slow", 2).await;
    // Runs on both control nodes, their tasks on both workers.
    let mut runs = Vec::new();
    for n in 0..4 {
        runs.push(start_run(&c1, "slow", json!({"n": n, "delay_ms": 2000})).await);
    }
    let mut own = Vec::new();
    for n in 4..8 {
        own.push(start_run(&c2, "slow", json!({"n": n, "delay_ms": 2000})).await);
    }
    // Every run of c1 is leased (journaled) and mirrored before it dies.
    for run in &runs {
        wait_for(&c1, &format!("/v1/runs/{run}"), 60, |d| {
            d["steps"][0]["leases"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        })
        .await;
    }
    let last = records(&c1)
        .await
        .last()
        .and_then(|r| r["seq"].as_u64())
        .expect("c1's records");
    mirrored_up_to(&nats.url(), "c1", last).await;
    // w1 holds work of c2 (so the surviving control node loses attempts too).
    wait_for(&c2, "/v1/agents", 60, |d| {
        d["agents"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["node"] == json!("w1") && x["in_flight"].as_u64().unwrap_or(0) > 0)
        })
    })
    .await;
    // Both at once, without warning.
    c1.proc.kill();
    w1.kill();
    for run in runs.iter().chain(&own) {
        let doc = wait_run(&c2, run, 180).await;
        assert_eq!(doc["status"], json!("completed"), "{doc}");
        assert_eq!(doc["steps"][0]["output"]["n"], doc["input"]["n"]);
        let leases = doc["steps"][0]["leases"].as_array().expect("leases");
        let done: Vec<&Value> = leases
            .iter()
            .filter(|l| l["outcome"] == json!("completed"))
            .collect();
        assert_eq!(done.len(), 1, "one lease completed the task: {leases:?}");
        assert!(
            done[0]["agent"].as_str().unwrap_or("").ends_with("@w2"),
            "it completed on the surviving worker: {leases:?}"
        );
    }
    let recs = records(&c2).await;
    let accepted = accepted_once(&recs);
    for run in runs.iter().chain(&own) {
        let (_, doc) = call("GET", &format!("{}/v1/runs/{run}", c2.url), None).await;
        let task = doc["steps"][0]["task"].to_string();
        assert_eq!(
            accepted.get(&task),
            Some(&1),
            "run {run}'s task accepted once on c2: {doc}"
        );
    }
    let taken: Vec<&Value> = events(&recs, "note")
        .into_iter()
        .filter(|e| {
            e["text"]
                .as_str()
                .unwrap_or("")
                .contains("taken over from control node c1")
        })
        .collect();
    assert_eq!(
        taken.len(),
        runs.len(),
        "each of c1's runs taken over once: {taken:?}"
    );
}
