//! The router actor: serves [`Route`] for envelopes sent to the runtime from another
//! thread (on the runtime's own thread, `Muster::send` runs the same routing inline).

use actix::prelude::*;

use super::protocol::Route;
use super::router::{Router, route};
use crate::messaging::DeliveryFailure;
use crate::supervision::{ChildLink, Exit, StopActor};

/// The router actor.
pub(crate) struct RouterActor {
    router: Router,
    link: Option<ChildLink>,
}

impl std::fmt::Debug for RouterActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterActor")
            .field("router", &self.router)
            .finish_non_exhaustive()
    }
}

impl RouterActor {
    /// A router actor over `router`, reporting its exit through `link`.
    pub(crate) fn new(router: Router, link: ChildLink) -> Self {
        RouterActor {
            router,
            link: Some(link),
        }
    }
}

impl Handler<StopActor> for RouterActor {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1 << 20);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(l) = self.link.take() {
            l.exit(Exit::Shutdown);
        }
    }
}

impl Handler<Route> for RouterActor {
    type Result = ResponseFuture<Result<crate::messaging::Envelope, DeliveryFailure>>;

    fn handle(&mut self, m: Route, _: &mut Self::Context) -> Self::Result {
        let router = self.router.clone();
        Box::pin(async move { route(router, m.envelope, m.wait).await })
    }
}
