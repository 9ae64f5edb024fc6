//! Values made to measure for a JSON Schema: ones that satisfy it ([`generate`]) and ones
//! that break it ([`violate`]).
//!
//! Owns the outputs of simulated agents, so that a simulation exercises the real contract
//! checks (G3): a valid answer passes the capability's output schema, a violating one is
//! journaled `contract_violation`. It understands the subset of draft 2020-12 that schemas
//! use in practice: `type` (one or a list), `properties`, `required`,
//! `additionalProperties`, `propertyNames`, `minProperties`, `dependentRequired`, `enum`,
//! `const`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `multipleOf`
//! (integers), `minLength`, `maxLength`, `pattern` (see the `pattern` module), `format`
//! (`uuid`, `date-time`, `date`, `email`, `uri`), `items`, `minItems`, `maxItems`,
//! `uniqueItems`, `$ref` (local `#/...` pointers, and other schemas by file name through a
//! [`SchemaStore`]: `finding.schema.json`, `finding.schema.json#/$defs/x`), `oneOf` and
//! `anyOf` (the first branch is generated) and `allOf` (merged naively: properties and
//! `required` united, bounds tightened). Other keywords are ignored, so a schema that
//! leans on them (`not`, `if`/`then`, `patternProperties`) may get a value it refuses.
//! Every random choice comes from the [`SimRng`] passed in (G6). It never panics on a
//! strange schema: it does its best and lets the validator judge.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Number, Value, json};

use super::{SimRng, pattern};
use muster_core::messaging::SchemaStore;
use muster_core::messaging::contract::Schema;

/// Past this nesting depth optional properties are left out and arrays are kept at their
/// minimum size, so recursive schemas end.
const MAX_DEPTH: usize = 12;

/// Keywords that only describe; a `$ref` whose siblings are all of these is the target alone.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$comment",
    "examples",
    "default",
    "$schema",
    "$id",
    "$defs",
    "definitions",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// A value that satisfies `schema` (within the subset described in the module docs).
/// `$ref`s to other files resolve through `schemas`; `#/...` refs resolve inside `schema`.
///
/// # Example
/// ```
/// use muster_sim::{generate, SimRng};
/// use muster_core::SchemaStore;
/// use serde_json::json;
///
/// let store = SchemaStore::new();
/// let schema = json!({"type": "object", "required": ["total"], "additionalProperties": false,
///     "properties": {"total": {"type": "integer", "minimum": 1}, "note": {"type": "string"}}});
/// store.add("report", schema.clone()).unwrap();
/// let v = generate(&schema, &store, &mut SimRng::new(3));
/// assert!(store.validate("report", &v).is_ok());
/// ```
pub fn generate(schema: &Value, schemas: &SchemaStore, rng: &mut SimRng) -> Value {
    Gen {
        top: schema,
        store: schemas,
    }
    .value(schema, &Root::Top, 0, rng)
}

/// A value that does **not** satisfy `schema`: a value of a type the schema does not allow
/// (at the root), or a valid object with a required property removed. `None` when the
/// schema accepts every value of every type and requires nothing (e.g. `{}`), so nothing
/// can break it.
///
/// # Example
/// ```
/// use muster_sim::{violate, SimRng};
/// use muster_core::SchemaStore;
/// use serde_json::json;
///
/// let store = SchemaStore::new();
/// let schema = json!({"type": "object", "required": ["total"],
///     "properties": {"total": {"type": "integer"}}});
/// store.add("report", schema.clone()).unwrap();
/// let bad = violate(&schema, &store, &mut SimRng::new(3)).unwrap();
/// assert!(store.validate("report", &bad).is_err());
/// assert_eq!(violate(&json!({}), &store, &mut SimRng::new(3)), None);
/// ```
pub fn violate(schema: &Value, schemas: &SchemaStore, rng: &mut SimRng) -> Option<Value> {
    let g = Gen {
        top: schema,
        store: schemas,
    };
    let allowed = g.allowed_types(schema, &Root::Top, 0);
    let is_allowed = |t: &str| allowed.as_ref().is_none_or(|s| s.contains(t));
    let wrong: Vec<Value> = [
        ("null", Value::Null),
        ("boolean", json!(true)),
        ("object", json!({})),
        ("array", json!([])),
        ("string", json!("simulated violation")),
        ("integer", json!(7)),
        ("number", json!(0.5)),
    ]
    .into_iter()
    .filter(|(t, _)| !is_allowed(t))
    .map(|(_, v)| v)
    .collect();
    // Only what holds for every branch: the root's own `required`, through `$ref` and `allOf`.
    let (flat, _) = g.flatten(schema, &Root::Top, 0, false);
    let required = strings(flat.get("required"));
    if is_allowed("object") && !required.is_empty() && (wrong.is_empty() || rng.chance(0.5)) {
        let mut obj = match g.value(schema, &Root::Top, 0, rng) {
            Value::Object(o) => o,
            _ => Map::new(),
        };
        obj.remove(&required[rng.below(required.len())]);
        return Some(Value::Object(obj));
    }
    if !wrong.is_empty() {
        return Some(wrong[rng.below(wrong.len())].clone());
    }
    None
}

