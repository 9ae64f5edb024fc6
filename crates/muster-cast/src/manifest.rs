//! Agent manifests: one agent type per TOML file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use muster_a2a::{A2aConfig, A2aFactory};
use muster_command::{CommandConfig, CommandFactory};
use muster_core::discovery::CapabilitySpec;
use muster_core::messaging::SchemaStore;
use muster_core::runtime::AgentDef;
use muster_core::supervision::{Restart, Supervision};
use muster_llm::{LlmConfig, LlmFactory};
use muster_mcp::{McpConfig, McpFactory, ToolInfo};
use muster_sim::{FaultModel, SimFactory};
use muster_workflow::definition::MAX_DURATION;

use super::{a2a, mcp};

/// The backend an agent type runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendSpec {
    /// A built-in Rust function agent, by name (see [`super::builtins::NAMES`]).
    Function {
        /// The function's name.
        name: String,
    },
    /// An external program.
    Command(CommandConfig),
    /// A simulated agent: latency and faults drawn from a fault model, outputs generated
    /// from each capability's output schema (see [`muster_sim`]).
    Sim(SimBackend),
    /// A model behind an OpenAI-compatible chat-completions endpoint (see
    /// [`muster_llm`]).
    Llm(LlmConfig),
    /// An MCP server whose tools serve the capabilities (see [`muster_mcp`]).
    Mcp(McpConfig),
    /// A remote A2A agent whose skills serve the capabilities (see [`muster_a2a`]).
    A2a(A2aConfig),
}

/// The `[backend]` of a simulated agent: a [`FaultModel`] plus an optional seed, all at
/// the same level of the table (`kind = "sim"`, `seed = 7`, `crash = 0.1`,
/// `[backend.latency]`...).
///
/// # Example
/// ```
/// use muster_cast::BackendSpec;
///
/// let b: BackendSpec = serde_json::from_value(serde_json::json!({"kind": "sim", "seed": 7,
///     "crash": 0.1, "latency": {"kind": "fixed", "value": "2s"}})).unwrap();
/// let BackendSpec::Sim(sim) = b else { panic!("a sim backend") };
/// assert_eq!((sim.seed, sim.model.crash), (Some(7), 0.1));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SimBackend {
    /// The seed of the agent's draws (default 0); instances are seeded apart from it.
    pub seed: Option<u64>,
    /// How the agent behaves.
    pub model: FaultModel,
}

impl Serialize for SimBackend {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            seed: Option<u64>,
            #[serde(flatten)]
            model: &'a FaultModel,
        }
        Flat {
            seed: self.seed,
            model: &self.model,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SimBackend {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // `seed` is taken out first so the fault model can still refuse unknown fields
        // (serde's `flatten` cannot be combined with `deny_unknown_fields`).
        let mut map = serde_json::Map::<String, Value>::deserialize(d)?;
        let seed =
            match map.remove("seed") {
                None => None,
                Some(v) => Some(u64::deserialize(v).map_err(|e| {
                    D::Error::custom(format!("seed: {e} (expected an integer >= 0)"))
                })?),
            };
        let model = FaultModel::deserialize(Value::Object(map)).map_err(D::Error::custom)?;
        Ok(SimBackend { seed, model })
    }
}

fn one() -> usize {
    1
}
fn sixty_four() -> usize {
    64
}

/// One agent type, as written in `actors/NAME.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Agent type name; instances are `name#0`...
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Supervised instances.
    #[serde(default = "one")]
    pub replicas: usize,
    /// Tasks at once per instance.
    #[serde(default = "one")]
    pub concurrency: usize,
    /// Tasks queued per instance beyond `concurrency`.
    #[serde(default = "sixty_four")]
    pub mailbox: usize,
    /// Restart type of each instance.
    #[serde(default)]
    pub restart: Restart,
    /// The supervisor of its instances.
    #[serde(default)]
    pub supervision: Option<Supervision>,
    /// Instances must report liveness this often or drop out.
    #[serde(default, with = "muster_core::util::opt_duration")]
    pub liveness: Option<Duration>,
    /// Capabilities.
    pub capabilities: Vec<CapabilitySpec>,
    /// Backend.
    pub backend: BackendSpec,
    /// The tools its MCP server offers, listed when the manifest was loaded (empty for
    /// other backends).
    #[serde(skip)]
    pub tools: Vec<ToolInfo>,
    /// The schemas it brings, `(name, document)`: an MCP backend's tool schemas taken for
    /// capabilities that left theirs out (see [`muster_mcp::input_schema_name`]).
    #[serde(skip)]
    pub schemas: Vec<(String, Value)>,
}

