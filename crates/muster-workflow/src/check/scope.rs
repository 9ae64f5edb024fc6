//! `muster check`'s scope question: can two branches of a parallel step, or two runs of a
//! `concurrent` workflow, write the same thing at once? Only written-out scopes are
//! compared; a branch that says `on_conflict = "wait"` accepts waiting.

use super::Checker;
use crate::definition::{Step, StepScope};
use muster_core::messaging::Scope;

impl<'a> Checker<'a> {
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

    pub(super) fn scopes(&mut self) {
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
                if let Some(s) = self.fixed_scope(name)
                    && let Some(o) = s.conflict_with(&s)
                {
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
        for (step, message) in found {
            self.push("scope", &step, message);
        }
    }
}
