//! A real cluster on this machine for tests: nats-server with JetStream on free loopback
//! ports and a temp store dir (ready when its monitor answers
//! `/healthz?js-enabled-only=true`), or a JetStream cluster of several such servers
//! (`NatsCluster`: names, routes, a store dir each; ready when every server's `/healthz`
//! answers and every server names the same meta leader), a control node
//! (`muster serve --nats`) and worker processes (`muster worker`), each stopped by pid
//! when dropped. Every wait has a deadline.
//!
//! Starting servers is made robust against the races of a busy machine running many
//! tests at once:
//! - ports come from `free_port`: a range below the kernel's ephemeral range (which
//!   `bind(0)` and outgoing connections draw from, so nothing else takes them unasked),
//!   handed out once per test binary and checked free just before use;
//! - a server that exits at start (a port taken after all) or a cluster that elects no
//!   meta leader within a bound is stopped and started again on fresh ports and a fresh
//!   store, a few times, before the test fails with every attempt's server log tails;
//! - each cluster has a name of its own, so a route that reached another test's server
//!   is refused instead of merging two clusters;
//! - at most one multi-server cluster is up at a time in the test binary
//!   (`cluster_gate`), so elections do not starve each other on a small machine.

#![allow(dead_code)]

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The API token of every control node started here.
pub const TOKEN: &str = "cluster-test-token-0123456789";

/// How many times a server or a cluster is started on fresh ports before a test fails.
pub const START_ATTEMPTS: u32 = 3;

/// The lowest port `free_port` hands out.
const PORTS_LO: u32 = 10_000;

/// `(lo, hi)` of the kernel's ephemeral port range (`bind(0)` and outgoing connections).
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((49_152, 65_535))
}

/// True when nothing listens on `port` (on loopback or on every address) right now.
fn port_is_free(port: u16) -> bool {
    // One at a time: a listener on loopback would itself make the second bind fail.
    let loopback = TcpListener::bind(("127.0.0.1", port)).is_ok();
    loopback && TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// A free TCP port for a server started here: taken in turn (from a start drawn from
/// the pid, so two test binaries start far apart) from the ports below the kernel's
/// ephemeral range, so no `bind(0)` and no outgoing connection of any process takes it
/// between this check and the server's bind; each port is handed out at most once per
/// test binary and is checked free (nothing listens on it) when handed out. Falls back
/// to `bind(0)` when the ephemeral range leaves too little room below it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (lo, _) = ephemeral_range();
    let hi = lo.min(65_536);
    if hi < PORTS_LO + 2_000 {
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
    }
    let span = hi - PORTS_LO;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (PORTS_LO + (start + n) % span) as u16;
        if port_is_free(port) {
            return port;
        }
    }
    panic!("no free port in {PORTS_LO}..{hi}");
}

/// Held while a multi-server cluster is up: at most one at a time in the test binary.
/// Dropping it lets the next one start.
pub struct ClusterGate(());

static GATE: Mutex<bool> = Mutex::new(false);
static GATE_FREE: Condvar = Condvar::new();

/// Waits (unbounded: the holder's own waits are bounded) until no other multi-server
/// cluster is up in this test binary, and holds the gate. A test that starts a
/// multi-server cluster some other way (`scripts/cluster.sh --nats-servers 3`) takes it
/// too.
pub fn cluster_gate() -> ClusterGate {
    let mut busy = GATE.lock().unwrap_or_else(|e| e.into_inner());
    while *busy {
        busy = GATE_FREE.wait(busy).unwrap_or_else(|e| e.into_inner());
    }
    *busy = true;
    ClusterGate(())
}

impl Drop for ClusterGate {
    fn drop(&mut self) {
        *GATE.lock().unwrap_or_else(|e| e.into_inner()) = false;
        GATE_FREE.notify_one();
    }
}

