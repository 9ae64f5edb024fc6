//! Every descendant of a command agent dies with muster, also when muster is SIGKILLed:
//! the agent shim (`muster_command::shim`) leads the agent's process group, adopts its
//! orphans, and kills the group when muster dies.
//!
//! The agent here starts a grandchild that ignores SIGTERM and SIGHUP and sleeps, writes
//! the grandchild's pid to a file, and then works on its task for a long time. muster is
//! SIGKILLed mid-task; the grandchild must be gone within a bound. Each wait is bounded;
//! no timing is asserted.

use crate::support::cast::{Cast, command_agent, one_step_workflow};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::support::common::{muster_cmd, muster_within};

/// The agent program: starts the stubborn grandchild, records its pid, then sleeps.
const AGENT: &str = r#"
import json, os, subprocess, sys, time
here = os.path.dirname(os.path.abspath(__file__))
grandchild = subprocess.Popen([sys.executable, "-c",
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
    "time.sleep(600)\n"])
with open(os.path.join(here, "grandchild.pid.tmp"), "w") as f:
    f.write(str(grandchild.pid))
os.rename(os.path.join(here, "grandchild.pid.tmp"), os.path.join(here, "grandchild.pid"))
MODE = sys.argv[1]
if MODE == "oneshot":
    json.load(sys.stdin)
    time.sleep(600)
else:
    for line in sys.stdin:
        time.sleep(600)
"#;

/// A cast of one agent (`mode` = "oneshot" or "stdio") running [`AGENT`], and a one-step
/// workflow on its capability.
fn cast(mode: &str) -> tempfile::TempDir {
    let manifest = command_agent(
        "parent",
        "spawn",
        "any",
        "python3",
        &["agent.py", mode],
        mode,
        "",
    );
    Cast::new()
        .schema("any", r#"{"type":"object"}"#)
        .file("agent.py", AGENT)
        .actor("parent", &manifest)
        .file(
            "wf.toml",
            &one_step_workflow("t", "any", "spawn", "300s", 1),
        )
        .into_dir()
}

/// Waits (at most `secs` seconds of wall time) for `path` to exist; its contents.
fn wait_for_file(path: &Path, secs: u64, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("muster ended ({status}) before the agent started its grandchild");
        }
        assert!(
            Instant::now() < deadline,
            "no {} within {secs} s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is a live process (a zombie is not: it has ended, only unreaped).
fn alive(pid: i32) -> bool {
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    match std::fs::read_to_string(stat) {
        // The state follows the command name, which is in parentheses.
        Ok(text) => text
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn sigkill(pid: i32) {
    // SAFETY: kill(2) takes no pointers.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Runs the workflow with an agent in `mode`, SIGKILLs muster mid-task, and asserts that
/// the grandchild is gone within a bound.
fn grandchild_dies_with_a_sigkilled_muster(mode: &str) {
    let d = cast(mode);
    let mut cmd = muster_cmd(d.path());
    cmd.args(["run", "wf.toml", "--input", "{}", "--journal", "j.db"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut muster = cmd.spawn().expect("muster starts");
    let pid: i32 = wait_for_file(&d.path().join("grandchild.pid"), 60, &mut muster)
        .trim()
        .parse()
        .expect("a pid");
    assert!(alive(pid), "the grandchild runs while muster does");
    sigkill(muster.id() as i32);
    let _ = muster.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survived = alive(pid);
    if survived {
        // Do not leave it behind, whatever the verdict.
        sigkill(pid);
    }
    assert!(
        !survived,
        "the grandchild {pid} (which ignores SIGTERM) outlived a SIGKILLed muster by 20 s"
    );
}

#[test]
fn a_oneshot_agents_grandchild_that_ignores_sigterm_dies_with_a_sigkilled_muster() {
    grandchild_dies_with_a_sigkilled_muster("oneshot");
}

#[test]
fn a_stdio_agents_grandchild_that_ignores_sigterm_dies_with_a_sigkilled_muster() {
    grandchild_dies_with_a_sigkilled_muster("stdio");
}

/// The signals a process blocks are inherited across fork and exec, and the agent shim
/// blocks the ones it waits for (SIGTERM, SIGINT, SIGHUP, SIGCHLD). An agent, and every
/// process it starts, must begin with none of them blocked, or it could not be stopped
/// with SIGTERM or Ctrl-C. Checked in both modes, from the agent's own /proc status.
#[test]
fn an_agent_starts_with_no_signal_blocked_in_either_mode() {
    const SHOW: &str = r#"
import json, sys
mask = [l.split()[1] for l in open("/proc/self/status") if l.startswith("SigBlk:")][0]
if sys.argv[1] == "oneshot":
    json.load(sys.stdin)
    print(json.dumps({"blocked": mask}))
else:
    for line in sys.stdin:
        task = json.loads(line)
        if task["type"] == "task":
            print(json.dumps({"type": "result", "task_id": task["task_id"],
                              "epoch": task["epoch"], "output": {"blocked": mask}}), flush=True)
"#;
    for mode in ["oneshot", "stdio"] {
        let manifest = command_agent(
            "shower",
            "show",
            "any",
            "python3",
            &["show.py", mode],
            mode,
            "",
        );
        let dir = Cast::new()
            .schema("any", r#"{"type":"object"}"#)
            .file("show.py", SHOW)
            .actor("shower", &manifest)
            .file("wf.toml", &one_step_workflow("s", "any", "show", "60s", 1))
            .into_dir();
        let out = muster_within(
            60,
            &["run", "wf.toml", "--input", "{}", "--json"],
            dir.path(),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{mode}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON report");
        let mask = report["outputs"]["one"]["blocked"]
            .as_str()
            .unwrap_or_else(|| panic!("{mode}: {report}"));
        let mask = u64::from_str_radix(mask, 16).expect("a hexadecimal mask");
        assert_eq!(
            mask, 0,
            "{mode}: the agent started with signals blocked: {mask:#x}"
        );
    }
}
