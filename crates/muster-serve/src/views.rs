//! What the API answers about runs, tasks and the supervision tree, built from the
//! journal's records (the source of truth) and the node's table of live runs.
//!
//! It owns the JSON shapes of docs/api.md's `RunSummary`, run detail, task detail and tree
//! documents. It must not change anything: these are folds over records.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use muster_core::journal::{Event, Journal, Record, RunQuery, RunStatus, Usage};
use muster_workflow::inspect::run_of;
use muster_workflow::inspect::{self, RunState, Scope};
use muster_workflow::recovery;

use crate::auth::MAX_NAME_LEN;

/// The statuses a run can be listed by.
pub const RUN_STATUSES: &[&str] = &[
    "running",
    "waiting",
    "completed",
    "failed",
    "cancelled",
    "unfinished",
];

/// A run's status as the API says it: the journal's, with `running` for an unfinished run
/// this node drives and `cancelled` for one ended by a cancel.
fn status(state: RunState, live: bool, cancelled: bool) -> &'static str {
    match state {
        RunState::Unfinished if live => "running",
        RunState::Failed if cancelled => "cancelled",
        s => s.as_str(),
    }
}

/// Runs ended by a cancel (`run_ended` with status `cancelled`).
fn cancelled_runs(records: &[Record]) -> HashSet<Uuid> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::RunEnded { run, status, .. } if status == "cancelled" => Some(*run),
            _ => None,
        })
        .collect()
}

/// Every run's summary, newest first, with the API's status.
pub fn run_summaries(records: &[Record], live: &dyn Fn(Uuid) -> bool) -> Vec<Value> {
    let cancelled = cancelled_runs(records);
    let mut out: Vec<Value> = inspect::runs(records)
        .into_iter()
        .map(|s| {
            let st = status(s.status, live(s.run), cancelled.contains(&s.run));
            let mut v = serde_json::to_value(&s).unwrap_or_default();
            v["status"] = json!(st);
            v
        })
        .collect();
    out.reverse();
    out
}

/// A page of the run list, newest first, read through the journal's run index: at most
/// `limit` runs that started before the run `after` (the last of the previous page), with
/// the API's status `status` and workflow `workflow`; and whether there are more. Each
/// run's summary is folded from that run's records only, so a page costs its runs, not
/// the history.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Journal, MemoryJournal};
/// use muster_serve::views::run_page;
///
/// let j = MemoryJournal::default();
/// for _ in 0..3 {
///     let run = uuid::Uuid::now_v7();
///     j.append(0, Event::RunStarted { run, workflow: "w".into(), file: "w.toml".into(), input: serde_json::json!({}) });
///     j.append(1, Event::GateWaiting { run, gate: "g".into(), question: "?".into() });
/// }
/// let (page, more) = run_page(&j, &|_| false, Some("waiting"), None, None, 2);
/// assert_eq!((page.len(), more), (2, true));
/// assert_eq!(page[0]["status"], "waiting");
/// ```
pub fn run_page(
    journal: &dyn Journal,
    live: &dyn Fn(Uuid) -> bool,
    status: Option<&str>,
    workflow: Option<String>,
    after: Option<Uuid>,
    limit: usize,
) -> (Vec<Value>, bool) {
    let filter = RunQuery {
        workflow,
        ..RunQuery::default()
    };
    let (page, next) = run_page_where(journal, live, status, filter, after, limit);
    (page, next.is_some())
}

/// The most runs one page with input filters examines for them (those that pass its other
/// filters, newest first): a filter that matches few runs of a long history answers in
/// bounded time, with fewer runs than asked (even none) and a cursor to go on from.
pub const INPUT_SCAN: usize = 2_000;