/// Where `#/...` refs resolve: the schema passed in, or a schema from the store.
#[derive(Clone)]
enum Root {
    Top,
    Stored(Arc<Schema>),
}

struct Gen<'a> {
    top: &'a Value,
    store: &'a SchemaStore,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn types_of(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn is_constraint(key: &str) -> bool {
    !ANNOTATIONS.contains(&key)
}

type TypeSet = BTreeSet<&'static str>;

fn type_set(names: &[String]) -> TypeSet {
    let mut s = TypeSet::new();
    for n in names {
        match n.as_str() {
            "null" => {
                s.insert("null");
            }
            "boolean" => {
                s.insert("boolean");
            }
            "object" => {
                s.insert("object");
            }
            "array" => {
                s.insert("array");
            }
            "string" => {
                s.insert("string");
            }
            "integer" => {
                s.insert("integer");
            }
            "number" => {
                s.insert("number");
                s.insert("integer");
            }
            _ => {}
        }
    }
    s
}

fn value_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
    }
}

fn intersect(a: Option<TypeSet>, b: Option<TypeSet>) -> Option<TypeSet> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => Some(a.intersection(&b).copied().collect()),
    }
}

fn num(m: &Map<String, Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64)
}

fn count(m: &Map<String, Value>, k: &str) -> Option<usize> {
    m.get(k)
        .and_then(Value::as_u64)
        .map(|n| n.min(usize::MAX as u64) as usize)
}

/// Merges schema `b` into `a` as if both applied (naively: enough for `allOf`, a `$ref`
/// with siblings, and a `oneOf` branch beside its parent's keywords).
fn merge(a: &mut Map<String, Value>, b: Map<String, Value>) {
    for (k, v) in b {
        let both = |x: Value, y: Value| json!({"allOf": [x, y]});
        match (k.as_str(), a.remove(&k)) {
            (_, None) => {
                a.insert(k, v);
            }
            ("properties", Some(Value::Object(mut pa))) => {
                if let Value::Object(pb) = v {
                    for (name, s) in pb {
                        let merged = match pa.remove(&name) {
                            Some(old) => both(old, s),
                            None => s,
                        };
                        pa.insert(name, merged);
                    }
                }
                a.insert(k, Value::Object(pa));
            }
            ("required", Some(old)) => {
                let mut r = strings(Some(&old));
                for s in strings(Some(&v)) {
                    if !r.contains(&s) {
                        r.push(s);
                    }
                }
                a.insert(k, json!(r));
            }
            ("type", Some(old)) => {
                let x = type_set(&types_of(&old));
                let y = type_set(&types_of(&v));
                let common: Vec<&str> = x.intersection(&y).copied().collect();
                let t = if common.is_empty() { v } else { json!(common) };
                a.insert(k, t);
            }
            ("enum", Some(Value::Array(old))) => {
                let keep: Vec<Value> = match &v {
                    Value::Array(new) => old.into_iter().filter(|x| new.contains(x)).collect(),
                    _ => old,
                };
                a.insert(k, Value::Array(keep));
            }
            (
                "minimum" | "exclusiveMinimum" | "minLength" | "minItems" | "minProperties",
                Some(old),
            ) => {
                let t = if v.as_f64() > old.as_f64() { v } else { old };
                a.insert(k, t);
            }
            (
                "maximum" | "exclusiveMaximum" | "maxLength" | "maxItems" | "maxProperties",
                Some(old),
            ) => {
                let t = if v.as_f64() < old.as_f64() { v } else { old };
                a.insert(k, t);
            }
            ("additionalProperties", Some(old)) => {
                let t = if v == Value::Bool(false) || old == Value::Bool(false) {
                    Value::Bool(false)
                } else {
                    both(old, v)
                };
                a.insert(k, t);
            }
            ("items" | "propertyNames", Some(old)) => {
                a.insert(k, both(old, v));
            }
            ("const", Some(_)) => {
                a.insert(k, v);
            }
            (_, Some(old)) => {
                a.insert(k, old);
            }
        }
    }
}

