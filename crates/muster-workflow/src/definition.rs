//! The workflow file: parsed from TOML, checked against `schemas/workflow.schema.json`,
//! every CEL expression compiled once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use muster_core::conditions::Condition;
use muster_core::delegation::OnConflict;
use muster_core::messaging::{SchemaStore, Scope};

/// The largest attempt budget a task step may have (`attempts`).
pub const MAX_ATTEMPTS: u32 = 1_000;
/// The largest bound a transition may put on the visits of its target (`max_visits`).
pub const MAX_VISITS: u32 = 10_000;
/// The longest duration a file may give (a timeout, a backoff...): 100 years. Longer
/// ones overflow the clock's arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(3_155_760_000);

/// A problem that makes a workflow file unusable (exit code 2): the file, the step (or
/// field) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{file}: {at}: {message}")]
pub struct WorkflowError {
    /// The file.
    pub file: PathBuf,
    /// The step (`steps.NAME`) or field (`/start`).
    pub at: String,
    /// What is wrong.
    pub message: String,
}

/// Where to go after a step.
#[derive(Debug, Clone)]
pub enum Next {
    /// Always this step.
    Step(String),
    /// The first rule whose condition holds and whose bound is not reached.
    Rules(Vec<Rule>),
}

/// One transition.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The condition; `None` for `otherwise`.
    pub when: Option<Condition>,
    /// The target step.
    pub goto: String,
    /// The most times a run may visit `goto` (its first visit counts); once reached the
    /// rule is skipped.
    pub max_visits: Option<u32>,
}

/// A task step: delegates one task by capability.
#[derive(Debug, Clone)]
pub struct TaskStep {
    /// Capability.
    pub capability: String,
    /// CEL input mapping (default: `run.input`).
    pub input: Option<Condition>,
    /// Time bound per attempt.
    pub timeout: Option<Duration>,
    /// Attempt budget.
    pub attempts: Option<u32>,
    /// Delay before each reassignment.
    pub backoff: Option<Duration>,
    /// Where an escalated task goes: a step (usually a gate), or `fail`.
    pub on_exhausted: Option<String>,
    /// Where to go next (absent for a parallel branch).
    pub next: Option<Next>,
    /// The resources the step's task may touch (absent: the capability's default scope,
    /// or none).
    pub scope: Option<StepScope>,
    /// What the task does when its scope overlaps one held: wait (default) or fail.
    pub on_conflict: OnConflict,
}

/// A step's scope: written out, or a CEL mapping that renders it per task.
#[derive(Debug, Clone)]
pub enum StepScope {
    /// `scope = { write = [...], read = [...] }`: the same for every task of the step.
    Fixed(Scope),
    /// `scope = "CEL"`: evaluated over `run`, `steps` and the task's `input` to a map
    /// `{write: [...], read: [...]}`, e.g.
    /// `{"write": ["src/" + input.module + "/**"], "read": ["spec/**"]}`.
    Mapped(Condition),
}

impl StepScope {
    /// The scope of one task of the step, given its input (and the run's variables).
    ///
    /// # Example
    /// ```
    /// use muster_workflow::definition::StepScope;
    /// use muster_core::Condition;
    /// use serde_json::json;
    ///
    /// let s = StepScope::Mapped(Condition::compile(r#"{"write": ["src/" + input.module + "/**"]}"#).unwrap());
    /// let scope = s.render(&[("input", &json!({"module": "user"}))]).unwrap();
    /// assert!(scope.allows_write("src/user/mod.rs"));
    /// ```
    pub fn render(&self, vars: &[(&str, &Value)]) -> Result<Scope, ScopeMappingError> {
        match self {
            StepScope::Fixed(s) => Ok(s.clone()),
            StepScope::Mapped(c) => {
                let v = c
                    .eval_json(vars)
                    .map_err(|source| ScopeMappingError::Eval { source })?;
                scope_from(&v).map_err(|message| ScopeMappingError::NotAScope {
                    value: muster_core::util::bounded_json(&v),
                    message,
                })
            }
        }
    }
}