/// One problem with one manifest file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ManifestError {
    /// The file.
    pub file: PathBuf,
    /// The field (a JSON pointer or dotted path; `/` for the whole file).
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Every problem found in a cast.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[error("{}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct CastError {
    /// The problems, file by file.
    pub errors: Vec<ManifestError>,
}

/// The most supervised instances one agent type may declare (`replicas`).
pub const MAX_REPLICAS: usize = 100_000;
/// The most tasks one instance may run at once (`concurrency`).
pub const MAX_CONCURRENCY: usize = 10_000;
/// The most tasks one instance may hold queued beyond its concurrency (`mailbox`).
pub const MAX_MAILBOX: usize = 1_000_000;
/// The most instances a whole cast (every manifest of an actors directory, or a
/// scenario's `[[agents]]`) may declare together.
pub const MAX_CAST_INSTANCES: usize = 1_000_000;

/// The type a manifest field must have, for the fields whose value the `config` crate
/// would otherwise coerce (`2.5` or `true` into an integer, `007` into `"7"`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum FieldType {
    /// A whole number >= 0 (`replicas`, `concurrency`, `mailbox`, `intensity`, `seed`).
    Count,
    /// A finite number (probabilities, `mu`, `sigma`).
    Number,
    /// A number of seconds or a humantime string (the simulated agents' durations).
    Seconds,
    /// A humantime string, or a whole number of milliseconds.
    Duration,
    /// Any text (names, programs, enums: their own parsers check them).
    Text,
}

fn field_type(path: &[&str]) -> FieldType {
    match path {
        ["replicas" | "concurrency" | "mailbox"]
        | ["supervision", "intensity"]
        | [
            "backend",
            "seed" | "repair" | "max_tokens" | "max_tool_rounds",
        ]
        | [
            "backend",
            "limits",
            "concurrency" | "requests_per_minute" | "tokens_per_minute",
        ] => FieldType::Count,
        [
            "backend",
            "crash" | "hang" | "error" | "violate" | "late" | "crash_after_effect" | "temperature",
        ]
        | ["backend", "latency", "mu" | "sigma"]
        | ["backend", "price", "prompt" | "completion"] => FieldType::Number,
        ["backend", "late_by"]
        | [
            "backend",
            "latency",
            "value" | "min" | "max" | "mean" | "std_dev",
        ] => FieldType::Seconds,
        ["liveness"]
        | ["supervision", "period" | "backoff" | "shutdown"]
        | ["backend", "timeout" | "stream_idle"] => FieldType::Duration,
        _ => FieldType::Text,
    }
}

/// The value of an environment override, typed by the field it sets; `Err` says what the
/// field expects. The raw text is checked here because `config` would coerce it.
fn typed_override(path: &[&str], raw: &str) -> Result<config::ValueKind, String> {
    let is_count = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    match field_type(path) {
        FieldType::Count => match raw.parse::<u64>() {
            Ok(n) if is_count => Ok(config::ValueKind::U64(n)),
            _ => Err(format!("expected an integer >= 0 (a count), got \"{raw}\"")),
        },
        FieldType::Number => match raw.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(config::ValueKind::Float(x)),
            _ => Err(format!("expected a number, got \"{raw}\"")),
        },
        FieldType::Seconds => match raw.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(config::ValueKind::Float(x)),
            _ if humantime::parse_duration(raw).is_ok() => {
                Ok(config::ValueKind::String(raw.to_string()))
            }
            _ => Err(format!(
                "expected a number of seconds or a duration like \"250ms\", got \"{raw}\""
            )),
        },
        FieldType::Duration => match raw.parse::<u64>() {
            Ok(ms) if is_count => Ok(config::ValueKind::U64(ms)),
            _ if humantime::parse_duration(raw).is_ok() => {
                Ok(config::ValueKind::String(raw.to_string()))
            }
            _ => Err(format!("expected a duration like \"10s\", got \"{raw}\"")),
        },
        FieldType::Text => Ok(config::ValueKind::String(raw.to_string())),
    }
}

