//! Fuzzing the stdout side of the protocol: bytes an agent prints, split into lines by
//! [`Lines`] (read in chunks of fuzzed sizes, with a small line limit so long lines are
//! reached) and each decoded by [`decode`]. A short bolero run in `cargo test`; longer with
//! `BOLERO_RANDOM_ITERATIONS` (docs/fuzzing.md).

use std::pin::Pin;
use std::task::{Context, Poll};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::process::quote_bytes;
use tokio::io::{AsyncRead, ReadBuf};

use super::wire::{AgentLine, Decoded, Line, Lines, decode};

/// A reader that hands out its bytes in the given chunk sizes.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    next: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        let n = size.min(buf.remaining()).min(self.data.len() - self.pos);
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// What [`Lines`] must give for `data` with line limit `limit`.
fn model(data: &[u8], limit: usize) -> Vec<Line> {
    let mut segments: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if segments.last().is_some_and(|s| s.is_empty()) {
        segments.pop();
    }
    segments
        .into_iter()
        .map(|seg| {
            if seg.len() > limit {
                Line::TooLong
            } else {
                match std::str::from_utf8(seg) {
                    Ok(s) => Line::Text(s.trim_end().to_string()),
                    Err(e) => Line::NotUtf8 {
                        offset: e.valid_up_to(),
                        quoted: quote_bytes(seg),
                    },
                }
            }
        })
        .collect()
}

fn protocol_schema() -> muster_core::messaging::SchemaStore {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/agent-protocol.schema.json"
        ))
        .expect("the protocol schema"),
    )
    .expect("JSON");
    let store = muster_core::messaging::SchemaStore::new();
    store.add("agent-protocol", doc).expect("it compiles");
    store
}

/// Protocol-ish lines: a message of each kind with fields of the right or a wrong type.
fn generated(b: &[u8]) -> Vec<u8> {
    let mut i = 0;
    let mut next = || {
        let v = b.get(i).copied().unwrap_or(0);
        i += 1;
        v
    };
    let mut out = Vec::new();
    for _ in 0..(next() % 4) {
        let ty = ["result", "error", "heartbeat", "task", "cancel", "x"][usize::from(next()) % 6];
        let mut m = serde_json::Map::new();
        if next() % 8 != 0 {
            m.insert("type".into(), json!(ty));
        }
        let id = Uuid::from_u64_pair(u64::from(next()), u64::from(next()));
        let values = [
            json!(id),
            json!(id.simple().to_string()),
            json!("not-a-uuid"),
            json!(null),
            json!(1),
            json!(1.0),
            json!(-1),
            json!(u64::MAX),
            json!(18446744073709551616.0),
            json!("text"),
            json!({"a": [1, 2]}),
            json!([]),
        ];
        for key in ["task_id", "epoch", "output", "message", "attempt"] {
            let c = next();
            if c % 3 != 0 {
                let v = match (key, c % 4) {
                    ("task_id", 1) => json!(id),
                    ("epoch", 1) => json!(u64::from(next())),
                    ("message", 1) => json!("failed"),
                    _ => values[usize::from(next()) % values.len()].clone(),
                };
                m.insert(key.into(), v);
            }
        }
        let line = serde_json::to_vec(&Value::Object(m)).expect("JSON");
        out.extend_from_slice(&line);
        out.extend_from_slice([&b"\n"[..], b"\r\n", b"  \n", b"\n\n"][usize::from(next()) % 4]);
    }
    out
}

