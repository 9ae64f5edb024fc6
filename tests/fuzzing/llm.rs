//! Model answer decoding: any bytes as a chat-completions body, as a server-sent event
//! stream cut at any points, and as the text a JSON answer is looked for in.

use muster::agents::llm::{MAX_TOOL_CALLS, StreamDecoder, decode_response, json_in};
use serde_json::Value;

use super::arb::{self, Bytes};

/// The chat-completions vocabulary, so generated bodies often half-fit the format.
const KEYS: &[&str] = &[
    "choices",
    "message",
    "delta",
    "content",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "error",
    "index",
    "id",
    "finish_reason",
    "text",
];

/// A body: the input's own bytes, or a generated JSON document.
fn body(b: &mut Bytes) -> Vec<u8> {
    match b.below(3) {
        0 => b.rest().to_vec(),
        _ => arb::json(b, 5, KEYS).to_string().into_bytes(),
    }
}

/// Decodes one body whole, the same body as a stream in one piece and in pieces, and the
/// first choice's text as a JSON answer. Invariants: no panic; a stream decodes the same
/// however it is cut; a decoded answer has at most [`MAX_TOOL_CALLS`] tool calls; token
/// counts are reported only when the body has them (`usage` present).
pub fn answer_decoding(data: &[u8]) {
    let mut b = Bytes::new(data);
    let cuts: Vec<usize> = (0..b.below(6)).map(|_| b.below(64)).collect();
    let as_stream = b.bool();
    let raw = body(&mut b);
    if let Ok(a) = decode_response(&raw) {
        assert!(a.tool_calls.len() <= MAX_TOOL_CALLS);
        if a.usage.is_some() {
            let v: Value = serde_json::from_slice(&raw).expect("decoded bodies are JSON");
            assert!(
                v.get("usage").is_some_and(|u| !u.is_null()),
                "usage from nowhere: {}",
                String::from_utf8_lossy(&raw)
            );
        }
        if let Some(t) = &a.content {
            let _ = json_in(t);
        }
    }
    let stream = if as_stream {
        // Each generated document as one `data:` line.
        let mut s = b"data: ".to_vec();
        s.extend_from_slice(&raw);
        s.extend_from_slice(b"\n\ndata: [DONE]\n\n");
        s
    } else {
        raw
    };
    let whole = {
        let mut d = StreamDecoder::default();
        d.push(&stream).map(|_| d.finish())
    };
    let pieces = {
        let mut d = StreamDecoder::default();
        let mut at = 0;
        let mut result = Ok(0);
        for c in &cuts {
            let end = (at + c).min(stream.len());
            result = d.push(&stream[at..end]);
            if result.is_err() {
                break;
            }
            at = end;
        }
        result
            .and_then(|_| d.push(&stream[at..]))
            .map(|_| d.finish())
    };
    assert_eq!(
        format!("{whole:?}"),
        format!("{pieces:?}"),
        "a stream decodes the same however it is cut"
    );
}
