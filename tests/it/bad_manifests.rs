//! Bad manifests, run through the built binary: exit code 2, the file and the field named,
//! and nothing registered.

fn muster(dir: &std::path::Path, json: bool) -> std::process::Output {
    let mut c = crate::support::common::muster();
    c.arg("agents")
        .arg("--actors")
        .arg(dir.join("actors"))
        .arg("--schemas")
        .arg(dir.join("schemas"));
    if json {
        c.arg("--json");
    }
    c.output().expect("run muster")
}

fn cast(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("actors")).unwrap();
    std::fs::create_dir_all(d.path().join("schemas")).unwrap();
    std::fs::write(
        d.path().join("schemas/any.schema.json"),
        r#"{"type":"object"}"#,
    )
    .unwrap();
    for (name, text) in files {
        std::fs::write(d.path().join("actors").join(name), text).unwrap();
    }
    d
}

const GOOD: &str = r#"
name = "good"
[[capabilities]]
name = "echo"
input = "any"
output = "any"
[backend]
kind = "function"
name = "echo"
"#;

#[test]
fn a_good_cast_lists_its_agents() {
    let d = cast(&[("good.toml", GOOD)]);
    let out = muster(d.path(), true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["agents"][0]["id"], "good#0");
    assert_eq!(doc["agents"][0]["state"], "ready");
}

#[test]
fn a_manifest_that_does_not_parse_exits_2_naming_the_file() {
    let d = cast(&[
        ("good.toml", GOOD),
        ("broken.toml", "name = \"x\"\n[[capabilities]\n"),
    ]);
    let out = muster(d.path(), false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.toml") && err.contains("TOML"), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "nothing was listed"
    );
}

#[test]
fn a_missing_schema_exits_2_naming_the_file_and_field() {
    let bad = GOOD
        .replace("name = \"good\"", "name = \"bad\"")
        .replace("output = \"any\"", "output = \"nope\"");
    let d = cast(&[("good.toml", GOOD), ("bad.toml", &bad)]);
    let out = muster(d.path(), true);
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let details = doc["details"].to_string();
    assert!(
        details.contains("bad.toml")
            && details.contains("/capabilities/0/output")
            && details.contains("nope"),
        "{details}"
    );
}

#[test]
fn a_wrong_field_exits_2_with_what_was_expected() {
    let bad = GOOD.replace("name = \"good\"", "name = \"bad\"\nreplicas = \"three\"");
    let d = cast(&[("bad.toml", &bad)]);
    let out = muster(d.path(), false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("replicas") && err.contains("integer"),
        "{err}"
    );
    let unknown = GOOD.replace("name = \"good\"", "name = \"bad\"\nreplica = 3");
    let d = cast(&[("bad.toml", &unknown)]);
    let out = muster(d.path(), false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("replica"), "{err}");
}

#[test]
fn the_shipped_cast_registers_and_lists_every_agent() {
    let out = crate::support::common::muster()
        .args(["agents", "--json"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("run muster");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let caps = doc["capabilities"].to_string();
    for c in ["code.write", "code.test", "code.review", "code.security"] {
        assert!(caps.contains(c), "{caps}");
    }
    assert!(
        doc["agents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["state"] == "ready")
    );
}

#[test]
fn every_documented_command_backend_field_is_accepted_in_a_manifest() {
    // The fields of docs/command-agents.md, all set at once: the manifest schema and the
    // Rust config must agree on every one of them.
    let full = r#"
name = "full"
[[capabilities]]
name = "echo"
input = "any"
output = "any"
[backend]
kind = "command"
program = "true"
args = ["--flag"]
mode = "oneshot"
cwd = "."
env_pass = ["OPENAI_API_KEY", "MUSTER_REVIEW_CHANGES"]
[backend.env]
LOG_LEVEL = "debug"
[backend.limits]
cpu_seconds = 300
memory_bytes = 2147483648
open_files = 256
"#;
    let d = cast(&[("full.toml", full)]);
    let out = muster(d.path(), true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A limit of the wrong type is still refused, naming the field.
    let bad = full.replace("open_files = 256", "open_files = \"many\"");
    let d = cast(&[("full.toml", &bad)]);
    let out = muster(d.path(), false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("full.toml") && err.contains("open_files"),
        "{err}"
    );
}
