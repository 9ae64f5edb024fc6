//! OpenTelemetry traces of a runtime, built from the journal's records: a run is a trace.
//!
//! ```text
//! run {workflow}                      trace id = the run id (the correlation id)
//! └─ task {capability}                one per task of the run (a bare task: its own trace)
//!    ├─ invoke_agent {agent}          one per attempt: agent, epoch, outcome, envelope ids
//!    │  └─ chat {model}               the attempt's model calls (gen_ai.* usage)
//!    └─ stale_result {agent}          a late answer fenced by its epoch (G2), zero length
//! ```
//!
//! Every span gets its start and end from the records' timestamps, and its ids from the
//! ids in the records (the trace id is the correlation id; a span id is derived from the
//! run, task and epoch), so a run resumed by another process after a crash continues the
//! same trace, and a trace viewer searched for a run id shows what `muster inspect`
//! shows (G5). A span is exported when it ends; the spans still open are a bounded map
//! (the oldest is dropped past the cap, and counted). It must not act on what it sees.

use std::cell::Cell;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags,
    TraceId, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider, SpanExporter,
    TracerProviderBuilder,
};
use uuid::Uuid;

use super::TelemetryError;
use super::bounded::Bounded;
use muster_core::ids::splitmix64;
use muster_core::journal::{Event, Record};
use muster_core::messaging::Envelope;

/// Spans kept open at most by default ([`Traces::with_capacity`]).
pub const DEFAULT_OPEN_SPANS: usize = 10_000;
/// Events (steps, gates) kept per run span; later ones are dropped.
const MAX_EVENTS: usize = 128;
/// Longest string attribute value, in bytes (details and reasons are cut there).
const MAX_VALUE: usize = 1024;

thread_local! {
    /// The ids the next span built on this thread takes (set around each build).
    static NEXT_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Gives the span being built the ids derived from the journal (random ones otherwise).
#[derive(Debug, Default)]
struct RecordIds(RandomIdGenerator);

impl IdGenerator for RecordIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_IDS
            .with(|c| c.get())
            .map_or_else(|| self.0.new_trace_id(), |(t, _)| t)
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_IDS
            .with(|c| c.get())
            .map_or_else(|| self.0.new_span_id(), |(_, s)| s)
    }
}

/// What a span id is derived for.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Run = 1,
    Task = 2,
    Attempt = 3,
    Model = 4,
    Stale = 5,
}

/// The span id of `kind` for `id` (and `n`, an epoch): the same in every process.
fn span_id(kind: Kind, id: Uuid, n: u64) -> SpanId {
    let (hi, lo) = id.as_u64_pair();
    let v = splitmix64(splitmix64(splitmix64(kind as u64 ^ hi) ^ lo) ^ n);
    SpanId::from(v.max(1))
}

/// The trace id of a correlation id (a run id, or a bare task's id): the same 128 bits.
///
/// # Example
/// ```
/// let run = uuid::Uuid::now_v7();
/// let t = muster_telemetry::traces::trace_id(run);
/// assert_eq!(t.to_string(), run.simple().to_string()); // search a trace viewer by run id
/// ```
pub fn trace_id(correlation: Uuid) -> TraceId {
    TraceId::from(correlation.as_u128().max(1))
}

/// The span id of a run's span.
pub fn run_span_id(run: Uuid) -> SpanId {
    span_id(Kind::Run, run, 0)
}

/// The span id of a task's span.
pub fn task_span_id(task: Uuid) -> SpanId {
    span_id(Kind::Task, task, 0)
}

/// The span id of an attempt's span (a task's lease under `epoch`).
pub fn attempt_span_id(task: Uuid, epoch: u64) -> SpanId {
    span_id(Kind::Attempt, task, epoch)
}

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_VALUE {
        return s.to_string();
    }
    let mut end = MAX_VALUE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn kv(k: &'static str, v: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(k, v)
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The agent type of an instance id (`reviewer#2` → `reviewer`).
fn agent_type(instance: &str) -> &str {
    instance.split('#').next().unwrap_or(instance)
}

/// What a span still open is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Run(Uuid),
    Task(Uuid),
    Attempt(Uuid, u64),
}

