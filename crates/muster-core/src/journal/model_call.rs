//! One model call of an attempt as journaled when an LLM agent records its prompts
//! (`[backend] record = "prompts"`, docs/llm-agents.md): the messages sent, the model's
//! raw answer, tokens, latency and cost, in an [`Event::ModelCall`](super::Event::ModelCall).
//!
//! It only describes a call: the backend bounds and redacts what it puts here before the
//! record is made (the journal never sees the unredacted text), and nothing reads these
//! records to decide anything (G5: they are for the people inspecting a run).

use serde::{Deserialize, Serialize};

use super::usage::Usage;

/// Which turn of an attempt a call was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnKind {
    /// The attempt's first call.
    First,
    /// A repair turn: the model was shown its previous answer and what was wrong with it.
    Repair,
    /// The call after a round of tool calls: the model was given the tools' answers.
    Tool,
}

/// One message of a call as recorded: its role and its (bounded, redacted) content. An
/// assistant message that asked for tools has its calls, as JSON text, for content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// One model call: what was sent, what came back and what it cost.
///
/// # Example
/// ```
/// use muster_core::journal::{CallMessage, ModelCall, TurnKind, Usage};
///
/// let call = ModelCall {
///     attempt: 1,
///     turn: 1,
///     kind: TurnKind::Repair,
///     round: 1,
///     model: "smollm2".into(),
///     messages: vec![CallMessage { role: "user".into(), content: "Triage: crash".into() }],
///     answer: Some("{\"severity\": \"high\"}".into()),
///     error: None,
///     usage: Some(Usage::known("smollm2", 20, 7)),
///     latency_ms: 412,
///     truncated: false,
/// };
/// assert_eq!(call.label(), "repair turn 1");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCall {
    /// The attempt, from 1.
    pub attempt: u32,
    /// The call's place in its attempt, from 0 (the first call).
    pub turn: u32,
    /// What kind of turn it was.
    pub kind: TurnKind,
    /// The repair turn's or tool round's number, from 1 (0 for the first call).
    pub round: u32,
    /// The model asked.
    pub model: String,
    /// The messages sent, in order.
    pub messages: Vec<CallMessage>,
    /// The model's raw answer: its text, or the tool calls it asked for as JSON text;
    /// `None` when the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Why the request failed (its kind first, as in `attempt_failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tokens and cost of this call (`None` when the request failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// From sending the request to the answer decoded, in milliseconds.
    pub latency_ms: u64,
    /// Whether a text was cut to the record's bounds (the cut text says so where it ends).
    #[serde(default)]
    pub truncated: bool,
}

impl ModelCall {
    /// The turn in words: `first call`, `repair turn 2`, `tool round 1`.
    pub fn label(&self) -> String {
        match self.kind {
            TurnKind::First => "first call".into(),
            TurnKind::Repair => format!("repair turn {}", self.round),
            TurnKind::Tool => format!("tool round {}", self.round),
        }
    }
}
