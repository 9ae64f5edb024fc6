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
//! their source text, string literals skipped with the CEL lexer's own rules
//! ([`muster_core::conditions::string_literal_at`]), which is enough for the member
//! selections a mapping makes; computed accesses (`steps[name]`) are not followed.
//!
//! One file per concern, each an `impl Checker` block or the helpers it reads with:
//! `discovery`, `messaging` (references and mapping shapes), `delegation` (budgets, dead
//! ends, ways out), `reachability` (the transition graph: unreachable steps, unbounded
//! loops, runs that can never end), `scope` (concurrent writes); `schema` resolves what a
//! schema says of a field, `expr` reads member selections and map keys from expressions.

mod delegation;
mod discovery;
mod expr;
mod messaging;
mod reachability;
mod schema;
mod scope;

use std::collections::HashMap;

use serde::Serialize;

use super::definition::{Step, TaskStep, Workflow};
use muster_core::discovery::CapabilitySpec;
use muster_core::messaging::SchemaStore;

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

impl<'a> Checker<'a> {
    fn push(&mut self, concern: &str, step: &str, message: String) {
        self.findings.push(Finding {
            concern: concern.into(),
            file: self.wf.file.display().to_string(),
            step: step.into(),
            message,
        });
    }

    fn tasks(&self) -> impl Iterator<Item = (&'a str, &'a TaskStep)> + use<'a> {
        self.wf.steps.iter().filter_map(|(n, s)| match s {
            Step::Task(t) => Some((n.as_str(), t)),
            _ => None,
        })
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
