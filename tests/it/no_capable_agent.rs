//! G1 and G4 when a capability has nobody left: once every agent type serving it has
//! dropped out (its supervisor gave up, past its restart intensity) a task for it does not
//! wait out its deadline, it escalates at once as `no_capable_agent`, naming the
//! capability and why its agents dropped out. An agent that is merely restarting (within
//! its intensity) is still waited for (OTP: only a supervisor that gave up means gone).
//! `muster run` exits at once when an agent type drops out at start, naming the manifest
//! and the reason, and `muster check` warns about a program it cannot find.

use crate::support::cast::{Cast, command_agent, one_step_workflow};
use crate::support::common;

use std::time::Duration;

use common::*;
use futures::future::LocalBoxFuture;
use muster::{
    Agent, AgentDef, AgentError, AgentLink, AgentState, Event, Supervision, Task, TaskContext,
    TaskStatus,
};
use serde_json::{Value, json};

/// An agent that never starts: every start (and restart) fails with `why`.
struct NeverStarts(&'static str);

impl Agent for NeverStarts {
    fn handle(
        &self,
        _: Value,
        _: TaskContext,
    ) -> LocalBoxFuture<'static, Result<Value, AgentError>> {
        Box::pin(async { Err(AgentError::new("never started, so never asked")) })
    }

    fn start(&self, _: AgentLink) -> LocalBoxFuture<'static, Result<(), AgentError>> {
        let why = self.0;
        Box::pin(async move { Err(AgentError::new(why)) })
    }
}

fn never_starts(name: &str) -> AgentDef {
    AgentDef::new(name, |_: &str| {
        Box::new(NeverStarts("cannot reach its model")) as Box<dyn Agent>
    })
    .capability(cap())
}

const DEADLINE: Duration = Duration::from_secs(180);

#[test]
fn a_task_whose_only_agent_type_drops_out_escalates_no_capable_agent_at_once() {
    run_paused(|| async {
        let m = builder().start().await.expect("runtime starts");
        let waiting = m
            .submit(Task::new(CAP, input(1)).deadline(DEADLINE))
            .await
            .expect("submitted before any agent");
        let id = waiting.id();
        pass(Duration::from_secs(1)).await;
        assert_eq!(m.live_tasks(), 1, "it waits for an agent to register");

        // Its only agent type cannot start: past its intensity its supervisor gives up,
        // and the registration says so at once rather than at the start timeout.
        let err = within(
            5,
            "the registration's answer",
            m.register(never_starts("w")),
        )
        .await
        .expect_err("an agent that never starts is not registered");
        let err = err.to_string();
        assert!(err.contains("dropped out"), "{err}");
        assert!(err.contains("cannot reach its model"), "{err}");

        // The waiting task escalates right after the drop-out, long before its deadline.
        let out = within(
            5,
            "the outcome (well before the 180 s deadline)",
            waiting.outcome(),
        )
        .await;
        assert_eq!(out.status, TaskStatus::Escalated, "{out:?}");
        assert!(out.leases.is_empty());
        assert!(
            out.duration_ms().is_some_and(|d| d < 5_000),
            "escalated at the drop-out, not the deadline: {:?}",
            out.duration_ms()
        );
        let esc = out.escalation.expect("escalation");
        assert_eq!(esc.to, "dead_letter");
        assert!(
            esc.reason.starts_with("no_capable_agent: "),
            "{}",
            esc.reason
        );
        assert!(esc.reason.contains(&format!("`{CAP}`")), "{}", esc.reason);
        assert!(esc.reason.contains("`w`"), "{}", esc.reason);
        assert!(
            esc.reason.contains("cannot reach its model"),
            "{}",
            esc.reason
        );
        let events = events_of(&m, id);
        assert_eq!(count_kind(&events, "task_escalated"), 1);

        // A task submitted after the drop-out escalates the same way, without waiting.
        let t0 = tokio::time::Instant::now();
        let late = m
            .delegate(Task::new(CAP, input(2)).deadline(DEADLINE))
            .await
            .expect("an outcome");
        assert_eq!(late.status, TaskStatus::Escalated, "{late:?}");
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        let reason = late.escalation.expect("escalation").reason;
        assert!(reason.starts_with("no_capable_agent: "), "{reason}");
        assert_eq!(m.live_tasks(), 0);
    });
}

