//! The journal's index of workflow runs: which runs there are, where each stands, and
//! which records tell each one's story, so that a node answers a run list, a run's detail
//! or a gate decision in time that grows with the page or the run, not with the history.
//!
//! It owns the rule ([`RunEntry::apply`]) that turns run records into an entry, shared by
//! the scanning answers every journal gets ([`scan_runs`], [`scan_records_of`]) and the
//! SQLite journal's `runs` table, which the writer keeps in the same transaction as the
//! records it summarises. It must not interpret what a run's steps mean (that is the
//! workflow layer's `recovery` and `inspect`).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Event, Record};

/// Where a run stands by its records: the few states a list is filtered by.
///
/// # Example
/// ```
/// use muster_core::journal::runs::RunStatus;
///
/// assert_eq!("waiting".parse::<RunStatus>(), Ok(RunStatus::Waiting));
/// assert!(RunStatus::Cancelled.has_ended() && !RunStatus::Waiting.has_ended());
/// assert!("sleeping".parse::<RunStatus>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started, not ended, not waiting at a gate.
    Unfinished,
    /// Waiting at a gate for a decision.
    Waiting,
    /// Ended `completed`.
    Completed,
    /// Ended with any status other than `completed` or `cancelled`.
    Failed,
    /// Ended `cancelled`.
    Cancelled,
}

impl RunStatus {
    /// Every status, in the order of the enum.
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Unfinished,
        RunStatus::Waiting,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    /// `unfinished`, `waiting`, `completed`, `failed` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Unfinished => "unfinished",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Whether a run in this state has ended (nothing it does changes any more).
    pub fn has_ended(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a run status; one of {}",
                    RunStatus::ALL.map(RunStatus::as_str).join(", ")
                )
            })
    }
}

/// One run as the index knows it.
///
/// # Example
/// ```
/// use muster_core::journal::runs::{RunEntry, RunStatus};
/// use muster_core::journal::{Event, Record};
///
/// let run = uuid::Uuid::now_v7();
/// let started = Record { seq: 4, at_ms: 10, event: Event::RunStarted {
///     run, workflow: "ship".into(), file: "ship.toml".into(), input: serde_json::json!({}) } };
/// let mut e = RunEntry::start(started.seq, started.at_ms, &started.event)
///     .expect("a run_started record starts an entry");
/// e.apply(9, 20, &Event::GateWaiting { run, gate: "approve".into(), question: "ship it?".into() });
/// assert_eq!((e.status, e.gate.as_deref(), e.last_seq), (RunStatus::Waiting, Some("approve"), 9));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunEntry {
    /// The run id.
    pub run: Uuid,
    /// Its workflow's name.
    pub workflow: String,
    /// The workflow file, as recorded at the start.
    pub file: String,
    /// Where it stands.
    pub status: RunStatus,
    /// The gate it waits at (waiting only).
    pub gate: Option<String>,
    /// Its `run_started` record.
    pub started_seq: u64,
    /// Its `run_started` stamp, Unix ms.
    pub started_ms: u64,
    /// Its `run_ended` stamp, Unix ms.
    pub ended_ms: Option<u64>,
    /// Its last run record (`run_started`, `step_*`, `gate_*`, `run_ended`).
    pub last_seq: u64,
}

impl RunEntry {
    /// The entry a `run_started` record (number `seq`, stamped `at_ms`) begins; `None` for
    /// any other record.
    pub fn start(seq: u64, at_ms: u64, event: &Event) -> Option<RunEntry> {
        match event {
            Event::RunStarted {
                run,
                workflow,
                file,
                ..
            } => Some(RunEntry {
                run: *run,
                workflow: workflow.clone(),
                file: file.clone(),
                status: RunStatus::Unfinished,
                gate: None,
                started_seq: seq,
                started_ms: at_ms,
                ended_ms: None,
                last_seq: seq,
            }),
            _ => None,
        }
    }

    /// Applies one of the run's records (number `seq`, stamped `at_ms`; its `run_started`
    /// again changes nothing: a run keeps its first start). Returns whether the record
    /// was applied (it is one of this run's and the run has not ended; a run that has
    /// ended changes no more).
    pub fn apply(&mut self, seq: u64, at_ms: u64, event: &Event) -> bool {
        if self.status.has_ended() || event.run() != Some(self.run) {
            return false;
        }
        match event {
            Event::StepEntered { .. } => {
                self.status = RunStatus::Unfinished;
                self.gate = None;
            }
            Event::GateWaiting { gate, .. } => {
                self.status = RunStatus::Waiting;
                self.gate = Some(gate.clone());
            }
            Event::GateDecided { gate, .. } if self.gate.as_ref() == Some(gate) => {
                self.status = RunStatus::Unfinished;
                self.gate = None;
            }
            Event::RunEnded { status, .. } => {
                self.status = match status.as_str() {
                    "completed" => RunStatus::Completed,
                    "cancelled" => RunStatus::Cancelled,
                    _ => RunStatus::Failed,
                };
                self.gate = None;
                self.ended_ms = Some(at_ms);
            }
            _ => {}
        }
        self.last_seq = self.last_seq.max(seq);
        true
    }
}

