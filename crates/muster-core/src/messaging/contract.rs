//! Contracts: the JSON Schemas that payloads must satisfy, loaded once and compiled once.
//!
//! Owns the [`SchemaStore`]: every `schemas/NAME.schema.json` (draft 2020-12) is parsed and
//! compiled to a validator when the store is built, `$ref`s between files resolve by file
//! name, and schemas are referred to by `NAME`. Validation never panics and reports every
//! error with its instance path, schema path and message (G3).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The base URI schemas are registered under, so `{"$ref": "other.schema.json"}` resolves.
const BASE: &str = "https://schemas.muster.invalid/";

pub use super::violation::SchemaViolation;

/// A payload that broke its contract (or a contract that could not be checked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("payload does not satisfy schema `{schema}`: {}", summary(.errors))]
pub struct ContractError {
    /// The schema name.
    pub schema: String,
    /// Every error the validator found.
    pub errors: Vec<SchemaViolation>,
}

fn summary(errors: &[SchemaViolation]) -> String {
    errors
        .iter()
        .map(|e| {
            let at = if e.instance_path.is_empty() {
                "/"
            } else {
                &e.instance_path
            };
            format!("at {at}: {}", e.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Loading a schema failed.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The directory or file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{path}: not valid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Where and why it failed to parse.
        source: serde_json::Error,
    },
    /// The schema itself is invalid or a `$ref` does not resolve.
    #[error("{origin}: invalid schema `{name}`: {message}")]
    Invalid {
        /// The file, or `<api>` for a schema added from code.
        origin: String,
        /// The schema name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A schema refers (`$ref`) to a remote URL: muster never fetches one.
    #[error(
        "{origin}: schema `{name}` refers to the remote URL `{reference}` ($ref); remote \
         references are not fetched. Vendor it: save that schema as schemas/{vendored} and \
         write \"$ref\": \"{vendored}\" (a schema of the schemas directory is referred to by \
         its file name, or by its `$id` if it declares one)",
        vendored = vendored_name(.reference)
    )]
    RemoteRef {
        /// The file holding the reference, or `<api>`.
        origin: String,
        /// The schema name.
        name: String,
        /// The reference as written.
        reference: String,
    },
    /// A schema was asked for by name and is not in the store.
    #[error("unknown schema `{0}` (expected a file schemas/{0}.schema.json)")]
    Unknown(String),
}

/// A compiled schema.
pub struct Schema {
    /// The schema name.
    pub name: Arc<str>,
    /// The schema document.
    pub document: Value,
    /// Where it came from (a file path, or `<api>`).
    pub origin: String,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Schema {
    /// Checks a payload; on failure returns every error.
    pub fn validate(&self, payload: &Value) -> Result<(), ContractError> {
        if self.validator.is_valid(payload) {
            return Ok(());
        }
        let errors = self
            .validator
            .iter_errors(payload)
            .map(|e| SchemaViolation {
                instance_path: e.instance_path().to_string(),
                schema_path: e.schema_path().to_string(),
                message: super::explain::said(&e),
            })
            .collect();
        Err(ContractError {
            schema: self.name.to_string(),
            errors,
        })
    }

    /// Checks a payload like [`Schema::validate`], each error named at its root: a value
    /// matching no branch of a `oneOf`/`anyOf` is reported through the branch it was meant
    /// for (picked by its `kind`-like tag or by its type), an unknown field with the fields
    /// accepted and a `did you mean`, a wrong type with the types accepted. For files a
    /// person writes (manifests, workflows, scenarios).
    ///
    /// # Example
    /// ```
    /// use muster_core::SchemaStore;
    /// use serde_json::json;
    ///
    /// let store = SchemaStore::new();
    /// store.add("pet", json!({"oneOf": [
    ///     {"type": "object", "additionalProperties": false,
    ///      "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer"}}},
    ///     {"type": "object", "additionalProperties": false,
    ///      "properties": {"kind": {"const": "dog"}, "tricks": {"type": "integer"}}}]})).unwrap();
    /// let schema = store.get("pet").unwrap();
    /// let e = schema.validate_explained(&json!({"kind": "cat", "live": 9})).unwrap_err();
    /// assert_eq!(e.errors[0].instance_path, "/live");
    /// assert_eq!(e.errors[0].message, "unknown field `live` (for kind = \"cat\"); \
    ///     kind = \"cat\" accepts: kind, lives; did you mean `lives`?");
    /// ```
    pub fn validate_explained(&self, payload: &Value) -> Result<(), ContractError> {
        if self.validator.is_valid(payload) {
            return Ok(());
        }
        let errors = super::explain::explain_all(
            &self.document,
            payload,
            self.validator.iter_errors(payload),
        );
        Err(ContractError {
            schema: self.name.to_string(),
            errors,
        })
    }
}

/// The retriever of every store: a `$ref` to a document not in the store (a remote URL)
/// is refused, never fetched; the error says how to vendor it (save the
/// schema under `schemas/` and refer to it by its file name, or keep its `$id`).
struct NoRemoteRefs;

impl jsonschema::Retrieve for NoRemoteRefs {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!(
            "`{}` is not fetched (muster never fetches remote references)",
            uri.as_str()
        )
        .into())
    }
}