/// Whether a value written in the file has the type its field needs (the manifest schema
/// says so too, but the store may not hold it, and `config` coerces).
fn file_value_problem(path: &[&str], v: &Value) -> Option<String> {
    match (field_type(path), v) {
        (FieldType::Count, Value::Number(n)) if n.is_u64() => None,
        (FieldType::Count, other) => {
            Some(format!("expected an integer >= 0 (a count), got {other}"))
        }
        (FieldType::Number, Value::Number(_)) => None,
        (FieldType::Number, other) => Some(format!("expected a number, got {other}")),
        _ => None,
    }
}

/// Every typed field present in a manifest document, with its path.
fn typed_fields(doc: &Value) -> Vec<(Vec<&'static str>, &Value)> {
    const PATHS: &[&[&str]] = &[
        &["replicas"],
        &["concurrency"],
        &["mailbox"],
        &["supervision", "intensity"],
        &["backend", "seed"],
        &["backend", "crash"],
        &["backend", "hang"],
        &["backend", "error"],
        &["backend", "violate"],
        &["backend", "late"],
        &["backend", "latency", "mu"],
        &["backend", "latency", "sigma"],
        &["backend", "repair"],
        &["backend", "max_tokens"],
        &["backend", "max_tool_rounds"],
        &["backend", "temperature"],
    ];
    PATHS
        .iter()
        .filter_map(|path| {
            let mut v = doc;
            for k in path.iter() {
                v = v.get(k)?;
            }
            Some((path.to_vec(), v))
        })
        .collect()
}

/// An environment variable that overrides a manifest field.
#[derive(Debug, Clone)]
struct Override {
    /// The variable, e.g. `MUSTER_TESTER__REPLICAS`.
    variable: String,
    /// The field it sets, as a JSON pointer (`/replicas`).
    pointer: String,
}

/// The manifest schema shipped with muster (`schemas/manifest.schema.json`, built in).
fn shipped_schema() -> &'static SchemaStore {
    static STORE: std::sync::OnceLock<SchemaStore> = std::sync::OnceLock::new();
    // `the_shipped_manifest_schema_is_built_in` proves the text compiles.
    STORE.get_or_init(|| {
        SchemaStore::shipped(
            "manifest",
            include_str!("../../../schemas/manifest.schema.json"),
        )
    })
}

