//! The OTP supervisor matrix, as Erlang's `supervisor_SUITE` runs it (G4): restart types ×
//! exits, each strategy's restart set, restart intensity and escalation to the parent,
//! restart backoff, shutdown order and time bound, `StartChild` / `TerminateChild`, and the
//! same behaviour end to end through [`Muster`].
//!
//! Every test runs on tokio's paused clock, and every wait is bounded in virtual time, so a
//! bug fails a test instead of hanging it and a busy machine cannot make one flaky.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use muster::journal::Event;
use muster::supervision::{
    ChildHandle, ChildInfo, ChildLink, ChildSpec, Exit, Restart, ShutdownSupervisor, StartChild,
    Strategy, Supervision, Supervisor, SupervisorHandle, TerminateChild, WhichChildren,
};
use muster::{AgentDef, AgentError, CapabilitySpec, Muster, Task, TaskStatus};
use serde_json::json;
use tokio::time::{Instant, sleep};

/// Runs `body` in an actix system on tokio's paused clock.
fn on_paused_clock<F: Future<Output = ()>>(body: F) {
    let sys = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    });
    sys.block_on(body);
}

/// Polls `check` every 10 ms of virtual time; fails the test after 60 s of virtual time.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "not within 60 s of virtual time: {what}"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

async fn children(sup: &Addr<Supervisor>) -> Vec<ChildInfo> {
    sup.send(WhichChildren).await.unwrap_or_default()
}

/// Waits (polling, at most 60 s of virtual time) until the supervisor's children satisfy
/// `pred`; returns them.
async fn wait_children(
    sup: &Addr<Supervisor>,
    what: &str,
    pred: impl Fn(&[ChildInfo]) -> bool,
) -> Vec<ChildInfo> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = children(sup).await;
        if pred(&c) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "not within 60 s of virtual time: {what}; children: {:?}",
            gens(&c)
        );
        sleep(Duration::from_millis(10)).await;
    }
}

/// `(id, generation, running)` per child, in start order.
fn gens(c: &[ChildInfo]) -> Vec<(String, u64, bool)> {
    c.iter()
        .map(|c| (c.id.clone(), c.generation, c.running))
        .collect()
}

fn all_running(c: &[ChildInfo], n: usize) -> bool {
    c.len() == n && c.iter().all(|c| c.running)
}

fn gen_of(c: &[ChildInfo], id: &str) -> Option<u64> {
    c.iter().find(|c| c.id == id).map(|c| c.generation)
}

// ---------------------------------------------------------------------------------------
// The test child: a tiny actix actor holding its `ChildLink`.

type Log = Arc<Mutex<Vec<String>>>;

#[derive(Message)]
#[rtype(result = "()")]
enum Cmd {
    /// Report this exit through the link and stop.
    Exit(Exit),
    /// Panic inside the handler (the actor dies; its link's `Drop` reports).
    Panic,
    /// Asked to stop by the supervisor.
    Shutdown,
    /// Stopped by force.
    Kill,
}

struct Worker {
    name: String,
    link: Option<ChildLink>,
    log: Log,
    /// Ignores shutdown requests.
    deaf: bool,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Cmd> for Worker {
    type Result = ();

    fn handle(&mut self, cmd: Cmd, ctx: &mut Self::Context) {
        match cmd {
            Cmd::Exit(e) => {
                if let Some(l) = self.link.take() {
                    l.exit(e);
                }
                ctx.stop();
            }
            Cmd::Panic => panic!("{} panics on purpose", self.name),
            Cmd::Shutdown if self.deaf => {}
            Cmd::Shutdown => {
                self.log.lock().unwrap().push(format!("stop {}", self.name));
                if let Some(l) = self.link.take() {
                    l.exit(Exit::Shutdown);
                }
                ctx.stop();
            }
            Cmd::Kill => ctx.stop(),
        }
    }
}

struct WorkerHandle {
    addr: Addr<Worker>,
    name: String,
    log: Log,
}

impl ChildHandle for WorkerHandle {
    fn shutdown(&mut self) {
        self.addr.do_send(Cmd::Shutdown);
    }

