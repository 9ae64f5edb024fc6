//! One error a schema validator found, as contracts and their explanations report it.
//! It must not validate anything (that is `contract` and `explain`).

use serde::{Deserialize, Serialize};

/// One error found by a validator.
///
/// # Example
/// ```
/// use muster_core::messaging::SchemaViolation;
///
/// let v = SchemaViolation { instance_path: "/files/0".into(), schema_path: "/type".into(), message: "expected a string".into() };
/// assert_eq!(v.instance_path, "/files/0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaViolation {
    /// JSON pointer into the payload, e.g. `/files/0`.
    pub instance_path: String,
    /// JSON pointer into the schema, e.g. `/properties/files/type`.
    pub schema_path: String,
    /// What was expected.
    pub message: String,
}
