//! Simulation scenarios: what `muster sim` runs, read from a TOML file and checked.
//!
//! Owns the scenario file format (`schemas/scenario.schema.json` documents it) and its
//! validation: the target (a workflow file or a bare capability) and its input, the task
//! or run count, the arrival process, the seed, the simulated cast (`[[agents]]`: an agent
//! manifest whose backend is a [`FaultModel`] written inline) and the runtime faults
//! (`[[faults]]`: an instance killed, an agent type dropping out and rejoining, at a
//! virtual time), the nodes agents run on (`node`) and the network between the runtime and
//! them (`[network]`: delay, loss, partitions; see [`NetworkModel`]). Every problem names
//! the file and the field. It must not run anything:
//! [`super::runner`] does.
//!
//! ```toml
//! name = "flaky-tests"
//! capability = "code.test"
//! input = { workspace = "/tmp/ws" }
//! tasks = 1000
//! seed = 7
//! arrival = { kind = "poisson", rate = 50.0 }   # per virtual second
//! timeout = "30s"
//! attempts = 3
//!
//! [[agents]]
//! name = "tester"
//! replicas = 4
//! crash = 0.05
//! latency = { kind = "lognormal", mu = 0.7, sigma = 0.5 }
//! [[agents.capabilities]]
//! name = "code.test"
//! input = "test-request"
//! output = "test-report"
//!
//! [[faults]]
//! at = "30s"
//! kill = "tester#0"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use muster_cast::{BackendSpec, MAX_CAST_INSTANCES, Manifest, SimBackend};
use muster_core::messaging::SchemaStore;
use muster_sim::NetworkModel;
use muster_workflow::Workflow;
use muster_workflow::definition::{MAX_ATTEMPTS, MAX_DURATION};

/// The keys of an `[[agents]]` entry that belong to its fault model (the rest is an
/// agent manifest).
const FAULT_KEYS: [&str; 9] = [
    "seed",
    "latency",
    "crash",
    "hang",
    "error",
    "violate",
    "late",
    "late_by",
    "crash_after_effect",
];

/// The most tasks (or runs) a scenario may drive, from the file or `--tasks`: the
/// simulation keeps every task's record until its tally.
pub const MAX_COUNT: u64 = 10_000_000;

/// One problem with a scenario file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}: {field}: {message}", .file.display())]
pub struct ScenarioError {
    /// The scenario file (or the file it refers to).
    pub file: PathBuf,
    /// The field, dotted (`agents[0].latency.std_dev`; `/` for the whole file).
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// How tasks (or runs) arrive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Arrival {
    /// Every task is submitted at virtual time 0.
    #[default]
    AllAtOnce,
    /// A Poisson process: exponential gaps with mean `1 / rate`.
    Poisson {
        /// Arrivals per virtual second.
        rate: f64,
    },
}

/// What the scenario drives.
#[derive(Debug, Clone)]
pub enum Target {
    /// Runs of a workflow, each with the same input.
    Workflow {
        /// The workflow, loaded and checked.
        workflow: Arc<Workflow>,
        /// The run input.
        input: Value,
    },
    /// Bare tasks for one capability.
    Capability {
        /// The capability.
        name: String,
        /// The task input.
        input: Value,
    },
}

/// A fault of the runtime itself, at a virtual time.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeFault {
    /// One agent instance is killed (its tasks fail over, its supervisor restarts it).
    Kill {
        /// Virtual time from the start.
        at: Duration,
        /// The instance, e.g. `tester#0`.
        instance: String,
    },
    /// An agent type drops out of the registry, and rejoins after a while if asked to.
    Drop {
        /// Virtual time from the start.
        at: Duration,
        /// The agent type.
        agent: String,
        /// When set, the agent type registers again this long after dropping out.
        rejoin_after: Option<Duration>,
    },
}

impl RuntimeFault {
    /// When the fault happens, from the start of the simulation.
    pub fn at(&self) -> Duration {
        match self {
            RuntimeFault::Kill { at, .. } | RuntimeFault::Drop { at, .. } => *at,
        }
    }
}