    fn kill(&mut self, _reason: &str) {
        self.log.lock().unwrap().push(format!("kill {}", self.name));
        self.addr.do_send(Cmd::Kill);
    }
}

/// Every worker started by the test: the shared log and the live address per child id.
#[derive(Clone, Default)]
struct Cast {
    log: Log,
    live: Arc<Mutex<HashMap<String, Addr<Worker>>>>,
    starts: Arc<Mutex<Vec<(String, Instant)>>>,
}

#[derive(Debug, Clone, Copy)]
enum How {
    Normal,
    Error,
    Panic,
}

impl Cast {
    fn spec(&self, id: &str, restart: Restart) -> ChildSpec {
        self.spec_with(id, restart, Duration::from_secs(1), false)
    }

    fn spec_with(&self, id: &str, restart: Restart, shutdown: Duration, deaf: bool) -> ChildSpec {
        let cast = self.clone();
        let key = id.to_string();
        ChildSpec::new(id, restart, shutdown, move |link: ChildLink| {
            let name = format!("{key}#{}", link.generation());
            cast.log.lock().unwrap().push(format!("start {name}"));
            cast.starts
                .lock()
                .unwrap()
                .push((name.clone(), Instant::now()));
            let addr = Worker {
                name: name.clone(),
                link: Some(link),
                log: cast.log.clone(),
                deaf,
            }
            .start();
            cast.live.lock().unwrap().insert(key.clone(), addr.clone());
            Ok(Box::new(WorkerHandle {
                addr,
                name,
                log: cast.log.clone(),
            }) as Box<dyn ChildHandle>)
        })
    }

    fn send(&self, id: &str, cmd: Cmd) {
        let addr = self.live.lock().unwrap().get(id).cloned();
        addr.unwrap_or_else(|| panic!("no child {id} was started"))
            .do_send(cmd);
    }

