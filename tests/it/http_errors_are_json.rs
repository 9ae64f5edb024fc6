//! Every error `muster serve` answers is JSON in the API's shape `{"error": ...}`
//! (docs/api.md), including what axum answers by itself: 404 for an unknown route, 405 for
//! a method a route does not take (with `Allow`), 413 from the body limit on a route that
//! reads raw bytes, 400 for a body that is not JSON or not sent as JSON, and 422 for an
//! input that breaks its schema; a huge wrong value is quoted by a bounded prefix. A
//! gate's note is called `note` in the request and in the run's view. Real node on
//! 127.0.0.1 with a free port, stopped by pid; every wait bounded.

use serde_json::{Value, json};

use crate::support::node::{call_with, client, serve, wait_run, write_cast};

const TOKEN: &str = "errors-token-0123456789abcdef";

const GATED: &str = include_str!("../fixtures/workflows/gated.toml");

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_cast(dir.path(), &["workflows"], 1);
    std::fs::write(dir.path().join("workflows/gated.toml"), GATED).expect("workflow");
    dir
}

/// Sends a request with the token; the status, the `Allow` header and the body as JSON
/// (failing the test when the body is not JSON).
async fn send(
    method: reqwest::Method,
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Option<String>, Value) {
    let mut req = client().request(method, url).bearer_auth(TOKEN);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.body(body).send().await.expect("the node answers");
    let status = resp.status().as_u16();
    let allow = resp
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = resp.bytes().await.expect("body");
    let doc: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{status} is not JSON ({e}; content-type {ct:?}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert!(ct.starts_with("application/json"), "{status}: {ct}");
    assert!(doc["error"].is_string(), "{status}: {doc}");
    (status, allow, doc)
}

#[tokio::test]
async fn every_error_axum_answers_by_itself_is_json_naming_what_is_wrong() {
    let dir = setup();
    let node = serve(dir.path(), &[], &[("MUSTER_TOKEN", TOKEN)]);
    let u = &node.url;
    use reqwest::Method;
    // 404: no such route.
    let (code, _, doc) = send(Method::GET, &format!("{u}/v2/things"), None, vec![]).await;
    assert_eq!(code, 404, "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("no such route"),
        "{doc}"
    );
    // 405: a route that does not take this method, with the methods it takes.
    for (method, path) in [
        (Method::DELETE, "/v1/runs"),
        (
            Method::GET,
            "/v1/runs/01a21ce1-5408-70b7-9e20-3a9f7602fbc8/cancel",
        ),
        (Method::PUT, "/healthz"),
    ] {
        let (code, allow, doc) = send(method.clone(), &format!("{u}{path}"), None, vec![]).await;
        assert_eq!(code, 405, "{method} {path}: {doc}");
        let error = doc["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("`{method} {path}` is not a route")),
            "{doc}"
        );
        assert!(error.contains("the Allow header lists"), "{doc}");
        assert!(allow.is_some_and(|a| !a.is_empty()), "an Allow header");
    }
    // 413: over the body limit on a route that reads raw bytes (cancel).
    let cancel = format!("{u}/v1/runs/01a21ce1-5408-70b7-9e20-3a9f7602fbc8/cancel");
    let big = format!("{{\"reason\": \"{}\"}}", "x".repeat(2 << 20)).into_bytes();
    let (code, _, doc) = send(Method::POST, &cancel, Some("application/json"), big).await;
    assert_eq!(code, 413, "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("over the limit"),
        "{doc}"
    );
    // 400: not JSON; not sent as JSON.
    let runs = format!("{u}/v1/runs");
    let (code, _, doc) = send(
        Method::POST,
        &runs,
        Some("application/json"),
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{doc}");
    let body = br#"{"workflow": "gated", "input": {}}"#.to_vec();
    let (code, _, doc) = send(Method::POST, &runs, Some("text/plain"), body).await;
    assert_eq!(code, 400, "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("Content-Type"),
        "{doc}"
    );
    // 422: a task input that breaks its capability's schema (obj: an object).
    let (code, _, doc) = send(
        Method::POST,
        &format!("{u}/v1/tasks"),
        Some("application/json"),
        json!({"capability": "echo", "input": [1]})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!((code, doc["field"].clone()), (422, json!("input")), "{doc}");
}

#[tokio::test]
async fn a_gate_note_is_called_note_in_the_request_and_in_the_run() {
    let dir = setup();
    let node = serve(dir.path(), &[], &[("MUSTER_TOKEN", TOKEN)]);
    let u = &node.url;
    let (code, doc) = call_with(
        "POST",
        &format!("{u}/v1/runs"),
        Some(json!({"workflow": "gated", "input": {}})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 202, "{doc}");
    let run = doc["run"].as_str().expect("run").to_string();
    wait_run(u, TOKEN, &run, |d| d["status"] == "waiting").await;
    let (code, doc) = call_with(
        "POST",
        &format!("{u}/v1/runs/{run}/gates/ask"),
        Some(json!({"decision": "approve", "note": "looks right"})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 200, "{doc}");
    let doc = wait_run(u, TOKEN, &run, |d| d["status"] == "completed").await;
    assert_eq!(
        doc["gates"][0]["decided"],
        json!({"approved": true, "note": "looks right"}),
        "{doc}"
    );
}

#[tokio::test]
async fn a_huge_wrong_value_in_a_request_is_quoted_by_a_bounded_prefix() {
    let dir = setup();
    let node = serve(dir.path(), &[], &[("MUSTER_TOKEN", TOKEN)]);
    let u = &node.url;
    let huge = "z".repeat(500_000);
    let body = json!({"capability": "echo", "input": {}, "timeout_ms": huge});
    let (code, _, doc) = send(
        reqwest::Method::POST,
        &format!("{u}/v1/tasks"),
        Some("application/json"),
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(
        (code, doc["field"].clone()),
        (400, json!("timeout_ms")),
        "{doc}"
    );
    let error = doc["error"].as_str().unwrap();
    assert!(error.len() < 1024, "an error of {} bytes", error.len());
    assert!(error.contains("bytes)"), "{error}");
    // A path segment too.
    let (code, _, doc) = send(
        reqwest::Method::GET,
        &format!("{u}/v1/runs/{}", "q".repeat(20_000)),
        None,
        vec![],
    )
    .await;
    assert_eq!((code, doc["field"].clone()), (400, json!("id")), "{doc}");
    assert!(doc["error"].as_str().unwrap().len() < 1024, "{doc}");
}
