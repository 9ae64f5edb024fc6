//! Static checks of a workflow against a cast (`muster check`).

use serde::Serialize;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which question: discovery, messaging or delegation.
    pub concern: String,
    /// The step.
    pub step: String,
    /// What is wrong and what to change.
    pub message: String,
}

/// Checks a workflow (placeholder).
pub fn check() -> Vec<Finding> {
    Vec::new()
}
