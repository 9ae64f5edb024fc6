//! Acting on runs through `muster serve`'s API, against the real binary: a failed run
//! retried from its failed step as a new run (the earlier steps' outputs carried over,
//! not run again; the two runs linked both ways; a second retry refused), the run list
//! filtered by start time and input fields (a bad parameter is a 400 naming it), the
//! metrics history counting what the node ran, and the roles: a viewer may start, cancel
//! and retry nothing. Every wait has a deadline; no timing is asserted.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::node::{self as node_support, Serving, call_with};

const ADMIN: &str = "actions-admin-token-0123456789abcdef";
const SUBMITTER: &str = "actions-submitter-token-0123456789ab";
const VIEWER: &str = "actions-viewer-token-0123456789abcd";

/// Two echo steps around a step on `flaky`, a command agent that fails while the file
/// `broken` is in the node's directory: `prep` maps the run input, `fragile` takes
/// `prep`'s output.
pub(crate) const RETRY_WORKFLOW: &str = r#"
name = "retry-me"
input = "obj"
start = "prep"

[steps.prep]
capability = "echo"
input = "{'n': run.input.n, 'prepared': true}"
timeout = "10s"
attempts = 1
on_exhausted = "fail"
next = "fragile"

[steps.fragile]
capability = "flaky"
input = "steps.prep.output"
timeout = "10s"
attempts = 1
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"
"#;

/// The `flaky` agent's manifest: `sh` echoing its input, failing while `broken` exists.
pub(crate) const FLAKY_AGENT: &str = r#"name = "flaky"
[[capabilities]]
name = "flaky"
input = "obj"
output = "obj"
[backend]
kind = "command"
program = "sh"
args = ["-c", "if [ -e broken ]; then echo 'broken on purpose' >&2; exit 3; fi; cat"]
"#;

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    node_support::write_cast(p, &["workflows"], 2);
    std::fs::write(p.join("actors/flaky.toml"), FLAKY_AGENT).expect("manifest");
    std::fs::write(p.join("workflows/retry.toml"), RETRY_WORKFLOW).expect("workflow");
    std::fs::write(
        p.join("workflows/plain.toml"),
        node_support::one_step("plain", "echo", "10s", 2),
    )
    .expect("workflow");
    std::fs::write(
        p.join("workflows/gated.toml"),
        include_str!("../fixtures/workflows/gated.toml"),
    )
    .expect("workflow");
    std::fs::write(
        p.join("tokens.txt"),
        format!(
            "{ADMIN} admin root-ann\n{SUBMITTER} submitter sub-sam\n{VIEWER} viewer view-vic\n"
        ),
    )
    .expect("tokens");
    dir
}

fn serve(dir: &Path) -> Serving {
    node_support::serve(dir, &["--token-file", "tokens.txt"], &[])
}

async fn call(token: &str, method: &str, url: String, body: Option<Value>) -> (u16, Value) {
    call_with(method, &url, body, Some(token)).await
}

async fn start_run(node: &Serving, token: &str, workflow: &str, input: Value) -> String {
    let (code, doc) = call(
        token,
        "POST",
        format!("{}/v1/runs", node.url),
        Some(json!({"workflow": workflow, "input": input})),
    )
    .await;
    assert_eq!(code, 202, "{doc}");
    doc["run"].as_str().expect("run id").to_string()
}

/// Polls a run until `done` holds of its document (failing after 60 s).
async fn wait_run(node: &Serving, run: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, doc) = call(ADMIN, "GET", format!("{}/v1/runs/{run}", node.url), None).await;
        assert_eq!(code, 200, "{doc}");
        if done(&doc) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} never got there: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_is(s: &'static str) -> impl Fn(&Value) -> bool {
    move |d| d["status"] == s
}

