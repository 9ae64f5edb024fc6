//! The control node and the worker read every peer message through `cluster::wire::decode`
//! (JSON, then its published schema, then the type), with real processes: a nats-server
//! on loopback, a control node and a worker. A message that serde alone would read but
//! its schema refuses is dropped (no report for such an assignment, no journal record for
//! such a report), and so is garbage; the nodes go on serving the valid messages sent
//! after them. Waits are bounded; no timing is asserted.

use crate::support::cluster as cluster_support;
use crate::support::node as node_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::*;
use futures::StreamExt;
use muster::cluster::wire::{AssignMsg, ReportMsg};
use muster::{Envelope, Recipient};
use serde_json::{Value, json};
use uuid::Uuid;

/// An assignment of `echo#0` for task `task`, reporting to `report_to`.
fn assignment(task: Uuid, report_to: &str) -> AssignMsg {
    let mut env = Envelope::new(
        "echo",
        Recipient::Agent("echo#0".into()),
        "obj",
        json!({"probe": task.to_string()}),
    );
    env.task_id = Some(task);
    env.epoch = 1;
    AssignMsg {
        instance: "echo#0".into(),
        envelope: Arc::new(env),
        timeout_ms: 30_000,
        report_to: report_to.into(),
        beat_to: "muster.beat.probe".into(),
        alive_every_ms: 250,
        effect_to: Some("muster.effect.probe".into()),
        effects: Vec::new(),
        effect_prefix: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_messages_that_their_schema_refuses_are_dropped_by_the_worker_and_the_control_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    node_support::write_cast(dir.path(), &["workflows", "j"], 1);
    let nats = Nats::start(dir.path());
    let c1 = control(dir.path(), &nats.url(), "c1", "j/c1.db");
    let _w1 = worker(dir.path(), &nats.url(), "w1");
    wait_for(&c1, "/v1/agents", 60, |d| {
        d["agents"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    let client = async_nats::connect(nats.url())
        .await
        .expect("the test connects to NATS");
    let mut reports = client
        .subscribe("muster.report.probe")
        .await
        .expect("subscribe");

    // The worker: garbage, then an assignment serde reads but its schema refuses (an empty
    // `beat_to`), then a valid one. Only the valid one is run and reported.
    let refused = Uuid::now_v7();
    let valid = Uuid::now_v7();
    let mut bad = serde_json::to_value(assignment(refused, "muster.report.probe")).expect("json");
    bad["beat_to"] = json!("");
    assert!(
        serde_json::from_value::<AssignMsg>(bad.clone()).is_ok(),
        "serde alone reads it"
    );
    for body in [
        b"{not json".to_vec(),
        bad.to_string().into_bytes(),
        serde_json::to_vec(&assignment(valid, "muster.report.probe")).expect("json"),
    ] {
        client
            .publish("muster.assign.w1", body.into())
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    let mut seen: Vec<Uuid> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains(&valid) {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, reports.next())
            .await
            .expect("the valid assignment is reported within 60 s")
            .expect("a report");
        let r: ReportMsg = serde_json::from_slice(&m.payload).expect("a report");
        seen.push(r.task_id);
    }
    // Anything the refused assignment caused would have come by now; wait a little more
    // all the same.
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), reports.next()).await {
        let r: ReportMsg = serde_json::from_slice(&m.payload).expect("a report");
        seen.push(r.task_id);
    }
    assert!(
        !seen.contains(&refused),
        "the assignment its schema refuses was never run: {seen:?}"
    );

    // The control node: garbage, a report with an empty instance (its schema refuses it;
    // serde would read it as a late answer and journal it stale), then a valid late report.
    // Reports are read in order: once the valid one is journaled, the others were read.
    let report = |task: Uuid, instance: &str| ReportMsg {
        task_id: task,
        epoch: 3,
        instance: instance.into(),
        result: Ok(json!({"probe": true})),
        usage: None,
    };
    let (dropped, late) = (Uuid::now_v7(), Uuid::now_v7());
    for body in [
        b"\xff\xfe".to_vec(),
        serde_json::to_vec(&report(dropped, "")).expect("json"),
        serde_json::to_vec(&report(late, "echo#0@w1")).expect("json"),
    ] {
        client
            .publish("muster.report.c1", body.into())
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    let stale_of = |recs: &[Value], task: Uuid| {
        recs.iter().any(|r| {
            r["event"]["type"] == json!("result_stale") && r["event"]["task"] == json!(task)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let recs = loop {
        let recs = records(&c1).await;
        if stale_of(&recs, late) {
            break recs;
        }
        assert!(
            Instant::now() < deadline,
            "the valid late report was never journaled stale"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !stale_of(&recs, dropped),
        "the report its schema refuses was never handed on"
    );
    // Both nodes still serve: the control node lists the worker's instance.
    let (code, doc) = call("GET", &format!("{}/v1/agents", c1.url), None).await;
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["agents"][0]["id"], json!("echo#0@w1"), "{doc}");
}
