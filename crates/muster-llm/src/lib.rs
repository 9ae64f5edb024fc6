//! LLM agents: a model behind any OpenAI-compatible chat-completions endpoint (OpenAI,
//! vLLM, llama.cpp's server, Ollama, LM Studio) is an agent whose output is held to its
//! capability's contract.
//!
//! Owns the `kind = "llm"` backend: its [`LlmConfig`], the prompt templates
//! ([`Prompts`]), the request body ([`request_body`]), the HTTP exchange and its failures
//! ([`CallError`]), answer decoding ([`decode_response`], [`StreamDecoder`]), the rate
//! budgets ([`RateBudget`]) and the supervised [`provider`] actor, one per endpoint and
//! model, that owns them for every instance calling that endpoint.
//!
//! One attempt:
//!
//! ```text
//!  render prompts ─▶ acquire (provider: concurrency, rpm, tpm, Retry-After)
//!        ▲              │
//!        │           POST /chat/completions  (Idempotency-Key: <task>-<epoch>)
//!        │              │
//!        │           decode ─▶ tool calls? ─▶ delegate each as a task ─▶ next round
//!        │              │                    (at most max_tool_rounds)
//!        │           JSON? valid for the output schema? ── yes ─▶ output
//!        │              │ no
//!        └── repair turn (errors shown to the model), at most `repair`
//!                       │ none left
//!                       ▼
//!        output as is (the owner journals contract_violation and reassigns),
//!        or a protocol failure when the answer is not JSON at all
//! ```
//!
//! Every HTTP failure (429, 5xx, refusal, connection, timeout, idle stream, undecodable
//! answer) fails the attempt at once with its kind in the message: this module never
//! retries on its own; the task's owner reassigns and the provider makes the next request
//! wait out a `Retry-After`. What each attempt spent is recorded on its context
//! ([`TaskContext::record_usage`]) and journaled by the owner as `model_usage`; tokens the
//! server does not report are unknown, never 0. With `record = "prompts"` each call's
//! messages and raw answer are journaled as well, as it ends (`model_call`, redacted and
//! bounded by [`Redactor`] and [`bound_text`]).
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod budget;
mod call;
mod config;
mod decode;
mod prompt;
pub mod protocol;
pub mod provider;
mod record;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use futures::future::LocalBoxFuture;
use serde_json::{Value, json};

pub use budget::RateBudget;
pub use call::{CallError, MAX_RETRY_AFTER, Request, parse_retry_after};
pub use config::{
    LlmConfig, LlmLimits, LlmPrice, MAX_REPAIR, MAX_TOKENS, MAX_TOOL_ROUNDS, MAX_WAIT, Structured,
};
pub use decode::{
    Answer, DecodeError, MAX_RESPONSE_BYTES, MAX_TOOL_CALLS, NotJson, StreamDecoder, TokenCounts,
    ToolCall, decode_response, json_in,
};
pub use prompt::{MAX_PROMPT_BYTES, PromptVars, Prompts, VARIABLES};
pub use provider::{ClientError, Permit, ProviderHandle, ProviderUnavailable};
pub use record::{
    CallId, MAX_RECORDED_CALL, MAX_RECORDED_MESSAGES, MAX_RECORDED_TEXT, MAX_REDACT_ENTRIES,
    REDACTED, RecordMode, Redactor, Secrets, bound_text,
};
pub use wire::{ANSWER_TOOL, AttemptId, ToolSpec, request_body, schema_instruction, wire_name};

use muster_core::agents::agent::{Agent, AgentError, AgentFactory, TaskContext};
use muster_core::agents::host::{AgentHost, SubTask};
use muster_core::journal::{TurnKind, Usage};
use muster_core::messaging::SchemaStore;
use record::CallRecorder;

/// Tokens charged for a request when the config sets no `max_tokens`.
const DEFAULT_TOKEN_ESTIMATE: u64 = 512;

