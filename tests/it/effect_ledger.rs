//! The effect ledger (issue 26): a task's attempts share one ledger of effects, journaled
//! as `effect_started` / `effect_done`. A done effect is not run again by a later attempt
//! (its recorded result is returned); an effect started and never done (its attempt timed
//! out while still running it) is reported to the next attempt as of unknown outcome,
//! with the task's stable key, so it reconciles with the outside world instead of
//! repeating. The journal alone says the same (at most one `effect_done` per task and
//! name), and `muster inspect`'s view warns about an effect started twice without a key.
//!
//! Paused clock; every wait is bounded in virtual time.

use crate::support::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use muster::agents::effects::EffectError;
use muster::workflow::inspect::{self, Scope};
use muster::{AgentError, Event, Task, TaskStatus};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);

/// An outside world that, like a payment API, performs a call once per idempotency key
/// and counts what it performs.
#[derive(Default)]
struct Payments {
    by_key: HashMap<String, u64>,
    performed: u64,
}

type Shared = Arc<Mutex<Payments>>;

/// What each attempt saw of the effect: (epoch, what `ctx.effect` said).
type Seen = Arc<Mutex<Vec<(u64, String)>>>;

/// Every event about task `id` (effect records included), in journal order.
fn task_events(m: &muster::Muster, id: uuid::Uuid) -> Vec<Event> {
    journal(m)
        .into_iter()
        .map(|r| r.event)
        .filter(|e| e.task() == Some(id))
        .collect()
}

#[test]
fn a_reassigned_attempt_sees_the_running_effect_as_unknown_and_the_charge_stays_one() {
    run_paused(|| async {
        let payments: Shared = Arc::default();
        let seen: Seen = Arc::default();
        let (p, s) = (payments.clone(), seen.clone());
        let def = agent("pay", move |_input, ctx| {
            let (payments, seen) = (p.clone(), s.clone());
            async move {
                let key = ctx.effect_key("charge");
                let first = ctx.attempt == 1;
                let charged = ctx
                    .effect("charge", Some(&key), || async {
                        let n = {
                            let mut p = payments.lock().expect("lock");
                            p.performed += 1;
                            let n = p.performed;
                            p.by_key.insert(key.clone(), n);
                            n
                        };
                        if first {
                            // The call went through; the attempt hangs before it can say so
                            // (past its deadline, into the grace).
                            tokio::time::sleep(TIMEOUT * 3).await;
                        }
                        Ok::<_, AgentError>(n as i64)
                    })
                    .await;
                let value = match charged {
                    Ok(n) => {
                        seen.lock().expect("lock").push((ctx.epoch, "ran".into()));
                        n
                    }
                    Err(EffectError::Unknown { key: Some(k), .. }) => {
                        seen.lock()
                            .expect("lock")
                            .push((ctx.epoch, format!("unknown {k}")));
                        // Reconcile: ask the outside world by the key.
                        let found = payments.lock().expect("lock").by_key.get(&k).copied();
                        let Some(n) = found else {
                            return Err(AgentError::new("the charge was not made"));
                        };
                        ctx.effect_done("charge", Some(&k), json!(n));
                        n as i64
                    }
                    Err(e) => return Err(e.into()),
                };
                Ok(json!({ "value": value }))
            }
        })
        .replicas(2);
        let m = builder().agent(def).start().await.expect("runtime starts");
        let h = m
            .submit(Task::new(CAP, input(1)).timeout(TIMEOUT).attempts(2))
            .await
            .expect("submitted");
        let id = h.id();
        let out = within(120, "the task's outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
        assert_eq!(out.leases.len(), 2, "reassigned after the timeout");
        assert_eq!(out.output.as_deref(), Some(&json!({"value": 1})));

        let key = format!("muster:{id}:charge");
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(
            seen,
            vec![(out.leases[1].epoch, format!("unknown {key}"))],
            "the second attempt was told the effect's outcome is unknown, with the task's key"
        );
        assert_eq!(payments.lock().expect("lock").performed, 1, "charged once");

        // The journal says the same: one start (by the first epoch), one done (by the
        // second), both with the key.
        let events = task_events(&m, id);
        let started: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::EffectStarted {
                    name, key, epoch, ..
                } => Some((name.clone(), key.clone(), *epoch)),
                _ => None,
            })
            .collect();
        let done: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::EffectDone {
                    name,
                    epoch,
                    result,
                    ..
                } => Some((name.clone(), *epoch, result.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            started,
            vec![("charge".into(), Some(key.clone()), out.leases[0].epoch)]
        );
        assert_eq!(done, vec![("charge".into(), out.leases[1].epoch, json!(1))]);

        // Let the first attempt's grace run out; it never reports the effect done.
        pass(TIMEOUT * 4).await;
        let dones = task_events(&m, id)
            .iter()
            .filter(|e| matches!(e, Event::EffectDone { .. }))
            .count();
        assert_eq!(dones, 1, "at most one effect_done per task and name");
        m.shutdown().await;
    });
}