/// A step's scope mapping that gave no scope.
#[derive(Debug, thiserror::Error)]
pub enum ScopeMappingError {
    /// The CEL expression failed.
    #[error("scope mapping failed: {source}")]
    Eval {
        /// Why.
        source: muster_core::ConditionError,
    },
    /// It gave a value that is not `{write: [...], read: [...]}`.
    #[error("scope mapping gave {value}: {message}")]
    NotAScope {
        /// The value (a bounded prefix of its JSON).
        value: String,
        /// Why it is not a scope.
        message: String,
    },
}

/// A scope from its JSON form `{write: [...], read: [...]}` (both optional).
fn scope_from(v: &Value) -> Result<Scope, String> {
    serde_json::from_value::<Scope>(v.clone()).map_err(|e| e.to_string())
}

/// A step.
#[derive(Debug, Clone)]
pub enum Step {
    /// Delegates a task.
    Task(TaskStep),
    /// Runs branches at once; the join waits for all.
    Parallel {
        /// Branch steps (task steps).
        branches: Vec<String>,
        /// Branches that may fail without failing the join.
        optional: Vec<String>,
        /// Where to go next.
        next: Option<Next>,
    },
    /// Waits for a human decision.
    Gate {
        /// What the human decides.
        question: String,
        /// Where an approval goes (default: the run completes).
        on_approve: Option<String>,
        /// Where a rejection goes (default: the run fails).
        on_reject: Option<String>,
    },
    /// Ends the run.
    Terminal {
        /// `true` for done, `false` for fail.
        success: bool,
    },
}

impl Step {
    /// Every step this one can go to.
    pub fn targets(&self) -> Vec<&str> {
        let mut out = Vec::new();
        match self {
            Step::Task(t) => {
                if let Some(n) = &t.next {
                    push_next(n, &mut out);
                }
                if let Some(e) = &t.on_exhausted
                    && e != "fail"
                {
                    out.push(e.as_str());
                }
            }
            Step::Parallel { branches, next, .. } => {
                out.extend(branches.iter().map(String::as_str));
                if let Some(n) = next {
                    push_next(n, &mut out);
                }
            }
            Step::Gate {
                on_approve,
                on_reject,
                ..
            } => {
                out.extend(on_approve.as_deref());
                out.extend(on_reject.as_deref());
            }
            Step::Terminal { .. } => {}
        }
        out
    }
}

fn push_next<'a>(n: &'a Next, out: &mut Vec<&'a str>) {
    match n {
        Next::Step(s) => out.push(s),
        Next::Rules(rs) => out.extend(rs.iter().map(|r| r.goto.as_str())),
    }
}

/// A workflow, compiled.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The input schema name.
    pub input: String,
    /// The first step.
    pub start: String,
    /// Whether several runs of this workflow may be in flight at once (then `muster
    /// check` also reports a step whose write scope would overlap itself across runs).
    pub concurrent: bool,
    /// Steps by name.
    pub steps: BTreeMap<String, Step>,
    /// The most model tokens one run may spend (`[budget] tokens`); past it the run
    /// fails before its next step.
    pub token_budget: Option<u64>,
    /// The raw document (for checks that read the source).
    pub document: Value,
    /// The file it came from.
    pub file: PathBuf,
}