/// Makes the LLM agents of one agent type; all its instances share one provider (and with
/// it the budgets of every other agent type calling the same endpoint and model).
///
/// # Example
/// ```
/// use std::collections::HashMap;
/// use std::sync::Arc;
/// use muster_llm::{LlmConfig, LlmFactory};
/// use muster_core::SchemaStore;
///
/// let schemas = Arc::new(SchemaStore::new());
/// schemas.add("verdict", serde_json::json!({"type": "object"})).unwrap();
/// let config = LlmConfig::new("http://127.0.0.1:8080/v1", "smollm2-135m", "Judge: {{ input.text }}");
/// let outputs = HashMap::from([("judge".to_string(), "verdict".to_string())]);
/// let factory = LlmFactory::new(config, outputs, schemas).unwrap();
/// assert_eq!(factory.config().model, "smollm2-135m");
/// ```
#[derive(Clone)]
pub struct LlmFactory {
    shared: Arc<Shared>,
}

struct Shared {
    config: LlmConfig,
    prompts: Prompts,
    /// What recorded calls hide (used with `record = "prompts"`).
    redactor: Redactor,
    /// Capability → output schema name.
    outputs: HashMap<String, String>,
    schemas: Arc<SchemaStore>,
    provider: OnceLock<ProviderHandle>,
    host: OnceLock<AgentHost>,
}

impl std::fmt::Debug for LlmFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmFactory")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl LlmFactory {
    /// A factory for agents answering the capabilities in `outputs` (capability → the name
    /// of its output schema in `schemas`). Checks the config and compiles the templates
    /// (reading `system_file`); errors are `(field, message)`, the field a JSON pointer
    /// under the backend.
    pub fn new(
        config: LlmConfig,
        outputs: HashMap<String, String>,
        schemas: Arc<SchemaStore>,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut problems = config.problems();
        let system = match (&config.system, &config.system_file) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(f)) => match std::fs::read_to_string(f) {
                Ok(s) if s.len() <= MAX_PROMPT_BYTES => Some(s),
                Ok(s) => {
                    problems.push((
                        "/system_file".into(),
                        format!(
                            "{}: {} bytes, above the limit of {MAX_PROMPT_BYTES}",
                            f.display(),
                            s.len()
                        ),
                    ));
                    None
                }
                Err(e) => {
                    problems.push((
                        "/system_file".into(),
                        format!("{}: cannot read: {e}", f.display()),
                    ));
                    None
                }
            },
            (None, None) => None,
        };
        let prompts = match Prompts::compile(system.as_deref(), &config.prompt) {
            Ok(p) => Some(p),
            Err(es) => {
                problems.extend(es.into_iter().map(|(f, m)| {
                    let f = if f == "/system" && config.system.is_none() {
                        "/system_file".to_string()
                    } else {
                        f
                    };
                    (f, m)
                }));
                None
            }
        };
        // Its errors are among `problems` already.
        let redactor = Redactor::new(&config.redact, &config.redact_patterns).unwrap_or_default();
        match prompts {
            Some(prompts) if problems.is_empty() => Ok(LlmFactory {
                shared: Arc::new(Shared {
                    config,
                    prompts,
                    redactor,
                    outputs,
                    schemas,
                    provider: OnceLock::new(),
                    host: OnceLock::new(),
                }),
            }),
            _ => Err(problems),
        }
    }

    /// The config.
    pub fn config(&self) -> &LlmConfig {
        &self.shared.config
    }

    /// Uses `provider` (already started) instead of the runtime's shared one: for agents
    /// run by hand, tests and benchmarks. The first provider set is kept.
    pub fn with_provider(self, provider: ProviderHandle) -> Self {
        let _ = self.shared.provider.set(provider);
        self
    }
}

impl AgentFactory for LlmFactory {
    fn create(&self, instance: &str) -> Box<dyn Agent> {
        Box::new(LlmAgent {
            name: Arc::from(instance),
            shared: self.shared.clone(),
        })
    }

    fn attach(&self, host: AgentHost) -> LocalBoxFuture<'static, Result<(), String>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let _ = shared.host.set(host.clone());
            if shared.provider.get().is_some() {
                return Ok(());
            }
            let key = shared.config.provider_key();
            let limits = shared.config.limits;
            let provider = host
                .service(&key, || {
                    let p = ProviderHandle::new(&key).map_err(|e| e.to_string())?;
                    let spec = p.child_spec(limits);
                    Ok((p, spec))
                })
                .await?;
            let _ = shared.provider.set(provider);
            Ok(())
        })
    }
}