/// The tasks a run delegated, by step: `(step, task id, input)`.
fn tasks(doc: &Value) -> Vec<(String, String, Value)> {
    doc["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or_default().to_string(),
                s["task"].as_str().unwrap_or_default().to_string(),
                s["input"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_failed_run_is_retried_from_its_failed_step_with_the_earlier_outputs_carried_over() {
    let dir = setup();
    std::fs::write(dir.path().join("broken"), "").expect("break the flaky agent");
    let node = serve(dir.path());
    let url = |p: &str| format!("{}{p}", node.url);

    let failed = start_run(&node, SUBMITTER, "retry-me", json!({"n": 7})).await;
    let first = wait_run(&node, &failed, status_is("failed")).await;
    assert_eq!(first["step"], "fragile", "{first}");
    let first_tasks = tasks(&first);
    let prep = first_tasks
        .iter()
        .find(|t| t.0 == "prep")
        .expect("prep ran")
        .clone();
    let fragile = first_tasks
        .iter()
        .find(|t| t.0 == "fragile")
        .expect("fragile ran")
        .clone();
    assert_eq!(fragile.2, json!({"n": 7, "prepared": true}), "{first}");

    // A viewer may start, cancel and retry nothing, whatever the page shows.
    for (path, body) in [
        (
            "/v1/runs".to_string(),
            Some(json!({"workflow": "plain", "input": {}})),
        ),
        (format!("/v1/runs/{failed}/retry"), None),
        (format!("/v1/runs/{failed}/cancel"), None),
    ] {
        let (code, doc) = call(VIEWER, "POST", url(&path), body).await;
        assert_eq!(code, 403, "a viewer's POST {path}: {doc}");
        assert!(
            doc["error"]
                .as_str()
                .unwrap_or("")
                .contains("needs role `submitter`"),
            "{doc}"
        );
    }

    // Bad ids and unknown runs.
    let (code, doc) = call(SUBMITTER, "POST", url("/v1/runs/not-a-run/retry"), None).await;
    assert_eq!((code, doc["field"].as_str()), (400, Some("id")), "{doc}");
    let unknown = uuid::Uuid::now_v7();
    let (code, doc) = call(
        SUBMITTER,
        "POST",
        url(&format!("/v1/runs/{unknown}/retry")),
        None,
    )
    .await;
    assert_eq!(code, 404, "{doc}");

    // Mended, the run is retried by a submitter: a new run, from the failed step.
    std::fs::remove_file(dir.path().join("broken")).expect("mend the flaky agent");
    let (code, doc) = call(
        SUBMITTER,
        "POST",
        url(&format!("/v1/runs/{failed}/retry")),
        None,
    )
    .await;
    assert_eq!(code, 202, "{doc}");
    assert_eq!(doc["retry_of"], json!(failed), "{doc}");
    assert_eq!(doc["step"], "fragile", "{doc}");
    assert_eq!(doc["carried"], json!(["prep"]), "{doc}");
    let retry = doc["run"].as_str().expect("the retry's id").to_string();
    assert_ne!(retry, failed);

    // Once only: a second retry of the same run is refused, naming the first.
    let (code, doc) = call(
        ADMIN,
        "POST",
        url(&format!("/v1/runs/{failed}/retry")),
        None,
    )
    .await;
    assert_eq!(code, 409, "{doc}");
    assert!(
        doc["error"].as_str().unwrap_or("").contains(&retry),
        "{doc}"
    );

    let done = wait_run(&node, &retry, status_is("completed")).await;
    assert_eq!(done["retry_of"]["run"], json!(failed), "{done}");
    assert_eq!(done["retry_of"]["step"], "fragile", "{done}");
    // `prep` was not run again: the retry delegated `fragile` only, as a new task, whose
    // input is the output `prep` gave the failed run.
    let retry_tasks = tasks(&done);
    assert_eq!(retry_tasks.len(), 1, "{done}");
    assert_eq!(retry_tasks[0].0, "fragile");
    assert_ne!(
        retry_tasks[0].1, fragile.1,
        "the retry's task is a new task"
    );
    assert_ne!(retry_tasks[0].1, prep.1);
    assert_eq!(
        retry_tasks[0].2,
        json!({"n": 7, "prepared": true}),
        "{done}"
    );
    // Its outcome covers the whole run: prep (carried) and fragile.
    let visited: Vec<&str> = done["progress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["step"].as_str())
        .collect();
    assert_eq!(visited, ["prep", "fragile"], "{done}");

    // The failed run stays failed and names its retry.
    let (code, first) = call(ADMIN, "GET", url(&format!("/v1/runs/{failed}")), None).await;
    assert_eq!(code, 200);
    assert_eq!(first["status"], "failed", "{first}");
    assert_eq!(first["retried_as"]["run"], json!(retry), "{first}");

    // Only a failed run is retried: the completed retry is not.
    let (code, doc) = call(ADMIN, "POST", url(&format!("/v1/runs/{retry}/retry")), None).await;
    assert_eq!(code, 409, "{doc}");
    assert!(
        doc["error"].as_str().unwrap_or("").contains("did not fail"),
        "{doc}"
    );

    // The journal says what happened: each run's own records hold its link.
    let kinds = |doc: &Value| -> Vec<String> {
        doc["records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["event"]["type"].as_str().or(r["type"].as_str()))
            .map(str::to_string)
            .collect()
    };
    let (_, recs) = call(ADMIN, "GET", url(&format!("/v1/records?run={retry}")), None).await;
    let k = kinds(&recs);
    assert_eq!(
        k.iter().take(3).map(String::as_str).collect::<Vec<_>>(),
        ["run_started", "retry_started", "step_completed"],
        "the retry's first records: {recs}"
    );
    assert!(!k.contains(&"run_retried".to_string()), "{recs}");
    let (_, recs) = call(
        ADMIN,
        "GET",
        url(&format!("/v1/records?run={failed}")),
        None,
    )
    .await;
    let k = kinds(&recs);
    assert_eq!(k.last().map(String::as_str), Some("run_retried"), "{recs}");
    assert_eq!(k.iter().filter(|k| *k == "run_ended").count(), 1, "{recs}");

    // The CLI asks the node the same: `muster retry --server`, by an id prefix.
    std::fs::write(dir.path().join("broken"), "").expect("break the flaky agent again");
    let again = start_run(&node, ADMIN, "retry-me", json!({"n": 8})).await;
    wait_run(&node, &again, status_is("failed")).await;
    std::fs::remove_file(dir.path().join("broken")).expect("mend the flaky agent");
    let cli = |args: &[&str]| {
        crate::support::common::muster_cmd(dir.path())
            .env_remove("MUSTER_TOKEN")
            .args(["retry", "--json"])
            .args(args)
            .output()
            .expect("muster retry")
    };
    let out = cli(&[
        &again[..23],
        "--server",
        &node.url,
        "--token-file",
        "tokens.txt",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
    assert_eq!(answer["retry_of"], json!(again), "{answer}");
    assert_eq!(answer["step"], "fragile", "{answer}");
    let by_cli = answer["run"].as_str().expect("the new run").to_string();
    wait_run(&node, &by_cli, status_is("completed")).await;
    // Refused runs and a missing --server are exit 2, with the node's words.
    let out = cli(&[&by_cli, "--server", &node.url, "--token-file", "tokens.txt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("did not fail"));
    let out = cli(&[&by_cli]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--server"));

    // The node's metrics saw the failed attempt of `flaky`.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, h) = call(VIEWER, "GET", url("/v1/metrics/history"), None).await;
        assert_eq!(code, 200, "{h}");
        let samples = h["samples"].as_array().cloned().unwrap_or_default();
        let failures: u64 = samples
            .iter()
            .filter_map(|s| s["failures"]["flaky"].as_u64())
            .sum();
        let completed: u64 = samples.iter().filter_map(|s| s["tasks"].as_u64()).sum();
        if failures >= 1 && completed >= 2 {
            assert_eq!(h["interval_ms"], 10_000);
            assert!(samples.len() <= 360, "{h}");
            assert!(
                samples.iter().any(|s| s["p50_ms"].is_number()),
                "a latency: {h}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the history never counted them: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn runs_are_filtered_by_start_time_and_input_fields_and_a_bad_parameter_is_a_400_naming_it() {
    let dir = setup();
    let node = serve(dir.path());
    let url = |p: &str| format!("{}{p}", node.url);
    let inputs = [
        json!({"repo": "shop", "n": 1}),
        json!({"repo": "blog", "n": 2}),
        json!({"repo": "shop", "n": 3, "meta": {"tier": "gold", "urgent": true}}),
    ];
    let mut runs = Vec::new();
    for input in inputs {
        let run = start_run(&node, ADMIN, "plain", input).await;
        let doc = wait_run(&node, &run, status_is("completed")).await;
        runs.push((run, doc["started_ms"].as_u64().expect("started_ms")));
        // Distinct start stamps (ms) for the time filters.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let listed = |doc: &Value| -> Vec<String> {
        doc["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["run"].as_str().map(str::to_string))
            .collect()
    };
    let ids = |idx: &[usize]| -> Vec<String> { idx.iter().map(|&i| runs[i].0.clone()).collect() };
    for (query, want) in [
        ("input.repo=shop", &[2, 0][..]),
        ("input.repo=shop&input.n=3", &[2][..]),
        ("input.meta.tier=gold", &[2][..]),
        ("input.meta.urgent=true", &[2][..]),
        ("input.n=2&workflow=plain&status=completed", &[1][..]),
        ("input.repo=nowhere", &[][..]),
        (
            "started_after=1970-01-01T00:00:00Z&input.repo=shop",
            &[2, 0][..],
        ),
    ] {
        let (code, doc) = call(VIEWER, "GET", url(&format!("/v1/runs?{query}")), None).await;
        assert_eq!(code, 200, "{query}: {doc}");
        assert_eq!(listed(&doc), ids(want), "{query}: {doc}");
    }
    let second = runs[1].1;
    let (_, doc) = call(
        VIEWER,
        "GET",
        url(&format!("/v1/runs?started_after={second}")),
        None,
    )
    .await;
    assert_eq!(listed(&doc), ids(&[2, 1]), "{doc}");
    let (_, doc) = call(
        VIEWER,
        "GET",
        url(&format!("/v1/runs?started_before={second}")),
        None,
    )
    .await;
    assert_eq!(listed(&doc), ids(&[0]), "{doc}");
    // A page of one, then the next, under a filter.
    let (_, doc) = call(VIEWER, "GET", url("/v1/runs?input.repo=shop&limit=1"), None).await;
    assert_eq!(listed(&doc), ids(&[2]), "{doc}");
    let next = doc["next"].as_str().expect("a next page").to_string();
    let (_, doc) = call(
        VIEWER,
        "GET",
        url(&format!("/v1/runs?input.repo=shop&limit=1&after={next}")),
        None,
    )
    .await;
    assert_eq!(listed(&doc), ids(&[0]), "{doc}");

    for (query, field) in [
        ("started_after=yesterday", "started_after"),
        ("started_before=12:00", "started_before"),
        ("input.a..b=1", "input.a..b"),
        ("input.a%20b=1", "input.a b"),
        ("sort=asc", "sort"),
        ("status=completed&status=failed", "status"),
        ("status=sleeping", "status"),
        ("limit=0", "limit"),
    ] {
        let (code, doc) = call(VIEWER, "GET", url(&format!("/v1/runs?{query}")), None).await;
        assert_eq!(code, 400, "{query}: {doc}");
        assert_eq!(doc["field"], field, "{query}: {doc}");
        assert!(
            doc["error"]
                .as_str()
                .unwrap_or("")
                .contains(field.trim_start_matches("input.")),
            "{query}: the error names the field: {doc}"
        );
    }
}