/// A checked scenario.
///
/// # Example
/// ```
/// use muster_scenario::Scenario;
/// use muster_core::SchemaStore;
///
/// # // Run from the repository root, as the `muster` binary is.
/// # std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).unwrap();
/// let schemas = SchemaStore::new();
/// schemas.load_dir("schemas").unwrap();
/// let s = Scenario::load("examples/scenarios/all-agents-fail.toml".as_ref(), &schemas).unwrap();
/// assert!(s.count > 0);
/// ```
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// The file it came from.
    pub file: PathBuf,
    /// What it drives.
    pub target: Target,
    /// How many runs (workflow) or tasks (capability).
    pub count: u64,
    /// How they arrive.
    pub arrival: Arrival,
    /// The seed of every draw (ids, arrivals, agents' faults).
    pub seed: u64,
    /// Per-attempt time bound of bare-capability tasks.
    pub timeout: Duration,
    /// Attempt budget of bare-capability tasks.
    pub attempts: u32,
    /// Backoff between attempts of bare-capability tasks.
    pub backoff: Duration,
    /// The longest virtual time the simulation may take; anything unfinished then is lost.
    pub horizon: Duration,
    /// The simulated cast (every backend is `sim`).
    pub agents: Vec<Manifest>,
    /// Faults of the runtime itself.
    pub faults: Vec<RuntimeFault>,
    /// Per `[[agents]]` entry (same order as `agents`), the node its instances run on;
    /// `None`: the runtime's own node, which the network does not reach.
    pub nodes: Vec<Option<String>>,
    /// The network between the runtime and the other nodes (`[network]`), if declared.
    pub network: Option<NetworkModel>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_attempts() -> u64 {
    3
}
fn default_horizon() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    workflow: Option<PathBuf>,
    capability: Option<String>,
    input: Option<Value>,
    input_file: Option<PathBuf>,
    runs: Option<u64>,
    tasks: Option<u64>,
    #[serde(default)]
    arrival: Arrival,
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_timeout", with = "muster_core::util::duration")]
    timeout: Duration,
    #[serde(default = "default_attempts")]
    attempts: u64,
    #[serde(default, with = "muster_core::util::duration")]
    backoff: Duration,
    #[serde(default = "default_horizon", with = "muster_core::util::duration")]
    horizon: Duration,
    #[serde(default)]
    agents: Vec<Value>,
    #[serde(default)]
    faults: Vec<RawFault>,
    network: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    #[serde(with = "muster_core::util::duration")]
    at: Duration,
    kill: Option<String>,
    drop: Option<String>,
    #[serde(default, with = "muster_core::util::opt_duration")]
    rejoin_after: Option<Duration>,
}

impl Scenario {
    /// Reads and checks a scenario file. `schemas` holds the capabilities' schemas (the
    /// cast's contracts and the input are checked against them). Paths in the file
    /// (`workflow`, `input_file`) are relative to the scenario file's folder.
    pub fn load(path: &Path, schemas: &SchemaStore) -> Result<Scenario, Vec<ScenarioError>> {
        let err = |field: &str, message: String| ScenarioError {
            file: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![err("/", format!("cannot read: {e}"))])?;
        Self::parse(&text, path, schemas)
    }

    /// Parses scenario TOML text (`path` names it in errors and anchors relative paths).
    pub fn parse(
        text: &str,
        path: &Path,
        schemas: &SchemaStore,
    ) -> Result<Scenario, Vec<ScenarioError>> {
        let err = |field: &str, message: String| ScenarioError {
            file: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        // The file is checked against the scenario schema first, so that a wrong value is
        // named at its root (`agents[0].latency`: the forms accepted), not by serde's
        // "did not match any variant", nor by what it breaks further on.
        if let Ok(table) = toml::from_str::<toml::Table>(text) {
            let store = if schemas.contains("scenario") {
                schemas
            } else {
                shipped_schema()
            };
            let doc = serde_json::to_value(&table).unwrap_or(Value::Null);
            if let Err(c) = store.validate_explained("scenario", &doc) {
                return Err(c
                    .errors
                    .into_iter()
                    .map(|v| {
                        let field = dotted(&v.instance_path);
                        let field = field.strip_prefix('.').unwrap_or(&field);
                        err(if field.is_empty() { "/" } else { field }, v.message)
                    })
                    .collect());
            }
        }
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let field = e
                .message()
                .split('`')
                .nth(1)
                .filter(|f| !f.is_empty() && e.message().starts_with("unknown field"))
                .map(str::to_string)
                // An unknown key that is empty (`"" = 0`) has no name to give: say so.
                .unwrap_or_else(|| {
                    if e.message().starts_with("unknown field ``") {
                        "\"\" (an empty key)".to_string()
                    } else {
                        "/".to_string()
                    }
                });
            vec![err(&field, e.to_string().trim().replace('\n', " "))]
        })?;
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut problems = Vec::new();

