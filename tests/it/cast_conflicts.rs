//! A capability declared by two agent types with different contracts is a problem of the
//! cast, found when the cast is loaded (before anything is registered or journaled):
//! `muster agents`, `muster check` and `muster run` exit 2 with one message naming both
//! manifest files and what differs, and `run` creates no journal. Before, `check` said
//! ok and `run` journaled `agent_registered` for the first agent, then failed naming
//! agents, not files. Every child process here runs under a watchdog.

use crate::support::common;

use std::path::{Path, PathBuf};
use std::process::Output;

use muster::SchemaStore;
use muster::cast::load_cast;
use muster::scenario::Scenario;

fn manifest(name: &str, input: &str, output: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"
[[capabilities]]
name = "do.echo"
input = "{input}"
output = "{output}"
{extra}
[backend]
kind = "function"
name = "echo"
"#
    )
}

const WORKFLOW: &str = r#"name = "t"
input = "req"
start = "one"

[steps.one]
capability = "do.echo"
timeout = "10s"
attempts = 2
on_exhausted = "fail"
next = "done"

[steps.done]
terminal = "done"
"#;

/// A temp dir with `schemas/` (the shipped manifest and workflow schemas, `req` and
/// `other`), `actors/` holding the given manifests and `wf.toml`.
fn fixture(manifests: &[(&str, String)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    std::fs::create_dir_all(d.path().join("actors")).unwrap();
    std::fs::create_dir_all(d.path().join("schemas")).unwrap();
    for s in ["manifest", "workflow"] {
        let f = format!("{s}.schema.json");
        std::fs::copy(
            root.join("schemas").join(&f),
            d.path().join("schemas").join(&f),
        )
        .unwrap();
    }
    for s in ["req", "other"] {
        std::fs::write(
            d.path().join(format!("schemas/{s}.schema.json")),
            r#"{"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}"#,
        )
        .unwrap();
    }
    for (file, text) in manifests {
        std::fs::write(d.path().join("actors").join(file), text).unwrap();
    }
    std::fs::write(d.path().join("wf.toml"), WORKFLOW).unwrap();
    d
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn store(dir: &Path) -> SchemaStore {
    let s = SchemaStore::new();
    s.load_dir(dir.join("schemas")).unwrap();
    s
}

#[test]
fn two_agents_declaring_one_capability_with_different_schemas_are_refused_before_anything_runs() {
    let d = fixture(&[
        ("a.toml", manifest("alpha", "req", "req", "")),
        ("b.toml", manifest("beta", "req", "other", "")),
    ]);
    let mut messages = Vec::new();
    for args in [
        &["agents"][..],
        &["check", "wf.toml"][..],
        &[
            "run",
            "wf.toml",
            "--input",
            r#"{"text": "hi"}"#,
            "--journal",
            "j.db",
        ][..],
    ] {
        let out = common::muster_within(120, args, d.path());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("a.toml")
                && err.contains("b.toml")
                && err.contains("do.echo")
                && err.contains("output schema req vs other"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed nothing else");
        messages.push(err);
    }
    // The same message from each command.
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:#?}");
    // `run` refused before opening its journal: nothing was journaled.
    assert!(!d.path().join("j.db").exists());
}

#[test]
fn every_difference_of_contract_is_reported_with_what_differs() {
    for (b, what) in [
        (
            manifest("beta", "other", "req", ""),
            "input schema req vs other",
        ),
        (
            manifest("beta", "req", "req", "version = \"2\""),
            "version 1 vs 2",
        ),
        (
            manifest("beta", "req", "req", "accept = \"true\""),
            "accept rule",
        ),
    ] {
        let d = fixture(&[
            ("a.toml", manifest("alpha", "req", "req", "")),
            ("b.toml", b),
        ]);
        let e = load_cast(&d.path().join("actors"), &store(d.path())).unwrap_err();
        assert_eq!(e.errors.len(), 1, "{e}");
        let e = &e.errors[0];
        assert!(e.file.ends_with("b.toml"), "{e}");
        assert_eq!(e.field, "/capabilities/0");
        assert!(
            e.message.contains("a.toml") && e.message.contains(what),
            "{what}: {e}"
        );
    }
}

#[test]
fn agents_sharing_a_capability_with_one_contract_are_accepted() {
    let d = fixture(&[
        ("a.toml", manifest("alpha", "req", "req", "")),
        ("b.toml", manifest("beta", "req", "req", "")),
    ]);
    let cast = load_cast(&d.path().join("actors"), &store(d.path())).unwrap();
    assert_eq!(cast.len(), 2);
    let out = common::muster_within(120, &["check", "wf.toml"], d.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_scenario_cast_with_two_contracts_for_one_capability_is_refused_naming_both_agents() {
    let d = fixture(&[]);
    let text = r#"name = "t"
capability = "do.echo"
input = { text = "hi" }
[[agents]]
name = "alpha"
[[agents.capabilities]]
name = "do.echo"
input = "req"
output = "req"
[[agents]]
name = "beta"
[[agents.capabilities]]
name = "do.echo"
input = "req"
output = "other"
"#;
    let path: PathBuf = d.path().join("s.toml");
    std::fs::write(&path, text).unwrap();
    let e = Scenario::load(&path, &store(d.path())).unwrap_err();
    assert!(
        e.iter().any(|e| e.field == "agents[1].capabilities[0]"
            && e.message.contains("alpha")
            && e.message.contains("output schema req vs other")),
        "{e:?}"
    );
}