impl Manifest {
    /// Reads and checks one manifest. `env` overrides come from the process environment
    /// (pass `None`) or from the given map (tests).
    ///
    /// An override must have its field's type (`MUSTER_TESTER__REPLICAS=2.5` is refused,
    /// naming the variable and the field), and every count must be within its limit
    /// ([`MAX_REPLICAS`], [`MAX_CONCURRENCY`], [`MAX_MAILBOX`]) whether it comes from the
    /// file or from the environment.
    pub fn load(
        path: &Path,
        schemas: &SchemaStore,
        env: Option<config::Map<String, String>>,
    ) -> Result<Manifest, Vec<ManifestError>> {
        let err = |field: &str, message: String| ManifestError {
            file: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![err("/", format!("cannot read: {e}"))])?;
        let doc: toml::Table = toml::from_str(&text).map_err(|e| {
            vec![err(
                "/",
                format!("not valid TOML: {}", e.to_string().trim()),
            )]
        })?;
        let json = serde_json::to_value(&doc)
            .map_err(|e| vec![err("/", format!("cannot convert: {e}"))])?;
        // The caller's own manifest schema if its store has one, else the one muster ships:
        // a manifest is always checked field by field, whatever `--schemas` points at.
        let store = if schemas.contains("manifest") {
            schemas
        } else {
            shipped_schema()
        };
        if store.contains("manifest")
            && let Err(c) =
                store.validate_explained("manifest", &a2a::schema_view(mcp::schema_view(&json)))
        {
            return Err(c
                .errors
                .into_iter()
                .map(|v| {
                    let field = if v.instance_path.is_empty() {
                        "/".to_string()
                    } else {
                        v.instance_path
                    };
                    err(&field, v.message)
                })
                .collect());
        }
        let typed: Vec<ManifestError> = typed_fields(&json)
            .into_iter()
            .filter_map(|(p, v)| {
                file_value_problem(&p, v).map(|m| err(&format!("/{}", p.join("/")), m))
            })
            .collect();
        if !typed.is_empty() {
            return Err(typed);
        }
        let name = doc.get("name").and_then(|n| n.as_str()).unwrap_or("agent");
        let prefix = format!("MUSTER_{}", name.to_uppercase().replace('-', "_"));
        // The overrides are read as text (no parsing) and typed by the field they set:
        // `config`'s own parsing would turn `2.5` or `true` into a count.
        use config::Source;
        let raw = config::Environment::with_prefix(&prefix)
            .prefix_separator("__")
            .separator("__")
            .source(env)
            .collect()
            .map_err(|e| vec![err("/", e.to_string())])?;
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml));
        let mut overrides = Vec::new();
        let mut problems = Vec::new();
        let mut keys: Vec<_> = raw.into_iter().collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in keys {
            let variable = format!("{prefix}__{}", key.to_uppercase().replace('.', "__"));
            let pointer = format!("/{}", key.replace('.', "/"));
            let text = value.into_string().unwrap_or_default();
            let segments: Vec<&str> = key.split('.').collect();
            match typed_override(&segments, &text) {
                Ok(v) => match builder.set_override(&key, v) {
                    Ok(b) => builder = b,
                    Err(e) => {
                        problems.push(err(&pointer, format!("{variable}: {e}")));
                        builder = config::Config::builder();
                    }
                },
                Err(m) => problems.push(err(&pointer, format!("{variable}: {m}"))),
            }
            overrides.push(Override { variable, pointer });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        // An error names the variables behind it: an override of the field itself, of a
        // field under it (an error at `/backend` for `MUSTER_X__BACKEND__KIND`) or above
        // it; an error about the whole document names every override in effect.
        let set_by = |field: &str| {
            let vars: Vec<&str> = overrides
                .iter()
                .filter(|o| {
                    field == "/"
                        || o.pointer == field
                        || o.pointer.starts_with(&format!("{field}/"))
                        || field.starts_with(&format!("{}/", o.pointer))
                })
                .map(|o| o.variable.as_str())
                .collect();
            match (vars.is_empty(), field) {
                (true, _) => String::new(),
                (false, "/") => format!(" (environment overrides in effect: {})", vars.join(", ")),
                (false, _) => format!(" (set by {})", vars.join(", ")),
            }
        };
        let built = builder.build().map_err(|e| {
            let field = field_of(&e);
            let by = set_by(&field);
            vec![err(&field, format!("{e}{by}"))]
        })?;
        // The overridden document is checked against the schema for fields it does not
        // have: an override of a field the backend lacks (`MUSTER_X__BACKEND__BASEURL`) is
        // refused naming its variable, not silently ignored. Only violations at an
        // overridden field count (the file itself passed above).
        if !overrides.is_empty()
            && store.contains("manifest")
            && let Ok(merged) = built.clone().try_deserialize::<Value>()
            && let Err(c) =
                store.validate_explained("manifest", &a2a::schema_view(mcp::schema_view(&merged)))
        {
            let bad: Vec<ManifestError> = c
                .errors
                .into_iter()
                // Types are checked above, by the field's own rules (a duration
                // may be whole milliseconds here); what is left is a field the
                // manifest does not have.
                .filter(|v| !v.instance_path.is_empty())
                .filter(|v| v.message.starts_with("unknown field"))
                .filter_map(|v| {
                    let by = set_by(&v.instance_path);
                    (!by.is_empty()).then(|| err(&v.instance_path, format!("{}{by}", v.message)))
                })
                .collect();
            if !bad.is_empty() {
                return Err(bad);
            }
        }
        let is_mcp = doc
            .get("backend")
            .and_then(|b| b.get("kind"))
            .and_then(|k| k.as_str())
            == Some("mcp");
        let is_a2a = doc
            .get("backend")
            .and_then(|b| b.get("kind"))
            .and_then(|k| k.as_str())
            == Some("a2a");
        let m: Manifest = if is_mcp {
            // The capabilities' tools are resolved against the server's list first: an
            // omitted schema becomes the tool's, registered under a stable name.
            let mut merged: Value = built.try_deserialize().map_err(|e| {
                let field = field_of(&e);
                let by = set_by(&field);
                vec![err(&field, format!("{e}{by}"))]
            })?;
            let (tools, brought) = mcp::prepare(&mut merged, schemas).map_err(|es| {
                es.into_iter()
                    .map(|(f, message)| {
                        let by = set_by(&f);
                        err(&f, format!("{message}{by}"))
                    })
                    .collect::<Vec<_>>()
            })?;
            let mut m: Manifest =
                serde_json::from_value(merged).map_err(|e| vec![err("/", e.to_string())])?;
            m.tools = tools;
            m.schemas = brought;
            m
        } else if is_a2a {
            let mut merged: Value = built.try_deserialize().map_err(|e| {
                let field = field_of(&e);
                let by = set_by(&field);
                vec![err(&field, format!("{e}{by}"))]
            })?;
            // An A2A capability's `skill` becomes the backend's mapping.
            a2a::prepare(&mut merged).map_err(|es| {
                es.into_iter()
                    .map(|(f, message)| {
                        let by = set_by(&f);
                        err(&f, format!("{message}{by}"))
                    })
                    .collect::<Vec<_>>()
            })?;
            serde_json::from_value(merged).map_err(|e| vec![err("/", e.to_string())])?
        } else {
            built.try_deserialize().map_err(|e| {
                let field = field_of(&e);
                let by = set_by(&field);
                vec![err(&field, format!("{e}{by}"))]
            })?
        };

        for (field, message) in m.limit_problems() {
            let by = set_by(&field);
            problems.push(err(&field, format!("{message}{by}")));
        }
        if m.capabilities.is_empty() {
            problems.push(err(
                "/capabilities",
                "declare at least one capability".into(),
            ));
        }
        for (i, c) in m.capabilities.iter().enumerate() {
            if let Err(e) = c.compile(schemas) {
                let field = match &e {
                    muster_core::messaging::CapabilityError::Schema { field, .. } => {
                        format!("/capabilities/{i}/{field}")
                    }
                    _ => format!("/capabilities/{i}/accept"),
                };
                problems.push(err(&field, e.to_string()));
            }
        }
        match &m.backend {
            BackendSpec::Function { name } if super::builtins::builtin(name).is_none() => problems
                .push(err(
                    "/backend/name",
                    format!(
                        "no built-in function agent `{name}`; expected one of: {}{}",
                        super::builtins::NAMES.join(", "),
                        set_by("/backend/name")
                    ),
                )),
            BackendSpec::Sim(sim) => {
                for p in sim.model.problems() {
                    let field = format!("/backend{}", p.pointer());
                    let by = set_by(&field);
                    problems.push(err(&field, format!("{}{by}", p.message)));
                }
            }
            BackendSpec::Llm(config) => {
                // The config and its templates are checked as the runtime will use them.
                let schemas = Arc::new(schemas.clone());
                if let Err(es) = LlmFactory::new(config.clone(), m.outputs(), schemas) {
                    for (f, message) in es {
                        let field = format!("/backend{f}");
                        let by = set_by(&field);
                        problems.push(err(&field, format!("{message}{by}")));
                    }
                }
            }
            _ => {}
        }
        if problems.is_empty() {
            Ok(m)
        } else {
            Err(problems)
        }
    }

    /// The counts (and other sizes) beyond their limits, as `(JSON pointer, message)`:
    /// `replicas` in 1..=[`MAX_REPLICAS`], `concurrency` in 1..=[`MAX_CONCURRENCY`],
    /// `mailbox` at most [`MAX_MAILBOX`], every duration at most [`MAX_DURATION`].
    /// Checked by [`Manifest::load`] and by a scenario's `[[agents]]`.
    pub fn limit_problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut count = |field: &str, value: usize, min: usize, max: usize, what: &str| {
            if value < min {
                out.push((field.to_string(), format!("must be at least {min}")));
            } else if value > max {
                out.push((
                    field.to_string(),
                    format!("{value} is above the limit of {max} {what}"),
                ));
            }
        };
        count(
            "/replicas",
            self.replicas,
            1,
            MAX_REPLICAS,
            "instances per agent type",
        );
        count(
            "/concurrency",
            self.concurrency,
            1,
            MAX_CONCURRENCY,
            "tasks at once per instance",
        );
        count(
            "/mailbox",
            self.mailbox,
            0,
            MAX_MAILBOX,
            "queued tasks per instance",
        );
        let mut durations: Vec<(String, Duration)> = Vec::new();
        if let Some(s) = &self.supervision {
            durations.push(("/supervision/period".into(), s.period));
            durations.push(("/supervision/backoff".into(), s.backoff));
            durations.push(("/supervision/shutdown".into(), s.shutdown));
        }
        if let Some(l) = self.liveness {
            durations.push(("/liveness".into(), l));
        }
        for (i, c) in self.capabilities.iter().enumerate() {
            if let Some(h) = c.heartbeat {
                durations.push((format!("/capabilities/{i}/heartbeat"), h));
            }
        }
        for (field, d) in durations {
            if d > MAX_DURATION {
                out.push((
                    field,
                    format!(
                        "{} is above the limit of {}",
                        humantime::format_duration(d),
                        humantime::format_duration(MAX_DURATION)
                    ),
                ));
            }
        }
        out
    }

    /// Each capability with the name of its output schema.
    fn outputs(&self) -> std::collections::HashMap<String, String> {
        self.capabilities
            .iter()
            .map(|c| (c.name.clone(), c.output.clone()))
            .collect()
    }

    /// The agent type this manifest declares. `schemas` holds the capabilities' output
    /// schemas, from which a simulated agent generates its outputs.
    pub fn to_def(&self, schemas: &Arc<SchemaStore>) -> Result<AgentDef, BackendError> {
        let factory: Arc<dyn muster_core::agents::AgentFactory> = match &self.backend {
            BackendSpec::Function { name } => super::builtins::builtin(name)
                .map(Arc::from)
                .ok_or_else(|| BackendError::NoBuiltin { name: name.clone() })?,
            BackendSpec::Command(c) => Arc::new(CommandFactory(c.clone())),
            BackendSpec::Mcp(c) => Arc::new(McpFactory::new(c.clone())),
            BackendSpec::A2a(c) => Arc::new(A2aFactory::new(c.clone())),
            BackendSpec::Llm(c) => Arc::new(
                LlmFactory::new(c.clone(), self.outputs(), schemas.clone())
                    .map_err(|problems| BackendError::Llm { problems })?,
            ),
            BackendSpec::Sim(sim) => Arc::new(SimFactory {
                model: sim.model.clone(),
                seed: sim.seed.unwrap_or(0),
                outputs: self
                    .capabilities
                    .iter()
                    .map(|c| (c.name.clone(), c.output.clone()))
                    .collect(),
                schemas: schemas.clone(),
            }),
        };
        Ok(AgentDef {
            name: self.name.clone(),
            description: self.description.clone(),
            replicas: self.replicas,
            concurrency: self.concurrency,
            mailbox: self.mailbox,
            restart: self.restart,
            capabilities: self.capabilities.clone(),
            supervision: self.supervision.clone().unwrap_or_default(),
            liveness: self.liveness,
            factory,
            schemas: self.schemas.clone(),
            layer: None,
        })
    }
}

