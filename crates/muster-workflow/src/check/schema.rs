//! What a JSON Schema says of a field path or of an object's keys, for `muster check`:
//! follows `$ref`s across the loaded schemas and `anyOf`/`oneOf`/`allOf` branches.

use std::collections::BTreeSet;

use serde_json::Value;

use muster_core::messaging::SchemaStore;

/// What a schema says of a field path.
pub(super) enum Walk {
    /// The schema declares the field.
    Found,
    /// The schema says nothing either way (an open object, `true`...).
    Unknown,
    /// The schema describes the object and the field `at` is not in it (`known` are).
    Missing {
        /// The first segment the schema lacks.
        at: String,
        /// The properties it has there.
        known: Vec<String>,
    },
}

/// The object a schema describes: its declared and required properties.
pub(super) struct Shape {
    pub(super) properties: BTreeSet<String>,
    pub(super) required: BTreeSet<String>,
    /// `additionalProperties: false`.
    pub(super) closed: bool,
}

/// Reads schemas of one store, following `$ref`s between them.
pub(super) struct Resolver<'s> {
    pub(super) schemas: &'s SchemaStore,
}

impl Resolver<'_> {
    /// Follows `$ref`s (by file name `NAME.schema.json`, with an optional `#/pointer`, or a
    /// local `#/pointer`); returns the node and the document it lives in.
    fn deref(&self, node: &Value, base: &Value) -> (Value, Value) {
        let mut node = node.clone();
        let mut base = base.clone();
        for _ in 0..16 {
            let Some(r) = node.get("$ref").and_then(Value::as_str).map(str::to_string) else {
                break;
            };
            let (file, pointer) = r.split_once('#').unwrap_or((r.as_str(), ""));
            if !file.is_empty() {
                let name = file
                    .rsplit('/')
                    .next()
                    .unwrap_or(file)
                    .trim_end_matches(".json")
                    .trim_end_matches(".schema");
                match self.schemas.get(name) {
                    Ok(s) => base = s.document.clone(),
                    Err(_) => return (Value::Bool(true), base),
                }
            }
            let target = if pointer.is_empty() {
                Some(base.clone())
            } else {
                base.pointer(pointer).cloned()
            };
            match target {
                Some(t) => node = t,
                None => return (Value::Bool(true), base),
            }
        }
        (node, base)
    }

    /// What the schema `node` (in the document `base`) says of `path`.
    pub(super) fn walk(&self, node: &Value, base: &Value, path: &[String], depth: usize) -> Walk {
        let (node, base) = self.deref(node, base);
        let Some(seg) = path.first() else {
            return Walk::Found;
        };
        if depth > 32 || !node.is_object() {
            return Walk::Unknown;
        }
        if let Some(p) = node.get("properties").and_then(|p| p.get(seg)) {
            return self.walk(p, &base, &path[1..], depth + 1);
        }
        let mut first_missing = None;
        for key in ["anyOf", "oneOf", "allOf"] {
            for branch in node
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match self.walk(branch, &base, path, depth + 1) {
                    Walk::Missing { at, known } => {
                        first_missing.get_or_insert(Walk::Missing { at, known });
                    }
                    found => return found,
                }
            }
        }
        let props: Vec<String> = node
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        match node.get("additionalProperties") {
            Some(Value::Object(_)) => {
                let ap = node
                    .get("additionalProperties")
                    .cloned()
                    .unwrap_or_default();
                return self.walk(&ap, &base, &path[1..], depth + 1);
            }
            Some(Value::Bool(false)) => {
                return Walk::Missing {
                    at: seg.clone(),
                    known: props,
                };
            }
            _ => {}
        }
        if let Some(m) = first_missing {
            return m;
        }
        let is_array = node.get("items").is_some()
            || node.get("type").and_then(Value::as_str) == Some("array");
        if !props.is_empty() || is_array {
            // A declared shape without the field: reading it is a typo or a contract gap.
            return Walk::Missing {
                at: seg.clone(),
                known: props,
            };
        }
        Walk::Unknown
    }

    /// The object `node` describes, if it declares properties or required keys.
    pub(super) fn object_shape(&self, node: &Value, base: &Value) -> Option<Shape> {
        let (node, _) = self.deref(node, base);
        let props = node.get("properties").and_then(Value::as_object);
        let required = node.get("required").and_then(Value::as_array);
        if props.is_none() && required.is_none() {
            return None;
        }
        Some(Shape {
            properties: props
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default(),
            required: required
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            closed: node.get("additionalProperties") == Some(&Value::Bool(false)),
        })
    }
}