/// The `$ref`s in `doc` (every depth) that point outside muster's schema store, i.e. to an
/// absolute URL other than the store's own base.
fn remote_refs(doc: &Value, out: &mut Vec<String>) {
    match doc {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref" | "$dynamicRef", Value::String(r))
                        if r.contains("://") && !r.starts_with(BASE) =>
                    {
                        out.push(r.clone())
                    }
                    _ => remote_refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| remote_refs(v, out)),
        _ => {}
    }
}

/// Every `$id` declared in `doc`.
fn collect_ids(doc: &Value, out: &mut Vec<String>) {
    match doc {
        Value::Object(m) => {
            if let Some(Value::String(id)) = m.get("$id") {
                out.push(id.clone());
            }
            m.values().for_each(|v| collect_ids(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_ids(v, out)),
        _ => {}
    }
}

/// The error for a schema whose `$ref` points to a remote URL.
fn remote_ref_error(origin: &str, name: &str, reference: &str) -> SchemaError {
    SchemaError::RemoteRef {
        origin: origin.to_string(),
        name: name.to_string(),
        reference: reference.to_string(),
    }
}

/// The file name a remote schema is vendored under: its URL's last segment, as
/// `NAME.schema.json`.
fn vendored_name(reference: &str) -> String {
    let file = reference
        .split('#')
        .next()
        .and_then(|u| u.rsplit('/').next())
        .filter(|f| !f.is_empty())
        .unwrap_or("NAME.schema.json");
    if file.ends_with(".schema.json") {
        file.to_string()
    } else {
        format!("{}.schema.json", file.trim_end_matches(".json"))
    }
}

/// Every JSON Schema the runtime knows, compiled once, referred to by name.
///
/// # Example
/// ```
/// use muster_core::SchemaStore;
/// use serde_json::json;
///
/// let store = SchemaStore::new();
/// store.add("greeting", json!({"type": "object", "required": ["name"],
///     "properties": {"name": {"type": "string"}}})).unwrap();
/// assert!(store.validate("greeting", &json!({"name": "Ada"})).is_ok());
/// let err = store.validate("greeting", &json!({"name": 3})).unwrap_err();
/// assert_eq!(err.errors[0].instance_path, "/name");
/// ```
///
/// A clone shares the compiled schemas but not the set: schemas added to one later are not
/// seen by the other.
#[derive(Debug, Default, Clone)]
pub struct SchemaStore {
    schemas: DashMap<Arc<str>, Arc<Schema>>,
}

impl SchemaStore {
    /// A store holding one schema shipped inside the binary (`include_str!`), for the
    /// project's own file formats: checked whatever `--schemas` points at. The text is
    /// part of the build; each caller has a test proving it compiles, so a store left
    /// empty by a broken text fails that test, never a user's run.
    ///
    /// ```
    /// use muster_core::SchemaStore;
    /// let s = SchemaStore::shipped("point", r#"{"type": "object", "required": ["x"]}"#);
    /// assert!(s.validate("point", &serde_json::json!({"x": 1})).is_ok());
    /// ```
    pub fn shipped(name: &str, text: &str) -> SchemaStore {
        let store = SchemaStore::new();
        if let Ok(doc) = serde_json::from_str(text) {
            let _ = store.add(name, doc);
        }
        store
    }

    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads every `*.schema.json` in `dir`. All files are read and compiled before any is
    /// added, so a bad file leaves the store as it was.
    pub fn load_dir(&self, dir: impl AsRef<Path>) -> Result<usize, SchemaError> {
        let dir = dir.as_ref();
        let entries = std::fs::read_dir(dir).map_err(|source| SchemaError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut docs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| SchemaError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let path = entry.path();
            let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            let Some(name) = file.strip_suffix(".schema.json") else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(|source| SchemaError::Io {
                path: path.clone(),
                source,
            })?;
            let doc: Value = serde_json::from_str(&text).map_err(|source| SchemaError::Json {
                path: path.clone(),
                source,
            })?;
            docs.push((name.to_string(), doc, path.display().to_string()));
        }
        docs.sort_by(|a, b| a.0.cmp(&b.0));
        let n = docs.len();
        self.add_all(docs)?;
        Ok(n)
    }

    /// Adds (or replaces) one schema from code.
    pub fn add(&self, name: &str, document: Value) -> Result<(), SchemaError> {
        self.add_all(vec![(name.to_string(), document, "<api>".to_string())])
    }

    fn add_all(&self, docs: Vec<(String, Value, String)>) -> Result<(), SchemaError> {
        // A remote `$ref` is refused by name before the registry would try (and fail) to
        // retrieve it with a message naming no file.
        // A reference to the `$id` of a schema in the store is not remote.
        let mut ids = Vec::new();
        for s in self.schemas.iter() {
            collect_ids(&s.document, &mut ids);
        }
        for (_, doc, _) in &docs {
            collect_ids(doc, &mut ids);
        }
        for (name, doc, origin) in &docs {
            let mut refs = Vec::new();
            remote_refs(doc, &mut refs);
            let remote = refs.iter().find(|r| {
                let target = r.split('#').next().unwrap_or(r);
                !ids.iter().any(|id| id.trim_end_matches('#') == target)
            });
            if let Some(r) = remote {
                return Err(remote_ref_error(origin, name, r));
            }
        }
        // Every known schema is a resource, so `$ref`s between files resolve by file name.
        let mut resources: Vec<(String, Value)> = self
            .schemas
            .iter()
            .filter(|s| !docs.iter().any(|d| d.0 == s.name.as_ref()))
            .map(|s| (uri(&s.name), s.document.clone()))
            .collect();
        resources.extend(docs.iter().map(|(n, d, _)| (uri(n), d.clone())));
        let mut builder = jsonschema::Registry::new().retriever(NoRemoteRefs);
        for (u, d) in &resources {
            builder = builder
                .add(u.as_str(), jsonschema::Resource::from_contents(d.clone()))
                .map_err(|e| SchemaError::Invalid {
                    origin: u.clone(),
                    name: u.clone(),
                    message: e.to_string(),
                })?;
        }
        let registry = builder.prepare().map_err(|e| SchemaError::Invalid {
            origin: "schemas".into(),
            name: "*".into(),
            message: e.to_string(),
        })?;
        let mut compiled = Vec::with_capacity(docs.len());
        for (name, doc, origin) in docs {
            let validator = jsonschema::draft202012::options()
                .with_retriever(NoRemoteRefs)
                .with_registry(&registry)
                .with_base_uri(uri(&name))
                .build(&doc)
                .map_err(|e| SchemaError::Invalid {
                    origin: origin.clone(),
                    name: name.clone(),
                    message: e.to_string(),
                })?;
            let name: Arc<str> = Arc::from(name);
            compiled.push(Schema {
                name,
                document: doc,
                origin,
                validator,
            });
        }
        for s in compiled {
            self.schemas.insert(s.name.clone(), Arc::new(s));
        }
        Ok(())
    }

    /// The compiled schema called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Schema>, SchemaError> {
        self.schemas
            .get(name)
            .map(|s| s.value().clone())
            .ok_or_else(|| SchemaError::Unknown(name.to_string()))
    }

    /// Whether a schema called `name` is loaded.
    pub fn contains(&self, name: &str) -> bool {
        self.schemas.contains_key(name)
    }

    /// Every schema name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.schemas.iter().map(|s| s.name.to_string()).collect();
        v.sort();
        v
    }

    /// Validates `payload` against the schema called `name`, each error named at its root
    /// (see [`Schema::validate_explained`]).
    ///
    /// # Example
    /// ```
    /// use muster_core::SchemaStore;
    /// use serde_json::json;
    ///
    /// let store = SchemaStore::new();
    /// store.add("size", json!({"anyOf": [{"type": "integer"}, {"enum": ["small", "large"]}]}))
    ///     .unwrap();
    /// let e = store.validate_explained("size", &json!(true)).unwrap_err();
    /// assert_eq!(e.errors[0].message,
    ///     "expected an integer, or one of \"small\", \"large\"; got true");
    /// ```
    pub fn validate_explained(&self, name: &str, payload: &Value) -> Result<(), ContractError> {
        match self.schemas.get(name) {
            Some(s) => s.validate_explained(payload),
            None => self.validate(name, payload),
        }
    }

    /// Validates `payload` against the schema called `name`.
    pub fn validate(&self, name: &str, payload: &Value) -> Result<(), ContractError> {
        match self.schemas.get(name) {
            Some(s) => s.validate(payload),
            None => Err(ContractError {
                schema: name.to_string(),
                errors: vec![SchemaViolation {
                    instance_path: String::new(),
                    schema_path: String::new(),
                    message: format!("unknown schema `{name}`"),
                }],
            }),
        }
    }
}

