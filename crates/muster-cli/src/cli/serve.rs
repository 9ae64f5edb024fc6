//! `muster serve`: loads the cast and the workflows (each checked as `muster check` does),
//! opens the journal, resumes its unfinished runs and serves the HTTP API until SIGINT or
//! SIGTERM ([`muster::serve`], docs/api.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use super::agents::{load, start_with};
use super::check::{findings, load_workflow, report as report_findings};
use super::run::{flush, open_journal, parse_durability};
use super::{CastArgs, CliError, EXIT_BAD_INPUT, EXIT_OK, block_on, interrupted};
use muster::cluster::failover::Failover;
use muster::cluster::{ClusterConfig, ClusterError, Control, Replicas, Replication};
use muster::journal::tap::DEFAULT_TAP_CAPACITY;
use muster::journal::{Durability, Journal, TapJournal};
use muster::serve::admission::{self, Limits};
use muster::serve::{GroupInfo, ServeConfig, Token, TokenSource, Tokens};
use muster::workflow::Workflow;

/// The most workflow files a node loads.
pub const MAX_WORKFLOWS: usize = 1000;

/// Arguments of `muster serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where the cast and schemas are.
    #[command(flatten)]
    pub cast: CastArgs,
    /// The runtime's settings.
    #[command(flatten)]
    pub runtime: super::RuntimeArgs,
    /// Workflows to serve: every `*.toml` in DIR and every `DIR/*/workflow.toml`.
    #[arg(long)]
    pub workflows: Option<PathBuf>,
    /// The journal (SQLite, created if absent; one process at a time).
    #[arg(long, default_value = ".muster/journal.db")]
    pub journal: PathBuf,
    /// `relaxed` or `sync` (see `muster run --help`).
    #[arg(long, default_value = "relaxed", value_parser = parse_durability)]
    pub durability: Durability,
    /// The address to listen on (loopback by default; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Serve HTTPS with this PEM certificate chain (the node's certificate first); needs
    /// --tls-key.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Read the API tokens from this file: one a line, `token role [name]`, role one of
    /// viewer, submitter, operator, admin (a token alone is an admin); blank lines and
    /// `#` comments are skipped (docs/api.md, "Roles").
    #[arg(long, conflicts_with = "token_env")]
    pub token_file: Option<PathBuf>,
    /// Read the API token (an admin's) from this environment variable (default:
    /// MUSTER_TOKEN, and when that is unset the file `token` beside the journal: reused
    /// when an earlier start left it, else generated into it, mode 0600).
    #[arg(long)]
    pub token_env: Option<String>,
    /// At most this many runs in flight on this node (started, resumed, or waiting at a
    /// gate); beyond it `POST /v1/runs` is answered 429 with Retry-After. 1 to 10000000.
    #[arg(long, default_value_t = admission::DEFAULT_MAX_RUNS, value_parser = parse_max_runs)]
    pub max_runs: usize,
    /// At most this many bare tasks in flight submitted through `POST /v1/tasks`; beyond
    /// it the API answers 429 with Retry-After. 1 to 10000000.
    #[arg(long, default_value_t = admission::DEFAULT_MAX_TASKS, value_parser = parse_max_tasks)]
    pub max_tasks: usize,
    /// Print one JSON line on start (`listen`, `token_file`, `workflows`, `resumed`; with
    /// `--nats`, `node`, `nats`, `replicas`, `replicas_setting`, `replicas_of` and
    /// `replica_notes`).
    #[arg(long)]
    pub json: bool,
    /// Run as the control node of a cluster on this NATS server (JetStream): the cast's
    /// agents run on `muster worker` nodes, none here (docs/distributed.md). Several
    /// servers of one NATS cluster are separated by commas.
    #[arg(long)]
    pub nats: Option<String>,
    /// This node's name in the cluster (default: `control-<pid>`).
    #[arg(long, requires = "nats")]
    pub node: Option<String>,
    /// How long a worker's instance stays registered without a heartbeat.
    #[arg(long, default_value = "1500ms", value_parser = super::parse_duration, requires = "nats")]
    pub ttl: std::time::Duration,
    /// Replicas of the cluster's buckets and journal stream: `auto` (3 when the JetStream
    /// cluster can place 3, else 1; what exists keeps its count) or 1 to 5 (what exists
    /// with another count is updated). See docs/distributed.md, "Replication".
    #[arg(long, default_value = "auto", value_parser = super::parse_replicas, requires = "nats")]
    pub replicas: Replicas,
    /// Retention: remove the records of work that ended longer ago than this (`30d`), at
    /// start and then every `--retain-every`; running and gate-waiting work is always
    /// kept (as `muster journal compact` does). With `--nats`, the node's history in the
    /// cluster's journal stream is then compacted to match. Unset: keep everything.
    #[arg(long, value_parser = super::journal::parse_age)]
    pub retain: Option<std::time::Duration>,
    /// How often retention runs.
    #[arg(long, default_value = "1h", value_parser = parse_every, requires = "retain")]
    pub retain_every: std::time::Duration,
    /// With `--retain`, first archive what each compaction removes into this directory
    /// (`compacted-<unix ms>.jsonl.zst`, read by `muster inspect --archive`).
    #[arg(long, requires = "retain")]
    pub archive_dir: Option<PathBuf>,
}

