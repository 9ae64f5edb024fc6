//! The stdio protocol's wire format: the JSON lines muster writes to an agent's stdin
//! (task and cancel) and the lines it reads back from its stdout (result, error,
//! heartbeat), split from the byte stream by [`Lines`] and decoded by [`decode`].
//!
//! Owns the bytes of the protocol (`schemas/agent-protocol.schema.json`) and nothing else:
//! it has no process, no tasks in flight and no side effects; the driver
//! (`stdio/driver.rs`) decides what a decoded line does.

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use uuid::Uuid;

use crate::process::{MAX_OUTPUT_BYTES, quote, quote_bytes, remaining_ms};
use muster_core::agents::agent::TaskContext;
use muster_core::agents::effects::EffectEntry;

/// The `task` line that hands `input` to the program, with its trailing `\n`.
pub(super) fn task_line(input: Value, ctx: &TaskContext) -> String {
    let mut line = json!({
        "type": "task",
        "task_id": ctx.task_id,
        "epoch": ctx.epoch,
        "attempt": ctx.attempt,
        "capability": &*ctx.capability,
        "input": input,
        "deadline_ms": remaining_ms(ctx),
        "effect_key": ctx.effect_key_prefix(),
    });
    if let Some(obj) = line.as_object_mut() {
        if let Some(scope) = ctx.scope() {
            obj.insert("scope".into(), json!(scope));
        }
        let effects = ctx.effects();
        if !effects.is_empty() {
            obj.insert("effects".into(), effects_json(&effects));
        }
    }
    format!("{line}\n")
}

/// A task's effect ledger as the task line carries it: per effect its name, key, epoch,
/// `state` (`done` or `unknown`) and, once done, its `result`.
pub(crate) fn effects_json(effects: &[EffectEntry]) -> Value {
    Value::Array(
        effects
            .iter()
            .map(|e| {
                let mut v = json!({
                    "name": e.name,
                    "key": e.key,
                    "epoch": e.epoch,
                    "state": e.state(),
                });
                if let (Some(r), Some(obj)) = (&e.result, v.as_object_mut()) {
                    obj.insert("result".into(), r.clone());
                }
                v
            })
            .collect(),
    )
}

/// The `cancel` line for task `task_id` at `epoch`, with its trailing `\n`.
pub(super) fn cancel_line(task_id: Uuid, epoch: u64) -> String {
    let line = json!({"type": "cancel", "task_id": task_id, "epoch": epoch});
    format!("{line}\n")
}

/// The `effect_ack` line for effect `name` of task `task_id` at `epoch`, with its
/// trailing `\n`: `written` true once its `effect_started` record is written, else false
/// with `error` saying why (the agent should not perform the effect then).
pub(super) fn effect_ack_line(
    task_id: Uuid,
    epoch: u64,
    name: &str,
    error: Option<String>,
) -> String {
    let mut line = json!({"type": "effect_ack", "task_id": task_id, "epoch": epoch,
                          "name": name, "written": error.is_none()});
    if let Some(e) = error {
        line["error"] = json!(e);
    }
    format!("{line}\n")
}

/// A line the program may print on stdout.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum AgentLine {
    Result {
        task_id: Uuid,
        #[serde(deserialize_with = "epoch")]
        epoch: u64,
        output: Value,
        /// The paths the attempt changed, checked against the task's write scope.
        #[serde(default)]
        touched: Option<Value>,
    },
    Error {
        task_id: Uuid,
        #[serde(deserialize_with = "epoch")]
        epoch: u64,
        message: String,
    },
    /// The agent is about to perform effect `name` of a task (journaled `effect_started`).
    EffectStarted {
        task_id: Uuid,
        #[serde(deserialize_with = "epoch")]
        epoch: u64,
        name: String,
        #[serde(default)]
        key: Option<String>,
        /// Asks for an `effect_ack` line once the record is written (SQLite: its group
        /// commit), so the agent performs the effect only after that.
        #[serde(default)]
        ack: bool,
    },
    /// Effect `name` of a task is done, with `result` (journaled `effect_done`).
    EffectDone {
        task_id: Uuid,
        #[serde(deserialize_with = "epoch")]
        epoch: u64,
        name: String,
        #[serde(default)]
        key: Option<String>,
        #[serde(default)]
        result: Value,
    },
    Heartbeat {
        #[serde(default)]
        task_id: Option<Uuid>,
        #[serde(default, deserialize_with = "optional_epoch")]
        epoch: Option<u64>,
    },
}

