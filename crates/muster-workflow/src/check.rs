//! Static checks of a workflow against a cast (`muster check`): the essay's three
//! diagnostic questions, asked of the files before anything runs.
//!
//! - **discovery**: can every task step's capability be served by a declared agent?
//! - **messaging**: does every handoff have a schema, does every field an input mapping or
//!   a transition reads (`steps.NAME.output.FIELD`, `run.input.FIELD`) exist in the schema
//!   that produces it, and does every map-literal mapping give the capability's input
//!   schema its required fields and nothing it forbids?
//! - **delegation**: does every task step have a timeout, an attempt budget and a failure
//!   route; does every loop have a bound; is every step reachable; can every run end?
//! - **scope**: can two branches of a parallel step (or two runs of a workflow declared
//!   `concurrent`) write the same thing at once? Written-out scopes (a step's, or its
//!   capability's default) are compared; a scope rendered by a CEL mapping depends on the
//!   input and is not. A branch that says `on_conflict = "wait"` accepts waiting.
//!
//! It owns no state and must not run anything: it reads the compiled [`Workflow`], the
//! capabilities the cast declares and the schema documents. Expressions are read from
//! their source text with a small scanner (string literals skipped), which is enough for
//! the member selections a mapping makes; computed accesses (`steps[name]`) are not
//! followed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::definition::{Next, Step, StepScope, TaskStep, Workflow};
use muster_core::discovery::CapabilitySpec;
use muster_core::messaging::SchemaStore;
use muster_core::messaging::Scope;

/// One finding: which question failed, where, and what to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which question: `discovery`, `messaging` or `delegation`.
    pub concern: String,
    /// The workflow file.
    pub file: String,
    /// The step (or `/input` for the workflow's input).
    pub step: String,
    /// What is wrong and what to change.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.step.starts_with('/') {
            self.step.clone()
        } else {
            format!("steps.{}", self.step)
        };
        write!(f, "{}: {at}: {}: {}", self.file, self.concern, self.message)
    }
}

/// Checks a workflow against the capabilities a cast declares and the schemas they name.
/// An empty result means the workflow answers all three questions structurally.
///
/// # Example
/// ```no_run
/// use muster_workflow::{check, Workflow};
/// use muster_core::{CapabilitySpec, SchemaStore};
///
/// let schemas = SchemaStore::new();
/// schemas.load_dir("schemas").unwrap();
/// let wf = Workflow::load("examples/code-review/workflow.toml".as_ref(), &schemas).unwrap();
/// let cast = vec![CapabilitySpec::new("code.write", "code-change", "code-result")];
/// for f in check(&wf, &cast, &schemas) {
///     println!("{f}");
/// }
/// ```
pub fn check(wf: &Workflow, cast: &[CapabilitySpec], schemas: &SchemaStore) -> Vec<Finding> {
    let mut c = Checker {
        wf,
        schemas,
        caps: cast.iter().map(|c| (c.name.as_str(), c)).collect(),
        findings: Vec::new(),
    };
    c.discovery();
    c.messaging();
    c.delegation();
    c.scopes();
    c.findings
}

struct Checker<'a> {
    wf: &'a Workflow,
    schemas: &'a SchemaStore,
    caps: HashMap<&'a str, &'a CapabilitySpec>,
    findings: Vec<Finding>,
}

/// How a transition leaves a step (for the loop and dead-end checks).
#[derive(Debug, Clone, Copy, PartialEq)]
enum EdgeKind {
    /// `next = "X"`.
    Plain,
    /// `next[i]`, bounded or not.
    Rule { index: usize, bounded: bool },
    /// `on_exhausted = "X"`.
    Exhausted,
    /// A parallel step to one of its branches.
    Branch,
    /// A gate's `on_approve` / `on_reject` (a human decides: never an unbounded loop).
    Gate,
}

struct Edge<'a> {
    from: &'a str,
    to: &'a str,
    kind: EdgeKind,
}

impl<'a> Checker<'a> {
    fn push(&mut self, concern: &str, step: &str, message: String) {
        self.findings.push(Finding {
            concern: concern.into(),
            file: self.wf.file.display().to_string(),
            step: step.into(),
            message,
        });
    }

    fn tasks(&self) -> impl Iterator<Item = (&'a str, &'a TaskStep)> {
        self.wf.steps.iter().filter_map(|(n, s)| match s {
            Step::Task(t) => Some((n.as_str(), t)),
            _ => None,
        })
    }

    // ---- scope -----------------------------------------------------------------------