/// One instance's LLM agent (see the [module docs](self)).
pub struct LlmAgent {
    name: Arc<str>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LlmAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmAgent")
            .field("name", &self.name)
            .finish()
    }
}

impl Agent for LlmAgent {
    fn handle(
        &self,
        input: Value,
        ctx: TaskContext,
    ) -> LocalBoxFuture<'static, Result<Value, AgentError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            // A failure is journaled (`attempt_failed`) whatever `record` says, and it may
            // quote the model's answer: it gets the redaction a recorded call gets.
            let secrets = shared.failure_secrets(&input);
            let r = shared.clone().attempt(input, ctx).await;
            match secrets {
                Some(secrets) => r.map_err(|e| shared.redacted(e, &secrets)),
                None => r,
            }
        })
    }

    fn start(
        &self,
        _link: muster_core::agents::AgentLink,
    ) -> LocalBoxFuture<'static, Result<(), AgentError>> {
        let ok = self.shared.provider.get().is_some();
        let key = self.shared.config.provider_key();
        Box::pin(async move {
            if ok {
                Ok(())
            } else {
                Err(AgentError::new(format!(
                    "no provider for {key}: the agent type was not registered with a runtime \
                     (or give the factory one with `with_provider`)"
                )))
            }
        })
    }
}

/// What one turn of an attempt got back.
enum Turn {
    /// The answer's text (or the `answer` tool's arguments).
    Text(String),
    /// Tool calls to run before the model answers: the calls, the assistant message that
    /// asked for them, and that message as JSON text (for the record).
    Tools(Vec<ToolCall>, Value, String),
}

impl Turn {
    /// The model's answer as text, as a recorded call shows it.
    fn raw(&self) -> &str {
        match self {
            Turn::Text(t) => t,
            Turn::Tools(_, _, raw) => raw,
        }
    }
}

/// One request's outcome, with what it spent and how long it took.
struct Exchange {
    result: Result<Turn, AgentError>,
    /// The usage of a request that got an answer.
    usage: Option<Usage>,
    /// From sending the request to its answer decoded (the wait for a permit left out).
    latency: std::time::Duration,
}

impl Shared {
    /// What a failure of an attempt on `input` must not say: the input's secrets and the
    /// API key; `None` when nothing is to be hidden (no `redact`, no patterns, no key).
    fn failure_secrets(&self, input: &Value) -> Option<Secrets> {
        let key = self
            .config
            .api_key_env
            .as_ref()
            .and_then(|var| std::env::var(var).ok())
            .filter(|k| !k.is_empty());
        if self.redactor.is_empty() && key.is_none() {
            return None;
        }
        let mut secrets = self.redactor.secrets_in(input);
        if let Some(k) = key {
            secrets.add(&k);
        }
        Some(secrets)
    }

    /// `e` with its message and its contract errors' messages redacted (every text of it
    /// that reaches the journal).
    fn redacted(&self, mut e: AgentError, secrets: &Secrets) -> AgentError {
        // As a recorded call's texts: the secrets the text itself shows (a named field's
        // value in the JSON it quotes, also where it stands again in prose) count too.
        let mut secrets = secrets.clone();
        self.redactor.secrets_in_text(&e.message, &mut secrets);
        if let Some(c) = &e.contract {
            for v in &c.errors {
                self.redactor.secrets_in_text(&v.message, &mut secrets);
            }
        }
        e.message = self.redactor.redact(&e.message, &secrets);
        if let Some(c) = e.contract.as_mut() {
            for v in &mut c.errors {
                v.message = self.redactor.redact(&v.message, &secrets);
            }
        }
        e
    }