impl Workflow {
    /// Reads, validates and compiles a workflow file. Any problem is an error naming the
    /// file and the step.
    pub fn load(path: &Path, schemas: &SchemaStore) -> Result<Workflow, Vec<WorkflowError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![WorkflowError {
                file: path.to_path_buf(),
                at: "/".into(),
                message: format!("cannot read: {e}"),
            }]
        })?;
        Self::parse(&text, path, schemas)
    }

    /// Parses workflow TOML text (`path` names it in errors).
    pub fn parse(
        text: &str,
        path: &Path,
        schemas: &SchemaStore,
    ) -> Result<Workflow, Vec<WorkflowError>> {
        let err = |at: &str, message: String| WorkflowError {
            file: path.to_path_buf(),
            at: at.to_string(),
            message,
        };
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            vec![err(
                "/",
                format!("not valid TOML: {}", e.to_string().trim()),
            )]
        })?;
        let doc = serde_json::to_value(&table).map_err(|e| vec![err("/", e.to_string())])?;
        // The caller's own workflow schema if its store has one, else the one muster ships.
        let store = if schemas.contains("workflow") {
            schemas
        } else {
            shipped_schema()
        };
        if store.contains("workflow")
            && let Err(c) = store.validate_explained("workflow", &doc)
        {
            // A step that breaks the schema: muster's own parsing of the step says
            // what is wrong in the format's words when it can; else the schema's
            // explained error stands.
            return Err(c
                .errors
                .into_iter()
                .map(|v| {
                    // Inside a step, muster's own parse of it names the field in
                    // the words of the workflow format when it finds the fault too.
                    let own = v
                        .instance_path
                        .strip_prefix("/steps/")
                        .map(|rest| rest.split('/').next().unwrap_or(rest))
                        .and_then(|name| doc["steps"].get(name))
                        .and_then(|raw| parse_step(raw).err());
                    err(&pointer_to_step(&v.instance_path), own.unwrap_or(v.message))
                })
                .collect());
        }
        let mut errors = Vec::new();
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let name = s(&doc, "name").unwrap_or_default();
        let start = s(&doc, "start").unwrap_or_default();
        let input = s(&doc, "input").unwrap_or_default();
        let mut steps = BTreeMap::new();
        let empty = serde_json::Map::new();
        let raw_steps = doc
            .get("steps")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        if raw_steps.is_empty() {
            errors.push(err("/steps", "a workflow needs at least one step".into()));
        }
        for (sname, raw) in raw_steps {
            let at = format!("steps.{sname}");
            match parse_step(raw) {
                Ok(step) => {
                    steps.insert(sname.clone(), step);
                }
                Err(m) => errors.push(err(&at, m)),
            }
        }
        // A step that did not parse is reported above; it still exists for what names it.
        if !raw_steps.contains_key(&start) {
            errors.push(err(
                "/start",
                format!("`{start}` is not a step of this workflow"),
            ));
        }
        if !input.is_empty() && !schemas.contains(&input) {
            errors.push(err(
                "/input",
                format!("unknown schema `{input}` (expected schemas/{input}.schema.json)"),
            ));
        }
        for (sname, step) in &steps {
            for t in step.targets() {
                if !raw_steps.contains_key(t) {
                    errors.push(err(
                        &format!("steps.{sname}"),
                        format!("goes to `{t}`, which is not a step of this workflow"),
                    ));
                }
            }
            if let Step::Parallel { branches, .. } = step {
                for b in branches {
                    if !matches!(steps.get(b), Some(Step::Task(_)) | None) {
                        errors.push(err(
                            &format!("steps.{sname}"),
                            format!("branch `{b}` must be a task step"),
                        ));
                    }
                }
            }
        }
        let token_budget = match doc.get("budget") {
            None => None,
            Some(b) => match b.get("tokens") {
                None => None,
                Some(t) => match t.as_u64() {
                    Some(n) if n > 0 && b.as_object().is_some_and(|o| o.len() == 1) => Some(n),
                    Some(n) if n > 0 => {
                        errors.push(err("/budget", "the only budget field is `tokens`".into()));
                        None
                    }
                    _ => {
                        errors.push(err(
                            "/budget/tokens",
                            format!("expected an integer >= 1, got {t}"),
                        ));
                        None
                    }
                },
            },
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Workflow {
            token_budget,
            name,
            description: s(&doc, "description").unwrap_or_default(),
            input,
            start,
            concurrent: doc
                .get("concurrent")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            steps,
            document: doc,
            file: path.to_path_buf(),
        })
    }

    /// The task step called `name`, if it is one.
    pub fn task(&self, name: &str) -> Option<&TaskStep> {
        match self.steps.get(name) {
            Some(Step::Task(t)) => Some(t),
            _ => None,
        }
    }
}

/// `/steps/implement/input` → `steps.implement`.
/// The workflow schema shipped with muster (`schemas/workflow.schema.json`, built in).
fn shipped_schema() -> &'static SchemaStore {
    static STORE: std::sync::OnceLock<SchemaStore> = std::sync::OnceLock::new();
    // `the_shipped_workflow_schema_is_built_in` proves the text compiles.
    STORE.get_or_init(|| {
        SchemaStore::shipped(
            "workflow",
            include_str!("../../../schemas/workflow.schema.json"),
        )
    })
}