/// A manifest that loaded but whose backend cannot make agents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// `kind = "function"` names no built-in agent.
    #[error("no built-in function agent `{name}`")]
    NoBuiltin {
        /// The name given.
        name: String,
    },
    /// The LLM backend's settings do not hold together: each problem is a field under
    /// `/backend` and what is wrong with it.
    #[error("{}", problems.iter().map(|(f, m)| format!("/backend{f}: {m}")).collect::<Vec<_>>().join("; "))]
    Llm {
        /// `(field, message)` pairs.
        problems: Vec<(String, String)>,
    },
}

fn field_of(e: &config::ConfigError) -> String {
    let s = e.to_string();
    // config names the key as "for key `a.b`"
    if let Some(i) = s.find("for key `") {
        let rest = &s[i + 9..];
        if let Some(j) = rest.find('`') {
            return format!("/{}", rest[..j].replace('.', "/"));
        }
    }
    "/".into()
}

/// An environment variable shaped like a manifest override, `MUSTER_<AGENT>__<FIELD>`,
/// whose agent the cast does not have: nothing reads it, so it is reported (a warning, or
/// an error under `--strict`) rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownOverride {
    /// The variable, e.g. `MUSTER_CLASIFIER__BACKEND__BASE_URL`.
    pub variable: String,
    /// The agent part of it as written (`CLASIFIER`).
    pub agent: String,
    /// The cast's agent whose name is closest to it, if one is close.
    pub closest: Option<String>,
}