/// [`run_page`] with every filter of the index: `filter`'s workflow, start time range and
/// input fields (its `status`, `before` and `limit` are set from the other arguments).
/// Returns the page and the cursor of the next one (`after`): the page's last run when
/// more match, or, with input filters, the last run examined when [`INPUT_SCAN`] runs
/// were examined without filling the page.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Journal, MemoryJournal, RunQuery};
/// use muster_core::journal::runs::InputMatch;
/// use muster_serve::views::run_page_where;
/// use serde_json::json;
///
/// let j = MemoryJournal::default();
/// for repo in ["shop", "blog"] {
///     let run = uuid::Uuid::now_v7();
///     j.append(0, Event::RunStarted { run, workflow: "w".into(), file: "w.toml".into(), input: json!({"repo": repo}) });
/// }
/// let filter = RunQuery { input: vec![InputMatch::parse("repo", "blog").unwrap()], ..RunQuery::default() };
/// let (page, next) = run_page_where(&j, &|_| false, None, filter, None, 10);
/// assert_eq!((page.len(), next), (1, None));
/// ```
pub fn run_page_where(
    journal: &dyn Journal,
    live: &dyn Fn(Uuid) -> bool,
    status: Option<&str>,
    filter: RunQuery,
    after: Option<Uuid>,
    limit: usize,
) -> (Vec<Value>, Option<Uuid>) {
    // `running` and `unfinished` are one state in the journal: this node drives the first.
    let (indexed, driven) = match status {
        Some("running") => (Some(RunStatus::Unfinished), Some(true)),
        Some("unfinished") => (Some(RunStatus::Unfinished), Some(false)),
        Some(s) => (s.parse().ok(), None),
        None => (None, None),
    };
    let (before, older_than) = match after {
        Some(a) => match journal.run_entry(a) {
            Some(e) => (Some(e.started_seq), None),
            // A cursor the journal does not hold (a run of another control node of the
            // cluster, docs/distributed.md "One system"): the runs whose ids sort before
            // it (run ids are UUID v7, ordered by their start time).
            None => (None, Some(a)),
        },
        None => (None, None),
    };
    let scanning = !filter.input.is_empty();
    let mut query = RunQuery {
        status: indexed,
        before,
        limit: limit + 1,
        scan: scanning.then_some(INPUT_SCAN),
        ..filter
    };
    let mut entries = Vec::new();
    // With input filters: the last run examined, when the scan stopped at its bound.
    let mut examined_to = None;
    loop {
        let from = query.before;
        let got = journal.runs(&query);
        let exhausted = got.len() < query.limit;
        query.before = got.last().map(|e| e.started_seq);
        let last = got.last().map(|e| e.run);
        entries.extend(
            got.into_iter()
                .filter(|e| driven.is_none_or(|d| live(e.run) == d))
                .filter(|e| older_than.is_none_or(|a| e.run < a)),
        );
        if scanning {
            examined_to = if exhausted {
                // Were there more candidates than the scan examined? (The runs table
                // alone answers: no input is read.)
                let candidates = journal.runs(&RunQuery {
                    before: from,
                    input: Vec::new(),
                    scan: None,
                    limit: INPUT_SCAN + 1,
                    ..query.clone()
                });
                (candidates.len() > INPUT_SCAN)
                    .then(|| candidates.get(INPUT_SCAN - 1).map(|e| e.run))
                    .flatten()
            } else {
                // A full answer, which this node's own filters may have thinned: go on
                // after the last run it holds.
                last
            };
            break;
        }
        if exhausted || entries.len() > limit || query.before.is_none() {
            break;
        }
    }
    let next = if entries.len() > limit {
        entries.get(limit - 1).map(|e| e.run)
    } else {
        examined_to
    };
    entries.truncate(limit);
    let page = entries
        .into_iter()
        .filter_map(|e| {
            let records = journal.records_of(e.run);
            run_summaries(&records, live)
                .into_iter()
                .find(|v| v["run"] == json!(e.run))
        })
        .collect();
    (page, next)
}

/// The tree's restart counts: `child_restarted` records since the node started, read on
/// from where the previous request stopped, so a request costs what was journaled since.
#[derive(Debug)]
pub struct Restarts(parking_lot::Mutex<(u64, RestartCounts)>);

/// Restarts per (supervisor, child).
pub type RestartCounts = HashMap<(String, String), u64>;

impl Restarts {
    /// Counts from after record `seq` (the journal's length when the node started).
    pub fn after(seq: u64) -> Self {
        Restarts(parking_lot::Mutex::new((seq, HashMap::new())))
    }

