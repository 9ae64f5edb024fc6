//! The provider actor: one per endpoint and model, shared by every instance (of every
//! agent type) that calls them. It owns their budgets (requests in flight, requests and
//! tokens per minute) and the server's `Retry-After`, and grants requests in arrival order
//! when the budgets allow. It makes no request itself and never retries: an agent holds a
//! [`Permit`] while its request runs, and a failed request fails the attempt, which the
//! task's owner journals and reassigns (the provider only makes the next one wait).
//!
//! It runs supervised (a child of the runtime's agents supervisor, started when the first
//! agent type using it registers) and is reached through a
//! [`Named`](muster_core::supervision::Named) handle, so a restart replaces it without the
//! agents noticing; a restarted provider starts with fresh budgets and ignores releases of
//! grants made by the one before.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::budget::RateBudget;
use super::config::LlmLimits;
use super::protocol::{Acquire, Grant, Release};
use muster_core::supervision::{
    ChildHandle, ChildLink, ChildSpec, Exit, Named, Restart, StopActor,
};

/// The most requests that may wait for one provider's budgets; past it a request fails at
/// once (its attempt fails and is reassigned) instead of queueing without bound.
pub const MAX_WAITING: usize = 100_000;

/// The budgets of one endpoint and model.
pub struct ProviderActor {
    limits: LlmLimits,
    generation: u64,
    in_flight: u32,
    requests: Option<RateBudget>,
    tokens: Option<RateBudget>,
    cooldown: Option<Instant>,
    waiting: VecDeque<Acquire>,
    timer: Option<(Instant, SpawnHandle)>,
    link: Option<ChildLink>,
}

impl std::fmt::Debug for ProviderActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderActor").finish_non_exhaustive()
    }
}

impl ProviderActor {
    fn new(limits: LlmLimits, generation: u64, link: Option<ChildLink>) -> Self {
        let now = Instant::now();
        ProviderActor {
            limits,
            generation,
            in_flight: 0,
            requests: limits
                .requests_per_minute
                .map(|n| RateBudget::per_minute(u64::from(n), now)),
            tokens: limits
                .tokens_per_minute
                .map(|n| RateBudget::per_minute(n, now)),
            cooldown: None,
            waiting: VecDeque::new(),
            timer: None,
            link,
        }
    }

    /// Grants waiting requests while the budgets allow; arms a timer for the first one
    /// that has to wait.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        while let Some(front) = self.waiting.front() {
            if front.reply.is_closed() {
                self.waiting.pop_front();
                continue;
            }
            if let Some(until) = self.cooldown {
                if until > now {
                    self.wake_at(until, ctx);
                    return;
                }
                self.cooldown = None;
            }
            if self.limits.concurrency.is_some_and(|c| self.in_flight >= c) {
                return; // a release pumps again
            }
            let tokens = front.tokens;
            if let Some(b) = self.requests.as_mut()
                && let Err(wait) = b.take(1, now)
            {
                self.wake_at(now + wait, ctx);
                return;
            }
            if let Some(b) = self.tokens.as_mut()
                && let Err(wait) = b.take(tokens, now)
            {
                if let Some(r) = self.requests.as_mut() {
                    r.settle(1, now);
                }
                self.wake_at(now + wait, ctx);
                return;
            }
            let Some(a) = self.waiting.pop_front() else {
                return;
            };
            let grant = Grant {
                generation: self.generation,
                tokens,
            };
            if a.reply.send(grant).is_ok() {
                self.in_flight += 1;
            } else {
                // Withdrawn between the check and the send: give the budgets back.
                self.give_back(tokens, now);
            }
        }
    }

    fn give_back(&mut self, tokens: u64, now: Instant) {
        if let Some(r) = self.requests.as_mut() {
            r.settle(1, now);
        }
        if let Some(t) = self.tokens.as_mut() {
            t.settle(i64::try_from(tokens).unwrap_or(i64::MAX), now);
        }
    }

    fn wake_at(&mut self, at: Instant, ctx: &mut Context<Self>) {
        if let Some((armed, handle)) = self.timer {
            if armed <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = at.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(wait, |act, ctx| {
            act.timer = None;
            act.pump(ctx);
        });
        self.timer = Some((at, handle));
    }
}

