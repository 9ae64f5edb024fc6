//! Named actors: one stable handle to a supervised actor that restarts replace, as OTP's
//! registered names are. Whoever needs the registry or the router is given a [`Named`] at
//! start and reaches the current incarnation through it; the child's start function is
//! the only writer.

use std::sync::Arc;

use actix::dev::channel::{AddressReceiver, channel};
use actix::prelude::*;
use parking_lot::{Mutex, RwLock};

/// The current address of a supervised actor.
///
/// Its first address exists before the actor runs (the mailbox is made first), so a
/// handle can be given to every actor that needs it at construction, with no slot to fill
/// later. [`Named::start`] runs the actor on that mailbox the first time and on a fresh
/// one at every restart, replacing the address.
///
/// # Example
/// ```
/// use actix::prelude::*;
/// use muster_core::supervision::Named;
///
/// struct Ping;
/// impl Actor for Ping { type Context = Context<Self>; }
///
/// #[actix::main]
/// async fn main() {
///     let named: Named<Ping> = Named::new();
///     let before = named.get();          // usable before the actor starts
///     let running = named.start(Ping);
///     assert!(before.connected() && running.connected());
/// }
/// ```
pub struct Named<A: Actor<Context = Context<A>>> {
    inner: Arc<Inner<A>>,
}

struct Inner<A: Actor<Context = Context<A>>> {
    addr: RwLock<Addr<A>>,
    first: Mutex<Option<AddressReceiver<A>>>,
}

impl<A: Actor<Context = Context<A>>> Clone for Named<A> {
    fn clone(&self) -> Self {
        Named {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Actor<Context = Context<A>>> std::fmt::Debug for Named<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Named")
            .field("connected", &self.get().connected())
            .finish()
    }
}

impl<A: Actor<Context = Context<A>>> Default for Named<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Actor<Context = Context<A>>> Named<A> {
    /// A name whose first mailbox exists already; the actor runs on it at [`Named::start`].
    pub fn new() -> Self {
        // actix's default mailbox bound; actors raise it in `started` where they need to.
        let (tx, rx) = channel::<A>(16);
        Named {
            inner: Arc::new(Inner {
                addr: RwLock::new(Addr::new(tx)),
                first: Mutex::new(Some(rx)),
            }),
        }
    }

    /// The current incarnation's address.
    pub fn get(&self) -> Addr<A> {
        self.inner.addr.read().clone()
    }

    /// Starts `actor` under this name on the current arbiter: on the reserved mailbox the
    /// first time, on a fresh one after (a restart), which becomes the name's address.
    pub fn start(&self, actor: A) -> Addr<A> {
        let first = self.inner.first.lock().take();
        let addr = match first {
            Some(rx) => Context::with_receiver(rx).run(actor),
            None => actor.start(),
        };
        *self.inner.addr.write() = addr.clone();
        addr
    }
}