#[test]
fn a_task_leased_when_its_only_agent_type_gives_up_escalates_no_capable_agent() {
    run_paused(|| async {
        // Panics on every task; intensity 0: the first crash is one too many.
        let def = agent("brittle", |_input, _ctx| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!("boom");
        })
        .supervision(Supervision {
            intensity: 0,
            ..Supervision::default()
        });
        let m = builder().agent(def).start().await.expect("runtime starts");
        let out = within(
            5,
            "the outcome (well before the 180 s deadline)",
            m.delegate(Task::new(CAP, input(3)).deadline(DEADLINE).attempts(3)),
        )
        .await
        .expect("an outcome");
        assert_eq!(out.status, TaskStatus::Escalated, "{out:?}");
        assert_eq!(out.leases.len(), 1, "{out:?}");
        let reason = out.escalation.expect("escalation").reason;
        assert!(reason.starts_with("no_capable_agent: "), "{reason}");
        assert!(reason.contains("`brittle`"), "{reason}");
        assert!(reason.contains("boom"), "{reason}");
        assert!(journal(&m).iter().any(|r| matches!(
            &r.event,
            Event::SupervisorEscalated { supervisor, .. } if supervisor.as_ref() == "brittle"
        )));
    });
}

#[test]
fn a_capability_whose_agent_is_restarting_is_still_waited_for_and_the_task_completes() {
    run_paused(|| async {
        // Panics on its first task; restarted (within its intensity) after a 2 s back-off.
        let crashed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let def = agent("slow_restart", move |input, _ctx| {
            let crashed = crashed.clone();
            async move {
                if !crashed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    panic!("first task crashes");
                }
                Ok(json!({"value": input["n"]}))
            }
        })
        .supervision(Supervision {
            backoff: Duration::from_secs(2),
            ..Supervision::default()
        });
        let m = builder().agent(def).start().await.expect("runtime starts");
        let first = m
            .delegate(
                Task::new(CAP, input(1))
                    .deadline(Duration::from_secs(60))
                    .attempts(1),
            )
            .await
            .expect("an outcome");
        assert_eq!(first.status, TaskStatus::Escalated, "{first:?}");
        assert!(
            !first
                .escalation
                .expect("escalation")
                .reason
                .contains("no_capable_agent"),
            "a crash within the intensity is no drop-out"
        );
        // The instance is down, restarting: the next task waits for it and runs on it.
        pass(Duration::from_millis(500)).await;
        assert!(
            m.agents().iter().all(|a| a.state != AgentState::Ready),
            "{:?}",
            m.agents()
        );
        let h = m
            .submit(Task::new(CAP, input(5)).deadline(Duration::from_secs(60)))
            .await
            .expect("submitted");
        let out = within(30, "the outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
        assert_eq!(out.output.as_deref(), Some(&json!({"value": 5})));
        assert_eq!(out.owner(), Some("slow_restart#0"));
    });
}

/// A cast whose one agent runs a program that does not exist, and a one-step workflow.
fn missing_program_cast() -> tempfile::TempDir {
    let program = "muster-test-no-such-program";
    let manifest = command_agent("ghost", "haunt", "any", program, &[], "stdio", "");
    Cast::new()
        .schema("any", r#"{"type":"object"}"#)
        .actor("ghost", &manifest)
        .file("wf.toml", &one_step_workflow("t", "any", "haunt", "10s", 1))
        .into_dir()
}

#[test]
fn muster_run_with_a_missing_program_exits_2_naming_the_drop_out_not_a_timeout() {
    let d = missing_program_cast();
    let started = std::time::Instant::now();
    let out = muster_within(
        60,
        &["run", "wf.toml", "--input", "{}", "--journal", "j.db"],
        d.path(),
    );
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("ghost.toml"), "names the manifest: {err}");
    assert!(err.contains("agent `ghost`"), "names the agent type: {err}");
    assert!(err.contains("dropped out"), "names the drop-out: {err}");
    assert!(
        err.contains("`muster-test-no-such-program` not found on PATH"),
        "says why: {err}"
    );
    assert!(
        !err.contains("did not all start within"),
        "not the start timeout: {err}"
    );
    // Far above the expected figure (milliseconds), far below the 10 s start timeout plus
    // a busy machine's start-up.
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[test]
fn muster_check_warns_about_a_program_it_cannot_find_naming_the_manifest() {
    let d = missing_program_cast();
    let out = muster_within(60, &["check", "wf.toml"], d.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning does not fail the check: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("warning: "))
        .unwrap_or_else(|| panic!("a warning: {text}"));
    assert!(line.contains("ghost.toml"), "{line}");
    assert!(line.contains("agent `ghost`"), "{line}");
    assert!(
        line.contains("`muster-test-no-such-program` not found on PATH"),
        "{line}"
    );

    let out = muster_within(60, &["check", "wf.toml", "--json"], d.path());
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["ok"], json!(true), "{doc}");
    let warnings = doc["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{doc}");
    assert!(
        warnings[0]
            .as_str()
            .is_some_and(|w| w.contains("ghost.toml")),
        "{doc}"
    );
}
