//! Schema violations named at their root.
//!
//! A JSON Schema validator answers a value that matches none of a `oneOf`/`anyOf`
//! with the whole value and "is not valid under any of the schemas listed": it cannot know
//! which branch was meant. The file formats muster owns are tagged (`kind = "command"`)
//! or told apart by type (a step name or a list of branches), so the branch meant can be
//! found, and its own errors reported: the unknown field with what the branch accepts and
//! a `did you mean`, the wrong value with the types or forms accepted.

use jsonschema::ValidationError;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

use super::violation::SchemaViolation;
use crate::util::{bounded_json, bounded_message, bounded_text};

/// The closest of `candidates` to `name`, if one is close enough to be a likely typo
/// (at most two edits, and fewer edits than the name has characters).
///
/// # Example
/// ```
/// use muster_core::messaging::did_you_mean;
/// assert_eq!(did_you_mean("programm", ["program", "args"]), Some("program".to_string()));
/// assert_eq!(did_you_mean("zzz", ["program", "args"]), None);
/// ```
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2 && *d < name.chars().count().max(c.chars().count()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// The `; did you mean ...?` suffix of a message, or nothing.
fn suggestion<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(name, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// Follows local `$ref`s (`#/$defs/x`) from `node` within `root`.
fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..32 {
        match node.get("$ref").and_then(Value::as_str) {
            Some(r) if r.starts_with('#') => match root.pointer(&r[1..]) {
                Some(n) => node = n,
                None => return node,
            },
            _ => return node,
        }
    }
    node
}

/// The property every object branch pins with a `const` (`kind`), if there is one.
fn discriminator<'a>(branches: &[&'a Value]) -> Option<&'a str> {
    let first = branches.first()?.get("properties")?.as_object()?;
    first
        .iter()
        .filter(|(_, v)| v.get("const").is_some_and(Value::is_string))
        .map(|(k, _)| k.as_str())
        .find(|k| {
            branches.iter().all(|b| {
                b.get("properties")
                    .and_then(|p| p.get(*k))
                    .and_then(|p| p.get("const"))
                    .is_some_and(Value::is_string)
            })
        })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a branch could take a value of this JSON type (by its `type`, `const`, `enum`).
fn accepts_type(root: &Value, branch: &Value, v: &Value) -> bool {
    let b = resolve(root, branch);
    let t = json_type(v);
    let ok = |name: &str| name == t || (name == "number" && t == "integer");
    if let Some(ty) = b.get("type") {
        return match ty {
            Value::String(s) => ok(s),
            Value::Array(a) => a.iter().filter_map(Value::as_str).any(ok),
            _ => true,
        };
    }
    if let Some(c) = b.get("const") {
        return json_type(c) == t;
    }
    if let Some(Value::Array(options)) = b.get("enum") {
        return options.iter().any(|o| json_type(o) == t);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(alts)) = b.get(key) {
            return alts.iter().any(|a| accepts_type(root, a, v));
        }
    }
    true
}

fn article(t: &str) -> &'static str {
    match t {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean (true or false)",
        "array" => "an array",
        "object" => "a table",
        "null" => "null",
        _ => "a value",
    }
}

/// A short description of one accepted form, for "expected ... or ...".
fn describe(root: &Value, branch: &Value) -> String {
    let name = branch
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next());
    let b = resolve(root, branch);
    if let Some(c) = b.get("const") {
        return c.to_string();
    }
    if let Some(Value::Array(options)) = b.get("enum") {
        let list: Vec<String> = options.iter().map(Value::to_string).collect();
        return format!("one of {}", list.join(", "));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(alts)) = b.get(key) {
            return alts
                .iter()
                .map(|a| describe(root, a))
                .collect::<Vec<_>>()
                .join(" or ");
        }
    }
    let ty = b.get("type").and_then(Value::as_str).unwrap_or("");
    let what = match ty {
        "object" => match b.get("required").and_then(Value::as_array) {
            Some(r) if !r.is_empty() => format!(
                "a table with {}",
                r.iter()
                    .filter_map(Value::as_str)
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "a table".to_string(),
        },
        "string" if name == Some("duration") => "a duration string like \"250ms\"".to_string(),
        other => article(other).to_string(),
    };
    match name {
        Some(n) if ty != "object" && n != "duration" => format!("{what} ({})", n.replace('_', " ")),
        _ => what,
    }
}

