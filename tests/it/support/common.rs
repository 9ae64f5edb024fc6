//! Shared test helpers: a paused-clock actix system, bounded waits, small agents, and
//! journal queries. Every integration test runs on tokio's paused clock, so a 60 s timeout
//! costs no wall time, and every wait is bounded in virtual time, so a bug fails the test
//! instead of hanging it.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use muster::journal::Record;
use muster::{AgentDef, AgentError, CapabilitySpec, Event, Muster, MusterBuilder, TaskContext};
use serde_json::{Value, json};
use uuid::Uuid;

/// The capability every test agent serves unless told otherwise.
pub const CAP: &str = "work";

/// Runs `body` on a fresh actix system whose tokio runtime starts with a paused clock.
pub fn run_paused<F, Fut>(body: F) -> Fut::Output
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let sys = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a current-thread tokio runtime")
    });
    sys.block_on(body())
}

/// Runs a future on a paused-clock actix system (as [`run_paused`], for a future at hand).
pub fn paused<F: Future>(f: F) -> F::Output {
    run_paused(|| f)
}

/// Runs a future on an actix system with the real clock (tests that drive real processes).
pub fn real<F: Future>(f: F) -> F::Output {
    actix::System::new().block_on(f)
}

/// The 5-field benchmark payload schema of docs/workloads.md.
pub fn payload_schema() -> Value {
    json!({"type": "object",
        "required": ["task_id", "hops", "last", "data", "score"],
        "properties": {"task_id": {"type": "integer"}, "hops": {"type": "integer"},
                       "last": {"type": "string"}, "data": {"type": "string"},
                       "score": {"type": "number"}}})
}

/// Awaits `fut` for at most `secs` of virtual time; fails the test naming `what` otherwise.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s of virtual time waiting for {what}"),
    }
}

/// Lets virtual time pass (actors run meanwhile).
pub async fn pass(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Input schema: `{"n": integer}`.
pub fn input_schema() -> Value {
    json!({"type": "object", "required": ["n"],
           "properties": {"n": {"type": "integer"}}})
}

/// Output schema: `{"value": integer}`.
pub fn output_schema() -> Value {
    json!({"type": "object", "required": ["value"],
           "properties": {"value": {"type": "integer"}}})
}

/// The capability `work`: `in` → `out`.
pub fn cap() -> CapabilitySpec {
    CapabilitySpec::new(CAP, "in", "out")
}

/// A builder with the two schemas and a fixed seed (deterministic ids and clock origin).
pub fn builder() -> MusterBuilder {
    Muster::builder()
        .schema("in", input_schema())
        .schema("out", output_schema())
        .seed(7)
}

/// A function agent serving `work` with `f`.
pub fn agent<F, Fut>(name: &str, f: F) -> AgentDef
where
    F: Fn(Value, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, AgentError>> + 'static,
{
    AgentDef::function(name, f).capability(cap())
}

/// An agent that answers `{"value": n}` at once.
pub fn echo(name: &str) -> AgentDef {
    agent(name, |input, _ctx| async move {
        Ok(json!({"value": input["n"].as_i64().unwrap_or(0)}))
    })
}

/// A task input.
pub fn input(n: i64) -> Value {
    json!({"n": n})
}

/// Every journal record.
pub fn journal(m: &Muster) -> Vec<Record> {
    m.journal().read_after(0)
}

/// The id of the task an event is about, if any.
pub fn task_of(e: &Event) -> Option<Uuid> {
    match e {
        Event::TaskSubmitted { task, .. }
        | Event::LeaseGranted { task, .. }
        | Event::AttemptFailed { task, .. }
        | Event::ResultAccepted { task, .. }
        | Event::ResultStale { task, .. }
        | Event::TaskEscalated { task, .. }
        | Event::TaskCancelled { task, .. } => Some(*task),
        _ => None,
    }
}

/// The events of one task, in journal order.
pub fn events_of(m: &Muster, task: Uuid) -> Vec<Event> {
    journal(m)
        .into_iter()
        .map(|r| r.event)
        .filter(|e| task_of(e) == Some(task))
        .collect()
}

/// How many events of `kind` the task has.
pub fn count_kind(events: &[Event], kind: &str) -> usize {
    events.iter().filter(|e| e.kind() == kind).count()
}

/// Sets a flag when dropped: shows that an agent's future was dropped (cancelled).
pub struct DropGuard(pub Arc<AtomicBool>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A future that never completes.
pub async fn hang() -> Result<Value, AgentError> {
    futures::future::pending::<()>().await;
    unreachable!()
}

/// The `muster` binary under test, run from the repository root (where the tests run).
/// `RUST_BACKTRACE` is removed, so a panic (which no bad input may cause) shows as a user
/// would see it.
pub fn muster() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_muster"));
    cmd.env_remove("RUST_BACKTRACE");
    cmd
}

/// The `muster` binary under test, to run in `dir` (see [`muster`]).
pub fn muster_cmd(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = muster();
    cmd.current_dir(dir);
    cmd
}

/// Runs `muster ARGS` in `dir` and waits for it, failing the test after `secs` seconds.
pub fn muster_within(secs: u64, args: &[&str], dir: &std::path::Path) -> std::process::Output {
    let mut cmd = muster_cmd(dir);
    cmd.args(args);
    output_within(secs, cmd)
}

/// Runs a prepared command to its end with stdout and stderr captured (see
/// [`wait_within`]); fails the test if it takes over `secs` seconds.
pub fn output_within(secs: u64, mut cmd: std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    wait_within(child, secs, &format!("{cmd:?}"))
}

/// Waits for a started child to exit, reading its piped stdout and stderr while it runs
/// (so a large output cannot block it; a stream not piped reads as empty); kills it and
/// fails the test, naming `what` and quoting its stderr, if it takes over `secs` seconds
/// of wall time (a real process: the paused clock does not reach it).
pub fn wait_within(mut child: std::process::Child, secs: u64, what: &str) -> std::process::Output {
    fn drain<R: std::io::Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "{what} did not finish within {secs}s: {}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

/// Runs `scripts/SCRIPT path` (installing what the script owns when absent, 15 minutes
/// at most) and returns the value of each of `keys` from its `key=value` lines, in order.
pub fn script_paths(script: &str, keys: &[&str]) -> Vec<std::path::PathBuf> {
    let mut cmd = std::process::Command::new(format!("scripts/{script}"));
    cmd.arg("path");
    let out = output_within(900, cmd);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "scripts/{script} path failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    keys.iter()
        .map(|k| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| panic!("scripts/{script} path printed no {k}=: {text}"))
        })
        .collect()
}