/// An epoch as the protocol schema describes it: a JSON integer from 0 to `u64::MAX`,
/// which (in JSON Schema) includes a number written with a zero fraction, such as `3.0`.
fn epoch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(e) = n.as_u64() {
        return Ok(e);
    }
    match n.as_f64() {
        // 2^64 is the first float past u64::MAX.
        Some(f) if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) => {
            Ok(f as u64)
        }
        _ => Err(serde::de::Error::custom(format!(
            "invalid epoch {n}, expected an integer from 0 to {}",
            u64::MAX
        ))),
    }
}

fn optional_epoch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => epoch(Value::Number(n))
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// One line the program printed on stdout.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// A line (without its `\n`).
    Text(String),
    /// A line longer than [`MAX_OUTPUT_BYTES`]; the rest of it is skipped.
    TooLong,
    /// A line that is not UTF-8: where the first bad byte is, and a quote of the line.
    NotUtf8 { offset: usize, quoted: String },
}

/// Splits a stream into [`Line`]s, holding at most [`MAX_OUTPUT_BYTES`] of one line.
/// Cancel-safe: a line cut short by a cancelled `next` is completed by the next call.
pub(super) struct Lines<R> {
    reader: BufReader<R>,
    line: Vec<u8>,
    /// Inside a line already reported as too long: skip to its end.
    skipping: bool,
    /// The longest line kept ([`MAX_OUTPUT_BYTES`]; smaller in tests).
    pub(super) limit: usize,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    pub(super) fn new(reader: R) -> Self {
        Lines {
            reader: BufReader::new(reader),
            line: Vec::new(),
            skipping: false,
            limit: MAX_OUTPUT_BYTES,
        }
    }

    /// The next line; `None` at EOF or on a read error.
    pub(super) async fn next(&mut self) -> Option<Line> {
        loop {
            let available = match self.reader.fill_buf().await {
                Ok(available) => available,
                Err(e) => {
                    tracing::debug!("reading an agent process's stdout failed: {e}");
                    &[]
                }
            };
            if available.is_empty() {
                // EOF: an unterminated last line is still a line.
                self.skipping = false;
                if self.line.is_empty() {
                    return None;
                }
                return Some(self.take_line());
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let len = newline.unwrap_or(available.len());
            let mut too_long = false;
            if self.skipping {
                // The rest of a line already reported: dropped.
            } else if self.line.len() + len > self.limit {
                self.line = Vec::new();
                self.skipping = true;
                too_long = true;
            } else {
                self.line.extend_from_slice(&available[..len]);
            }
            self.reader.consume(len + usize::from(newline.is_some()));
            if too_long {
                if newline.is_some() {
                    self.skipping = false;
                }
                return Some(Line::TooLong);
            }
            if newline.is_some() {
                if std::mem::replace(&mut self.skipping, false) {
                    continue;
                }
                return Some(self.take_line());
            }
        }
    }

    fn take_line(&mut self) -> Line {
        match String::from_utf8(std::mem::take(&mut self.line)) {
            Ok(line) => Line::Text(line.trim_end().to_string()),
            Err(e) => Line::NotUtf8 {
                offset: e.utf8_error().valid_up_to(),
                quoted: quote_bytes(e.as_bytes()),
            },
        }
    }
}

/// What one stdout line says.
#[derive(Debug)]
pub(super) enum Decoded {
    /// A blank line: nothing.
    Blank,
    /// A protocol line.
    Line(AgentLine),
    /// A line that breaks the protocol, and why.
    Broken(String),
}

/// Decodes one stdout line of agent `name` (no side effects).
pub(super) fn decode(name: &str, line: Line) -> Decoded {
    let line = match line {
        Line::Text(line) => line,
        Line::TooLong => {
            return Decoded::Broken(format!(
                "agent {name} printed a line longer than {MAX_OUTPUT_BYTES} bytes \
                 (the limit for one protocol line)"
            ));
        }
        Line::NotUtf8 { offset, quoted } => {
            return Decoded::Broken(format!(
                "agent {name} printed a line that is not valid UTF-8 (at byte {offset}): {quoted}"
            ));
        }
    };
    if line.trim().is_empty() {
        return Decoded::Blank;
    }
    match serde_json::from_str(&line) {
        Ok(parsed) => Decoded::Line(parsed),
        Err(e) => Decoded::Broken(format!(
            "agent {name} printed a line that is not protocol JSON ({e}): {}",
            quote(&line)
        )),
    }
}
