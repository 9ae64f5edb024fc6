//! `muster agents`: register the cast and list every instance.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{CastArgs, CliError, block_on};
use muster::SchemaStore;
use muster::agents::command::find_program;
use muster::cast::{BackendSpec, Manifest, load_cast, unknown_overrides};
use muster::runtime::{AgentDef, Muster, StartError};

/// Arguments of `muster agents`.
#[derive(Debug, clap::Args)]
pub struct AgentsArgs {
    /// Where the cast and schemas are.
    #[command(flatten)]
    pub cast: CastArgs,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
    /// List the agents of a node instead of starting the cast here.
    #[command(flatten)]
    pub server: super::client::ServerArgs,
}

/// Loads schemas and every manifest, checking all of them before registering any.
pub(crate) fn load(cast: &CastArgs) -> Result<(SchemaStore, Vec<AgentDef>), CliError> {
    load_manifests(cast).map(|(store, defs, _)| (store, defs))
}

/// Each manifest of the cast with its file.
pub(crate) type Manifests = Vec<(PathBuf, Manifest)>;

/// [`load`], also returning each manifest with its file (for messages that name it).
/// Environment overrides for no agent of the cast are warned about on stderr.
pub(crate) fn load_manifests(
    cast: &CastArgs,
) -> Result<(SchemaStore, Vec<AgentDef>, Manifests), CliError> {
    let (store, defs, manifests, warnings) = load_manifests_warning(cast)?;
    for w in warnings {
        eprintln!("{w}");
    }
    Ok((store, defs, manifests))
}

/// [`load_manifests`], returning the warnings about overrides for no agent (each line
/// starting `warning: `) instead of printing them, for `muster check` to report with its
/// own (`--json`: its `warnings` list).
pub(crate) fn load_manifests_warning(
    cast: &CastArgs,
) -> Result<(SchemaStore, Vec<AgentDef>, Manifests, Vec<String>), CliError> {
    let store = SchemaStore::new();
    load_schemas(&store, &cast.schemas)?;
    let manifests = load_cast(&cast.actors, &store).map_err(|e| {
        CliError::bad_input(
            format!("invalid cast in {}:\n{e}", cast.actors.display()),
            serde_json::to_value(&e.errors).unwrap_or_default(),
        )
    })?;
    let warnings = override_warnings(cast, &manifests)?;
    let mut defs = Vec::new();
    for (file, m) in &manifests {
        let def = m.to_def(&store.clone().into()).map_err(|e| {
            let message = e.to_string();
            CliError::bad_input(
                format!("{}: /backend: {message}", file.display()),
                json!({"file": file, "field": "/backend", "message": message}),
            )
        })?;
        defs.push(def);
    }
    Ok((store, defs, manifests, warnings))
}

/// Every `MUSTER_<AGENT>__<FIELD>` variable of this process whose agent the cast does not
/// have: a warning line each, or with `--strict` bad input (exit 2).
fn override_warnings(
    cast: &CastArgs,
    manifests: &[(PathBuf, Manifest)],
) -> Result<Vec<String>, CliError> {
    let unknown = unknown_overrides(
        manifests.iter().map(|(_, m)| m.name.as_str()),
        std::env::vars_os().filter_map(|(k, v)| {
            Some((k.into_string().ok()?, v.into_string().unwrap_or_default()))
        }),
    );
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let cast_dir = cast.actors.display();
    if cast.strict {
        let lines: Vec<String> = unknown.iter().map(|u| u.to_string()).collect();
        return Err(CliError::bad_input(
            format!(
                "environment overrides for no agent of the cast in {cast_dir} (--strict):\n{}",
                lines.join("\n")
            ),
            json!({"unknown_overrides": unknown}),
        ));
    }
    Ok(unknown
        .iter()
        .map(|u| format!("warning: {u} (cast in {cast_dir}); it is ignored (--strict refuses it)"))
        .collect())
}

/// Agent type name → its manifest file.
pub(crate) fn manifest_files(manifests: &[(PathBuf, Manifest)]) -> HashMap<String, PathBuf> {
    manifests
        .iter()
        .map(|(file, m)| (m.name.clone(), file.clone()))
        .collect()
}

/// Warnings about the cast that do not refuse a run: a command agent whose `program`
/// cannot be found from where it will run (PATH lookup, or a path relative to its
/// working directory from `base`, the directory muster runs in), naming the manifest.
pub(crate) fn program_warnings(manifests: &[(PathBuf, Manifest)], base: &Path) -> Vec<String> {
    manifests
        .iter()
        .filter_map(|(file, m)| match &m.backend {
            BackendSpec::Command(c) => find_program(c, base).err().map(|e| {
                format!(
                    "{}: /backend/program: agent `{}` cannot start: {e}",
                    file.display(),
                    m.name
                )
            }),
            _ => None,
        })
        .collect()
}

