//! `muster check`'s delegation question, step by step: does every task step have a
//! timeout, an attempt budget and a failure route, does every step that completes have
//! somewhere to go, and does every rule list have a way out? The questions about the
//! graph as a whole are [`super::reachability`]'s.

use std::collections::{HashMap, HashSet};

use super::Checker;
use crate::definition::{Next, Step, TaskStep};

impl<'a> Checker<'a> {
    pub(super) fn delegation(&mut self) {
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
        self.reachability();
    }
}