/// Splits and decodes. Invariants: the lines are the model's (every `\n`-separated
/// segment, the unterminated last one too, over the limit reported once as too long,
/// not UTF-8 with the offset of its first bad byte); a broken line's message names the
/// agent; a line that the protocol schema accepts as a result, error or heartbeat
/// decodes.
fn target(rt: &tokio::runtime::Runtime, schema: &muster_core::messaging::SchemaStore, data: &[u8]) {
    let (head, rest) = data.split_at(data.len().min(4));
    let byte = |i: usize| head.get(i).copied().unwrap_or(0);
    let limit = 1 + usize::from(byte(0)) % 64;
    let sizes: Vec<usize> = [byte(1), byte(2)]
        .iter()
        .map(|b| 1 + usize::from(*b) % 17)
        .collect();
    let input = if byte(3) % 2 == 0 {
        rest.to_vec()
    } else {
        generated(rest)
    };
    let limit = if byte(3) % 4 == 1 { 4096 } else { limit };
    let lines = rt.block_on(async {
        let mut lines = Lines::new(Chunked {
            data: input.clone(),
            pos: 0,
            sizes,
            next: 0,
        });
        lines.limit = limit;
        let mut all = Vec::new();
        while let Some(line) = lines.next().await {
            all.push(line);
        }
        all
    });
    assert_eq!(
        lines,
        model(&input, limit),
        "{:?}",
        String::from_utf8_lossy(&input)
    );
    for line in lines {
        let text = match &line {
            Line::Text(t) => Some(t.clone()),
            _ => None,
        };
        match decode("fuzzed", line) {
            Decoded::Broken(m) => {
                assert!(m.starts_with("agent fuzzed printed"), "{m}");
                if let Some(v) = text
                    .as_deref()
                    .and_then(|t| serde_json::from_str::<Value>(t).ok())
                {
                    let answer = matches!(
                        v.get("type").and_then(Value::as_str),
                        Some("result" | "error" | "heartbeat")
                    );
                    assert!(
                        !(answer && schema.validate("agent-protocol", &v).is_ok()),
                        "the protocol schema accepts a line the runtime refuses ({m})"
                    );
                }
            }
            Decoded::Blank => assert!(text.is_some_and(|t| t.trim().is_empty())),
            Decoded::Line(_) => {}
        }
    }
}

/// Found by `stdio_protocol_decoder`: the protocol schema (JSON Schema) counts `3.0` as
/// an integer epoch, and the decoder refused it.
#[test]
fn an_epoch_written_with_a_zero_fraction_is_read_as_that_integer() {
    let id = Uuid::now_v7();
    for (line, expected) in [
        (
            json!({"type": "result", "task_id": id, "epoch": 3.0, "output": 1}),
            3,
        ),
        (
            json!({"type": "error", "task_id": id, "epoch": 7.0, "message": "no"}),
            7,
        ),
        (json!({"type": "heartbeat", "task_id": id, "epoch": 0.0}), 0),
    ] {
        assert!(protocol_schema().validate("agent-protocol", &line).is_ok());
        match decode("a", Line::Text(line.to_string())) {
            Decoded::Line(
                AgentLine::Result { epoch, .. }
                | AgentLine::Error { epoch, .. }
                | AgentLine::Heartbeat {
                    epoch: Some(epoch), ..
                },
            ) => assert_eq!(epoch, expected, "{line}"),
            other => panic!("{line}: {other:?}"),
        }
    }
    for epoch in [json!(3.5), json!(-1.0), json!(18_446_744_073_709_551_616.0)] {
        let line = json!({"type": "result", "task_id": id, "epoch": epoch, "output": 1});
        assert!(matches!(
            decode("a", Line::Text(line.to_string())),
            Decoded::Broken(_)
        ));
        assert!(
            protocol_schema().validate("agent-protocol", &line).is_err(),
            "{line}"
        );
    }
}

/// Found by `stdio_protocol_decoder`: the protocol schema accepted a `task_id` that is
/// not a UUID (`format` is only an annotation in JSON Schema 2020-12), which the
/// decoder refuses.
#[test]
fn the_protocol_schema_refuses_a_task_id_that_is_not_a_uuid() {
    for id in ["not-a-uuid", "", "0198f1c27d6e7a3b9c4d5e6f7a8b9c0d"] {
        let line = json!({"type": "heartbeat", "task_id": id, "epoch": 1});
        assert!(
            protocol_schema().validate("agent-protocol", &line).is_err(),
            "{line}"
        );
    }
}

#[test]
fn stdio_protocol_decoder() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let schema = std::panic::AssertUnwindSafe(protocol_schema());
    let mut count = 0u64;
    let start = std::time::Instant::now();
    bolero::check!().for_each(|data: &[u8]| {
        let schema = &schema;
        target(&rt, &schema.0, data);
        count += 1;
    });
    eprintln!(
        "fuzz target stdio_protocol_decoder: {count} inputs in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
