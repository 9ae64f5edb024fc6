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

/// A running `muster serve`, killed by pid when dropped.
pub struct Serving {
    /// The process.
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its `--json` start line.
    pub start: Value,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `muster serve --workflows workflows --journal j/journal.db --listen 127.0.0.1:0
/// --json` plus `args` in `dir`, with `MUSTER_TOKEN` removed and `env` set, and reads its
/// start line (failing after 60 s).
pub fn serve(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Serving {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muster"));
    cmd.current_dir(dir)
        .env_remove("MUSTER_TOKEN")
        .env_remove("RUST_BACKTRACE")
        .args([
            "serve",
            "--workflows",
            "workflows",
            "--journal",
            "j/journal.db",
            "--listen",
            "127.0.0.1:0",
            "--json",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("muster serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The start line, then the rest drained so the node never blocks on its stdout.
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("muster serve printed no start line within 60 s");
        }
    };
    let start: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the start line is not JSON ({e}): {line:?}"));
    let url = start["url"].as_str().expect("url").to_string();
    Serving { child, url, start }
}

/// A request (`GET`, else `POST`) with `token` as bearer: the status, the `Retry-After`
/// header if any, and the JSON body (`null` when it is not JSON). An event stream's body
/// (a 200 `text/event-stream`) is not read: the stream is dropped at once.
pub async fn send(
    method: &str,
    url: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Option<String>, Value) {
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
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let streaming = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if streaming {
        return (status, retry_after, Value::Null);
    }
    let bytes = resp.bytes().await.expect("body");
    (
        status,
        retry_after,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Polls `GET {url}/v1/runs/{run}` with `token` until `done` holds of the document
/// (failing after 60 s).
pub async fn wait_run(url: &str, token: &str, run: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, doc) =
            call_with("GET", &format!("{url}/v1/runs/{run}"), None, Some(token)).await;
        assert_eq!(code, 200, "{doc}");
        if done(&doc) {
            return doc;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run {run} never got there: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `muster_admission_refused_total{kind="KIND"}` value of the node's metrics.
pub async fn refused_total(url: &str, token: &str, kind: &str) -> u64 {
    let resp = client()
        .get(format!("{url}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.expect("text");
    let prefix = format!("muster_admission_refused_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}in the metrics:\n{text}"))
}