impl std::fmt::Display for UnknownOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the cast has no agent `{}` for this override",
            self.variable, self.agent
        )?;
        match &self.closest {
            Some(c) => write!(
                f,
                "; did you mean agent `{c}` (MUSTER_{}__...)?",
                env_prefix(c)
            ),
            None => Ok(()),
        }
    }
}

/// An agent's part of its override variables: its name upper-cased, `-` as `_`.
fn env_prefix(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

/// Every variable of `vars` shaped like an override (`MUSTER_<AGENT>__<FIELD>`) whose
/// `<AGENT>` is no agent of `cast`, each with the closest agent name; sorted by variable.
///
/// # Example
/// ```
/// use muster_cast::manifest::unknown_overrides;
///
/// let vars = [
///     ("MUSTER_CLASIFIER__BACKEND__BASE_URL".to_string(), "http://x".to_string()),
///     ("MUSTER_TOKEN".to_string(), "not an override".to_string()),
/// ];
/// let found = unknown_overrides(["classifier", "replier"], vars);
/// assert_eq!(found.len(), 1);
/// assert_eq!(found[0].closest.as_deref(), Some("classifier"));
/// assert!(found[0].to_string().contains("did you mean agent `classifier`"));
/// ```
pub fn unknown_overrides<'a>(
    agents: impl IntoIterator<Item = &'a str>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<UnknownOverride> {
    let names: Vec<(String, &str)> = agents.into_iter().map(|n| (env_prefix(n), n)).collect();
    let mut out: Vec<UnknownOverride> = vars
        .into_iter()
        .filter_map(|(variable, _)| {
            let rest = variable.strip_prefix("MUSTER_")?;
            let (agent, field) = rest.split_once("__")?;
            if agent.is_empty() || field.is_empty() || names.iter().any(|(p, _)| p == agent) {
                return None;
            }
            let closest =
                muster_core::messaging::did_you_mean(agent, names.iter().map(|(p, _)| p.as_str()))
                    .and_then(|p| {
                        names
                            .iter()
                            .find(|(q, _)| *q == p)
                            .map(|(_, n)| n.to_string())
                    });
            Some(UnknownOverride {
                agent: agent.to_string(),
                variable,
                closest,
            })
        })
        .collect();
    out.sort_by(|a, b| a.variable.cmp(&b.variable));
    out
}