/// A span not yet ended: built and exported when it ends.
#[derive(Debug)]
struct Open {
    name: String,
    trace: TraceId,
    span: SpanId,
    parent: Option<SpanId>,
    start_ms: u64,
    attrs: Vec<KeyValue>,
    events: Vec<opentelemetry::trace::Event>,
}

/// OpenTelemetry traces of a runtime: [`Traces::observe`] every journal record (the
/// [`Follower`](super::Follower) does); spans are exported as they end.
///
/// # Example
/// ```
/// use muster_core::journal::{Event, Record};
/// use muster_telemetry::Traces;
/// use opentelemetry_sdk::trace::InMemorySpanExporter;
///
/// let exporter = InMemorySpanExporter::default();
/// let mut traces = Traces::with_exporter(exporter.clone());
/// let run = uuid::Uuid::now_v7();
/// let started = Event::RunStarted {
///     run, workflow: "review".into(), file: "review.toml".into(), input: serde_json::json!({}),
/// };
/// let ended = Event::RunEnded { run, status: "completed".into(), step: "done".into(), reason: None };
/// traces.observe(&Record { seq: 1, at_ms: 1_000, event: started });
/// traces.observe(&Record { seq: 2, at_ms: 3_500, event: ended });
/// let spans = exporter.get_finished_spans().unwrap();
/// assert_eq!(spans[0].name, "run review");
/// assert_eq!(spans[0].span_context.trace_id().to_string(), run.simple().to_string());
/// ```
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    open: Bounded<Key, Open>,
    /// Task → its trace, kept after the task ends (late answers, model usage).
    traces: Bounded<Uuid, TraceId>,
    last_seq: u64,
    ended: u64,
}

