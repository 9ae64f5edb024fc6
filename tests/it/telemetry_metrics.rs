//! Metrics tell what the journal says: a real workload (a timeout, a reassignment, a
//! fenced stale result, model tokens, an escalation) is followed from the journal, the
//! rendered text is parsed as Prometheus text, and every counter equals the journal's own
//! count and the runtime's counters; label values past their cap fold into `other`; a
//! record fed twice counts once; the SQLite writer's commits are rendered as histograms.

use crate::support::common;
use crate::support::telemetry as telemetry_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{paused, real};
use muster::journal::{Durability, Event, Journal, Record, SqliteJournal, Usage};
use muster::telemetry::{Follower, Metrics, MetricsConfig};
use muster::{AgentDef, CapabilitySpec, Muster, Task, TaskStatus};
use prometheus_parse::{Scrape, Value};
use serde_json::json;

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text parses")
}

/// The value of the sample `name` with exactly these labels (0 when absent, as Prometheus
/// reads a counter that was never incremented).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| {
            let l: &HashMap<String, String> = &x.labels;
            l.len() == labels.len() && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
        })
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is not a single value: {other:?}"),
        })
        .collect();
    assert!(found.len() <= 1, "{name}{labels:?} appears more than once");
    found.first().copied().unwrap_or(0.0)
}

/// Every series of `name`: its labels and value.
fn series(s: &Scrape, name: &str) -> Vec<(HashMap<String, String>, f64)> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .map(|x| {
            let v = match &x.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                other => panic!("{name} is not a single value: {other:?}"),
            };
            let l: &HashMap<String, String> = &x.labels;
            (l.clone(), v)
        })
        .collect()
}

fn count(records: &[Record], kind: &str) -> f64 {
    records.iter().filter(|r| r.event.kind() == kind).count() as f64
}

