//! Exactly-once effects across SIGKILL (issue 26): `examples/refunds` run by the real
//! binary, killed with SIGKILL at a point drawn uniformly over the length of a run, then
//! finished with `muster resume`. With the effect ledger and keys (the example as shipped),
//! the payment service performs exactly one refund per order in every trial. With both
//! turned off (`REFUNDS_UNSAFE=1`, the agent a naive program would be) the same trials,
//! at the same kill points, refund some orders twice: the check can fail.
//!
//! Trials run several at a time (each on its own journal and its own orders, against one
//! payment service), so the test takes a bounded wall time on a busy machine. Every wait
//! is bounded; no timing is asserted (a kill point is drawn from the measured length of
//! an unkilled run, and where it lands only moves refunds between "done", "unknown" and
//! "not started", all of which must come out once).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use muster::journal::Event;
use muster::journal::sqlite::read_journal;
use serde_json::{Value, json};

use crate::support::cluster::http_get;
use crate::support::common::{muster_cmd, output_within};

/// Trials per mode.
const TRIALS: usize = 200;
/// Trials running at once.
const LANES: usize = 8;
/// Orders per run.
const ORDERS: usize = 3;
/// The agent's bookkeeping after each refund, ms (the window a kill leaves "unknown").
const WORK_MS: &str = "100";

/// The example's payment service on a port of its own, stopped by pid when dropped.
struct Payments {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Payments {
    fn start() -> Payments {
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let child = Command::new("python3")
            .args(["examples/refunds/payments.py", "--port", "0", "--port-file"])
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 starts the payment service");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "the payment service did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Payments {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Refunds performed per order.
    fn by_order(&self) -> serde_json::Map<String, Value> {
        let (code, body) = http_get(self.port, "/stats").expect("the payment service answers");
        assert_eq!(code, 200, "{body}");
        let stats: Value = serde_json::from_str(&body).expect("stats are JSON");
        stats["by_order"].as_object().cloned().unwrap_or_default()
    }
}

impl Drop for Payments {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The input of trial `trial` of `mode`: orders no other trial has.
fn orders(mode: &str, trial: usize) -> Value {
    let orders: Vec<Value> = (0..ORDERS)
        .map(|k| json!({"id": format!("{mode}-{trial}-{k}"), "amount_cents": 100 + k}))
        .collect();
    json!({ "orders": orders })
}

/// `muster ARGS` with the example's agent pointed at `url`.
fn muster(url: &str, unsafe_mode: bool, args: &[&str]) -> Command {
    let mut cmd = muster_cmd(Path::new("."));
    cmd.args(args)
        .env("REFUNDS_PAYMENTS_URL", url)
        .env("REFUNDS_WORK_MS", WORK_MS)
        .env("REFUNDS_UNSAFE", if unsafe_mode { "1" } else { "0" });
    cmd
}

/// Runs the example on `journal`, SIGKILLs it after `kill_after` (unless it ended first),
/// then finishes what it left with `muster resume` (or runs it again when it was killed
/// before its run started).
fn trial(url: &str, unsafe_mode: bool, input: &Value, journal: &Path, kill_after: Duration) {
    let j = journal.to_str().expect("utf-8 path");
    let input = input.to_string();
    let mut run = muster(
        url,
        unsafe_mode,
        &[
            "run",
            "examples/refunds/workflow.toml",
            "--input",
            &input,
            "--journal",
            j,
            "--shards",
            "1",
        ],
    );
    let mut child = run
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("muster run starts");
    let until = Instant::now() + kill_after;
    while Instant::now() < until {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5).min(until - Instant::now()));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    let started = read_journal(journal, 0)
        .map(|records| {
            records
                .iter()
                .any(|r| matches!(r.event, Event::RunStarted { .. }))
        })
        .unwrap_or(false);
    let finish = if started {
        muster(
            url,
            unsafe_mode,
            &["resume", "--journal", j, "--shards", "1"],
        )
    } else {
        // Killed before its run started: nothing was done, and a user runs it again.
        let mut again = muster(
            url,
            unsafe_mode,
            &["run", "examples/refunds/workflow.toml", "--input", &input],
        );
        again.args(["--journal", j, "--shards", "1"]);
        again
    };
    let out = output_within(180, finish);
    assert!(
        out.status.success(),
        "finishing trial {} failed: {}\n{}",
        journal.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `TRIALS` trials of `mode` at the kill points `kills`, `LANES` at a time.
fn trials(payments: &Payments, unsafe_mode: bool, kills: &[Duration], dir: &Path) {
    let mode = if unsafe_mode { "unsafe" } else { "safe" };
    let next = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..LANES {
            let next = next.clone();
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= kills.len() {
                        break;
                    }
                    let journal = dir.join(format!("{mode}-{i}.db"));
                    trial(
                        &payments.url(),
                        unsafe_mode,
                        &orders(mode, i),
                        &journal,
                        kills[i],
                    );
                }
            });
        }
    });
}

