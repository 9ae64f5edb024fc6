//! A capability's line: the owners waiting for a slot while every capable instance is at
//! its bound ([`Line`]), and a waiter's place in it ([`LinePlace`]).
//!
//! A freed slot is offered to the first waiter still waiting, as a hop count (how many
//! waiters were offered it before). A place owns the wake it is sent until its owner
//! takes it: one that is dropped untaken (its owner stopped, looked again on its
//! backstop, or the message carrying it never arrived) passes the wake on to the next in
//! line, so no freed slot is left unoffered. It must not decide who gets the slot: the
//! load orders ([`load_order`](super::load_order)) do.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// The owners waiting for a slot of one capability, first come first woken; each is sent
/// how many waiters were offered this slot before it (see [`Orders::front_or_wait`](super::load_order::Orders::front_or_wait)).
#[derive(Debug, Default)]
pub(crate) struct Line {
    pub(super) waiters: Mutex<VecDeque<oneshot::Sender<u32>>>,
    /// Waiters in `waiters` plus those looking before they join (read without the lock, so
    /// that a freed slot costs no lock while nobody waits).
    pub(super) count: AtomicUsize,
}

impl Line {
    /// Wakes up to `n` waiters still waiting (those gone are dropped on the way), each
    /// sent `hops`.
    pub(super) fn wake(&self, n: usize, hops: u32) {
        if n > 0 && self.count.load(Ordering::SeqCst) > 0 {
            self.wake_locked(&mut self.waiters.lock(), n, hops);
        }
    }

    pub(super) fn wake_locked(
        &self,
        w: &mut VecDeque<oneshot::Sender<u32>>,
        mut n: usize,
        hops: u32,
    ) {
        while n > 0 {
            let Some(s) = w.pop_front() else {
                return;
            };
            self.count.fetch_sub(1, Ordering::SeqCst);
            if s.send(hops).is_ok() {
                n -= 1;
            }
        }
    }

    /// Wakes every waiter.
    pub(super) fn wake_all(&self) {
        if self.count.load(Ordering::SeqCst) > 0 {
            let mut w = self.waiters.lock();
            let n = w.len();
            self.wake_locked(&mut w, n, 0);
        }
    }

    /// Whether owners wait in line (those gone at its head are dropped first).
    pub(super) fn has_waiters(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0 && self.has_waiters_locked(&mut self.waiters.lock())
    }

    pub(super) fn has_waiters_locked(&self, w: &mut VecDeque<oneshot::Sender<u32>>) -> bool {
        while w.front().is_some_and(|s| s.is_closed()) {
            w.pop_front();
            self.count.fetch_sub(1, Ordering::SeqCst);
        }
        !w.is_empty()
    }
}

/// A waiter's place in a capability's line and the wake it is sent: the one owner of a
/// freed slot on its way to an owner. Dropped with a wake it did not [take](Self::take),
/// it passes the wake on to the next in line.
pub(crate) struct LinePlace {
    rx: oneshot::Receiver<u32>,
    /// The wake received and not yet taken (its hop count).
    hops: Option<u32>,
    line: Arc<Line>,
}

impl LinePlace {
    /// A place in `line`, and the sender that joins the line for it.
    pub(super) fn new(line: Arc<Line>) -> (oneshot::Sender<u32>, Self) {
        let (tx, rx) = oneshot::channel();
        let place = LinePlace {
            rx,
            hops: None,
            line,
        };
        (tx, place)
    }

    /// Waits for a wake, at most `backstop`. A wake that arrives as the backstop fires
    /// is passed on at once: the place then holds none, and is sent none later.
    pub(crate) async fn woken(&mut self, backstop: Duration) {
        tokio::select! {
            r = &mut self.rx => self.hops = r.ok(),
            _ = tokio::time::sleep(backstop) => {
                self.rx.close();
                if let Ok(hops) = self.rx.try_recv() {
                    self.line.wake(1, hops);
                }
            }
        }
    }

    /// Takes the wake (it is no longer passed on when the place drops).
    pub(crate) fn take(&mut self) -> Option<u32> {
        self.hops.take()
    }
}

impl Drop for LinePlace {
    fn drop(&mut self) {
        if let Some(hops) = self.hops.take().or_else(|| self.rx.try_recv().ok()) {
            self.line.wake(1, hops);
        }
    }
}
