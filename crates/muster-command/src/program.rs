//! Finding a command agent's program before it is run: a name is looked up on `PATH`, a
//! path is taken from the agent's working directory. `muster check` warns with it, a
//! oneshot agent refuses to start with it, and a failed spawn is described the same way
//! ("`prog` not found on PATH", "permission denied").

use std::path::{Path, PathBuf};

use crate::config::CommandConfig;

/// Why a program cannot be run from where it would run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    /// A bare name found in no directory of `PATH`.
    #[error("`{program}` not found on PATH")]
    NotOnPath {
        /// The program as configured.
        program: String,
    },
    /// A path (absolute, or relative to the working directory) that does not exist.
    #[error("`{program}` not found (looked for {})", .resolved.display())]
    NoSuchFile {
        /// The program as configured.
        program: String,
        /// Where it was looked for.
        resolved: PathBuf,
    },
    /// It exists but may not be executed (not executable, or a directory).
    #[error("`{program}`: permission denied ({} is not an executable file)", .resolved.display())]
    PermissionDenied {
        /// The program as configured.
        program: String,
        /// The file found.
        resolved: PathBuf,
    },
}

/// Where `config`'s program would be found when run from `base` (the runtime's working
/// directory; the config's own `cwd`, if set, is taken relative to it): the executable
/// file, or why there is none. `PATH` is muster's own (what the agent gets).
///
/// # Example
/// ```
/// use muster_command::{find_program, CommandConfig, ProgramError};
/// use std::path::Path;
///
/// assert!(find_program(&CommandConfig::new("sh"), Path::new(".")).is_ok());
/// assert_eq!(
///     find_program(&CommandConfig::new("no-such-program-here"), Path::new(".")),
///     Err(ProgramError::NotOnPath { program: "no-such-program-here".into() })
/// );
/// ```
pub fn find_program(config: &CommandConfig, base: &Path) -> Result<PathBuf, ProgramError> {
    let program = config.program.as_str();
    let dir = match &config.cwd {
        Some(cwd) => base.join(cwd),
        None => base.to_path_buf(),
    };
    if program.contains('/') {
        let resolved = dir.join(program);
        return match executable(&resolved) {
            Some(true) => Ok(resolved),
            Some(false) => Err(ProgramError::PermissionDenied {
                program: program.into(),
                resolved,
            }),
            None => Err(ProgramError::NoSuchFile {
                program: program.into(),
                resolved,
            }),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut denied = None;
    for d in std::env::split_paths(&path) {
        let candidate = dir.join(d).join(program);
        match executable(&candidate) {
            Some(true) => return Ok(candidate),
            Some(false) => {
                denied.get_or_insert(candidate);
            }
            None => {}
        }
    }
    Err(match denied {
        Some(resolved) => ProgramError::PermissionDenied {
            program: program.into(),
            resolved,
        },
        None => ProgramError::NotOnPath {
            program: program.into(),
        },
    })
}

/// `Some(true)`: an executable file; `Some(false)`: exists but is not one; `None`: absent.
fn executable(p: &Path) -> Option<bool> {
    let meta = std::fs::metadata(p).ok()?;
    if !meta.is_file() {
        return Some(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Some(meta.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_path_is_looked_for_from_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.sh"), "#!/bin/sh\n").unwrap();
        let c = CommandConfig::new("./agent.sh");
        assert!(matches!(
            find_program(&c, dir.path()),
            Err(ProgramError::PermissionDenied { .. })
        ));
        let missing = CommandConfig::new("./nope.sh");
        let err = find_program(&missing, dir.path()).unwrap_err();
        assert!(
            err.to_string().starts_with("`./nope.sh` not found"),
            "{err}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.path().join("agent.sh");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert!(find_program(&c, dir.path()).is_ok());
        }
    }
}