        let count = match (raw.runs, raw.tasks) {
            (Some(_), Some(_)) => {
                problems.push(err("tasks", "give `runs` or `tasks`, not both".into()));
                0
            }
            (Some(n), None) | (None, Some(n)) => n,
            (None, None) => 1,
        };
        let count_field = if raw.runs.is_some() { "runs" } else { "tasks" };
        if count == 0 {
            problems.push(err(count_field, "must be at least 1".into()));
        } else if count > MAX_COUNT {
            problems.push(err(
                count_field,
                format!(
                    "{count} is above the limit of {MAX_COUNT} (the tally keeps a record per task)"
                ),
            ));
        }
        if let Arrival::Poisson { rate } = raw.arrival
            && (!rate.is_finite() || rate <= 0.0)
        {
            problems.push(err(
                "arrival.rate",
                format!("must be a number above 0 (arrivals per virtual second; got {rate})"),
            ));
        }
        if raw.attempts == 0 {
            problems.push(err("attempts", "must be at least 1".into()));
        } else if raw.attempts > u64::from(MAX_ATTEMPTS) {
            problems.push(err(
                "attempts",
                format!("{} is above the limit of {MAX_ATTEMPTS}", raw.attempts),
            ));
        }
        if raw.timeout.is_zero() {
            problems.push(err("timeout", "must be more than zero".into()));
        }
        if raw.horizon.is_zero() {
            problems.push(err("horizon", "must be more than zero".into()));
        }
        let mut durations = vec![
            ("timeout".to_string(), raw.timeout),
            ("backoff".to_string(), raw.backoff),
            ("horizon".to_string(), raw.horizon),
        ];
        for (i, f) in raw.faults.iter().enumerate() {
            durations.push((format!("faults[{i}].at"), f.at));
            if let Some(r) = f.rejoin_after {
                durations.push((format!("faults[{i}].rejoin_after"), r));
            }
        }
        for (field, d) in durations {
            if d > MAX_DURATION {
                problems.push(err(
                    &field,
                    format!(
                        "{} is above the limit of {}",
                        humantime::format_duration(d),
                        humantime::format_duration(MAX_DURATION)
                    ),
                ));
            }
        }

