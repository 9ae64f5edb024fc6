//! Peer runtimes measured in the same run as muster: AutoGen core and LangGraph (Python,
//! in a virtual environment of their own) and graph-flow and autoagents-core (Rust, each a
//! cargo project of its own under `benches/peers/rust/`), plus any program a user names
//! that speaks the same protocol.
//!
//! This module owns getting a peer ready (creating the venv and installing the pinned
//! requirements, or building the peer's release binary) and running it for one workload:
//! the peer is started with the counts muster uses itself
//! (`--workload W --tasks N --warmup N --agents N --in-flight N`) and prints one JSON line,
//! `{"peer", "version", "workload", "tasks", "figures": {name: value}}`, which is checked
//! and turned into samples. It must not measure anything in this process, and must never
//! drop a peer silently: a peer that cannot be made ready or fails names itself and the
//! command that failed.
//!
//! # Example
//! ```no_run
//! use muster_bench::peers::{Peer, PeerDirs, BUILTIN};
//! let dirs = PeerDirs::locate(None).expect("run from a muster checkout");
//! let spec = BUILTIN.iter().find(|p| p.name == "graph-flow").unwrap();
//! let peer: Peer = spec.prepare(&dirs, &mut |step| eprintln!("{step}")).expect("built");
//! println!("{}", peer.command_line());
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Workload;
use super::report::{Collector, Unit};
use super::workloads::scaled;

/// How a built-in peer is made ready and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// A script under `benches/peers/python/`, run by the venv's interpreter.
    Python {
        /// The script's file name.
        script: &'static str,
    },
    /// A cargo project under `benches/peers/rust/`, built in release mode.
    Rust {
        /// The project's directory name.
        project: &'static str,
        /// The binary it builds.
        binary: &'static str,
    },
}

/// A peer runtime muster knows how to make ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSpec {
    /// The name used on the command line and in the report.
    pub name: &'static str,
    /// How it is made ready.
    pub kind: PeerKind,
}

/// The built-in peers, in the order they run.
pub const BUILTIN: &[PeerSpec] = &[
    PeerSpec {
        name: "autogen-core",
        kind: PeerKind::Python {
            script: "autogen_core_peer.py",
        },
    },
    PeerSpec {
        name: "langgraph",
        kind: PeerKind::Python {
            script: "langgraph_peer.py",
        },
    },
    PeerSpec {
        name: "graph-flow",
        kind: PeerKind::Rust {
            project: "graph-flow",
            binary: "muster-peer-graph-flow",
        },
    },
    PeerSpec {
        name: "autoagents-core",
        kind: PeerKind::Rust {
            project: "autoagents",
            binary: "muster-peer-autoagents",
        },
    },
];

