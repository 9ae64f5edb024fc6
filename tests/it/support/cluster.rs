//! A real cluster on this machine for tests: nats-server with JetStream on free loopback
//! ports and a temp store dir (ready when its monitor answers
//! `/healthz?js-enabled-only=true`), or a JetStream cluster of several such servers
//! (`NatsCluster`: names, routes, a store dir each; ready when every server's `/healthz`
//! answers), a control node (`muster serve --nats`) and worker processes
//! (`muster worker`), each stopped by pid when dropped. Every wait has a deadline.

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
        http_get(self.monitor, "/healthz?js-enabled-only=true").is_some_and(|(code, _)| code == 200)
    }
}

/// `GET path` on a nats-server's monitor port: the status and the body (None when it does
/// not answer within 2 s).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// One server of a `NatsCluster`: its name, ports and store; `proc` is None while it is
/// down.
pub struct Member {
    pub name: String,
    pub port: u16,
    pub monitor: u16,
    pub route: u16,
    pub store: PathBuf,
    pub proc: Option<Proc>,
}

/// A JetStream cluster of nats-servers on loopback: `nats-1`, `nats-2`, ... in cluster
/// `muster-test`, each with its own store dir under the test's dir and routes to all.
pub struct NatsCluster {
    pub members: Vec<Member>,
    routes: String,
}

/// The cluster's name.
pub const CLUSTER_NAME: &str = "muster-test";

impl NatsCluster {
    /// Starts `n` servers and waits (at most 60 s) until each answers `/healthz` (its
    /// JetStream is in touch with the meta leader).
    pub fn start(dir: &Path, n: usize) -> NatsCluster {
        let members: Vec<Member> = (1..=n)
            .map(|i| Member {
                name: format!("nats-{i}"),
                port: free_port(),
                monitor: free_port(),
                route: free_port(),
                store: dir.join(format!("nats-store-{i}")),
                proc: None,
            })
            .collect();
        let routes = members
            .iter()
            .map(|m| format!("nats://127.0.0.1:{}", m.route))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = NatsCluster { members, routes };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_healthy(i, 60);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let routes = self.routes.clone();
        let m = &mut self.members[i];
        std::fs::create_dir_all(&m.store).expect("store dir");
        let child = Command::new(nats_server())
            .args(["-js", "-a", "127.0.0.1", "-p", &m.port.to_string()])
            .args(["-m", &m.monitor.to_string(), "--server_name", &m.name])
            .arg("-sd")
            .arg(&m.store)
            .args(["--cluster_name", CLUSTER_NAME, "--cluster"])
            .arg(format!("nats://127.0.0.1:{}", m.route))
            .args(["--routes", &routes])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs");
        m.proc = Some(Proc {
            child,
            name: m.name.clone(),
        });
    }

