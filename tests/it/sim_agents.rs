//! Simulated agents through the runtime, on tokio's paused clock: latency costs virtual
//! time only, the same seed gives the same outputs, and each fault of the model reaches
//! the journal as the structured event a real one would (G4, G2, G3, G6). Bad fault models
//! are refused naming the field, from the library and from the built binary.
//!
//! Every wait is bounded in virtual time, so a bug fails a test instead of hanging it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use muster::agents::sim::{Distribution, FaultModel, SimFactory};
use muster::journal::Event;
use muster::{AgentDef, CapabilitySpec, Muster, SchemaStore, Task, TaskStatus};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Runs `body` in an actix system on tokio's paused clock.
fn on_paused_clock<F: Future<Output = ()>>(body: F) {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    })
    .block_on(body);
}

/// Fails the test if `f` takes more than `limit` of virtual time.
async fn within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not within {limit:?} of virtual time"),
    }
}

fn schemas() -> Arc<SchemaStore> {
    let s = SchemaStore::new();
    s.load_dir("schemas").unwrap();
    Arc::new(s)
}

/// A runtime (seeded ids) with one simulated agent type serving `code.test`.
async fn runtime(model: FaultModel, seed: u64, replicas: usize, concurrency: usize) -> Muster {
    let schemas = schemas();
    let factory = SimFactory {
        model,
        seed,
        outputs: HashMap::from([("code.test".to_string(), "test-report".to_string())]),
        schemas,
    };
    Muster::builder()
        .schemas_dir("schemas")
        .seed(1)
        .agent(
            AgentDef::new("sim", factory)
                .capability(CapabilitySpec::new(
                    "code.test",
                    "test-request",
                    "test-report",
                ))
                .replicas(replicas)
                .concurrency(concurrency),
        )
        .start()
        .await
        .unwrap()
}

fn task(i: usize) -> Task {
    Task::new("code.test", json!({"workspace": format!("/w/{i}")}))
}

fn failures(m: &Muster) -> Vec<(String, String)> {
    m.journal()
        .read_after(0)
        .into_iter()
        .filter_map(|r| match r.event {
            Event::AttemptFailed { reason, detail, .. } => Some((reason, detail)),
            _ => None,
        })
        .collect()
}

fn count(m: &Muster, kind: &str) -> usize {
    m.journal()
        .read_after(0)
        .iter()
        .filter(|r| r.event.kind() == kind)
        .count()
}

#[test]
fn an_hour_of_latency_passes_on_virtual_time_for_50_tasks() {
    on_paused_clock(async {
        let model = FaultModel {
            latency: Distribution::fixed(Duration::from_secs(3600)),
            ..FaultModel::default()
        };
        let m = runtime(model, 7, 1, 50).await;
        let start = Instant::now();
        let wall = std::time::Instant::now();
        let mut handles = Vec::new();
        for i in 0..50 {
            let t = task(i).timeout(Duration::from_secs(7200)).attempts(1);
            handles.push(m.submit(t).await.unwrap());
        }
        let schemas = m.schemas();
        within(Duration::from_secs(3 * 3600), "50 tasks", async {
            for h in handles {
                let out = h.outcome().await;
                assert_eq!(out.status, TaskStatus::Completed, "{:?}", out);
                let output = out.output.unwrap();
                assert!(schemas.validate("test-report", &output).is_ok(), "{output}");
            }
        })
        .await;
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_secs(3600) && elapsed < Duration::from_secs(7200),
            "virtual time elapsed: {elapsed:?}"
        );
        // Not a timing assertion: a sanity bound that the hour was not slept for real.
        assert!(wall.elapsed() < Duration::from_secs(600));
        assert_eq!(m.stats().completed, 50);
        m.shutdown().await;
    });
}

/// The outputs of 10 identical tasks on a fresh runtime whose sim agent has `seed`.
fn outputs_with_seed(seed: u64) -> Vec<Value> {
    let mut out = Vec::new();
    let sink = &mut out;
    on_paused_clock(async move {
        let model = FaultModel {
            latency: Distribution::Uniform {
                min: 0.1,
                max: 10.0,
            },
            ..FaultModel::default()
        };
        let m = runtime(model, seed, 2, 4).await;
        let mut handles = Vec::new();
        for i in 0..10 {
            handles.push(m.submit(task(i)).await.unwrap());
        }
        within(Duration::from_secs(600), "10 tasks", async {
            for h in handles {
                let o = h.outcome().await;
                sink.push(o.output.map_or(Value::Null, Arc::unwrap_or_clone));
            }
        })
        .await;
        m.shutdown().await;
    });
    out
}

