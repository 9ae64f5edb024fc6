//! The triage example (examples/triage) against a real model: SmolLM2-135M-Instruct served
//! by llama-cpp-python's OpenAI-compatible server (scripts/model-server), on 127.0.0.1 and
//! a free port, stopped by its pid. Every output muster accepted satisfies its schema,
//! whatever the model wrote; the model's token counts are journaled.
//!
//! The test installs the server when it is absent (`scripts/model-server install`, which is
//! idempotent and which `.ci/run` also runs first): on a fresh machine `cargo test` alone
//! does the set-up. An install that fails fails this test with the script's reason; it
//! never skips.

use crate::support::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::output_within;
use muster::journal::sqlite::read_journal;
use muster::{Event, SchemaStore};

/// Stops the server started for the test (by the pid its state directory holds).
struct Server {
    state: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("scripts/model-server")
            .arg("stop")
            .env("MUSTER_MODEL_STATE", &self.state)
            .status();
    }
}

/// Installs the model server unless it is there already (a few minutes the first time:
/// llama.cpp builds from source), bounded at an hour.
fn install_server() {
    let mut cmd = Command::new("scripts/model-server");
    cmd.arg("install");
    let out = output_within(3600, cmd);
    assert!(
        out.status.success(),
        "the model server could not be installed by `scripts/model-server install`:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_server(state: &Path) -> (Server, String) {
    install_server();
    let mut cmd = Command::new("scripts/model-server");
    cmd.arg("start").env("MUSTER_MODEL_STATE", state);
    let out = output_within(300, cmd);
    let server = Server {
        state: state.to_path_buf(),
    };
    assert!(
        out.status.success(),
        "the model server could not be started; install it with `scripts/model-server install` \
         (.ci/run does):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "unexpected URL `{url}`"
    );
    (server, url)
}

#[test]
fn a_real_model_run_accepts_only_outputs_that_satisfy_their_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(dir.path());
    let journal = dir.path().join("triage.db");
    let mut cmd = crate::support::common::muster();
    cmd.args([
        "run",
        "examples/triage/workflow.toml",
        "--actors",
        "examples/triage/actors",
        "--schemas",
        "examples/triage/schemas",
        "--json",
        "--journal",
    ])
    .arg(&journal)
    // The two environment variables that point the manifests at any endpoint.
    .env("MUSTER_CLASSIFIER__BACKEND__BASE_URL", &url)
    .env("MUSTER_RESPONDER__BACKEND__BASE_URL", &url);
    let out = output_within(1200, cmd);
    let code = out.status.code();
    // Completed (0), or waiting at the gate for a report the model calls critical (3).
    assert!(
        matches!(code, Some(0) | Some(3)),
        "muster run exited {code:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // `muster run --json` sums the run's model usage.
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "muster run --json printed no JSON document ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert!(
        doc["usage"]["total_tokens"].as_u64().is_some_and(|t| t > 0),
        "the run's summary has its token usage: {doc}"
    );
    let schemas = SchemaStore::new();
    schemas.load_dir("examples/triage/schemas").unwrap();
    let output_of = HashMap::from([
        ("triage.classify", "triage-result"),
        ("triage.reply", "reply"),
    ]);
    let records = read_journal(&journal, 0).unwrap();
    let mut capability = HashMap::new();
    let (mut accepted, mut usages) = (0, 0);
    for r in &records {
        match &r.event {
            Event::TaskSubmitted {
                task,
                capability: c,
                ..
            } => {
                capability.insert(*task, c.to_string());
            }
            Event::ResultAccepted { task, output, .. } => {
                let cap = &capability[task];
                let schema = output_of[cap.as_str()];
                if let Err(e) = schemas.validate(schema, output) {
                    panic!("accepted output of {cap} breaks {schema}: {e}\n{output}");
                }
                accepted += 1;
            }
            Event::ModelUsage { usage, .. } => {
                assert!(usage.calls >= 1);
                assert!(
                    usage.total_tokens.is_some_and(|t| t > 0),
                    "llama.cpp's server reports usage: {usage:?}"
                );
                usages += 1;
            }
            _ => {}
        }
    }
    assert!(accepted >= 1, "the run accepted no output at all");
    assert!(usages >= accepted, "every model attempt journals its usage");
}