        // The cast, each entry on its node.
        let mut agents = Vec::new();
        let mut nodes = Vec::new();
        let before_cast = problems.len();
        for (i, entry) in raw.agents.iter().enumerate() {
            let mut entry = entry.clone();
            let node = entry.as_object_mut().and_then(|m| m.remove("node"));
            let node = match node {
                None => None,
                Some(v) => match node_name(&v) {
                    Ok(n) => Some(n),
                    Err(m) => {
                        problems.push(err(&format!("agents[{i}].node"), m));
                        None
                    }
                },
            };
            match agent_manifest(&entry, schemas) {
                Ok(m) => {
                    agents.push(m);
                    nodes.push(node);
                }
                Err(es) => problems.extend(
                    es.into_iter()
                        .map(|(field, message)| err(&format!("agents[{i}]{field}"), message)),
                ),
            }
        }
        // An entry that did not load is the root cause of whatever names it further on
        // (a capability nobody serves, a fault on an unknown agent): only it is reported.
        let cast_loaded = problems.len() == before_cast;
        // One contract per capability, as the runtime requires when it registers them.
        let mut first: std::collections::HashMap<
            &str,
            (usize, &str, muster_core::messaging::Capability),
        > = std::collections::HashMap::new();
        for (i, a) in agents.iter().enumerate() {
            for (j, spec) in a.capabilities.iter().enumerate() {
                match first.get(spec.name.as_str()) {
                    Some((k, agent, c)) => {
                        // A spec that does not compile is reported with its agent.
                        let differs = spec
                            .compile(schemas)
                            .map_or(Ok(()), |theirs| c.same_contract(&theirs));
                        if let Err(what) = differs {
                            problems.push(err(
                                &format!("agents[{i}].capabilities[{j}]"),
                                format!(
                                    "capability `{}`: agent `{}` declares it with a different \
                                     contract than agents[{k}] (`{agent}`) ({what}, there vs \
                                     here); agents serving one capability must agree on its \
                                     contract",
                                    spec.name, a.name
                                ),
                            ));
                        }
                    }
                    None => {
                        if let Ok(c) = spec.compile(schemas) {
                            first.insert(&spec.name, (i, &a.name, c));
                        }
                    }
                }
            }
        }
        let instances = agents
            .iter()
            .fold(0usize, |n, m| n.saturating_add(m.replicas));
        if instances > MAX_CAST_INSTANCES {
            problems.push(err(
                "agents",
                format!(
                    "the simulated cast declares {instances} instances in all, above the limit \
                     of {MAX_CAST_INSTANCES}"
                ),
            ));
        }
        if raw.agents.is_empty() {
            problems.push(err(
                "agents",
                "declare at least one simulated agent ([[agents]])".into(),
            ));
        }
        for (i, a) in agents.iter().enumerate() {
            if agents[..i].iter().any(|b| b.name == a.name) {
                problems.push(err(
                    &format!("agents[{i}].name"),
                    format!("agent `{}` is declared twice", a.name),
                ));
            }
        }

