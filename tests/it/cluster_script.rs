//! `scripts/cluster.sh` end to end: a real nats-server (or a JetStream cluster of three,
//! `--nats-servers 3`), a control node and two worker processes on this machine run the
//! code-review example, and every process the script started is gone when it exits.
//! Bounded: the script is stopped (SIGTERM, then its process is killed) if it has not
//! finished within 180 s.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs the script with `args` (and `--workers 2 --json`); its stderr and the run's
/// document, after checking that it exited 0, that every step ran on a worker and that
/// the `processes` pids it names as stopped are gone.
fn run_script(args: &[&str], processes: usize) -> (String, Value) {
    let out = script(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("the run's JSON document");
    assert_eq!(doc["status"], "completed", "{doc:#}");
    let steps = doc["steps"].as_array().cloned().unwrap_or_default();
    assert!(!steps.is_empty(), "{doc:#}");
    for s in &steps {
        let owner = s["agent"].as_str().unwrap_or_default();
        assert!(
            owner.ends_with("@worker-1") || owner.ends_with("@worker-2"),
            "every step ran on a worker: {s:#}"
        );
    }
    // It says how many of the run's steps each worker ran: all of them, between the two.
    let per = stderr
        .lines()
        .find_map(|l| {
            l.split_once("steps per worker: ")
                .map(|(_, v)| v.to_string())
        })
        .unwrap_or_else(|| panic!("the script counts the steps per worker:\n{stderr}"));
    let counts: Vec<(String, usize)> = per
        .split(", ")
        .filter_map(|p| p.split_once(' '))
        .map(|(w, n)| (w.to_string(), n.parse().unwrap_or(usize::MAX)))
        .collect();
    assert_eq!(
        counts.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(),
        ["worker-1", "worker-2"],
        "{per}"
    );
    assert_eq!(
        counts.iter().map(|(_, n)| *n).sum::<usize>(),
        steps.len(),
        "{per}"
    );
    // The script names the pids it started and stopped; none of them is alive.
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("stopped {processes} processes")))
        .unwrap_or_else(|| panic!("the script says what it stopped:\n{stderr}"));
    let pids = pids_in(line, "(pids ");
    assert_eq!(pids.len(), processes, "{line}");
    all_gone(&pids, &stderr);
    (stderr, doc)
}

/// The pids listed after `marker` up to the closing parenthesis.
fn pids_in(line: &str, marker: &str) -> Vec<i32> {
    line.rsplit_once(marker)
        .map(|(_, p)| p.split(')').next().unwrap_or_default())
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Asserts that no process of `pids` is alive.
fn all_gone(pids: &[i32], stderr: &str) {
    for pid in pids {
        // SAFETY: signal 0 only checks whether the pid exists.
        let alive = unsafe { libc::kill(*pid, 0) } == 0;
        assert!(!alive, "pid {pid} outlived the script:\n{stderr}");
    }
}

/// Runs the script with `args` (and `--workers 2 --json`), stopping it when it has not
/// finished within 180 s; its output.
fn script(args: &[&str]) -> std::process::Output {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(root.join("scripts/cluster.sh"))
        .args(["--workers", "2", "--json"])
        .args(args)
        .current_dir(root)
        .env("MUSTER_BIN", env!("CARGO_BIN_EXE_muster"))
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("scripts/cluster.sh starts");
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().expect("waitable").is_none() {
        if Instant::now() > deadline {
            // SAFETY: kill(2) on our own unreaped child; its trap stops what it started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let out = child.wait_with_output().expect("the script exits");
            panic!(
                "scripts/cluster.sh did not finish within 180 s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("the script's output")
}

#[test]
fn the_cluster_script_runs_the_code_review_example_on_its_workers_and_stops_every_process_it_started()
 {
    run_script(&[], 4);
}

#[test]
fn the_cluster_script_with_three_nats_servers_runs_the_example_on_three_replicas() {
    // No other multi-server cluster of this test binary is up meanwhile.
    let _gate = crate::support::cluster::cluster_gate();
    let (stderr, _) = run_script(&["--nats-servers", "3"], 6);
    for i in 1..=3 {
        assert!(
            stderr.contains(&format!("nats-server nats-{i} (pid ")),
            "server nats-{i} is named:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("JetStream cluster muster-local-")
            && stderr.contains(": 3 servers, routes"),
        "the cluster has a name of its own: {stderr}"
    );
    assert!(
        stderr.contains("buckets and journal stream: 3 replicas (MUSTER_JOURNAL 3, muster_agents 3, muster_contracts 3, muster_controls 3, muster_runs 3)"),
        "{stderr}"
    );
}

#[test]
fn the_cluster_script_stops_the_servers_of_each_failed_start_by_pid_and_shows_their_log_tails() {
    let _gate = crate::support::cluster::cluster_gate();
    // nats-1's client port (`--nats-port`) is held here: every attempt fails.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = held.local_addr().expect("its address").port().to_string();
    let out = script(&["--nats-servers", "3", "--nats-port", &port]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    for attempt in 1..=3 {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("attempt {attempt} of 3 to start NATS failed")))
            .unwrap_or_else(|| panic!("attempt {attempt} is named:\n{stderr}"));
        assert!(line.contains("nats-1 exited"), "{line}");
        let pids = pids_in(line, "(pids ");
        assert_eq!(pids.len(), 3, "{line}");
        all_gone(&pids, &stderr);
    }
    assert!(
        stderr.contains("address already in use"),
        "the log tails say why:\n{stderr}"
    );
    assert!(
        stderr.contains("NATS did not start in 3 attempts"),
        "{stderr}"
    );
    drop(held);
}
