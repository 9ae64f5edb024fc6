//! `muster bench --peers` / `--peer NAME=PROGRAM`: every peer runs the workload with the
//! counts muster uses, once per run, and its figures and its ratios to muster are taken
//! run by run from the same run; a peer that fails or cannot be chosen stops the bench with
//! an error naming it, never a report without it. The peer here is a small script
//! speaking the peers' protocol with canned figures (the real peers need a venv and cargo
//! builds; the ignored test runs the Rust ones). The peers' cargo projects stay out of the
//! main build. Timings are never asserted.

use crate::support::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A peer that counts its calls, logs its arguments, prints a line of noise and then its
/// JSON line: p50 = 2 x call number, p99 = 10 x call number (so each run differs).
fn fake_peer(dir: &Path, exit: i32) -> PathBuf {
    let script = dir.join("fake-peer.sh");
    let d = dir.display();
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
n=$(cat "{d}/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "{d}/count"
echo "$@" >> "{d}/calls"
echo "starting up"
if [ {exit} -ne 0 ]; then echo "the fake peer broke" >&2; exit {exit}; fi
echo "{{\"peer\":\"fake\",\"version\":\"9.9\",\"workload\":\"W3\",\"tasks\":100,\"figures\":{{\"p50_us\":$((n*2)),\"p90_us\":5,\"p99_us\":$((n*10))}}}}"
"#
        ),
    )
    .expect("write the fake peer");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

fn muster(args: &[&str]) -> std::process::Output {
    let mut c = common::muster();
    c.arg("bench").args(args).env_remove("MUSTER_BENCH_SCALE");
    common::output_within(300, c)
}

fn figure<'a>(figures: &'a Value, name: &str) -> &'a Value {
    figures
        .as_array()
        .expect("figures")
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("figure {name} is missing"))
}

fn samples(f: &Value) -> Vec<f64> {
    f["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| s.as_f64().expect("a number"))
        .collect()
}

#[test]
fn peer_figures_and_ratios_to_muster_are_taken_run_by_run_in_the_same_bench() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = fake_peer(dir.path(), 0);
    let spec = format!("fake={}", peer.display());
    let out = muster(&[
        "--workload",
        "W3",
        "--runs",
        "2",
        "--scale",
        "0.01",
        "--json",
        "--peer",
        &spec,
    ]);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let calls = std::fs::read_to_string(dir.path().join("calls")).expect("the peer ran");
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        vec!["--workload W3 --tasks 100 --warmup 5 --agents 1000 --in-flight 1000"; 2],
        "once per run, with the counts muster used at scale 0.01"
    );
    let w3 = &doc["workloads"][0];
    let peers = w3["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 1);
    let p = &peers[0];
    assert_eq!(
        (p["peer"].as_str(), p["version"].as_str()),
        (Some("fake"), Some("9.9"))
    );
    assert!(
        p["command"]
            .as_str()
            .is_some_and(|c| c.ends_with("fake-peer.sh"))
    );
    let p50 = figure(&p["figures"], "p50_us");
    assert_eq!(
        samples(p50),
        vec![2.0, 4.0],
        "one sample per run, in run order"
    );
    assert_eq!(
        (
            p50["median"].as_f64(),
            p50["min"].as_f64(),
            p50["max"].as_f64()
        ),
        (Some(3.0), Some(2.0), Some(4.0))
    );
    assert_eq!(p50["unit"], "µs");
    let ours = samples(figure(&w3["figures"], "muster_p50_us"));
    let ratio = p["ratios"]
        .as_array()
        .expect("ratios")
        .iter()
        .find(|r| r["name"] == "muster_over_peer_p50")
        .expect("the p50 ratio");
    assert_eq!(
        samples(ratio),
        vec![ours[0] / 2.0, ours[1] / 4.0],
        "muster's run-1 figure over the peer's run-1 figure, and so on"
    );
    assert_eq!(
        ratio["muster_faster"].as_bool(),
        Some(ratio["median"].as_f64().expect("median") < 1.0)
    );
    let p99 = p["ratios"]
        .as_array()
        .expect("ratios")
        .iter()
        .find(|r| r["name"] == "muster_over_peer_p99")
        .expect("the p99 ratio");
    let ours99 = samples(figure(&w3["figures"], "muster_p99_us"));
    assert_eq!(samples(p99), vec![ours99[0] / 10.0, ours99[1] / 20.0]);
}