    /// The written-out scope of a task step: its own, else its capability's default.
    fn fixed_scope(&self, step: &str) -> Option<Scope> {
        let ts = self.wf.task(step)?;
        match &ts.scope {
            Some(StepScope::Fixed(s)) => Some(s.clone()),
            Some(StepScope::Mapped(_)) => None,
            None => self
                .caps
                .get(ts.capability.as_str())
                .and_then(|c| c.scope.clone()),
        }
        .filter(|s| !s.write.is_empty())
    }

    /// Whether the file says `on_conflict = "wait"` for the step (it accepts waiting).
    fn accepts_waiting(&self, step: &str) -> bool {
        self.wf.document["steps"][step]["on_conflict"].as_str() == Some("wait")
    }

    fn scopes(&mut self) {
        let mut found = Vec::new();
        for (name, step) in &self.wf.steps {
            let Step::Parallel { branches, .. } = step else {
                continue;
            };
            for (i, a) in branches.iter().enumerate() {
                for b in &branches[i + 1..] {
                    if self.accepts_waiting(a) || self.accepts_waiting(b) {
                        continue;
                    }
                    let (Some(sa), Some(sb)) = (self.fixed_scope(a), self.fixed_scope(b)) else {
                        continue;
                    };
                    if let Some(o) = sa.conflict_with(&sb).or_else(|| sb.conflict_with(&sa)) {
                        found.push((
                            name.clone(),
                            format!(
                                "branches `{a}` and `{b}` run at once and their scopes overlap: \
                                 `{a}`'s {o}; two tasks would write `{}` at the same time. Fix: \
                                 serialise them (make one a step after the join), narrow the \
                                 scopes so they are disjoint, or accept that one waits for the \
                                 other at run time (on_conflict = \"wait\" on either branch)",
                                o.example
                            ),
                        ));
                    }
                }
            }
        }
        if self.wf.concurrent {
            for (name, _) in self.tasks() {
                if self.accepts_waiting(name) {
                    continue;
                }
                if let Some(s) = self.fixed_scope(name) {
                    if let Some(o) = s.conflict_with(&s) {
                        found.push((
                            name.to_string(),
                            format!(
                                "the workflow declares `concurrent = true` and this step's \
                                 write scope is the same in every run: two runs would write \
                                 `{}` at once ({o}). Fix: render the scope from the input \
                                 (scope = \"CEL mapping\") so runs touch different paths, or \
                                 accept that runs wait for each other (on_conflict = \"wait\")",
                                o.example
                            ),
                        ));
                    }
                }
            }
        }
        for (step, message) in found {
            self.push("scope", &step, message);
        }
    }

    // ---- discovery -------------------------------------------------------------------

    fn discovery(&mut self) {
        let mut declared: Vec<&str> = self.caps.keys().copied().collect();
        declared.sort();
        let missing: Vec<(&str, &str)> = self
            .tasks()
            .filter(|(_, t)| !self.caps.contains_key(t.capability.as_str()))
            .map(|(n, t)| (n, t.capability.as_str()))
            .collect();
        for (step, cap) in missing {
            let known = if declared.is_empty() {
                "the cast declares none".to_string()
            } else {
                format!("declared: {}", listed(declared.iter().copied()))
            };
            self.push(
                "discovery",
                step,
                format!(
                    "no agent in the cast declares capability `{cap}` ({known}); add a manifest \
                     to the actors directory that declares it, or fix the capability name"
                ),
            );
        }
    }

    // ---- messaging -------------------------------------------------------------------

    fn messaging(&mut self) {
        if self.wf.input.is_empty() {
            self.push(
                "messaging",
                "/input",
                "the workflow has no input schema, so the run input crosses unvalidated; \
                 set `input = \"NAME\"` (schemas/NAME.schema.json)"
                    .into(),
            );
        } else if !self.schemas.contains(&self.wf.input) {
            let i = self.wf.input.clone();
            self.push(
                "messaging",
                "/input",
                format!("the input schema `{i}` is not loaded; add schemas/{i}.schema.json"),
            );
        }
        let tasks: Vec<(&str, &TaskStep)> = self.tasks().collect();
        for (name, ts) in &tasks {
            let Some(cap) = self.caps.get(ts.capability.as_str()).copied() else {
                continue;
            };
            for (which, schema) in [("input", &cap.input), ("output", &cap.output)] {
                if !self.schemas.contains(schema) {
                    self.push(
                        "messaging",
                        name,
                        format!(
                            "capability `{}` names {which} schema `{schema}`, which is not \
                             loaded; add schemas/{schema}.schema.json",
                            cap.name
                        ),
                    );
                }
            }
        }
        for (name, ts) in &tasks {
            if let Some(map) = &ts.input {
                self.references(name, "input", map.source());
            }
            self.mapping_fits(name, ts);
        }
        let rule_steps: Vec<(&str, &Next)> = self
            .wf
            .steps
            .iter()
            .filter_map(|(n, s)| match s {
                Step::Task(TaskStep { next: Some(n2), .. }) => Some((n.as_str(), n2)),
                Step::Parallel { next: Some(n2), .. } => Some((n.as_str(), n2)),
                _ => None,
            })
            .collect();
        for (name, next) in rule_steps {
            if let Next::Rules(rules) = next {
                for (i, r) in rules.iter().enumerate() {
                    if let Some(w) = &r.when {
                        self.references(name, &format!("next[{i}].when"), w.source());
                    }
                }
            }
        }
    }

