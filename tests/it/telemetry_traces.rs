//! A run is a trace: spans built from the journal of a real workload, exported to the
//! SDK's in-memory exporter, form the tree run > task > attempt > model call, carry the
//! agent, epoch, outcome, GenAI usage and the envelope's correlation and causation ids,
//! take their times from the journal, and keep their ids when a follower starts in the
//! middle of a run (a resumed process); open spans stay within their cap.

use crate::support::common;
use crate::support::telemetry as telemetry_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::paused;
use muster::TaskStatus;
use muster::journal::{Event, Record};
use muster::telemetry::traces::{attempt_span_id, run_span_id, task_span_id, trace_id};
use muster::telemetry::{Follower, Traces};
use opentelemetry::trace::{SpanId, Status};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use prost::Message;

fn attr(s: &SpanData, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn named<'a>(spans: &'a [SpanData], prefix: &str) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| s.name.starts_with(prefix))
        .collect()
}

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// The journal's `at_ms` of the first record matching `f`.
fn at_of(records: &[Record], f: impl Fn(&Event) -> bool) -> u64 {
    records
        .iter()
        .find(|r| f(&r.event))
        .map(|r| r.at_ms)
        .expect("the record is in the journal")
}

/// The task the run submitted (its correlation id is the run's).
fn task_of_run(records: &[Record], run: uuid::Uuid) -> uuid::Uuid {
    records
        .iter()
        .find_map(|r| match &r.event {
            Event::TaskSubmitted {
                task, correlation, ..
            } if *correlation == run => Some(*task),
            _ => None,
        })
        .expect("the run submitted a task")
}

#[test]
fn a_run_is_one_trace_of_run_task_attempt_and_model_call_spans() {
    paused(async {
        let m = telemetry_support::runtime().await;
        let exporter = InMemorySpanExporter::default();
        let mut follower =
            Follower::new(m.journal()).traces(Traces::with_exporter(exporter.clone()));
        let (run, bare) = telemetry_support::workload(&m).await;
        follower.catch_up();
        let records = m.journal().read_after(0);
        let spans = exporter.get_finished_spans().expect("spans");

        // The run: the root of a trace whose id is the run id.
        let runs = named(&spans, "run ");
        assert_eq!(
            runs.len(),
            1,
            "{:#?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        let r = runs[0];
        assert_eq!(r.name, "run review");
        assert_eq!(r.span_context.trace_id(), trace_id(run.run));
        assert_eq!(r.span_context.span_id(), run_span_id(run.run));
        assert_eq!(r.parent_span_id, SpanId::INVALID);
        assert_eq!(r.status, Status::Ok);
        assert_eq!(attr(r, "muster.run.status").as_deref(), Some("completed"));
        assert_eq!(
            r.start_time,
            at(at_of(&records, |e| matches!(e, Event::RunStarted { .. })))
        );
        assert_eq!(
            r.end_time,
            at(at_of(&records, |e| matches!(e, Event::RunEnded { .. })))
        );
        assert!(r.events.iter().any(|e| e.name == "step_entered"));

        // Its task, under it.
        let task = task_of_run(&records, run.run);
        let tasks: Vec<_> = named(&spans, "task review");
        assert_eq!(tasks.len(), 1);
        let t = tasks[0];
        assert_eq!(t.span_context.trace_id(), trace_id(run.run));
        assert_eq!(t.span_context.span_id(), task_span_id(task));
        assert_eq!(t.parent_span_id, r.span_context.span_id());
        assert_eq!(attr(t, "muster.task.id"), Some(task.to_string()));
        assert_eq!(attr(t, "muster.correlation_id"), Some(run.run.to_string()));
        assert_eq!(attr(t, "muster.task.status").as_deref(), Some("completed"));

        // Two attempts under the task: the first timed out, the second completed.
        let mut attempts = named(&spans, "invoke_agent reviewer");
        attempts.sort_by_key(|s| attr(s, "muster.epoch"));
        assert_eq!(attempts.len(), 2);
        for (a, (epoch, outcome)) in attempts.iter().zip([(1, "timeout"), (2, "completed")]) {
            assert_eq!(a.span_context.trace_id(), trace_id(run.run));
            assert_eq!(a.span_context.span_id(), attempt_span_id(task, epoch));
            assert_eq!(a.parent_span_id, t.span_context.span_id());
            assert_eq!(
                attr(a, "gen_ai.operation.name").as_deref(),
                Some("invoke_agent")
            );
            assert_eq!(attr(a, "gen_ai.agent.name").as_deref(), Some("reviewer"));
            assert_eq!(attr(a, "muster.epoch"), Some(epoch.to_string()));
            assert_eq!(attr(a, "muster.outcome").as_deref(), Some(outcome));
            assert_eq!(attr(a, "muster.correlation_id"), Some(run.run.to_string()));
            let leased = at_of(
                &records,
                |e| matches!(e, Event::LeaseGranted { task: x, epoch: y, .. } if *x == task && *y == epoch),
            );
            assert_eq!(a.start_time, at(leased), "the attempt starts at its lease");
        }
        assert!(matches!(attempts[0].status, Status::Error { .. }));
        assert_ne!(
            attr(attempts[0], "muster.agent"),
            attr(attempts[1], "muster.agent")
        );
        // The second envelope was caused by the first.
        assert_eq!(
            attr(attempts[1], "muster.causation_id"),
            attr(attempts[0], "muster.envelope.id")
        );

        // A model-call span under each attempt, with GenAI usage.
        let calls = named(&spans, "chat ");
        assert_eq!(calls.len(), 2);
        for c in &calls {
            assert!(
                attempts
                    .iter()
                    .any(|a| a.span_context.span_id() == c.parent_span_id)
            );
            assert_eq!(c.span_context.trace_id(), trace_id(run.run));
            assert_eq!(attr(c, "gen_ai.operation.name").as_deref(), Some("chat"));
            assert_eq!(
                attr(c, "gen_ai.request.model").as_deref(),
                Some(telemetry_support::MODEL)
            );
            assert_eq!(attr(c, "gen_ai.usage.input_tokens").as_deref(), Some("10"));
            assert_eq!(attr(c, "gen_ai.usage.output_tokens").as_deref(), Some("5"));
        }

        // The late answer of epoch 1, fenced, under the task.
        let stale = named(&spans, "stale_result ");
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].parent_span_id, t.span_context.span_id());
        assert_eq!(attr(stale[0], "muster.epoch").as_deref(), Some("1"));
        assert_eq!(attr(stale[0], "muster.current_epoch").as_deref(), Some("2"));

        // The bare task is a trace of its own, escalated after two failed attempts.
        assert_eq!(bare.status, TaskStatus::Escalated);
        let b = named(&spans, "task break");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].span_context.trace_id(), trace_id(bare.id));
        assert_eq!(b[0].parent_span_id, SpanId::INVALID);
        assert!(matches!(b[0].status, Status::Error { .. }));
        let failed = named(&spans, "invoke_agent breaker");
        assert_eq!(failed.len(), 2);
        assert!(
            failed
                .iter()
                .all(|a| a.parent_span_id == b[0].span_context.span_id()
                    && attr(a, "muster.outcome").as_deref() == Some("error"))
        );

        // Nothing left open, nothing evicted.
        let traces = follower.traces_ref().expect("traces");
        assert_eq!(traces.open_spans(), 0);
        assert_eq!(traces.evicted(), 0);
        m.shutdown().await;
    });
}