impl Gen<'_> {
    fn doc<'b>(&'b self, root: &'b Root) -> &'b Value {
        match root {
            Root::Top => self.top,
            Root::Stored(s) => &s.document,
        }
    }

    /// The schema a `$ref` names, and the document its own `#/...` refs resolve in.
    fn resolve(&self, r: &str, root: &Root) -> Option<(Value, Root)> {
        let (file, fragment) = match r.split_once('#') {
            Some((f, p)) => (f, p),
            None => (r, ""),
        };
        let root = if file.is_empty() {
            root.clone()
        } else {
            let file = file.rsplit('/').next().unwrap_or(file);
            let name = file
                .strip_suffix(".schema.json")
                .or_else(|| file.strip_suffix(".json"))
                .unwrap_or(file);
            Root::Stored(self.store.get(name).ok()?)
        };
        let target = if fragment.is_empty() {
            self.doc(&root).clone()
        } else {
            self.doc(&root).pointer(fragment)?.clone()
        };
        Some((target, root))
    }

    /// The schema's keywords with `$ref` and `allOf` merged in (and, with `branches`, the
    /// first `oneOf`/`anyOf` branch), and the document its refs resolve in.
    fn flatten<'s>(
        &self,
        schema: &'s Value,
        root: &Root,
        depth: usize,
        branches: bool,
    ) -> (Cow<'s, Map<String, Value>>, Root) {
        let Value::Object(own) = schema else {
            return (Cow::Owned(Map::new()), root.clone());
        };
        if depth > 4 * MAX_DEPTH {
            return (Cow::Owned(Map::new()), root.clone());
        }
        // Nothing to merge: the schema as it is (a clone of every schema map per generated
        // value cost a fifth of a large simulation's time).
        if !["$ref", "allOf", "oneOf", "anyOf"]
            .iter()
            .any(|k| own.contains_key(*k))
        {
            return (Cow::Borrowed(own), root.clone());
        }
        let mut m = own.clone();
        let mut root_out = root.clone();
        let reference = m.remove("$ref");
        let all_of = m.remove("allOf");
        let one_of = m.remove("oneOf");
        let any_of = m.remove("anyOf");
        let mut subs: Vec<(Value, Root)> = Vec::new();
        if let Some(Value::String(r)) = reference
            && let Some(t) = self.resolve(&r, root)
        {
            subs.push(t);
        }
        if let Some(Value::Array(all)) = all_of {
            subs.extend(all.into_iter().map(|s| (s, root.clone())));
        }
        if branches {
            for alts in [one_of, any_of].into_iter().flatten() {
                if let Some(first) = alts.as_array().and_then(|a| a.first()) {
                    subs.push((first.clone(), root.clone()));
                }
            }
        } else {
            for (k, alts) in [("oneOf", one_of), ("anyOf", any_of)] {
                if let Some(alts) = alts {
                    m.insert(k.into(), alts);
                }
            }
        }
        for (sub, sub_root) in subs {
            let (sm, sr) = self.flatten(&sub, &sub_root, depth + 1, branches);
            // A schema that is only its ref (or branch) takes the ref's document with it, so
            // the target's own `#/...` refs resolve where they were written.
            if !m.keys().any(|k| is_constraint(k)) {
                root_out = sr;
            }
            merge(&mut m, sm.into_owned());
        }
        (Cow::Owned(m), root_out)
    }

    /// The JSON types `schema` admits at its root, or `None` when it admits every type.
    fn allowed_types(&self, schema: &Value, root: &Root, depth: usize) -> Option<TypeSet> {
        let m = match schema {
            Value::Object(m) if depth <= 4 * MAX_DEPTH => m,
            Value::Bool(false) => return Some(TypeSet::new()),
            _ => return None,
        };
        let mut acc = m.get("type").map(|t| type_set(&types_of(t)));
        if let Some(c) = m.get("const") {
            acc = intersect(acc, Some(TypeSet::from([value_type(c)])));
        }
        if let Some(Value::Array(e)) = m.get("enum") {
            acc = intersect(acc, Some(e.iter().map(value_type).collect()));
        }
        if let Some(Value::String(r)) = m.get("$ref")
            && let Some((t, troot)) = self.resolve(r, root)
        {
            acc = intersect(acc, self.allowed_types(&t, &troot, depth + 1));
        }
        if let Some(Value::Array(all)) = m.get("allOf") {
            for s in all {
                acc = intersect(acc, self.allowed_types(s, root, depth + 1));
            }
        }
        for k in ["oneOf", "anyOf"] {
            if let Some(Value::Array(alts)) = m.get(k) {
                let mut union = Some(TypeSet::new());
                for s in alts {
                    union = match (union, self.allowed_types(s, root, depth + 1)) {
                        (Some(u), Some(t)) => Some(u.union(&t).copied().collect()),
                        _ => None,
                    };
                }
                acc = intersect(acc, union);
            }
        }
        acc
    }

    fn value(&self, schema: &Value, root: &Root, depth: usize, rng: &mut SimRng) -> Value {
        if !schema.is_object() {
            // `true` (or anything that is not a schema object) admits everything.
            return any_value(rng);
        }
        let (m, root) = self.flatten(schema, root, depth, true);
        if let Some(c) = m.get("const") {
            return c.clone();
        }
        if let Some(Value::Array(e)) = m.get("enum")
            && !e.is_empty()
        {
            return e[rng.below(e.len())].clone();
        }
        let mut types = types_of(m.get("type").unwrap_or(&Value::Null));
        if types.is_empty() {
            types = inferred_type(&m).into_iter().map(str::to_string).collect();
        }
        if types.is_empty() {
            return any_value(rng);
        }
        let t = types[rng.below(types.len())].clone();
        match t.as_str() {
            "object" => self.object(&m, &root, depth, rng),
            "array" => self.array(&m, &root, depth, rng),
            "string" => string(&m, rng),
            "integer" => integer(&m, rng),
            "number" => number(&m, rng),
            "boolean" => Value::Bool(rng.chance(0.5)),
            _ => Value::Null,
        }
    }

    fn object(&self, m: &Map<String, Value>, root: &Root, depth: usize, rng: &mut SimRng) -> Value {
        let empty = Map::new();
        let props = m
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let required = strings(m.get("required"));
        let additional = m.get("additionalProperties");
        let closed = additional == Some(&Value::Bool(false));
        let mut keys: Vec<String> = Vec::new();
        for name in props.keys() {
            if required.contains(name) || (depth < MAX_DEPTH && rng.chance(0.5)) {
                keys.push(name.clone());
            }
        }
        for r in &required {
            if !keys.contains(r) {
                keys.push(r.clone());
            }
        }
        // dependentRequired: a present key brings its dependencies (to a fixpoint).
        if let Some(Value::Object(deps)) = m.get("dependentRequired") {
            let mut i = 0;
            while i < keys.len() {
                for d in strings(deps.get(&keys[i])) {
                    if !keys.contains(&d) {
                        keys.push(d);
                    }
                }
                i += 1;
            }
        }
        let min = count(m, "minProperties").unwrap_or(0);
        let mut extra = 0;
        while keys.len() < min && extra < min + 16 {
            extra += 1;
            if closed {
                match props.keys().find(|k| !keys.contains(k)) {
                    Some(k) => keys.push(k.clone()),
                    None => break,
                }
                continue;
            }
            let key = match m.get("propertyNames") {
                Some(names) => match self.value(names, root, depth + 1, rng) {
                    Value::String(s) => s,
                    _ => format!("extra{extra}"),
                },
                None => format!("extra{extra}"),
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let mut out = Map::new();
        for k in keys {
            let v = match (props.get(&k), additional) {
                (Some(s), _) => self.value(s, root, depth + 1, rng),
                (None, Some(s)) if s.is_object() => self.value(s, root, depth + 1, rng),
                _ => any_value(rng),
            };
            out.insert(k, v);
        }
        Value::Object(out)
    }

    fn array(&self, m: &Map<String, Value>, root: &Root, depth: usize, rng: &mut SimRng) -> Value {
        // A schema may ask for more items than memory holds: past this many, the output is
        // cut short (and then breaks the schema, which the runtime reports as a contract
        // violation) instead of the simulation aborting on the allocation.
        const MAX_ITEMS: usize = 100_000;
        let min = count(m, "minItems").unwrap_or(0).min(MAX_ITEMS);
        let max = count(m, "maxItems").unwrap_or(usize::MAX).max(min);
        let n = if depth >= MAX_DEPTH {
            min
        } else {
            rng.range_i64(min as i64, max.min(min + 3) as i64) as usize
        }
        .min(MAX_ITEMS);
        let unique = m.get("uniqueItems") == Some(&Value::Bool(true));
        let items = m.get("items").cloned().unwrap_or(Value::Bool(true));
        // A tuple (`prefixItems`): item i follows its own schema, the rest `items`.
        let prefix: Vec<Value> = m
            .get("prefixItems")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut out: Vec<Value> = Vec::with_capacity(n);
        let mut tries = 0;
        while out.len() < n && tries < n * 16 + 16 {
            tries += 1;
            let v = self.value(
                prefix.get(out.len()).unwrap_or(&items),
                root,
                depth + 1,
                rng,
            );
            if unique && out.contains(&v) {
                continue;
            }
            out.push(v);
        }
        Value::Array(out)
    }
}

/// The type a schema without `type` implies by its keywords.
fn inferred_type(m: &Map<String, Value>) -> Option<&'static str> {
    let has = |ks: &[&str]| ks.iter().any(|k| m.contains_key(*k));
    if has(&[
        "properties",
        "required",
        "additionalProperties",
        "minProperties",
        "propertyNames",
    ]) {
        Some("object")
    } else if has(&["items", "minItems", "maxItems", "uniqueItems"]) {
        Some("array")
    } else if has(&["minLength", "maxLength", "pattern", "format"]) {
        Some("string")
    } else if has(&[
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    ]) {
        Some("number")
    } else {
        None
    }
}