/// Which runs a page of the index lists: newest first, from before a cursor.
///
/// # Example
/// ```
/// use muster_core::journal::runs::{InputMatch, RunQuery, RunStatus};
///
/// let q = RunQuery { status: Some(RunStatus::Waiting), ..RunQuery::default() };
/// assert_eq!((q.limit, q.before), (50, None));
/// let q = RunQuery {
///     started_after: Some(1_764_240_000_000),
///     input: vec![InputMatch::parse("repo", "acme/shop").unwrap()],
///     ..RunQuery::default()
/// };
/// assert!(q.admits_input(&serde_json::json!({"repo": "acme/shop"})));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunQuery {
    /// Only runs in this state.
    pub status: Option<RunStatus>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs that started before this record (`started_seq` of the last run of the
    /// previous page).
    pub before: Option<u64>,
    /// Only runs that started at or after this stamp (Unix ms).
    pub started_after: Option<u64>,
    /// Only runs that started before this stamp (Unix ms).
    pub started_before: Option<u64>,
    /// Only runs whose input holds every one of these fields with its value.
    pub input: Vec<InputMatch>,
    /// At most this many.
    pub limit: usize,
    /// With input fields: examine at most this many runs that pass the other filters
    /// (newest first) for them, so that a filter matching few runs reads a bounded part
    /// of the journal; the caller goes on from the last run examined. `None`: all.
    pub scan: Option<usize>,
}

impl Default for RunQuery {
    fn default() -> Self {
        RunQuery {
            status: None,
            workflow: None,
            before: None,
            started_after: None,
            started_before: None,
            input: Vec::new(),
            limit: 50,
            scan: None,
        }
    }
}

impl RunQuery {
    /// Whether `e` is one of the runs this query asks for (the cursor and limit aside, and
    /// the input fields, which the entry does not hold: see [`RunQuery::admits_input`]).
    pub fn admits(&self, e: &RunEntry) -> bool {
        self.status.is_none_or(|s| s == e.status)
            && self.workflow.as_ref().is_none_or(|w| *w == e.workflow)
            && self.before.is_none_or(|b| e.started_seq < b)
            && self.started_after.is_none_or(|t| e.started_ms >= t)
            && self.started_before.is_none_or(|t| e.started_ms < t)
    }

    /// Whether a run whose input is `input` passes the query's input fields.
    pub fn admits_input(&self, input: &Value) -> bool {
        self.input.iter().all(|m| m.matches(input))
    }
}

/// The most dotted names an [`InputMatch`] path holds.
pub const MAX_INPUT_DEPTH: usize = 8;

/// One `input.FIELD=value` filter of a run list: the run input's field at `path` (object
/// keys, outermost first) equals `value` — a string field its text, any other field its
/// JSON text (`3`, `true`, `null`).
///
/// # Example
/// ```
/// use muster_core::journal::runs::InputMatch;
/// use serde_json::json;
///
/// let m = InputMatch::parse("ticket.priority", "2").unwrap();
/// assert!(m.matches(&json!({"ticket": {"priority": 2}})));
/// assert!(m.matches(&json!({"ticket": {"priority": "2"}})));
/// assert!(!m.matches(&json!({"ticket": {"priority": 3}})));
/// assert!(InputMatch::parse("a..b", "x").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputMatch {
    /// The field's path: object keys, each of letters, digits, `_` and `-`.
    pub path: Vec<String>,
    /// The value it must have.
    pub value: String,
}