#[test]
fn a_follower_starting_mid_run_continues_the_same_trace() {
    paused(async {
        let m = telemetry_support::runtime().await;
        let (run, _) = telemetry_support::workload(&m).await;
        let records = m.journal().read_after(0);
        // A process that resumed the run reads the journal from after its first lease.
        let from = records
            .iter()
            .find(|r| matches!(r.event, Event::LeaseGranted { .. }))
            .map(|r| r.seq)
            .expect("a lease");
        let exporter = InMemorySpanExporter::default();
        let mut follower = Follower::new(m.journal())
            .starting_after(from)
            .traces(Traces::with_exporter(exporter.clone()));
        follower.catch_up();
        let spans = exporter.get_finished_spans().expect("spans");
        let runs = named(&spans, "run");
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].span_context.trace_id(), trace_id(run.run));
        assert_eq!(runs[0].span_context.span_id(), run_span_id(run.run));
        assert_eq!(attr(runs[0], "muster.run.resumed").as_deref(), Some("true"));
        // The second attempt hangs under the task span id the first process used.
        let task = task_of_run(&records, run.run);
        let a = named(&spans, "invoke_agent reviewer");
        assert_eq!(a.len(), 1, "only the attempt leased after the resume point");
        assert_eq!(a[0].parent_span_id, task_span_id(task));
        assert_eq!(a[0].span_context.trace_id(), trace_id(run.run));
        m.shutdown().await;
    });
}

