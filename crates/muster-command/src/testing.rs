//! Helpers shared by the command agent's unit tests (test builds only): fixture paths,
//! task contexts, a link that records what it is told, and a `LocalSet` to run in.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::LocalSet;
use tokio::time::Instant;
use uuid::Uuid;

use super::config::{CommandConfig, CommandMode};
use muster_core::agents::agent::{AgentError, AgentLink, TaskContext};

/// The bound on every single wait in these tests.
pub(super) const T: Duration = Duration::from_secs(5);

/// A path in the crate.
pub(super) fn script(rel: &str) -> String {
    format!("{}/../../{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// A path in `tests/fixtures/agents`.
pub(super) fn fixture(name: &str) -> String {
    script(&format!("tests/fixtures/agents/{name}"))
}

/// A oneshot config running a Python script.
pub(super) fn python(path: String) -> CommandConfig {
    CommandConfig::new("python3").with_args([path])
}

/// A stdio config running a Python script.
pub(super) fn stdio(path: String) -> CommandConfig {
    python(path).with_mode(CommandMode::Stdio)
}

/// A context for a new task at `epoch`, ten seconds from its deadline.
pub(super) fn ctx(epoch: u64) -> TaskContext {
    TaskContext::standalone(
        Uuid::now_v7(),
        epoch,
        "echo",
        "echo#0",
        Instant::now() + Duration::from_secs(10),
    )
}

/// Records what an agent tells its link.
#[derive(Clone, Default)]
pub(super) struct Recorder {
    exits: Arc<Mutex<Vec<Result<(), String>>>>,
    pub(super) alive: Arc<AtomicUsize>,
}

impl Recorder {
    pub(super) fn link(&self) -> AgentLink {
        let exits = self.exits.clone();
        let alive = self.alive.clone();
        AgentLink::new(
            Arc::new(move |r| exits.lock().unwrap().push(r)),
            Arc::new(move || {
                alive.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    pub(super) fn exits(&self) -> Vec<Result<(), String>> {
        self.exits.lock().unwrap().clone()
    }
}

/// Runs `f` in a `LocalSet`, as the actix runtime does.
pub(super) async fn local<F: Future>(f: F) -> F::Output {
    LocalSet::new().run_until(f).await
}

/// This process's peak resident set size in bytes (Linux), after resetting the peak to the
/// current size where the kernel allows it; `None` where it cannot be read.
pub(super) fn reset_peak_rss() -> Option<u64> {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    peak_rss()
}

/// This process's peak resident set size in bytes (Linux); `None` where it cannot be read.
pub(super) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The error in `result`; a success fails the test, quoting (a bounded prefix of) the output.
pub(super) fn expect_err(result: Result<serde_json::Value, AgentError>) -> AgentError {
    match result {
        Err(e) => e,
        Ok(out) => {
            let text = out.to_string();
            let head: String = text.chars().take(200).collect();
            panic!(
                "expected an error, got an output of {} bytes: {head}",
                text.len()
            )
        }
    }
}

/// A shell script, run as `sh -c SCRIPT sh PIDFILE`: `$1` is a fresh file in `dir` for it to
/// write a pid to (e.g. `sleep 300 & echo $! > "$1"`).
pub(super) fn sh_with_pidfile(script: &str, dir: &tempfile::TempDir) -> (CommandConfig, PathBuf) {
    let pidfile = dir.path().join("pid");
    let config = CommandConfig::new("sh").with_args([
        "-c".to_string(),
        script.to_string(),
        "sh".to_string(),
        pidfile.display().to_string(),
    ]);
    (config, pidfile)
}

/// The pid written (newline-terminated) to `pidfile`, waiting for it at most [`T`] × 6.
pub(super) async fn read_pid(pidfile: &Path) -> i32 {
    let deadline = Instant::now() + T * 6;
    loop {
        if let Ok(text) = std::fs::read_to_string(pidfile)
            && let Some(line) = text.strip_suffix('\n')
            && let Ok(pid) = line.trim().parse()
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no pid was written to {}",
            pidfile.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether process `pid` is gone (or a zombie: dead, waiting to be reaped by its parent).
pub(super) fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state is the first field after the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Waits (at most [`T`] × 6) for process `pid` to be gone; kills it if it is not, so that a
/// failing test leaves nothing behind, and says whether it went by itself.
pub(super) async fn wait_gone(pid: i32) -> bool {
    let deadline = Instant::now() + T * 6;
    while Instant::now() < deadline {
        if gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SAFETY: kill(2) with a pid this test started; no memory is involved.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    false
}
