//! `muster check`'s questions about the transition graph: is every step reachable from
//! `start`, is every loop bounded (by `max_visits`; a gate is no bound), can a run that
//! reaches a step always still end, and does some path reach a success?

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Checker;
use crate::definition::{Next, Step, TaskStep};

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
    /// A gate's `on_approve` / `on_reject` (a human decides, but a loop through a gate
    /// still needs a bound).
    Gate,
}

struct Edge<'a> {
    from: &'a str,
    to: &'a str,
    kind: EdgeKind,
}

impl<'a> Checker<'a> {
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

    /// Unreachable steps, unbounded loops and steps a run can never end from.
    pub(super) fn reachability(&mut self) {
        let wf = self.wf;
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
        // Unbounded loops: cycles left after removing bounded rules.
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
        let successes: Vec<&str> = wf
            .steps
            .iter()
            .filter(|(_, s)| {
                matches!(
                    s,
                    Step::Terminal { success: true }
                        | Step::Gate {
                            on_approve: None,
                            ..
                        }
                )
            })
            .map(|(n, _)| n.as_str())
            .collect();
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
        if !successes.iter().any(|s| at.contains(s)) {
            self.push(
                "delegation",
                &wf.start,
                "no path reaches a success terminal: every way a run can go from here ends \
                 in a `fail` terminal, a gate's rejection, or loops back; route some step \
                 to a `terminal = \"done\"` step (or leave a gate's `on_approve` out: an \
                 approval then completes the run)"
                    .into(),
            );
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

    /// Reports every back-edge (depth-first) of the graph without bounded rules: each
    /// closes a loop that nothing bounds (a gate's route is no bound).
    fn loops(&mut self, edges: &[Edge<'a>]) {
        let wf = self.wf;
        let mut out: BTreeMap<&str, Vec<&Edge>> = BTreeMap::new();
        for e in edges {
            // A gate bounds nothing: each approval (or rejection) can send the run round
            // the loop again, so a cycle through a gate needs a bound like any other.
            let bounded = matches!(e.kind, EdgeKind::Rule { bounded: true, .. });
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
                EdgeKind::Gate => format!(
                    "the gate's route to `{to}` leads back here, and nothing bounds the loop: \
                     a gate does not (every decision can send the run round again); add \
                     max_visits = N to a rule on the loop (and a later rule as the way out)"
                ),
                EdgeKind::Branch => format!(
                    "the transition to `{to}` leads back here, and nothing bounds the loop; \
                     add max_visits = N to a rule on it"
                ),
            };
            self.push("delegation", from, message);
        }
    }
}
