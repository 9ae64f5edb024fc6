//! Everything about an agent's operating-system process that does not depend on the
//! protocol spoken over its pipes: how it is spawned, how its exit is described, how its
//! stderr tail is kept, and how its output is quoted in error messages.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use super::config::{CommandConfig, CommandLimits, DEFAULT_ENV_PASS};
use muster_core::agents::agent::{AgentError, TaskContext};

/// The largest answer accepted from an agent program, in bytes: a oneshot program's whole
/// stdout, or one line a stdio program prints. The same as the journal's default payload
/// bound (4 MiB), so that any accepted output can be journaled.
pub const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// How many stderr lines are kept for error messages.
const STDERR_TAIL_LINES: usize = 50;
/// How much of one stderr line is kept (the rest of it is dropped).
const STDERR_LINE_BYTES: usize = 2048;
/// How much is read from a pipe at once.
const READ_CHUNK: usize = 64 * 1024;
/// How many characters of a message from an agent (an `error` line) are kept.
const MESSAGE_CHARS: usize = 2000;
/// How much of the stderr tail goes into an error message.
pub(super) const STDERR_TAIL_BYTES: usize = 2048;

/// The command for `config`, with piped stdio and a least-privilege environment: only the
/// variables in [`DEFAULT_ENV_PASS`] and `config.env_pass` (as set in muster's environment),
/// then `config.env`, then `MUSTER_AGENT`. On Unix the process leads a new process group
/// (so that [`ProcessGroup::kill`] takes down whatever it starts too), gets `config.limits`
/// and, on Linux, is killed by the kernel if the thread that spawned it dies (which covers
/// muster being SIGKILLed: nothing of muster's own runs then).
///
/// Where the [agent shim](crate::shim) is available, the process is the shim, which runs
/// the program as its child and takes the whole group down if muster dies; the program is
/// then looked up first (a missing program fails here, named as a failed spawn would be).
pub(super) fn base_command(name: &str, config: &CommandConfig) -> Result<Command, AgentError> {
    let shim = crate::shim::available();
    let mut cmd = if shim {
        let here = std::env::current_dir()
            .map_err(|e| AgentError::new(format!("agent {name}: no working directory: {e}")))?;
        let resolved = crate::program::find_program(config, &here)
            .map_err(|e| AgentError::new(format!("agent {name}: {e}")))?;
        let mut cmd = Command::new(crate::shim::program());
        #[cfg(unix)]
        cmd.arg0(crate::shim::SHIM_ARG0);
        cmd.args(crate::shim::shim_args(
            std::process::id(),
            &config.limits,
            &resolved,
            &config.program,
        ));
        cmd
    } else {
        Command::new(&config.program)
    };
    cmd.args(&config.args).env_clear();
    let passed = DEFAULT_ENV_PASS
        .iter()
        .copied()
        .chain(config.env_pass.iter().map(String::as_str));
    for var in passed {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    cmd.envs(&config.env)
        .env("MUSTER_AGENT", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &config.cwd {
        cmd.current_dir(cwd);
    }
    #[cfg(unix)]
    {
        cmd.process_group(0);
        let parent = std::process::id();
        // The shim applies the limits to the program, not to itself.
        let limits = if shim {
            CommandLimits::default()
        } else {
            config.limits
        };
        // SAFETY: `in_child` only makes async-signal-safe system calls (no allocation, no
        // lock), as code between fork and exec must.
        unsafe {
            cmd.pre_exec(move || crate::child::in_child(parent, &limits));
        }
    }
    Ok(cmd)
}

/// The process group an agent process leads: killing it kills the process and whatever it
/// started (unless that moved to a group or session of its own). Killed at most once, and
/// on drop if not before, so every way an attempt or an instance ends takes the group down.
///
/// Kill it before reaping the leader where possible: while the leader is unreaped (or any
/// member lives) the group id cannot be reused, so the signal cannot reach a stranger.
/// After an exit the leader is already reaped; the group is then killed at once, in the
/// same poll, which leaves only a negligible window for its id to be reused.
#[derive(Debug)]
pub(super) struct ProcessGroup {
    pgid: Cell<Option<u32>>,
}

impl ProcessGroup {
    /// The group `child` leads (as every process from [`base_command`] does).
    pub(super) fn of(child: &Child) -> Self {
        ProcessGroup {
            pgid: Cell::new(child.id()),
        }
    }

    /// Sends SIGKILL to every process in the group, the first time only.
    pub(super) fn kill(&self) {
        let Some(pgid) = self.pgid.take() else {
            return;
        };
        #[cfg(unix)]
        if let Ok(pgid) = libc::pid_t::try_from(pgid)
            && pgid > 0
        {
            // SAFETY: kill(2) takes no pointers. A negative pid names the group.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        #[cfg(not(unix))]
        let _ = pgid;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The error for a program that could not be started, naming it (and its directory).
pub(super) fn spawn_error(name: &str, config: &CommandConfig, e: &std::io::Error) -> AgentError {
    let cwd = match &config.cwd {
        Some(cwd) => format!(" in {}", cwd.display()),
        None => String::new(),
    };
    let program = &config.program;
    let why = match e.kind() {
        std::io::ErrorKind::NotFound if !program.contains('/') => {
            format!("`{program}` not found on PATH")
        }
        std::io::ErrorKind::NotFound => format!("`{program}` not found{cwd}"),
        std::io::ErrorKind::PermissionDenied => {
            format!("`{program}`{cwd}: permission denied")
        }
        _ => format!("cannot start program `{program}`{cwd}: {e}"),
    };
    AgentError::new(format!("agent {name}: {why}"))
}

/// Milliseconds left before the task's deadline.
pub(super) fn remaining_ms(ctx: &TaskContext) -> u64 {
    u64::try_from(ctx.remaining().as_millis()).unwrap_or(u64::MAX)
}

/// The last lines a process wrote on stderr, for error messages. Bounded however much the
/// process writes: at most [`STDERR_TAIL_LINES`] lines of at most [`STDERR_LINE_BYTES`].
#[derive(Debug)]
pub(super) struct StderrTail {
    name: Arc<str>,
    lines: VecDeque<String>,
    /// The line being written, cut at [`STDERR_LINE_BYTES`].
    partial: Vec<u8>,
    cut: bool,
}

impl StderrTail {
    /// An empty tail for the agent `name` (used in its log lines).
    pub(super) fn new(name: Arc<str>) -> Self {
        StderrTail {
            name,
            lines: VecDeque::new(),
            partial: Vec::new(),
            cut: false,
        }
    }

    /// Takes the next bytes the process wrote, logging each line it completes.
    pub(super) fn push_bytes(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.extend_line(&bytes[..end]);
            self.finish_line();
            bytes = &bytes[end + 1..];
        }
        self.extend_line(bytes);
    }

    /// Keeps the unterminated last line, at EOF.
    pub(super) fn finish(&mut self) {
        if !self.partial.is_empty() || self.cut {
            self.finish_line();
        }
    }

    fn extend_line(&mut self, bytes: &[u8]) {
        let room = STDERR_LINE_BYTES.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.partial.extend_from_slice(&bytes[..room]);
            self.cut = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    fn finish_line(&mut self) {
        let mut line = String::from_utf8_lossy(&self.partial)
            .trim_end()
            .to_string();
        if self.cut {
            line.push('…');
        }
        self.partial.clear();
        self.cut = false;
        tracing::debug!(agent = %self.name, "stderr: {line}");
        if self.lines.len() >= STDERR_TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The lines kept, oldest first.
    #[cfg(test)]
    pub(super) fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    /// The last [`STDERR_TAIL_BYTES`] of what was kept, for an error message.
    pub(super) fn text(&self) -> String {
        let mut text = Vec::from(self.lines.clone()).join("\n");
        if !self.partial.is_empty() {
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(&self.partial));
        }
        tail_text(&text)
    }
}

/// Reads `stderr` until EOF (or an error) into `tail`.
pub(super) async fn capture_stderr<R: AsyncRead + Unpin>(
    stderr: &mut R,
    tail: &RefCell<StderrTail>,
) {
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        match stderr.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                if let Ok(mut tail) = tail.try_borrow_mut() {
                    tail.push_bytes(&chunk[..n]);
                }
            }
            Err(e) => {
                tracing::debug!("reading an agent process's stderr failed: {e}");
                break;
            }
        }
    }
    if let Ok(mut tail) = tail.try_borrow_mut() {
        tail.finish();
    }
}

/// A program printed more than [`MAX_OUTPUT_BYTES`] where one answer was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooLarge;

/// Appends what `reader` yields to `buf` until EOF (or a read error); fails as soon as `buf`
/// would grow beyond `limit`, so no more than `limit` bytes are ever held.
pub(super) async fn read_capped<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<(), TooLarge> {
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if buf.len() + n > limit {
                    return Err(TooLarge);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) => {
                tracing::debug!("reading from an agent process failed: {e}");
                return Ok(());
            }
        }
    }
}