/// The built-in peers a `--peers` list names (`all`, `python`, `rust` or names separated
/// by commas; `autoagents` for autoagents-core), in their running order.
///
/// # Example
/// ```
/// use muster_bench::peers::choose;
/// let names: Vec<&str> = choose("rust,langgraph").unwrap().iter().map(|p| p.name).collect();
/// assert_eq!(names, ["langgraph", "graph-flow", "autoagents-core"]);
/// assert!(choose("crewai").unwrap_err().contains("unknown peer `crewai`"));
/// ```
pub fn choose(list: &str) -> Result<Vec<&'static PeerSpec>, String> {
    let mut names: Vec<&str> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item {
            "all" => names.extend(BUILTIN.iter().map(|p| p.name)),
            "python" => names.extend(
                BUILTIN
                    .iter()
                    .filter(|p| matches!(p.kind, PeerKind::Python { .. }))
                    .map(|p| p.name),
            ),
            "rust" => names.extend(
                BUILTIN
                    .iter()
                    .filter(|p| matches!(p.kind, PeerKind::Rust { .. }))
                    .map(|p| p.name),
            ),
            "autoagents" => names.push("autoagents-core"),
            name => match BUILTIN.iter().find(|p| p.name == name) {
                Some(p) => names.push(p.name),
                None => {
                    return Err(format!(
                        "unknown peer `{name}`; expected all, python, rust or {}",
                        BUILTIN
                            .iter()
                            .map(|p| p.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            },
        }
    }
    if names.is_empty() {
        return Err("no peer named; expected all, python, rust or peer names".into());
    }
    Ok(BUILTIN.iter().filter(|p| names.contains(&p.name)).collect())
}

/// The workloads a peer implements.
pub const PEER_WORKLOADS: [Workload; 3] = [Workload::W1, Workload::W2, Workload::W3];

/// Where the peers' sources are and where their venv and builds go.
#[derive(Debug, Clone)]
pub struct PeerDirs {
    /// `benches/peers` of the source tree.
    pub sources: PathBuf,
    /// Where the venv and the cargo target directory are made (`target/peers`).
    pub work: PathBuf,
}

impl PeerDirs {
    /// Where the peers are: `dir` when given (a copy of a checkout's `benches/peers`; the
    /// venv and builds go to `.muster/peers` in the current directory), else the
    /// `benches/peers` of the muster checkout the current directory is in (builds in its
    /// `target/peers`). Nothing is taken from where this binary was built, so an installed
    /// `muster` works from a checkout or with a directory. `Err` says what to pass.
    pub fn locate(dir: Option<&Path>) -> Result<PeerDirs, String> {
        if let Some(dir) = dir {
            if !dir.join("python").is_dir() && !dir.join("rust").is_dir() {
                return Err(format!(
                    "{}: not the peers' directory (it holds neither python/ nor rust/; pass the benches/peers folder of a muster checkout)",
                    dir.display()
                ));
            }
            return Ok(PeerDirs {
                sources: dir.to_path_buf(),
                work: PathBuf::from(".muster").join("peers"),
            });
        }
        let cwd = std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?;
        cwd.ancestors()
            .find(|d| d.join("benches").join("peers").is_dir() && d.join("Cargo.toml").is_file())
            .map(|root| PeerDirs {
                sources: root.join("benches").join("peers"),
                work: root.join("target").join("peers"),
            })
            .ok_or_else(|| {
                format!(
                    "the peers' sources were not found: {} is not inside a muster checkout (one with benches/peers); run from a checkout or pass --peers-dir DIR",
                    cwd.display()
                )
            })
    }
}

/// A peer that could not be made ready or did not deliver its figures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer {peer}: {what}")]
pub struct PeerError {
    /// The peer's name.
    pub peer: String,
    /// What failed, naming the command.
    pub what: String,
}

fn err(peer: &str, what: impl Into<String>) -> PeerError {
    PeerError {
        peer: peer.to_string(),
        what: what.into(),
    }
}

/// A peer ready to run: its program and the arguments before the workload's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's name.
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Arguments before the workload's (the script, for a Python peer).
    pub args: Vec<String>,
    /// The directory it runs in.
    pub dir: Option<PathBuf>,
}

/// The most output kept from a peer or a build step (the rest is dropped).
const MAX_OUTPUT: usize = 1 << 20;
/// How much of a failed command's output an error quotes.
const ERROR_TAIL: usize = 1_500;
/// The longest a venv creation, `pip install` or `cargo build` may take.
const PREPARE_LIMIT: Duration = Duration::from_secs(3_600);

impl Peer {
    /// A peer given by the user as `NAME=PROGRAM`: the program is run as it is.
    ///
    /// # Example
    /// ```
    /// use muster_bench::peers::Peer;
    /// let p = Peer::external("mine=/usr/local/bin/my-peer").unwrap();
    /// assert_eq!(p.name, "mine");
    /// ```
    pub fn external(spec: &str) -> Result<Peer, String> {
        let (name, program) = spec
            .split_once('=')
            .ok_or_else(|| format!("--peer {spec}: expected NAME=PROGRAM"))?;
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || program.trim().is_empty() {
            return Err(format!(
                "--peer {spec}: expected NAME=PROGRAM with a name of 1 to 64 characters"
            ));
        }
        Ok(Peer {
            name: name.to_string(),
            program: PathBuf::from(program.trim()),
            args: Vec::new(),
            dir: None,
        })
    }

    /// The arguments for one run of `workload` at `scale`: the same counts muster uses.
    pub fn workload_args(workload: Workload, scale: f64) -> Vec<String> {
        let (tasks, warmup) = match workload {
            Workload::W1 => (scaled(10_000, scale), scaled(200, scale)),
            Workload::W2 => (scaled(100_000, scale), 0),
            _ => (scaled(10_000, scale), scaled(500, scale)),
        };
        [
            "--workload",
            workload.id(),
            "--tasks",
            &tasks.to_string(),
            "--warmup",
            &warmup.to_string(),
            "--agents",
            "1000",
            "--in-flight",
            "1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The command line without the workload's arguments, as the report shows it.
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the peer once for `workload` at `scale`, within `limit`, and records its
    /// figures into `into`; returns the version it reported.
    pub fn run(
        &self,
        workload: Workload,
        scale: f64,
        limit: Duration,
        into: &mut Collector,
    ) -> Result<String, PeerError> {
        let wargs = Peer::workload_args(workload, scale);
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).args(&wargs);
        if let Some(d) = &self.dir {
            cmd.current_dir(d);
        }
        let shown = format!("{} {}", self.command_line(), wargs.join(" "));
        let out =
            run_bounded(cmd, limit).map_err(|e| err(&self.name, format!("`{shown}`: {e}")))?;
        if !out.success {
            return Err(err(
                &self.name,
                format!(
                    "`{shown}` exited with {}: {}",
                    out.code
                        .map_or_else(|| "a signal".to_string(), |c| c.to_string()),
                    tail(&out.stderr)
                ),
            ));
        }
        parse_line(workload, &out.stdout, into)
            .map_err(|what| err(&self.name, format!("`{shown}`: {what}")))
    }
}

/// The unit of each figure a peer may report, by name and workload.
pub fn figure_unit(workload: Workload, name: &str) -> Option<Unit> {
    match (workload, name) {
        (Workload::W1, "us_per_handoff") => Some(Unit::Micros),
        (Workload::W1 | Workload::W2, "tasks_per_s") => Some(Unit::PerSecond),
        (Workload::W2, "register_agents_ms") => Some(Unit::Millis),
        (Workload::W2, "peak_rss_mb") => Some(Unit::Megabytes),
        (Workload::W3, "p50_us" | "p90_us" | "p99_us") => Some(Unit::Micros),
        _ => None,
    }
}

/// The figures a peer must report for a workload.
pub fn required_figures(workload: Workload) -> &'static [&'static str] {
    match workload {
        Workload::W1 => &["us_per_handoff"],
        Workload::W2 => &["tasks_per_s"],
        Workload::W3 => &["p50_us", "p99_us"],
        _ => &[],
    }
}

/// Checks a peer's output (its last non-empty line) and records its figures; returns
/// the version it reported. An error says what is wrong with which field.
pub fn parse_line(
    workload: Workload,
    stdout: &[u8],
    into: &mut Collector,
) -> Result<String, String> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or("printed no JSON line")?;
    let doc: Value = serde_json::from_str(line)
        .map_err(|e| format!("the last line is not JSON ({e}): {line}"))?;
    if doc["workload"] != workload.id() {
        return Err(format!(
            "field `workload` is {}, expected \"{}\"",
            doc["workload"],
            workload.id()
        ));
    }
    let figures = doc["figures"]
        .as_object()
        .ok_or("field `figures` is not an object")?;
    let mut checked = Vec::new();
    for (name, v) in figures {
        let unit = figure_unit(workload, name).ok_or_else(|| {
            format!(
                "field `figures.{name}` is not a {} figure a peer may report",
                workload.id()
            )
        })?;
        let x = v
            .as_f64()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| format!("field `figures.{name}` is {v}, expected a number >= 0"))?;
        checked.push((name.as_str(), unit, x));
    }
    for name in required_figures(workload) {
        if !figures.contains_key(*name) {
            return Err(format!("field `figures.{name}` is missing"));
        }
    }
    for (name, unit, x) in checked {
        into.rec(name, unit, x);
    }
    let version = doc["version"].as_str().unwrap_or("").chars().take(64);
    Ok(version.collect())
}

