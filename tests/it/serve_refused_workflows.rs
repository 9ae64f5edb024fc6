//! `muster serve --workflows DIR` serves the workflows that check clean when another one
//! needs agents the cast lacks: the refused one is listed with its findings (stderr, and
//! `refused` in the `--json` start line) and is not served; `--strict` refuses the start
//! instead (exit 2). Real node on 127.0.0.1 with a free port, stopped by pid.

use serde_json::json;

use crate::support::common::{muster_cmd, output_within};
use crate::support::node::{call_with, one_step, serve, write_cast};

const TOKEN: &str = "refused-token-0123456789abcdef";

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_cast(dir.path(), &["workflows"], 1);
    std::fs::write(
        dir.path().join("workflows/fine.toml"),
        one_step("fine", "echo", "10s", 1),
    )
    .expect("workflow");
    std::fs::write(
        dir.path().join("workflows/needy.toml"),
        one_step("needy", "nobody.serves.this", "10s", 1),
    )
    .expect("workflow");
    dir
}

#[tokio::test]
async fn a_workflow_needing_agents_the_cast_lacks_is_listed_and_the_others_are_served() {
    let dir = setup();
    let node = serve(dir.path(), &[], &[("MUSTER_TOKEN", TOKEN)]);
    assert_eq!(node.start["workflows"], json!(["fine"]), "{}", node.start);
    let refused = &node.start["refused"][0];
    assert_eq!(refused["workflow"], "needy", "{}", node.start);
    assert!(refused["file"].as_str().unwrap().ends_with("needy.toml"));
    assert!(
        refused["findings"]
            .to_string()
            .contains("nobody.serves.this"),
        "{refused}"
    );
    // The clean one runs; the refused one is not loaded.
    let runs = format!("{}/v1/runs", node.url);
    let body = |w: &str| Some(json!({"workflow": w, "input": {}}));
    let (code, doc) = call_with("POST", &runs, body("fine"), Some(TOKEN)).await;
    assert_eq!(code, 202, "{doc}");
    let (code, doc) = call_with("POST", &runs, body("needy"), Some(TOKEN)).await;
    assert_eq!(
        (code, doc["field"].clone()),
        (404, json!("workflow")),
        "{doc}"
    );
}

#[test]
fn the_text_start_lists_the_refused_workflow_and_strict_refuses_the_start() {
    let dir = setup();
    let mut cmd = muster_cmd(dir.path());
    cmd.env_remove("MUSTER_TOKEN")
        .env("MUSTER_TEST_TOKEN", TOKEN)
        .args([
            "serve",
            "--workflows",
            "workflows",
            "--journal",
            "j/journal.db",
            "--listen",
            "127.0.0.1:0",
            "--token-env",
            "MUSTER_TEST_TOKEN",
            "--strict",
        ]);
    let out = output_within(60, cmd);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("nobody.serves.this"), "{stdout}");
    assert!(
        stderr.contains("refusing to serve") && stderr.contains("--strict"),
        "{stderr}"
    );
}
