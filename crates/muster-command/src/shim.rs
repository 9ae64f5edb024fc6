//! The agent shim: a small process between muster and each agent program, so that every
//! descendant of an agent dies with muster, also when muster is SIGKILLed.
//!
//! Without it, an agent process dies with muster (the kernel's parent-death signal), but a
//! process the agent started (a test runner, a compiler) is re-parented to pid 1 and lives
//! on. With it, muster starts its own executable in shim mode, which
//!
//! 1. leads the agent's process group (muster made the group when it spawned the shim);
//! 2. is a *child subreaper*, so orphaned descendants are re-parented to it, not to pid 1;
//! 3. asks the kernel for a signal when muster dies and then kills the whole group
//!    (SIGKILL, which nothing can ignore), itself included;
//! 4. otherwise waits for the agent and exits as it did: the same exit code, or killed by
//!    the same signal, so muster describes the exit as it would without the shim.
//!
//! The shim closes its own copies of the agent's pipes once the agent runs, so muster sees
//! EOF when the agent closes them, and applies the agent's [`CommandLimits`] to the agent
//! only. A process that leaves the group (`setsid`, `setpgid`) escapes the group kill, as
//! it would escape any process-group kill; put such an agent in a cgroup.
//!
//! The shim is the `muster-agent-shim` binary when it lies beside the running executable
//! (`cargo install` puts it beside `muster`), and otherwise the running executable itself
//! (`/proc/self/exe`) in shim mode; either way it is used only by a binary that calls
//! [`run_if_requested`] first thing in `main` (the `muster` binary does). Elsewhere (and on
//! systems other than Linux) agents are spawned directly, as before.
//!
//! # Example
//! ```
//! // First thing in `main`: started as a shim, the process runs the shim and exits here;
//! // otherwise this returns at once and the command agents built next use the shim.
//! muster_command::shim::run_if_requested();
//! assert_eq!(muster_command::shim::available(), cfg!(target_os = "linux"));
//! ```

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::CommandLimits;

/// The `argv[0]` muster gives its executable when it starts it as a shim.
pub const SHIM_ARG0: &str = "muster-agent-shim";

/// Set once [`run_if_requested`] has run in this process (and found no shim request).
static AVAILABLE: AtomicBool = AtomicBool::new(false);

/// Runs the agent shim and exits if this process was started as one (`argv[0]` is
/// [`SHIM_ARG0`]); otherwise returns at once and makes the shim available to the command
/// agents of this process. Call it first thing in `main`.
pub fn run_if_requested() {
    let mut args = std::env::args_os();
    if args.next().is_some_and(|a| a == SHIM_ARG0) {
        let rest: Vec<std::ffi::OsString> = args.collect();
        std::process::exit(imp::run(rest));
    }
    AVAILABLE.store(true, Ordering::SeqCst);
}

/// Whether agents of this process are started through the shim: on Linux, once
/// [`run_if_requested`] has run.
pub fn available() -> bool {
    cfg!(target_os = "linux") && AVAILABLE.load(Ordering::SeqCst)
}

/// The executable started as the shim: `muster-agent-shim` beside this process's own
/// executable when there is one (a small binary that starts fast, which matters once per
/// oneshot task), else this executable itself (`/proc/self/exe`, which still names it
/// after it was replaced on disk).
pub(crate) fn program() -> &'static std::path::Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join(SHIM_ARG0)))
            .filter(|beside| beside.is_file())
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
    })
}

/// The arguments the shim takes, after `argv[0]`: muster's pid, the three limits (`-` for
/// none), then the program (resolved) and its `argv[0]`, then its arguments.
pub(crate) fn shim_args(
    parent: u32,
    limits: &CommandLimits,
    resolved: &std::path::Path,
    program: &str,
) -> Vec<std::ffi::OsString> {
    let limit = |l: Option<u64>| l.map_or_else(|| "-".to_string(), |v| v.to_string());
    vec![
        parent.to_string().into(),
        limit(limits.cpu_seconds).into(),
        limit(limits.memory_bytes).into(),
        limit(limits.open_files).into(),
        resolved.as_os_str().to_owned(),
        program.into(),
    ]
}

#[cfg(target_os = "linux")]
mod imp {
    use std::ffi::OsString;
    use std::os::unix::process::{CommandExt, ExitStatusExt};

    use crate::config::CommandLimits;

    /// How long the shim sleeps between checks that muster is still its parent (a backstop
    /// for the parent-death signal; both are checked).
    const PARENT_CHECK_MS: libc::c_long = 500;

    /// The shim's exit code when its arguments are wrong or the agent cannot be started
    /// (after a message on stderr, which muster keeps in the agent's stderr tail).
    const SHIM_FAILED: i32 = 127;

    fn fail(msg: &str) -> i32 {
        eprintln!("{}: {msg}", super::SHIM_ARG0);
        SHIM_FAILED
    }

    fn parse_limit(arg: &OsString, what: &str) -> Result<Option<u64>, String> {
        let text = arg.to_str().unwrap_or("");
        if text == "-" {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| format!("{what} limit `{text}` is not a number"))
    }