fn uri(name: &str) -> String {
    format!("{BASE}{name}.schema.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refs_between_schemas_resolve_by_file_name() {
        let store = SchemaStore::new();
        store
            .add("name", json!({"type": "string", "minLength": 1}))
            .unwrap();
        store
            .add(
                "person",
                json!({"type": "object", "required": ["name"],
                       "properties": {"name": {"$ref": "name.schema.json"}}}),
            )
            .unwrap();
        assert!(store.validate("person", &json!({"name": "Ada"})).is_ok());
        let err = store.validate("person", &json!({"name": ""})).unwrap_err();
        assert_eq!(err.errors[0].instance_path, "/name");
        assert!(err.errors[0].schema_path.contains("minLength"));
    }

    #[test]
    fn every_error_is_reported() {
        let store = SchemaStore::new();
        store
            .add(
                "p",
                json!({"type": "object", "required": ["a", "b"],
                       "properties": {"c": {"type": "integer"}}}),
            )
            .unwrap();
        let err = store.validate("p", &json!({"c": "x"})).unwrap_err();
        assert_eq!(err.errors.len(), 3, "{err}");
    }

    #[test]
    fn a_remote_ref_is_refused_naming_the_file_the_reference_and_how_to_vendor_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("r.schema.json"),
            r#"{"type": "object", "properties": {"x": {"$ref": "https://example.com/x.json"}}}"#,
        )
        .unwrap();
        let store = SchemaStore::new();
        let e = store.load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("r.schema.json"), "{e}");
        assert!(e.contains("`https://example.com/x.json`"), "{e}");
        assert!(e.contains("remote references are not fetched"), "{e}");
        assert!(e.contains("schemas/x.schema.json"), "{e}");
        assert!(store.names().is_empty(), "nothing was added");
    }

    #[test]
    fn a_vendored_schema_is_referred_to_by_its_id_or_its_file_name() {
        let store = SchemaStore::new();
        store
            .add(
                "x",
                json!({"$id": "https://example.com/x.json", "type": "integer"}),
            )
            .unwrap();
        store
            .add(
                "r",
                json!({"type": "object", "properties": {
                    "a": {"$ref": "https://example.com/x.json"},
                    "b": {"$ref": "x.schema.json"}}}),
            )
            .unwrap();
        assert!(store.validate("r", &json!({"a": 1, "b": 2})).is_ok());
        assert!(store.validate("r", &json!({"a": "1"})).is_err());
        assert!(store.validate("r", &json!({"b": "1"})).is_err());
    }

    #[test]
    fn an_unknown_schema_is_an_error_not_a_pass() {
        let store = SchemaStore::new();
        assert!(store.validate("nope", &json!({})).is_err());
    }
}