impl InputMatch {
    /// The filter on the field named `path` (dotted: `ticket.priority`); an error saying
    /// what is wrong with the name.
    pub fn parse(path: &str, value: &str) -> Result<InputMatch, String> {
        let keys: Vec<String> = path.split('.').map(str::to_string).collect();
        if keys.len() > MAX_INPUT_DEPTH {
            return Err(format!(
                "`{path}` is {} names deep; at most {MAX_INPUT_DEPTH}",
                keys.len()
            ));
        }
        for k in &keys {
            let ok = !k.is_empty()
                && k.len() <= 64
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(format!(
                    "`{path}` is not a field name: each dotted name is 1 to 64 letters, \
                     digits, `_` or `-`"
                ));
            }
        }
        Ok(InputMatch {
            path: keys,
            value: value.to_string(),
        })
    }

    /// Whether `input` holds the field with the value.
    pub fn matches(&self, input: &Value) -> bool {
        let mut at = input;
        for k in &self.path {
            match at.get(k) {
                Some(v) => at = v,
                None => return false,
            }
        }
        match at {
            Value::String(s) => *s == self.value,
            other => {
                // The JSON text (`2`, `true`): not `Value == String`, which holds only for
                // a string value.
                let text = other.to_string();
                text == self.value
            }
        }
    }
}

/// Every run of `records` (read from a journal's start), in the order they started.
///
/// # Example
/// ```
/// use muster_core::journal::runs::{scan_runs, RunStatus};
/// use muster_core::journal::{Event, Journal, MemoryJournal};
///
/// let j = MemoryJournal::default();
/// let run = uuid::Uuid::now_v7();
/// j.append(0, Event::RunStarted { run, workflow: "w".into(), file: "w.toml".into(), input: serde_json::json!({}) });
/// j.append(5, Event::RunEnded { run, status: "cancelled".into(), step: "s".into(), reason: None });
/// let runs = scan_runs(&j.read_after(0));
/// assert_eq!((runs[0].status, runs[0].ended_ms), (RunStatus::Cancelled, Some(5)));
/// ```
pub fn scan_runs(records: &[Record]) -> Vec<RunEntry> {
    let mut order = Vec::new();
    let mut by: HashMap<Uuid, RunEntry> = HashMap::new();
    for r in records {
        let Some(run) = r.event.run() else { continue };
        match by.get_mut(&run) {
            Some(e) => {
                e.apply(r.seq, r.at_ms, &r.event);
            }
            None => {
                if let Some(e) = RunEntry::start(r.seq, r.at_ms, &r.event) {
                    order.push(run);
                    by.insert(run, e);
                }
            }
        }
    }
    order.into_iter().filter_map(|r| by.remove(&r)).collect()
}

/// The records of `records` (read from a journal's start) that tell the story of `id`, a
/// run or a task: those whose [`story`](Stories::story) is `id` (a run's own records and
/// its tasks', but not its tasks' recorded model calls: [`Event::task_only`]), and those
/// of the task `id` (its model calls included).
///
/// # Example
/// ```
/// use muster_core::journal::runs::scan_records_of;
/// use muster_core::journal::{Event, Journal, MemoryJournal};
///
/// let j = MemoryJournal::default();
/// let (run, other) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
/// j.append(0, Event::GateWaiting { run, gate: "g".into(), question: "?".into() });
/// j.append(0, Event::GateWaiting { run: other, gate: "g".into(), question: "?".into() });
/// assert_eq!(scan_records_of(&j.read_after(0), run).len(), 1);
/// ```
pub fn scan_records_of(records: &[Record], id: Uuid) -> Vec<Record> {
    let mut stories = Stories::default();
    records
        .iter()
        .filter(|r| stories.story(&r.event) == Some(id) || r.event.task() == Some(id))
        .cloned()
        .collect()
}

/// Which story each record belongs to, learned in order: a run record's run, a task
/// record's correlation (from the task's `task_submitted`; a workflow run's id is the
/// correlation of its tasks), an envelope's correlation.
///
/// # Example
/// ```
/// use muster_core::journal::runs::Stories;
/// use muster_core::journal::Event;
///
/// let run = uuid::Uuid::now_v7();
/// let mut s = Stories::default();
/// assert_eq!(s.story(&Event::StepEntered { run, step: "a".into(), visit: 1 }), Some(run));
/// assert_eq!(s.story(&Event::Note { text: "x".into() }), None);
/// ```
#[derive(Debug, Default, Clone)]
pub struct Stories {
    correlations: HashMap<Uuid, Uuid>,
}

impl Stories {
    /// The story `e` belongs to, remembering a task's correlation from its submission;
    /// `None` for a record of its task alone ([`Event::task_only`]: a recorded model call
    /// is part of its task's records, not of its run's).
    pub fn story(&mut self, e: &Event) -> Option<Uuid> {
        if e.task_only() {
            return None;
        }
        if let Some(run) = e.run() {
            return Some(run);
        }
        match (e.task(), e.correlation()) {
            (Some(t), Some(c)) => {
                self.correlations.insert(t, c);
                Some(c)
            }
            (Some(t), None) => self.correlations.get(&t).copied(),
            (None, c) => c,
        }
    }
}
