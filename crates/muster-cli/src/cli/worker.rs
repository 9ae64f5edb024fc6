//! `muster worker`: hosts the cast's agent instances for a cluster's control nodes over
//! NATS JetStream ([`muster::cluster::Worker`], docs/distributed.md) until SIGINT or SIGTERM,
//! then leaves the cluster (its instance keys are deleted, so their tasks reassign at once).

use std::time::Duration;

use serde_json::json;

use super::agents::{load, start};
use super::{CastArgs, CliError, EXIT_OK, block_on, interrupted};
use muster::cluster::{ClusterConfig, Worker};

/// Arguments of `muster worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Where the cast and schemas are.
    #[command(flatten)]
    pub cast: CastArgs,
    /// The NATS server with JetStream, e.g. `nats://127.0.0.1:4222`; several servers of
    /// one NATS cluster are separated by commas.
    #[arg(long)]
    pub nats: String,
    /// This node's name (letters, digits, `_`, `-`; default: `worker-<pid>`).
    #[arg(long)]
    pub node: Option<String>,
    /// How long to wait for the NATS server and the cluster's contracts, e.g. `30s`.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    pub join_timeout: Duration,
    /// Replicas of the buckets this worker opens (`muster_agents`, `muster_contracts`):
    /// `auto` uses them as the control node made them; 1 to 5 updates them to that count
    /// when they have another. See docs/distributed.md, "Replication".
    #[arg(long, default_value = "auto", value_parser = super::parse_replicas)]
    pub replicas: muster::cluster::Replicas,
    /// Print one JSON line when joined (`node`, `keys`, `replicas`, `replicas_setting`,
    /// `replicas_of`, `replica_notes`).
    #[arg(long)]
    pub json: bool,
}

/// Runs `muster worker`; returns the exit code.
pub fn run(args: WorkerArgs) -> Result<i32, CliError> {
    let node = args
        .node
        .clone()
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let mut config = ClusterConfig::new(&args.nats, &node);
    config.join_timeout = args.join_timeout;
    config.replicas = args.replicas;
    config.check().map_err(|e| {
        CliError::bad_input(e.to_string(), json!({"node": node, "nats": args.nats}))
    })?;
    let (_store, defs) = load(&args.cast)?;
    block_on(async move {
        let muster = start(&args.cast.schemas, defs).await?;
        let worker = match Worker::start(muster.clone(), config).await {
            Ok(w) => w,
            Err(e) => {
                muster.shutdown().await;
                let refused = matches!(
                    e,
                    muster::cluster::ClusterError::ContractMismatch { .. }
                        | muster::cluster::ClusterError::Replicas(_)
                );
                let details = json!({"node": node, "nats": args.nats, "message": e.to_string()});
                return Err(if refused {
                    CliError::bad_input(e.to_string(), details)
                } else {
                    CliError::failed(e.to_string(), details)
                });
            }
        };
        let keys = worker.keys();
        let replication = worker.replication();
        if args.json {
            let mut doc = json!({"node": node, "keys": keys});
            if let (Some(fields), serde_json::Value::Object(more)) =
                (doc.as_object_mut(), replication.to_json())
            {
                fields.extend(more);
            }
            println!("{doc}");
        } else {
            eprintln!(
                "worker {node} joined {} with {} instances; {}; stop with Ctrl-C",
                args.nats,
                keys.len(),
                replication.text()
            );
            for note in replication.notes() {
                eprintln!("note: {note}");
            }
        }
        let _ = interrupted().await;
        worker.leave().await;
        muster.shutdown().await;
        if !args.json {
            eprintln!("worker {node} left the cluster");
        }
        Ok(EXIT_OK)
    })
}
