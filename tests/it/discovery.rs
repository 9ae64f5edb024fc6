//! Discovery: the registry finds the right instances, drops failed ones, and a panicking
//! agent becomes a failure event while the runtime keeps serving the others.

use crate::support::common;

use std::time::Duration;

use common::{paused, within};
use muster::{
    AgentDef, AgentState, CapabilitySpec, Muster, Restart, Supervision, Task, TaskStatus,
};
use serde_json::json;

fn any() -> serde_json::Value {
    json!({"type": "object"})
}

#[test]
fn discovery_finds_the_right_instances_least_loaded_first() {
    paused(async {
        let m = Muster::builder()
            .schema("any", any())
            .agent(
                AgentDef::function("a", |v, _| async move { Ok(v) })
                    .capability(CapabilitySpec::new("x", "any", "any"))
                    .replicas(2),
            )
            .agent(
                AgentDef::function("b", |v, _| async move { Ok(v) })
                    .capability(CapabilitySpec::new("y", "any", "any")),
            )
            .start()
            .await
            .unwrap();
        assert_eq!(m.candidates("x", &[]), vec!["a#0", "a#1"]);
        assert_eq!(m.candidates("x", &["a#0"]), vec!["a#1"]);
        assert_eq!(m.candidates("y", &[]), vec!["b#0"]);
        assert!(m.candidates("z", &[]).is_empty());
        let ids: Vec<_> = m.agents().into_iter().map(|a| (a.id, a.state)).collect();
        assert_eq!(
            ids,
            vec![
                ("a#0".to_string(), AgentState::Ready),
                ("a#1".to_string(), AgentState::Ready),
                ("b#0".to_string(), AgentState::Ready)
            ]
        );
    });
}

#[test]
fn a_conflicting_capability_contract_is_refused() {
    paused(async {
        let m = Muster::builder()
            .schema("any", any())
            .schema("other", json!({"type": "array"}))
            .agent(
                AgentDef::function("a", |v, _| async move { Ok(v) })
                    .capability(CapabilitySpec::new("x", "any", "any")),
            )
            .start()
            .await
            .unwrap();
        let err = m
            .register(
                AgentDef::function("b", |v, _| async move { Ok(v) })
                    .capability(CapabilitySpec::new("x", "any", "other")),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("different contract"), "{err}");
        assert!(
            err.to_string().contains("declared by `a`"),
            "names the first declarer: {err}"
        );
        assert_eq!(m.agents().len(), 1, "nothing of `b` was registered");
    });
}

#[test]
fn a_panicking_agent_is_a_failure_event_and_the_runtime_keeps_serving() {
    paused(async {
        let m = Muster::builder()
            .schema("any", any())
            .agent(
                AgentDef::function("bomb", |_v, _| async move {
                    if true {
                        panic!("boom");
                    }
                    Ok(json!({}))
                })
                .capability(CapabilitySpec::new("bomb", "any", "any"))
                .restart(Restart::Temporary),
            )
            .agent(
                AgentDef::function("ok", |v, _| async move { Ok(v) })
                    .capability(CapabilitySpec::new("ok", "any", "any")),
            )
            .start()
            .await
            .unwrap();
        let out = within(
            10,
            "bomb task",
            m.delegate(
                Task::new("bomb", json!({}))
                    .attempts(1)
                    .timeout(Duration::from_secs(5)),
            ),
        )
        .await
        .unwrap();
        assert_eq!(out.status, TaskStatus::Escalated);
        let events = m.journal().read_after(0);
        let failed = events
            .iter()
            .find(|r| r.event.kind() == "attempt_failed")
            .expect("failure journaled");
        let text = serde_json::to_string(&failed.event).unwrap();
        assert!(text.contains("panic") && text.contains("boom"), "{text}");
        // The temporary instance is not restarted: it drops out of the registry.
        within(10, "drop out", async {
            while m.agents().iter().any(|a| a.agent == "bomb") {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            m.journal()
                .read_after(0)
                .iter()
                .any(|r| r.event.kind() == "agent_dropped_out")
        );
        let ok = within(10, "ok task", m.delegate(Task::new("ok", json!({"n": 1}))))
            .await
            .unwrap();
        assert!(ok.is_completed());
    });
}

#[test]
fn an_agent_past_its_restart_intensity_drops_out() {
    paused(async {
        let m = Muster::builder()
            .schema("any", any())
            .agent(
                AgentDef::function("bomb", |_v, _| async move {
                    if true {
                        panic!("boom");
                    }
                    Ok(json!({}))
                })
                .capability(CapabilitySpec::new("bomb", "any", "any"))
                .supervision(Supervision {
                    intensity: 2,
                    period: Duration::from_secs(60),
                    ..Supervision::default()
                }),
            )
            .start()
            .await
            .unwrap();
        for _ in 0..4 {
            let _ = within(
                10,
                "task",
                m.delegate(
                    Task::new("bomb", json!({}))
                        .attempts(1)
                        .deadline(Duration::from_secs(2)),
                ),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        within(10, "drop out", async {
            while !m.agents().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let kinds: Vec<_> = m
            .journal()
            .read_after(0)
            .iter()
            .map(|r| r.event.kind())
            .collect();
        assert!(kinds.contains(&"supervisor_escalated"), "{kinds:?}");
        assert!(kinds.contains(&"agent_dropped_out"), "{kinds:?}");
        assert!(kinds.contains(&"child_restarted"), "{kinds:?}");
        assert!(
            m.stopped().is_none(),
            "an agent type dropping out does not stop the runtime"
        );
    });
}

/// An agent that declares a liveness interval and then goes quiet.
struct Silent;
impl muster::Agent for Silent {
    fn handle(
        &self,
        input: serde_json::Value,
        _ctx: muster::TaskContext,
    ) -> futures::future::LocalBoxFuture<'static, Result<serde_json::Value, muster::AgentError>>
    {
        Box::pin(async move { Ok(input) })
    }
}

#[test]
fn an_agent_that_stops_heartbeating_drops_out() {
    paused(async {
        let mut def = AgentDef::new("quiet", |_: &str| {
            Box::new(Silent) as Box<dyn muster::Agent>
        })
        .capability(CapabilitySpec::new("q", "any", "any"))
        .restart(Restart::Temporary);
        def.liveness = Some(Duration::from_secs(1));
        let m = Muster::builder()
            .schema("any", any())
            .agent(def)
            .start()
            .await
            .unwrap();
        assert_eq!(m.agents().len(), 1);
        within(30, "drop out", async {
            while !m.agents().is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        let events = m.journal().read_after(0);
        let dropped = events
            .iter()
            .find(|r| r.event.kind() == "agent_dropped_out")
            .expect("drop-out journaled");
        assert!(
            serde_json::to_string(&dropped.event)
                .unwrap()
                .contains("liveness")
        );
    });
}