        // The input.
        let input = match (&raw.input, &raw.input_file) {
            (Some(_), Some(_)) => {
                problems.push(err(
                    "input_file",
                    "give `input` or `input_file`, not both".into(),
                ));
                None
            }
            (Some(v), None) => Some(v.clone()),
            (None, Some(f)) => {
                let p = base.join(f);
                match std::fs::read_to_string(&p)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))
                    .and_then(|t| {
                        serde_json::from_str::<Value>(&t)
                            .map_err(|e| format!("{} is not JSON: {e}", p.display()))
                    }) {
                    Ok(v) => Some(v),
                    Err(m) => {
                        problems.push(err("input_file", m));
                        None
                    }
                }
            }
            (None, None) => None,
        };

        // The target.
        let target = match (&raw.workflow, &raw.capability) {
            (Some(_), Some(_)) | (None, None) => {
                problems.push(err(
                    "workflow",
                    "give exactly one of `workflow = \"path/to/workflow.toml\"` or `capability = \"name\"`"
                        .into(),
                ));
                None
            }
            (Some(w), None) => {
                let wpath = base.join(w);
                match Workflow::load(&wpath, schemas) {
                    Ok(wf) => {
                        let input = match input {
                            Some(v) => Some(v),
                            None => {
                                let p = wpath.with_file_name("input.json");
                                match std::fs::read_to_string(&p)
                                    .ok()
                                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                                {
                                    Some(v) => Some(v),
                                    None => {
                                        problems.push(err(
                                            "input",
                                            format!("give `input` or `input_file` (there is no readable {})", p.display()),
                                        ));
                                        None
                                    }
                                }
                            }
                        };
                        if let Some(v) = &input
                            && !wf.input.is_empty()
                            && let Err(e) = schemas.validate(&wf.input, v)
                        {
                            problems.push(err(
                                "input",
                                format!(
                                    "does not fit the workflow's input schema `{}`: {e}",
                                    wf.input
                                ),
                            ));
                        }
                        input.map(|input| Target::Workflow {
                            workflow: Arc::new(wf),
                            input,
                        })
                    }
                    Err(es) => {
                        for e in es {
                            problems.push(ScenarioError {
                                file: e.file,
                                field: format!("workflow: {}", e.at),
                                message: e.message,
                            });
                        }
                        None
                    }
                }
            }
            (None, Some(c)) => {
                let served = agents
                    .iter()
                    .flat_map(|a| a.capabilities.iter())
                    .find(|s| &s.name == c);
                match served {
                    None if !cast_loaded => None,
                    None => {
                        problems.push(err(
                            "capability",
                            format!("no agent in [[agents]] serves `{c}`"),
                        ));
                        None
                    }
                    Some(spec) => {
                        let input = input.unwrap_or(Value::Object(Default::default()));
                        if let Err(e) = schemas.validate(&spec.input, &input) {
                            problems.push(err(
                                "input",
                                format!("does not fit `{c}`'s input schema `{}`: {e}", spec.input),
                            ));
                        }
                        Some(Target::Capability {
                            name: c.clone(),
                            input,
                        })
                    }
                }
            }
        };

        // Runtime faults.
        let mut faults = Vec::new();
        for (i, f) in raw.faults.iter().enumerate() {
            let at = |field: &str| format!("faults[{i}].{field}");
            match (&f.kill, &f.drop) {
                (Some(inst), None) => {
                    if f.rejoin_after.is_some() {
                        problems.push(err(
                            &at("rejoin_after"),
                            "only a `drop` fault rejoins (a killed instance is restarted by its supervisor)".into(),
                        ));
                    }
                    let known = agents.iter().any(|a| {
                        inst.strip_prefix(a.name.as_str())
                            .and_then(|r| r.strip_prefix('#'))
                            .and_then(|n| n.parse::<usize>().ok())
                            .is_some_and(|n| n < a.replicas)
                    });
                    if !known && cast_loaded {
                        problems.push(err(
                            &at("kill"),
                            format!("`{inst}` is not an instance of the cast (expected NAME#INDEX, e.g. `{}#0`)",
                                agents.first().map_or("agent", |a| a.name.as_str())),
                        ));
                    }
                    faults.push(RuntimeFault::Kill {
                        at: f.at,
                        instance: inst.clone(),
                    });
                }
                (None, Some(agent)) => {
                    if cast_loaded && !agents.iter().any(|a| &a.name == agent) {
                        problems.push(err(
                            &at("drop"),
                            format!("`{agent}` is not an agent type of the cast"),
                        ));
                    }
                    faults.push(RuntimeFault::Drop {
                        at: f.at,
                        agent: agent.clone(),
                        rejoin_after: f.rejoin_after,
                    });
                }
                _ => problems.push(err(
                    &format!("faults[{i}]"),
                    "give exactly one of `kill = \"NAME#INDEX\"` or `drop = \"NAME\"`".into(),
                )),
            }
        }
        // Applied in time order (stable: ties keep file order).
        faults.sort_by_key(RuntimeFault::at);

        let network = raw
            .network
            .as_ref()
            .and_then(|v| network_model(v, &nodes, &mut |f, m| problems.push(err(f, m))));

        match target {
            Some(target) if problems.is_empty() => Ok(Scenario {
                name: raw.name,
                description: raw.description,
                file: path.to_path_buf(),
                target,
                count,
                arrival: raw.arrival,
                seed: raw.seed,
                timeout: raw.timeout,
                attempts: raw.attempts as u32,
                backoff: raw.backoff,
                horizon: raw.horizon,
                agents,
                faults,
                nodes,
                network,
            }),
            _ => Err(problems),
        }
    }

    /// Whether the scenario drives workflow runs (rather than bare tasks).
    pub fn is_workflow(&self) -> bool {
        matches!(self.target, Target::Workflow { .. })
    }
}

/// The longest node name.
const MAX_NODE_NAME: usize = 64;

/// An agent's `node`: a short name of lower-case letters, digits, `-` and `_`.
fn node_name(v: &Value) -> Result<String, String> {
    let Some(s) = v.as_str() else {
        return Err(format!(
            "must be a node name in quotes, e.g. \"n1\" (got {v})"
        ));
    };
    let ok = !s.is_empty()
        && s.len() <= MAX_NODE_NAME
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a node name: 1 to {MAX_NODE_NAME} lower-case letters, digits, `-` or `_`"
        ))
    }
}