fn word(rng: &mut SimRng, len: usize) -> String {
    (0..len)
        .map(|_| (b'a' + rng.below(26) as u8) as char)
        .collect()
}

/// Something for a schema that admits anything.
fn any_value(rng: &mut SimRng) -> Value {
    match rng.below(4) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(0.5)),
        2 => json!(rng.range_i64(0, 100)),
        _ => {
            let n = rng.range_i64(1, 8) as usize;
            Value::String(word(rng, n))
        }
    }
}

fn uuid(rng: &mut SimRng) -> String {
    let hi = rng.next_u64().to_be_bytes();
    let lo = rng.next_u64().to_be_bytes();
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi);
    b[8..].copy_from_slice(&lo);
    uuid::Builder::from_random_bytes(b)
        .into_uuid()
        .hyphenated()
        .to_string()
}

fn string(m: &Map<String, Value>, rng: &mut SimRng) -> Value {
    let min = count(m, "minLength").unwrap_or(0);
    let max = count(m, "maxLength").unwrap_or(usize::MAX).max(min);
    let fits = |s: &str| (min..=max).contains(&s.chars().count());
    match m.get("format").and_then(Value::as_str) {
        Some("uuid") => return Value::String(uuid(rng)),
        Some("date-time") => return json!("2026-01-01T00:00:00Z"),
        Some("date") => return json!("2026-01-01"),
        Some("email") => return json!(format!("{}@example.com", word(rng, 6))),
        Some("uri") => return json!(format!("https://example.com/{}", word(rng, 6))),
        _ => {}
    }
    if let Some(p) = m.get("pattern").and_then(Value::as_str) {
        let mut last = String::new();
        for _ in 0..16 {
            match pattern::generate(p, rng) {
                Ok(s) if fits(&s) => return Value::String(s),
                Ok(s) => last = s,
                Err(e) => {
                    tracing::debug!(pattern = p, error = %e, "pattern outside the supported subset");
                    break;
                }
            }
        }
        return Value::String(last);
    }
    let lo = min.max(1).min(max);
    let hi = max.min(lo + 8);
    let n = rng.range_i64(lo as i64, hi as i64) as usize;
    Value::String(word(rng, n))
}