    async fn attempt(self: Arc<Self>, input: Value, ctx: TaskContext) -> Result<Value, AgentError> {
        let cfg = &self.config;
        let provider = self
            .provider
            .get()
            .ok_or_else(|| AgentError::new("the LLM agent has no provider"))?;
        let schema_name = self.outputs.get(ctx.capability.as_ref()).ok_or_else(|| {
            AgentError::new(format!(
                "capability `{}` is not one this agent declares",
                ctx.capability
            ))
        })?;
        let schema = self
            .schemas
            .get(schema_name)
            .map_err(|e| AgentError::new(e.to_string()))?;
        let api_key = match &cfg.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                AgentError::new(format!(
                    "the API key variable {var} (backend.api_key_env) is not set"
                ))
            })?),
            None => None,
        };
        let task = ctx.task_id.to_string();
        let tools = self.tool_specs()?;
        let mut messages = self.first_messages(&input, &ctx, &task, &schema.document, "")?;
        let recorder = (cfg.record == RecordMode::Prompts).then(|| {
            CallRecorder::new(
                &self.redactor,
                &input,
                api_key.as_deref(),
                ctx.attempt,
                &cfg.model,
            )
        });
        // Which turn the next call is (first, a repair turn, after a tool round).
        let mut kind = (TurnKind::First, 0u32);
        let mut turn = 0u32;
        let mut repairs = 0u32;
        let mut tool_rounds = 0u32;
        // How often this attempt called each tool with each input (effect keys).
        let mut calls_made = HashMap::new();
        loop {
            let id = AttemptId {
                task: &task,
                epoch: ctx.epoch,
                turn,
            };
            let body = request_body(cfg, &messages, schema_name, &schema.document, &tools, id);
            let exchange = self
                .request(provider, &body, id, api_key.as_deref(), &ctx)
                .await;
            if let Some(r) = &recorder {
                let call = CallId {
                    turn,
                    kind: kind.0,
                    round: kind.1,
                };
                let outcome = match (&exchange.result, &exchange.usage) {
                    (Ok(got), Some(usage)) => Ok((got.raw(), usage)),
                    (Err(e), _) => Err(e.message.as_str()),
                    (Ok(_), None) => Err("no answer"), // request() always has a usage with a turn
                };
                ctx.record_model_call(r.call(call, &messages, outcome, exchange.latency));
            }
            turn += 1;
            let text = match exchange.result? {
                Turn::Tools(calls, assistant, _) => {
                    if tool_rounds >= cfg.max_tool_rounds {
                        return Err(AgentError::new(format!(
                            "the model asked for tools beyond max_tool_rounds = {}",
                            cfg.max_tool_rounds
                        )));
                    }
                    tool_rounds += 1;
                    kind = (TurnKind::Tool, tool_rounds);
                    messages.push(assistant);
                    for call in calls {
                        let result = self.run_tool(&call, &ctx, &mut calls_made).await;
                        messages.push(json!({"role": "tool", "tool_call_id": call.id,
                                             "content": result.to_string()}));
                    }
                    continue;
                }
                Turn::Text(t) => t,
            };
            let (why, value) = match json_in(&text) {
                Err(e) => (e.to_string(), None),
                Ok(v) => match schema.validate(&v) {
                    Ok(()) => return Ok(v),
                    Err(c) => (c.to_string(), Some(v)),
                },
            };
            if repairs >= cfg.repair {
                return match value {
                    // Handed over as it is: the owner's contract check fails the attempt
                    // as a contract violation and reassigns the task.
                    Some(v) => Ok(v),
                    None => Err(AgentError::protocol(format!(
                        "after {repairs} repair turn(s): {why}"
                    ))),
                };
            }
            repairs += 1;
            kind = (TurnKind::Repair, repairs);
            tracing::debug!(agent = %ctx.agent, task = %task, %why, "repair turn");
            let feedback = why;
            // The conversation so far, the answer, and what is wrong with it.
            messages = self.first_messages(&input, &ctx, &task, &schema.document, &feedback)?;
            messages.extend(repair_turn(&text, &feedback));
        }
    }

    fn first_messages(
        &self,
        input: &Value,
        ctx: &TaskContext,
        task: &str,
        schema: &Value,
        feedback: &str,
    ) -> Result<Vec<Value>, AgentError> {
        let vars = PromptVars {
            input,
            capability: &ctx.capability,
            task: task.to_string(),
            attempt: ctx.attempt,
            feedback,
        };
        let (system, user) = self.prompts.render(&vars).map_err(AgentError::new)?;
        let system = match (system, self.config.structured) {
            (s, Structured::JsonObject) => Some(match s {
                Some(s) => format!("{s}\n\n{}", schema_instruction(schema)),
                None => schema_instruction(schema),
            }),
            (s, _) => s,
        };
        let mut messages = Vec::with_capacity(4);
        if let Some(s) = system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": user}));
        Ok(messages)
    }

    /// One request under a permit of the provider; records its usage on the context.
    async fn request(
        &self,
        provider: &ProviderHandle,
        body: &Value,
        id: AttemptId<'_>,
        api_key: Option<&str>,
        ctx: &TaskContext,
    ) -> Exchange {
        let mut exchange = Exchange {
            result: Err(AgentError::new("no request was sent")),
            usage: None,
            latency: std::time::Duration::ZERO,
        };
        let result = self
            .send(provider, body, id, api_key, ctx, &mut exchange)
            .await;
        exchange.result = result;
        exchange
    }

    async fn send(
        &self,
        provider: &ProviderHandle,
        body: &Value,
        id: AttemptId<'_>,
        api_key: Option<&str>,
        ctx: &TaskContext,
        exchange: &mut Exchange,
    ) -> Result<Turn, AgentError> {
        let cfg = &self.config;
        let bytes = serde_json::to_vec(body).map_err(|e| AgentError::new(e.to_string()))?;
        let estimate = cfg.max_tokens.unwrap_or(DEFAULT_TOKEN_ESTIMATE) + (bytes.len() as u64) / 4;
        let mut permit = provider
            .acquire(estimate)
            .await
            .map_err(|e| AgentError::new(e.to_string()))?;
        let url = cfg.endpoint();
        let key = id.idempotency_key();
        let req = Request {
            url: &url,
            api_key,
            idempotency_key: &key,
            body: bytes,
            timeout: cfg.timeout,
            stream_idle: cfg.stream.then_some(cfg.stream_idle),
        };
        let heartbeat = || ctx.heartbeat();
        let started = tokio::time::Instant::now();
        let result = call::send(provider.client(), req, &heartbeat).await;
        exchange.latency = started.elapsed();
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                permit.retry_after(e.retry_after());
                return Err(AgentError::new(format!("model {}: {e}", cfg.model)));
            }
        };
        let usage = self.usage_of(answer.usage);
        permit.spent(usage.total_tokens);
        drop(permit);
        ctx.record_usage(&usage);
        exchange.usage = Some(usage);
        let mut calls = answer.tool_calls;
        if let Some(i) = calls.iter().position(|c| c.name == ANSWER_TOOL) {
            return Ok(Turn::Text(calls.swap_remove(i).arguments));
        }
        if !calls.is_empty() && !cfg.tools.is_empty() {
            let assistant = json!({"role": "assistant", "content": answer.content,
                "tool_calls": calls.iter().map(|c| json!({"id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments}})).collect::<Vec<_>>()});
            let raw = assistant.to_string();
            return Ok(Turn::Tools(calls, assistant, raw));
        }
        match answer.content {
            Some(t) => Ok(Turn::Text(t)),
            None => Err(AgentError::protocol(format!(
                "model {}: the answer has neither content nor an `{ANSWER_TOOL}` call (finish_reason: {})",
                cfg.model,
                answer.finish_reason.as_deref().unwrap_or("none")
            ))),
        }
    }

    fn usage_of(&self, counts: Option<TokenCounts>) -> Usage {
        let model = &self.config.model;
        let Some(c) = counts else {
            return Usage::unknown(model);
        };
        let mut u = Usage {
            model: model.clone(),
            calls: 1,
            prompt_tokens: c.prompt,
            completion_tokens: c.completion,
            total_tokens: c.total,
            cost: None,
        };
        if let (Some(price), Some(p), Some(k)) = (self.config.price, c.prompt, c.completion) {
            u.cost = Some((p as f64 * price.prompt + k as f64 * price.completion) / 1e6);
        }
        u
    }

    /// The tools the model may call: each declared capability in `tools`, with its input
    /// schema.
    fn tool_specs(&self) -> Result<Vec<ToolSpec>, AgentError> {
        if self.config.tools.is_empty() {
            return Ok(Vec::new());
        }
        let host = self
            .host
            .get()
            .ok_or_else(|| AgentError::new("tools need a runtime to delegate to"))?;
        self.config
            .tools
            .iter()
            .map(|cap| {
                let parameters = host.capability_input(cap).ok_or_else(|| {
                    AgentError::new(format!("tool capability `{cap}` is not declared"))
                })?;
                Ok(ToolSpec {
                    name: wire_name(cap),
                    description: format!("Delegate a task to the capability `{cap}`."),
                    parameters,
                })
            })
            .collect()
    }

    /// Runs one tool call as a delegated task; what goes back to the model is its output,
    /// or the reason it has none.
    ///
    /// The sub-task's effect keys are the same for the same call in any attempt of this
    /// task: [`tool_effect_prefix`] of this task's prefix, the capability, the input and
    /// how many identical calls this attempt made before (`calls_made` counts them).
    async fn run_tool(
        &self,
        call: &ToolCall,
        ctx: &TaskContext,
        calls_made: &mut HashMap<(String, String), u32>,
    ) -> Value {
        let Some(cap) = self.config.tools.iter().find(|c| wire_name(c) == call.name) else {
            return json!({"error": format!("no tool called `{}`", call.name)});
        };
        let input: Value = match serde_json::from_str(&call.arguments) {
            Ok(v) => v,
            Err(e) => return json!({"error": format!("the arguments are not JSON: {e}")}),
        };
        let Some(host) = self.host.get() else {
            return json!({"error": "no runtime to delegate to"});
        };
        let digest = input_digest(&input);
        let ordinal = calls_made.entry((cap.clone(), digest.clone())).or_insert(0);
        let effect_prefix = format!("{}tool:{cap}:{digest}:{ordinal}:", ctx.effect_key_prefix());
        *ordinal += 1;
        let sub = SubTask {
            capability: cap.clone(),
            input,
            correlation: ctx.envelope.correlation_id,
            parent: ctx.task_id,
            sender: ctx.agent.to_string(),
            timeout: ctx.remaining(),
            effect_prefix: Some(effect_prefix),
        };
        match host.delegate(sub).await {
            Ok(v) => v,
            Err(e) => json!({"error": e.to_string()}),
        }
    }
}

/// What a repair turn adds to the conversation: the answer being repaired and what is
/// wrong with it (`feedback`: the JSON parser's or the validator's errors, with their
/// bounded quotes of the answer).
pub(crate) fn repair_turn(answer: &str, feedback: &str) -> [Value; 2] {
    [
        json!({"role": "assistant", "content": answer}),
        json!({"role": "user", "content": format!(
            "Your answer does not satisfy the required JSON Schema: {feedback}\n\
             Answer again with only the corrected JSON.")}),
    ]
}

/// The first 16 hex digits of the SHA-256 of `input` written with its object keys sorted:
/// the same for the same input whatever order a model wrote its keys in, and the same in
/// every build and process (a resumed run derives the keys its first process derived).
///
/// # Example
/// ```
/// use serde_json::json;
///
/// let a = muster_llm::input_digest(&json!({"to": "ana", "amount": 5}));
/// let b = muster_llm::input_digest(&json!({"amount": 5, "to": "ana"}));
/// assert_eq!(a, b);
/// assert_eq!(a.len(), 16);
/// assert_ne!(a, muster_llm::input_digest(&json!({"to": "ana", "amount": 6})));
/// ```
pub fn input_digest(input: &Value) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    canonical(input, &mut |bytes| hasher.update(bytes));
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `v` as JSON with object keys in sorted order.
fn canonical(v: &Value, out: &mut dyn FnMut(&[u8])) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out(b",");
                }
                out(Value::String(k.clone()).to_string().as_bytes());
                out(b":");
                canonical(&map[k], out);
            }
            out(b"}");
        }
        Value::Array(items) => {
            out(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out(b",");
                }
                canonical(item, out);
            }
            out(b"]");
        }
        other => out(other.to_string().as_bytes()),
    }
}