    /// Checks every `steps.X...` and `run.input...` selection in one expression.
    fn references(&mut self, step: &str, field: &str, source: &str) {
        for chain in member_chains(source) {
            match chain.first().map(String::as_str) {
                Some("steps") => {
                    let Some(target) = chain.get(1) else { continue };
                    let Some(target_step) = self.wf.steps.get(target) else {
                        let known = listed(self.wf.steps.keys().map(String::as_str));
                        self.push(
                            "messaging",
                            step,
                            format!(
                                "{field} reads `steps.{target}`, but there is no step `{target}` \
                                 (steps: {known}); fix the name"
                            ),
                        );
                        continue;
                    };
                    let Some(part) = chain.get(2) else { continue };
                    match part.as_str() {
                        "output" => {}
                        "attempts" | "error" | "agent" => continue,
                        other => {
                            self.push(
                                "messaging",
                                step,
                                format!(
                                    "{field} reads `steps.{target}.{other}`; a step record has \
                                     `output`, `attempts`, `error` and `agent`: did you mean \
                                     `steps.{target}.output.{other}`?"
                                ),
                            );
                            continue;
                        }
                    }
                    let path = &chain[3..];
                    if path.is_empty() {
                        continue;
                    }
                    let Step::Task(ts) = target_step else {
                        self.push(
                            "messaging",
                            step,
                            format!(
                                "{field} reads `steps.{target}.output`, but `{target}` is not a \
                                 task step and has no output"
                            ),
                        );
                        continue;
                    };
                    let Some(cap) = self.caps.get(ts.capability.as_str()).copied() else {
                        continue; // reported by discovery
                    };
                    let what = format!(
                        "schema `{}` (the output of `{}`, step `{target}`)",
                        cap.output, cap.name
                    );
                    let expr = format!("steps.{target}.output.{}", path.join("."));
                    self.field_exists(step, field, &expr, &cap.output, path, &what);
                }
                Some("run") => {
                    if chain.get(1).map(String::as_str) != Some("input") {
                        continue;
                    }
                    let path = &chain[2..];
                    if path.is_empty() || self.wf.input.is_empty() {
                        continue;
                    }
                    let input = self.wf.input.clone();
                    let what = format!("schema `{input}` (the workflow input)");
                    let expr = format!("run.input.{}", path.join("."));
                    self.field_exists(step, field, &expr, &input, path, &what);
                }
                _ => {}
            }
        }
    }

    fn field_exists(
        &mut self,
        step: &str,
        field: &str,
        expr: &str,
        schema: &str,
        path: &[String],
        what: &str,
    ) {
        let Ok(s) = self.schemas.get(schema) else {
            return; // reported above
        };
        let r = Resolver {
            schemas: self.schemas,
        };
        if let Walk::Missing { at, known } = r.walk(&s.document, &s.document, path, 0) {
            let known = if known.is_empty() {
                String::new()
            } else {
                format!(" (it has: {})", listed(known.iter().map(String::as_str)))
            };
            self.push(
                "messaging",
                step,
                format!(
                    "{field} reads `{expr}`, but {what} has no field `{at}`{known}; fix the \
                     reference or add the field to the schema"
                ),
            );
        }
    }

