//! A replicated cluster (docs/distributed.md, "Replication") with real processes: three
//! nats-servers in one JetStream cluster on loopback (free ports, a store dir each), a
//! control node and workers given all three servers. With three servers every bucket and
//! the journal stream have three replicas; a run in flight completes, nothing lost and
//! nothing accepted twice, after SIGKILL of the JetStream meta leader and then of the
//! journal stream's leader, each restarted on its store and caught up before the next;
//! an existing bucket with another count is kept by `auto` and updated by `--replicas N`;
//! one server refuses `--replicas 3` by name with exit code 2; a cluster whose server
//! cannot bind its port is started again on fresh ports (tests/it/support/cluster.rs).
//! Waits are bounded; no timing is asserted.

use crate::support::cluster as cluster_support;
use crate::support::node as node_support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cluster_support::*;
use serde_json::{Value, json};

/// The streams behind muster's buckets, and the journal stream.
const STREAMS: [&str; 5] = [
    "KV_muster_agents",
    "KV_muster_contracts",
    "KV_muster_runs",
    "KV_muster_controls",
    "MUSTER_JOURNAL",
];

/// The buckets and the stream by the names the start line uses.
const NAMES: [&str; 5] = [
    "muster_agents",
    "muster_contracts",
    "muster_runs",
    "muster_controls",
    "MUSTER_JOURNAL",
];

/// A stdio agent that holds each task until the file named by `input.gate` exists, then
/// answers `{"n": input.n}` (a cancelled task is answered with an error).
const GATE_AGENT: &str = r#"import json, os, sys, threading
lock = threading.Lock()
pending = {}
def send(msg):
    with lock:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()
def work(msg, cancelled):
    key = (msg["task_id"], msg["epoch"])
    while not os.path.exists(msg["input"]["gate"]):
        if cancelled.wait(0.05):
            send({"type": "error", "task_id": key[0], "epoch": key[1], "message": "cancelled"})
            pending.pop(key, None)
            return
    send({"type": "result", "task_id": key[0], "epoch": key[1], "output": {"n": msg["input"].get("n")}})
    pending.pop(key, None)
for line in sys.stdin:
    msg = json.loads(line)
    key = (msg["task_id"], msg["epoch"])
    if msg["type"] == "task":
        ev = threading.Event()
        pending[key] = ev
        threading.Thread(target=work, args=(msg, ev), daemon=True).start()
    elif msg["type"] == "cancel":
        ev = pending.get(key)
        if ev is not None:
            ev.set()
"#;

/// A temp dir with the echo cast, the gate agent (capability `held`, concurrency 32: old
/// attempts of reassigned tasks keep their slot until the gate opens) and workflow `held`.
pub(crate) fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    node_support::write_cast(p, &["workflows", "j"], 1);
    std::fs::write(p.join("gate_agent.py"), GATE_AGENT).expect("agent");
    std::fs::write(
        p.join("actors/held.toml"),
        format!(
            "name = \"held\"\nconcurrency = 32\n[[capabilities]]\nname = \"held\"\ninput = \"obj\"\n\
             output = \"obj\"\n[backend]\nkind = \"command\"\nprogram = \"python3\"\nargs = [{:?}]\n\
             mode = \"stdio\"\n",
            p.join("gate_agent.py").display().to_string()
        ),
    )
    .expect("manifest");
    std::fs::write(
        p.join("workflows/held.toml"),
        node_support::one_step("held", "held", "300s", 50),
    )
    .expect("workflow");
    dir
}

/// Waits until the node lists `n` remote instances of agent `agent`.
pub(crate) async fn wait_agents(node: &ControlNode, agent: &str, n: usize) {
    wait_for(node, "/v1/agents", 60, |d| {
        d["agents"]
            .as_array()
            .map(|a| a.iter().filter(|x| x["agent"] == json!(agent)).count() == n)
            .unwrap_or(false)
    })
    .await;
}