pub(crate) fn load_schemas(store: &SchemaStore, dir: &Path) -> Result<(), CliError> {
    store.load_dir(dir).map(|_| ()).map_err(|e| {
        CliError::bad_input(
            e.to_string(),
            json!({"schemas": dir, "message": e.to_string()}),
        )
    })
}

/// Starts a runtime on the current actix system with the given schemas and cast.
pub(crate) async fn start(schemas_dir: &Path, defs: Vec<AgentDef>) -> Result<Muster, CliError> {
    start_with(schemas_dir, 1, defs, None).await
}

/// [`start`] on `shards` shards, with a journal (the runtime's default, in memory,
/// otherwise).
pub(crate) async fn start_with(
    schemas_dir: &Path,
    shards: usize,
    defs: Vec<AgentDef>,
    journal: Option<std::sync::Arc<dyn muster::journal::Journal>>,
) -> Result<Muster, CliError> {
    start_naming(schemas_dir, shards, defs, journal, &HashMap::new()).await
}

/// [`start_with`], naming the manifest file (from `files`) of an agent type that fails
/// to start.
pub(crate) async fn start_naming(
    schemas_dir: &Path,
    shards: usize,
    defs: Vec<AgentDef>,
    journal: Option<std::sync::Arc<dyn muster::journal::Journal>>,
    files: &HashMap<String, PathBuf>,
) -> Result<Muster, CliError> {
    let mut b = Muster::builder().schemas_dir(schemas_dir).shards(shards);
    if let Some(j) = journal {
        b = b.journal(j);
    }
    for d in defs {
        b = b.agent(d);
    }
    b.start().await.map_err(|e| {
        let file = match &e {
            StartError::Agent { agent, .. } => files.get(agent),
            _ => None,
        };
        match file {
            Some(f) => {
                let message = format!("{}: {e}", f.display());
                CliError::bad_input(message.clone(), json!({"file": f, "message": message}))
            }
            None => CliError::bad_input(e.to_string(), json!({"message": e.to_string()})),
        }
    })
}

/// `muster agents --server`: the node's agents, printed as a local listing is.
fn remote(args: AgentsArgs) -> Result<(), CliError> {
    let client = super::client::Client::new(&args.server)?;
    let doc = block_on(async move { client.get("/v1/agents").await })?;
    if args.json {
        println!("{doc}");
        return Ok(());
    }
    println!(
        "{:<18} {:<9} {:>8}  {:<16} {:<20} OUTPUT",
        "INSTANCE", "STATE", "IN-FLIGHT", "CAPABILITY", "INPUT"
    );
    let agents = doc["agents"].as_array().cloned().unwrap_or_default();
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for a in &agents {
        for (i, c) in a["capabilities"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let (id, state, inflight) = if i == 0 {
                (s(&a["id"]), s(&a["state"]), s(&a["in_flight"]))
            } else {
                (String::new(), String::new(), String::new())
            };
            println!(
                "{:<18} {:<9} {:>8}  {:<16} {:<20} {}",
                id,
                state,
                inflight,
                s(&c["name"]),
                s(&c["input"]),
                s(&c["output"])
            );
        }
    }
    println!();
    println!(
        "{} instances, {} schemas loaded",
        agents.len(),
        doc["schemas"].as_array().map_or(0, |a| a.len())
    );
    Ok(())
}

/// Runs `muster agents`.
pub fn run(args: AgentsArgs) -> Result<(), CliError> {
    if args.server.server.is_some() {
        return remote(args);
    }
    let (store, defs) = load(&args.cast)?;
    let descriptions: Vec<(String, String)> = defs
        .iter()
        .map(|d| (d.name.clone(), d.description.clone()))
        .collect();
    let schemas = store.names();
    block_on(async move {
        let muster = start(&args.cast.schemas, defs).await?;
        let agents = muster.agents();
        if args.json {
            let doc = json!({
                "ok": true,
                "agents": agents,
                "capabilities": agents.iter().flat_map(|a| a.capabilities.iter().map(|c| c.name.clone())).collect::<std::collections::BTreeSet<_>>(),
                "schemas": schemas,
            });
            println!("{doc}");
        } else {
            println!(
                "{:<18} {:<9} {:>8}  {:<16} {:<20} OUTPUT",
                "INSTANCE", "STATE", "IN-FLIGHT", "CAPABILITY", "INPUT"
            );
            for a in &agents {
                for (i, c) in a.capabilities.iter().enumerate() {
                    let (id, state, inflight) = if i == 0 {
                        (a.id.clone(), a.state.to_string(), a.in_flight.to_string())
                    } else {
                        (String::new(), String::new(), String::new())
                    };
                    println!(
                        "{:<18} {:<9} {:>8}  {:<16} {:<20} {}",
                        id, state, inflight, c.name, c.input, c.output
                    );
                }
            }
            println!();
            for (name, desc) in descriptions {
                if !desc.is_empty() {
                    println!("{name}: {desc}");
                }
            }
            println!(
                "{} instances, {} schemas loaded",
                agents.len(),
                schemas.len()
            );
        }
        muster.shutdown().await;
        Ok(())
    })
}
