//! Everything about an agent's operating-system process that does not depend on the
//! protocol spoken over its pipes: how it is spawned, how its exit is described, how its
//! stderr tail is kept, and how its output is quoted in error messages.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{ChildStderr, Command};

use super::config::CommandConfig;
use crate::agents::agent::{AgentError, TaskContext};

/// How many stderr lines are kept for error messages.
const STDERR_TAIL_LINES: usize = 50;
/// How much of the stderr tail goes into an error message.
pub(super) const STDERR_TAIL_BYTES: usize = 2048;
/// How much of a misbehaving line or output is quoted in an error message.
pub(super) const QUOTE_CHARS: usize = 200;

/// The command for `config`, with piped stdio, `MUSTER_AGENT` set and killed on drop.
pub(super) fn base_command(name: &str, config: &CommandConfig) -> Command {
    let mut cmd = Command::new(&config.program);
    cmd.args(&config.args)
        .envs(&config.env)
        .env("MUSTER_AGENT", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &config.cwd {
        cmd.current_dir(cwd);
    }
    cmd
}

/// The error for a program that could not be started, naming it (and its directory).
pub(super) fn spawn_error(name: &str, config: &CommandConfig, e: &std::io::Error) -> AgentError {
    let cwd = match &config.cwd {
        Some(cwd) => format!(" in {}", cwd.display()),
        None => String::new(),
    };
    AgentError::new(format!(
        "agent {name}: cannot start program `{}`{cwd}: {e}",
        config.program
    ))
}

/// Milliseconds left before the task's deadline.
pub(super) fn remaining_ms(ctx: &TaskContext) -> u64 {
    u64::try_from(ctx.remaining().as_millis()).unwrap_or(u64::MAX)
}

/// Reads one `\n`-terminated line (or the unterminated last one); `None` at EOF or on a
/// read error. Cancel-safe: a line cut short by a cancelled call is completed by the next.
pub(super) async fn next_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
) -> Option<String> {
    let read = reader.read_until(b'\n', buf).await;
    if let Err(e) = &read {
        tracing::debug!("reading from an agent process failed: {e}");
    }
    if buf.is_empty() {
        return None;
    }
    let line = String::from_utf8_lossy(buf).trim_end().to_string();
    buf.clear();
    Some(line)
}

/// The last lines a process wrote on stderr, for error messages.
#[derive(Debug, Default)]
pub(super) struct StderrTail {
    lines: VecDeque<String>,
}

impl StderrTail {
    /// Keeps `line`, forgetting the oldest one beyond [`STDERR_TAIL_LINES`].
    pub(super) fn push(&mut self, line: String) {
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

    /// The last [`STDERR_TAIL_BYTES`] of the lines kept, for an error message.
    pub(super) fn text(&self) -> String {
        tail_text(&Vec::from(self.lines.clone()).join("\n"))
    }
}

/// Reads `stderr` line by line until EOF, logging each line and handing it to `keep`.
pub(super) async fn read_stderr(name: &str, stderr: ChildStderr, mut keep: impl FnMut(String)) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    while let Some(line) = next_line(&mut reader, &mut buf).await {
        tracing::debug!(agent = %name, "stderr: {line}");
        keep(line);
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
        _ => "unnamed signal",
    }
}

/// The first [`QUOTE_CHARS`] characters of `s`, marked if cut.
pub(super) fn quote(s: &str) -> String {
    let s = s.trim();
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(QUOTE_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
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

    #[test]
    fn quoting_and_tails_are_bounded() {
        let long = "x".repeat(1000);
        assert!(quote(&long).chars().count() < QUOTE_CHARS + 5);
        let tail = tail_text(&"é".repeat(3000));
        assert!(tail.len() <= STDERR_TAIL_BYTES + 4);
        assert_eq!(tail_text("  \n"), "(empty)");
    }
}