/// The last `n` lines of the file at `path` (or why there are none).
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// `path` opened for appending, for a child's stdout and stderr.
fn log_file(path: &Path) -> (Stdio, Stdio) {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("a log file");
    let g = f.try_clone().expect("the log file again");
    (Stdio::from(f), Stdio::from(g))
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

    /// Its exit status when it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
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

/// A nats-server with JetStream on free ports, its store in `dir`, its log in
/// `dir/nats.log`.
pub struct Nats {
    pub proc: Proc,
    pub port: u16,
    pub monitor: u16,
    pub store: PathBuf,
    pub log: PathBuf,
}

impl Nats {
    /// Starts it on fresh ports and waits (at most 30 s) until JetStream is ready; when
    /// it exits or is not ready in time it is stopped and started again on other ports
    /// and an empty store (`START_ATTEMPTS` in all), then the test fails with its log.
    pub fn start(dir: &Path) -> Nats {
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            let store = dir.join("nats-store");
            let _ = std::fs::remove_dir_all(&store);
            let (port, monitor) = (free_port(), free_port());
            match Nats::try_start_on(dir, port, monitor, 30) {
                Ok(nats) => return nats,
                Err(e) => failures.push(format!("attempt {attempt} (port {port}): {e}")),
            }
        }
        panic!(
            "nats-server did not start in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// Starts it on the given ports (a restart keeps its port and store) and waits (at
    /// most 30 s) until JetStream is ready; fails with its log tail otherwise.
    pub fn start_on(dir: &Path, port: u16, monitor: u16) -> Nats {
        Nats::try_start_on(dir, port, monitor, 30).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts it on the given ports: the server when JetStream is ready within `secs`;
    /// else it is stopped (by pid) and the error has its exit status and log tail.
    fn try_start_on(dir: &Path, port: u16, monitor: u16, secs: u64) -> Result<Nats, String> {
        let store = dir.join("nats-store");
        std::fs::create_dir_all(&store).expect("store dir");
        let log = dir.join("nats.log");
        let (out, err) = log_file(&log);
        let child = Command::new(nats_server())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor.to_string(), "-sd"])
            .arg(&store)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("nats-server runs");
        let mut nats = Nats {
            proc: Proc {
                child,
                name: "nats-server".into(),
            },
            port,
            monitor,
            store,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !nats.ready() {
            let why = if let Some(status) = nats.proc.exited() {
                format!("nats-server exited: {status}")
            } else if Instant::now() >= deadline {
                format!("nats-server not ready within {secs} s")
            } else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            nats.proc.kill();
            return Err(format!(
                "{why}; the tail of {}:\n{}",
                nats.log.display(),
                log_tail(&nats.log, 20)
            ));
        }
        Ok(nats)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn ready(&self) -> bool {
        http_get(self.monitor, "/healthz?js-enabled-only=true").is_some_and(|(code, _)| code == 200)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        // A test failing while the server is up shows what the server said.
        if std::thread::panicking() {
            eprintln!(
                "--- the tail of nats-server's log {}:\n{}",
                self.log.display(),
                log_tail(&self.log, 30)
            );
        }
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

/// One server of a `NatsCluster`: its name, ports, store and log; `proc` is None while
/// it is down.
pub struct Member {
    pub name: String,
    pub port: u16,
    pub monitor: u16,
    pub route: u16,
    pub store: PathBuf,
    pub log: PathBuf,
    pub proc: Option<Proc>,
}

/// A JetStream cluster of nats-servers on loopback: `nats-1`, `nats-2`, ... in a cluster
/// named `muster-test-PID-N` (its own), each with its own store dir and log under the
/// test's dir and routes to all. It holds the `cluster_gate` while it is up (when it has
/// more than one server); its servers are stopped by pid when it is dropped.
pub struct NatsCluster {
    pub members: Vec<Member>,
    /// The cluster's name (`--cluster_name`), its own among the clusters of this test
    /// binary.
    pub name: String,
    /// Why each earlier attempt at starting it failed (with its servers' log tails).
    pub failures: Vec<String>,
    routes: String,
    // Dropped after the members (fields drop in order): the next cluster starts once
    // these servers are gone.
    _gate: Option<ClusterGate>,
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        // A test failing while the cluster is up shows what its servers said; the servers
        // are then stopped by pid (each member's `Proc`), and the gate let go.
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(30));
        }
    }
}

/// How long one attempt at starting a cluster may take before it is started again.
const CLUSTER_START_SECS: u64 = 45;

impl NatsCluster {
    /// Starts `n` servers and waits (at most `CLUSTER_START_SECS`) until each answers
    /// `/healthz` (its JetStream is in touch with the meta leader) and all name the same
    /// meta leader. A server that exits (e.g. a port taken after all) or a cluster not
    /// ready in time is stopped and started again on fresh ports and empty stores,
    /// `START_ATTEMPTS` in all; then the test fails with each attempt's log tails.
    pub fn start(dir: &Path, n: usize) -> NatsCluster {
        NatsCluster::start_with(dir, n, None)
    }

    /// As `start`, the first attempt on the given ports (client, monitor, route of each
    /// server) when `first` is set: the test of the retry gives it a port it holds.
    pub fn start_with(dir: &Path, n: usize, first: Option<Vec<(u16, u16, u16)>>) -> NatsCluster {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let mut gate = (n > 1).then(cluster_gate);
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            let name = format!(
                "muster-test-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            );
            let members: Vec<Member> = (1..=n)
                .map(|i| {
                    let store = dir.join(format!("nats-store-{i}"));
                    let _ = std::fs::remove_dir_all(&store);
                    let given = first
                        .as_ref()
                        .filter(|_| attempt == 1)
                        .and_then(|f| f.get(i - 1).copied());
                    let (port, monitor, route) =
                        given.unwrap_or_else(|| (free_port(), free_port(), free_port()));
                    Member {
                        name: format!("nats-{i}"),
                        port,
                        monitor,
                        route,
                        store,
                        log: dir.join(format!("nats-{i}.log")),
                        proc: None,
                    }
                })
                .collect();
            for m in &members {
                let _ = std::fs::remove_file(&m.log);
            }
            let routes = members
                .iter()
                .map(|m| format!("nats://127.0.0.1:{}", m.route))
                .collect::<Vec<_>>()
                .join(",");
            let mut cluster = NatsCluster {
                members,
                name,
                routes,
                failures: Vec::new(),
                _gate: None,
            };
            match cluster.try_start(CLUSTER_START_SECS) {
                Ok(()) => {
                    cluster._gate = gate.take();
                    cluster.failures = failures;
                    return cluster;
                }
                Err(e) => {
                    failures.push(format!(
                        "attempt {attempt} (cluster {}): {e}\n{}",
                        cluster.name,
                        cluster.log_tails(20)
                    ));
                    eprintln!(
                        "NatsCluster: attempt {attempt} of {START_ATTEMPTS} failed ({e}); \
                         starting again on fresh ports"
                    );
                    // Dropping it stops its servers by pid.
                }
            }
        }
        panic!(
            "a {n}-server JetStream cluster did not start in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// Spawns every server and waits until the cluster is ready, at most `secs`.
    fn try_start(&mut self, secs: u64) -> Result<(), String> {
        for i in 0..self.members.len() {
            self.spawn(i);
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        for i in 0..self.members.len() {
            self.poll_healthy(i, deadline)?;
        }
        loop {
            let leaders: Vec<Option<String>> = self
                .members
                .iter()
                .map(|m| {
                    let (code, body) = http_get(m.monitor, "/jsz")?;
                    let v: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
                    v["meta_cluster"]["leader"]
                        .as_str()
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                })
                .collect();
            let first = leaders.first().cloned().flatten();
            let agreed = first.as_ref().is_some_and(|l| {
                self.members.iter().any(|m| &m.name == l)
                    && leaders.iter().all(|x| x.as_ref() == Some(l))
            });
            if agreed {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the servers do not name one meta leader within {secs} s: {leaders:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn spawn(&mut self, i: usize) {
        let routes = self.routes.clone();
        let cluster_name = self.name.clone();
        let m = &mut self.members[i];
        std::fs::create_dir_all(&m.store).expect("store dir");
        let (out, err) = log_file(&m.log);
        let child = Command::new(nats_server())
            .args(["-js", "-a", "127.0.0.1", "-p", &m.port.to_string()])
            .args(["-m", &m.monitor.to_string(), "--server_name", &m.name])
            .arg("-sd")
            .arg(&m.store)
            .args(["--cluster_name", &cluster_name, "--cluster"])
            .arg(format!("nats://127.0.0.1:{}", m.route))
            .args(["--routes", &routes])
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("nats-server runs");
        m.proc = Some(Proc {
            child,
            name: m.name.clone(),
        });
    }

    /// Waits until member `i` answers `/healthz` with 200; an error when it exits or
    /// `deadline` passes.
    fn poll_healthy(&mut self, i: usize, deadline: Instant) -> Result<(), String> {
        loop {
            let m = &mut self.members[i];
            if http_get(m.monitor, "/healthz").is_some_and(|(code, _)| code == 200) {
                return Ok(());
            }
            for m in self.members.iter_mut() {
                if let Some(status) = m.proc.as_mut().and_then(Proc::exited) {
                    return Err(format!("nats-server {} exited: {status}", m.name));
                }
            }
            if Instant::now() >= deadline {
                let m = &self.members[i];
                return Err(format!(
                    "nats-server {} not healthy in time: {:?}",
                    m.name,
                    http_get(m.monitor, "/healthz")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `n` lines of every server's log, each under its name.
    pub fn log_tails(&self, n: usize) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "--- {} (client {}, route {}, monitor {}), {}:\n{}",
                    m.name,
                    m.port,
                    m.route,
                    m.monitor,
                    m.log.display(),
                    log_tail(&m.log, n)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
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
    /// it answers `/healthz`; fails with the servers' log tails otherwise.
    pub fn restart(&mut self, name: &str) {
        let i = self.index(name);
        assert!(self.members[i].proc.is_none(), "{name} is up");
        self.spawn(i);
        let deadline = Instant::now() + Duration::from_secs(60);
        if let Err(e) = self.poll_healthy(i, deadline) {
            panic!("restarting {name}: {e}\n{}", self.log_tails(30));
        }
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
                "no meta leader among the servers up within {secs} s\n{}",
                self.log_tails(30)
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
