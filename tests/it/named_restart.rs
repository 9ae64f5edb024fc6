//! A supervised actor reached through a [`Named`] handle keeps its name across restarts
//! (G4), as an OTP registered name does: whoever was given the handle before a crash
//! reaches the new incarnation after the supervisor restarts it, with no slot to refill,
//! while a raw address taken before the crash is dead.
//!
//! Runs on tokio's paused clock; every wait is bounded in virtual time.

use std::future::Future;
use std::time::Duration;

use actix::prelude::*;
use muster::supervision::{
    ChildHandle, ChildLink, ChildSpec, Named, Restart, Supervision, Supervisor, WhichChildren,
};
use tokio::time::{Instant, sleep};

fn on_paused_clock<F: Future<Output = ()>>(body: F) {
    let sys = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime")
    });
    sys.block_on(body);
}

/// A counter that can be made to panic; its link reports the exit to its supervisor.
struct Counter {
    count: u64,
    generation: u64,
    _link: ChildLink,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "(u64, u64)")]
struct Bump;

#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

impl Handler<Bump> for Counter {
    type Result = MessageResult<Bump>;

    fn handle(&mut self, _: Bump, _: &mut Self::Context) -> Self::Result {
        self.count += 1;
        MessageResult((self.generation, self.count))
    }
}

impl Handler<Crash> for Counter {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        panic!("the counter panics on purpose");
    }
}

/// The supervisor's hold on a counter: it has nothing to flush or to stop by force here.
struct Handle;

impl ChildHandle for Handle {
    fn shutdown(&mut self) {
        // A counter has nothing to flush; the supervisor's shutdown bound covers it.
    }

    fn kill(&mut self, _reason: &str) {}
}

fn supervised(named: &Named<Counter>) -> Addr<Supervisor> {
    let named = named.clone();
    Supervisor::new(
        "root",
        Supervision {
            intensity: 5,
            period: Duration::from_secs(10),
            ..Supervision::default()
        },
    )
    .child(ChildSpec::new(
        "counter",
        Restart::Permanent,
        Duration::from_secs(1),
        move |link: ChildLink| {
            let generation = link.generation();
            named.start(Counter {
                count: 0,
                generation,
                _link: link,
            });
            Ok(Box::new(Handle) as Box<dyn ChildHandle>)
        },
    ))
    .start()
}

/// Sends `Bump` through the name until the current incarnation answers (at most 60 s of
/// virtual time): a restart in progress shows as a closed mailbox for a moment.
async fn bump_through(named: &Named<Counter>) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(answer) = named.get().send(Bump).await {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "the named counter did not answer within 60 s of virtual time"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn a_handle_given_before_a_crash_reaches_the_restarted_actor() {
    on_paused_clock(async {
        let named: Named<Counter> = Named::new();
        // The handle a client was given at construction, before anything ran.
        let client = named.clone();
        let sup = supervised(&named);

        assert_eq!(bump_through(&client).await, (1, 1));
        assert_eq!(bump_through(&client).await, (1, 2));

        let before_crash = client.get();
        before_crash.do_send(Crash);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let children = sup.send(WhichChildren).await.unwrap_or_default();
            if children.iter().any(|c| c.generation == 2 && c.running) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the counter was not restarted within 60 s of virtual time: {children:?}"
            );
            sleep(Duration::from_millis(10)).await;
        }

        // The new incarnation answers through the same name, with fresh state.
        assert_eq!(bump_through(&client).await, (2, 1));
        // The address taken before the crash is dead: only the name survives restarts.
        assert!(!before_crash.connected());
        assert!(before_crash.send(Bump).await.is_err());
    });
}

#[test]
fn messages_sent_before_the_first_start_are_delivered_once_it_runs() {
    on_paused_clock(async {
        let named: Named<Counter> = Named::new();
        // The mailbox exists before the actor: a message queued now is not lost.
        let early = named.get().send(Bump);
        let _sup = supervised(&named);
        let answer = tokio::time::timeout(Duration::from_secs(60), early)
            .await
            .expect("the queued message was answered within 60 s of virtual time")
            .expect("the first incarnation received the queued message");
        assert_eq!(answer, (1, 1));
    });
}