impl PeerSpec {
    /// Makes the peer ready: for a Python peer, the venv (created when absent, the pinned
    /// requirements installed when absent or changed); for a Rust peer, `cargo build
    /// --release --locked` (a no-op when the binary is fresh). `step` is told what runs.
    pub fn prepare(&self, dirs: &PeerDirs, step: &mut dyn FnMut(&str)) -> Result<Peer, PeerError> {
        match self.kind {
            PeerKind::Python { script } => {
                let python = prepare_venv(self.name, dirs, step)?;
                let dir = dirs.sources.join("python");
                Ok(Peer {
                    name: self.name.to_string(),
                    program: python,
                    args: vec![dir.join(script).display().to_string()],
                    dir: Some(dir),
                })
            }
            PeerKind::Rust { project, binary } => {
                let manifest = dirs.sources.join("rust").join(project).join("Cargo.toml");
                let target = dirs.work.join("rust");
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let mut cmd = Command::new(&cargo);
                cmd.args(["build", "--release", "--locked", "--manifest-path"])
                    .arg(&manifest)
                    .arg("--target-dir")
                    .arg(&target);
                step(&format!(
                    "{}: cargo build --release ({})",
                    self.name,
                    manifest.display()
                ));
                run_step(self.name, cmd)?;
                let program = target.join("release").join(binary);
                if !program.is_file() {
                    return Err(err(
                        self.name,
                        format!("cargo build finished but {} is absent", program.display()),
                    ));
                }
                Ok(Peer {
                    name: self.name.to_string(),
                    program,
                    args: Vec::new(),
                    dir: None,
                })
            }
        }
    }
}