fn pointer_to_step(p: &str) -> String {
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        ["steps", name, rest @ ..] => {
            if rest.is_empty() {
                format!("steps.{name}")
            } else {
                format!("steps.{name}.{}", rest.join("."))
            }
        }
        [] => "/".into(),
        other => format!("/{}", other.join("/")),
    }
}

/// `key` as a duration (a humantime string, or a whole number of seconds) of at most
/// [`MAX_DURATION`].
fn duration(raw: &Value, key: &str) -> Result<Option<Duration>, String> {
    let d = match raw.get(key) {
        None => return Ok(None),
        Some(Value::String(s)) => humantime::parse_duration(s)
            .map_err(|e| format!("{key}: `{s}` is not a duration ({e}); write e.g. \"30s\""))?,
        Some(Value::Number(n)) => n.as_u64().map(Duration::from_secs).ok_or_else(|| {
            format!("{key}: expected a duration like \"30s\" or whole seconds, got {n}")
        })?,
        Some(other) => {
            return Err(format!(
                "{key}: expected a duration like \"30s\", got {other}"
            ));
        }
    };
    if d > MAX_DURATION {
        return Err(format!(
            "{key}: {} is above the limit of {}",
            humantime::format_duration(d),
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(Some(d))
}

/// `key` as a whole number in `1..=max`.
fn bounded_count(raw: &Value, key: &str, max: u32) -> Result<Option<u32>, String> {
    match raw.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= u64::from(max) => Ok(Some(n as u32)),
            Some(n) if n >= 1 => Err(format!("{key}: {n} is above the limit of {max}")),
            _ => Err(format!(
                "{key}: expected a whole number from 1 to {max}, got {v}"
            )),
        },
    }
}

fn compile(raw: &Value, key: &str) -> Result<Option<Condition>, String> {
    match raw.get(key) {
        None => Ok(None),
        Some(Value::String(src)) => Condition::compile(src)
            .map(Some)
            .map_err(|e| format!("{key}: {e}")),
        Some(other) => Err(format!(
            "{key}: expected a CEL expression (a string), got {other}"
        )),
    }
}

fn text(raw: &Value, key: &str) -> Result<Option<String>, String> {
    match raw.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{key}: expected a string, got {other}")),
    }
}

/// Refuses the fields a step of this kind does not have (the schema does too, but it
/// can only say that the step matches no kind).
fn known_fields(raw: &Value, kind: &str, fields: &[&str]) -> Result<(), String> {
    if let Some(map) = raw.as_object()
        && let Some(k) = map.keys().find(|k| !fields.contains(&k.as_str()))
    {
        return Err(format!(
            "unknown field `{k}` for a {kind} step (it has: {})",
            fields.join(", ")
        ));
    }
    Ok(())
}

fn parse_scope(raw: &Value) -> Result<Option<StepScope>, String> {
    match raw.get("scope") {
        None => Ok(None),
        Some(Value::String(src)) => Condition::compile(src)
            .map(|c| Some(StepScope::Mapped(c)))
            .map_err(|e| format!("scope: {e}")),
        Some(v @ Value::Object(_)) => scope_from(v)
            .map(|s| Some(StepScope::Fixed(s)))
            .map_err(|e| format!("scope: {e}")),
        Some(other) => Err(format!(
            "scope: expected {{ write = [...], read = [...] }} or a CEL mapping (a string), got {other}"
        )),
    }
}

fn parse_next(raw: &Value) -> Result<Option<Next>, String> {
    match raw.get("next") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(Next::Step(s.clone()))),
        Some(Value::Array(rules)) => {
            if rules.is_empty() {
                return Err("next: an empty list of rules; give at least one".into());
            }
            let mut out = Vec::with_capacity(rules.len());
            for (i, r) in rules.iter().enumerate() {
                known_fields(
                    r,
                    "transition",
                    &["when", "otherwise", "goto", "max_visits"],
                )
                .map_err(|e| format!("next[{i}]: {e}"))?;
                let goto = r
                    .get("goto")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("next[{i}]: needs `goto`"))?
                    .to_string();
                let when = match r.get("when") {
                    Some(Value::String(src)) => {
                        Some(Condition::compile(src).map_err(|e| format!("next[{i}].when: {e}"))?)
                    }
                    Some(other) => {
                        return Err(format!(
                            "next[{i}].when: expected a CEL condition (a string), got {other}"
                        ));
                    }
                    None if r.get("otherwise").and_then(Value::as_bool) == Some(true) => None,
                    None => return Err(format!("next[{i}]: needs `when` or `otherwise = true`")),
                };
                let max_visits = bounded_count(r, "max_visits", MAX_VISITS)
                    .map_err(|e| format!("next[{i}].{e}"))?;
                out.push(Rule {
                    when,
                    goto,
                    max_visits,
                });
            }
            Ok(Some(Next::Rules(out)))
        }
        Some(other) => Err(format!(
            "next: expected a step name or a list of rules, got {other}"
        )),
    }
}