/// The bounds a number must lie within: `(low, low exclusive, high, high exclusive)`.
fn bounds(m: &Map<String, Value>) -> (Option<f64>, bool, Option<f64>, bool) {
    let (mut lo, mut lo_ex) = (num(m, "minimum"), false);
    if let Some(x) = num(m, "exclusiveMinimum")
        && lo.is_none_or(|l| x >= l)
    {
        (lo, lo_ex) = (Some(x), true);
    }
    let (mut hi, mut hi_ex) = (num(m, "maximum"), false);
    if let Some(x) = num(m, "exclusiveMaximum")
        && hi.is_none_or(|h| x <= h)
    {
        (hi, hi_ex) = (Some(x), true);
    }
    (lo, lo_ex, hi, hi_ex)
}

fn integer(m: &Map<String, Value>, rng: &mut SimRng) -> Value {
    const LIMIT: f64 = 9.0e15; // exactly representable in f64
    let (lo, lo_ex, hi, hi_ex) = bounds(m);
    let lo = lo.map(|l| {
        let c = l.ceil();
        if lo_ex && c == l { c + 1.0 } else { c }
    });
    let hi = hi.map(|h| {
        let f = h.floor();
        if hi_ex && f == h { f - 1.0 } else { f }
    });
    let (lo, hi) = match (lo, hi) {
        (Some(l), Some(h)) => (l, h),
        (Some(l), None) => (l, l + 100.0),
        (None, Some(h)) => (h - 100.0, h),
        (None, None) => (0.0, 100.0),
    };
    let lo = lo.clamp(-LIMIT, LIMIT) as i64;
    let hi = hi.clamp(-LIMIT, LIMIT) as i64;
    match num(m, "multipleOf") {
        Some(k) if k >= 1.0 && k.fract() == 0.0 => {
            let k = k as i64;
            let first = lo.div_euclid(k) + i64::from(lo.rem_euclid(k) != 0);
            let last = hi.div_euclid(k);
            json!(rng.range_i64(first, last.max(first)) * k)
        }
        _ => json!(rng.range_i64(lo, hi.max(lo))),
    }
}

