//! Counts beyond their documented limits (`replicas`, `concurrency`, `mailbox`, a cast's
//! instances, a scenario's `tasks`, `muster sim --tasks`) are refused at load with exit 2
//! naming the file and the field, in the JSON Schemas too; an environment override of the
//! wrong type is refused naming the variable and the field instead of being coerced.
//! Before the limits these inputs aborted the process ("memory allocation of 24000000000
//! bytes failed") or grew without bound; every child process here runs under a watchdog.

use crate::support::common;

use std::path::{Path, PathBuf};
use std::process::Output;

use muster::SchemaStore;
use muster::cast::{MAX_CAST_INSTANCES, MAX_REPLICAS, Manifest, load_cast};
use serde_json::{Value, json};

/// Runs the binary, killing it if it has not finished within `secs` (then the test fails
/// saying so instead of hanging).
fn muster_within(secs: u64, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = common::muster_cmd(Path::new("."));
    cmd.args(args).envs(env.iter().copied());
    common::output_within(secs, cmd)
}

const ECHO: &str = r#"name = "tester"
replicas = 2
[[capabilities]]
name = "code.test"
input = "any"
output = "any"
[backend]
kind = "function"
name = "echo"
"#;

/// A temp dir with `actors/` holding the given manifests and `schemas/` holding `any`
/// (and the shipped manifest schema when `with_schema`).
fn cast(files: &[(&str, &str)], with_schema: bool) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    std::fs::create_dir_all(d.path().join("actors")).unwrap();
    std::fs::create_dir_all(d.path().join("schemas")).unwrap();
    std::fs::write(
        d.path().join("schemas/any.schema.json"),
        r#"{"type":"object"}"#,
    )
    .unwrap();
    if with_schema {
        std::fs::copy(
            root.join("schemas/manifest.schema.json"),
            d.path().join("schemas/manifest.schema.json"),
        )
        .unwrap();
    }
    for (name, text) in files {
        std::fs::write(d.path().join("actors").join(name), text).unwrap();
    }
    d
}

