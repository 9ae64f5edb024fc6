//! The verdict on an output: whether the owner accepts what an agent returned.

use serde_json::Value;

use crate::agents::Failure;
use crate::messaging::{Capability, Scope};

/// What the output reports it touched (the capability's `touched` field, `touched` by
/// default) must lie inside the task's write scope.
pub(super) fn check_touched(
    scope: &Scope,
    c: Option<&Capability>,
    output: &Value,
) -> Result<(), Failure> {
    let field = c
        .and_then(|c| c.spec.touched.as_deref())
        .unwrap_or("touched");
    match output.get(field) {
        Some(touched) => scope
            .check_touched(field, touched)
            .map_err(Failure::ContractViolation),
        None => Ok(()),
    }
}

/// The output must satisfy the output schema and the acceptance rule.
pub(super) fn check_output(c: &Capability, input: &Value, output: &Value) -> Result<(), Failure> {
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
                )))
            }
            Err(e) => return Err(Failure::Rejected(e)),
        }
    }
    Ok(())
}