#[test]
fn every_counter_equals_what_the_journal_and_the_runtime_say() {
    paused(async {
        let m = telemetry_support::runtime().await;
        let metrics = Arc::new(Metrics::default());
        let mut follower = Follower::new(m.journal()).metrics(metrics.clone());
        let (run, bare) = telemetry_support::workload(&m).await;
        assert_eq!(bare.status, TaskStatus::Escalated);
        assert_eq!(run.reassignments, 1, "{run:?}");
        assert_eq!(run.stale_rejected, 1, "{run:?}");

        follower.catch_up();
        let records = m.journal().read_after(0);
        assert_eq!(follower.position(), records.len() as u64);
        let s = parse(&metrics.render(&m));

        // The journal's own counts.
        let j = |kind| count(&records, kind);
        let reassigned = records
            .iter()
            .filter(|r| matches!(r.event, Event::LeaseGranted { attempt, .. } if attempt > 1))
            .count() as f64;
        let failed_by = |reason: &str| {
            records
                .iter()
                .filter(
                    |r| matches!(&r.event, Event::AttemptFailed { reason: x, .. } if x == reason),
                )
                .count() as f64
        };
        assert_eq!(
            value(&s, "muster_tasks_submitted_total", &[]),
            j("task_submitted")
        );
        assert_eq!(
            value(&s, "muster_tasks_ended_total", &[("status", "completed")]),
            j("result_accepted")
        );
        assert_eq!(
            value(&s, "muster_tasks_ended_total", &[("status", "escalated")]),
            j("task_escalated")
        );
        assert_eq!(
            value(&s, "muster_leases_granted_total", &[]),
            j("lease_granted")
        );
        assert_eq!(value(&s, "muster_reassignments_total", &[]), reassigned);
        assert_eq!(
            value(&s, "muster_stale_results_total", &[]),
            j("result_stale")
        );
        assert_eq!(
            value(&s, "muster_attempts_total", &[("outcome", "completed")]),
            j("result_accepted")
        );
        for reason in ["timeout", "error"] {
            assert_eq!(
                value(&s, "muster_attempts_total", &[("outcome", reason)]),
                failed_by(reason),
                "attempts failed by {reason}"
            );
        }
        // Restarts by supervisor (the test killed an instance).
        let restarts: Vec<String> = records
            .iter()
            .filter_map(|r| match &r.event {
                Event::ChildRestarted { supervisor, .. } => Some(supervisor.to_string()),
                _ => None,
            })
            .collect();
        assert!(!restarts.is_empty(), "the killed instance was restarted");
        for sup in &restarts {
            assert_eq!(
                value(
                    &s,
                    "muster_child_restarts_total",
                    &[("supervisor", sup.as_str())]
                ),
                restarts.iter().filter(|x| *x == sup).count() as f64,
                "restarts by {sup}"
            );
        }
        assert_eq!(
            value(&s, "muster_runs_started_total", &[]),
            j("run_started")
        );
        assert_eq!(
            value(&s, "muster_runs_ended_total", &[("status", "completed")]),
            j("run_ended")
        );
        // Every lease ended once: in the latency histogram, by outcome.
        assert_eq!(
            value(
                &s,
                "muster_lease_seconds_count",
                &[("outcome", "completed")]
            ),
            j("result_accepted")
        );
        assert_eq!(
            value(&s, "muster_lease_seconds_count", &[("outcome", "failed")]),
            j("attempt_failed")
        );
        // Model tokens by agent, as the usage records say.
        let mut by_agent: HashMap<String, (u64, u64)> = HashMap::new();
        for r in &records {
            if let Event::ModelUsage { agent, usage, .. } = &r.event {
                let e = by_agent.entry(agent.to_string()).or_default();
                e.0 += usage.prompt_tokens.unwrap_or(0);
                e.1 += usage.completion_tokens.unwrap_or(0);
            }
        }
        assert_eq!(
            by_agent.len(),
            2,
            "both reviewers spent tokens: {by_agent:?}"
        );
        for (agent, (input, output)) in &by_agent {
            let tokens = |kind| {
                value(
                    &s,
                    "muster_model_tokens_total",
                    &[("agent", agent.as_str()), ("kind", kind)],
                )
            };
            assert_eq!(tokens("input"), *input as f64, "{agent}");
            assert_eq!(tokens("output"), *output as f64, "{agent}");
        }

        // The same figures as the runtime's own counters.
        let st = m.stats();
        assert_eq!(
            value(&s, "muster_tasks_submitted_total", &[]),
            st.submitted as f64
        );
        assert_eq!(
            value(&s, "muster_tasks_ended_total", &[("status", "completed")]),
            st.completed as f64
        );
        assert_eq!(
            value(&s, "muster_tasks_ended_total", &[("status", "escalated")]),
            st.escalated as f64
        );
        assert_eq!(
            value(&s, "muster_reassignments_total", &[]),
            st.reassigned as f64
        );
        assert_eq!(
            value(&s, "muster_stale_results_total", &[]),
            st.stale_rejected as f64
        );
        assert_eq!(
            value(&s, "muster_attempts_total", &[("outcome", "timeout")])
                + value(&s, "muster_attempts_total", &[("outcome", "error")]),
            st.failed_attempts as f64
        );

        // Gauges read from the handle now.
        let agents = m.agents();
        assert_eq!(
            value(&s, "muster_agents", &[("state", "ready")]),
            agents
                .iter()
                .filter(|a| a.state.as_str() == "ready")
                .count() as f64
        );
        assert_eq!(value(&s, "muster_tasks_live", &[]), m.live_tasks() as f64);
        for a in &agents {
            assert_eq!(
                value(&s, "muster_agent_in_flight", &[("agent", a.id.as_str())]),
                a.in_flight as f64
            );
        }
        assert_eq!(
            value(&s, "muster_telemetry_journal_seq", &[]),
            records.len() as f64
        );
        m.shutdown().await;
    });
}

#[test]
fn attempts_interrupted_at_resume_are_counted_by_refund() {
    paused(async {
        let m = telemetry_support::runtime().await;
        let metrics = Metrics::default();
        let interrupted = |seq: u64, refunded: bool| Record {
            seq,
            at_ms: 1,
            event: Event::AttemptInterrupted {
                task: uuid::Uuid::now_v7(),
                agent: Arc::from("echo#0"),
                epoch: 1,
                refunded,
            },
        };
        for (seq, refunded) in [(1, true), (2, true), (3, false)] {
            metrics.observe(&interrupted(seq, refunded));
        }
        let s = parse(&metrics.render(&m));
        let name = "muster_attempts_interrupted_total";
        assert_eq!(value(&s, name, &[("refunded", "true")]), 2.0);
        assert_eq!(value(&s, name, &[("refunded", "false")]), 1.0);
        m.shutdown().await;
    });
}