/// The file in the venv recording the requirements installed in it.
const STAMP: &str = "muster-requirements.txt";

/// The venv's interpreter, after creating the venv and installing the requirements if
/// they are absent or changed.
fn prepare_venv(
    peer: &str,
    dirs: &PeerDirs,
    step: &mut dyn FnMut(&str),
) -> Result<PathBuf, PeerError> {
    let requirements = dirs.sources.join("python").join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .map_err(|e| err(peer, format!("{}: {e}", requirements.display())))?;
    let venv = dirs.work.join("venv");
    let python = venv.join("bin").join("python");
    let stamp = venv.join(STAMP);
    if python.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    if !python.is_file() {
        let _ = std::fs::create_dir_all(&dirs.work);
        let interpreter = std::env::var_os("MUSTER_PYTHON").unwrap_or_else(|| "python3".into());
        let mut cmd = Command::new(&interpreter);
        cmd.args(["-m", "venv"]).arg(&venv);
        step(&format!("{peer}: creating the venv {}", venv.display()));
        run_step(peer, cmd)?;
    }
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-q",
        "-r",
    ])
    .arg(&requirements);
    step(&format!(
        "{peer}: pip install -r {} (once)",
        requirements.display()
    ));
    run_step(peer, cmd)?;
    std::fs::write(&stamp, &wanted).map_err(|e| err(peer, format!("{}: {e}", stamp.display())))?;
    Ok(python)
}

fn run_step(peer: &str, cmd: Command) -> Result<(), PeerError> {
    let shown = format!("{cmd:?}");
    let out = run_bounded(cmd, PREPARE_LIMIT).map_err(|e| err(peer, format!("{shown}: {e}")))?;
    if out.success {
        Ok(())
    } else {
        Err(err(
            peer,
            format!(
                "{shown} exited with {}: {}",
                out.code
                    .map_or_else(|| "a signal".to_string(), |c| c.to_string()),
                tail(&[out.stdout, out.stderr].concat())
            ),
        ))
    }
}