#[test]
fn open_spans_stay_within_their_cap_and_evictions_are_counted() {
    paused(async {
        let m = telemetry_support::runtime().await;
        let _ = telemetry_support::workload(&m).await;
        let exporter = InMemorySpanExporter::default();
        let mut follower = Follower::new(m.journal())
            .traces(Traces::with_exporter(exporter.clone()).with_capacity(1));
        let records = m.journal().read_after(0);
        let mut most = 0;
        for r in &records {
            follower.feed(std::slice::from_ref(r));
            most = most.max(follower.traces_ref().expect("traces").open_spans());
        }
        let traces = follower.traces_ref().expect("traces");
        assert_eq!(most, 1, "never more than the cap open");
        assert!(
            traces.evicted() > 0,
            "the run span was pushed out by its task"
        );
        m.shutdown().await;
    });
}

/// A stand-in OTLP/HTTP collector on 127.0.0.1: keeps every `/v1/traces` body.
async fn collector() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().expect("lock").push(body.to_vec());
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), bodies)
}

fn cast(dir: &Path) {
    std::fs::create_dir_all(dir.join("actors")).expect("actors");
    std::fs::create_dir_all(dir.join("schemas")).expect("schemas");
    std::fs::write(
        dir.join("schemas/obj.schema.json"),
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}"#,
    )
    .expect("schema");
    std::fs::write(
        dir.join("actors/echo.toml"),
        "name = \"echo\"\n[[capabilities]]\nname = \"echo\"\ninput = \"obj\"\noutput = \"obj\"\n[backend]\nkind = \"function\"\nname = \"echo\"\n",
    )
    .expect("manifest");
    std::fs::write(
        dir.join("wf.toml"),
        "name = \"traced\"\ninput = \"obj\"\nstart = \"say\"\n[steps.say]\ncapability = \"echo\"\ntimeout = \"5s\"\nattempts = 1\non_exhausted = \"fail\"\nnext = \"done\"\n[steps.done]\nterminal = \"done\"\n",
    )
    .expect("workflow");
}

fn muster_run(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut c = crate::support::common::muster();
    c.current_dir(dir)
        .args([
            "run",
            "wf.toml",
            "--input",
            "{}",
            "--journal",
            "j.db",
            "--json",
        ])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .env_remove("OTEL_SERVICE_NAME")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

#[test]
fn muster_run_exports_its_run_as_one_trace_over_otlp_http() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let (url, bodies) = collector().await;
        let dir = tempfile::tempdir().expect("tempdir");
        cast(dir.path());
        let cmd = muster_run(dir.path(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str())]);
        let out = tokio::task::spawn_blocking(move || common::output_within(120, cmd))
            .await
            .expect("muster run ran");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
        let run: uuid::Uuid = doc["run"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("the run id");

        let mut spans = Vec::new();
        let mut services = Vec::new();
        for body in bodies.lock().expect("lock").iter() {
            let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
            for rs in req.resource_spans {
                for kv in rs.resource.iter().flat_map(|r| r.attributes.iter()) {
                    if kv.key == "service.name" {
                        services.push(format!("{:?}", kv.value));
                    }
                }
                for ss in rs.scope_spans {
                    spans.extend(ss.spans);
                }
            }
        }
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        let one = |name: &str| {
            let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
            assert_eq!(found.len(), 1, "one `{name}` span in {names:?}");
            found[0]
        };
        let r = one("run traced");
        let t = one("task echo");
        let a = one("invoke_agent echo");
        for s in [r, t, a] {
            assert_eq!(
                s.trace_id,
                run.as_bytes().to_vec(),
                "{} is in the run's trace",
                s.name
            );
        }
        assert_eq!(r.span_id, run_span_id(run).to_bytes().to_vec());
        assert!(r.parent_span_id.is_empty());
        assert_eq!(t.parent_span_id, r.span_id);
        assert_eq!(a.parent_span_id, t.span_id);
        assert!(
            services.iter().all(|s| s.contains("muster")),
            "{services:?}"
        );
    });
}

#[test]
fn an_otel_variable_this_build_cannot_honour_is_bad_input_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    cast(dir.path());
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector:21"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ] {
        let mut env = vec![(var, value)];
        if var != "OTEL_EXPORTER_OTLP_ENDPOINT" {
            env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"));
        }
        let out = common::output_within(60, muster_run(dir.path(), &env));
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {all}");
        assert!(all.contains(var), "{var} is named: {all}");
        assert!(
            !dir.path().join("j.db").exists(),
            "nothing ran, no journal was created"
        );
    }
}

#[test]
fn an_unreachable_collector_does_not_change_the_runs_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    cast(dir.path());
    // A port nobody listens on: every export is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = common::output_within(
        120,
        muster_run(dir.path(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str())]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
    assert_eq!(doc["status"], "completed", "{doc}");
}