fn agents(d: &Path, env: &[(&str, &str)]) -> Output {
    let actors = d.join("actors");
    let schemas = d.join("schemas");
    muster_within(
        120,
        &[
            "agents",
            "--actors",
            actors.to_str().unwrap(),
            "--schemas",
            schemas.to_str().unwrap(),
        ],
        env,
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn store_with(names: &[&str]) -> SchemaStore {
    let s = SchemaStore::new();
    s.add("any", json!({"type": "object"})).unwrap();
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    for n in names {
        let doc: Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(format!("schemas/{n}.schema.json"))).unwrap(),
        )
        .unwrap();
        s.add(n, doc).unwrap();
    }
    s
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn env(pairs: &[(&str, &str)]) -> Option<config::Map<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn a_billion_replicas_in_a_manifest_exit_2_naming_the_file_and_field() {
    let big = ECHO.replace("replicas = 2", "replicas = 1000000000");
    // With the manifest schema (its `maximum`) and without it (muster's own check).
    for with_schema in [true, false] {
        let d = cast(&[("tester.toml", &big)], with_schema);
        let out = agents(d.path(), &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "schema {with_schema}: {err}");
        assert!(
            err.contains("tester.toml") && err.contains("/replicas") && err.contains("100000"),
            "schema {with_schema}: {err}"
        );
        assert!(out.stdout.is_empty(), "nothing was registered");
    }
}

#[test]
fn a_billion_replicas_from_the_environment_exit_2_naming_the_variable() {
    let d = cast(&[("tester.toml", ECHO)], true);
    for value in ["1e9", "1000000000"] {
        let out = agents(d.path(), &[("MUSTER_TESTER__REPLICAS", value)]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{value}: {err}");
        assert!(
            err.contains("tester.toml")
                && err.contains("/replicas")
                && err.contains("MUSTER_TESTER__REPLICAS"),
            "{value}: {err}"
        );
    }
}

#[test]
fn an_env_override_of_the_wrong_type_exits_2_instead_of_being_coerced() {
    let d = cast(&[("tester.toml", ECHO)], true);
    // `config` turned 2.5 into 3 and true into 1.
    for value in ["2.5", "true", "-1", "three", ""] {
        let out = agents(d.path(), &[("MUSTER_TESTER__REPLICAS", value)]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{value:?}: {err}");
        assert!(
            err.contains("tester.toml")
                && err.contains("/replicas")
                && err.contains("MUSTER_TESTER__REPLICAS")
                && err.contains("integer"),
            "{value:?}: {err}"
        );
    }
    // A right one still works.
    let out = agents(d.path(), &[("MUSTER_TESTER__REPLICAS", "3")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 instances"));
}

#[test]
fn every_typed_field_refuses_an_override_of_the_wrong_type() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&[]);
    let path = write(dir.path(), "tester.toml", ECHO);
    let refused = |var: &str, value: &str, field: &str| {
        let e = Manifest::load(&path, &store, env(&[(var, value)]))
            .expect_err(&format!("{var}={value} must be refused"));
        assert!(
            e.iter()
                .any(|e| e.field == field && e.message.contains(var)),
            "{var}={value}: {e:?}"
        );
    };
    refused("MUSTER_TESTER__CONCURRENCY", "1.5", "/concurrency");
    refused("MUSTER_TESTER__MAILBOX", "false", "/mailbox");
    refused(
        "MUSTER_TESTER__SUPERVISION__INTENSITY",
        "true",
        "/supervision/intensity",
    );
    refused(
        "MUSTER_TESTER__SUPERVISION__PERIOD",
        "2.5",
        "/supervision/period",
    );
    refused("MUSTER_TESTER__LIVENESS", "yes", "/liveness");
    // A simulated agent's fields: numbers, counts and durations.
    let sim = ECHO.replace(
        "kind = \"function\"\nname = \"echo\"",
        "kind = \"sim\"\ncrash = 0.1\nlatency = { kind = \"fixed\", value = \"1s\" }",
    );
    let path = write(dir.path(), "tester.toml", &sim);
    let refused = |var: &str, value: &str, field: &str| {
        let e = Manifest::load(&path, &store, env(&[(var, value)]))
            .expect_err(&format!("{var}={value} must be refused"));
        assert!(
            e.iter()
                .any(|e| e.field == field && e.message.contains(var)),
            "{var}={value}: {e:?}"
        );
    };
    refused("MUSTER_TESTER__BACKEND__CRASH", "true", "/backend/crash");
    refused("MUSTER_TESTER__BACKEND__SEED", "2.5", "/backend/seed");
    refused(
        "MUSTER_TESTER__BACKEND__LATENCY__VALUE",
        "soon",
        "/backend/latency/value",
    );
    // Right types are taken as written.
    let m = Manifest::load(
        &path,
        &store,
        env(&[
            ("MUSTER_TESTER__BACKEND__CRASH", "0.25"),
            ("MUSTER_TESTER__BACKEND__LATENCY__VALUE", "2"),
            ("MUSTER_TESTER__MAILBOX", "7"),
        ]),
    )
    .unwrap();
    assert_eq!(m.mailbox, 7);
    let muster::cast::BackendSpec::Sim(s) = &m.backend else {
        panic!("a sim backend")
    };
    assert_eq!(s.model.crash, 0.25);
}

#[test]
fn a_text_override_is_kept_as_written() {
    // `config`'s parsing turned "007" into 7 and then into "7".
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "tester.toml", ECHO);
    let m = Manifest::load(
        &path,
        &store_with(&[]),
        env(&[("MUSTER_TESTER__DESCRIPTION", "007")]),
    )
    .unwrap();
    assert_eq!(m.description, "007");
}

#[test]
fn a_count_of_the_wrong_type_in_the_file_is_refused_without_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    for (text, field) in [
        (ECHO.replace("replicas = 2", "replicas = 2.5"), "/replicas"),
        (ECHO.replace("replicas = 2", "replicas = true"), "/replicas"),
        (
            ECHO.replace("replicas = 2", "concurrency = 1e3"),
            "/concurrency",
        ),
    ] {
        let path = write(dir.path(), "tester.toml", &text);
        let e = Manifest::load(&path, &store_with(&[]), env(&[])).unwrap_err();
        assert!(e.iter().any(|e| e.field == field), "{text}: {e:?}");
    }
}

#[test]
fn concurrency_and_mailbox_beyond_their_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for with_schema in [&["manifest"][..], &[][..]] {
        let store = store_with(with_schema);
        for (line, field) in [
            ("concurrency = 10001", "/concurrency"),
            ("mailbox = 1000001", "/mailbox"),
            ("mailbox = 9223372036854775807", "/mailbox"),
        ] {
            let path = write(
                dir.path(),
                "tester.toml",
                &ECHO.replace("replicas = 2", line),
            );
            let e = Manifest::load(&path, &store, env(&[])).unwrap_err();
            assert!(
                e.iter().any(|e| e.field == field),
                "{line} (schema: {with_schema:?}): {e:?}"
            );
        }
    }
}