    /// Reads what was journaled since the last call and returns the counts.
    pub fn update(&self, journal: &dyn Journal) -> RestartCounts {
        let mut g = self.0.lock();
        loop {
            let batch = journal.read_batch(g.0, 4096);
            let Some(last) = batch.last().map(|r| r.seq) else {
                break;
            };
            g.0 = last;
            for (k, n) in restarts(&batch) {
                *g.1.entry(k).or_default() += n;
            }
        }
        g.1.clone()
    }
}

/// Whether a record is part of the story of `id`, a run or a task: the run's own records,
/// the tasks submitted under it (or the task itself) and theirs, and envelopes correlated
/// to it. `tasks` holds `id` and collects the tasks seen so far (read records in order).
pub fn belongs(e: &Event, id: Uuid, tasks: &mut HashSet<Uuid>) -> bool {
    if let Some(run) = run_of(e) {
        return run == id;
    }
    match e {
        Event::TaskSubmitted {
            task, correlation, ..
        } => {
            if *task == id || *correlation == id {
                tasks.insert(*task);
                true
            } else {
                false
            }
        }
        e => match (e.task(), e.correlation()) {
            (Some(t), _) => tasks.contains(&t),
            (None, Some(c)) => c == id,
            (None, None) => false,
        },
    }
}

/// One lease of a task and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    /// The agent instance.
    pub agent: String,
    /// Its epoch.
    pub epoch: u64,
    /// Attempt number.
    pub attempt: u32,
    /// `running`, `completed`, or the failure kind (`timeout`, `error`, ...).
    pub outcome: String,
    /// What the attempt spent on models (LLM agents), from its `model_usage` record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// How many of its model calls were recorded (`record = "prompts"`); read them with
    /// `GET /v1/tasks/{id}/llm?epoch=E`.
    #[serde(skip_serializing_if = "is_zero")]
    pub model_calls: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A task as the journal tells it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    /// Task id.
    pub task: Uuid,
    /// Capability.
    pub capability: String,
    /// Correlation id (a run id, or the task's own).
    pub correlation: Uuid,
    /// Who delegated it (`workflow/step` for a run's step).
    pub sender: String,
    /// The step of a run it serves, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// `running`, `completed`, `escalated` or `cancelled`.
    pub status: String,
    /// The agent whose result was accepted.
    pub owner: Option<String>,
    /// Leases granted.
    pub attempts: u32,
    /// Leases after the first.
    pub reassignments: u32,
    /// Stale results rejected.
    pub stale_rejected: u32,
    /// Every lease.
    pub leases: Vec<LeaseView>,
    /// The input.
    pub input: Value,
    /// The accepted output.
    pub output: Value,
    /// Why it did not complete.
    pub reason: Option<String>,
    /// Submitted, Unix ms.
    pub submitted_ms: u64,
    /// Ended, Unix ms.
    pub ended_ms: Option<u64>,
}

