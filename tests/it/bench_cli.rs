//! `muster bench --json` produces one well-formed document with every figure, its unit,
//! median and min..max, the baselines, the ratios, the peers and the machine. Timings are
//! never asserted: only that they are there.

use serde_json::Value;

fn bench(workload: &str) -> Value {
    let out = crate::support::common::muster()
        .args(["bench", "--workload", workload, "--runs", "1", "--json"])
        .env("MUSTER_BENCH_SCALE", "0.01")
        .output()
        .expect("muster runs");
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

fn figure<'a>(w: &'a Value, name: &str) -> &'a Value {
    w["figures"]
        .as_array()
        .expect("figures")
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("figure {name} is missing"))
}

#[test]
fn w3_json_has_every_figure_baseline_and_ratio_and_no_quoted_peer() {
    let doc = bench("W3");
    assert_eq!(doc["ok"], true);
    assert_eq!(
        doc["scale"], 0.01,
        "the scale from the environment is reported"
    );
    assert_eq!(doc["runs"], 1);
    assert!(doc["command"].as_str().expect("command").contains("bench"));
    assert!(doc["machine"]["nproc"].as_u64().expect("nproc") >= 1);
    assert!(doc["machine"]["cpu_model"].is_string());
    assert!(doc["machine"]["release_build"].is_boolean());
    let ws = doc["workloads"].as_array().expect("workloads");
    assert_eq!(ws.len(), 1);
    let w3 = &ws[0];
    assert_eq!(w3["id"], "W3");
    assert!(w3["description"].is_string());
    for name in [
        "muster_p50_us",
        "muster_p90_us",
        "muster_p99_us",
        "raw_tokio_p50_us",
        "raw_tokio_p99_us",
        "raw_actix_p50_us",
        "raw_actix_p99_us",
    ] {
        let f = figure(w3, name);
        assert_eq!(f["unit"], "µs", "{name}");
        for k in ["median", "min", "max"] {
            assert!(f[k].is_number(), "{name}.{k} is a number");
        }
        assert_eq!(f["samples"].as_array().map(Vec::len), Some(1), "{name}");
    }
    let ratios = w3["ratios"].as_array().expect("ratios");
    for name in [
        "p50_over_raw_tokio",
        "p50_over_raw_actix",
        "p99_over_raw_tokio",
        "p99_over_raw_actix",
    ] {
        let r = ratios
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("ratio {name} is missing"));
        for k in ["median", "min", "max"] {
            assert!(r[k].is_number(), "{name}.{k}");
        }
    }
    assert_eq!(
        w3["peers"].as_array().map(Vec::len),
        Some(0),
        "no peer figure without --peers: none is quoted from elsewhere"
    );
    let targets = w3["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 2);
    for t in targets {
        assert!(["met", "missed"].contains(&t["status"].as_str().unwrap_or_default()));
    }
}

#[test]
fn bad_scale_is_bad_input() {
    let out = crate::support::common::muster()
        .args(["bench", "--workload", "W3", "--runs", "1", "--json"])
        .env("MUSTER_BENCH_SCALE", "zero")
        .output()
        .expect("muster runs");
    assert_eq!(out.status.code(), Some(2));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON error");
    assert_eq!(doc["ok"], false);
}

#[test]
fn runs_and_scale_beyond_their_limits_are_bad_input_naming_the_flag() {
    for (args, env, field) in [
        (vec!["--runs", "1000000000"], None, "--runs"),
        (vec!["--runs", "1", "--scale", "1e12"], None, "--scale"),
        (vec!["--runs", "1"], Some("1e12"), "MUSTER_BENCH_SCALE"),
    ] {
        let mut c = crate::support::common::muster();
        c.args(["bench", "--workload", "W3", "--json"]).args(&args);
        match env {
            Some(v) => c.env("MUSTER_BENCH_SCALE", v),
            None => c.env_remove("MUSTER_BENCH_SCALE"),
        };
        let out = c.output().expect("muster runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(field), "{args:?} names {field}: {text}");
    }
}

#[test]
fn quick_runs_w1_w2_w3_at_a_tenth_without_peers_with_the_durable_w2_figure() {
    let out = crate::support::common::muster()
        .args(["bench", "--quick", "--runs", "1", "--json"])
        .env_remove("MUSTER_BENCH_SCALE")
        .output()
        .expect("muster runs");
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(doc["scale"], 0.1, "--quick's own scale is reported");
    let ids: Vec<&str> = doc["workloads"]
        .as_array()
        .expect("workloads")
        .iter()
        .filter_map(|w| w["id"].as_str())
        .collect();
    assert_eq!(ids, ["W1", "W2", "W3"]);
    let w2 = &doc["workloads"][1];
    let durable = figure(w2, "muster_sqlite_relaxed_tasks_per_s");
    assert_eq!(durable["unit"], "1/s");
    assert!(durable["median"].as_f64().is_some_and(|v| v > 0.0));
    for w in doc["workloads"].as_array().expect("workloads") {
        assert_eq!(w["peers"].as_array().map(Vec::len), Some(0), "no peers");
    }
    let notes = doc["notes"].to_string();
    assert!(
        notes.contains("No guarantee is turned off"),
        "the report says what stays on: {notes}"
    );
}

#[test]
fn quick_with_peers_or_beyond_w3_is_bad_input_naming_the_flag() {
    for (args, field) in [
        (vec!["--peers"], "--peers"),
        (vec!["--peers", "rust"], "--peers"),
        (vec!["--peer", "x=/bin/true"], "--peer"),
        (vec!["--workload", "W4"], "--workload"),
    ] {
        let out = crate::support::common::muster()
            .args(["bench", "--quick", "--runs", "1", "--json"])
            .args(&args)
            .output()
            .expect("muster runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON error");
        assert_eq!(doc["ok"], false, "{args:?}");
        assert!(
            doc.to_string().contains(field),
            "{args:?} names {field}: {doc}"
        );
    }
}
