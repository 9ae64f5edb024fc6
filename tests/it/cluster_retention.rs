//! Retention in the cluster (docs/distributed.md, "Retention of the journal stream"),
//! with real processes: a control node with `--retain 1s --retain-every 1s` removes from
//! the journal stream what retention removed from its journal (the records of runs that
//! ended) and keeps what its journal keeps (a run still running): when that node is then
//! SIGKILLed, another control node takes the running run over from the stream and
//! completes it, its task accepted once. Waits are bounded; no timing is asserted.

use crate::cluster_replicas::{accepted_once, leased, setup, wait_agents};
use crate::support::cluster::*;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The journal sequence of the first record on control node `node`'s subject of the
/// journal stream (None while there is none or the server does not answer).
async fn first_in_stream(js: &async_nats::jetstream::Context, node: &str) -> Option<u64> {
    let stream = js.get_stream("MUSTER_JOURNAL").await.ok()?;
    let m = stream
        .get_first_raw_message_by_subject(format!("muster.journal.{node}"), 1)
        .await
        .ok()?;
    serde_json::from_slice::<Value>(&m.payload).ok()?["seq"].as_u64()
}

/// The largest journal sequence of the records of the runs `runs`.
fn last_of(recs: &[Value], runs: &[String]) -> u64 {
    recs.iter()
        .filter(|r| {
            r["event"]["run"]
                .as_str()
                .is_some_and(|run| runs.iter().any(|x| x == run))
        })
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_ended_runs_from_the_journal_stream_and_keeps_a_running_run_for_a_takeover()
 {
    let dir = setup();
    let (open, later) = (dir.path().join("open"), dir.path().join("later"));
    std::fs::write(&open, b"open").expect("gate");
    let nats = Nats::start(dir.path());
    let url = nats.url();
    let (mut c1, _) = control_with(
        dir.path(),
        &url,
        "c1",
        "j/c1.db",
        &["--retain", "1s", "--retain-every", "1s"],
    );
    let c2 = control(dir.path(), &url, "c2", "j/c2.db");
    let _w1 = worker(dir.path(), &url, "w1");
    wait_agents(&c1, "held", 1).await;
    wait_agents(&c2, "held", 1).await;
    let gate = |p: &std::path::Path| p.display().to_string();
    // Three runs that end at once, then one held until `later` exists.
    let mut ended = Vec::new();
    for n in 0..3 {
        let run = start_run(&c1, "held", json!({"n": n, "gate": gate(&open)})).await;
        let doc = wait_run(&c1, &run, 60).await;
        assert_eq!(doc["status"], json!("completed"), "{doc}");
        ended.push(run);
    }
    let held = start_run(&c1, "held", json!({"n": 9, "gate": gate(&later)})).await;
    leased(&c1, &held).await;
    let recs = records(&c1).await;
    let started = recs
        .iter()
        .find(|r| r["event"]["type"] == json!("run_started") && r["event"]["run"] == json!(held))
        .and_then(|r| r["seq"].as_u64())
        .expect("the held run's first record");
    let ended_last = last_of(&recs, &ended);
    assert!(
        ended_last > 0 && ended_last < started,
        "{ended_last} {started}"
    );

    // The stream's copy of c1's journal comes to start after the ended runs, and no later
    // than the held run's first record.
    let client = async_nats::connect(&url)
        .await
        .expect("the test connects to NATS");
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let first = first_in_stream(&js, "c1").await;
        if first.is_some_and(|f| f > ended_last) {
            assert!(
                first.is_some_and(|f| f <= started),
                "the held run's records stay in the stream: first {first:?}, run from {started}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "c1's history in the stream still starts at {first:?} (ended runs end at \
             {ended_last})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // What the stream kept is enough: c1 dies, c2 takes the held run over and completes
    // it.
    c1.proc.kill();
    wait_for(&c2, &format!("/v1/runs/{held}"), 60, |d| {
        d["status"] == json!("running")
    })
    .await;
    std::fs::write(&later, b"open").expect("gate");
    let doc = wait_run(&c2, &held, 90).await;
    assert_eq!(doc["status"], json!("completed"), "{doc}");
    assert_eq!(doc["steps"][0]["output"]["n"], json!(9), "{doc}");
    let recs = records(&c2).await;
    assert_eq!(accepted_once(&recs).len(), 1, "the held run's task, once");
}