/// Every task of the records whose correlation passes `keep`, in submission order.
pub fn tasks(records: &[Record], keep: &dyn Fn(Uuid, Uuid) -> bool) -> Vec<TaskView> {
    let mut order = Vec::new();
    let mut by: HashMap<Uuid, TaskView> = HashMap::new();
    for r in records {
        match &r.event {
            Event::TaskSubmitted {
                task,
                capability,
                correlation,
                input,
                sender,
                ..
            } => {
                if by.contains_key(task) || !keep(*task, *correlation) {
                    continue;
                }
                order.push(*task);
                by.insert(
                    *task,
                    TaskView {
                        task: *task,
                        capability: capability.to_string(),
                        correlation: *correlation,
                        sender: sender.clone(),
                        step: sender.rsplit_once('/').map(|(_, s)| s.to_string()),
                        status: "running".into(),
                        owner: None,
                        attempts: 0,
                        reassignments: 0,
                        stale_rejected: 0,
                        leases: Vec::new(),
                        input: Value::clone(input),
                        output: Value::Null,
                        reason: None,
                        submitted_ms: r.at_ms,
                        ended_ms: None,
                    },
                );
            }
            e => {
                let Some(t) = e.task().and_then(|t| by.get_mut(&t)) else {
                    continue;
                };
                let lease = |t: &mut TaskView, epoch: u64, outcome: &str| {
                    if let Some(l) = t.leases.iter_mut().rev().find(|l| l.epoch == epoch) {
                        l.outcome = outcome.to_string();
                    }
                };
                match e {
                    Event::LeaseGranted {
                        agent,
                        epoch,
                        attempt,
                        ..
                    } => {
                        // A resumed task is leased again from a new process: a new lease.
                        if t.status != "running" {
                            t.status = "running".into();
                            t.ended_ms = None;
                        }
                        t.leases.push(LeaseView {
                            agent: agent.to_string(),
                            epoch: *epoch,
                            attempt: *attempt,
                            outcome: "running".into(),
                            usage: None,
                            model_calls: 0,
                        });
                        t.attempts = t.leases.len() as u32;
                        t.reassignments = t.attempts.saturating_sub(1);
                    }
                    Event::AttemptFailed { epoch, reason, .. } => lease(t, *epoch, reason),
                    Event::ResultAccepted {
                        agent,
                        epoch,
                        output,
                        ..
                    } => {
                        lease(t, *epoch, "completed");
                        t.status = "completed".into();
                        t.owner = Some(agent.to_string());
                        t.output = Value::clone(output);
                        t.reason = None;
                        t.ended_ms = Some(r.at_ms);
                    }
                    Event::TaskReused {
                        original, output, ..
                    } => {
                        t.status = "completed".into();
                        t.output = Value::clone(output);
                        t.reason = Some(format!("the accepted result of task {original}"));
                        t.ended_ms = Some(r.at_ms);
                    }
                    Event::ResultStale { .. } => t.stale_rejected += 1,
                    Event::ModelUsage { epoch, usage, .. } => {
                        if let Some(l) = t.leases.iter_mut().rev().find(|l| l.epoch == *epoch) {
                            l.usage.get_or_insert_with(Usage::default).add(usage);
                        }
                    }
                    Event::TaskEscalated { reason, .. } => {
                        t.status = "escalated".into();
                        t.reason = Some(reason.clone());
                        t.ended_ms = Some(r.at_ms);
                    }
                    Event::TaskCancelled { reason, .. } => {
                        if let Some(l) = t.leases.last_mut().filter(|l| l.outcome == "running") {
                            l.outcome = "cancelled".into();
                        }
                        t.status = "cancelled".into();
                        t.reason = Some(reason.clone());
                        t.ended_ms = Some(r.at_ms);
                    }
                    _ => {}
                }
            }
        }
    }
    order.into_iter().filter_map(|t| by.remove(&t)).collect()
}

/// One task, if the records have it (the task's records: its model calls among them,
/// counted per lease).
pub fn task(records: &[Record], id: Uuid) -> Option<TaskView> {
    let mut t = tasks(records, &|t, _| t == id).into_iter().next()?;
    let mut counts = HashMap::new();
    muster_core::journal::count_model_calls(records.iter().map(|r| &r.event), &[id], &mut counts);
    set_model_calls(std::slice::from_mut(&mut t), &counts);
    Some(t)
}

/// Sets each lease's `model_calls` from `counts` (`(task, epoch)` → recorded calls, from
/// [`Journal::model_call_counts`]: a run's records do not hold its tasks' model calls).
pub fn set_model_calls(tasks: &mut [TaskView], counts: &HashMap<(Uuid, u64), u32>) {
    for t in tasks {
        let mut seen = std::collections::HashSet::new();
        // A resumed task may be leased again under an epoch it had: the last lease has
        // the count, earlier ones 0.
        for l in t.leases.iter_mut().rev() {
            l.model_calls = match seen.insert(l.epoch) {
                true => counts.get(&(t.task, l.epoch)).copied().unwrap_or(0),
                false => 0,
            };
        }
    }
}

/// The tasks submitted in `records` (a run's: its steps' tasks), for
/// [`Journal::model_call_counts`].
pub fn submitted_tasks(records: &[Record]) -> Vec<Uuid> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::TaskSubmitted { task, .. } => Some(*task),
            _ => None,
        })
        .collect()
}

/// The most model calls one answer of `GET /v1/tasks/{id}/llm` holds (an attempt makes
/// at most 43: one, ten repair turns and 32 tool rounds).
pub const MAX_CALLS_SHOWN: usize = 64;