#[test]
fn a_cast_beyond_the_total_instance_limit_is_refused_naming_the_directory() {
    let d = tempfile::tempdir().unwrap();
    let n = MAX_CAST_INSTANCES / MAX_REPLICAS + 1;
    for i in 0..n {
        let text = ECHO
            .replace("name = \"tester\"", &format!("name = \"t{i}\""))
            .replace("replicas = 2", &format!("replicas = {MAX_REPLICAS}"));
        write(d.path(), &format!("t{i}.toml"), &text);
    }
    let e = load_cast(d.path(), &store_with(&["manifest"])).unwrap_err();
    assert!(
        e.errors
            .iter()
            .any(|e| e.file == d.path() && e.message.contains(&MAX_CAST_INSTANCES.to_string())),
        "{e}"
    );
}

const SCENARIO: &str = r#"
name = "t"
capability = "code.test"
input = { workspace = "/tmp/w" }
tasks = 3
[[agents]]
name = "tester"
replicas = 2
[[agents.capabilities]]
name = "code.test"
input = "test-request"
output = "test-report"
"#;

#[test]
fn a_scenario_of_a_billion_tasks_exits_2_naming_the_field() {
    let d = tempfile::tempdir().unwrap();
    let schemas = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("schemas");
    let schemas = schemas.to_str().unwrap();
    let ok = write(d.path(), "ok.toml", SCENARIO);
    let out = muster_within(
        120,
        &[
            "sim",
            ok.to_str().unwrap(),
            "--tasks",
            "1000000000",
            "--schemas",
            schemas,
        ],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--tasks") && err.contains("10000000"), "{err}");

    for (from, to, field) in [
        ("tasks = 3", "tasks = 1000000000", "tasks"),
        ("tasks = 3", "runs = 1000000000", "runs"),
        ("replicas = 2", "replicas = 1000000", "agents[0].replicas"),
        (
            "replicas = 2",
            "concurrency = 100000",
            "agents[0].concurrency",
        ),
    ] {
        let bad = write(d.path(), "bad.toml", &SCENARIO.replace(from, to));
        let out = muster_within(
            120,
            &["sim", bad.to_str().unwrap(), "--schemas", schemas],
            &[],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{to}: {err}");
        assert!(
            err.contains("bad.toml") && err.contains(&format!("{field}:")),
            "{to}: {err}"
        );
    }
}

#[test]
fn the_json_schemas_carry_the_limits() {
    let store = store_with(&["manifest", "scenario"]);
    let manifest = |k: &str, v: u64| {
        let mut doc: Value =
            serde_json::to_value(toml::from_str::<toml::Table>(ECHO).unwrap()).unwrap();
        doc[k] = json!(v);
        store.validate("manifest", &doc)
    };
    assert!(manifest("replicas", 100_000).is_ok());
    assert!(manifest("replicas", 100_001).is_err());
    assert!(manifest("concurrency", 10_001).is_err());
    assert!(manifest("mailbox", 1_000_001).is_err());
    let scenario = |k: &str, v: u64| {
        let mut doc: Value =
            serde_json::to_value(toml::from_str::<toml::Table>(SCENARIO).unwrap()).unwrap();
        doc.as_object_mut().unwrap().remove("tasks");
        doc[k] = json!(v);
        store.validate("scenario", &doc)
    };
    assert!(scenario("tasks", 10_000_000).is_ok());
    assert!(scenario("tasks", 10_000_001).is_err());
    assert!(scenario("runs", 10_000_001).is_err());
}
