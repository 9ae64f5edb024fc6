//! Command agents through the runtime: both modes round-trip; a program that exits
//! mid-task or prints garbage gives a clear error, and the runtime keeps running.
//! These drive real `python3` processes, so they use the real clock with bounded waits.

use crate::support::common;

use std::time::Duration;

use common::{real, within};
use muster::agents::command::{CommandConfig, CommandFactory, CommandMode};
use muster::{AgentDef, CapabilitySpec, Muster, Restart, Task, TaskStatus};
use serde_json::json;

fn def(name: &str, script: &str, mode: CommandMode) -> AgentDef {
    let cfg = CommandConfig::new("python3")
        .with_args([script])
        .with_mode(mode);
    AgentDef::new(name, CommandFactory(cfg)).capability(CapabilitySpec::new(name, "any", "any"))
}

async fn runtime() -> Muster {
    Muster::builder()
        .schema("any", json!({"type": "object"}))
        .start()
        .await
        .expect("runtime starts")
}

#[test]
fn a_oneshot_command_agent_round_trips() {
    real(async {
        let m = runtime().await;
        m.register(def(
            "echo1",
            "examples/agents/echo_oneshot.py",
            CommandMode::Oneshot,
        ))
        .await
        .unwrap();
        let out = within(30, "task", m.delegate(Task::new("echo1", json!({"n": 1}))))
            .await
            .unwrap();
        assert!(out.is_completed(), "{out:?}");
        assert_eq!(out.output.unwrap()["echo"], json!({"n": 1}));
    });
}

#[test]
fn a_stdio_command_agent_round_trips_many_tasks_in_one_process() {
    real(async {
        let m = runtime().await;
        m.register(def("echo2", "examples/agents/echo_stdio.py", CommandMode::Stdio).replicas(2))
            .await
            .unwrap();
        for i in 0..5 {
            let out = within(30, "task", m.delegate(Task::new("echo2", json!({"i": i}))))
                .await
                .unwrap();
            assert!(out.is_completed(), "{out:?}");
            assert_eq!(out.output.unwrap()["echo"]["i"], json!(i));
        }
        assert_eq!(m.stats().completed, 5);
    });
}

#[test]
fn an_agent_that_exits_mid_task_gives_a_clear_error_and_is_restarted() {
    real(async {
        let m = runtime().await;
        m.register(
            def(
                "dies",
                "tests/fixtures/agents/exit_midtask_stdio.py",
                CommandMode::Stdio,
            )
            .restart(Restart::Permanent),
        )
        .await
        .unwrap();
        let out = within(
            30,
            "task",
            m.delegate(
                Task::new("dies", json!({}))
                    .attempts(1)
                    .timeout(Duration::from_secs(20)),
            ),
        )
        .await
        .unwrap();
        assert_eq!(out.status, TaskStatus::Escalated);
        let text = serde_json::to_string(&out.leases).unwrap();
        assert!(text.contains("exit"), "the failure names the exit: {text}");
        // The supervisor restarts the instance; the runtime keeps serving.
        within(30, "restart", async {
            loop {
                if m.agents()
                    .iter()
                    .any(|a| a.id == "dies#0" && a.generation >= 2)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(m.stopped().is_none());
    });
}

#[test]
fn an_agent_that_prints_garbage_gives_a_protocol_error() {
    real(async {
        let m = runtime().await;
        m.register(def(
            "garbage",
            "tests/fixtures/agents/garbage_stdio.py",
            CommandMode::Stdio,
        ))
        .await
        .unwrap();
        m.register(def(
            "echo3",
            "examples/agents/echo_oneshot.py",
            CommandMode::Oneshot,
        ))
        .await
        .unwrap();
        let out = within(
            30,
            "task",
            m.delegate(Task::new("garbage", json!({})).attempts(1)),
        )
        .await
        .unwrap();
        assert_eq!(out.status, TaskStatus::Escalated);
        let failed = m
            .journal()
            .read_after(0)
            .into_iter()
            .find(|r| r.event.kind() == "attempt_failed")
            .expect("failure journaled");
        let text = serde_json::to_string(&failed.event).unwrap();
        assert!(
            text.contains("protocol") && text.contains("not protocol JSON"),
            "{text}"
        );
        let ok = within(
            30,
            "task",
            m.delegate(Task::new("echo3", json!({"still": "up"}))),
        )
        .await
        .unwrap();
        assert!(ok.is_completed());
    });
}
