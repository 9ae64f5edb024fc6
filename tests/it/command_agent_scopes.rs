//! Command agents receive their task's scope (`scope` in the stdio task line,
//! `MUSTER_SCOPE` for a oneshot program), and what they report in `touched` is checked
//! against it: a path outside the write scope fails the attempt as a contract violation
//! naming the path. Real `python3` processes, real clock, bounded waits.

use crate::support::common;

use common::{real, within};
use muster::agents::command::{CommandConfig, CommandFactory, CommandMode};
use muster::{AgentDef, CapabilitySpec, Event, Muster, Scope, Task, TaskStatus};
use serde_json::{Value, json};

const STDIO: &str = r#"
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("type") != "task":
        continue
    out = {"type": "result", "task_id": msg["task_id"], "epoch": msg["epoch"],
           "output": {"scope": msg.get("scope")}, "touched": msg["input"]["touch"]}
    print(json.dumps(out), flush=True)
"#;

const ONESHOT: &str = r#"
import json, os, sys
task = json.load(sys.stdin)
json.dump({"scope": json.loads(os.environ.get("MUSTER_SCOPE", "null")),
           "touched": task["touch"]}, sys.stdout)
"#;

fn def(name: &str, script: &std::path::Path, mode: CommandMode) -> AgentDef {
    let cfg = CommandConfig::new("python3")
        .with_args([script.display().to_string()])
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

fn violation(m: &Muster, task: uuid::Uuid) -> Option<String> {
    m.journal()
        .read_after(0)
        .into_iter()
        .find_map(|r| match r.event {
            Event::AttemptFailed {
                task: t,
                reason,
                detail,
                ..
            } if t == task && reason == "contract_violation" => Some(detail),
            _ => None,
        })
}

#[test]
fn command_agents_get_their_scope_and_a_touched_path_outside_it_is_a_violation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stdio = dir.path().join("stdio.py");
    let oneshot = dir.path().join("oneshot.py");
    std::fs::write(&stdio, STDIO).unwrap();
    std::fs::write(&oneshot, ONESHOT).unwrap();
    real(async move {
        let m = runtime().await;
        m.register(def("s", &stdio, CommandMode::Stdio))
            .await
            .unwrap();
        m.register(def("o", &oneshot, CommandMode::Oneshot))
            .await
            .unwrap();
        let scope = Scope::new(["src/**"], ["spec/**"]).unwrap();
        let want: Value = json!({"write": ["src/**"], "read": ["spec/**"]});
        for cap in ["s", "o"] {
            let ok = within(
                30,
                "inside",
                m.delegate(Task::new(cap, json!({"touch": ["src/a.rs"]})).scope(scope.clone())),
            )
            .await
            .unwrap();
            assert_eq!(ok.status, TaskStatus::Completed, "{cap}: {ok:?}");
            assert_eq!(
                ok.output.as_ref().unwrap()["scope"],
                want,
                "{cap} saw its scope"
            );

            let bad = within(
                30,
                "outside",
                m.delegate(
                    Task::new(cap, json!({"touch": ["src/a.rs", "etc/passwd"]}))
                        .attempts(1)
                        .scope(scope.clone()),
                ),
            )
            .await
            .unwrap();
            assert_eq!(bad.status, TaskStatus::Escalated, "{cap}: {bad:?}");
            let detail = violation(&m, bad.id).unwrap_or_default();
            assert!(detail.contains("etc/passwd"), "{cap}: {detail}");
        }
    });
}