/// `--retain-every`: an age of at least a second.
fn parse_every(s: &str) -> Result<std::time::Duration, String> {
    let d = super::journal::parse_age(s)?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("`{s}` is shorter than a second"));
    }
    Ok(d)
}

/// Runs retention on the node's journal: at once, then every `every`, on the blocking
/// pool (the API and the runtime go on meanwhile). A control node (`--nats`) then
/// compacts its own history in the cluster's journal stream to match: what the journal
/// no longer holds, up to its oldest record, goes from the stream
/// ([`Failover::compact_stream`]).
fn retain(
    journal: Arc<muster::journal::SqliteJournal>,
    age: std::time::Duration,
    every: std::time::Duration,
    archive_dir: Option<PathBuf>,
    failover: Option<Failover>,
) {
    actix::spawn(async move {
        loop {
            let j = journal.clone();
            let dir = archive_dir.clone();
            let done = tokio::task::spawn_blocking(move || {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let what = muster::journal::sqlite::Compaction {
                    ended_before_ms: now_ms.saturating_sub(age.as_millis() as u64),
                    archive: dir.map(|d| d.join(format!("compacted-{now_ms}.jsonl.zst"))),
                };
                j.compact(&what, now_ms)
            })
            .await;
            match done {
                Ok(Ok(c)) => tracing::info!(
                    records = c.records,
                    runs = c.runs,
                    stories = c.stories,
                    bytes_before = c.bytes_before,
                    bytes_after = c.bytes_after,
                    "retention: compacted the journal"
                ),
                Ok(Err(e)) => tracing::warn!(error = %e, "retention: the compaction failed"),
                Err(e) => tracing::warn!(error = %e, "retention: the compaction did not finish"),
            }
            if let Some(f) = &failover {
                // The oldest record the journal still holds (compaction keeps the last).
                let j = journal.clone();
                let oldest = tokio::task::spawn_blocking(move || j.read_batch(0, 1))
                    .await
                    .ok()
                    .and_then(|b| b.first().map(|r| r.seq));
                if let Some(keep_from) = oldest {
                    match f.compact_stream(keep_from).await {
                        Ok(c) => tracing::info!(
                            removed = c.removed,
                            kept_from = c.kept_from,
                            keep_from,
                            "retention: compacted this node's history in the journal stream"
                        ),
                        Err(e) => tracing::warn!(
                            error = %e,
                            "retention: the journal stream was not compacted"
                        ),
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// `--max-runs`: 1..=10^7.
fn parse_max_runs(s: &str) -> Result<usize, String> {
    admission::parse_bound("--max-runs", s)
}

/// `--max-tasks`: 1..=10^7.
fn parse_max_tasks(s: &str) -> Result<usize, String> {
    admission::parse_bound("--max-tasks", s)
}

/// The workflow files of `dir`: `*.toml` in it and `*/workflow.toml` under it, sorted.
fn workflow_files(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let unreadable = |e: std::io::Error| {
        CliError::bad_input(
            format!(
                "{}: cannot read the workflows directory: {e}",
                dir.display()
            ),
            json!({"workflows": dir}),
        )
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let p = entry.map_err(unreadable)?.path();
        if p.is_dir() {
            let wf = p.join("workflow.toml");
            if wf.is_file() {
                out.push(wf);
            }
        } else if p.extension().is_some_and(|e| e == "toml") {
            out.push(p);
        }
        if out.len() > MAX_WORKFLOWS {
            return Err(CliError::bad_input(
                format!(
                    "{}: more than {MAX_WORKFLOWS} workflow files",
                    dir.display()
                ),
                json!({"workflows": dir}),
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// Runs `muster serve`; returns the exit code.
pub fn run(args: ServeArgs) -> Result<i32, CliError> {
    run_as(args, Front::Http)
}

/// What answers the node's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Front {
    /// The HTTP API (`muster serve`).
    Http,
    /// MCP over stdin and stdout (`muster mcp`): nothing else may go to stdout.
    McpStdio,
}

/// Runs a node answering through `front`; returns the exit code.
pub(crate) fn run_as(args: ServeArgs, front: Front) -> Result<i32, CliError> {
    let stdio = front == Front::McpStdio;
    // The certificate and key first: a bad file is refused before anything starts.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(muster::serve::tls::server_config(cert, key).map_err(|e| {
                CliError::bad_input(
                    e.to_string(),
                    json!({"file": e.path().display().to_string()}),
                )
            })?)
        }
        _ => None,
    };
    let (store, defs) = load(&args.cast)?;
    let mut workflows: BTreeMap<String, Arc<Workflow>> = BTreeMap::new();
    // Workflows that do not check clean: not served (the others are), listed on start;
    // with --strict they refuse the start.
    let mut refused: Vec<serde_json::Value> = Vec::new();
    if let Some(dir) = &args.workflows {
        for file in workflow_files(dir)? {
            let wf = load_workflow(&file, &store).map_err(|e| {
                CliError::bad_input(format!("{}: {}", file.display(), e.message), e.details)
            })?;
            let found = findings(&wf, &defs, &store);
            if !found.is_empty() {
                if args.cast.strict && stdio {
                    // stdout carries MCP messages only.
                    eprintln!("refusing to serve {} (--strict):", file.display());
                    for f in &found {
                        eprintln!("  {f}");
                    }
                    return Ok(EXIT_BAD_INPUT);
                }
                if args.cast.strict {
                    if !args.json {
                        eprintln!("refusing to serve {} (--strict):", file.display());
                    }
                    report_findings(&wf, &found, args.json);
                    return Ok(EXIT_BAD_INPUT);
                }
                if !args.json {
                    eprintln!(
                        "not serving workflow `{}` of {}: {} finding{} (--strict refuses the start instead):",
                        wf.name,
                        file.display(),
                        found.len(),
                        if found.len() == 1 { "" } else { "s" }
                    );
                    for f in &found {
                        eprintln!("  {f}");
                    }
                }
                refused.push(json!({
                    "workflow": wf.name,
                    "file": file.display().to_string(),
                    "findings": found,
                }));
                continue;
            }
            if let Some(other) = workflows.get(&wf.name) {
                return Err(CliError::bad_input(
                    format!(
                        "{} and {} both name workflow `{}`; a node serves one workflow per name",
                        other.file.display(),
                        file.display(),
                        wf.name
                    ),
                    json!({"workflow": wf.name}),
                ));
            }
            workflows.insert(wf.name.clone(), Arc::new(wf));
        }
    }
    let bad = |e: muster::serve::TokenError| CliError::bad_input(e.to_string(), json!({}));
    let mut generated = None;
    let (tokens, source) = if stdio {
        // No one reaches a stdio node but the process that started it: a token no one
        // holds, never written anywhere.
        let t = format!(
            "{}{}",
            uuid::Uuid::now_v7().simple(),
            uuid::Uuid::now_v7().simple()
        );
        let t = Token::parse(&t, "mcp").map_err(bad)?;
        (Tokens::admin(t), TokenSource::Env("-".into()))
    } else {
        match Tokens::load(args.token_file.as_deref(), args.token_env.as_deref()).map_err(bad)? {
            Some(found) => found,
            None => {
                let path = args
                    .journal
                    .parent()
                    .map_or_else(|| PathBuf::from("token"), |d| d.join("token"));
                // Kept from an earlier start when it is there: a restart keeps the token.
                let (tokens, fresh) = Tokens::reuse_or_generate(&path).map_err(bad)?;
                generated = fresh;
                (tokens, TokenSource::Generated(path))
            }
        }
    };
    if let Some(dir) = &args.archive_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            CliError::bad_input(
                format!("--archive-dir {}: cannot create it: {e}", dir.display()),
                json!({"archive_dir": dir}),
            )
        })?;
    }
    let limits = Limits {
        max_runs: args.max_runs,
        max_tasks: args.max_tasks,
    };
    let journal = open_journal(&args.journal, args.durability)?;
    // What to resume comes from the journal's run index: the runs not ended, each with
    // its workflow (loaded once per file). Their records are read after the node serves.
    let mut resume = Vec::new();
    let mut loaded: BTreeMap<(String, String), Arc<Workflow>> = BTreeMap::new();
    for entry in muster::serve::unfinished_runs(journal.as_ref()) {
        let key = (entry.workflow.clone(), entry.file.clone());
        let wf = match (loaded.get(&key), workflows.get(&entry.workflow)) {
            (Some(wf), _) => wf.clone(),
            (None, Some(wf)) if wf.file.display().to_string() == entry.file => wf.clone(),
            _ => Arc::new(load_workflow(Path::new(&entry.file), &store).map_err(|e| {
                CliError::bad_input(
                    format!(
                        "run {} of `{}` cannot be resumed: its workflow file {}: {}",
                        entry.run, entry.workflow, entry.file, e.message
                    ),
                    json!({"run": entry.run, "file": entry.file, "details": e.details}),
                )
            })?),
        };
        loaded.insert(key, wf.clone());
        resume.push((wf, entry.run));
    }
    let traces = super::run::traces_from_env()?;
    let groups: Vec<GroupInfo> = defs.iter().map(GroupInfo::of).collect();
    let tap = Arc::new(TapJournal::new(
        journal.clone() as Arc<dyn Journal>,
        DEFAULT_TAP_CAPACITY,
    ));
    let json_out = args.json;
    let cluster = match &args.nats {
        Some(url) => {
            let node = args
                .node
                .clone()
                .unwrap_or_else(|| format!("control-{}", std::process::id()));
            let mut c = ClusterConfig::new(url, &node);
            c.ttl = args.ttl;
            c.replicas = args.replicas;
            c.check().map_err(|e| {
                CliError::bad_input(e.to_string(), json!({"nats": url, "node": node}))
            })?;
            Some(c)
        }
        None => None,
    };
    let joined_as = cluster.as_ref().map(|c| (c.node.clone(), c.url.clone()));
    block_on(async move {
        // A control node declares the cast and runs none of it: its instances join from
        // the workers.
        let (local, remote) = match cluster {
            Some(_) => (Vec::new(), defs),
            None => (defs, Vec::new()),
        };
        let muster = start_with(
            &args.cast.schemas,
            args.runtime.shards,
            local,
            Some(tap.clone() as Arc<dyn Journal>),
        )
        .await?;
        let mut resume = resume;
        let mut replication = None;
        let (_control, failover) = match cluster {
            Some(c) => {
                let joined = async {
                    let control = Control::start(muster.clone(), &remote, c.clone()).await?;
                    let failover = Failover::start(c, tap.clone() as Arc<dyn Journal>).await?;
                    Ok::<_, ClusterError>((control, failover))
                };
                match joined.await {
                    Ok((control, (failover, takeovers))) => {
                        let mut r = control.replication().clone();
                        r.extend(failover.replication().clone());
                        replication = Some(r);
                        // A run another control node took over while this one was away
                        // is theirs now.
                        let mut mine = Vec::new();
                        for (wf, run) in resume.drain(..) {
                            if failover.holds(run).await {
                                mine.push((wf, run));
                            }
                        }
                        resume = mine;
                        (Some(control), Some((failover, takeovers)))
                    }
                    Err(e) => {
                        muster.shutdown().await;
                        let details = json!({"nats": args.nats, "message": e.to_string()});
                        // A replica count the servers cannot place is a setting to change;
                        // a peer of another wire version, a version to change.
                        return Err(
                            if matches!(e, ClusterError::Replicas(_) | ClusterError::Version(_)) {
                                CliError::bad_input(e.to_string(), details)
                            } else {
                                CliError::failed(e.to_string(), details)
                            },
                        );
                    }
                }
            }
            None => (None, None),
        };
        if stdio {
            let retained_failover = failover.as_ref().map(|(f, _)| f.clone());
            let names: Vec<String> = workflows.keys().cloned().collect();
            eprintln!(
                "muster mcp: serving MCP on stdio; workflows: {}; runs resumed: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                },
                resume.len()
            );
            let config = ServeConfig {
                workflows,
                groups,
                tokens,
                limits,
                resume,
                traces,
                failover,
                tls: None,
            };
            if let Some(age) = args.retain {
                retain(
                    journal.clone(),
                    age,
                    args.retain_every,
                    args.archive_dir.clone(),
                    retained_failover,
                );
            }
            let signal = async {
                let _ = interrupted().await;
            };
            let served = muster::serve::serve_mcp_stdio(muster, tap, config, signal).await;
            flush(&journal)?;
            eprintln!("muster mcp: stopped; the journal is flushed");
            served
                .map_err(|e| CliError::failed(format!("the MCP server failed: {e}"), json!({})))?;
            return Ok(EXIT_OK);
        }
        let listener = match tokio::net::TcpListener::bind(&args.listen).await {
            Ok(l) => l,
            Err(e) => {
                muster.shutdown().await;
                return Err(CliError::bad_input(
                    format!("--listen {}: cannot listen there: {e}", args.listen),
                    json!({"listen": args.listen}),
                ));
            }
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| args.listen.clone());
        let names: Vec<String> = workflows.keys().cloned().collect();
        let resumed = resume.len();
        announce(
            &addr,
            if tls.is_some() { "https" } else { "http" },
            generated.as_ref(),
            &tokens,
            &source,
            &names,
            &refused,
            resumed,
            joined_as.as_ref(),
            replication.as_ref(),
            json_out,
        );
        let retained_failover = failover.as_ref().map(|(f, _)| f.clone());
        let config = ServeConfig {
            workflows,
            groups,
            tokens,
            limits,
            resume,
            traces,
            failover,
            tls,
        };
        if let Some(age) = args.retain {
            retain(
                journal.clone(),
                age,
                args.retain_every,
                args.archive_dir.clone(),
                retained_failover,
            );
        }
        let signal = async {
            let _ = interrupted().await;
        };
        let served = muster::serve::serve(muster, tap, config, listener, signal).await;
        flush(&journal)?;
        if !json_out {
            eprintln!("stopped; the journal is flushed");
        }
        served.map_err(|e| CliError::failed(format!("the server failed: {e}"), json!({})))?;
        Ok(EXIT_OK)
    })
}

/// Prints where the node listens and where its tokens are (the token itself once, when it
/// was generated); a control node adds its cluster, its buckets' and stream's replica
/// counts, and what it changed or kept against `--replicas`.
#[allow(clippy::too_many_arguments)]
fn announce(
    addr: &str,
    scheme: &str,
    generated_token: Option<&Token>,
    tokens: &Tokens,
    source: &TokenSource,
    workflows: &[String],
    refused: &[serde_json::Value],
    resumed: usize,
    cluster: Option<&(String, String)>,
    replication: Option<&Replication>,
    json_out: bool,
) {
    let file = match source {
        TokenSource::File(p) | TokenSource::Generated(p) => Some(p.display().to_string()),
        TokenSource::Env(_) => None,
    };
    if json_out {
        let mut doc = json!({
            "listen": addr,
            "url": format!("{scheme}://{addr}"),
            "dashboard": format!("{scheme}://{addr}/"),
            "token_file": file,
            "workflows": workflows,
            "resumed": resumed,
        });
        if !refused.is_empty() {
            doc["refused"] = json!(refused);
        }
        if let TokenSource::Env(v) = source {
            doc["token_env"] = json!(v);
        }
        if let Some((node, url)) = cluster {
            doc["node"] = json!(node);
            doc["nats"] = json!(url);
        }
        if let (Some(r), Some(fields)) = (replication, doc.as_object_mut())
            && let serde_json::Value::Object(more) = r.to_json()
        {
            fields.extend(more);
        }
        if let Some(t) = generated_token {
            doc["token"] = json!(t.expose());
        }
        doc["tokens"] = json!(tokens.len());
        println!("{doc}");
    } else {
        println!("listening on {scheme}://{addr}; dashboard: {scheme}://{addr}/");
        if let Some((node, url)) = cluster {
            println!("control node {node} of the cluster at {url}");
        }
        if let Some(r) = replication {
            println!("{}", r.text());
            for note in r.notes() {
                println!("note: {note}");
            }
        }
        match (source, generated_token) {
            (TokenSource::Generated(p), Some(t)) => println!(
                "API token (printed once; also in {}, mode 0600): {}",
                p.display(),
                t.expose()
            ),
            (TokenSource::Generated(p), None) => println!(
                "API token kept from an earlier start in {} (mode 0600)",
                p.display()
            ),
            (TokenSource::File(p), _) => {
                let mut by_role = std::collections::BTreeMap::new();
                for c in tokens.callers() {
                    *by_role.entry(c.role).or_insert(0usize) += 1;
                }
                let roles: Vec<String> = by_role.iter().map(|(r, n)| format!("{n} {r}")).collect();
                println!("API tokens from {}: {}", p.display(), roles.join(", "))
            }
            (TokenSource::Env(v), _) => println!("API token from ${v}"),
        }
        let not_served = if refused.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = refused
                .iter()
                .filter_map(|r| r["workflow"].as_str())
                .collect();
            format!("; not served (findings above): {}", names.join(", "))
        };
        println!(
            "workflows: {}{not_served}; runs resumed: {resumed}",
            if workflows.is_empty() {
                "none".to_string()
            } else {
                workflows.join(", ")
            }
        );
    }
}