/// Every field a schema node accepts, in the order written.
fn accepted(root: &Value, node: &Value) -> Vec<String> {
    resolve(root, node)
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn join_pointer(base: &str, key: &str) -> String {
    format!("{base}/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// One violation, explained; `context` says which branch it is in (`kind = "command"`).
fn explain(
    root: &Value,
    instance: &Value,
    e: &ValidationError<'_>,
    context: &str,
    out: &mut Vec<SchemaViolation>,
) {
    let at = e.instance_path().to_string();
    let schema_path = e.schema_path().to_string();
    let push = |out: &mut Vec<SchemaViolation>, at: String, message: String| {
        out.push(SchemaViolation {
            instance_path: at,
            schema_path: schema_path.clone(),
            message,
        })
    };
    let here = instance.pointer(&at);
    match e.kind() {
        ValidationErrorKind::OneOfNotValid {
            context: branches_errors,
        }
        | ValidationErrorKind::AnyOf {
            context: branches_errors,
        } => {
            let Some(Value::Array(alts)) = root.pointer(&schema_path) else {
                return push(out, at, said(e));
            };
            let Some(value) = here else {
                return push(out, at, said(e));
            };
            let branches: Vec<&Value> = alts.iter().map(|a| resolve(root, a)).collect();
            if let Some(tag) = discriminator(&branches) {
                let names: Vec<&str> = branches
                    .iter()
                    .filter_map(|b| b["properties"][tag]["const"].as_str())
                    .collect();
                let list = names.join(", ");
                let Value::Object(map) = value else {
                    return push(
                        out,
                        at,
                        format!(
                            "expected a table with `{tag}` = one of: {list}; got {}{}",
                            bounded_json(value),
                            in_context(context)
                        ),
                    );
                };
                match map.get(tag) {
                    None => push(
                        out,
                        join_pointer(&at, tag),
                        format!("missing `{tag}`; expected one of: {list}"),
                    ),
                    Some(Value::String(given)) => match names.iter().position(|n| n == given) {
                        Some(i) => {
                            let ctx = format!("{tag} = \"{given}\"");
                            for inner in branches_errors.get(i).into_iter().flatten() {
                                explain(root, instance, inner, &ctx, out);
                            }
                        }
                        None => push(
                            out,
                            join_pointer(&at, tag),
                            format!(
                                "unknown {tag} \"{}\"; expected one of: {list}{}",
                                bounded_text(given),
                                suggestion(given, names.iter().copied())
                            ),
                        ),
                    },
                    Some(other) => push(
                        out,
                        join_pointer(&at, tag),
                        format!(
                            "expected a string, one of: {list}; got {}",
                            bounded_json(other)
                        ),
                    ),
                }
                return;
            }
            let fits: Vec<usize> = (0..alts.len())
                .filter(|&i| accepts_type(root, &alts[i], value))
                .collect();
            let forms = alts
                .iter()
                .map(|a| describe(root, a))
                .collect::<Vec<_>>()
                .join(", or ");
            let best = fits
                .iter()
                .copied()
                .min_by_key(|&i| branches_errors.get(i).map_or(usize::MAX, Vec::len));
            match best {
                Some(i) if fits.len() == 1 || !branches_errors[i].is_empty() => {
                    for inner in &branches_errors[i] {
                        explain(root, instance, inner, context, out);
                    }
                }
                _ => push(
                    out,
                    at,
                    format!(
                        "expected {forms}; got {}{}",
                        bounded_json(value),
                        in_context(context)
                    ),
                ),
            }
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let node = schema_path
                .strip_suffix("/additionalProperties")
                .and_then(|p| root.pointer(p));
            let fields = node.map(|n| accepted(root, n)).unwrap_or_default();
            for name in unexpected {
                let accepts = if fields.is_empty() {
                    String::new()
                } else {
                    let who = if context.is_empty() {
                        "accepted".to_string()
                    } else {
                        format!("{context} accepts")
                    };
                    format!("; {who}: {}", fields.join(", "))
                };
                push(
                    out,
                    join_pointer(&at, name),
                    format!(
                        "unknown field `{}`{}{accepts}{}",
                        bounded_text(name),
                        in_context(context),
                        suggestion(name, fields.iter().map(String::as_str))
                    ),
                );
            }
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => article(&t.to_string()).to_string(),
                TypeKind::Multiple(ts) => ts
                    .iter()
                    .map(|t| article(&t.to_string()).to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            let got = here.map(bounded_json).unwrap_or_default();
            push(
                out,
                at,
                format!("expected {expected}, got {got}{}", in_context(context)),
            );
        }
        ValidationErrorKind::Enum { options } => {
            let list: Vec<&str> = options
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let hint = match here {
                Some(Value::String(s)) => suggestion(s, list.iter().copied()),
                _ => String::new(),
            };
            push(out, at, format!("{}{}{hint}", said(e), in_context(context)));
        }
        _ => push(out, at, format!("{}{}", said(e), in_context(context))),
    }
}

/// A validator's own message, its quote of the value bounded.
pub(crate) fn said(e: &ValidationError<'_>) -> String {
    bounded_message(&e.to_string(), e.instance())
}

fn in_context(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!(" (for {context})")
    }
}

/// Every violation of `errors`, each at its root (see the module's documentation): a
/// value that matches no branch of a `oneOf`/`anyOf` is reported through the branch it
/// was meant for. Violations at the same place with the same message are reported once,
/// and a place explained by a branch drops the bare errors its parent also raised there.
pub(crate) fn explain_all<'a>(
    root: &Value,
    instance: &Value,
    errors: impl Iterator<Item = ValidationError<'a>>,
) -> Vec<SchemaViolation> {
    let mut out: Vec<SchemaViolation> = Vec::new();
    let mut raw = Vec::new();
    for e in errors {
        let mut here = Vec::new();
        explain(root, instance, &e, "", &mut here);
        let compound = matches!(
            e.kind(),
            ValidationErrorKind::OneOfNotValid { .. } | ValidationErrorKind::AnyOf { .. }
        );
        if compound {
            out.extend(here);
        } else {
            raw.extend(here);
        }
    }
    // A bare error where a branch's explanation already speaks (the `enum` of `kind`
    // beside the `oneOf` that names the kind) says the same thing less well.
    for r in raw {
        let covered = out.iter().any(|o| {
            o.instance_path == r.instance_path
                || (r.message.contains("is a required property")
                    && o.instance_path
                        .strip_prefix(&format!("{}/", r.instance_path))
                        .is_some_and(|k| r.message.starts_with(&format!("\"{k}\""))))
        });
        if !covered {
            out.push(r);
        }
    }
    // A required field that is missing because it was misspelt is said once, by the
    // `did you mean` of the misspelling.
    let misspelt: Vec<(String, String)> = out
        .iter()
        .filter_map(|v| {
            let (parent, _) = v.instance_path.rsplit_once('/')?;
            let meant = v
                .message
                .split("did you mean `")
                .nth(1)?
                .split('`')
                .next()?;
            Some((
                parent.to_string(),
                format!("\"{meant}\" is a required property"),
            ))
        })
        .collect();
    out.retain(|v| {
        !misspelt
            .iter()
            .any(|(p, m)| *p == v.instance_path && v.message.starts_with(m.as_str()))
    });
    let mut seen = std::collections::HashSet::new();
    out.retain(|v| seen.insert((v.instance_path.clone(), v.message.clone())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::SchemaStore;
    use serde_json::json;

    fn backends() -> SchemaStore {
        let store = SchemaStore::new();
        store
            .add(
                "m",
                json!({"type": "object", "properties": {"backend": {"$ref": "#/$defs/backend"}},
                "$defs": {
                    "backend": {"type": "object", "required": ["kind"],
                        "properties": {"kind": {"enum": ["command", "function"]}},
                        "oneOf": [{"$ref": "#/$defs/command"}, {"$ref": "#/$defs/function"}]},
                    "command": {"type": "object", "additionalProperties": false,
                        "required": ["kind", "program"],
                        "properties": {"kind": {"const": "command"},
                            "program": {"type": "string"}, "args": {"type": "array"}}},
                    "function": {"type": "object", "additionalProperties": false,
                        "required": ["kind"],
                        "properties": {"kind": {"const": "function"}, "name": {"type": "string"}}},
                    "next": {"oneOf": [{"type": "string"}, {"type": "array"}]}
                }}),
            )
            .unwrap();
        store
    }

    #[test]
    fn did_you_mean_finds_a_close_name_only() {
        assert_eq!(
            did_you_mean("programm", ["program", "args"]).as_deref(),
            Some("program")
        );
        assert_eq!(
            did_you_mean("Args", ["program", "args"]).as_deref(),
            Some("args")
        );
        assert_eq!(did_you_mean("timeout", ["program", "args"]), None);
    }

    #[test]
    fn an_unknown_field_in_a_tagged_branch_is_named_with_what_the_kind_accepts() {
        let e = backends()
            .validate_explained(
                "m",
                &json!({"backend": {"kind": "command", "programm": "x"}}),
            )
            .unwrap_err();
        assert_eq!(e.errors.len(), 1, "{e}");
        assert_eq!(e.errors[0].instance_path, "/backend/programm");
        assert_eq!(
            e.errors[0].message,
            "unknown field `programm` (for kind = \"command\"); kind = \"command\" accepts: \
             args, kind, program; did you mean `program`?"
        );
    }

    #[test]
    fn a_wrong_type_in_a_tagged_branch_names_the_field_and_the_type() {
        let e = backends()
            .validate_explained("m", &json!({"backend": {"kind": "command", "program": 3}}))
            .unwrap_err();
        assert_eq!(e.errors.len(), 1, "{e}");
        assert_eq!(e.errors[0].instance_path, "/backend/program");
        assert_eq!(
            e.errors[0].message,
            "expected a string, got 3 (for kind = \"command\")"
        );
    }

    #[test]
    fn an_unknown_kind_is_said_once_with_the_kinds_and_a_suggestion() {
        let e = backends()
            .validate_explained("m", &json!({"backend": {"kind": "comand", "program": "x"}}))
            .unwrap_err();
        assert_eq!(e.errors.len(), 1, "{e}");
        assert_eq!(e.errors[0].instance_path, "/backend/kind");
        assert_eq!(
            e.errors[0].message,
            "unknown kind \"comand\"; expected one of: command, function; did you mean `command`?"
        );
    }

    #[test]
    fn a_value_of_no_accepted_type_lists_the_forms() {
        let store = SchemaStore::new();
        store
            .add(
                "n",
                json!({"oneOf": [{"$ref": "#/$defs/step_name"}, {"type": "array"}],
                       "$defs": {"step_name": {"type": "string"}}}),
            )
            .unwrap();
        let e = store.validate_explained("n", &json!(3)).unwrap_err();
        assert_eq!(
            e.errors[0].message,
            "expected a string (step name), or an array; got 3"
        );
    }
}
