//! What runs in an agent's process between fork and exec: its resource limits and, on
//! Linux, the parent-death signal. Used by `process` for the agent (or its shim) and by
//! the shim for the agent.

use crate::config::CommandLimits;

/// Runs in the child between fork and exec: async-signal-safe calls only.
#[cfg(unix)]
pub(crate) fn in_child(parent: u32, limits: &CommandLimits) -> std::io::Result<()> {
    /// Lowers a limit to `value` (soft) and `value + grace` (hard), never raising the hard
    /// limit the child inherited (which an unprivileged process could not do).
    macro_rules! limit {
        ($resource:expr, $value:expr, $grace:expr) => {
            if let Some(value) = $value {
                let value = libc::rlim_t::try_from(value).unwrap_or(libc::RLIM_INFINITY);
                let mut old = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: getrlimit(2) and setrlimit(2) get pointers to live locals.
                unsafe {
                    if libc::getrlimit($resource, &mut old) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let hard = value.saturating_add($grace).min(old.rlim_max);
                    let new = libc::rlimit {
                        rlim_cur: value.min(hard),
                        rlim_max: hard,
                    };
                    if libc::setrlimit($resource, &new) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
        };
    }
    // The program starts with no signal blocked, whatever its parent blocked: the agent
    // shim waits for SIGTERM, SIGINT, SIGHUP and SIGCHLD with them blocked, and a mask is
    // inherited across exec, so without this an agent (and every process it starts) could
    // not be stopped with SIGTERM or Ctrl-C.
    // SAFETY: sigemptyset(3) and pthread_sigmask(3) get pointers to a live local; both
    // are async-signal-safe.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
    }
    // SIGXCPU at the soft CPU limit; SIGKILL a second later if it is ignored.
    limit!(libc::RLIMIT_CPU, limits.cpu_seconds, 1);
    limit!(libc::RLIMIT_AS, limits.memory_bytes, 0);
    limit!(libc::RLIMIT_NOFILE, limits.open_files, 0);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(2) and getppid(2) take no pointers.
        unsafe {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then no signal would ever come.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = parent;
    Ok(())
}