/// Loads every `*.toml` in `dir` (sorted by file name), checking all of them before
/// returning any: on error, every problem of every file is reported. The cast is checked
/// as a whole too: agent names are unique, a capability declared by several manifests
/// has one contract (schemas, version, acceptance rule), and the instances in all are at
/// most [`MAX_CAST_INSTANCES`].
pub fn load_cast(dir: &Path, schemas: &SchemaStore) -> Result<Vec<(PathBuf, Manifest)>, CastError> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            return Err(CastError {
                errors: vec![ManifestError {
                    file: dir.to_path_buf(),
                    field: "/".into(),
                    message: format!("cannot read the actors directory: {e}"),
                }],
            });
        }
    };
    files.sort();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match Manifest::load(&f, schemas, None) {
            Ok(m) => out.push((f, m)),
            Err(es) => errors.extend(es),
        }
    }
    let instances = out
        .iter()
        .fold(0usize, |n, (_, m)| n.saturating_add(m.replicas));
    if errors.is_empty() && instances > MAX_CAST_INSTANCES {
        errors.push(ManifestError {
            file: dir.to_path_buf(),
            field: "/replicas".into(),
            message: format!(
                "the cast declares {instances} instances in all, above the limit of \
                 {MAX_CAST_INSTANCES}; lower some agent's `replicas`"
            ),
        });
    }
    let mut seen = std::collections::HashMap::new();
    for (f, m) in &out {
        if let Some(prev) = seen.insert(m.name.clone(), f.clone()) {
            errors.push(ManifestError {
                file: f.clone(),
                field: "/name".into(),
                message: format!("agent `{}` is also declared in {}", m.name, prev.display()),
            });
        }
    }
    errors.extend(contract_conflicts(&out, schemas));
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(CastError { errors })
    }
}

