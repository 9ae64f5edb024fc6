//! The verdict on an output: the one place that decides whether what an agent returned
//! satisfies its contract. A task's owner asks it of every result before accepting it (G3),
//! and [`route`](super::route) of every reply it hands back.
//!
//! It must not journal or act on its answer: its callers do (the owner fails the attempt
//! and reassigns, the router fails the delivery).

use serde_json::Value;

use crate::agents::Failure;
use crate::journal::check_payload;
use crate::messaging::{Capability, Scope};

/// Whether `output`, answering `input`, is accepted: within the journal's payload bound
/// (`limit`, when the output is journaled whole), valid against the contract's output
/// schema, true under its acceptance rule, and touching only what the write `scope`
/// allows (the field the contract names, `touched` by default). The first breach found is
/// the answer: [`Failure::ContractViolation`] for the schema or the scope,
/// [`Failure::Rejected`] for the size or the rule. `task` names the output in the size
/// breach.
pub fn verdict(
    task: impl std::fmt::Display,
    contract: Option<&Capability>,
    input: &Value,
    output: &Value,
    scope: Option<&Scope>,
    limit: Option<usize>,
) -> Result<(), Failure> {
    // An output larger than the journal's payload bound would be stored only in part (or
    // not at all): it is refused like any other contract breach.
    if let Some(limit) = limit {
        check_payload(task, output, limit).map_err(|e| Failure::Rejected(e.to_string()))?;
    }
    if let Some(c) = contract {
        c.output
            .validate(output)
            .map_err(Failure::ContractViolation)?;
        if let Some(rule) = &c.accept {
            match rule.accepts(input, output) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Failure::Rejected(format!(
                        "acceptance rule `{}` is false for this output",
                        rule.source()
                    )));
                }
                Err(e) => return Err(Failure::Rejected(e)),
            }
        }
    }
    if let Some(scope) = scope {
        let field = contract
            .and_then(|c| c.spec.touched.as_deref())
            .unwrap_or("touched");
        if let Some(touched) = output.get(field) {
            scope
                .check_touched(field, touched)
                .map_err(Failure::ContractViolation)?;
        }
    }
    Ok(())
}