struct Finished {
    success: bool,
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs a command to its end with its output captured (at most [`MAX_OUTPUT`] bytes of
/// each stream kept), killing it past `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> Result<Finished, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start: {e}"))?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut r) = r {
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let room = MAX_OUTPUT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
            kept
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {} s", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    Ok(Finished {
        success: status.success(),
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let start = text
        .char_indices()
        .rev()
        .nth(ERROR_TAIL)
        .map_or(0, |(i, _)| i);
    if start == 0 {
        text.to_string()
    } else {
        format!("...{}", &text[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_line_becomes_samples_with_their_units() {
        let mut c = Collector::default();
        let line = br#"{"peer":"x","version":"1.2","workload":"W3","tasks":10,"figures":{"p50_us":2.5,"p90_us":3,"p99_us":4}}"#;
        let v = parse_line(Workload::W3, line, &mut c).unwrap();
        assert_eq!(v, "1.2");
        let p50 = c.get("p50_us").unwrap();
        assert_eq!((p50.unit, p50.samples.clone()), (Unit::Micros, vec![2.5]));
    }

    #[test]
    fn a_bad_peer_line_names_the_field_and_records_nothing() {
        for (line, field) in [
            (
                &br#"{"workload":"W1","figures":{"us_per_handoff":-1}}"#[..],
                "figures.us_per_handoff",
            ),
            (
                br#"{"workload":"W1","figures":{"tasks_per_s":5}}"#,
                "figures.us_per_handoff",
            ),
            (
                br#"{"workload":"W1","figures":{"us_per_handoff":1,"p50_us":1}}"#,
                "figures.p50_us",
            ),
            (
                br#"{"workload":"W2","figures":{"tasks_per_s":1}}"#,
                "workload",
            ),
            (br#"{"workload":"W1","figures":[]}"#, "figures"),
            (b"not json", "not JSON"),
            (b"", "no JSON line"),
        ] {
            let mut c = Collector::default();
            let e = parse_line(Workload::W1, line, &mut c).unwrap_err();
            assert!(e.contains(field), "{e} names {field}");
            assert!(c.figures.is_empty(), "nothing recorded from a bad line");
        }
    }

    #[test]
    fn peers_get_the_counts_muster_uses() {
        let a = Peer::workload_args(Workload::W1, 1.0);
        assert_eq!(
            a[..6],
            ["--workload", "W1", "--tasks", "10000", "--warmup", "200"]
        );
        let a = Peer::workload_args(Workload::W2, 0.01);
        assert_eq!(a[3], "1000");
        let a = Peer::workload_args(Workload::W3, 0.01);
        assert_eq!((a[3].as_str(), a[5].as_str()), ("100", "5"));
    }

    #[test]
    fn an_external_peer_needs_a_name_and_a_program() {
        assert!(Peer::external("x=/bin/true").is_ok());
        for bad in ["x", "=/bin/true", "x=", " = "] {
            assert!(Peer::external(bad).unwrap_err().contains("NAME=PROGRAM"));
        }
    }

    #[test]
    fn a_peer_that_fails_is_an_error_naming_it_and_its_command() {
        let p = Peer {
            name: "broken".into(),
            program: "sh".into(),
            args: vec!["-c".into(), "echo boom >&2; exit 3".into(), "sh".into()],
            dir: None,
        };
        let e = p
            .run(
                Workload::W3,
                0.01,
                Duration::from_secs(60),
                &mut Collector::default(),
            )
            .unwrap_err();
        assert_eq!(e.peer, "broken");
        assert!(
            e.what.contains("exited with 3") && e.what.contains("boom"),
            "{e}"
        );
        assert!(e.what.contains("--workload W3"), "{e}");
    }

    #[test]
    fn a_missing_program_is_an_error_naming_the_peer() {
        let p = Peer::external("gone=/nonexistent/peer").unwrap();
        let e = p
            .run(
                Workload::W1,
                0.01,
                Duration::from_secs(60),
                &mut Collector::default(),
            )
            .unwrap_err();
        assert!(
            e.to_string().starts_with("peer gone:") && e.what.contains("/nonexistent/peer"),
            "{e}"
        );
    }

    #[test]
    fn a_build_step_that_fails_names_the_peer_and_the_command() {
        let dirs = PeerDirs {
            sources: PathBuf::from("/nonexistent/peers"),
            work: std::env::temp_dir().join("muster-peers-test-absent"),
        };
        let spec = BUILTIN.iter().find(|p| p.name == "autogen-core").unwrap();
        let e = spec.prepare(&dirs, &mut |_| {}).unwrap_err();
        assert_eq!(e.peer, "autogen-core");
        assert!(e.what.contains("requirements.txt"), "{e}");
        let spec = BUILTIN.iter().find(|p| p.name == "graph-flow").unwrap();
        let e = spec.prepare(&dirs, &mut |_| {}).unwrap_err();
        assert_eq!(e.peer, "graph-flow");
        assert!(
            e.what.contains("build")
                && e.what
                    .contains("/nonexistent/peers/rust/graph-flow/Cargo.toml"),
            "{e}"
        );
    }
}