/// Every capability declared twice in a cast (by two agent types, or twice by one) with
/// different contracts, each reported at the later declaration naming both files and
/// what differs: the runtime would refuse the second registration, after registering
/// (and journaling) the first.
fn contract_conflicts(cast: &[(PathBuf, Manifest)], schemas: &SchemaStore) -> Vec<ManifestError> {
    let mut first: std::collections::HashMap<
        &str,
        (&Path, &str, muster_core::messaging::Capability),
    > = std::collections::HashMap::new();
    let mut errors = Vec::new();
    for (file, m) in cast {
        for (i, spec) in m.capabilities.iter().enumerate() {
            match first.get(spec.name.as_str()) {
                None => {
                    // Every capability of a loaded manifest compiles (checked at load).
                    if let Ok(c) = spec.compile(schemas) {
                        first.insert(&spec.name, (file, &m.name, c));
                    }
                }
                Some((first_file, first_agent, contract)) => {
                    // A spec that does not compile is reported where it is loaded.
                    let differs = spec
                        .compile(schemas)
                        .map_or(Ok(()), |c| contract.same_contract(&c));
                    if let Err(what) = differs {
                        errors.push(ManifestError {
                            file: file.clone(),
                            field: format!("/capabilities/{i}"),
                            message: format!(
                                "capability `{}`: agent `{}` declares it here with a \
                                 different contract than agent `{first_agent}` in {} ({what}, \
                                 there vs here); agents serving one capability must agree on \
                                 its contract",
                                spec.name,
                                m.name,
                                first_file.display()
                            ),
                        });
                    }
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod shipped_schema_tests {
    #[test]
    fn the_shipped_manifest_schema_is_built_in() {
        assert!(super::shipped_schema().contains("manifest"));
    }

    #[test]
    fn an_unknown_backend_field_names_the_kind_what_it_accepts_and_a_guess() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.toml");
        std::fs::write(
            &path,
            "name = \"a\"\n[[capabilities]]\nname = \"echo\"\ninput = \"any\"\n\
             output = \"any\"\n[backend]\nkind = \"llm\"\nbase_url = \"http://x\"\n\
             model = \"m\"\nprompt = \"p\"\ntemprature = 0.5\n",
        )
        .unwrap();
        let e = super::Manifest::load(&path, &muster_core::SchemaStore::new(), None).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "/backend/temprature");
        assert!(
            e[0].message.starts_with(
                "unknown field `temprature` (for kind = \"llm\"); kind = \"llm\" accepts: "
            ),
            "{e:?}"
        );
        assert!(
            e[0].message.ends_with("did you mean `temperature`?"),
            "{e:?}"
        );
        assert!(
            e[0].to_string().contains("a.toml: /backend/temprature: "),
            "{e:?}"
        );
    }
}