/// "exit code 3", or "signal 9 (SIGKILL)".
pub(super) fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("signal {signal} ({})", signal_name(signal));
        }
    }
    status.to_string()
}

#[cfg(unix)]
fn signal_name(signal: i32) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => "unnamed signal",
    }
}

/// `bytes` (decoded leniently) quoted by the one bounded quote
/// ([`muster_core::util::bytes_head`]): whole when short, else a prefix and the size.
pub(super) fn quote_bytes(bytes: &[u8]) -> String {
    match muster_core::util::bytes_head(bytes) {
        (head, None) => format!("{:?}", head.trim()),
        (head, Some(total)) => format!("{:?}… ({total} bytes)", head.trim()),
    }
}

/// The first [`MESSAGE_CHARS`] characters of a message an agent sent, marked if cut.
pub(super) fn clip_message(message: &str) -> String {
    let mut chars = message.chars();
    let head: String = chars.by_ref().take(MESSAGE_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// `s` quoted by the one bounded quote ([`muster_core::util::quote_head`]): whole when
/// short, else a prefix and the size, `"head"… (N bytes)`.
pub(super) fn quote(s: &str) -> String {
    match muster_core::util::quote_head(s.trim()) {
        (head, None) => format!("{head:?}"),
        (head, Some(total)) => format!("{head:?}… ({total} bytes)"),
    }
}

/// The last [`STDERR_TAIL_BYTES`] of `s` (on a char boundary), or `(empty)`.
pub(super) fn tail_text(s: &str) -> String {
    let s = s.trim_end();
    if s.is_empty() {
        return "(empty)".to_string();
    }
    if s.len() <= STDERR_TAIL_BYTES {
        return s.to_string();
    }
    let mut start = s.len() - STDERR_TAIL_BYTES;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets a variable in this process's environment, with a name no other test uses.
    fn secret() -> (String, String) {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let (name, value) = (format!("MUSTER_TEST_SECRET_{id}"), format!("s3cr3t-{id}"));
        // SAFETY: the name is unique to this call, so no other thread reads or writes it;
        // std's own environment reads (including those made to spawn a process) take the
        // same lock as `set_var`, and nothing in this test reads the environment through
        // libc directly.
        unsafe { std::env::set_var(&name, &value) };
        (name, value)
    }

    /// Runs `config` (a oneshot program printing one JSON document) to its exit.
    async fn output_of(config: &CommandConfig) -> serde_json::Value {
        let child = base_command("env#0", config).unwrap().spawn().unwrap();
        let output =
            tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
                .await
                .expect("the program hung")
                .unwrap();
        assert!(output.status.success(), "{:?}", output);
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// A program printing the value of the variable named `var` and the names of all the
    /// variables it got.
    fn env_printer(var: &str) -> CommandConfig {
        CommandConfig::new("sh").with_args([
            "-c",
            r#"printf '{"value":"%s","names":"%s"}' "$(printenv "$1")" \
               "$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' | tr '\n' ' ')""#,
            "sh",
            var,
        ])
    }

    #[tokio::test]
    async fn a_secret_in_musters_environment_does_not_reach_an_agent() {
        let (name, _) = secret();
        let out = output_of(&env_printer(&name)).await;
        assert_eq!(out["value"], "", "{out}");
        let names = out["names"].as_str().unwrap();
        assert!(!names.split(' ').any(|n| n == name), "{names}");
    }

    #[tokio::test]
    async fn a_secret_reaches_an_agent_whose_env_pass_names_it() {
        let (name, value) = secret();
        let out = output_of(&env_printer(&name).with_env_pass([name.clone()])).await;
        assert_eq!(out["value"], value.as_str(), "{out}");
    }

    #[tokio::test]
    async fn an_agent_gets_only_the_documented_environment() {
        let (name, _) = secret();
        let config = env_printer(&name)
            .with_env("SET_BY_CONFIG", "1")
            .with_env_pass(["MUSTER_TEST_NOT_SET_ANYWHERE"]);
        let out = output_of(&config).await;
        let names = out["names"].as_str().unwrap();
        // What `sh` itself adds to the environment of the commands it runs.
        let shell = ["PWD", "OLDPWD", "SHLVL", "_"];
        for var in names.split_whitespace() {
            assert!(
                DEFAULT_ENV_PASS.contains(&var)
                    || shell.contains(&var)
                    || var == "SET_BY_CONFIG"
                    || var == "MUSTER_AGENT",
                "{var} reached the agent: {names}"
            );
        }
        assert!(names.split_whitespace().any(|v| v == "PATH"), "{names}");
        assert!(
            names.split_whitespace().any(|v| v == "MUSTER_AGENT"),
            "{names}"
        );
    }

    /// This process's hard limit for `resource` (what a child's limit is capped at).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit(2) gets a pointer to a live local.
        assert_eq!(unsafe { libc::getrlimit(resource, &mut old) }, 0);
        old.rlim_max
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[tokio::test]
    async fn limits_apply_to_the_agent_process() {
        let config = CommandConfig::new("sh")
            .with_args([
                "-c",
                r#"printf '{"files":"%s","cpu":"%s","memory_kib":"%s"}' \
                   "$(ulimit -n)" "$(ulimit -t)" "$(ulimit -v)""#,
            ])
            .with_limits(CommandLimits {
                cpu_seconds: Some(600),
                memory_bytes: Some(4 << 30),
                open_files: Some(64),
            });
        let out = output_of(&config).await;
        let expect = |wanted: u64, resource| wanted.min(hard_limit(resource)).to_string();
        assert_eq!(out["files"], expect(64, libc::RLIMIT_NOFILE), "{out}");
        assert_eq!(out["cpu"], expect(600, libc::RLIMIT_CPU), "{out}");
        let memory_kib = (4u64 << 30).min(hard_limit(libc::RLIMIT_AS)) / 1024;
        assert_eq!(out["memory_kib"], memory_kib.to_string(), "{out}");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_cpu_limit_stops_a_spinning_agent() {
        let config = CommandConfig::new("sh")
            .with_args(["-c", "while :; do :; done"])
            .with_limits(CommandLimits {
                cpu_seconds: Some(1),
                ..CommandLimits::default()
            });
        let mut child = base_command("spin#0", &config).unwrap().spawn().unwrap();
        // One CPU second, however busy the machine: bounded generously in wall time.
        let status = tokio::time::timeout(std::time::Duration::from_secs(120), child.wait())
            .await
            .expect("the CPU limit did not stop the program")
            .unwrap();
        let described = describe_status(status);
        assert!(
            described.contains("SIGXCPU") || described.contains("SIGKILL"),
            "{described}"
        );
    }

    /// Set in the helper process that [`agent_processes_die_with_their_owner`] starts.
    const OWNER_HELPER: &str = "MUSTER_TEST_OWNER_HELPER_PIDFILE";

    /// The owner is SIGKILLed, so nothing of muster's runs at its death: only the kernel
    /// (PR_SET_PDEATHSIG) can take the agent down with it. The owner is this test binary
    /// run again, as a helper that spawns one agent process and then sleeps.
    #[cfg(target_os = "linux")]
    #[test]
    fn agent_processes_die_with_their_owner() {
        use std::time::{Duration, Instant};

        if let Ok(pidfile) = std::env::var(OWNER_HELPER) {
            let config = CommandConfig::new("sh").with_args([
                "-c",
                r#"echo $$ > "$1"; exec sleep 300"#,
                "sh",
                &pidfile,
            ]);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _child =
                runtime.block_on(async { base_command("owner#0", &config).unwrap().spawn() });
            // Killed long before this ends; bounded all the same.
            std::thread::sleep(Duration::from_secs(60));
            return;
        }

        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // This test's own name, whatever crate and module it lives in.
        let name = format!(
            "{}::agent_processes_die_with_their_owner",
            module_path!().split_once("::").map_or("", |(_, m)| m)
        );
        let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &name, "--test-threads=1", "--nocapture"])
            .env(OWNER_HELPER, &pidfile)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let pid: i32 = loop {
            let text = std::fs::read_to_string(&pidfile).unwrap_or_default();
            if let Some(pid) = text.strip_suffix('\n').and_then(|t| t.trim().parse().ok()) {
                break pid;
            }
            if Instant::now() > deadline {
                let _ = helper.kill();
                panic!("the helper never started its agent");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        helper.kill().unwrap();
        helper.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut died = false;
        while Instant::now() < deadline {
            if super::super::testing::gone(pid) {
                died = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !died {
            // SAFETY: kill(2) on the process this test had started; no memory involved.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        assert!(died, "the agent process outlived its owner");
    }

    #[test]
    fn quoting_and_tails_are_bounded() {
        let long = "x".repeat(1000);
        let limit = muster_core::util::QUOTE_LIMIT;
        assert!(quote(&long).len() < limit + 32, "{}", quote(&long));
        assert!(quote(&long).ends_with(&format!("… ({} bytes)", long.len())));
        assert!(quote_bytes(long.as_bytes()).len() < limit + 32);
        assert!(quote_bytes(long.as_bytes()).ends_with(&format!("… ({} bytes)", long.len())));
        assert!(quote_bytes(b"ab\xffc").contains('\u{fffd}'));
        assert!(clip_message(&long).chars().count() <= MESSAGE_CHARS + 1);
        assert_eq!(clip_message("short"), "short");
        let tail = tail_text(&"é".repeat(3000));
        assert!(tail.len() <= STDERR_TAIL_BYTES + 4);
        assert_eq!(tail_text("  \n"), "(empty)");
    }

    #[test]
    fn stderr_tail_keeps_bounded_lines() {
        let mut tail = StderrTail::new(Arc::from("t#0"));
        for i in 0..100 {
            tail.push_bytes(format!("line {i}\n").as_bytes());
        }
        tail.push_bytes(&vec![b'y'; 1 << 20]);
        tail.push_bytes(b"y\nlast, unterminated");
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines.len(), STDERR_TAIL_LINES);
        assert_eq!(lines[0], "line 51");
        let long = lines[STDERR_TAIL_LINES - 1];
        assert!(long.len() <= STDERR_LINE_BYTES + '…'.len_utf8() && long.ends_with('…'));
        assert!(
            tail.text().ends_with("last, unterminated"),
            "{}",
            tail.text()
        );
        tail.finish();
        assert_eq!(tail.lines().last(), Some("last, unterminated"));
        assert!(tail.text().len() <= STDERR_TAIL_BYTES + 4);
    }
}
