//! A workflow's shape as data: its steps, each step's kind and contract, and every
//! transition with its condition and bound, for a reader that draws the workflow (the
//! dashboard's graph, `GET /v1/workflows/{name}`).
//!
//! It owns the JSON form of a compiled [`Workflow`]'s graph. It must not evaluate
//! anything: conditions are given as the CEL text the file wrote.

use serde_json::{Value, json};

use crate::definition::{Next, Step, StepScope, Workflow};

/// The workflow as a graph: `{name, description, input, start, concurrent, steps: [...],
/// edges: [...]}`. Each step is `{name, kind}` (`task`, `parallel`, `gate`, `done`,
/// `fail`) with what that kind declares (a task's capability, timeout, attempts and
/// scope; a gate's question; a parallel step's branches). Each edge is `{from, to, kind,
/// when, max_visits}`: `kind` is `next` (an unconditional step), `rule` (a transition;
/// `when` its CEL text, `null` for `otherwise`), `exhausted` (where an escalated task
/// goes), `branch`, `approve` or `reject`. Where a run ends without a terminal step (a
/// gate's default, `on_exhausted = "fail"`) the edge goes to `done` or `fail`, listed as
/// a step of that kind with `"implicit": true`. A step's `description` is the file's.
///
/// # Example
/// ```
/// use muster_core::messaging::SchemaStore;
/// use muster_workflow::{Workflow, shape};
///
/// let schemas = SchemaStore::new();
/// schemas.add("any", serde_json::json!({"type": "object"})).unwrap();
/// let wf = Workflow::parse(r#"
/// name = "tiny"
/// input = "any"
/// start = "work"
/// [steps.work]
/// capability = "do"
/// next = [{ when = "steps.work.output.ok", goto = "end" }, { otherwise = true, goto = "work", max_visits = 3 }]
/// [steps.end]
/// terminal = "done"
/// "#, std::path::Path::new("tiny.toml"), &schemas).unwrap();
/// let g = shape::of(&wf);
/// assert_eq!(g["start"], "work");
/// assert_eq!(g["edges"][1]["max_visits"], 3);
/// assert_eq!(g["edges"][0]["when"], "steps.work.output.ok");
/// ```
pub fn of(wf: &Workflow) -> Value {
    let mut steps = Vec::with_capacity(wf.steps.len());
    let mut edges = Vec::new();
    let edge = |from: &str, to: &str, kind: &str, when: Option<&str>, max: Option<u32>| json!({"from": from, "to": to, "kind": kind, "when": when, "max_visits": max});
    let push_next = |from: &str, next: &Next, edges: &mut Vec<Value>| match next {
        Next::Step(s) => edges.push(edge(from, s, "next", None, None)),
        Next::Rules(rules) => {
            for r in rules {
                let when = r.when.as_ref().map(|c| c.source());
                edges.push(edge(from, &r.goto, "rule", when, r.max_visits));
            }
        }
    };
    for (name, step) in &wf.steps {
        let node = match step {
            Step::Task(t) => {
                if let Some(n) = &t.next {
                    push_next(name, n, &mut edges);
                }
                if let Some(e) = &t.on_exhausted {
                    edges.push(edge(name, e, "exhausted", None, None));
                }
                let scope = match &t.scope {
                    Some(StepScope::Fixed(s)) => serde_json::to_value(s).unwrap_or(Value::Null),
                    Some(StepScope::Mapped(c)) => json!(c.source()),
                    None => Value::Null,
                };
                json!({"name": name, "kind": "task", "capability": t.capability,
                       "timeout_ms": t.timeout.map(|d| d.as_millis() as u64),
                       "attempts": t.attempts, "scope": scope})
            }
            Step::Parallel {
                branches,
                optional,
                next,
            } => {
                for b in branches {
                    edges.push(edge(name, b, "branch", None, None));
                }
                if let Some(n) = next {
                    push_next(name, n, &mut edges);
                }
                json!({"name": name, "kind": "parallel", "branches": branches,
                       "optional": optional})
            }
            Step::Gate {
                question,
                on_approve,
                on_reject,
            } => {
                let approve = on_approve.as_deref().unwrap_or("done");
                let reject = on_reject.as_deref().unwrap_or("fail");
                edges.push(edge(name, approve, "approve", None, None));
                edges.push(edge(name, reject, "reject", None, None));
                json!({"name": name, "kind": "gate", "question": question})
            }
            Step::Terminal { success } => {
                json!({"name": name, "kind": if *success { "done" } else { "fail" }})
            }
        };
        let mut node = node;
        if let Some(d) = wf.document["steps"][name.as_str()].get("description") {
            node["description"] = d.clone();
        }
        steps.push(node);
    }
    // The ends a run reaches without a terminal step of that name (a gate's default, an
    // `on_exhausted = "fail"`), as steps of their own kind so every edge has both ends.
    for end in ["done", "fail"] {
        let named = wf.steps.contains_key(end);
        if !named && edges.iter().any(|e| e["to"] == end) {
            steps.push(json!({"name": end, "kind": end, "implicit": true}));
        }
    }
    json!({
        "name": wf.name,
        "description": wf.description,
        "input": wf.input,
        "start": wf.start,
        "concurrent": wf.concurrent,
        "steps": steps,
        "edges": edges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::messaging::SchemaStore;

    #[test]
    fn a_gate_and_a_bounded_loop_appear_as_edges_with_their_bounds() {
        let schemas = SchemaStore::new();
        schemas
            .add("any", json!({"type": "object"}))
            .expect("schema");
        let wf = Workflow::parse(
            r#"
name = "loop"
input = "any"
start = "build"
[steps.build]
capability = "code.write"
attempts = 2
on_exhausted = "human"
next = "test"
[steps.test]
capability = "code.test"
next = [{ when = "steps.test.output.failed > 0", goto = "build", max_visits = 3 }, { otherwise = true, goto = "human" }]
[steps.human]
gate = "Ship it?"
"#,
            std::path::Path::new("loop.toml"),
            &schemas,
        )
        .expect("parses");
        let g = of(&wf);
        let edges = g["edges"].as_array().expect("edges");
        let find = |from: &str, to: &str, kind: &str| {
            edges
                .iter()
                .find(|e| e["from"] == from && e["to"] == to && e["kind"] == kind)
                .cloned()
        };
        let back = find("test", "build", "rule").expect("the back-edge");
        assert_eq!(back["max_visits"], 3);
        assert_eq!(back["when"], "steps.test.output.failed > 0");
        assert_eq!(
            find("test", "human", "rule").expect("otherwise")["when"],
            Value::Null
        );
        assert!(find("build", "human", "exhausted").is_some());
        assert!(find("human", "done", "approve").is_some());
        assert!(find("human", "fail", "reject").is_some());
        let kinds: Vec<_> = g["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| (s["name"].clone(), s["kind"].clone()))
            .collect();
        assert!(kinds.contains(&(json!("human"), json!("gate"))));
        assert!(kinds.contains(&(json!("build"), json!("task"))));
    }
}