#[test]
fn the_same_seed_gives_the_same_outputs_and_another_seed_others() {
    let a = outputs_with_seed(11);
    let b = outputs_with_seed(11);
    let c = outputs_with_seed(12);
    assert_eq!(a.len(), 10);
    assert!(a.iter().all(|v| !v.is_null()), "{a:?}");
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn crashes_are_panics_that_fail_over_and_escalate() {
    on_paused_clock(async {
        let model = FaultModel {
            crash: 1.0,
            ..FaultModel::default()
        };
        let m = runtime(model, 3, 3, 1).await;
        let out = within(Duration::from_secs(600), "a crashing task", async {
            m.delegate(task(0).attempts(3).timeout(Duration::from_secs(5)))
                .await
                .unwrap()
        })
        .await;
        assert_eq!(out.status, TaskStatus::Escalated, "{:?}", out);
        let f = failures(&m);
        assert!(!f.is_empty());
        assert!(
            f.iter()
                .all(|(r, d)| r == "panic" && d.contains("simulated crash") || r == "agent_gone"),
            "{f:?}"
        );
        assert!(f.iter().any(|(r, _)| r == "panic"), "{f:?}");
        // Each attempt went to a different agent.
        let owners: std::collections::BTreeSet<_> =
            out.leases.iter().map(|l| l.agent.clone()).collect();
        assert_eq!(owners.len(), out.leases.len(), "{:?}", out);
        m.shutdown().await;
    });
}

#[test]
fn violations_are_contract_violations() {
    on_paused_clock(async {
        let model = FaultModel {
            violate: 1.0,
            ..FaultModel::default()
        };
        let m = runtime(model, 5, 2, 1).await;
        let out = within(Duration::from_secs(600), "a violating task", async {
            m.delegate(task(0).attempts(2)).await.unwrap()
        })
        .await;
        assert_eq!(out.status, TaskStatus::Escalated);
        let f = failures(&m);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f.iter().all(|(r, _)| r == "contract_violation"), "{f:?}");
        m.shutdown().await;
    });
}

#[test]
fn late_answers_are_fenced_as_stale() {
    on_paused_clock(async {
        let model = FaultModel {
            late: 1.0,
            ..FaultModel::default()
        };
        let m = runtime(model, 9, 2, 1).await;
        let out = within(Duration::from_secs(600), "a late task", async {
            m.delegate(task(0).attempts(2).timeout(Duration::from_secs(2)))
                .await
                .unwrap()
        })
        .await;
        assert_eq!(out.status, TaskStatus::Escalated);
        assert!(failures(&m).iter().all(|(r, _)| r == "timeout"));
        // Let the second attempt's late answer arrive inside its grace window too.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(count(&m, "result_stale") >= 1, "no result_stale event");
        assert_eq!(count(&m, "result_accepted"), 0);
        m.shutdown().await;
    });
}

#[test]
fn bad_models_are_refused_naming_the_field() {
    let cases = [
        (
            json!({"latency": {"kind": "fixed", "value": -1}}),
            "latency.value",
        ),
        (
            json!({"latency": {"kind": "normal", "mean": "1s", "std_dev": -0.5}}),
            "latency.std_dev",
        ),
        (json!({"crash": 1.5}), "crash"),
        (json!({"hang": 0.6, "error": 0.6}), ""),
    ];
    for (doc, field) in cases {
        let m: FaultModel = serde_json::from_value(doc.clone()).unwrap();
        let e = m.validate().unwrap_err();
        assert_eq!(e.field, field, "{doc}: {e}");
    }
    let e = serde_json::from_value::<FaultModel>(json!({"crash": 1.5}))
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(e.to_string(), "crash: 1.5 is above 1");
}

fn muster_agents(actors: &std::path::Path) -> std::process::Output {
    crate::support::common::muster()
        .args(["agents", "--json", "--schemas", "schemas", "--actors"])
        .arg(actors)
        .output()
        .unwrap()
}

const SIM: &str = r#"
name = "sim-tester"
[[capabilities]]
name = "code.test"
input = "test-request"
output = "test-report"
[backend]
kind = "sim"
seed = 3
crash = 0.1
[backend.latency]
kind = "normal"
mean = "2s"
std_dev = "500ms"
"#;

#[test]
fn the_binary_exits_2_naming_the_file_and_field_of_a_bad_sim_manifest() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("good.toml"), SIM).unwrap();
    let out = muster_agents(d.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = SIM
        .replace("name = \"sim-tester\"", "name = \"bad\"")
        .replace("std_dev = \"500ms\"", "std_dev = -1");
    std::fs::write(d.path().join("bad.toml"), bad).unwrap();
    let worse = SIM
        .replace("name = \"sim-tester\"", "name = \"worse\"")
        .replace("crash = 0.1", "crash = 1.5");
    std::fs::write(d.path().join("worse.toml"), worse).unwrap();
    let out = muster_agents(d.path());
    assert_eq!(out.status.code(), Some(2));
    let err: Value = serde_json::from_slice(&out.stdout)
        .or_else(|_| serde_json::from_slice(&out.stderr))
        .unwrap_or_else(|_| json!(String::from_utf8_lossy(&out.stderr)));
    let text = err.to_string();
    assert!(
        text.contains("bad.toml") && text.contains("/backend/latency/std_dev"),
        "{text}"
    );
    assert!(
        text.contains("worse.toml") && text.contains("/backend/crash"),
        "{text}"
    );
}

#[test]
fn the_sample_sim_cast_registers() {
    let out = muster_agents(std::path::Path::new("examples/scenarios/sim-actors"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["agents"][0]["id"], "sim-tester#0");
}