/// Waits until run `run`'s task has been leased (assigned to an instance) at least once.
pub(crate) async fn leased(node: &ControlNode, run: &str) {
    wait_for(node, &format!("/v1/runs/{run}"), 60, |d| {
        d["steps"][0]["leases"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    })
    .await;
}

/// Accepted results per task, asserting each at most once.
pub(crate) fn accepted_once(recs: &[Value]) -> HashMap<String, usize> {
    let mut n: HashMap<String, usize> = HashMap::new();
    for r in recs {
        if r["event"]["type"] == json!("result_accepted") {
            *n.entry(r["event"]["task"].to_string()).or_default() += 1;
        }
    }
    for (task, count) in &n {
        assert_eq!(*count, 1, "task {task} had {count} accepted results");
    }
    n
}

/// Asserts that the start line reports `n` replicas for every bucket and the stream.
fn reports(start: &Value, n: usize, names: &[&str]) {
    assert_eq!(start["replicas"], json!(n), "{start}");
    for name in names {
        assert_eq!(start["replicas_of"][name], json!(n), "{name}: {start}");
    }
}

/// Waits until server `name`'s own replica of MUSTER_JOURNAL is current (as the stream's
/// leader reports it) and holds every message the leader has.
async fn caught_up(cluster: &NatsCluster, name: &str) {
    let js = jetstream(&cluster.live_urls()).await;
    let info = stream_info(&js, "MUSTER_JOURNAL", 60, |i| {
        i.cluster.as_ref().is_some_and(|c| {
            c.leader.as_deref() == Some(name)
                || c.replicas.iter().any(|r| r.name == name && r.current)
        })
    })
    .await;
    let last = info.state.last_sequence;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let local = cluster
            .local_stream(name, "MUSTER_JOURNAL")
            .and_then(|s| s["state"]["last_seq"].as_u64());
        if local.is_some_and(|l| l >= last) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}'s replica of MUSTER_JOURNAL is at {local:?}, the leader at {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most 60 s) until the journal stream holds control node `node`'s record
/// `seq`.
async fn mirrored_up_to(cluster: &NatsCluster, node: &str, seq: u64) {
    let js = jetstream(&cluster.live_urls()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
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
            Instant::now() < deadline,
            "{node}'s journal was mirrored only up to {at} of {seq}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `muster serve --nats` in `dir` that is expected to exit: its exit code and output.
async fn serve_exits(dir: &Path, nats: &str, extra: &[&str]) -> (Option<i32>, String) {
    let (dir, nats) = (dir.to_path_buf(), nats.to_string());
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
            .current_dir(dir)
            .args(["serve", "--nats", &nats, "--node", "refused", "--json"])
            .args(["--workflows", "workflows", "--journal", "j/refused.db"])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--token-env",
                "NO_SUCH_TOKEN_VAR",
            ])
            .env("NO_SUCH_TOKEN_VAR", TOKEN)
            .args(extra)
            .output()
            .expect("muster serve runs")
    })
    .await
    .expect("joined");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_give_every_bucket_and_the_journal_stream_three_replicas() {
    let dir = setup();
    let cluster = NatsCluster::start(dir.path(), 3);
    let (_node, start) = control_with(dir.path(), &cluster.url(), "c1", "j/c1.db", &[]);
    reports(&start, 3, &NAMES);
    assert_eq!(start["replicas_setting"], json!("auto"), "{start}");
    assert_eq!(start["replica_notes"], json!([]), "{start}");
    let (_w1, joined) = worker_with(dir.path(), &cluster.url(), "w1", &[]);
    reports(&joined, 3, &["muster_agents", "muster_contracts"]);
    // The servers say the same: three copies of each, a leader and two followers.
    let js = jetstream(&cluster.live_urls()).await;
    for stream in STREAMS {
        let info = stream_info(&js, stream, 30, |i| {
            i.cluster.as_ref().is_some_and(|c| c.leader.is_some())
        })
        .await;
        assert_eq!(info.config.num_replicas, 3, "{stream}: {:?}", info.config);
        let c = info.cluster.expect("cluster info");
        assert_eq!(c.name.as_deref(), Some(cluster.name.as_str()), "{stream}");
        assert_eq!(
            c.replicas.len(),
            2,
            "{stream}: the leader's two peers {c:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_in_flight_complete_after_the_meta_leader_and_then_the_journal_leader_are_killed_and_each_restarted_server_catches_up()
 {
    let t0 = Instant::now();
    // What happened when, shown when the test fails.
    let step = |what: &str| eprintln!("[{:>6.2} s] {what}", t0.elapsed().as_secs_f64());
    let dir = setup();
    let gate = dir.path().join("open-the-gate");
    let mut cluster = NatsCluster::start(dir.path(), 3);
    let url = cluster.url();
    let (node, start) = control_with(dir.path(), &url, "c1", "j/c1.db", &[]);
    reports(&start, 3, &NAMES);
    let _w1 = worker(dir.path(), &url, "w1");
    let _w2 = worker(dir.path(), &url, "w2");
    wait_agents(&node, "held", 2).await;
    let input = |n: u64| json!({"n": n, "gate": gate.display().to_string()});
    // Runs held in flight (their agent answers only once the gate opens).
    let mut runs = Vec::new();
    for n in 0..4 {
        runs.push(start_run(&node, "held", input(n)).await);
    }
    for run in &runs {
        leased(&node, run).await;
    }

    // 1. SIGKILL the JetStream meta leader; a new one is elected among the other two,
    //    and a run started meanwhile is leased (the cluster takes writes).
    let meta = cluster.meta_leader(30);
    step(&format!(
        "4 runs in flight; SIGKILL of the meta leader {meta}"
    ));
    cluster.kill(&meta);
    let next = cluster.meta_leader(60);
    assert_ne!(next, meta);
    step(&format!("meta leader now {next}"));
    runs.push(start_run(&node, "held", input(4)).await);
    leased(&node, runs.last().expect("a run")).await;
    step("a fifth run leased; restarting the killed server");
    // ... it restarts on its store and catches up.
    cluster.restart(&meta);
    caught_up(&cluster, &meta).await;
    step(&format!("{meta} is back and its journal replica caught up"));

    // 2. SIGKILL the journal stream's leader; the stream elects another.
    let js = jetstream(&cluster.live_urls()).await;
    let info = stream_info(&js, "MUSTER_JOURNAL", 30, |i| {
        i.cluster.as_ref().is_some_and(|c| c.leader.is_some())
    })
    .await;
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("the journal's leader");
    step(&format!("SIGKILL of the journal stream's leader {leader}"));
    cluster.kill(&leader);
    let js = jetstream(&cluster.live_urls()).await;
    stream_info(&js, "MUSTER_JOURNAL", 60, |i| {
        i.cluster
            .as_ref()
            .and_then(|c| c.leader.as_deref())
            .is_some_and(|l| l != leader)
    })
    .await;
    step("the journal stream has another leader");
    runs.push(start_run(&node, "held", input(5)).await);
    leased(&node, runs.last().expect("a run")).await;
    step("a sixth run leased; restarting the killed server");
    cluster.restart(&leader);
    step(&format!("{leader} is back; opening the gate"));

    // 3. Every run was in flight through both losses: open the gate; each completes with
    //    its own output, each task accepted exactly once.
    for run in &runs {
        let (_, doc) = call("GET", &format!("{}/v1/runs/{run}", node.url), None).await;
        assert_eq!(doc["status"], json!("running"), "{doc}");
    }
    std::fs::write(&gate, b"open").expect("gate");
    for run in &runs {
        let doc = wait_run(&node, run, 60).await;
        assert_eq!(doc["status"], json!("completed"), "{doc}");
        assert_eq!(doc["steps"][0]["output"]["n"], doc["input"]["n"], "{doc}");
    }
    step("every run completed");
    let recs = records(&node).await;
    assert_eq!(
        accepted_once(&recs).len(),
        runs.len(),
        "every task accepted once"
    );
    // The mirror went on through both losses: the stream holds c1's journal to its end.
    let last = recs
        .last()
        .and_then(|r| r["seq"].as_u64())
        .expect("records");
    mirrored_up_to(&cluster, "c1", last).await;
    // The restarted journal leader holds every record the stream has now.
    caught_up(&cluster, &leader).await;
    step(&format!("{leader}'s journal replica caught up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_control_node_keeps_its_runs_when_the_leader_of_the_control_nodes_bucket_is_killed()
{
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("[{:>6.2} s] {what}", t0.elapsed().as_secs_f64());
    let dir = setup();
    let gate = dir.path().join("open-the-gate");
    let mut cluster = NatsCluster::start(dir.path(), 3);
    let url = cluster.url();
    let (c1, _) = control_with(dir.path(), &url, "c1", "j/c1.db", &[]);
    let (c2, _) = control_with(dir.path(), &url, "c2", "j/c2.db", &[]);
    let _w1 = worker(dir.path(), &url, "w1");
    let _w2 = worker(dir.path(), &url, "w2");
    wait_agents(&c1, "held", 2).await;
    wait_agents(&c2, "held", 2).await;
    let input = |n: u64| json!({"n": n, "gate": gate.display().to_string()});
    let mut runs = Vec::new();
    for n in 0..4 {
        let node = if n % 2 == 0 { &c1 } else { &c2 };
        let run = start_run(node, "held", input(n)).await;
        leased(node, &run).await;
        runs.push((node, run));
    }
    // The control nodes' liveness keys go unwritten while their bucket elects a leader
    // (longer than the TTL): neither may take the other's runs for that.
    let js = jetstream(&cluster.live_urls()).await;
    let info = stream_info(&js, "KV_muster_controls", 30, |i| {
        i.cluster.as_ref().is_some_and(|c| c.leader.is_some())
    })
    .await;
    let leader = info.cluster.and_then(|c| c.leader).expect("a leader");
    step(&format!(
        "4 runs in flight on c1 and c2; SIGKILL of {leader}, the leader of KV_muster_controls"
    ));
    cluster.kill(&leader);
    let js = jetstream(&cluster.live_urls()).await;
    stream_info(&js, "KV_muster_controls", 60, |i| {
        i.cluster
            .as_ref()
            .and_then(|c| c.leader.as_deref())
            .is_some_and(|l| l != leader)
    })
    .await;
    step("KV_muster_controls has another leader");
    // Both keys are written again once the bucket has a leader.
    let kv = js
        .get_key_value("muster_controls")
        .await
        .expect("the bucket");
    for node in ["c1", "c2"] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(kv.get(node).await, Ok(Some(_))) {
            assert!(
                Instant::now() < deadline,
                "{node}'s key was not written again"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    step("c1's and c2's keys are written again; restarting the killed server");
    cluster.restart(&leader);
    std::fs::write(&gate, b"open").expect("gate");
    for (node, run) in &runs {
        let doc = wait_run(node, run, 60).await;
        assert_eq!(doc["status"], json!("completed"), "{doc}");
        assert_eq!(doc["steps"][0]["output"]["n"], doc["input"]["n"], "{doc}");
    }
    step("every run completed on the node that started it");
    let mut all = records(&c1).await;
    all.extend(records(&c2).await);
    assert_eq!(
        accepted_once(&all).len(),
        runs.len(),
        "every task accepted once across both control nodes"
    );
    let taken: Vec<&Value> = all
        .iter()
        .filter(|r| {
            r["event"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("taken over from control node"))
        })
        .collect();
    assert!(
        taken.is_empty(),
        "no run was taken from a live node: {taken:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_bucket_with_another_count_is_kept_by_auto_and_updated_by_an_explicit_count() {
    let dir = setup();
    let cluster = NatsCluster::start(dir.path(), 3);
    let url = cluster.url();
    let (mut c1, start) = control_with(dir.path(), &url, "c1", "j/c1.db", &["--replicas", "1"]);
    reports(&start, 1, &NAMES);
    assert_eq!(start["replica_notes"], json!([]), "{start}");
    c1.proc.stop(30);

    // `auto` keeps one replica, and says so for each.
    let (mut c1, start) = control_with(dir.path(), &url, "c1", "j/c1.db", &[]);
    reports(&start, 1, &NAMES);
    let notes = start["replica_notes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(notes.len(), NAMES.len(), "{start}");
    for name in NAMES {
        assert!(
            notes.iter().any(|n| {
                let n = n.as_str().unwrap_or("");
                n.contains(&format!(" {name}")) && n.contains("has 1 replica") && n.contains("kept")
            }),
            "{name} is named as kept: {notes:?}"
        );
    }
    c1.proc.stop(30);

    // `--replicas 3` updates each, naming it with both counts.
    let (_c1, start) = control_with(dir.path(), &url, "c1", "j/c1.db", &["--replicas", "3"]);
    reports(&start, 3, &NAMES);
    let notes = start["replica_notes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for name in NAMES {
        assert!(
            notes.iter().any(|n| {
                let n = n.as_str().unwrap_or("");
                n.contains(&format!(" {name}"))
                    && n.contains("had 1 replica, 3 wanted (--replicas 3): updated to 3")
            }),
            "{name} is named as updated: {notes:?}"
        );
    }
    let js = jetstream(&cluster.live_urls()).await;
    for stream in STREAMS {
        let info = stream_info(&js, stream, 60, |i| {
            i.config.num_replicas == 3 && i.cluster.as_ref().is_some_and(|c| c.replicas.len() == 2)
        })
        .await;
        assert_eq!(info.config.num_replicas, 3, "{stream}");
    }

    // A worker with `--replicas 1` updates the two buckets it opens, and says so.
    let (_w1, joined) = worker_with(dir.path(), &url, "w1", &["--replicas", "1"]);
    reports(&joined, 1, &["muster_agents", "muster_contracts"]);
    let notes = joined["replica_notes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for name in ["muster_agents", "muster_contracts"] {
        assert!(
            notes.iter().any(|n| {
                let n = n.as_str().unwrap_or("");
                n.contains(&format!(" {name}"))
                    && n.contains("had 3 replicas, 1 wanted (--replicas 1): updated to 1")
            }),
            "{name} is named as updated: {notes:?}"
        );
    }
    let info = stream_info(&js, "KV_muster_agents", 60, |i| i.config.num_replicas == 1).await;
    assert_eq!(info.config.num_replicas, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_gives_one_replica_and_refuses_three_by_name_with_exit_code_2() {
    let dir = setup();
    let nats = Nats::start(dir.path());
    let (_c1, start) = control_with(dir.path(), &nats.url(), "c1", "j/c1.db", &[]);
    reports(&start, 1, &NAMES);
    assert_eq!(start["replica_notes"], json!([]), "{start}");
    let (code, text) = serve_exits(dir.path(), &nats.url(), &["--replicas", "3"]).await;
    assert_eq!(code, Some(2), "refused as bad input: {text}");
    assert!(
        text.contains("bucket muster_agents (stream KV_muster_agents) cannot have 3 replicas"),
        "the refusal names the bucket and the count: {text}"
    );
    assert!(
        text.contains("not part of a JetStream cluster"),
        "and why: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_server_cannot_bind_its_port_is_started_again_on_fresh_ports() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port held here is nats-2's client port in the first attempt: nats-2 exits.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let taken = held.local_addr().expect("its address").port();
    let ports = |client: u16| (client, free_port(), free_port());
    let first = vec![ports(free_port()), ports(taken), ports(free_port())];
    let cluster = NatsCluster::start_with(dir.path(), 3, Some(first));
    assert_eq!(cluster.failures.len(), 1, "{:?}", cluster.failures);
    let failure = &cluster.failures[0];
    assert!(failure.contains("nats-2 exited"), "{failure}");
    assert!(
        failure.contains("address already in use"),
        "the failure shows nats-2's log tail: {failure}"
    );
    for m in &cluster.members {
        assert_ne!(m.port, taken, "{} is on a fresh port", m.name);
        assert!(m.proc.is_some(), "{} is up", m.name);
    }
    // The cluster started again serves: a stream with three replicas gets a leader.
    let js = jetstream(&cluster.live_urls()).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "PROBE".into(),
        subjects: vec!["probe".into()],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .expect("a stream with three replicas");
    let info = stream_info(&js, "PROBE", 30, |i| {
        i.cluster.as_ref().is_some_and(|c| c.leader.is_some())
    })
    .await;
    assert_eq!(info.config.num_replicas, 3);
    drop(held);
}