/// The `[network]` table, checked against the cast's nodes; problems go to `problem`
/// (field, message) and make it `None`.
fn network_model(
    v: &Value,
    nodes: &[Option<String>],
    problem: &mut dyn FnMut(&str, String),
) -> Option<NetworkModel> {
    let model = match NetworkModel::deserialize(v) {
        Ok(m) => m,
        Err(e) => {
            let m = e.to_string();
            let field = m
                .split('`')
                .nth(1)
                .filter(|_| m.starts_with("unknown field") || m.starts_with("missing field"))
                .map_or("network".to_string(), |f| format!("network.{f}"));
            problem(&field, m);
            return None;
        }
    };
    let mut ok = true;
    for p in model.problems() {
        let field = if p.field.is_empty() {
            "network".to_string()
        } else {
            format!("network.{}", p.field)
        };
        problem(&field, p.message);
        ok = false;
    }
    let mut named: Vec<&str> = nodes.iter().flatten().map(String::as_str).collect();
    named.sort_unstable();
    named.dedup();
    if named.is_empty() {
        problem(
            "network",
            "no agent is on a node, so nothing crosses the network: give the agents behind it \
             `node = \"n1\"` (an agent without one runs on the runtime's own node)"
                .into(),
        );
        ok = false;
    }
    for (i, p) in model.partitions.iter().enumerate() {
        if !named.contains(&p.node.as_str()) && !named.is_empty() {
            problem(
                &format!("network.partitions[{i}].node"),
                format!(
                    "`{}` is not a node of the cast (its nodes: {})",
                    p.node,
                    named.join(", ")
                ),
            );
            ok = false;
        }
    }
    ok.then_some(model)
}

/// `/capabilities/0/heartbeat` → `.capabilities[0].heartbeat`.
fn dotted(pointer: &str) -> String {
    pointer
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.bytes().all(|b| b.is_ascii_digit()) {
                format!("[{s}]")
            } else {
                format!(".{s}")
            }
        })
        .collect()
}

/// The scenario schema shipped with muster (`schemas/scenario.schema.json`, built in).
fn shipped_schema() -> &'static SchemaStore {
    static STORE: std::sync::OnceLock<SchemaStore> = std::sync::OnceLock::new();
    // `the_shipped_scenario_schema_is_built_in` proves the text compiles.
    STORE.get_or_init(|| {
        SchemaStore::shipped(
            "scenario",
            include_str!("../../../schemas/scenario.schema.json"),
        )
    })
}