    /// Whether the value a step's input mapping builds fits the capability's input schema.
    fn mapping_fits(&mut self, name: &str, ts: &TaskStep) {
        let Some(cap) = self.caps.get(ts.capability.as_str()).copied() else {
            return;
        };
        let Ok(target) = self.schemas.get(&cap.input) else {
            return;
        };
        let r = Resolver {
            schemas: self.schemas,
        };
        let Some(shape) = r.object_shape(&target.document, &target.document) else {
            return;
        };
        let source = ts.input.as_ref().map(|c| c.source().trim().to_string());
        match source.as_deref() {
            None | Some("run.input") => {
                if self.wf.input.is_empty() || self.wf.input == cap.input {
                    return;
                }
                let Ok(from) = self.schemas.get(&self.wf.input) else {
                    return;
                };
                let Some(from_shape) = r.object_shape(&from.document, &from.document) else {
                    return;
                };
                let what = format!("the run input (schema `{}`)", self.wf.input);
                self.shapes_fit(name, cap, &shape, &from_shape, &what);
            }
            Some(src) => {
                let Some(keys) = map_literal_keys(src) else {
                    return;
                };
                let missing: Vec<&String> = shape
                    .required
                    .iter()
                    .filter(|k| !keys.contains(*k))
                    .collect();
                if !missing.is_empty() {
                    let list: Vec<String> = missing.iter().map(|k| format!("'{k}'")).collect();
                    self.push(
                        "messaging",
                        name,
                        format!(
                            "input builds a map without {} required by schema `{}` (the input \
                             of `{}`); add {} to the mapping",
                            list.join(", "),
                            cap.input,
                            cap.name,
                            if missing.len() == 1 { "it" } else { "them" }
                        ),
                    );
                }
                if shape.closed {
                    let extra: Vec<&String> = keys
                        .iter()
                        .filter(|k| !shape.properties.contains(*k))
                        .collect();
                    for k in extra {
                        self.push(
                            "messaging",
                            name,
                            format!(
                                "input sets '{k}', which schema `{}` (the input of `{}`) forbids \
                                 (additionalProperties: false; it allows: {}); remove it or add \
                                 it to the schema",
                                cap.input,
                                cap.name,
                                listed(shape.properties.iter().map(String::as_str))
                            ),
                        );
                    }
                }
            }
        }
    }