impl Traces {
    /// Traces exported to `exporter` span by span as they end (a simple processor: for
    /// tests and in-memory exporters; [`Traces::from_env`] batches).
    pub fn with_exporter<E: SpanExporter + 'static>(exporter: E) -> Self {
        Self::with_provider(
            SdkTracerProvider::builder().with_simple_exporter(exporter),
            DEFAULT_OPEN_SPANS,
        )
    }

    /// Traces exported to `exporter` in batches from a background thread.
    pub fn with_batch_exporter<E: SpanExporter + 'static>(exporter: E) -> Self {
        Self::with_provider(
            SdkTracerProvider::builder().with_batch_exporter(exporter),
            DEFAULT_OPEN_SPANS,
        )
    }

    /// Keeps at most `cap` spans open (the oldest is dropped past it, see
    /// [`Traces::evicted`]).
    pub fn with_capacity(mut self, cap: usize) -> Self {
        self.open = Bounded::new(cap);
        self.traces = Bounded::new(cap);
        self
    }

    fn with_provider(builder: TracerProviderBuilder, cap: usize) -> Self {
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("muster");
        }
        let provider = builder
            .with_id_generator(RecordIds::default())
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("muster");
        Traces {
            provider,
            tracer,
            open: Bounded::new(cap),
            traces: Bounded::new(cap),
            last_seq: 0,
            ended: 0,
        }
    }

    /// Traces exported over OTLP/HTTP (protobuf) when the OpenTelemetry environment asks
    /// for it: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is
    /// set. `None` when neither is, or when `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`. The exporter reads the other standard variables
    /// (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, `OTEL_SERVICE_NAME`,
    /// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`).
    ///
    /// # Errors
    /// A variable with a value this build cannot honour (another exporter or protocol,
    /// an endpoint that is not an http(s) URL), naming the variable.
    ///
    /// # Example
    /// ```no_run
    /// // OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 muster run ...
    /// if let Some(traces) = muster_telemetry::Traces::from_env()? {
    ///     // hand it to a Follower
    /// #   drop(traces);
    /// }
    /// # Ok::<(), muster_telemetry::TelemetryError>(())
    /// ```
    pub fn from_env() -> Result<Option<Self>, TelemetryError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if let Some(v) = var("OTEL_TRACES_EXPORTER") {
            match v.trim() {
                "none" => return Ok(None),
                "otlp" => {}
                other => {
                    return Err(TelemetryError::Env {
                        var: "OTEL_TRACES_EXPORTER".into(),
                        message: format!("`{other}` is not supported: use `otlp` or `none`"),
                    });
                }
            }
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(v) = var(name)
                && v.trim() != "http/protobuf"
            {
                return Err(TelemetryError::Env {
                    var: name.into(),
                    message: format!(
                        "`{}` is not supported: this build exports `http/protobuf`",
                        v.trim()
                    ),
                });
            }
        }
        let endpoint = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .find_map(|name| var(name).map(|v| (name, v)));
        let Some((name, url)) = endpoint else {
            return Ok(None);
        };
        let url = url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.len() <= "https://".len()
        {
            return Err(TelemetryError::Env {
                var: name.into(),
                message: format!("`{url}` is not an http:// or https:// URL"),
            });
        }
        // reqwest's rustls has no provider of its own here: the same one as the LLM
        // backend's (installing fails only when one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        use opentelemetry_otlp::{Protocol, WithExportConfig};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()
            .map_err(|e| TelemetryError::Env {
                var: name.into(),
                message: format!("the OTLP exporter cannot be built: {e}"),
            })?;
        Ok(Some(Self::with_batch_exporter(exporter)))
    }

    /// The last journal sequence number observed (0: none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Spans open now (started, waiting for the record that ends them).
    pub fn open_spans(&self) -> usize {
        self.open.len()
    }

    /// Spans dropped unexported because more than the cap were open at once.
    pub fn evicted(&self) -> u64 {
        self.open.evicted()
    }

    /// Spans ended (handed to the exporter) so far.
    pub fn ended(&self) -> u64 {
        self.ended
    }

    /// Exports what the processor holds now (a batch processor's queue).
    pub fn flush(&self) -> Result<(), TelemetryError> {
        self.provider
            .force_flush()
            .map_err(|e| TelemetryError::Export(e.to_string()))
    }

    /// Exports what is pending and stops the exporter. Blocks (a batch exporter's last
    /// request): call it off the runtime's thread.
    pub fn shutdown(self) -> Result<(), TelemetryError> {
        self.provider
            .shutdown()
            .map_err(|e| TelemetryError::Export(e.to_string()))
    }

    /// Builds the spans a record starts, changes or ends. A record whose sequence number
    /// is not above the last one observed is ignored.
    pub fn observe(&mut self, r: &Record) {
        if r.seq <= self.last_seq {
            return;
        }
        self.last_seq = r.seq;
        let now = r.at_ms;
        match &r.event {
            Event::RunStarted {
                run,
                workflow,
                file,
                ..
            } => {
                let open = Open {
                    name: format!("run {workflow}"),
                    trace: trace_id(*run),
                    span: run_span_id(*run),
                    parent: None,
                    start_ms: now,
                    attrs: vec![
                        kv("muster.run.id", run.to_string()),
                        kv("muster.correlation_id", run.to_string()),
                        kv("muster.workflow.name", cut(workflow)),
                        kv("muster.workflow.file", cut(file)),
                    ],
                    events: Vec::new(),
                };
                self.start(Key::Run(*run), open);
            }
            Event::StepEntered { run, step, visit } => self.run_event(
                *run,
                now,
                "step_entered",
                vec![
                    kv("muster.step", cut(step)),
                    kv("muster.step.visit", i64::from(*visit)),
                ],
            ),
            Event::StepCompleted {
                run, step, task, ..
            } => self.run_event(
                *run,
                now,
                "step_completed",
                vec![
                    kv("muster.step", cut(step)),
                    kv("muster.task.id", task.to_string()),
                ],
            ),
            Event::StepFailed {
                run, step, reason, ..
            } => self.run_event(
                *run,
                now,
                "step_failed",
                vec![
                    kv("muster.step", cut(step)),
                    kv("muster.reason", cut(reason)),
                ],
            ),
            Event::GateWaiting {
                run,
                gate,
                question,
            } => self.run_event(
                *run,
                now,
                "gate_waiting",
                vec![
                    kv("muster.gate", cut(gate)),
                    kv("muster.gate.question", cut(question)),
                ],
            ),
            Event::GateDecided {
                run,
                gate,
                approved,
                reason,
            } => self.run_event(
                *run,
                now,
                "gate_decided",
                vec![
                    kv("muster.gate", cut(gate)),
                    kv("muster.gate.approved", *approved),
                    kv("muster.reason", cut(reason)),
                ],
            ),
            Event::RunEnded {
                run,
                status,
                step,
                reason,
            } => {
                self.resumed_run(*run, now);
                let mut attrs = vec![
                    kv("muster.run.status", cut(status)),
                    kv("muster.step", cut(step)),
                ];
                let st = match reason {
                    Some(why) => {
                        attrs.push(kv("muster.reason", cut(why)));
                        Status::error(cut(why))
                    }
                    None if status == "completed" => Status::Ok,
                    None => Status::error(cut(status)),
                };
                self.end(Key::Run(*run), now, attrs, st);
            }
            Event::TaskSubmitted {
                task,
                capability,
                correlation,
                attempts,
                timeout_ms,
                sender,
                ..
            } => {
                let trace = trace_id(*correlation);
                self.traces.insert(*task, trace);
                let mut attrs = vec![
                    kv("muster.task.id", task.to_string()),
                    kv("muster.capability", capability.to_string()),
                    kv("muster.correlation_id", correlation.to_string()),
                    kv("muster.task.attempts", i64::from(*attempts)),
                    kv("muster.task.timeout_ms", int(*timeout_ms)),
                ];
                if !sender.is_empty() {
                    attrs.push(kv("muster.task.sender", cut(sender)));
                }
                let open = Open {
                    name: format!("task {capability}"),
                    trace,
                    span: task_span_id(*task),
                    // A task of a run (or of any conversation) hangs under its span; a
                    // bare task is its own trace's root.
                    parent: (correlation != task).then(|| run_span_id(*correlation)),
                    start_ms: now,
                    attrs,
                    events: Vec::new(),
                };
                self.start(Key::Task(*task), open);
            }
            Event::LeaseGranted {
                task,
                agent,
                epoch,
                attempt,
                envelope,
                routed,
            } => {
                let open = Open {
                    name: format!("invoke_agent {}", agent_type(agent)),
                    trace: self.trace_of(*task),
                    span: attempt_span_id(*task, *epoch),
                    parent: Some(task_span_id(*task)),
                    start_ms: now,
                    attrs: vec![
                        kv("gen_ai.operation.name", "invoke_agent"),
                        kv("gen_ai.agent.name", agent_type(agent).to_string()),
                        kv("gen_ai.agent.id", agent.to_string()),
                        kv("muster.agent", agent.to_string()),
                        kv("muster.task.id", task.to_string()),
                        kv("muster.epoch", int(*epoch)),
                        kv("muster.attempt", i64::from(*attempt)),
                        kv("muster.envelope.id", envelope.to_string()),
                    ],
                    events: Vec::new(),
                };
                self.start(Key::Attempt(*task, *epoch), open);
                if let Some(envelope) = routed {
                    self.routed(envelope);
                }
            }
            Event::EnvelopeRouted { envelope, .. } => self.routed(envelope),
            Event::ModelUsage {
                task,
                agent,
                epoch,
                usage,
            } => {
                let start_ms = self
                    .open
                    .get_mut(&Key::Attempt(*task, *epoch))
                    .map_or(now, |o| o.start_ms);
                let mut attrs = vec![
                    kv("gen_ai.operation.name", "chat"),
                    kv("gen_ai.request.model", cut(&usage.model)),
                    kv("gen_ai.agent.name", agent_type(agent).to_string()),
                    kv("gen_ai.agent.id", agent.to_string()),
                    kv("muster.epoch", int(*epoch)),
                    kv("muster.model.calls", i64::from(usage.calls)),
                ];
                if let Some(n) = usage.prompt_tokens {
                    attrs.push(kv("gen_ai.usage.input_tokens", int(n)));
                }
                if let Some(n) = usage.completion_tokens {
                    attrs.push(kv("gen_ai.usage.output_tokens", int(n)));
                }
                if let Some(c) = usage.cost {
                    attrs.push(kv("muster.model.cost", c));
                }
                let open = Open {
                    name: format!("chat {}", cut(&usage.model)),
                    trace: self.trace_of(*task),
                    span: span_id(Kind::Model, *task, *epoch),
                    parent: Some(attempt_span_id(*task, *epoch)),
                    start_ms,
                    attrs,
                    events: Vec::new(),
                };
                self.emit(open, now, Vec::new(), Status::Unset);
            }
            Event::ResultAccepted { task, epoch, .. } => {
                let done = vec![kv("muster.outcome", "completed")];
                self.end(Key::Attempt(*task, *epoch), now, done.clone(), Status::Ok);
                let mut attrs = vec![kv("muster.task.status", "completed")];
                attrs.push(kv("muster.task.owner_epoch", int(*epoch)));
                self.end(Key::Task(*task), now, attrs, Status::Ok);
            }
            Event::AttemptFailed {
                task,
                epoch,
                reason,
                detail,
                ..
            } => {
                let attrs = vec![
                    kv("muster.outcome", cut(reason)),
                    kv("error.type", cut(reason)),
                    kv("muster.detail", cut(detail)),
                ];
                let st = Status::error(format!("{}: {}", cut(reason), cut(detail)));
                self.end(Key::Attempt(*task, *epoch), now, attrs, st);
            }
            Event::ResultStale {
                task,
                agent,
                epoch,
                current_epoch,
            } => {
                let open = Open {
                    name: format!("stale_result {}", agent_type(agent)),
                    trace: self.trace_of(*task),
                    span: span_id(Kind::Stale, *task, *epoch),
                    parent: Some(task_span_id(*task)),
                    start_ms: now,
                    attrs: vec![
                        kv("muster.agent", agent.to_string()),
                        kv("muster.task.id", task.to_string()),
                        kv("muster.epoch", int(*epoch)),
                        kv("muster.current_epoch", int(*current_epoch)),
                        kv("muster.outcome", "stale"),
                    ],
                    events: Vec::new(),
                };
                self.emit(open, now, Vec::new(), Status::Unset);
            }
            Event::TaskEscalated { task, to, reason } => {
                let attrs = vec![
                    kv("muster.task.status", "escalated"),
                    kv("muster.task.escalated_to", cut(to)),
                    kv("muster.reason", cut(reason)),
                ];
                self.end(Key::Task(*task), now, attrs, Status::error(cut(reason)));
            }
            Event::TaskCancelled { task, reason } => {
                let attrs = vec![
                    kv("muster.task.status", "cancelled"),
                    kv("muster.reason", cut(reason)),
                ];
                self.end(Key::Task(*task), now, attrs, Status::Unset);
            }
            Event::TaskReused { task, original, .. } => {
                let attrs = vec![
                    kv("muster.task.status", "reused"),
                    kv("muster.task.original", original.to_string()),
                ];
                self.end(Key::Task(*task), now, attrs, Status::Ok);
            }
            _ => {}
        }
    }

    /// A task's envelope was delivered (an `envelope_routed`, or the envelope a
    /// `lease_granted` carries): its attempt span gets the correlation and causation ids.
    fn routed(&mut self, envelope: &Envelope) {
        if let Some(task) = envelope.task_id {
            // A follower that missed the task's submission learns its trace here.
            let trace = trace_id(envelope.correlation_id);
            if !self.traces.contains(&task) {
                self.traces.insert(task, trace);
            }
            if let Some(o) = self.open.get_mut(&Key::Attempt(task, envelope.epoch)) {
                o.trace = trace;
                o.attrs.push(kv(
                    "muster.correlation_id",
                    envelope.correlation_id.to_string(),
                ));
                if let Some(c) = envelope.causation_id {
                    o.attrs.push(kv("muster.causation_id", c.to_string()));
                }
            }
        }
    }

    /// The trace of a task: its correlation's, or (not seen) its own id's.
    fn trace_of(&mut self, task: Uuid) -> TraceId {
        if let Some(t) = self.traces.get_mut(&task) {
            return *t;
        }
        trace_id(task)
    }

    fn start(&mut self, key: Key, open: Open) {
        // Past the cap the oldest open span is dropped unexported (counted in `evicted`).
        let _ = self.open.insert(key, open);
    }

    /// A run seen only from its middle on (resumed from a journal this follower did not
    /// read from the start): its span starts at the first record seen, with the same ids.
    fn resumed_run(&mut self, run: Uuid, now: u64) {
        if self.open.contains(&Key::Run(run)) {
            return;
        }
        let open = Open {
            name: "run".into(),
            trace: trace_id(run),
            span: run_span_id(run),
            parent: None,
            start_ms: now,
            attrs: vec![
                kv("muster.run.id", run.to_string()),
                kv("muster.correlation_id", run.to_string()),
                kv("muster.run.resumed", true),
            ],
            events: Vec::new(),
        };
        self.start(Key::Run(run), open);
    }

    fn run_event(&mut self, run: Uuid, now: u64, name: &'static str, attrs: Vec<KeyValue>) {
        self.resumed_run(run, now);
        if let Some(o) = self.open.get_mut(&Key::Run(run))
            && o.events.len() < MAX_EVENTS
        {
            o.events
                .push(opentelemetry::trace::Event::new(name, at(now), attrs, 0));
        }
    }

    fn end(&mut self, key: Key, end_ms: u64, attrs: Vec<KeyValue>, status: Status) {
        if let Some(open) = self.open.remove(&key) {
            self.emit(open, end_ms, attrs, status);
        }
    }

    /// Builds the span with its journal ids and times and ends it (the processor exports
    /// it).
    fn emit(&mut self, mut o: Open, end_ms: u64, attrs: Vec<KeyValue>, status: Status) {
        o.attrs.extend(attrs);
        let parent_cx = match o.parent {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                o.trace,
                p,
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            )),
            None => Context::new(),
        };
        let builder = SpanBuilder::from_name(o.name)
            .with_kind(SpanKind::Internal)
            .with_start_time(at(o.start_ms))
            .with_attributes(o.attrs)
            .with_events(o.events);
        NEXT_IDS.with(|c| c.set(Some((o.trace, o.span))));
        let mut span = self.tracer.build_with_context(builder, &parent_cx);
        NEXT_IDS.with(|c| c.set(None));
        span.set_status(status);
        span.end_with_timestamp(at(end_ms.max(o.start_ms)));
        self.ended += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_span_ids_differ_by_kind_and_epoch_and_are_never_zero() {
        let t = Uuid::from_u128(0);
        let ids = [
            run_span_id(t),
            task_span_id(t),
            attempt_span_id(t, 1),
            attempt_span_id(t, 2),
        ];
        for (i, a) in ids.iter().enumerate() {
            assert_ne!(*a, SpanId::INVALID);
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_ne!(trace_id(t), TraceId::INVALID);
    }

    #[test]
    fn a_long_value_is_cut_on_a_character_boundary() {
        let s = "é".repeat(MAX_VALUE);
        let c = cut(&s);
        assert!(c.len() <= MAX_VALUE + "…".len());
    }
}
