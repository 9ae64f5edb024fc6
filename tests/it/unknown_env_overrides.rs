//! An environment override `MUSTER_<AGENT>__<FIELD>` for an agent the cast does not have
//! is not silently ignored: `muster check`, `run` and `serve` warn on stderr naming the
//! variable and the closest agent, and with `--strict` refuse (exit 2). An error an
//! override causes in an agent that exists names the variable it came from.

use std::path::Path;

use crate::support::common::{muster_cmd, output_within};
use crate::support::node::{one_step, write_cast};

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_cast(dir.path(), &["workflows"], 1);
    std::fs::write(
        dir.path().join("workflows/w.toml"),
        one_step("w", "echo", "10s", 1),
    )
    .expect("workflow");
    dir
}

/// `muster ARGS` in `dir` with one variable set; (exit code, stdout, stderr).
fn muster_with(dir: &Path, var: (&str, &str), args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = muster_cmd(dir);
    cmd.env(var.0, var.1).args(args);
    let out = output_within(120, cmd);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const TYPO: (&str, &str) = ("MUSTER_ECHOO__REPLICAS", "2");

#[test]
fn an_override_for_no_agent_warns_naming_the_variable_and_the_closest_agent() {
    let dir = setup();
    let (code, stdout, stderr) = muster_with(dir.path(), TYPO, &["check", "workflows/w.toml"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: MUSTER_ECHOO__REPLICAS: the cast has no agent `ECHOO`")
            && stderr.contains("did you mean agent `echo` (MUSTER_ECHO__...)?"),
        "{stderr}"
    );
    // `--json` lists it with the check's other warnings.
    let (code, stdout, stderr) =
        muster_with(dir.path(), TYPO, &["check", "workflows/w.toml", "--json"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let doc: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
    let warnings = doc["warnings"].as_array().expect("a warnings list");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains("MUSTER_ECHOO__REPLICAS"))),
        "{doc}"
    );
    // A run goes on, with the same warning.
    let (code, _, stderr) = muster_with(
        dir.path(),
        TYPO,
        &["run", "workflows/w.toml", "--input", "{}"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("MUSTER_ECHOO__REPLICAS"), "{stderr}");
}

#[test]
fn under_strict_an_override_for_no_agent_refuses_check_run_and_serve() {
    let dir = setup();
    for args in [
        &["check", "workflows/w.toml", "--strict"][..],
        &["run", "workflows/w.toml", "--input", "{}", "--strict"][..],
        &[
            "serve",
            "--strict",
            "--workflows",
            "workflows",
            "--listen",
            "127.0.0.1:0",
        ][..],
    ] {
        let (code, _, stderr) = muster_with(dir.path(), TYPO, args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("(--strict)") && stderr.contains("did you mean agent `echo`"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn an_error_an_override_causes_names_its_variable() {
    let dir = setup();
    for (var, field) in [
        (("MUSTER_ECHO__BACKEND__NAME", "nope"), "/backend/name"),
        (("MUSTER_ECHO__BACKEND__KIND", "weird"), "/backend/kind"),
        (
            ("MUSTER_ECHO__BACKEND__BASEURL", "http://x"),
            "/backend/baseurl",
        ),
    ] {
        let (code, _, stderr) = muster_with(dir.path(), var, &["check", "workflows/w.toml"]);
        assert_eq!(code, Some(2), "{var:?}: {stderr}");
        assert!(
            stderr.contains(field) && stderr.contains(&format!("(set by {})", var.0)),
            "{var:?}: {stderr}"
        );
    }
}