    fn fail(&self, id: &str, how: How) {
        self.send(
            id,
            match how {
                How::Normal => Cmd::Exit(Exit::Normal),
                How::Error => Cmd::Exit(Exit::Error("boom".into())),
                How::Panic => Cmd::Panic,
            },
        );
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn start_time(&self, name: &str) -> Option<Instant> {
        self.starts
            .lock()
            .unwrap()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| *t)
    }
}

fn settings(strategy: Strategy, intensity: u32) -> Supervision {
    Supervision {
        strategy,
        intensity,
        period: Duration::from_secs(10),
        ..Supervision::default()
    }
}

// ---------------------------------------------------------------------------------------
// {permanent, transient, temporary} × {normal, error, panic}

/// Child `a` (of the given restart type, beside a permanent `b`) exits `how`; it is
/// restarted exactly when OTP says, a temporary child is removed, and `b` is untouched.
fn restart_type_case(restart: Restart, how: How) {
    let restarted = match restart {
        Restart::Permanent => true,
        Restart::Transient => !matches!(how, How::Normal),
        Restart::Temporary => false,
    };
    on_paused_clock(async move {
        let cast = Cast::default();
        let sup = Supervisor::new("sup", settings(Strategy::OneForOne, 5))
            .child(cast.spec("a", restart))
            .child(cast.spec("b", Restart::Permanent))
            .start();
        wait_children(&sup, "both started", |c| all_running(c, 2)).await;
        cast.fail("a", how);
        if restarted {
            wait_children(&sup, "a restarted", |c| {
                gen_of(c, "a") == Some(2) && c[0].running
            })
            .await;
        } else if restart == Restart::Temporary {
            wait_children(&sup, "a removed", |c| gen_of(c, "a").is_none()).await;
        } else {
            wait_children(&sup, "a down", |c| !c[0].running).await;
        }
        // Nothing more happens later.
        sleep(Duration::from_secs(5)).await;
        let now = gens(&children(&sup).await);
        let b = ("b".to_string(), 1, true);
        let expected = match (restarted, restart) {
            (true, _) => vec![("a".to_string(), 2, true), b],
            (false, Restart::Temporary) => vec![b],
            (false, _) => vec![("a".to_string(), 1, false), b],
        };
        assert_eq!(now, expected, "{restart:?} child after a {how:?} exit");
        let mut log = vec!["start a#1", "start b#1"];
        if restarted {
            log.push("start a#2");
        }
        assert_eq!(cast.log(), log, "{restart:?} child after a {how:?} exit");
    });
}

#[test]
fn permanent_child_is_restarted_after_a_normal_exit() {
    restart_type_case(Restart::Permanent, How::Normal);
}

#[test]
fn permanent_child_is_restarted_after_an_error_exit() {
    restart_type_case(Restart::Permanent, How::Error);
}

#[test]
fn permanent_child_is_restarted_after_a_panic() {
    restart_type_case(Restart::Permanent, How::Panic);
}

#[test]
fn transient_child_is_not_restarted_after_a_normal_exit() {
    restart_type_case(Restart::Transient, How::Normal);
}

#[test]
fn transient_child_is_restarted_after_an_error_exit() {
    restart_type_case(Restart::Transient, How::Error);
}

#[test]
fn transient_child_is_restarted_after_a_panic() {
    // A panic inside an actix handler kills the actor; the `ChildLink` it held reports
    // `killed` from its `Drop`, which is abnormal, so a transient child is restarted.
    restart_type_case(Restart::Transient, How::Panic);
}

#[test]
fn temporary_child_is_removed_after_a_normal_exit() {
    restart_type_case(Restart::Temporary, How::Normal);
}

#[test]
fn temporary_child_is_removed_after_an_error_exit() {
    restart_type_case(Restart::Temporary, How::Error);
}

#[test]
fn temporary_child_is_removed_after_a_panic() {
    restart_type_case(Restart::Temporary, How::Panic);
}

// ---------------------------------------------------------------------------------------
// Strategies: the restart set.

async fn start_abc(cast: &Cast, strategy: Strategy, ids: &[&str]) -> Addr<Supervisor> {
    let mut sup = Supervisor::new("sup", settings(strategy, 5));
    for id in ids {
        sup = sup.child(cast.spec(id, Restart::Permanent));
    }
    let sup = sup.start();
    wait_children(&sup, "all started", |c| all_running(c, ids.len())).await;
    sup
}

#[test]
fn one_for_one_restarts_only_the_failed_child() {
    on_paused_clock(async {
        let cast = Cast::default();
        let sup = start_abc(&cast, Strategy::OneForOne, &["a", "b", "c"]).await;
        cast.fail("b", How::Error);
        let c = wait_children(&sup, "b restarted", |c| {
            gen_of(c, "b") == Some(2) && all_running(c, 3)
        })
        .await;
        assert_eq!(
            c.iter().map(|c| c.generation).collect::<Vec<_>>(),
            [1, 2, 1]
        );
        assert_eq!(
            cast.log(),
            ["start a#1", "start b#1", "start c#1", "start b#2"]
        );
    });
}

#[test]
fn one_for_all_stops_the_others_in_reverse_order_and_restarts_all_in_order() {
    on_paused_clock(async {
        let cast = Cast::default();
        let sup = start_abc(&cast, Strategy::OneForAll, &["a", "b", "c"]).await;
        cast.fail("b", How::Panic);
        let c = wait_children(&sup, "all restarted", |c| {
            all_running(c, 3) && c.iter().all(|c| c.generation == 2)
        })
        .await;
        assert_eq!(c.len(), 3);
        assert_eq!(
            cast.log(),
            [
                "start a#1",
                "start b#1",
                "start c#1",
                "stop c#1",
                "stop a#1",
                "start a#2",
                "start b#2",
                "start c#2"
            ]
        );
    });
}

#[test]
fn one_for_all_does_not_restart_temporary_siblings() {
    on_paused_clock(async {
        let cast = Cast::default();
        let sup = Supervisor::new("sup", settings(Strategy::OneForAll, 5))
            .child(cast.spec("a", Restart::Permanent))
            .child(cast.spec("t", Restart::Temporary))
            .child(cast.spec("c", Restart::Permanent))
            .start();
        wait_children(&sup, "all started", |c| all_running(c, 3)).await;
        cast.fail("a", How::Error);
        let c = wait_children(&sup, "a and c restarted", |c| {
            gen_of(c, "a") == Some(2) && gen_of(c, "c") == Some(2) && all_running(c, 2)
        })
        .await;
        assert_eq!(gens(&c)[0].0, "a");
        assert_eq!(
            cast.log(),
            [
                "start a#1",
                "start t#1",
                "start c#1",
                "stop c#1",
                "stop t#1",
                "start a#2",
                "start c#2"
            ]
        );
    });
}

#[test]
fn rest_for_one_restarts_the_failed_child_and_the_later_ones() {
    on_paused_clock(async {
        let cast = Cast::default();
        let sup = start_abc(&cast, Strategy::RestForOne, &["a", "b", "c", "d"]).await;
        cast.fail("b", How::Error);
        let c = wait_children(&sup, "b, c, d restarted", |c| {
            all_running(c, 4) && gen_of(c, "d") == Some(2)
        })
        .await;
        assert_eq!(
            c.iter().map(|c| c.generation).collect::<Vec<_>>(),
            [1, 2, 2, 2],
            "the earlier sibling keeps its generation"
        );
        assert_eq!(
            cast.log(),
            [
                "start a#1",
                "start b#1",
                "start c#1",
                "start d#1",
                "stop d#1",
                "stop c#1",
                "start b#2",
                "start c#2",
                "start d#2"
            ]
        );
    });
}

// ---------------------------------------------------------------------------------------
// Intensity and escalation.

type Slot = Arc<Mutex<Option<Addr<Supervisor>>>>;

/// A supervisor `inner` (intensity 2 in 10 s) with children a, b, c, as a child of another
/// supervisor.
fn inner_spec(cast: &Cast, restart: Restart, strategy: Strategy, slot: Slot) -> ChildSpec {
    let cast = cast.clone();
    ChildSpec::new("inner", restart, Duration::from_secs(5), move |link| {
        cast.log
            .lock()
            .unwrap()
            .push(format!("start inner#{}", link.generation()));
        let addr = Supervisor::new("inner", settings(strategy, 2))
            .with_parent(link)
            .child(cast.spec("a", Restart::Permanent))
            .child(cast.spec("b", Restart::Permanent))
            .child(cast.spec("c", Restart::Permanent))
            .start();
        *slot.lock().unwrap() = Some(addr.clone());
        Ok(Box::new(SupervisorHandle(addr)) as Box<dyn ChildHandle>)
    })
}

fn current(slot: &Slot) -> Option<Addr<Supervisor>> {
    slot.lock().unwrap().clone()
}

/// Fails `a` of the current inner supervisor three times (one_for_one, inside the period):
/// the third failure is past intensity 2. Returns the escalated supervisor's address.
async fn fail_a_three_times(cast: &Cast, slot: &Slot) -> Addr<Supervisor> {
    let inner = current(slot).unwrap();
    wait_children(&inner, "inner children started", |c| all_running(c, 3)).await;
    for g in 1..=2u64 {
        cast.fail("a", How::Error);
        wait_children(&inner, "a restarted", |c| {
            gen_of(c, "a") == Some(g + 1) && all_running(c, 3)
        })
        .await;
    }
    cast.fail("a", How::Error);
    inner
}

fn escalation_case(restart: Restart) {
    on_paused_clock(async move {
        let cast = Cast::default();
        let slot = Slot::default();
        let parent = Supervisor::new("parent", settings(Strategy::OneForOne, 5))
            .child(inner_spec(
                &cast,
                restart,
                Strategy::OneForOne,
                slot.clone(),
            ))
            .start();
        eventually("inner started", || current(&slot).is_some()).await;
        let first = fail_a_three_times(&cast, &slot).await;
        eventually("the escalated supervisor stopped", || !first.connected()).await;
        let restarted = restart != Restart::Temporary;
        if restarted {
            wait_children(&parent, "inner restarted by the parent", |c| {
                gen_of(c, "inner") == Some(2) && c[0].running
            })
            .await;
            let inner = current(&slot).unwrap();
            assert!(inner.connected());
            wait_children(&inner, "new inner children started", |c| {
                all_running(c, 3) && c.iter().all(|c| c.generation == 1)
            })
            .await;
        } else {
            wait_children(&parent, "temporary inner removed", |c| c.is_empty()).await;
        }
        sleep(Duration::from_secs(5)).await;
        let mut expected = vec![
            "start inner#1",
            "start a#1",
            "start b#1",
            "start c#1",
            "start a#2",
            "start a#3",
            // Past its intensity: the others stop in reverse start order.
            "stop c#1",
            "stop b#1",
        ];
        if restarted {
            expected.extend(["start inner#2", "start a#1", "start b#1", "start c#1"]);
        }
        assert_eq!(cast.log(), expected, "{restart:?} inner supervisor");
    });
}

#[test]
fn past_intensity_a_permanent_child_supervisor_escalates_and_is_restarted_by_its_parent() {
    escalation_case(Restart::Permanent);
}

#[test]
fn past_intensity_a_transient_child_supervisor_escalates_and_is_restarted_by_its_parent() {
    escalation_case(Restart::Transient);
}

#[test]
fn past_intensity_a_temporary_child_supervisor_escalates_and_is_dropped_by_its_parent() {
    escalation_case(Restart::Temporary);
}

#[test]
fn past_intensity_a_one_for_all_supervisor_stops_everything_in_reverse_and_escalates() {
    on_paused_clock(async {
        let cast = Cast::default();
        let slot = Slot::default();
        let parent = Supervisor::new("parent", settings(Strategy::OneForOne, 5))
            .child(inner_spec(
                &cast,
                Restart::Temporary,
                Strategy::OneForAll,
                slot.clone(),
            ))
            .start();
        eventually("inner started", || current(&slot).is_some()).await;
        let inner = current(&slot).unwrap();
        wait_children(&inner, "inner children", |c| all_running(c, 3)).await;
        for g in 1..=2u64 {
            cast.fail("b", How::Panic);
            wait_children(&inner, "all restarted", |c| {
                all_running(c, 3) && c.iter().all(|c| c.generation == g + 1)
            })
            .await;
        }
        cast.fail("b", How::Panic);
        wait_children(&parent, "inner dropped", |c| c.is_empty()).await;
        let log = cast.log();
        assert_eq!(
            &log[log.len() - 2..],
            ["stop c#3", "stop a#3"],
            "on escalation the running children stop in reverse start order: {log:?}"
        );
        assert_eq!(log.iter().filter(|l| l.starts_with("start")).count(), 10);
    });
}

#[test]
fn a_root_past_its_intensity_stops_its_children_and_calls_on_escalate() {
    on_paused_clock(async {
        let cast = Cast::default();
        let reports = Arc::new(Mutex::new(Vec::<String>::new()));
        let r = reports.clone();
        let root = Supervisor::new("root", settings(Strategy::OneForOne, 2))
            .on_escalate(move |report| r.lock().unwrap().push(report))
            .child(cast.spec("a", Restart::Permanent))
            .child(cast.spec("b", Restart::Permanent))
            .child(cast.spec("c", Restart::Permanent))
            .start();
        wait_children(&root, "started", |c| all_running(c, 3)).await;
        for g in 1..=2u64 {
            cast.fail("b", How::Error);
            wait_children(&root, "b restarted", |c| {
                gen_of(c, "b") == Some(g + 1) && all_running(c, 3)
            })
            .await;
        }
        cast.fail("b", How::Error);
        eventually("on_escalate called", || !reports.lock().unwrap().is_empty()).await;
        eventually("the root stopped", || !root.connected()).await;
        let reports = reports.lock().unwrap().clone();
        assert_eq!(reports.len(), 1);
        assert!(
            reports[0].contains("intensity 2") && reports[0].contains("child b"),
            "the report names the intensity and the child: {}",
            reports[0]
        );
        let log = cast.log();
        assert_eq!(&log[log.len() - 2..], ["stop c#1", "stop a#1"]);
    });
}

#[test]
fn failures_spread_wider_than_the_period_never_escalate() {
    on_paused_clock(async {
        let cast = Cast::default();
        let reports = Arc::new(Mutex::new(Vec::<String>::new()));
        let r = reports.clone();
        let root = Supervisor::new("root", settings(Strategy::OneForOne, 2))
            .on_escalate(move |report| r.lock().unwrap().push(report))
            .child(cast.spec("a", Restart::Permanent))
            .start();
        wait_children(&root, "started", |c| all_running(c, 1)).await;
        // Six failures 6 s apart: never more than two inside any 10 s window.
        for g in 1..=6u64 {
            cast.fail("a", How::Error);
            wait_children(&root, "a restarted", |c| {
                gen_of(c, "a") == Some(g + 1) && all_running(c, 1)
            })
            .await;
            sleep(Duration::from_secs(6)).await;
        }
        assert!(reports.lock().unwrap().is_empty());
        assert!(root.connected());
        assert_eq!(gen_of(&children(&root).await, "a"), Some(7));
    });
}

// ---------------------------------------------------------------------------------------
// Backoff.

#[test]
fn a_restart_waits_for_the_backoff() {
    on_paused_clock(async {
        let cast = Cast::default();
        let backoff = Duration::from_secs(5);
        let sup = Supervisor::new(
            "sup",
            Supervision {
                backoff,
                ..Supervision::default()
            },
        )
        .child(cast.spec("a", Restart::Permanent))
        .child(cast.spec("b", Restart::Permanent))
        .start();
        wait_children(&sup, "started", |c| all_running(c, 2)).await;
        let failed_at = Instant::now();
        cast.fail("a", How::Error);
        // While it waits, the supervisor still answers, and shows `a` down.
        sleep(Duration::from_secs(2)).await;
        let during = tokio::time::timeout(Duration::from_secs(1), children(&sup))
            .await
            .expect("the supervisor answers during a backoff");
        assert_eq!(
            gens(&during),
            [("a".to_string(), 1, false), ("b".to_string(), 1, true)]
        );
        wait_children(&sup, "a restarted", |c| {
            gen_of(c, "a") == Some(2) && all_running(c, 2)
        })
        .await;
        let started = cast.start_time("a#2").unwrap();
        let waited = started - failed_at;
        assert!(
            waited >= backoff && waited < backoff + Duration::from_secs(1),
            "restarted {waited:?} after the failure, backoff {backoff:?}"
        );
    });
}

#[test]
fn shutdown_during_a_backoff_does_not_restart_the_child() {
    on_paused_clock(async {
        let cast = Cast::default();
        let sup = Supervisor::new(
            "sup",
            Supervision {
                backoff: Duration::from_secs(5),
                ..Supervision::default()
            },
        )
        .child(cast.spec("a", Restart::Permanent))
        .child(cast.spec("b", Restart::Permanent))
        .start();
        wait_children(&sup, "started", |c| all_running(c, 2)).await;
        cast.fail("a", How::Error);
        sleep(Duration::from_secs(1)).await;
        tokio::time::timeout(Duration::from_secs(60), sup.send(ShutdownSupervisor))
            .await
            .expect("shutdown completes")
            .unwrap();
        sleep(Duration::from_secs(10)).await;
        assert_eq!(cast.log(), ["start a#1", "start b#1", "stop b#1"]);
    });
}

// ---------------------------------------------------------------------------------------
// Shutdown.

#[test]
fn shutdown_stops_children_in_reverse_start_order() {
    on_paused_clock(async {
        let cast = Cast::default();
        let sup = start_abc(&cast, Strategy::OneForOne, &["a", "b", "c"]).await;
        tokio::time::timeout(Duration::from_secs(60), sup.send(ShutdownSupervisor))
            .await
            .expect("shutdown completes")
            .unwrap();
        eventually("the supervisor stopped", || !sup.connected()).await;
        assert_eq!(
            cast.log(),
            [
                "start a#1",
                "start b#1",
                "start c#1",
                "stop c#1",
                "stop b#1",
                "stop a#1"
            ]
        );
    });
}

#[test]
fn a_child_that_ignores_shutdown_is_killed_after_its_shutdown_time() {
    on_paused_clock(async {
        let cast = Cast::default();
        let limit = Duration::from_secs(3);
        let sup = Supervisor::new("sup", Supervision::default())
            .child(cast.spec("a", Restart::Permanent))
            .child(cast.spec_with("b", Restart::Permanent, limit, true))
            .child(cast.spec("c", Restart::Permanent))
            .start();
        wait_children(&sup, "started", |c| all_running(c, 3)).await;
        let asked = Instant::now();
        tokio::time::timeout(Duration::from_secs(60), sup.send(ShutdownSupervisor))
            .await
            .expect("shutdown completes although b ignores it")
            .unwrap();
        let took = asked.elapsed();
        assert!(
            took >= limit && took < limit + Duration::from_secs(1),
            "b was given its shutdown time, no more: {took:?}"
        );
        // a is only asked once b is gone (children stop one at a time, in reverse).
        assert_eq!(
            cast.log(),
            [
                "start a#1",
                "start b#1",
                "start c#1",
                "stop c#1",
                "kill b#1",
                "stop a#1"
            ]
        );
    });
}

// ---------------------------------------------------------------------------------------
// StartChild / TerminateChild.

#[test]
fn start_child_with_a_duplicate_id_is_refused() {
    on_paused_clock(async {
        let cast = Cast::default();
        let sup = start_abc(&cast, Strategy::OneForOne, &["a"]).await;
        let added = sup
            .send(StartChild(cast.spec("b", Restart::Permanent)))
            .await
            .unwrap();
        assert_eq!(added, Ok(()));
        let dup = sup
            .send(StartChild(cast.spec("a", Restart::Transient)))
            .await
            .unwrap();
        assert!(
            dup.as_ref().is_err_and(|e| e.contains('a')),
            "refused: {dup:?}"
        );
        let c = wait_children(&sup, "a and b", |c| all_running(c, 2)).await;
        assert_eq!(
            gens(&c),
            [("a".to_string(), 1, true), ("b".to_string(), 1, true)]
        );
        assert_eq!(c[0].restart, Restart::Permanent, "the first `a` is kept");
        assert_eq!(cast.log(), ["start a#1", "start b#1"]);
    });
}

#[test]
fn terminate_child_stops_and_removes_one_child() {
    on_paused_clock(async {
        let cast = Cast::default();
        let sup = start_abc(&cast, Strategy::OneForAll, &["a", "b", "c"]).await;
        let done = tokio::time::timeout(
            Duration::from_secs(60),
            sup.send(TerminateChild("b".into())),
        )
        .await
        .expect("terminate completes")
        .unwrap();
        assert!(done);
        let c = children(&sup).await;
        assert_eq!(
            gens(&c),
            [("a".to_string(), 1, true), ("c".to_string(), 1, true)]
        );
        let unknown = sup.send(TerminateChild("zz".into())).await.unwrap();
        assert!(!unknown);
        // A removed child is not restarted by a later group restart.
        cast.fail("a", How::Error);
        wait_children(&sup, "a and c restarted", |c| {
            all_running(c, 2) && c.iter().all(|c| c.generation == 2)
        })
        .await;
        assert_eq!(
            cast.log(),
            [
                "start a#1",
                "start b#1",
                "start c#1",
                "stop b#1",
                "stop c#1",
                "start a#2",
                "start c#2"
            ]
        );
    });
}

// ---------------------------------------------------------------------------------------
// End to end through `Muster`.

fn flaky_and_steady(intensity: u32) -> (AgentDef, AgentDef) {
    let flaky = AgentDef::function("flaky", |input, _ctx| async move {
        if input["panic"].as_bool() == Some(true) {
            panic!("flaky panics on purpose");
        }
        Ok::<_, AgentError>(json!({"ok": true}))
    })
    .capability(CapabilitySpec::new("flaky.do", "any", "any"))
    .restart(Restart::Permanent)
    .supervision(Supervision {
        intensity,
        period: Duration::from_secs(10),
        ..Supervision::default()
    });
    let steady = AgentDef::function("steady", |input, _ctx| async move {
        Ok::<_, AgentError>(json!({"echo": input}))
    })
    .capability(CapabilitySpec::new("steady.do", "any", "any"));
    (flaky, steady)
}

async fn start_muster(intensity: u32) -> Muster {
    let (flaky, steady) = flaky_and_steady(intensity);
    Muster::builder()
        .schema("any", json!({}))
        .agent(flaky)
        .agent(steady)
        .start()
        .await
        .expect("the runtime starts")
}

fn generation(m: &Muster, id: &str) -> Option<u64> {
    m.agents()
        .into_iter()
        .find(|a| a.id == id)
        .map(|a| a.generation)
}

async fn panic_flaky(m: &Muster) {
    let task = Task::new("flaky.do", json!({"panic": true}))
        .attempts(1)
        .timeout(Duration::from_secs(5));
    let out = tokio::time::timeout(Duration::from_secs(60), m.delegate(task))
        .await
        .expect("the task ends")
        .expect("accepted");
    assert_eq!(out.status, TaskStatus::Escalated);
}

#[test]
fn an_agent_instance_that_panics_is_restarted() {
    on_paused_clock(async {
        let m = start_muster(5).await;
        let g = generation(&m, "flaky#0").expect("flaky#0 registered");
        panic_flaky(&m).await;
        eventually("flaky#0 restarted", || {
            generation(&m, "flaky#0").is_some_and(|n| n > g)
        })
        .await;
        let task = Task::new("flaky.do", json!({"panic": false})).attempts(1);
        let out = tokio::time::timeout(Duration::from_secs(60), m.delegate(task))
            .await
            .expect("the task ends")
            .unwrap();
        assert_eq!(out.status, TaskStatus::Completed);
        assert_eq!(out.output.as_deref(), Some(&json!({"ok": true})));
        let restarted = m.journal().read_after(0).into_iter().any(|r| {
            matches!(&r.event, Event::ChildRestarted { child, .. } if child.as_ref() == "flaky#0")
        });
        assert!(restarted, "the journal has the restart");
    });
}

#[test]
fn an_agent_type_past_its_intensity_drops_out_while_others_keep_serving() {
    on_paused_clock(async {
        let m = start_muster(2).await;
        for i in 0..3 {
            let g = generation(&m, "flaky#0");
            panic_flaky(&m).await;
            if i < 2 {
                eventually("flaky#0 restarted", || generation(&m, "flaky#0") > g).await;
            }
        }
        eventually("flaky dropped out of the registry", || {
            m.agents().iter().all(|a| a.agent != "flaky")
        })
        .await;
        let events: Vec<Event> = m
            .journal()
            .read_after(0)
            .into_iter()
            .map(|r| r.event)
            .collect();
        assert!(
            events.iter().any(|e| matches!(e,
                Event::SupervisorEscalated { supervisor, .. } if supervisor.as_ref() == "flaky")),
            "supervisor_escalated journaled: {events:?}"
        );
        assert!(
            events.iter().any(|e| matches!(e,
                Event::AgentDroppedOut { agent, .. } if agent.as_ref() == "flaky#0")),
            "agent_dropped_out journaled: {events:?}"
        );
        assert!(m.stopped().is_none(), "the runtime keeps running");
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            m.delegate(Task::new("steady.do", json!({"n": 1}))),
        )
        .await
        .expect("the task ends")
        .unwrap();
        assert_eq!(out.status, TaskStatus::Completed);
        assert_eq!(out.output.as_deref(), Some(&json!({"echo": {"n": 1}})));
        // Nothing serves the dropped capability any more.
        assert!(m.candidates("flaky.do", &[]).is_empty());
        tokio::time::timeout(Duration::from_secs(120), m.shutdown())
            .await
            .expect("the runtime shuts down");
    });
}

#[test]
fn a_failed_start_is_an_error_exit_that_counts_toward_intensity() {
    on_paused_clock(async {
        let reports = Arc::new(Mutex::new(Vec::<String>::new()));
        let r = reports.clone();
        let attempts = Arc::new(Mutex::new(0u32));
        let a = attempts.clone();
        let root = Supervisor::new("root", settings(Strategy::OneForOne, 2))
            .on_escalate(move |report| r.lock().unwrap().push(report))
            .child(ChildSpec::new(
                "broken",
                Restart::Transient,
                Duration::from_secs(1),
                move |link| {
                    *a.lock().unwrap() += 1;
                    drop(link);
                    Err("no such program".to_string())
                },
            ))
            .start();
        eventually("on_escalate called", || !reports.lock().unwrap().is_empty()).await;
        // The first start and two restarts; the third restart is past intensity 2.
        assert_eq!(*attempts.lock().unwrap(), 3);
        let report = reports.lock().unwrap()[0].clone();
        assert!(
            report.contains("error: start failed: no such program"),
            "the report gives the start's error, not the dropped link: {report}"
        );
        eventually("the root stopped", || !root.connected()).await;
    });
}