/// The recorded model calls of task `id` (docs/api.md, `GET /v1/tasks/{id}/llm`), of the
/// attempt under `epoch` or of all of them, in order: at most [`MAX_CALLS_SHOWN`], the
/// number left out in `omitted`. `None` when the records do not have the task.
pub fn model_calls(records: &[Record], id: Uuid, epoch: Option<u64>) -> Option<Value> {
    let task = task(records, id)?;
    let mut calls = Vec::new();
    let mut omitted = 0usize;
    for r in records {
        let Event::ModelCall {
            task: t,
            agent,
            epoch: e,
            call,
        } = &r.event
        else {
            continue;
        };
        if *t != id || epoch.is_some_and(|want| want != *e) {
            continue;
        }
        if calls.len() >= MAX_CALLS_SHOWN {
            omitted += 1;
            continue;
        }
        let mut v = json!(call);
        v["seq"] = json!(r.seq);
        v["at_ms"] = json!(r.at_ms);
        v["agent"] = json!(agent);
        v["epoch"] = json!(e);
        v["label"] = json!(call.label());
        calls.push(v);
    }
    Some(json!({
        "task": id,
        "capability": task.capability,
        "step": task.step,
        "leases": task.leases,
        "calls": calls,
        "omitted": omitted,
    }))
}

/// A run's detail (docs/api.md, `GET /v1/runs/{id}`), if the records have it.
///
/// `model_calls`: the recorded model calls of the run's tasks per `(task, epoch)`
/// ([`Journal::model_call_counts`]), which the run's records do not hold.
pub fn run_detail(
    records: &[Record],
    id: Uuid,
    live: bool,
    model_calls: &HashMap<(Uuid, u64), u32>,
) -> Option<Value> {
    let summary = inspect::runs(records).into_iter().find(|s| s.run == id)?;
    let rec = recovery::runs(records).into_iter().find(|r| r.run == id)?;
    let cancelled = cancelled_runs(records).contains(&id);
    let st = status(summary.status, live, cancelled);
    let mut doc = serde_json::to_value(&summary).unwrap_or_default();
    doc["status"] = json!(st);
    doc["input"] = rec.input.clone();
    let mut steps = tasks(records, &|_, c| c == id);
    set_model_calls(&mut steps, model_calls);
    doc["steps"] = json!(steps);
    // The step visits that ended so far, in order, as `muster run` prints them.
    doc["progress"] = json!(rec.summaries);
    // Every step the run entered, in order: the path a reader draws on the workflow.
    let mut path: Vec<Value> = Vec::new();
    let mut gates: Vec<Value> = Vec::new();
    for r in records {
        match &r.event {
            Event::StepEntered { run, step, visit } if *run == id => {
                path.push(json!({"step": step, "visit": visit, "at_ms": r.at_ms}));
            }
            Event::GateWaiting {
                run,
                gate,
                question,
            } if *run == id => {
                gates.push(json!({"gate": gate, "question": question, "decided": null}));
            }
            Event::GateDecided {
                run,
                gate,
                approved,
                reason,
            } if *run == id => {
                let open = gates
                    .iter_mut()
                    .rev()
                    .find(|g| g["gate"] == json!(gate) && g["decided"].is_null());
                // The request's `note` (after the deciding token's name), under the same
                // name; the name alone as `by`.
                let mut decided = json!({"approved": approved, "note": reason});
                if let Some((by, _)) = decided_by(reason) {
                    decided["by"] = json!(by);
                }
                match open {
                    Some(g) => g["decided"] = decided,
                    None => gates.push(json!({"gate": gate, "question": "", "decided": decided})),
                }
            }
            _ => {}
        }
    }
    doc["path"] = json!(path);
    doc["gates"] = json!(gates);
    // A retry names the failed run it retries; a retried run names its retry.
    for r in records {
        match &r.event {
            Event::RetryStarted {
                run,
                from,
                step,
                carried,
            } if *run == id => {
                doc["retry_of"] = json!({"run": from, "step": step, "carried": carried});
            }
            Event::RunRetried { run, retry, step } if *run == id => {
                doc["retried_as"] = json!({"run": retry, "step": step});
            }
            _ => {}
        }
    }
    if let Some(u) = inspect::usage(records, Scope::Correlation(id))
        .into_iter()
        .find(|l| l.agent == "*")
    {
        doc["usage"] = json!(u.totals);
    }
    // The facts `muster run` prints, in the shape of its `--json` document, once the run
    // has stopped somewhere (ended, or waiting at a gate).
    let run_status = match st {
        "completed" => Some(json!({"status": "completed"})),
        "failed" | "cancelled" => Some(json!({
            "status": "failed",
            "step": summary.step.clone().unwrap_or_default(),
            "reason": summary.reason.clone().unwrap_or_default(),
        })),
        "waiting" => Some(json!({
            "status": "waiting",
            "gate": summary.gate.clone().unwrap_or_default(),
            "question": summary.question.clone().unwrap_or_default(),
        })),
        _ => None,
    };
    if let Some(Value::Object(status)) = run_status {
        let mut owners: Vec<String> = Vec::new();
        for s in &rec.summaries {
            if let Some(a) = &s.agent
                && !owners.contains(a)
            {
                owners.push(a.clone());
            }
        }
        let outputs: Map<String, Value> = rec
            .steps
            .iter()
            .filter(|(_, v)| !v["output"].is_null())
            .map(|(k, v)| (k.clone(), v["output"].clone()))
            .collect();
        let mut o = Map::new();
        o.insert("run".into(), json!(id));
        o.insert("workflow".into(), json!(rec.workflow));
        o.extend(status);
        o.insert("steps".into(), json!(rec.summaries));
        o.insert("owners".into(), json!(owners));
        o.insert(
            "handoffs".into(),
            json!(rec.summaries.iter().map(|s| s.attempts).sum::<u32>()),
        );
        o.insert(
            "reassignments".into(),
            json!(rec.summaries.iter().map(|s| s.reassignments).sum::<u32>()),
        );
        o.insert(
            "stale_rejected".into(),
            json!(rec.summaries.iter().map(|s| s.stale_rejected).sum::<u32>()),
        );
        o.insert("outputs".into(), Value::Object(outputs));
        o.insert("duration_ms".into(), json!(summary.duration_ms));
        doc["outcome"] = Value::Object(o);
    }
    Some(doc)
}