fn number(m: &Map<String, Value>, rng: &mut SimRng) -> Value {
    let (lo, lo_ex, hi, hi_ex) = bounds(m);
    let (l, h) = match (lo, hi) {
        (Some(l), Some(h)) => (l, h),
        (Some(l), None) => (l, l + 100.0),
        (None, Some(h)) => (h - 100.0, h),
        (None, None) => (0.0, 100.0),
    };
    let mut x = l + (h - l) * rng.next_f64();
    if (lo_ex && x <= l) || (hi_ex && x >= h) {
        x = l + (h - l) / 2.0;
    }
    Number::from_f64(x).map_or(json!(0), Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> SchemaStore {
        let s = SchemaStore::new();
        s.load_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas"))
            .unwrap();
        s
    }

    #[test]
    fn an_array_asking_for_more_items_than_memory_holds_is_cut_short_not_aborted() {
        let schema = json!({"type": "array", "minItems": 1_000_000_000_000u64, "items": {"type": "integer"}});
        let v = generate(&schema, &store(), &mut SimRng::new(1));
        assert!(v.as_array().is_some_and(|a| a.len() <= 100_000));
    }

    #[test]
    fn every_shipped_schema_gets_valid_values_and_violations() {
        let store = store();
        let names = store.names();
        assert!(names.len() >= 10, "{names:?}");
        for name in &names {
            let doc = store.get(name).unwrap().document.clone();
            for seed in 0..300 {
                let mut rng = SimRng::new(seed);
                let v = generate(&doc, &store, &mut rng);
                if let Err(e) = store.validate(name, &v) {
                    panic!("seed {seed}: generated value for `{name}` is invalid: {e}\n{v:#}");
                }
                let bad = violate(&doc, &store, &mut rng)
                    .unwrap_or_else(|| panic!("no violation for `{name}`"));
                assert!(
                    store.validate(name, &bad).is_err(),
                    "seed {seed}: violation of `{name}` validates: {bad:#}"
                );
            }
        }
    }

    #[test]
    fn keywords_of_the_subset_are_honoured() {
        let store = SchemaStore::new();
        let schemas = [
            json!({"type": ["string", "null"], "minLength": 3, "maxLength": 4}),
            json!({"type": "integer", "exclusiveMinimum": 5, "exclusiveMaximum": 7}),
            json!({"type": "integer", "minimum": -20, "maximum": 20, "multipleOf": 6}),
            json!({"type": "number", "exclusiveMinimum": 0, "maximum": 0.001}),
            json!({"type": "array", "minItems": 2, "maxItems": 2, "uniqueItems": true,
                   "items": {"enum": ["a", "b", "c"]}}),
            json!({"allOf": [{"type": "object", "required": ["a"], "properties": {"a": {"const": 1}}},
                             {"required": ["b"], "properties": {"b": {"type": "boolean"}}}]}),
            json!({"type": "object", "minProperties": 2, "propertyNames": {"pattern": "^k[0-9]$"},
                   "additionalProperties": {"type": "integer"}}),
            json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "dependentRequired": {"a": ["b"]}}),
            json!({"$defs": {"x": {"type": "string", "format": "uuid"}},
                   "type": "object", "required": ["id"], "properties": {"id": {"$ref": "#/$defs/x"}}}),
            json!({"anyOf": [{"type": "integer", "minimum": 10}, {"type": "string"}]}),
        ];
        for (i, s) in schemas.iter().enumerate() {
            let name = format!("s{i}");
            store.add(&name, s.clone()).unwrap();
            for seed in 0..200 {
                let mut rng = SimRng::new(seed);
                let v = generate(s, &store, &mut rng);
                assert!(store.validate(&name, &v).is_ok(), "{s}: {v}");
                if let Some(bad) = violate(s, &store, &mut rng) {
                    assert!(store.validate(&name, &bad).is_err(), "{s}: {bad}");
                }
            }
        }
    }

    #[test]
    fn refs_to_other_files_and_into_them_resolve() {
        let store = store();
        let s = json!({"type": "object", "required": ["f", "k"], "additionalProperties": false,
            "properties": {"f": {"$ref": "finding.schema.json"},
                           "k": {"$ref": "manifest.schema.json#/$defs/supervision"}}});
        store.add("refs", s.clone()).unwrap();
        for seed in 0..100 {
            let v = generate(&s, &store, &mut SimRng::new(seed));
            assert!(store.validate("refs", &v).is_ok(), "{v}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_value() {
        let store = store();
        let doc = store.get("workflow").unwrap().document.clone();
        let a = generate(&doc, &store, &mut SimRng::new(5));
        let b = generate(&doc, &store, &mut SimRng::new(5));
        assert_eq!(a, b);
        let c = generate(&doc, &store, &mut SimRng::new(6));
        assert_ne!(a, c);
    }
}