#[test]
fn the_text_report_shows_each_peer_with_its_figures_and_ratios() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = fake_peer(dir.path(), 0);
    let out = muster(&[
        "--workload",
        "W3",
        "--runs",
        "1",
        "--scale",
        "0.01",
        "--peer",
        &format!("fake={}", peer.display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "peer fake 9.9",
        "p50_us (µs)",
        "ratio muster_over_peer_p50 (x)",
    ] {
        assert!(text.contains(needle), "{needle} in:\n{text}");
    }
}

#[test]
fn a_peer_that_fails_stops_the_bench_with_an_error_naming_it_and_its_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = fake_peer(dir.path(), 3);
    let out = muster(&[
        "--workload",
        "W3",
        "--runs",
        "2",
        "--scale",
        "0.01",
        "--json",
        "--peer",
        &format!("broken={}", peer.display()),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    assert_eq!(doc["ok"], false, "no report without the peer");
    assert_eq!(doc["details"]["peer"], "broken");
    let msg = doc["error"].as_str().expect("error");
    assert!(
        msg.contains("peer broken")
            && msg.contains("fake-peer.sh --workload W3")
            && msg.contains("the fake peer broke"),
        "{msg}"
    );
}

#[test]
fn peers_without_a_peer_workload_or_with_an_unknown_name_are_bad_input() {
    for (args, needle) in [
        (vec!["--workload", "W4", "--peers"], "W1, W2 and W3"),
        (
            vec!["--workload", "W3", "--peers", "crewai"],
            "unknown peer `crewai`",
        ),
        (
            vec!["--workload", "W3", "--peer", "noprogram"],
            "NAME=PROGRAM",
        ),
        (
            vec![
                "--workload",
                "W3",
                "--peer",
                "a=/bin/true",
                "--peer",
                "a=/bin/true",
            ],
            "already chosen",
        ),
        (
            vec![
                "--workload",
                "W3",
                "--peer",
                "a=/bin/true",
                "--peer-timeout-s",
                "0",
            ],
            "--peer-timeout-s",
        ),
    ] {
        let out = muster(&[&["--runs", "1", "--scale", "0.01", "--json"][..], &args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let doc: Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
        let msg = doc["error"].as_str().expect("error");
        assert!(msg.contains(needle), "{args:?}: {msg}");
    }
}

/// The real Rust peers, built with cargo (minutes when cold): run with
/// `cargo test --release --test bench_peers -- --ignored`.
#[test]
#[ignore = "builds graph-flow and autoagents-core with cargo"]
fn the_rust_peers_build_and_report_w1_to_w3_beside_muster() {
    let mut c = crate::support::common::muster();
    c.args([
        "bench",
        "--workload",
        "all",
        "--runs",
        "1",
        "--scale",
        "0.01",
        "--json",
        "--peers",
        "rust",
    ])
    .env_remove("MUSTER_BENCH_SCALE");
    let out = common::output_within(3_000, c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    for w in doc["workloads"].as_array().expect("workloads") {
        let names: Vec<&str> = w["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .filter_map(|p| p["peer"].as_str())
            .collect();
        let expected: &[&str] =
            if ["W1", "W2", "W3"].contains(&w["id"].as_str().unwrap_or_default()) {
                &["graph-flow", "autoagents-core"]
            } else {
                &[]
            };
        assert_eq!(names, expected, "{}", w["id"]);
        for p in w["peers"].as_array().expect("peers") {
            assert!(!p["ratios"].as_array().expect("ratios").is_empty(), "{p}");
        }
    }
}

#[test]
fn the_main_build_never_compiles_the_peers() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.args([
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
        "--offline",
    ])
    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let out = common::output_within(120, c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let packages = doc["packages"].as_array().expect("packages");
    assert!(!packages.is_empty(), "cargo metadata lists no package");
    for p in packages {
        let manifest = p["manifest_path"].as_str().expect("manifest_path");
        assert!(
            manifest.contains("/crates/") && !manifest.contains("benches/peers"),
            "the peers are not members of the workspace: {manifest}"
        );
        for t in p["targets"].as_array().expect("targets") {
            let src = t["src_path"].as_str().expect("src_path");
            assert!(
                !src.contains("benches/peers"),
                "{} would compile a peer: {src}",
                t["name"]
            );
        }
    }
    for peer in ["graph-flow", "autoagents"] {
        let manifest = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("benches/peers/rust")
            .join(peer)
            .join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).expect("the peer's manifest");
        assert!(
            text.contains("\n[workspace]\n"),
            "{} is a workspace of its own",
            manifest.display()
        );
        assert!(
            manifest.with_file_name("Cargo.lock").is_file(),
            "{peer} has its Cargo.lock"
        );
    }
}