impl Actor for ProviderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1 << 20);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(link) = self.link.take() {
            link.exit(Exit::Shutdown);
        }
    }
}

impl Handler<Acquire> for ProviderActor {
    type Result = ();

    fn handle(&mut self, a: Acquire, ctx: &mut Self::Context) {
        if self.waiting.len() >= MAX_WAITING {
            return; // dropping `a` closes its reply: the caller fails its attempt
        }
        self.waiting.push_back(a);
        self.pump(ctx);
    }
}

impl Handler<Release> for ProviderActor {
    type Result = ();

    fn handle(&mut self, r: Release, ctx: &mut Self::Context) {
        if r.generation != self.generation {
            return;
        }
        let now = Instant::now();
        self.in_flight = self.in_flight.saturating_sub(1);
        if let (Some(spent), Some(t)) = (r.spent, self.tokens.as_mut()) {
            let charged = i64::try_from(r.charged).unwrap_or(i64::MAX);
            let spent = i64::try_from(spent).unwrap_or(i64::MAX);
            t.settle(charged.saturating_sub(spent), now);
        }
        if let Some(wait) = r.retry_after {
            let until = now + wait;
            self.cooldown = Some(self.cooldown.map_or(until, |c| c.max(until)));
        }
        self.pump(ctx);
    }
}

impl Handler<StopActor> for ProviderActor {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// What an agent holds of its provider: the actor's name, the shared HTTP client and the
/// key (endpoint and model). Cheap to clone.
#[derive(Clone)]
pub struct ProviderHandle {
    named: Named<ProviderActor>,
    client: reqwest::Client,
    key: Arc<str>,
}

impl std::fmt::Debug for ProviderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderHandle")
            .field("key", &self.key)
            .finish()
    }
}

