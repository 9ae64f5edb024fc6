//! `muster sim` through the built binary: bad scenarios exit 2 naming the file and the
//! field (every distribution parameter, every probability), a shipped scenario runs with
//! a small `--tasks` and prints one well-formed JSON document.

use crate::support::common::muster;

fn scenario(agent_extra: &str) -> String {
    format!(
        r#"
name = "bad"
capability = "code.test"
input = {{ workspace = "/tmp/w" }}
tasks = 2
[[agents]]
name = "t"
{agent_extra}
[[agents.capabilities]]
name = "code.test"
input = "test-request"
output = "test-report"
"#
    )
}

#[test]
fn every_bad_parameter_exits_2_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "latency = { kind = \"fixed\", value = -1 }",
            "agents[0].latency.value",
        ),
        (
            "latency = { kind = \"uniform\", min = -1, max = 2 }",
            "agents[0].latency.min",
        ),
        (
            "latency = { kind = \"uniform\", min = 1, max = -2 }",
            "agents[0].latency.max",
        ),
        (
            "latency = { kind = \"uniform\", min = 3, max = 2 }",
            "agents[0].latency.min",
        ),
        (
            "latency = { kind = \"normal\", mean = -1, std_dev = 1 }",
            "agents[0].latency.mean",
        ),
        (
            "latency = { kind = \"normal\", mean = 1, std_dev = -1 }",
            "agents[0].latency.std_dev",
        ),
        (
            "latency = { kind = \"lognormal\", mu = 0, sigma = -0.5 }",
            "agents[0].latency.sigma",
        ),
        (
            "latency = { kind = \"exponential\", mean = -2 }",
            "agents[0].latency.mean",
        ),
        ("latency = { kind = \"gamma\", mean = 2 }", "gamma"),
        (
            "latency = { kind = \"fixed\", value = 1, extra = 2 }",
            "extra",
        ),
        ("crash = 1.5", "agents[0].crash"),
        ("hang = 2", "agents[0].hang"),
        ("error = 1.01", "agents[0].error"),
        ("violate = 7", "agents[0].violate"),
        ("late = 1.2", "agents[0].late"),
        ("crash = -0.1", "agents[0].crash"),
        ("late_by = -1", "agents[0].late_by"),
        ("crash = 0.6\nlate = 0.6", "above 1"),
        ("crsh = 0.1", "crsh"),
        ("replicas = 0", "agents[0].replicas"),
    ];
    for (i, (extra, field)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, scenario(extra)).unwrap();
        let out = muster().arg("sim").arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert!(err.contains(field), "{extra}: expected `{field}` in: {err}");
        assert!(
            err.contains(&format!("bad{i}.toml")),
            "{extra}: the file is named: {err}"
        );
    }
    // Top-level problems too: an unknown field, a bad arrival rate, a fault on a stranger.
    let top = [
        ("tasks = 2\nbogus = 1", "bogus"),
        (
            "arrival = { kind = \"poisson\", rate = -3.0 }",
            "arrival.rate",
        ),
    ];
    for (i, (line, field)) in top.iter().enumerate() {
        let path = dir.path().join(format!("top{i}.toml"));
        let text = scenario("").replacen("tasks = 2", line, 1);
        std::fs::write(&path, text).unwrap();
        let out = muster().arg("sim").arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {err}");
        assert!(err.contains(field), "{line}: expected `{field}` in: {err}");
    }
    let path = dir.path().join("fault.toml");
    std::fs::write(
        &path,
        scenario("") + "[[faults]]\nat = \"1s\"\nkill = \"nobody#0\"\n",
    )
    .unwrap();
    let out = muster().arg("sim").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("faults[0].kill"));
    let out = muster()
        .args(["sim", "no/such/file.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_shipped_scenario_runs_and_prints_one_json_document() {
    let out = muster()
        .args([
            "sim",
            "examples/scenarios/code-review-heavy-faults.toml",
            "--tasks",
            "5",
            "--seed",
            "11",
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["seed"], 11);
    assert_eq!(v["mode"], "workflow");
    assert_eq!(v["runs"]["total"], 5);
    assert_eq!(v["runs"]["lost"], 0);
    assert_eq!(v["tasks"]["lost"], 0);
    assert_eq!(v["tasks"]["duplicates"], 0);
    assert_eq!(v["digest"].as_str().unwrap().len(), 16);
    assert!(v["virtual_ms"].as_u64().unwrap() > 0);
    assert!(v["wall"]["ms"].is_u64());
    for f in [
        "stale_rejected",
        "reassignments",
        "restarts",
        "dropped_out",
        "events",
    ] {
        assert!(v[f].is_u64(), "{f} in {v}");
    }
    let out = muster()
        .args([
            "sim",
            "examples/scenarios/swarm-1000.toml",
            "--tasks",
            "300",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tasks"]["completed"], 300);
}

#[test]
fn work_unfinished_at_the_horizon_is_lost_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("horizon.toml");
    let text = scenario("latency = { kind = \"fixed\", value = \"1h\" }").replacen(
        "tasks = 2",
        "tasks = 2\nhorizon = \"10s\"\ntimeout = \"2h\"",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let out = muster()
        .arg("sim")
        .arg(&path)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tasks"]["lost"], 2);
    assert_eq!(v["hit_horizon"], true);
}