/// Who decided a gate and what they wrote, from a decision's journaled reason: the node
/// journals a named token's decision as `by NAME` or `by NAME: NOTE` (a token's name is 1
/// to [`MAX_NAME_LEN`] letters, digits or `-_.@`, so the first `: ` ends it). `None` for a
/// decision without a name in front (an unnamed token, `muster approve` on the journal).
///
/// # Example
/// ```
/// use muster_serve::views::decided_by;
///
/// assert_eq!(decided_by("by ops-alice: looks: right"), Some(("ops-alice", "looks: right")));
/// assert_eq!(decided_by("by ops-alice"), Some(("ops-alice", "")));
/// assert_eq!(decided_by("by the way, fine"), None);
/// ```
pub fn decided_by(reason: &str) -> Option<(&str, &str)> {
    let rest = reason.strip_prefix("by ")?;
    let (name, note) = match rest.split_once(": ") {
        Some((n, note)) => (n, note),
        None => (rest, ""),
    };
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    ok.then_some((name, note))
}

/// The restarts each supervisor made of each child, from `child_restarted` records.
pub fn restarts(records: &[Record]) -> HashMap<(String, String), u64> {
    let mut out: HashMap<(String, String), u64> = HashMap::new();
    for r in records {
        if let Event::ChildRestarted {
            supervisor, child, ..
        } = &r.event
        {
            *out.entry((supervisor.to_string(), child.to_string()))
                .or_default() += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submitted(task: Uuid, correlation: Uuid) -> Event {
        Event::TaskSubmitted {
            task,
            capability: "echo".into(),
            correlation,
            input: json!({}).into(),
            attempts: 1,
            timeout_ms: 1000,
            sender: String::new(),
        }
    }

    /// Run `run` of workflow `w` started with `input`.
    fn started(run: Uuid, input: Value) -> Event {
        Event::RunStarted {
            run,
            workflow: "w".into(),
            file: "w.toml".into(),
            input,
        }
    }

    fn accepted(task: Uuid) -> Event {
        Event::ResultAccepted {
            task,
            agent: "echo#0".into(),
            epoch: 1,
            output: json!({}).into(),
        }
    }

    #[test]
    fn a_runs_story_is_its_records_and_its_tasks_not_its_neighbours() {
        let (run, other) = (Uuid::now_v7(), Uuid::now_v7());
        let (mine, theirs) = (Uuid::now_v7(), Uuid::now_v7());
        let events = [
            (started(run, json!({})), true),
            (started(other, json!({})), false),
            (submitted(theirs, other), false),
            (submitted(mine, run), true),
            (accepted(theirs), false),
            (accepted(mine), true),
        ];
        let mut tasks = HashSet::from([run]);
        for (e, expected) in &events {
            assert_eq!(belongs(e, run, &mut tasks), *expected, "{e:?}");
        }
        // A bare task's story: its own records only.
        let mut tasks = HashSet::from([theirs]);
        let kept: Vec<bool> = events
            .iter()
            .map(|(e, _)| belongs(e, theirs, &mut tasks))
            .collect();
        assert_eq!(kept, [false, false, true, false, true, false]);
    }

    #[test]
    fn a_runs_records_hold_no_model_call_yet_its_document_counts_them_per_lease() {
        use muster_core::journal::{MemoryJournal, ModelCall, TurnKind};
        let j = MemoryJournal::default();
        let (run, task) = (Uuid::now_v7(), Uuid::now_v7());
        let call = ModelCall {
            attempt: 1,
            turn: 0,
            kind: TurnKind::First,
            round: 0,
            model: "m".into(),
            messages: Vec::new(),
            answer: Some("{}".into()),
            error: None,
            usage: None,
            latency_ms: 1,
            truncated: false,
        };
        let events = [
            started(run, json!({})),
            submitted(task, run),
            Event::LeaseGranted {
                task,
                agent: "echo#0".into(),
                epoch: 1,
                attempt: 1,
                envelope: Uuid::now_v7(),
                routed: None,
            },
            Event::ModelCall {
                task,
                agent: "echo#0".into(),
                epoch: 1,
                call: Box::new(call.clone()),
            },
            Event::ModelCall {
                task,
                agent: "echo#0".into(),
                epoch: 1,
                call: Box::new(call),
            },
            accepted(task),
        ];
        for (i, e) in events.into_iter().enumerate() {
            j.append(i as u64, e);
        }
        let kinds = |rs: &[Record]| rs.iter().filter(|r| r.event.kind() == "model_call").count();
        // A run's records: none of its tasks' model calls; the task's: both.
        let records = j.records_of(run);
        assert_eq!(kinds(&records), 0);
        assert_eq!(records.len(), 4, "{records:?}");
        let task_records = j.records_of(task);
        assert_eq!(kinds(&task_records), 2);
        // The run's document counts them per lease all the same, from the journal.
        let counts = j.model_call_counts(&submitted_tasks(&records));
        let doc = run_detail(&records, run, false, &counts).expect("the run's document");
        assert_eq!(doc["steps"][0]["leases"][0]["model_calls"], 2, "{doc}");
        // The task's document and its calls, from the task's records.
        let t = super::task(&task_records, task).expect("the task");
        assert_eq!(t.leases[0].model_calls, 2);
        let calls = model_calls(&task_records, task, Some(1)).expect("the calls");
        assert_eq!(calls["calls"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn a_runs_document_has_its_path_and_who_decided_its_gate() {
        let run = Uuid::now_v7();
        let events = [
            started(run, json!({})),
            Event::StepEntered {
                run,
                step: "build".into(),
                visit: 1,
            },
            Event::StepEntered {
                run,
                step: "build".into(),
                visit: 2,
            },
            Event::StepEntered {
                run,
                step: "ship".into(),
                visit: 1,
            },
            Event::GateWaiting {
                run,
                gate: "ship".into(),
                question: "Ship it?".into(),
            },
            Event::GateDecided {
                run,
                gate: "ship".into(),
                approved: true,
                reason: "by ops-alice: fine: the diff is small".into(),
            },
        ];
        let records: Vec<Record> = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Record {
                seq: i as u64 + 1,
                at_ms: 1000 + 10 * i as u64,
                event,
            })
            .collect();
        let doc = run_detail(&records, run, false, &HashMap::new()).expect("the run's document");
        assert_eq!(
            doc["path"],
            json!([
                {"step": "build", "visit": 1, "at_ms": 1010},
                {"step": "build", "visit": 2, "at_ms": 1020},
                {"step": "ship", "visit": 1, "at_ms": 1030},
            ])
        );
        assert_eq!(
            doc["gates"][0]["decided"],
            json!({"approved": true, "by": "ops-alice",
                   "note": "by ops-alice: fine: the diff is small"})
        );
        // A decision without a name in front has no `by`.
        assert_eq!(decided_by("fine"), None);
        assert_eq!(decided_by("by : x"), None);
        assert_eq!(decided_by("by a b: x"), None);
    }

    /// A filter on an input field that matches only old runs answers each page after
    /// examining at most `INPUT_SCAN` runs, with a cursor to go on from: following it
    /// reaches the match, and the last page has no cursor.
    #[test]
    fn an_input_filter_examines_a_bounded_number_of_runs_per_page() {
        use muster_core::journal::runs::InputMatch;
        use muster_core::journal::{Journal, MemoryJournal};
        let j = MemoryJournal::default();
        let runs: Vec<Uuid> = (0..INPUT_SCAN + 500).map(|_| Uuid::now_v7()).collect();
        for (n, run) in runs.iter().enumerate() {
            j.append(0, started(*run, json!({"n": n})));
        }
        let filter = || RunQuery {
            input: vec![InputMatch::parse("n", "5").expect("a filter")],
            ..RunQuery::default()
        };
        let (page, next) = run_page_where(&j, &|_| false, None, filter(), None, 10);
        assert!(page.is_empty(), "the newest runs do not match");
        // The newest INPUT_SCAN runs were examined: go on after the oldest of them.
        assert_eq!(next, Some(runs[500]));
        let (page, next) = run_page_where(&j, &|_| false, None, filter(), next, 10);
        assert_eq!(page.len(), 1);
        assert_eq!(page[0]["run"], json!(runs[5]));
        assert_eq!(next, None, "nothing left to examine");
    }

    /// A page whose runs this node's own filter thins (`running`: the runs it drives)
    /// still says where to go on, so a driven run further down is reached.
    #[test]
    fn a_thinned_page_with_an_input_filter_goes_on_to_the_runs_below() {
        use muster_core::journal::runs::InputMatch;
        use muster_core::journal::{Journal, MemoryJournal};
        let j = MemoryJournal::default();
        let runs: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
        for run in &runs {
            j.append(0, started(*run, json!({"n": 1})));
        }
        let driven = runs[0];
        let filter = || RunQuery {
            input: vec![InputMatch::parse("n", "1").expect("a filter")],
            ..RunQuery::default()
        };
        let (mut found, mut after, mut pages) = (Vec::new(), None, 0);
        loop {
            let (page, next) =
                run_page_where(&j, &|r| r == driven, Some("running"), filter(), after, 5);
            found.extend(page.iter().map(|r| r["run"].clone()));
            pages += 1;
            assert!(pages <= 5, "the pages go on for ever");
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(found, [json!(driven)]);
    }

    #[test]
    fn a_cursor_from_another_node_pages_by_run_id() {
        use muster_core::journal::{Journal, MemoryJournal};
        let j = MemoryJournal::default();
        // Ids in start order; `theirs` is another node's run, started between a1 and a2.
        let (a0, a1, theirs, a2, a3) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        for run in [a0, a1, a2, a3] {
            j.append(0, started(run, json!({})));
        }
        let ids = |page: Vec<Value>| page.iter().map(|r| r["run"].clone()).collect::<Vec<_>>();
        let (page, more) = run_page(&j, &|_| false, None, None, Some(theirs), 10);
        assert_eq!(ids(page), [json!(a1), json!(a0)]);
        assert!(!more);
        let (page, more) = run_page(&j, &|_| false, None, None, Some(theirs), 1);
        assert_eq!((ids(page), more), (vec![json!(a1)], true));
        // A cursor this journal holds pages by its own order, as before.
        let (page, _) = run_page(&j, &|_| false, None, None, Some(a2), 10);
        assert_eq!(ids(page), [json!(a1), json!(a0)]);
    }
}
