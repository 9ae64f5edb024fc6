//! What the tests of a serving node share: a temp cast (the `obj` schema, an echo agent, a
//! slow stdio agent), one-step workflows, and an HTTP client that calls the node's API with
//! a bearer token and reads JSON back.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// `schemas/obj.schema.json`: any object.
pub const OBJ_SCHEMA: &str =
    r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}"#;

/// Writes `dir/<sub>` for each of `subs`, the `obj` schema, and the echo agent (the
/// builtin function, `replicas` instances, capability `echo`).
pub fn write_cast(dir: &Path, subs: &[&str], replicas: usize) {
    for d in subs.iter().chain(&["actors", "schemas"]) {
        std::fs::create_dir_all(dir.join(d)).expect("dir");
    }
    std::fs::write(dir.join("schemas/obj.schema.json"), OBJ_SCHEMA).expect("schema");
    std::fs::write(
        dir.join("actors/echo.toml"),
        format!(
            "name = \"echo\"\nreplicas = {replicas}\n[[capabilities]]\nname = \"echo\"\ninput = \"obj\"\noutput = \"obj\"\n\
             [backend]\nkind = \"function\"\nname = \"echo\"\n"
        ),
    )
    .expect("manifest");
}

/// Writes the slow agent: tests/fixtures/agents/slow_stdio.py over stdio, concurrency 4,
/// capability `slow` (each task answers `{"n": input.n}` after `input.delay_ms`).
pub fn write_slow(dir: &Path) {
    let slow = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("tests/fixtures/agents/slow_stdio.py");
    std::fs::write(
        dir.join("actors/slow.toml"),
        format!(
            "name = \"slow\"\nconcurrency = 4\n[[capabilities]]\nname = \"slow\"\ninput = \"obj\"\noutput = \"obj\"\n\
             [backend]\nkind = \"command\"\nprogram = \"python3\"\nargs = [{:?}]\nmode = \"stdio\"\n",
            slow.display().to_string()
        ),
    )
    .expect("manifest");
}

/// A workflow `name` of one step on `capability` (input `obj`) that ends `done`.
pub fn one_step(name: &str, capability: &str, timeout: &str, attempts: u32) -> String {
    format!(
        "name = \"{name}\"\ninput = \"obj\"\nstart = \"one\"\n\n[steps.one]\ncapability = \"{capability}\"\n\
         timeout = \"{timeout}\"\nattempts = {attempts}\non_exhausted = \"fail\"\nnext = \"done\"\n\n\
         [steps.done]\nterminal = \"done\"\n"
    )
}

/// An HTTP client with a 30 s bound per request.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A request (`GET`, else `POST`) with `token` as bearer; the status and the JSON body
/// (`null` when the body is not JSON).
pub async fn call_with(
    method: &str,
    url: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let c = client();
    let mut req = match method {
        "GET" => c.get(url),
        _ => c.post(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("the node answers");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