    fn shapes_fit(
        &mut self,
        name: &str,
        cap: &CapabilitySpec,
        to: &Shape,
        from: &Shape,
        what: &str,
    ) {
        let missing: Vec<&String> = to
            .required
            .iter()
            .filter(|k| !from.required.contains(*k))
            .collect();
        let extra: Vec<&String> = if to.closed {
            from.properties
                .iter()
                .filter(|k| !to.properties.contains(*k))
                .collect()
        } else {
            Vec::new()
        };
        if missing.is_empty() && extra.is_empty() {
            return;
        }
        let mut why = Vec::new();
        if !missing.is_empty() {
            why.push(format!(
                "it does not always carry {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !extra.is_empty() {
            why.push(format!(
                "it may carry {}, which the schema forbids",
                extra
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        self.push(
            "messaging",
            name,
            format!(
                "has no input mapping, so it hands {what} to `{}`, whose input schema is `{}`: \
                 {}; write an `input` mapping that builds the capability's input",
                cap.name,
                cap.input,
                why.join("; ")
            ),
        );
    }

    // ---- delegation ------------------------------------------------------------------

    fn edges(&self) -> Vec<Edge<'a>> {
        let mut out = Vec::new();
        let wf = self.wf;
        let push_next = |from: &'a str, n: &'a Next, out: &mut Vec<Edge<'a>>| match n {
            Next::Step(s) => out.push(Edge {
                from,
                to: s,
                kind: EdgeKind::Plain,
            }),
            Next::Rules(rs) => {
                for (index, r) in rs.iter().enumerate() {
                    out.push(Edge {
                        from,
                        to: &r.goto,
                        kind: EdgeKind::Rule {
                            index,
                            bounded: r.max_visits.is_some(),
                        },
                    });
                }
            }
        };
        for (name, step) in &wf.steps {
            let from = name.as_str();
            match step {
                Step::Task(t) => {
                    if let Some(n) = &t.next {
                        push_next(from, n, &mut out);
                    }
                    if let Some(e) = t.on_exhausted.as_deref().filter(|e| *e != "fail") {
                        out.push(Edge {
                            from,
                            to: e,
                            kind: EdgeKind::Exhausted,
                        });
                    }
                }
                Step::Parallel { branches, next, .. } => {
                    for b in branches {
                        out.push(Edge {
                            from,
                            to: b,
                            kind: EdgeKind::Branch,
                        });
                    }
                    if let Some(n) = next {
                        push_next(from, n, &mut out);
                    }
                }
                Step::Gate {
                    on_approve,
                    on_reject,
                    ..
                } => {
                    for to in [on_approve, on_reject].into_iter().flatten() {
                        out.push(Edge {
                            from,
                            to,
                            kind: EdgeKind::Gate,
                        });
                    }
                }
                Step::Terminal { .. } => {}
            }
        }
        out.retain(|e| wf.steps.contains_key(e.to));
        out
    }

    fn delegation(&mut self) {
        let wf = self.wf;
        // Every task step: a time bound, an attempt budget, a failure route.
        let tasks: Vec<(&str, &TaskStep)> = self.tasks().collect();
        for (name, ts) in tasks {
            let mut missing = Vec::new();
            if ts.timeout.is_none() {
                missing.push("timeout = \"60s\"");
            }
            if ts.attempts.is_none() {
                missing.push("attempts = 3");
            }
            if ts.on_exhausted.is_none() {
                missing.push("on_exhausted = \"GATE\" (or \"fail\")");
            }
            if !missing.is_empty() {
                let what: Vec<&str> = missing
                    .iter()
                    .map(|m| m.split(' ').next().unwrap_or(m))
                    .collect();
                self.push(
                    "delegation",
                    name,
                    format!(
                        "has no {}: a failed or hung step would have no bounded owner and \
                         no declared route; add {}",
                        what.join(", no "),
                        missing.join(", ")
                    ),
                );
            }
        }
        let branches: HashMap<&str, Vec<&str>> = {
            let mut m: HashMap<&str, Vec<&str>> = HashMap::new();
            for (name, step) in &wf.steps {
                if let Step::Parallel { branches, .. } = step {
                    for b in branches {
                        m.entry(b.as_str()).or_default().push(name.as_str());
                    }
                }
            }
            m
        };
        // Steps that complete with nowhere to go.
        for (name, step) in &wf.steps {
            let no_next = match step {
                Step::Task(t) => t.next.is_none() && !branches.contains_key(name.as_str()),
                Step::Parallel { next, .. } => next.is_none(),
                _ => false,
            };
            if no_next {
                self.push(
                    "delegation",
                    name,
                    "is a dead end: it has no `next`, so when it completes the run fails with \
                     \"no next step\"; add next = \"STEP\" (e.g. a `terminal = \"done\"` step)"
                        .into(),
                );
            }
            if let Step::Parallel {
                branches: bs,
                optional,
                ..
            } = step
            {
                let branch_set: HashSet<&String> = bs.iter().collect();
                for o in optional {
                    if !branch_set.contains(o) {
                        self.push(
                            "delegation",
                            name,
                            format!(
                                "marks `{o}` optional, but it is not one of its branches; \
                                 remove it or add it to `parallel`"
                            ),
                        );
                    }
                }
            }
            let rules = match step {
                Step::Task(TaskStep {
                    next: Some(Next::Rules(r)),
                    ..
                })
                | Step::Parallel {
                    next: Some(Next::Rules(r)),
                    ..
                } => r,
                _ => continue,
            };
            let has_way_out = rules
                .iter()
                .any(|r| r.when.is_none() && r.max_visits.is_none());
            if !has_way_out {
                self.push(
                    "delegation",
                    name,
                    "has no unconditional, unbounded rule: when no rule holds (or every bound \
                     is reached) the run fails with \"no transition applies\"; end `next` with \
                     { otherwise = true, goto = \"STEP\" } (a gate or a terminal step)"
                        .into(),
                );
            }
        }
        let edges = self.edges();
        let mut out: BTreeMap<&str, Vec<&Edge>> = BTreeMap::new();
        for e in &edges {
            out.entry(e.from).or_default().push(e);
        }
        // Reachability from `start`.
        let mut reached: HashSet<&str> = HashSet::new();
        let mut stack = vec![wf.start.as_str()];
        while let Some(s) = stack.pop() {
            if reached.insert(s) {
                for e in out.get(s).into_iter().flatten() {
                    stack.push(e.to);
                }
            }
        }
        for name in wf.steps.keys() {
            if !reached.contains(name.as_str()) {
                self.push(
                    "delegation",
                    name,
                    format!(
                        "is unreachable: no transition from `{}` leads to it; route a `next`, \
                         `on_exhausted` or gate to it, or remove it",
                        wf.start
                    ),
                );
            }
        }
        // Unbounded loops: cycles left after removing bounded rules and gate routes.
        self.loops(&edges);
        // Every step a run can stand at can reach an end: a terminal, or a gate that ends
        // the run.
        self.endings();
    }

    /// Reports every step a run can reach from `start` and then never finish from: no
    /// move of the run leads from it to a terminal step or to a gate that ends the run.
    /// The moves are the engine's: a task step goes to its `next` or, spent, to its
    /// `on_exhausted`; a parallel step to its `next` or, when a required branch is spent,
    /// to that branch's `on_exhausted` (inside a join a branch's own `next` is not
    /// followed, and an optional branch that fails does not fail it); a gate to its
    /// routes. Linear in the steps and moves: one walk forward from `start`, one walk
    /// back from the ends.
    fn endings(&mut self) {
        let wf = self.wf;
        let exhausted = |t: &'a TaskStep| t.on_exhausted.as_deref().filter(|e| *e != "fail");
        let mut forward: HashMap<&str, Vec<&str>> = HashMap::with_capacity(wf.steps.len());
        let mut back: HashMap<&str, Vec<&str>> = HashMap::with_capacity(wf.steps.len());
        let mut ends: Vec<&str> = Vec::new();
        for (name, step) in &wf.steps {
            let from = name.as_str();
            let mut to: Vec<&str> = Vec::new();
            let next_targets = |n: &'a Next, to: &mut Vec<&'a str>| match n {
                Next::Step(s) => to.push(s),
                Next::Rules(rs) => to.extend(rs.iter().map(|r| r.goto.as_str())),
            };
            match step {
                Step::Task(t) => {
                    if let Some(n) = &t.next {
                        next_targets(n, &mut to);
                    }
                    to.extend(exhausted(t));
                }
                Step::Parallel {
                    branches,
                    optional,
                    next,
                } => {
                    if let Some(n) = next {
                        next_targets(n, &mut to);
                    }
                    let optional: HashSet<&str> = optional.iter().map(String::as_str).collect();
                    for b in branches {
                        if optional.contains(b.as_str()) {
                            continue;
                        }
                        if let Some(Step::Task(bt)) = wf.steps.get(b) {
                            to.extend(exhausted(bt));
                        }
                    }
                }
                Step::Gate {
                    on_approve,
                    on_reject,
                    ..
                } => {
                    if on_approve.is_none() || on_reject.is_none() {
                        ends.push(from);
                    }
                    to.extend(on_approve.as_deref());
                    to.extend(on_reject.as_deref());
                }
                Step::Terminal { .. } => ends.push(from),
            }
            to.retain(|t| wf.steps.contains_key(*t));
            for t in &to {
                back.entry(t).or_default().push(from);
            }
            forward.insert(from, to);
        }
        let mut can_end: HashSet<&str> = ends.iter().copied().collect();
        let mut stack = ends;
        while let Some(s) = stack.pop() {
            for &p in back.get(s).into_iter().flatten() {
                if can_end.insert(p) {
                    stack.push(p);
                }
            }
        }
        let mut at: HashSet<&str> = HashSet::new();
        let mut stack = vec![wf.start.as_str()];
        while let Some(s) = stack.pop() {
            if at.insert(s) {
                stack.extend(forward.get(s).into_iter().flatten().copied());
            }
        }
        for name in wf.steps.keys() {
            let n = name.as_str();
            if !at.contains(n) || can_end.contains(n) {
                continue;
            }
            let message = if matches!(wf.steps.get(name), Some(Step::Gate { .. })) {
                "every route of this gate leads to steps from which no path reaches a \
                 terminal step, so a run that gets here can never finish; route \
                 `on_approve` or `on_reject` to a `terminal` step (or leave one out: the \
                 run then ends there)"
            } else {
                "no path from it leads to a terminal step or to a gate that ends the run, \
                 so a run that gets here can never finish; route it (through `next` or \
                 `on_exhausted`) to a `terminal` step"
            };
            self.push("delegation", n, message.into());
        }
    }

    /// Reports every back-edge (depth-first) of the graph without bounded rules and gate
    /// routes: each closes a loop that nothing bounds.
    fn loops(&mut self, edges: &[Edge<'a>]) {
        let wf = self.wf;
        let mut out: BTreeMap<&str, Vec<&Edge>> = BTreeMap::new();
        for e in edges {
            let bounded = matches!(
                e.kind,
                EdgeKind::Gate | EdgeKind::Rule { bounded: true, .. }
            );
            if !bounded {
                out.entry(e.from).or_default().push(e);
            }
        }
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut mark: HashMap<&str, Mark> =
            wf.steps.keys().map(|k| (k.as_str(), Mark::New)).collect();
        let mut back: Vec<(&str, &str, EdgeKind)> = Vec::new();
        let roots = std::iter::once(wf.start.as_str()).chain(wf.steps.keys().map(String::as_str));
        for root in roots {
            if mark.get(root) != Some(&Mark::New) {
                continue;
            }
            // Iterative DFS: (node, index of the next edge to follow).
            let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
            mark.insert(root, Mark::Open);
            while let Some((node, i)) = stack.pop() {
                let es = out.get(node).map(Vec::as_slice).unwrap_or(&[]);
                if let Some(e) = es.get(i) {
                    stack.push((node, i + 1));
                    match mark.get(e.to).copied().unwrap_or(Mark::Done) {
                        Mark::New => {
                            mark.insert(e.to, Mark::Open);
                            stack.push((e.to, 0));
                        }
                        Mark::Open => back.push((e.from, e.to, e.kind)),
                        Mark::Done => {}
                    }
                } else {
                    mark.insert(node, Mark::Done);
                }
            }
        }
        for (from, to, kind) in back {
            let message = match kind {
                EdgeKind::Rule { index, .. } => format!(
                    "next[{index}] goes back to `{to}`, which leads here again, and nothing \
                     bounds the loop; add max_visits = N to that rule (and a later rule as the \
                     way out, e.g. {{ otherwise = true, goto = \"GATE\" }})"
                ),
                EdgeKind::Plain => format!(
                    "next = \"{to}\" leads back here, and nothing bounds the loop; make `next` \
                     a list of rules with max_visits = N on the rule that loops"
                ),
                EdgeKind::Exhausted => format!(
                    "on_exhausted = \"{to}\" leads back here, so an exhausted step is retried \
                     without bound; route it to a gate or to \"fail\""
                ),
                EdgeKind::Branch | EdgeKind::Gate => format!(
                    "the transition to `{to}` leads back here, and nothing bounds the loop; \
                     add max_visits = N to a rule on it"
                ),
            };
            self.push("delegation", from, message);
        }
    }
}

/// Names for a message: the first few, then how many there are in all, so that a
/// finding's length does not grow with the workflow or the schema.
fn listed<'s>(names: impl ExactSizeIterator<Item = &'s str>) -> String {
    const SHOWN: usize = 12;
    let total = names.len();
    let shown: Vec<&str> = names.take(SHOWN).collect();
    if total > SHOWN {
        format!("{}, … ({total} in all)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

// ---- schemas -------------------------------------------------------------------------

enum Walk {
    Found,
    /// The schema says nothing either way (an open object, `true`...).
    Unknown,
    Missing {
        at: String,
        known: Vec<String>,
    },
}

/// The object a schema describes: its declared and required properties.
struct Shape {
    properties: BTreeSet<String>,
    required: BTreeSet<String>,
    closed: bool,
}

struct Resolver<'s> {
    schemas: &'s SchemaStore,
}

impl Resolver<'_> {
    /// Follows `$ref`s (by file name `NAME.schema.json`, with an optional `#/pointer`, or a
    /// local `#/pointer`); returns the node and the document it lives in.
    fn deref(&self, node: &Value, base: &Value) -> (Value, Value) {
        let mut node = node.clone();
        let mut base = base.clone();
        for _ in 0..16 {
            let Some(r) = node.get("$ref").and_then(Value::as_str).map(str::to_string) else {
                break;
            };
            let (file, pointer) = r.split_once('#').unwrap_or((r.as_str(), ""));
            if !file.is_empty() {
                let name = file
                    .rsplit('/')
                    .next()
                    .unwrap_or(file)
                    .trim_end_matches(".json")
                    .trim_end_matches(".schema");
                match self.schemas.get(name) {
                    Ok(s) => base = s.document.clone(),
                    Err(_) => return (Value::Bool(true), base),
                }
            }
            let target = if pointer.is_empty() {
                Some(base.clone())
            } else {
                base.pointer(pointer).cloned()
            };
            match target {
                Some(t) => node = t,
                None => return (Value::Bool(true), base),
            }
        }
        (node, base)
    }

    fn walk(&self, node: &Value, base: &Value, path: &[String], depth: usize) -> Walk {
        let (node, base) = self.deref(node, base);
        let Some(seg) = path.first() else {
            return Walk::Found;
        };
        if depth > 32 || !node.is_object() {
            return Walk::Unknown;
        }
        if let Some(p) = node.get("properties").and_then(|p| p.get(seg)) {
            return self.walk(p, &base, &path[1..], depth + 1);
        }
        let mut first_missing = None;
        for key in ["anyOf", "oneOf", "allOf"] {
            for branch in node
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match self.walk(branch, &base, path, depth + 1) {
                    Walk::Missing { at, known } => {
                        first_missing.get_or_insert(Walk::Missing { at, known });
                    }
                    found => return found,
                }
            }
        }
        let props: Vec<String> = node
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        match node.get("additionalProperties") {
            Some(Value::Object(_)) => {
                let ap = node
                    .get("additionalProperties")
                    .cloned()
                    .unwrap_or_default();
                return self.walk(&ap, &base, &path[1..], depth + 1);
            }
            Some(Value::Bool(false)) => {
                return Walk::Missing {
                    at: seg.clone(),
                    known: props,
                }
            }
            _ => {}
        }
        if let Some(m) = first_missing {
            return m;
        }
        let is_array = node.get("items").is_some()
            || node.get("type").and_then(Value::as_str) == Some("array");
        if !props.is_empty() || is_array {
            // A declared shape without the field: reading it is a typo or a contract gap.
            return Walk::Missing {
                at: seg.clone(),
                known: props,
            };
        }
        Walk::Unknown
    }

    fn object_shape(&self, node: &Value, base: &Value) -> Option<Shape> {
        let (node, _) = self.deref(node, base);
        let props = node.get("properties").and_then(Value::as_object);
        let required = node.get("required").and_then(Value::as_array);
        if props.is_none() && required.is_none() {
            return None;
        }
        Some(Shape {
            properties: props
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default(),
            required: required
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            closed: node.get("additionalProperties") == Some(&Value::Bool(false)),
        })
    }
}

// ---- expressions ---------------------------------------------------------------------

/// Skips a string literal starting at `i` (a quote); returns the index after it.
fn skip_string(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let triple = b.len() >= i + 3 && b[i + 1] == q && b[i + 2] == q;
    let mut j = if triple { i + 3 } else { i + 1 };
    while j < b.len() {
        if b[j] == b'\\' {
            j += 2;
            continue;
        }
        if b[j] == q {
            if !triple {
                return j + 1;
            }
            if b.len() >= j + 3 && b[j + 1] == q && b[j + 2] == q {
                return j + 3;
            }
        }
        j += 1;
    }
    b.len()
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every member-selection chain rooted at an identifier (`steps.test.output.failed` →
/// `["steps", "test", "output", "failed"]`), outside string literals. A chain that ends in
/// a method call (`x.y.size()`) loses the method name.
fn member_chains(source: &str) -> Vec<Vec<String>> {
    let b = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut prev: u8 = b' ';
    while i < b.len() {
        let c = b[i];
        if c == b'\'' || c == b'"' {
            i = skip_string(b, i);
            prev = b'"';
            continue;
        }
        if is_ident_start(c) && !is_ident(prev) && prev != b'.' {
            let mut chain = Vec::new();
            let mut j = i;
            loop {
                let s = j;
                while j < b.len() && is_ident(b[j]) {
                    j += 1;
                }
                chain.push(source[s..j].to_string());
                if j + 1 < b.len() && b[j] == b'.' && is_ident_start(b[j + 1]) {
                    j += 1;
                } else {
                    break;
                }
            }
            let mut k = j;
            while k < b.len() && b[k].is_ascii_whitespace() {
                k += 1;
            }
            if k < b.len() && b[k] == b'(' {
                chain.pop();
            }
            if !chain.is_empty() {
                out.push(chain);
            }
            prev = b[j - 1];
            i = j;
            continue;
        }
        if !c.is_ascii_whitespace() {
            prev = c;
        }
        i += 1;
    }
    out
}

/// The top-level keys of an expression that is a map literal with string keys
/// (`{'spec': run.input.spec, 'round': 1}`); `None` for any other expression.
fn map_literal_keys(source: &str) -> Option<BTreeSet<String>> {
    let src = source.trim();
    let b = src.as_bytes();
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return None;
    }
    let mut keys = BTreeSet::new();
    let mut depth = 0usize;
    let mut expect_key = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\'' || c == b'"' {
            let end = skip_string(b, i);
            if depth == 1 && expect_key {
                let triple = end >= i + 6 && b[i + 1] == c && b[i + 2] == c;
                let (s, e) = if triple {
                    (i + 3, end - 3)
                } else {
                    (i + 1, end.saturating_sub(1))
                };
                keys.insert(src.get(s..e)?.to_string());
                expect_key = false;
            }
            i = end;
            continue;
        }
        match c {
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth == 1 {
                    expect_key = true;
                }
            }
            b'}' | b']' | b')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 && i + 1 != b.len() {
                    return None; // `{...} + x`: not one literal
                }
            }
            b',' if depth == 1 => expect_key = true,
            c if c.is_ascii_whitespace() => {}
            _ if depth == 1 && expect_key => return None, // a computed key
            _ => {}
        }
        i += 1;
    }
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_skip_strings_and_method_names() {
        let c = member_chains(
            "has(steps.test) ? steps.test.output.failures.size() : size(run.input.spec) + 'steps.x.y'",
        );
        let c: Vec<String> = c.iter().map(|v| v.join(".")).collect();
        assert_eq!(
            c,
            vec!["steps.test", "steps.test.output.failures", "run.input.spec"]
        );
    }

    #[test]
    fn map_literal_keys_are_the_top_level_ones() {
        let k =
            map_literal_keys("{'spec': run.input.spec, 'f': {'inner': 1}, \"w\": [1, 2]}").unwrap();
        assert_eq!(k.into_iter().collect::<Vec<_>>(), vec!["f", "spec", "w"]);
        assert!(map_literal_keys("{'a': 1} + x").is_none());
        assert!(map_literal_keys("run.input").is_none());
        assert!(map_literal_keys("{k: 1}").is_none());
    }
}