    /// Waits (at most `secs`) until member `i` answers `/healthz` with 200.
    fn wait_healthy(&mut self, i: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let m = &mut self.members[i];
            if http_get(m.monitor, "/healthz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            if let Some(p) = m.proc.as_mut() {
                if let Ok(Some(status)) = p.child.try_wait() {
                    panic!("nats-server {} exited: {status}", m.name);
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} not healthy within {secs} s: {:?}",
                m.name,
                http_get(m.monitor, "/healthz")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every server's client URL, comma-separated (what `--nats` takes).
    pub fn url(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("nats://127.0.0.1:{}", m.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URLs of the servers up now.
    pub fn live_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.proc.is_some())
            .map(|m| format!("nats://127.0.0.1:{}", m.port))
            .collect()
    }

    fn index(&self, name: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.name == name)
            .unwrap_or_else(|| panic!("no server {name} in the cluster"))
    }

    /// SIGKILLs server `name` (and reaps it); its store stays.
    pub fn kill(&mut self, name: &str) {
        let i = self.index(name);
        let mut p = self.members[i].proc.take().expect("the server is up");
        p.kill();
    }

    /// Starts server `name` again, same ports and store, and waits (at most 60 s) until
    /// it answers `/healthz`.
    pub fn restart(&mut self, name: &str) {
        let i = self.index(name);
        assert!(self.members[i].proc.is_none(), "{name} is up");
        self.spawn(i);
        self.wait_healthy(i, 60);
    }

    /// `/jsz` (with `query`) of the first server up that answers, as JSON.
    fn jsz(&self, query: &str) -> Option<(String, Value)> {
        self.members
            .iter()
            .filter(|m| m.proc.is_some())
            .find_map(|m| {
                let (code, body) = http_get(m.monitor, &format!("/jsz{query}"))?;
                (code == 200)
                    .then(|| serde_json::from_str(&body).ok())
                    .flatten()
                    .map(|v| (m.name.clone(), v))
            })
    }

    /// The JetStream meta leader's name, as a server that is up reports it (waits at
    /// most `secs` for one that names a server that is up).
    pub fn meta_leader(&self, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let leader = self
                .jsz("")
                .and_then(|(_, v)| v["meta_cluster"]["leader"].as_str().map(String::from))
                .filter(|l| {
                    self.members
                        .iter()
                        .any(|m| &m.name == l && m.proc.is_some())
                });
            if let Some(l) = leader {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no meta leader among the servers up within {secs} s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stream `stream`'s state on server `name` itself (its replica): `/jsz?streams=true`
    /// of that server.
    pub fn local_stream(&self, name: &str, stream: &str) -> Option<Value> {
        let m = &self.members[self.index(name)];
        let (code, body) = http_get(m.monitor, "/jsz?streams=true")?;
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        v["account_details"]
            .as_array()?
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
            .find(|s| s["name"] == json!(stream))
    }
}

/// A JetStream client of the cluster's servers that are up (for stream info).
pub async fn jetstream(urls: &[String]) -> async_nats::jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(urls)
        .await
        .expect("the test connects to NATS");
    async_nats::jetstream::new(client)
}

/// Stream `stream`'s info as its leader reports it, retried (every 100 ms, at most
/// `secs`) until `done` holds: during an election the request fails or names no leader.
pub async fn stream_info(
    js: &async_nats::jetstream::Context,
    stream: &str,
    secs: u64,
    done: impl Fn(&async_nats::jetstream::stream::Info) -> bool,
) -> async_nats::jetstream::stream::Info {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last;
    loop {
        match js.get_stream(stream).await {
            Ok(mut s) => match s.info().await {
                Ok(info) if done(info) => return info.clone(),
                Ok(info) => last = format!("{:?}", info.cluster),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        assert!(
            Instant::now() < deadline,
            "stream {stream} never got there within {secs} s: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    control_with(dir, nats, node, journal, &[]).0
}

/// Starts a control node named `node` with `extra` arguments; the node and its JSON start
/// line.
pub fn control_with(
    dir: &Path,
    nats: &str,
    node: &str,
    journal: &str,
    extra: &[&str],
) -> (ControlNode, Value) {
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
        .args(extra)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("muster serve starts");
    let line = first_line(&mut child, "muster serve --nats", 60);
    let start: Value = serde_json::from_str(&line).expect("start line is JSON");
    let url = start["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no url in the start line: {start}"))
        .to_string();
    assert_eq!(
        start["node"],
        serde_json::json!(node),
        "the start line names the node"
    );
    assert_eq!(start["nats"], serde_json::json!(nats));
    (
        ControlNode {
            proc: Proc {
                child,
                name: format!("control {node}"),
            },
            url,
        },
        start,
    )
}

/// Starts a worker named `node` hosting `dir`'s actors (the printed join line is waited
/// for: its keys are published).
pub fn worker(dir: &Path, nats: &str, node: &str) -> Proc {
    worker_with(dir, nats, node, &[]).0
}

/// Starts a worker named `node` with `extra` arguments; the process and its JSON join
/// line.
pub fn worker_with(dir: &Path, nats: &str, node: &str, extra: &[&str]) -> (Proc, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster"))
        .current_dir(dir)
        .args(["worker", "--nats", nats, "--node", node, "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("muster worker starts");
    let line = first_line(&mut child, "muster worker", 60);
    let joined: Value = serde_json::from_str(&line).expect("join line is JSON");
    assert_eq!(joined["node"], json!(node), "{joined}");
    (
        Proc {
            child,
            name: format!("worker {node}"),
        },
        joined,
    )
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
