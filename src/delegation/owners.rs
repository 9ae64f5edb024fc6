//! The owner supervisor: the root's child under which every task owner lives.
//!
//! Owners are OTP `temporary` children: never restarted (a task is never run twice behind
//! its owner's back). They are started directly on the runtime's thread by `submit` and
//! entered in the owner table, so that starting one costs no mailbox hop through this
//! actor; an owner that dies before its task ended escalates the task from its `Drop`
//! (nothing is lost silently). What this actor adds is the place in the tree: it is the
//! root's last child, so a shutdown (reverse start order) cancels every live task first,
//! and they end `cancelled` before the agents they ran on stop.

use std::sync::Arc;

use actix::prelude::*;

use super::owner::Owners;
use crate::supervision::{ChildLink, Exit, StopActor};

/// The owner supervisor actor.
pub struct OwnerSupervisor {
    owners: Arc<Owners>,
    link: Option<ChildLink>,
}

impl OwnerSupervisor {
    /// The supervisor of `owners`, reporting its exit through `link`.
    pub fn new(owners: Arc<Owners>, link: ChildLink) -> Self {
        OwnerSupervisor {
            owners,
            link: Some(link),
        }
    }
}

impl Actor for OwnerSupervisor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(l) = self.link.take() {
            l.exit(Exit::Shutdown);
        }
    }
}

impl Handler<StopActor> for OwnerSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: StopActor, _: &mut Self::Context) -> Self::Result {
        let owners = self.owners.clone();
        Box::pin(
            async move { owners.cancel_all("the runtime is shutting down").await }
                .into_actor(self)
                .map(|(), _, ctx| ctx.stop()),
        )
    }
}
