//! A capability that names its workspace (`workspace = "dir"`) has the files an attempt
//! changed there checked against the task's write scope, whatever the output reports: a
//! change outside it is a contract violation and the task is reassigned.

use crate::support::common;

use std::time::Duration;

use common::*;
use muster::{AgentDef, Event, Scope, Task, TaskStatus};
use serde_json::json;

/// An agent that writes `file` (relative to the input's `dir`) and reports nothing.
fn writer(name: &str, file: &'static str) -> AgentDef {
    AgentDef::function(name, move |input, _| async move {
        let dir = std::path::PathBuf::from(input["dir"].as_str().unwrap_or_default());
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| muster::AgentError::new(e.to_string()))?;
        }
        std::fs::write(&path, "written").map_err(|e| muster::AgentError::new(e.to_string()))?;
        Ok(json!({"value": input["n"]}))
    })
    .capability(cap().workspace("dir"))
}

#[test]
fn a_file_changed_outside_the_write_scope_is_a_contract_violation_and_is_reassigned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ws = dir.path().to_string_lossy().to_string();
    run_paused(|| async move {
        let m = builder()
            .agent(writer("rogue", "secrets/keys.txt"))
            .start()
            .await
            .expect("runtime starts");
        let h = m
            .submit(
                Task::new(CAP, json!({"n": 1, "dir": ws}))
                    .timeout(Duration::from_secs(5))
                    .scope(Scope::new(&["src/**"], &[] as &[&str]).expect("scope")),
            )
            .await
            .expect("submitted");
        pass(Duration::from_millis(10)).await;
        m.register(writer("good", "src/user.txt"))
            .await
            .expect("registered");
        let out = within(60, "the outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
        assert_eq!(out.leases.len(), 2, "reassigned after the violation");
        assert_eq!(&*out.leases[1].agent, "good#0");
        let failed: Vec<(String, String)> = events_of(&m, out.id)
            .into_iter()
            .filter_map(|e| match e {
                Event::AttemptFailed { reason, detail, .. } => Some((reason, detail)),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].0, "contract_violation");
        assert!(failed[0].1.contains("secrets/keys.txt"), "{}", failed[0].1);
    });
}

#[test]
fn without_a_scope_the_workspace_is_not_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ws = dir.path().to_string_lossy().to_string();
    run_paused(|| async move {
        let m = builder()
            .agent(writer("anywhere", "secrets/keys.txt"))
            .start()
            .await
            .expect("runtime starts");
        let out = m
            .delegate(Task::new(CAP, json!({"n": 2, "dir": ws})).timeout(Duration::from_secs(5)))
            .await
            .expect("delegated");
        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
    });
}