/// A granted request; dropping it gives the slot back (with what was recorded on it), so
/// an attempt that is cancelled or times out mid-request still releases its slot.
pub struct Permit {
    named: Named<ProviderActor>,
    release: Release,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl Permit {
    /// Records the tokens the server reported.
    pub fn spent(&mut self, tokens: Option<u64>) {
        self.release.spent = tokens;
    }

    /// Records the server's `Retry-After`.
    pub fn retry_after(&mut self, wait: Option<Duration>) {
        self.release.retry_after = wait;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.named.get().do_send(self.release);
    }
}

/// A provider that cannot be reached (stopped, or its queue is full).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the provider for {key} did not grant the request: {why}")]
pub struct ProviderUnavailable {
    /// Endpoint and model.
    pub key: String,
    /// Why.
    pub why: String,
}

/// The HTTP client every provider uses: rustls with the ring provider, HTTP/1.1.
fn client() -> Result<reqwest::Client, String> {
    // Installing fails only when a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        // reqwest retries protocol NACKs by default; here a failed request fails its
        // attempt, and the task's owner decides what comes next.
        .retry(reqwest::retry::never())
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

impl ProviderHandle {
    /// A handle for `key` whose actor is not running yet: start it with
    /// [`ProviderHandle::child_spec`] under a supervisor, or [`ProviderHandle::start`].
    pub fn new(key: &str) -> Result<Self, String> {
        Ok(ProviderHandle {
            named: Named::new(),
            client: client()?,
            key: Arc::from(key),
        })
    }

    /// The child spec that runs (and restarts) this provider under a supervisor.
    pub fn child_spec(&self, limits: LlmLimits) -> ChildSpec {
        let named = self.named.clone();
        ChildSpec::new(
            format!("llm-provider {}", self.key),
            Restart::Permanent,
            Duration::from_secs(5),
            move |link| {
                let generation = link.generation();
                let addr = named.start(ProviderActor::new(limits, generation, Some(link)));
                Ok(Box::new(StopProvider(addr)) as Box<dyn ChildHandle>)
            },
        )
    }

    /// Runs the provider unsupervised on the current arbiter (tools, tests, benchmarks).
    ///
    /// # Example
    /// ```
    /// use muster_llm::{LlmLimits, ProviderHandle};
    ///
    /// #[actix::main]
    /// async fn main() {
    ///     let p = ProviderHandle::new("http://127.0.0.1:1/v1/chat/completions#m").unwrap();
    ///     p.start(LlmLimits { concurrency: Some(1), ..LlmLimits::default() });
    ///     let permit = p.acquire(10).await.unwrap();
    ///     drop(permit); // the slot goes back
    ///     assert!(p.acquire(10).await.is_ok());
    /// }
    /// ```
    pub fn start(&self, limits: LlmLimits) {
        self.named.start(ProviderActor::new(limits, 0, None));
    }

    /// Endpoint and model.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The shared HTTP client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Waits until the budgets allow one more request that may spend `tokens`.
    pub async fn acquire(&self, tokens: u64) -> Result<Permit, ProviderUnavailable> {
        let (tx, rx) = oneshot::channel();
        self.named.get().do_send(Acquire { tokens, reply: tx });
        match rx.await {
            Ok(g) => Ok(Permit {
                named: self.named.clone(),
                release: Release {
                    generation: g.generation,
                    charged: g.tokens,
                    spent: None,
                    retry_after: None,
                },
            }),
            Err(_) => Err(ProviderUnavailable {
                key: self.key.to_string(),
                why: format!("it stopped, or {MAX_WAITING} requests were waiting already"),
            }),
        }
    }
}

struct StopProvider(Addr<ProviderActor>);

impl ChildHandle for StopProvider {
    fn shutdown(&mut self) {
        self.0.do_send(StopActor);
    }

    fn kill(&mut self, _reason: &str) {
        self.0.do_send(StopActor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(concurrency: Option<u32>, rpm: Option<u32>) -> LlmLimits {
        LlmLimits {
            concurrency,
            requests_per_minute: rpm,
            tokens_per_minute: None,
        }
    }

    #[actix_rt::test]
    async fn concurrency_is_shared_and_a_dropped_permit_frees_its_slot() {
        tokio::time::pause();
        let p = ProviderHandle::new("k").unwrap();
        p.start(limits(Some(1), None));
        let first = p.acquire(1).await.unwrap();
        let second = p.acquire(1);
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), &mut second)
                .await
                .is_err(),
            "a second request waits while the only slot is held"
        );
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("granted once the slot is free")
            .unwrap();
    }

    #[actix_rt::test]
    async fn retry_after_holds_every_request_until_it_passes() {
        tokio::time::pause();
        let p = ProviderHandle::new("k").unwrap();
        p.start(limits(None, None));
        let mut permit = p.acquire(1).await.unwrap();
        permit.retry_after(Some(Duration::from_secs(1)));
        let released = Instant::now();
        drop(permit);
        let _next = tokio::time::timeout(Duration::from_secs(5), p.acquire(1))
            .await
            .expect("granted after the wait")
            .unwrap();
        assert!(released.elapsed() >= Duration::from_secs(1));
    }

    #[actix_rt::test]
    async fn requests_per_minute_spaces_requests_out() {
        tokio::time::pause();
        let p = ProviderHandle::new("k").unwrap();
        p.start(limits(None, Some(60)));
        let t0 = Instant::now();
        for _ in 0..61 {
            let _ = tokio::time::timeout(Duration::from_secs(5), p.acquire(1))
                .await
                .expect("granted")
                .unwrap();
        }
        assert!(t0.elapsed() >= Duration::from_secs(1));
    }
}
