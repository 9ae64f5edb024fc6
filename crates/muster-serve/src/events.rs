//! `GET /v1/events`: the journal as server-sent events, live, resumable from a sequence
//! number, optionally kept to one run.
//!
//! ```text
//!  subscribe to the tap ─▶ replay the journal after N ─▶ live records (each once written)
//!                               ▲                              │ lagged, or a gap
//!                               └──── re-read after the last sent ◀┘
//! ```
//!
//! It owns the stream's order guarantee: every record after the resume point is sent once,
//! in sequence order, with no gap (a record missed live is re-read from the journal). It
//! must not buffer without bound: the tap's channel is bounded, and the number of streams
//! is capped by [`Streams`].

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::response::sse::Event as SseEvent;
use futures::Stream;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use muster_core::journal::{Event, Journal, Record, TapJournal};

/// The most event streams open at once, by default.
pub const MAX_STREAMS: usize = 256;

/// Counts open streams against a cap.
///
/// # Example
/// ```
/// use muster_serve::Streams;
///
/// let s = Streams::new(1);
/// let first = s.open().unwrap();
/// assert!(s.open().is_none());
/// drop(first);
/// assert!(s.open().is_some());
/// ```
#[derive(Debug)]
pub struct Streams {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One open stream; closing it (dropping) frees its place.
#[derive(Debug)]
pub struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Streams {
    /// A cap of `max` streams.
    pub fn new(max: usize) -> Self {
        Streams {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A place for one more stream, if there is one.
    pub fn open(&self) -> Option<StreamSlot> {
        let mut n = self.open.load(Ordering::Acquire);
        loop {
            if n >= self.max {
                return None;
            }
            match self
                .open
                .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(StreamSlot(self.open.clone())),
                Err(now) => n = now,
            }
        }
    }
}

/// Which records a stream keeps.
#[derive(Debug)]
struct Filter {
    run: Option<Uuid>,
    /// The run's tasks seen so far.
    tasks: HashSet<Uuid>,
}

impl Filter {
    fn keep(&mut self, e: &Event) -> bool {
        let Some(run) = self.run else { return true };
        match e {
            Event::RunStarted { run: r, .. }
            | Event::StepEntered { run: r, .. }
            | Event::StepCompleted { run: r, .. }
            | Event::StepFailed { run: r, .. }
            | Event::GateWaiting { run: r, .. }
            | Event::GateDecided { run: r, .. }
            | Event::RunEnded { run: r, .. }
            | Event::RunTakenOver { run: r, .. }
            | Event::RetryStarted { run: r, .. }
            | Event::RunRetried { run: r, .. } => *r == run,
            Event::TaskSubmitted {
                task, correlation, ..
            } => {
                if *correlation == run {
                    self.tasks.insert(*task);
                    true
                } else {
                    false
                }
            }
            Event::EnvelopeRouted { envelope, .. } | Event::EnvelopeFailed { envelope, .. } => {
                envelope.correlation_id == run
            }
            other => other.task().is_some_and(|t| self.tasks.contains(&t)),
        }
    }
}

struct State {
    journal: Arc<TapJournal>,
    live: broadcast::Receiver<Arc<Record>>,
    watermark: Option<watch::Receiver<muster_core::journal::Watermark>>,
    stop: watch::Receiver<bool>,
    /// The last sequence number handled (sent or filtered out).
    last: u64,
    /// Records read from the journal, not handled yet.
    backlog: VecDeque<Record>,
    /// Set while the stream reads the journal (from its start point, or after a lag)
    /// rather than the live feed: a batch of [`REPLAY_BATCH`] records at a time, so a
    /// client resuming from 0 on a journal of millions never has them all in memory.
    catching_up: bool,
    filter: Filter,
    /// Records up to here only feed the filter (the resume point of a filtered stream).
    quiet_until: u64,
    _slot: StreamSlot,
}

/// Records read from the journal at a time while a stream catches up.
pub const REPLAY_BATCH: usize = 1024;

async fn read_batch(journal: &Arc<TapJournal>, after: u64) -> VecDeque<Record> {
    let j = journal.clone();
    tokio::task::spawn_blocking(move || j.read_batch(after, REPLAY_BATCH))
        .await
        .unwrap_or_default()
        .into()
}

fn sse(r: &Record) -> SseEvent {
    let data = serde_json::to_string(r).unwrap_or_default();
    SseEvent::default()
        .id(r.seq.to_string())
        .event(r.event.kind())
        .data(data)
}

/// The first event of a stream asked to start now (`?after=now`): `event: start`, its id
/// the sequence number the stream starts after, its data `{"after": N}`. A client that
/// reconnects sends that id (or a later one) as `Last-Event-ID` and misses nothing.
pub fn start_event(after: u64) -> SseEvent {
    SseEvent::default()
        .id(after.to_string())
        .event("start")
        .data(format!("{{\"after\":{after}}}"))
}

/// The event stream after sequence number `after`, kept to `run` if given; it ends when
/// `stop` turns true or the journal's tap closes.
pub fn stream(
    journal: Arc<TapJournal>,
    after: u64,
    run: Option<Uuid>,
    stop: watch::Receiver<bool>,
    slot: StreamSlot,
) -> impl Stream<Item = Result<SseEvent, std::convert::Infallible>> + Send {
    // Subscribed before the journal is read: nothing appended in between is missed.
    let live = journal.subscribe();
    let watermark = journal.watermark();
    let state = State {
        journal,
        live,
        watermark,
        stop,
        // A filtered stream reads from the start to learn the run's tasks.
        last: if run.is_some() { 0 } else { after },
        backlog: VecDeque::new(),
        catching_up: true,
        filter: Filter {
            run,
            tasks: HashSet::new(),
        },
        quiet_until: after,
        _slot: slot,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if *st.stop.borrow() {
                return None;
            }
            if st.backlog.is_empty() && st.catching_up {
                st.backlog = read_batch(&st.journal, st.last).await;
                st.catching_up = !st.backlog.is_empty();
                continue;
            }
            if let Some(r) = st.backlog.pop_front() {
                if r.seq <= st.last {
                    continue;
                }
                st.last = r.seq;
                if st.filter.keep(&r.event) && r.seq > st.quiet_until {
                    return Some((Ok(sse(&r)), st));
                }
                continue;
            }
            let got = tokio::select! {
                _ = st.stop.wait_for(|s| *s) => return None,
                g = st.live.recv() => g,
            };
            match got {
                Ok(r) if r.seq <= st.last => continue,
                Ok(r) if r.seq == st.last + 1 => {
                    // Sent once written: what a client saw survives a crash of the node.
                    if let Some(w) = st.watermark.as_mut() {
                        let seq = r.seq;
                        let ok = tokio::select! {
                            _ = st.stop.wait_for(|s| *s) => return None,
                            w = w.wait_for(|w| w.covers(seq) || w.stopped) => w.is_ok_and(|w| w.covers(seq)),
                        };
                        if !ok {
                            return None;
                        }
                    }
                    st.last = r.seq;
                    if st.filter.keep(&r.event) && r.seq > st.quiet_until {
                        return Some((Ok(sse(&r)), st));
                    }
                }
                // A gap (appends from two threads broadcast out of order) or a lag: the
                // journal has what was missed.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    st.catching_up = true;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// As [`stream`], over another control node's records (`records`: its journal as the
/// cluster's journal stream holds it, in order), kept to `run`: every record of the run
/// after sequence number `after` (of that node's journal), once, in order; it ends when
/// `stop` turns true or `records` ends.
pub fn remote_stream(
    records: impl Stream<Item = Record> + Send + 'static,
    after: u64,
    run: Uuid,
    stop: watch::Receiver<bool>,
    slot: StreamSlot,
) -> impl Stream<Item = Result<SseEvent, std::convert::Infallible>> + Send {
    use futures::StreamExt;
    let mut filter = Filter {
        run: Some(run),
        tasks: HashSet::new(),
    };
    let mut last = 0u64;
    let mut stop = stop;
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    records.take_until(stopped).filter_map(move |r| {
        let _slot = &slot;
        // A record mirrored twice (its acknowledgement lost) is sent once.
        let fresh = r.seq > last;
        last = last.max(r.seq);
        let keep = fresh && filter.keep(&r.event) && r.seq > after;
        std::future::ready(keep.then(|| Ok(sse(&r))))
    })
}