/// `key` as a list of distinct step names (`parallel`, `optional`).
fn step_names(raw: &Value, key: &str) -> Result<Vec<String>, String> {
    let Some(v) = raw.get(key) else {
        return Ok(Vec::new());
    };
    let Some(items) = v.as_array() else {
        return Err(format!("{key}: expected a list of step names, got {v}"));
    };
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(name) = item.as_str() else {
            return Err(format!("{key}[{i}]: expected a step name, got {item}"));
        };
        if !seen.insert(name) {
            return Err(format!("{key}[{i}]: `{name}` is listed twice"));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

fn parse_step(raw: &Value) -> Result<Step, String> {
    if raw.get("capability").is_some() {
        known_fields(
            raw,
            "task",
            &[
                "description",
                "capability",
                "input",
                "timeout",
                "attempts",
                "backoff",
                "on_exhausted",
                "next",
                "scope",
                "on_conflict",
            ],
        )?;
        let timeout = duration(raw, "timeout")?;
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(
                "timeout: must be more than zero (every attempt would time out at once)".into(),
            );
        }
        return Ok(Step::Task(TaskStep {
            capability: text(raw, "capability")?.unwrap_or_default(),
            input: compile(raw, "input")?,
            timeout,
            attempts: bounded_count(raw, "attempts", MAX_ATTEMPTS)?,
            backoff: duration(raw, "backoff")?,
            on_exhausted: text(raw, "on_exhausted")?,
            next: parse_next(raw)?,
            scope: parse_scope(raw)?,
            on_conflict: match raw.get("on_conflict").and_then(Value::as_str) {
                None | Some("wait") => OnConflict::Wait,
                Some("fail") => OnConflict::Fail,
                Some(other) => {
                    return Err(format!(
                        "on_conflict: `{other}`; expected \"wait\" or \"fail\""
                    ));
                }
            },
        }));
    }
    if raw.get("parallel").is_some() {
        known_fields(
            raw,
            "parallel",
            &["description", "parallel", "optional", "next"],
        )?;
        let branches = step_names(raw, "parallel")?;
        if branches.is_empty() {
            return Err(
                "parallel: an empty list; name at least one task step to run (a join of \
                 nothing would go on at once, or loop without doing anything)"
                    .into(),
            );
        }
        return Ok(Step::Parallel {
            branches,
            optional: step_names(raw, "optional")?,
            next: parse_next(raw)?,
        });
    }
    if raw.get("gate").is_some() {
        known_fields(
            raw,
            "gate",
            &["description", "gate", "on_approve", "on_reject"],
        )?;
        return Ok(Step::Gate {
            question: text(raw, "gate")?.unwrap_or_default(),
            on_approve: text(raw, "on_approve")?,
            on_reject: text(raw, "on_reject")?,
        });
    }
    match raw.get("terminal").and_then(Value::as_str) {
        Some(t @ ("done" | "fail")) => {
            known_fields(raw, "terminal", &["description", "terminal"])?;
            Ok(Step::Terminal {
                success: t == "done",
            })
        }
        Some(other) => Err(format!(
            "terminal: expected \"done\" or \"fail\", got \"{other}\""
        )),
        None => {
            Err("a step needs one of `capability` (task), `parallel`, `gate` or `terminal`".into())
        }
    }
}

#[cfg(test)]
mod shipped_schema_tests {
    #[test]
    fn the_shipped_workflow_schema_is_built_in() {
        assert!(super::shipped_schema().contains("workflow"));
    }
}
