//! A real cluster on this machine for tests: nats-server with JetStream on free loopback
//! ports and a temp store dir (ready when its monitor answers
//! `/healthz?js-enabled-only=true`), a control node (`muster serve --nats`) and worker
//! processes (`muster worker`), each stopped by pid when dropped. Every wait has a
//! deadline.

#![allow(dead_code)]

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The API token of every control node started here.
pub const TOKEN: &str = "cluster-test-token-0123456789";

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `sig` (e.g. `libc::SIGSTOP`) to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "signal {sig} to {}", self.name);
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to stop (SIGTERM) and waits for its exit, at most `secs`.
    pub fn stop(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A stopped process must be continued to die of SIGKILL promptly everywhere.
        // SAFETY: as above.
        unsafe {
            libc::kill(self.pid(), libc::SIGCONT);
        }
        self.kill();
    }
}

/// The nats-server binary: `scripts/nats-server path` (which installs it when absent).
pub fn nats_server() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new(
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("scripts/nats-server"),
        )
        .arg("path")
        .output()
        .expect("scripts/nats-server runs");
        assert!(
            out.status.success(),
            "nats-server could not be installed by `scripts/nats-server path`:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// A nats-server with JetStream on free ports, its store in `dir`.
pub struct Nats {
    pub proc: Proc,
    pub port: u16,
    pub monitor: u16,
    pub store: PathBuf,
}

impl Nats {
    /// Starts it and waits (at most 30 s) until JetStream is ready.
    pub fn start(dir: &Path) -> Nats {
        Nats::start_on(dir, free_port(), free_port())
    }

    /// Starts it on the given ports (a restart keeps its port and store).
    pub fn start_on(dir: &Path, port: u16, monitor: u16) -> Nats {
        let store = dir.join("nats-store");
        std::fs::create_dir_all(&store).expect("store dir");
        let child = Command::new(nats_server())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor.to_string(), "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs");
        let nats = Nats {
            proc: Proc {
                child,
                name: "nats-server".into(),
            },
            port,
            monitor,
            store,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !nats.ready() {
            assert!(
                Instant::now() < deadline,
                "nats-server not ready within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nats
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn ready(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.monitor)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = "GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200")
    }
}

/// Reads the first line `child` prints on stdout (at most `secs`); the rest is drained.
fn first_line(child: &mut Child, what: &str, secs: u64) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        let mut sink = String::new();
        while r.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(l) if !l.is_empty() => l,
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} printed no start line within {secs} s");
        }
    }
}

/// A control node: `muster serve --nats` in `dir` (which holds actors/, schemas/,
/// workflows/), journaling into `dir/<journal>`.
pub struct ControlNode {
    pub proc: Proc,
    pub url: String,
}

/// Starts a control node named `node`.
pub fn control(dir: &Path, nats: &str, node: &str, journal: &str) -> ControlNode {
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster"))
        .current_dir(dir)
        .env("MUSTER_CLUSTER_TEST_TOKEN", TOKEN)
        .args(["serve", "--nats", nats, "--node", node, "--ttl", "1s"])
        .args(["--workflows", "workflows", "--journal", journal])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--token-env",
            "MUSTER_CLUSTER_TEST_TOKEN",
        ])
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("muster serve starts");
    let line = first_line(&mut child, "muster serve --nats", 60);
    let start: Value = serde_json::from_str(&line).expect("start line is JSON");
    let url = start["url"].as_str().expect("url").to_string();
    assert_eq!(
        start["node"],
        serde_json::json!(node),
        "the start line names the node"
    );
    assert_eq!(start["nats"], serde_json::json!(nats));
    ControlNode {
        proc: Proc {
            child,
            name: format!("control {node}"),
        },
        url,
    }
}

/// Starts a worker named `node` hosting `dir`'s actors (the printed join line is waited
/// for: its keys are published).
pub fn worker(dir: &Path, nats: &str, node: &str) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster"))
        .current_dir(dir)
        .args(["worker", "--nats", nats, "--node", node, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("muster worker starts");
    let line = first_line(&mut child, "muster worker", 60);
    let joined: Value = serde_json::from_str(&line).expect("join line is JSON");
    assert_eq!(joined["node"], json!(node));
    Proc {
        child,
        name: format!("worker {node}"),
    }
}

/// A request with the token; the status and the JSON body.
pub async fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    super::node::call_with(method, url, body, Some(TOKEN)).await
}

/// Polls `GET path` on the node until `done` holds (failing after `secs`).
pub async fn wait_for(
    node: &ControlNode,
    path: &str,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (code, doc) = call("GET", &format!("{}{path}", node.url), None).await;
        if code == 200 && done(&doc) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never got there: {code} {doc}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a run of `workflow`; its id.
pub async fn start_run(node: &ControlNode, workflow: &str, input: Value) -> String {
    let (code, doc) = call(
        "POST",
        &format!("{}/v1/runs", node.url),
        Some(json!({"workflow": workflow, "input": input})),
    )
    .await;
    assert_eq!(code, 202, "{doc}");
    doc["run"].as_str().expect("run id").to_string()
}

/// Waits for a run to end (at most `secs`); its document.
pub async fn wait_run(node: &ControlNode, run: &str, secs: u64) -> Value {
    wait_for(node, &format!("/v1/runs/{run}"), secs, |d| {
        matches!(
            d["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
    })
    .await
}

/// Every journal record of the node, in order.
pub async fn records(node: &ControlNode) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let (code, doc) = call(
            "GET",
            &format!("{}/v1/records?after={after}&limit=10000", node.url),
            None,
        )
        .await;
        assert_eq!(code, 200, "{doc}");
        let recs = doc["records"].as_array().cloned().unwrap_or_default();
        out.extend(recs);
        match doc["next"].as_u64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}
