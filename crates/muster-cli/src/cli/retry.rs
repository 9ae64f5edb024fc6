//! `muster retry --server URL RUN`: retry a failed run from its failed step on a node
//! (`POST /v1/runs/{id}/retry`, docs/api.md): a new run that carries the failed run's
//! completed steps over and starts at the step that failed. The node runs it; this prints
//! the new run's id (and `muster inspect --server` or the dashboard follow it).

use serde_json::json;

use super::CliError;

/// Arguments of `muster retry`.
#[derive(Debug, clap::Args)]
pub struct RetryArgs {
    /// The failed run's id, or a unique prefix of it.
    pub run: String,
    /// Print one JSON document (the node's answer).
    #[arg(long)]
    pub json: bool,
    /// The node that holds the run (required: the retry runs on a node).
    #[command(flatten)]
    pub server: super::client::ServerArgs,
}

/// Runs `muster retry`.
pub fn run(args: RetryArgs) -> Result<(), CliError> {
    if args.server.server.is_none() {
        return Err(CliError::bad_input(
            "muster retry asks a node to retry the run: give --server URL (the node that \
             holds the run)",
            json!({"field": "server"}),
        ));
    }
    let client = super::client::Client::new(&args.server)?;
    super::block_on(async move {
        let run = client.resolve_run(&args.run).await?;
        let answer = client
            .post(&format!("/v1/runs/{run}/retry"), &json!(null))
            .await?;
        if args.json {
            println!("{answer}");
        } else {
            let carried: Vec<&str> = answer["carried"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .collect();
            println!(
                "retrying run {run} as run {} from step `{}` on {}",
                answer["run"].as_str().unwrap_or("?"),
                answer["step"].as_str().unwrap_or("?"),
                client.base()
            );
            if carried.is_empty() {
                println!("no step carried over");
            } else {
                println!("carried over: {}", carried.join(", "));
            }
        }
        Ok(())
    })
}
