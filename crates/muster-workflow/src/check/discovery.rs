//! `muster check`'s discovery question: can every task step's capability be served by an
//! agent the cast declares?

use super::{Checker, listed};

impl<'a> Checker<'a> {
    pub(super) fn discovery(&mut self) {
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
}