    /// The signals the shim waits for instead of handling: a child's exit, muster's death
    /// (the parent-death signal), and those it passes on to the agent.
    fn waited_set() -> libc::sigset_t {
        // SAFETY: sigemptyset/sigaddset write to a local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [
                libc::SIGCHLD,
                libc::SIGUSR1,
                libc::SIGTERM,
                libc::SIGINT,
                libc::SIGHUP,
            ] {
                libc::sigaddset(&mut set, sig);
            }
            set
        }
    }

    pub(super) fn run(args: Vec<OsString>) -> i32 {
        let [parent, cpu, mem, files, resolved, program, rest @ ..] = args.as_slice() else {
            return fail("wrong arguments (this program is started by muster, not by hand)");
        };
        let Some(parent) = parent.to_str().and_then(|p| p.parse::<libc::pid_t>().ok()) else {
            return fail("the parent pid is not a number");
        };
        let limits = match (
            parse_limit(cpu, "cpu"),
            parse_limit(mem, "memory"),
            parse_limit(files, "open files"),
        ) {
            (Ok(cpu_seconds), Ok(memory_bytes), Ok(open_files)) => CommandLimits {
                cpu_seconds,
                memory_bytes,
                open_files,
            },
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return fail(&e),
        };
        let set = waited_set();
        // SAFETY: the calls below take pointers to live locals or none at all.
        unsafe {
            // Wait for these signals with sigtimedwait instead of being interrupted by them.
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            // muster set a parent-death SIGKILL before exec; the shim wants to clean up
            // instead, so it asks for a signal it waits for.
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGUSR1 as libc::c_ulong,
                0,
                0,
                0,
            );
            if libc::getppid() != parent {
                // muster died before the prctl: nothing was started, nothing to clean.
                return SHIM_FAILED;
            }
            // Orphaned descendants of the agent come to the shim, not to pid 1.
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        let shim = std::process::id();
        let mut cmd = std::process::Command::new(resolved);
        cmd.arg0(program).args(rest);
        // SAFETY: `in_child` makes async-signal-safe calls only. It also empties the
        // child's signal mask, which would otherwise inherit the waited set blocked above.
        unsafe {
            cmd.pre_exec(move || crate::child::in_child(shim, &limits));
        }
        let agent = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                return fail(&format!(
                    "cannot start `{}`: {e}",
                    program.to_string_lossy()
                ));
            }
        };
        let agent_pid = agent.id() as libc::pid_t;
        // The agent has the pipes now: muster must see EOF when the agent closes them.
        release_stdio();
        loop {
            if let Some(status) = reap(agent_pid) {
                exit_like(status);
            }
            let timeout = libc::timespec {
                tv_sec: 0,
                tv_nsec: PARENT_CHECK_MS * 1_000_000,
            };
            // SAFETY: pointers to live locals; a null siginfo is allowed.
            let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
            // SAFETY: getppid takes no arguments.
            let orphaned = unsafe { libc::getppid() } != parent;
            if sig == libc::SIGUSR1 || orphaned {
                // muster is gone: take the whole group down, the shim with it.
                // SAFETY: kill(2) takes no pointers; 0 names the caller's process group.
                unsafe {
                    libc::kill(0, libc::SIGKILL);
                }
                return SHIM_FAILED;
            }
            if matches!(sig, libc::SIGTERM | libc::SIGINT | libc::SIGHUP) {
                // SAFETY: kill(2) takes no pointers.
                unsafe {
                    libc::kill(agent_pid, sig);
                }
            }
        }
    }

    /// Reaps every child that has ended (as a subreaper the shim inherits orphans); the
    /// agent's status once it has ended.
    fn reap(agent: libc::pid_t) -> Option<std::process::ExitStatus> {
        let mut found = None;
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: a pointer to a live local.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return found;
            }
            if pid == agent {
                found = Some(std::process::ExitStatus::from_raw(status));
            }
        }
    }

    /// Points the shim's stdin, stdout and stderr at /dev/null.
    fn release_stdio() {
        // SAFETY: open/dup2/close on descriptors the shim owns; the path is a C string.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                for fd in 0..3 {
                    libc::dup2(null, fd);
                }
                if null > 2 {
                    libc::close(null);
                }
            }
        }
    }

    /// Ends the shim as the agent ended: with its exit code, or killed by its signal.
    fn exit_like(status: std::process::ExitStatus) -> ! {
        if let Some(code) = status.code() {
            std::process::exit(code);
        }
        if let Some(sig) = status.signal() {
            // SAFETY: the calls take pointers to live locals or none.
            unsafe {
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                libc::signal(sig, libc::SIG_DFL);
                let mut one: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut one);
                libc::sigaddset(&mut one, sig);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
                libc::raise(sig);
            }
            std::process::exit(128 + sig);
        }
        std::process::exit(SHIM_FAILED)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn run(_args: Vec<std::ffi::OsString>) -> i32 {
        eprintln!("{}: the agent shim runs on Linux only", super::SHIM_ARG0);
        127
    }
}