#[test]
fn a_record_fed_twice_is_counted_once() {
    paused(async {
        let m = telemetry_support::runtime().await;
        let _ = telemetry_support::workload(&m).await;
        let metrics = Arc::new(Metrics::default());
        Follower::new(m.journal())
            .metrics(metrics.clone())
            .batch(7)
            .catch_up();
        let once = metrics.render(&m);
        // A second follower from the start (a restarted server) feeds the same records.
        Follower::new(m.journal())
            .metrics(metrics.clone())
            .catch_up();
        let s1 = parse(&once);
        let s2 = parse(&metrics.render(&m));
        for name in [
            "muster_tasks_submitted_total",
            "muster_leases_granted_total",
            "muster_reassignments_total",
            "muster_stale_results_total",
        ] {
            assert!(value(&s1, name, &[]) > 0.0, "{name} counted something");
            assert_eq!(value(&s1, name, &[]), value(&s2, name, &[]), "{name}");
        }
        m.shutdown().await;
    });
}

#[test]
fn agent_labels_past_the_cap_fold_into_other() {
    paused(async {
        let m = Muster::builder().start().await.expect("runtime");
        let metrics = Metrics::with_config(MetricsConfig {
            agent_labels: 2,
            ..MetricsConfig::default()
        });
        let task = uuid::Uuid::now_v7();
        for (seq, agent) in ["a#0", "b#0", "c#0", "d#0", "a#0"].iter().enumerate() {
            metrics.observe(&Record {
                seq: seq as u64 + 1,
                at_ms: 0,
                event: Event::ModelUsage {
                    task,
                    agent: (*agent).into(),
                    epoch: 1,
                    usage: Usage::known("m", 1, 0),
                },
            });
        }
        let s = parse(&metrics.render(&m));
        let by: HashMap<String, f64> = series(&s, "muster_model_tokens_total")
            .into_iter()
            .filter(|(l, _)| l.get("kind").map(String::as_str) == Some("input"))
            .map(|(l, v)| (l["agent"].clone(), v))
            .collect();
        assert_eq!(by.len(), 3, "two agents and `other`: {by:?}");
        assert_eq!(by["a#0"], 2.0);
        assert_eq!(by["b#0"], 1.0);
        assert_eq!(by["other"], 2.0, "c#0 and d#0 folded");
        m.shutdown().await;
    });
}

#[test]
fn the_sqlite_writers_commits_are_rendered_as_histograms() {
    real(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Arc::new(
            SqliteJournal::open(dir.path().join("journal.db"), Durability::Relaxed)
                .expect("journal"),
        );
        let m = Muster::builder()
            .schema("any", json!({}))
            .journal(journal.clone())
            .agent(
                AgentDef::function("echo", |v, _| async move { Ok(v) })
                    .capability(CapabilitySpec::new("echo", "any", "any")),
            )
            .start()
            .await
            .expect("runtime");
        for i in 0..20 {
            m.delegate(Task::new("echo", json!({"i": i})))
                .await
                .expect("delegated");
        }
        let metrics = Arc::new(Metrics::default());
        let following = Follower::new(m.journal())
            .metrics(metrics.clone())
            .spawn(Duration::from_millis(50));
        following.stop().await.expect("the follower stops");
        journal.flush().expect("flushed");
        let w = journal.write_stats().expect("SQLite reports its writes");
        let s = parse(&metrics.render(&m));
        assert!(w.commits > 0);
        assert_eq!(
            value(&s, "muster_journal_commit_seconds_count", &[]),
            w.commits as f64
        );
        assert_eq!(
            value(&s, "muster_journal_batch_records_sum", &[]),
            w.records as f64
        );
        assert_eq!(w.records, journal.len(), "every record committed once");
        // The follower saw every record the journal had when it stopped.
        assert!(metrics.last_seq() >= 20 * 3, "{}", metrics.last_seq());
        assert_eq!(value(&s, "muster_tasks_submitted_total", &[]), 20.0);
        m.shutdown().await;
    });
}
