//! Agent manifests: one agent type per TOML file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agents::command::{CommandConfig, CommandFactory};
use crate::agents::sim::{FaultModel, SimFactory};
use crate::discovery::CapabilitySpec;
use crate::messaging::SchemaStore;
use crate::runtime::AgentDef;
use crate::supervision::{Restart, Supervision};

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
    /// from each capability's output schema (see [`crate::agents::sim`]).
    Sim(SimBackend),
}

/// The `[backend]` of a simulated agent: a [`FaultModel`] plus an optional seed, all at
/// the same level of the table (`kind = "sim"`, `seed = 7`, `crash = 0.1`,
/// `[backend.latency]`...).
///
/// # Example
/// ```
/// use muster::cast::BackendSpec;
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
    #[serde(default, with = "crate::util::opt_duration")]
    pub liveness: Option<Duration>,
    /// Capabilities.
    pub capabilities: Vec<CapabilitySpec>,
    /// Backend.
    pub backend: BackendSpec,
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

impl Manifest {
    /// Reads and checks one manifest. `env` overrides come from the process environment
    /// (pass `None`) or from the given map (tests).
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
        if schemas.contains("manifest") {
            if let Err(c) = schemas.validate("manifest", &json) {
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
        }
        let name = doc.get("name").and_then(|n| n.as_str()).unwrap_or("agent");
        let prefix = format!("MUSTER_{}", name.to_uppercase().replace('-', "_"));
        let built = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(&prefix)
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(env),
            )
            .build()
            .map_err(|e| vec![err("/", e.to_string())])?;
        let m: Manifest = built
            .try_deserialize()
            .map_err(|e| vec![err(&field_of(&e), e.to_string())])?;
        let mut problems = Vec::new();
        if m.replicas == 0 {
            problems.push(err("/replicas", "must be at least 1".into()));
        }
        if m.concurrency == 0 {
            problems.push(err("/concurrency", "must be at least 1".into()));
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
                    crate::messaging::CapabilityError::Schema { field, .. } => {
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
                        "no built-in function agent `{name}`; expected one of: {}",
                        super::builtins::NAMES.join(", ")
                    ),
                )),
            BackendSpec::Sim(sim) => {
                for p in sim.model.problems() {
                    problems.push(err(&format!("/backend{}", p.pointer()), p.message));
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

    /// The agent type this manifest declares. `schemas` holds the capabilities' output
    /// schemas, from which a simulated agent generates its outputs.
    pub fn to_def(&self, schemas: &Arc<SchemaStore>) -> Result<AgentDef, String> {
        let factory: Arc<dyn crate::agents::AgentFactory> = match &self.backend {
            BackendSpec::Function { name } => super::builtins::builtin(name)
                .map(Arc::from)
                .ok_or_else(|| format!("no built-in function agent `{name}`"))?,
            BackendSpec::Command(c) => Arc::new(CommandFactory(c.clone())),
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
            schemas: Vec::new(),
        })
    }
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

/// Loads every `*.toml` in `dir` (sorted by file name), checking all of them before
/// returning any: on error, every problem of every file is reported.
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
            })
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
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(CastError { errors })
    }
}