/// Uniform draws in `0..bound` from a fixed seed (xorshift64*): the same kill points for
/// both modes, and on every run of the test.
fn kill_points(bound: Duration, n: usize) -> Vec<Duration> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
            bound.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

#[test]
fn every_order_is_refunded_once_across_sigkill_and_resume_and_twice_without_the_ledger() {
    let payments = Payments::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // The length of an unkilled trial on this machine now (a run, then the `muster
    // resume` that finds nothing to do), with as many at once as the trials have (their
    // mean): kill points are drawn over it, so a few land after the run ended.
    let lengths: Vec<Duration> = std::thread::scope(|s| {
        let lanes: Vec<_> = (0..LANES)
            .map(|lane| {
                let (payments, dir) = (&payments, dir.path());
                s.spawn(move || {
                    let t0 = Instant::now();
                    trial(
                        &payments.url(),
                        false,
                        &orders("baseline", lane),
                        &dir.join(format!("baseline-{lane}.db")),
                        Duration::from_secs(120),
                    );
                    t0.elapsed()
                })
            })
            .collect();
        lanes
            .into_iter()
            .map(|l| l.join().expect("a baseline run"))
            .collect()
    });
    let length = lengths.iter().sum::<Duration>() / LANES as u32;
    let kills = kill_points(length, TRIALS);

    trials(&payments, false, &kills, dir.path());
    let by_order = payments.by_order();
    let mut wrong = Vec::new();
    for i in 0..TRIALS {
        for k in 0..ORDERS {
            let id = format!("safe-{i}-{k}");
            let n = by_order.get(&id).and_then(Value::as_u64).unwrap_or(0);
            if n != 1 {
                wrong.push(format!("{id}: refunded {n} times"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "with the ledger and keys, {} of {} orders were not refunded exactly once: {:?}",
        wrong.len(),
        TRIALS * ORDERS,
        &wrong[..wrong.len().min(20)]
    );

    trials(&payments, true, &kills, dir.path());
    let by_order = payments.by_order();
    let (mut refunded, mut duplicates, mut trials_with_duplicates) = (0, 0, 0);
    for i in 0..TRIALS {
        let mut dup_here = 0;
        for k in 0..ORDERS {
            let n = by_order
                .get(&format!("unsafe-{i}-{k}"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            assert!(n >= 1, "unsafe-{i}-{k} was never refunded");
            refunded += n;
            dup_here += n - 1;
        }
        duplicates += dup_here;
        trials_with_duplicates += usize::from(dup_here > 0);
    }
    eprintln!(
        "refunds: run length {length:?}; safe: {} orders, {} refunds, 0 duplicates; \
         unsafe: {refunded} refunds for {} orders, {duplicates} duplicates in \
         {trials_with_duplicates} of {TRIALS} trials",
        TRIALS * ORDERS,
        TRIALS * ORDERS,
        TRIALS * ORDERS
    );
    assert!(
        duplicates > 0,
        "without the ledger and keys no trial refunded an order twice: the trials do not \
         exercise the window between a refund and the task's result"
    );
}
