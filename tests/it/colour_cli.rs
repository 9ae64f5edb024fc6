//! Colour only on a terminal: the `muster` binary's log lines on stderr carry ANSI colour
//! codes when stderr is a terminal and `NO_COLOR` is unset or empty, and never when stderr
//! is a pipe or a file, or `NO_COLOR` has a value (<https://no-color.org>). The logs are
//! forced with `RUST_LOG=debug` on a small simulation (its agents crash and warn).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ESC: &str = "\x1b[";

fn sim_args() -> [&'static str; 5] {
    [
        "sim",
        "examples/scenarios/all-agents-fail.toml",
        "--tasks",
        "2",
        "--json",
    ]
}

/// Runs `c` to its end with stdout and stderr piped, killing it (and failing) after 120 s.
fn output(mut c: Command) -> Output {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    // Drain both pipes while waiting, so a full pipe cannot stall the child.
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{c:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

#[test]
fn log_lines_on_a_piped_stderr_carry_no_colour_codes() {
    for no_color in [None, Some("")] {
        let mut c = crate::support::common::muster();
        c.args(sim_args()).env("RUST_LOG", "debug");
        match no_color {
            Some(v) => c.env("NO_COLOR", v),
            None => c.env_remove("NO_COLOR"),
        };
        let o = output(c);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains("DEBUG") && stderr.contains("WARN"),
            "no log lines to check: {stderr}"
        );
        assert!(
            !stderr.contains(ESC),
            "colour codes on a piped stderr (NO_COLOR {no_color:?}): {:?}",
            &stderr[..stderr.len().min(300)]
        );
        assert!(!String::from_utf8_lossy(&o.stdout).contains(ESC));
    }
}

/// Runs the simulation under `script`, so that its stdout and stderr are a terminal; the
/// terminal's output is `script`'s stdout.
fn on_a_terminal(no_color: Option<&str>) -> Option<String> {
    if !Path::new("/usr/bin/script").exists() && !Path::new("/bin/script").exists() {
        eprintln!("skipped: no `script` (util-linux) to give the binary a terminal");
        return None;
    }
    let line = format!(
        "'{}' {}",
        env!("CARGO_BIN_EXE_muster"),
        sim_args().join(" ")
    );
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("RUST_LOG", "debug");
    match no_color {
        Some(v) => c.env("NO_COLOR", v),
        None => c.env_remove("NO_COLOR"),
    };
    let o = output(c);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("DEBUG"), "no log lines to check: {text}");
    Some(text)
}

#[test]
fn on_a_terminal_colour_follows_no_color() {
    if let Some(t) = on_a_terminal(None) {
        assert!(t.contains(ESC), "no colour on a terminal without NO_COLOR");
    }
    if let Some(t) = on_a_terminal(Some("")) {
        assert!(t.contains(ESC), "an empty NO_COLOR counts as unset");
    }
    if let Some(t) = on_a_terminal(Some("1")) {
        assert!(!t.contains(ESC), "colour on a terminal with NO_COLOR=1");
    }
}