#[test]
fn a_done_effect_is_skipped_by_the_next_attempt_and_its_result_returned() {
    run_paused(|| async {
        let performed = Arc::new(Mutex::new(0u32));
        let p = performed.clone();
        // Each attempt runs the effect, then attempt 1 fails after it: attempt 2 must get
        // the recorded result without running the closure.
        let def = agent("mail", move |_input, ctx| {
            let performed = p.clone();
            async move {
                let key = ctx.effect_key("mail");
                let id: String = ctx
                    .effect("mail", Some(&key), || async {
                        let mut n = performed.lock().expect("lock");
                        *n += 1;
                        Ok::<_, AgentError>(format!("m{}", *n))
                    })
                    .await?;
                if ctx.attempt == 1 {
                    return Err(AgentError::new("the reply after the mail failed"));
                }
                Ok(json!({ "value": id.trim_start_matches('m').parse::<i64>().unwrap_or(-1) }))
            }
        })
        .replicas(2);
        let m = builder().agent(def).start().await.expect("runtime starts");
        let h = m
            .submit(Task::new(CAP, input(1)).timeout(TIMEOUT).attempts(3))
            .await
            .expect("submitted");
        let id = h.id();
        let out = within(60, "the task's outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
        assert_eq!(out.leases.len(), 2);
        assert_eq!(out.output.as_deref(), Some(&json!({"value": 1})));
        assert_eq!(
            *performed.lock().expect("lock"),
            1,
            "the mail was sent once"
        );
        let events = task_events(&m, id);
        assert_eq!(count_kind(&events, "effect_started"), 1);
        assert_eq!(count_kind(&events, "effect_done"), 1);
        m.shutdown().await;
    });
}

#[test]
fn inspect_warns_about_an_effect_started_twice_without_a_key() {
    run_paused(|| async {
        // A careless agent: reconciles an unknown effect by running it again, keyless.
        let def = agent("careless", move |_input, ctx| async move {
            let r = ctx
                .effect("write", None, || async {
                    Err::<i64, _>(AgentError::new("connection reset"))
                })
                .await;
            if ctx.attempt == 1 {
                return Err(r.err().map(AgentError::from).unwrap_or_else(|| "?".into()));
            }
            let n: i64 = ctx
                .reconcile("write", None, || async { Ok::<_, AgentError>(7) })
                .await?;
            Ok(json!({ "value": n }))
        })
        .replicas(2);
        let m = builder().agent(def).start().await.expect("runtime starts");
        let h = m
            .submit(Task::new(CAP, input(1)).timeout(TIMEOUT).attempts(2))
            .await
            .expect("submitted");
        let id = h.id();
        let out = within(60, "the task's outcome", h.outcome()).await;
        assert_eq!(out.status, TaskStatus::Completed, "{out:?}");
        let t = inspect::timeline(&journal(&m), Scope::Task(id));
        let effects = &t.ownership[0].effects;
        assert_eq!(effects.len(), 1);
        assert_eq!(effects[0].state, "done");
        assert_eq!(effects[0].started.len(), 2);
        let warning = effects[0].warning.as_deref().unwrap_or("");
        assert!(
            warning.contains("started 2 times without an idempotency key"),
            "{warning:?}"
        );
        m.shutdown().await;
    });
}

/// A stdio command agent that asks for it (`"ack": true`) gets an `effect_ack` line once
/// its `effect_started` record is written to the SQLite journal, and only then performs
/// the effect; an `effect_started` for an attempt the instance does not know is answered
/// too (not written, with the reason), so an agent never waits for ever. Real clock,
/// real SQLite file, through `muster run`.
#[test]
fn a_stdio_agent_that_asks_is_told_once_its_effect_is_written() {
    use crate::support::cast::{Cast, command_agent, one_step_workflow};
    const AGENT: &str = r#"
import json, sys
def send(msg):
    print(json.dumps(msg), flush=True)
def ack_for(name):
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("type") == "effect_ack" and msg.get("name") == name:
            return msg
    sys.exit("stdin closed before the ack")
for line in sys.stdin:
    task = json.loads(line)
    if task.get("type") != "task":
        continue
    tid, epoch = task["task_id"], task["epoch"]
    key = task["effect_key"] + "charge"
    send({"type": "effect_started", "task_id": tid, "epoch": epoch, "name": "charge",
          "key": key, "ack": True})
    ack = ack_for("charge")
    # An attempt this instance never ran: answered all the same, as not written.
    stranger = "00000000-0000-7000-8000-000000000000"
    send({"type": "effect_started", "task_id": stranger, "epoch": 1, "name": "ghost",
          "ack": True})
    ghost = ack_for("ghost")
    send({"type": "effect_done", "task_id": tid, "epoch": epoch, "name": "charge",
          "key": key, "result": {"charged": True}})
    send({"type": "result", "task_id": tid, "epoch": epoch,
          "output": {"ack": ack, "ghost": ghost}})
"#;
    let manifest = command_agent("payer", "pay", "any", "python3", &["agent.py"], "stdio", "");
    let cast = Cast::new()
        .schema("any", r#"{"type":"object"}"#)
        .file("agent.py", AGENT)
        .actor("payer", &manifest)
        .file("wf.toml", &one_step_workflow("p", "any", "pay", "30s", 1));
    let out = muster_within(
        60,
        &[
            "run",
            "wf.toml",
            "--input",
            "{}",
            "--journal",
            "j.db",
            "--json",
        ],
        cast.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    let output = &doc["outputs"]["one"];
    assert_eq!(output["ack"]["type"], "effect_ack", "{output}");
    assert_eq!(output["ack"]["written"], true, "{output}");
    assert!(output["ack"].get("error").is_none(), "{output}");
    assert_eq!(output["ghost"]["written"], false, "{output}");
    assert!(
        output["ghost"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not an attempt of this instance")),
        "{output}"
    );
    // The journal holds the effect, started then done, once.
    let journal = muster::journal::sqlite::read_journal(cast.path().join("j.db"), 0)
        .expect("the journal reads");
    let kinds: Vec<&str> = journal
        .iter()
        .map(|r| r.event.kind())
        .filter(|k| k.starts_with("effect_"))
        .collect();
    assert_eq!(kinds, ["effect_started", "effect_done"]);
}
