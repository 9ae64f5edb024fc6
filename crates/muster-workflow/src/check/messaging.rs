//! `muster check`'s messaging question: does every handoff have a schema, does every
//! field an input mapping or a transition reads exist in the schema that produces it, and
//! does every mapping build what the capability's input schema requires and allows?

use super::expr::{map_literal_keys, member_chains};
use super::schema::{Resolver, Shape, Walk};
use super::{Checker, listed};
use crate::definition::{Next, Step, TaskStep};
use muster_core::discovery::CapabilitySpec;

impl<'a> Checker<'a> {
    pub(super) fn messaging(&mut self) {
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
}