/// An `[[agents]]` entry as a manifest with a `sim` backend. Errors are
/// `(field suffix, message)`, the suffix starting with `.`.
fn agent_manifest(entry: &Value, schemas: &SchemaStore) -> Result<Manifest, Vec<(String, String)>> {
    let Value::Object(map) = entry else {
        return Err(vec![(String::new(), "must be a table".into())]);
    };
    let mut rest = map.clone();
    let mut backend = serde_json::Map::new();
    for k in FAULT_KEYS {
        if let Some(v) = rest.remove(k) {
            backend.insert(k.to_string(), v);
        }
    }
    if rest.contains_key("backend") {
        return Err(vec![(
            ".backend".into(),
            "a simulated agent has no `backend`: write its fault model (latency, crash, hang, error, violate, late, late_by, seed) in the entry itself".into(),
        )]);
    }
    let sim = SimBackend::deserialize(Value::Object(backend)).map_err(|e| {
        let m = e.to_string();
        let field = m
            .split('`')
            .nth(1)
            .filter(|_| m.starts_with("unknown field"))
            .map(|f| {
                if f.is_empty() {
                    ".\"\"".to_string()
                } else {
                    format!(".{f}")
                }
            })
            .unwrap_or_default();
        vec![(field, m)]
    })?;
    let mut problems: Vec<(String, String)> = sim
        .model
        .problems()
        .into_iter()
        .map(|p| {
            let f = if p.field.is_empty() {
                String::new()
            } else {
                format!(".{}", p.field)
            };
            (f, p.message)
        })
        .collect();
    rest.insert("backend".into(), serde_json::json!({"kind": "sim"}));
    let mut m: Manifest = serde_json::from_value(Value::Object(rest)).map_err(|e| {
        let m = e.to_string();
        let field = m
            .split('`')
            .nth(1)
            .filter(|_| m.starts_with("unknown field") || m.starts_with("missing field"))
            .map(|f| format!(".{f}"))
            .unwrap_or_default();
        vec![(field, m)]
    })?;
    m.backend = BackendSpec::Sim(sim);
    for (pointer, message) in m.limit_problems() {
        problems.push((dotted(&pointer), message));
    }
    if m.capabilities.is_empty() {
        problems.push((
            ".capabilities".into(),
            "declare at least one capability ([[agents.capabilities]])".into(),
        ));
    }
    for (i, c) in m.capabilities.iter().enumerate() {
        if let Err(e) = c.compile(schemas) {
            problems.push((format!(".capabilities[{i}]"), e.to_string()));
        }
    }
    if problems.is_empty() {
        Ok(m)
    } else {
        Err(problems)
    }
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

    const BASE: &str = r#"
name = "t"
capability = "code.test"
input = { workspace = "/tmp/w" }
tasks = 3
[[agents]]
name = "tester"
replicas = 2
[[agents.capabilities]]
name = "code.test"
input = "test-request"
output = "test-report"
"#;

    /// `extra` goes into the agent's table; `faults` at the end.
    fn parse_with(extra: &str, faults: &str) -> Result<Scenario, Vec<ScenarioError>> {
        let text = BASE.replacen("replicas = 2\n", &format!("replicas = 2\n{extra}"), 1);
        Scenario::parse(&format!("{text}{faults}"), Path::new("x.toml"), &store())
    }

    fn parse(extra: &str) -> Result<Scenario, Vec<ScenarioError>> {
        parse_with(extra, "")
    }

    #[test]
    fn a_minimal_scenario_parses() {
        let s = parse("").unwrap();
        assert_eq!(s.count, 3);
        assert_eq!(s.agents[0].replicas, 2);
        assert!(!s.is_workflow());
    }

    #[test]
    fn fault_model_problems_name_the_agent_field() {
        let e = parse("crash = 1.5\n").unwrap_err();
        assert_eq!(e[0].field, "agents[0].crash", "{e:?}");
        let e = parse("latency = { kind = \"normal\", mean = 1, std_dev = -1 }\n").unwrap_err();
        assert_eq!(e[0].field, "agents[0].latency.std_dev", "{e:?}");
        let e = parse("crsh = 0.1\n").unwrap_err();
        assert!(e[0].field.contains("crsh"), "{e:?}");
    }

    #[test]
    fn a_wrong_latency_value_names_the_field_and_the_forms_and_nothing_after() {
        let e = parse("latency = \"fast\"\n").unwrap_err();
        assert_eq!(e.len(), 1, "one root cause: {e:?}");
        assert_eq!(e[0].field, "agents[0].latency");
        assert_eq!(
            e[0].message,
            "expected a table with `kind` = one of: fixed, uniform, normal, lognormal, \
             exponential; got \"fast\""
        );
        let e = parse("latency = { kind = \"fixed\", valu = 1 }\n").unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "agents[0].latency.valu");
        assert!(e[0].message.ends_with("did you mean `value`?"), "{e:?}");
        let e = parse("latency = { kind = \"fixed\", value = true }\n").unwrap_err();
        assert_eq!(e[0].field, "agents[0].latency.value");
        assert!(
            e[0].message
                .starts_with("expected a number, or a duration string"),
            "{e:?}"
        );
    }

    #[test]
    fn the_shipped_scenario_schema_is_built_in() {
        assert!(shipped_schema().contains("scenario"));
    }

    #[test]
    fn faults_name_known_instances() {
        let e = parse_with("", "[[faults]]\nat = \"1s\"\nkill = \"tester#5\"\n").unwrap_err();
        assert_eq!(e[0].field, "faults[0].kill");
        let s = parse_with("", "[[faults]]\nat = \"9s\"\ndrop = \"tester\"\nrejoin_after = \"1s\"\n[[faults]]\nat = \"1s\"\nkill = \"tester#1\"\n").unwrap();
        assert_eq!(s.faults[0].at(), Duration::from_secs(1));
    }

    #[test]
    fn shipped_scenarios_load_and_fit_the_scenario_schema() {
        let schemas = store();
        for f in std::fs::read_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/scenarios"
        ))
        .unwrap()
        {
            let p = f.unwrap().path();
            if p.extension().is_none_or(|x| x != "toml") {
                continue;
            }
            Scenario::load(&p, &schemas).unwrap_or_else(|e| panic!("{}: {e:?}", p.display()));
            let doc: toml::Table = toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            let json = serde_json::to_value(doc).unwrap();
            schemas
                .validate("scenario", &json)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
}
