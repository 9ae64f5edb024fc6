//! The supervision tree as `GET /v1/tree` shows it: the runtime's fixed shape (root, the
//! registry, the router, the agents supervisor with one group per agent type, the owners)
//! filled with what is true now: each instance's state and load from the registry, each
//! child's restart count from the journal.
//!
//! It owns that document's shape. It must not reach into the supervisors: everything it
//! shows comes from the cast's declarations, the registry and the journal.

use std::collections::HashMap;

use serde_json::{Value, json};

use muster_core::agents::AgentDef;
use muster_core::discovery::AgentInfo;
use muster_core::supervision::{Restart, Supervision};

/// What the tree shows of one agent type, taken from its definition at start.
///
/// # Example
/// ```
/// use muster_serve::GroupInfo;
/// use muster_core::AgentDef;
///
/// let def = AgentDef::function("echo", |v, _| async move { Ok(v) }).replicas(2);
/// let g = GroupInfo::of(&def);
/// assert_eq!(g.instances, vec!["echo#0", "echo#1"]);
/// ```
#[derive(Debug, Clone)]
pub struct GroupInfo {
    /// The agent type.
    pub name: String,
    /// Its supervisor's settings.
    pub supervision: Supervision,
    /// Its instances' restart type.
    pub restart: Restart,
    /// Its instance ids.
    pub instances: Vec<String>,
}

impl GroupInfo {
    /// The tree's view of a definition.
    pub fn of(def: &AgentDef) -> Self {
        GroupInfo {
            name: def.name.clone(),
            supervision: def.supervision.clone(),
            restart: def.restart,
            instances: def.instance_ids(),
        }
    }
}

fn supervisor(id: &str, s: &Supervision, restarts: u64, children: Vec<Value>) -> Value {
    json!({
        "id": id,
        "kind": "supervisor",
        "strategy": s.strategy,
        "intensity": s.intensity,
        "period_ms": s.period.as_millis() as u64,
        "restarts": restarts,
        "children": children,
    })
}

/// The tree document. `restarts` maps (supervisor, child) to restarts counted since the
/// node started; `live_tasks` is the owners' load; `stopped` whether the runtime stopped.
pub fn tree(
    groups: &[GroupInfo],
    agents: &[AgentInfo],
    restarts: &HashMap<(String, String), u64>,
    live_tasks: usize,
    stopped: bool,
) -> Value {
    let count = |sup: &str, child: &str| {
        restarts
            .get(&(sup.to_string(), child.to_string()))
            .copied()
            .unwrap_or(0)
    };
    let by_id: HashMap<&str, &AgentInfo> = agents.iter().map(|a| (a.id.as_str(), a)).collect();
    let running = if stopped { "stopped" } else { "running" };
    let root_children: Vec<Value> = ["registry", "router"]
        .iter()
        .map(|c| {
            json!({"id": c, "kind": "worker", "restart": Restart::Permanent, "state": running,
                   "restarts": count("root", c)})
        })
        .chain(std::iter::once(supervisor(
            "agents",
            &Supervision::default(),
            count("root", "agents"),
            groups
                .iter()
                .map(|g| {
                    let mut doc = supervisor(
                        &g.name,
                        &g.supervision,
                        count("agents", &g.name),
                        g.instances
                            .iter()
                            .map(|i| {
                                let info = by_id.get(i.as_str());
                                json!({
                                    "id": i,
                                    "kind": "worker",
                                    "restart": g.restart,
                                    // Out of the registry: dropped out, or not started.
                                    "state": info.map_or(json!("stopped"), |a| json!(a.state)),
                                    "in_flight": info.map_or(0, |a| a.in_flight),
                                    "generation": info.map_or(0, |a| a.generation),
                                    "restarts": count(&g.name, i),
                                })
                            })
                            .collect(),
                    );
                    doc["restart"] = json!(Restart::Temporary);
                    doc
                })
                .collect(),
        )))
        .chain(std::iter::once(json!({
            "id": "owners", "kind": "worker", "restart": Restart::Permanent, "state": running,
            "live_tasks": live_tasks, "restarts": count("root", "owners"),
        })))
        .collect();
    supervisor("root", &Supervision::default(), 0, root_children)
}
